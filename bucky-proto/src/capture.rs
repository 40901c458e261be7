//! Capture and replay of received datagrams, shared by every receiver: `--capture FILE`
//! records each datagram as it arrives, `--replay FILE...` feeds recorded traffic back in
//! place of a socket, from a capture file or from tcpdump's pcap/pcapng output.
//!
//! # Capture file format (version 1)
//!
//! ```text
//! file   = magic version *record
//! magic  = "BUCKYCAP"                       ; 8 bytes
//! version= u32 little-endian                ; 1
//! record = length:u32 little-endian  body   ; length = bytes of body, at most MAX_RECORD
//! body   = bincode 1 (fixint, little-endian) of Datagram { time: f64, source: SocketAddr,
//!                                                        bytes: byte string }
//! ```
//!
//! Every record is framed, so a reader never allocates more than [`MAX_RECORD`] bytes for
//! one record and stops with an error naming the file and the offset when a record is cut
//! short or does not decode.
//!
//! # Replay
//!
//! [`Replay`] streams datagrams, in file order, from any mix of capture files, pcap and
//! pcapng files (`-` is stdin). From pcap/pcapng it takes UDP over IPv4 or IPv6 on Ethernet,
//! BSD loopback (null/loop), Linux cooked captures (SLL and SLL2, what `tcpdump -i any`
//! writes) and raw IP, keeping the datagrams sent *to* the receiver's port; other frames
//! (TCP, other ports, IP fragments, frames cut short by the snap length) are skipped and
//! counted. It replays as fast as possible or at the recorded pace, with a progress bar
//! when stderr is a terminal. Memory stays bounded whatever the files hold.
//!
//! ```no_run
//! use bucky_proto::capture::{Pace, Replay, ReplayOptions};
//! # fn handle(_: &[u8]) {}
//! let opts = ReplayOptions { port: Some(25826), pace: Pace::Fast, progress: true };
//! for datagram in Replay::open(&["traffic.pcap".into()], opts)? {
//!     match datagram {
//!         Ok(d) => handle(&d.bytes),
//!         Err(e) => eprintln!("replay: {e}"), // the file is abandoned, the next one follows
//!     }
//! }
//! # Ok::<(), bucky_proto::capture::CaptureError>(())
//! ```

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Cursor, IsTerminal, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{Linktype, PcapBlockOwned, PcapError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::shutdown::Shutdown;

/// The first 8 bytes of a capture file.
pub const MAGIC: &[u8; 8] = b"BUCKYCAP";
/// The capture format version this code writes and reads.
pub const VERSION: u32 = 1;
/// The largest datagram a capture file holds (the largest UDP payload).
pub const MAX_DATAGRAM: usize = 65535;
/// The largest record body: a [`MAX_DATAGRAM`] datagram plus its time and source.
pub const MAX_RECORD: usize = MAX_DATAGRAM + 64;
/// The largest pcap/pcapng block read; a longer one is reported as corrupt.
const MAX_PCAP_BLOCK: usize = 16 << 20;

/// One received datagram: when it arrived, where from, and its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Datagram {
    /// Arrival time, Unix seconds.
    pub time: f64,
    /// The sender's address.
    pub source: SocketAddr,
    /// The datagram's payload.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// The record as written: borrowed bytes, the same encoding as [`Datagram`].
#[derive(Serialize)]
struct RecordRef<'a> {
    time: f64,
    source: SocketAddr,
    #[serde(with = "serde_bytes")]
    bytes: &'a [u8],
}

/// Why a capture could not be written or a capture/pcap file not be read. Every message
/// names the file; format errors also name the byte offset.
#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: at offset {offset}: {reason}", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "{}: not a bucky capture, pcap or pcapng file{}",
        .path.display(),
        if *.empty { " (it is empty)" } else { "" }
    )]
    UnknownFormat { path: PathBuf, empty: bool },
    #[error(
        "{}: link type {linktype} is not supported (Ethernet, null/loop, Linux cooked SLL \
         and SLL2, and raw IP are)",
        .path.display()
    )]
    LinkType { path: PathBuf, linktype: i32 },
    #[error("{}: datagram of {len} bytes is larger than {MAX_DATAGRAM}", .path.display())]
    TooLarge { path: PathBuf, len: usize },
}

impl CaptureError {
    fn io(path: &Path, source: io::Error) -> Self {
        CaptureError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Self {
        CaptureError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Writes datagrams to a capture file (see the module docs for the format).
///
/// Writes are buffered: call [`flush`](Self::flush) now and then (receivers do once a
/// second) and before exiting. Dropping the writer flushes too, ignoring errors.
#[derive(Debug)]
pub struct CaptureWriter {
    path: PathBuf,
    out: BufWriter<File>,
    scratch: Vec<u8>,
    count: u64,
}

impl CaptureWriter {
    /// Creates (or truncates) `path` and writes the file header.
    pub fn create(path: &Path) -> Result<CaptureWriter, CaptureError> {
        let file = File::create(path).map_err(|e| CaptureError::io(path, e))?;
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        out.write_all(MAGIC)
            .and_then(|()| out.write_all(&VERSION.to_le_bytes()))
            .map_err(|e| CaptureError::io(path, e))?;
        Ok(CaptureWriter {
            path: path.to_path_buf(),
            out,
            scratch: Vec::with_capacity(2048),
            count: 0,
        })
    }

    /// Appends one datagram.
    pub fn write(&mut self, datagram: &Datagram) -> Result<(), CaptureError> {
        self.write_parts(datagram.time, datagram.source, &datagram.bytes)
    }

    /// Appends one datagram given as its parts (no copy into a [`Datagram`] needed).
    pub fn write_parts(
        &mut self,
        time: f64,
        source: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), CaptureError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(CaptureError::TooLarge {
                path: self.path.clone(),
                len: bytes.len(),
            });
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&[0; 4]);
        let record = RecordRef {
            time,
            source,
            bytes,
        };
        bincode::serialize_into(&mut self.scratch, &record)
            .map_err(|e| CaptureError::io(&self.path, io::Error::other(e.to_string())))?;
        let len = (self.scratch.len() - 4) as u32;
        self.scratch[..4].copy_from_slice(&len.to_le_bytes());
        self.out
            .write_all(&self.scratch)
            .map_err(|e| CaptureError::io(&self.path, e))?;
        self.count += 1;
        Ok(())
    }

    /// Writes out everything buffered.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.out
            .flush()
            .map_err(|e| CaptureError::io(&self.path, e))
    }

    /// Datagrams written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What kind of file a [`DatagramReader`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Capture,
    Pcap,
    PcapNg,
}

/// Frames of a pcap/pcapng file that did not yield a datagram, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Not UDP over IPv4/IPv6 (TCP, ARP, ...).
    pub not_udp: u64,
    /// UDP to another port than the one asked for.
    pub other_port: u64,
    /// IP fragments (a fragmented datagram cannot be replayed whole).
    pub fragmented: u64,
    /// Frames cut short by the snap length or otherwise malformed.
    pub malformed: u64,
    /// Frames of an interface whose link type is not supported.
    pub link_type: u64,
}

impl Skipped {
    pub fn total(&self) -> u64 {
        self.not_udp + self.other_port + self.fragmented + self.malformed + self.link_type
    }

    fn add(&mut self, other: &Skipped) {
        self.not_udp += other.not_udp;
        self.other_port += other.other_port;
        self.fragmented += other.fragmented;
        self.malformed += other.malformed;
        self.link_type += other.link_type;
    }
}

/// Reads the datagrams of one capture, pcap or pcapng file, in order.
///
/// As an iterator it yields `Err` once (the file is then abandoned) and then `None`.
pub struct DatagramReader {
    path: PathBuf,
    inner: Inner,
    port: Option<u16>,
    skipped: Skipped,
    failed: bool,
}

impl std::fmt::Debug for DatagramReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramReader")
            .field("path", &self.path)
            .field("format", &self.format())
            .field("bytes_read", &self.bytes_read())
            .finish()
    }
}

enum Inner {
    Capture(CaptureFile),
    Pcap(PcapFile),
}

impl DatagramReader {
    /// Opens `path` (`-` is stdin) and recognises its format from its first bytes. `port`
    /// keeps, from pcap/pcapng files, only the UDP datagrams sent to that port; capture files
    /// hold only what a receiver received and are not filtered.
    pub fn open(path: &Path, port: Option<u16>) -> Result<DatagramReader, CaptureError> {
        let reader: Box<dyn Read + Send> = if path.as_os_str() == "-" {
            Box::new(io::stdin())
        } else {
            Box::new(File::open(path).map_err(|e| CaptureError::io(path, e))?)
        };
        Self::from_reader(path, reader, port)
    }

    /// Like [`open`](Self::open), reading from `reader`; `path` names it in messages.
    pub fn from_reader(
        path: &Path,
        reader: Box<dyn Read + Send>,
        port: Option<u16>,
    ) -> Result<DatagramReader, CaptureError> {
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let mut head = [0u8; 8];
        let n = read_full(&mut reader, &mut head).map_err(|e| CaptureError::io(path, e))?;
        let head = &head[..n];
        let inner = if head == MAGIC {
            let mut version = [0u8; 4];
            let got =
                read_full(&mut reader, &mut version).map_err(|e| CaptureError::io(path, e))?;
            if got < 4 {
                return Err(CaptureError::corrupt(path, 8, "the header is cut short"));
            }
            let version = u32::from_le_bytes(version);
            if version != VERSION {
                return Err(CaptureError::corrupt(
                    path,
                    8,
                    format!("capture format version {version}; this bucky reads version {VERSION}"),
                ));
            }
            Inner::Capture(CaptureFile {
                reader,
                offset: 12,
                buf: Vec::new(),
            })
        } else if n >= 4 && is_pcap_magic(&head[..4]) {
            let chained: Box<dyn Read + Send> =
                Box::new(FullReads(Cursor::new(head.to_vec()).chain(reader)));
            let (reader, ng) =
                open_pcap(chained).map_err(|reason| CaptureError::corrupt(path, 0, reason))?;
            Inner::Pcap(PcapFile {
                reader,
                ng,
                capacity: 1 << 16,
                legacy: None,
                interfaces: Vec::new(),
                last_time: 0.0,
            })
        } else {
            return Err(CaptureError::UnknownFormat {
                path: path.to_path_buf(),
                empty: n == 0,
            });
        };
        Ok(DatagramReader {
            path: path.to_path_buf(),
            inner,
            port,
            skipped: Skipped::default(),
            failed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        match &self.inner {
            Inner::Capture(_) => Format::Capture,
            Inner::Pcap(p) if p.ng => Format::PcapNg,
            Inner::Pcap(_) => Format::Pcap,
        }
    }

    /// Bytes of the file consumed so far.
    pub fn bytes_read(&self) -> u64 {
        match &self.inner {
            Inner::Capture(c) => c.offset,
            Inner::Pcap(p) => p.reader.consumed() as u64,
        }
    }

    /// Frames skipped so far (pcap/pcapng only).
    pub fn skipped(&self) -> Skipped {
        self.skipped
    }

    /// The next datagram, `Ok(None)` at the end of the file.
    pub fn next_datagram(&mut self) -> Result<Option<Datagram>, CaptureError> {
        if self.failed {
            return Ok(None);
        }
        let result = match &mut self.inner {
            Inner::Capture(c) => c.next(&self.path),
            Inner::Pcap(p) => p.next(&self.path, self.port, &mut self.skipped),
        };
        if result.is_err() {
            self.failed = true;
        }
        result
    }
}

impl Iterator for DatagramReader {
    type Item = Result<Datagram, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_datagram().transpose()
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Makes every `read` fill the buffer unless the input ends: pcap-parser takes a short read
/// (a pipe, the end of peeked bytes) for a short file.
struct FullReads<R>(R);

impl<R: Read> Read for FullReads<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_full(&mut self.0, buf)
    }
}

struct CaptureFile {
    reader: BufReader<Box<dyn Read + Send>>,
    offset: u64,
    buf: Vec<u8>,
}

impl CaptureFile {
    fn next(&mut self, path: &Path) -> Result<Option<Datagram>, CaptureError> {
        let start = self.offset;
        let mut len = [0u8; 4];
        let got = read_full(&mut self.reader, &mut len).map_err(|e| CaptureError::io(path, e))?;
        if got == 0 {
            return Ok(None);
        }
        if got < 4 {
            return Err(CaptureError::corrupt(
                path,
                start,
                format!("record header cut short ({got} of 4 bytes): the file is truncated"),
            ));
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_RECORD {
            return Err(CaptureError::corrupt(
                path,
                start,
                format!("record length {len} is larger than {MAX_RECORD}: the file is corrupt"),
            ));
        }
        self.buf.resize(len, 0);
        let got =
            read_full(&mut self.reader, &mut self.buf).map_err(|e| CaptureError::io(path, e))?;
        if got < len {
            return Err(CaptureError::corrupt(
                path,
                start,
                format!("record cut short ({got} of {len} bytes): the file is truncated"),
            ));
        }
        self.offset += 4 + len as u64;
        let datagram: Datagram = bincode::deserialize(&self.buf).map_err(|e| {
            CaptureError::corrupt(path, start, format!("record does not decode: {e}"))
        })?;
        Ok(Some(datagram))
    }
}

fn is_pcap_magic(head: &[u8]) -> bool {
    matches!(
        head,
        [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x34, 0xcd, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xcd, 0x34]
            | [0x0a, 0x0d, 0x0d, 0x0a]
    )
}

type PcapReader = Box<dyn PcapReaderIterator + Send>;

fn open_pcap(reader: Box<dyn Read + Send>) -> Result<(PcapReader, bool), String> {
    match pcap_parser::create_reader(1 << 16, reader) {
        Ok(r) => {
            // pcap-ng starts with a section header block; legacy pcap with its magic.
            let ng = r.data().starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]);
            Ok((r, ng))
        }
        Err(PcapError::Incomplete(_)) | Err(PcapError::Eof) | Err(PcapError::UnexpectedEof) => {
            Err("the file header is cut short".into())
        }
        Err(e) => Err(format!("the file header does not parse ({e:?})")),
    }
}

/// Per-interface data of a pcapng section.
#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: Linktype,
    /// Timestamp units per second.
    resolution: u64,
    offset: i64,
}

struct PcapFile {
    reader: PcapReader,
    ng: bool,
    capacity: usize,
    /// Legacy pcap: the link type and whether timestamps are in nanoseconds.
    legacy: Option<(Linktype, bool)>,
    interfaces: Vec<Interface>,
    last_time: f64,
}

/// A frame's link type, time and data, before the network layers are looked at.
enum Block<'a> {
    Frame(Linktype, f64, &'a [u8]),
    Other,
}

impl PcapFile {
    fn next(
        &mut self,
        path: &Path,
        port: Option<u16>,
        skipped: &mut Skipped,
    ) -> Result<Option<Datagram>, CaptureError> {
        let mut stalled = 0u32;
        loop {
            let offset = self.reader.consumed() as u64;
            match self.reader.next() {
                Ok((len, block)) => {
                    stalled = 0;
                    let outcome = match classify(
                        block,
                        &mut self.legacy,
                        &mut self.interfaces,
                        &mut self.last_time,
                    ) {
                        Ok(Block::Frame(linktype, time, data)) => {
                            Ok(udp_datagram(linktype, time, data, port, skipped))
                        }
                        Ok(Block::Other) => Ok(None),
                        Err(reason) => Err(CaptureError::corrupt(path, offset, reason)),
                    };
                    self.reader.consume(len);
                    match outcome {
                        Ok(Some(d)) => return Ok(Some(d)),
                        Ok(None) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(PcapError::Eof) => return Ok(None),
                Err(PcapError::Incomplete(_)) => {
                    // A read may return less than asked (pipes): retry, but never spin.
                    stalled += 1;
                    if stalled > 1000 {
                        return Err(CaptureError::corrupt(
                            path,
                            offset,
                            "no progress reading the file",
                        ));
                    }
                    self.reader
                        .refill()
                        .map_err(|_| CaptureError::io(path, io::Error::other("read error")))?;
                }
                Err(PcapError::BufferTooSmall) => {
                    if self.capacity >= MAX_PCAP_BLOCK {
                        return Err(CaptureError::corrupt(
                            path,
                            offset,
                            format!("a block is larger than {MAX_PCAP_BLOCK} bytes: the file is corrupt"),
                        ));
                    }
                    self.capacity *= 4;
                    self.reader.grow(self.capacity);
                    self.reader
                        .refill()
                        .map_err(|_| CaptureError::io(path, io::Error::other("read error")))?;
                }
                Err(PcapError::UnexpectedEof) => {
                    return Err(CaptureError::corrupt(
                        path,
                        offset,
                        "the last block is cut short: the file is truncated",
                    ))
                }
                Err(PcapError::ReadError) => {
                    return Err(CaptureError::io(path, io::Error::other("read error")))
                }
                Err(e) => {
                    return Err(CaptureError::corrupt(
                        path,
                        offset,
                        format!("block does not parse ({e:?})"),
                    ))
                }
            }
        }
    }
}

/// What a pcap block is: a frame (with its link type and time) or bookkeeping, which updates
/// the section's interfaces.
fn classify<'a>(
    block: PcapBlockOwned<'a>,
    legacy: &mut Option<(Linktype, bool)>,
    interfaces: &mut Vec<Interface>,
    last_time: &mut f64,
) -> Result<Block<'a>, String> {
    use pcap_parser::pcapng::Block as Ng;
    match block {
        PcapBlockOwned::LegacyHeader(h) => {
            *legacy = Some((h.network, h.is_nanosecond_precision()));
            Ok(Block::Other)
        }
        PcapBlockOwned::Legacy(b) => {
            let (linktype, nanos) = legacy.unwrap_or((Linktype::ETHERNET, false));
            let frac = if nanos { 1e9 } else { 1e6 };
            let time = f64::from(b.ts_sec) + f64::from(b.ts_usec) / frac;
            *last_time = time;
            Ok(Block::Frame(linktype, time, b.data))
        }
        PcapBlockOwned::NG(Ng::SectionHeader(_)) => {
            interfaces.clear();
            Ok(Block::Other)
        }
        PcapBlockOwned::NG(Ng::InterfaceDescription(idb)) => {
            let resolution = ts_resolution(idb.if_tsresol).ok_or_else(|| {
                format!(
                    "interface {} has an invalid time resolution ({:#x})",
                    interfaces.len(),
                    idb.if_tsresol
                )
            })?;
            interfaces.push(Interface {
                linktype: idb.linktype,
                resolution,
                offset: idb.ts_offset(),
            });
            Ok(Block::Other)
        }
        PcapBlockOwned::NG(Ng::EnhancedPacket(epb)) => {
            let iface = interfaces
                .get(epb.if_id as usize)
                .copied()
                .ok_or_else(|| format!("packet of undeclared interface {}", epb.if_id))?;
            let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
            let time = iface.offset as f64
                + (ticks / iface.resolution) as f64
                + (ticks % iface.resolution) as f64 / iface.resolution as f64;
            *last_time = time;
            let data = epb.data;
            let caplen = (epb.caplen as usize).min(data.len());
            Ok(Block::Frame(iface.linktype, time, &data[..caplen]))
        }
        PcapBlockOwned::NG(Ng::SimplePacket(spb)) => {
            let iface = interfaces
                .first()
                .copied()
                .ok_or_else(|| "packet before any interface".to_string())?;
            // A simple packet block has no time: it gets the previous frame's.
            let data = spb.data;
            let len = (spb.origlen as usize).min(data.len());
            Ok(Block::Frame(iface.linktype, *last_time, &data[..len]))
        }
        PcapBlockOwned::NG(_) => Ok(Block::Other),
    }
}

/// Timestamp units per second of a pcapng `if_tsresol`: 10^n, or 2^n with the top bit set.
/// (pcap-parser 0.17 refuses every power of two, so this is done here.)
fn ts_resolution(tsresol: u8) -> Option<u64> {
    let n = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(n)
    } else {
        1u64.checked_shl(n).filter(|_| n < 64)
    }
}

/// The UDP datagram a frame carries, if it is one sent to `port`; otherwise counts why not.
fn udp_datagram(
    linktype: Linktype,
    time: f64,
    data: &[u8],
    port: Option<u16>,
    skipped: &mut Skipped,
) -> Option<Datagram> {
    let sliced = match linktype {
        Linktype::ETHERNET => SlicedPacket::from_ethernet(data),
        Linktype::LINUX_SLL => SlicedPacket::from_linux_sll(data),
        // SLL2: protocol type (2), reserved (2), interface index (4), ARPHRD type (2),
        // packet type (1), address length (1), address (8): 20 bytes.
        Linktype::LINUX_SLL2 if data.len() >= 20 => SlicedPacket::from_ether_type(
            EtherType(u16::from_be_bytes([data[0], data[1]])),
            &data[20..],
        ),
        // null/loop: a 4-byte address family (host or network order); the IP version nibble
        // tells IPv4 from IPv6 just as well.
        Linktype::NULL | Linktype::LOOP if data.len() >= 4 => SlicedPacket::from_ip(&data[4..]),
        Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => SlicedPacket::from_ip(data),
        Linktype::LINUX_SLL2 | Linktype::NULL | Linktype::LOOP => {
            skipped.malformed += 1;
            return None;
        }
        _ => {
            skipped.link_type += 1;
            return None;
        }
    };
    let Ok(sliced) = sliced else {
        skipped.malformed += 1;
        return None;
    };
    let source_ip = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            if v4.is_payload_fragmented() {
                skipped.fragmented += 1;
                return None;
            }
            IpAddr::V4(v4.header().source_addr())
        }
        Some(NetSlice::Ipv6(v6)) => {
            if v6.is_payload_fragmented() {
                skipped.fragmented += 1;
                return None;
            }
            IpAddr::V6(v6.header().source_addr())
        }
        _ => {
            skipped.not_udp += 1;
            return None;
        }
    };
    let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
        skipped.not_udp += 1;
        return None;
    };
    if port.is_some_and(|p| p != udp.destination_port()) {
        skipped.other_port += 1;
        return None;
    }
    Some(Datagram {
        time,
        source: SocketAddr::new(source_ip, udp.source_port()),
        bytes: udp.payload().to_vec(),
    })
}

/// How fast [`Replay`] hands out datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pace {
    /// As fast as the consumer takes them.
    #[default]
    Fast,
    /// With the gaps between their recorded times (a gap backwards restarts the clock).
    Recorded,
}

/// The capture and replay flags of the UDP receivers; each one's `Args` flattens this in.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ReplayArgs {
    /// Record every UDP datagram received (arrival time, source, bytes) to FILE
    #[arg(long, value_name = "FILE")]
    pub capture: Option<PathBuf>,

    /// Read datagrams from these capture, pcap or pcapng files (`-` is stdin) instead of the
    /// socket, keeping from pcap files the UDP sent to this tool's port; then exit
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub replay: Vec<PathBuf>,

    /// With --replay: `fast` (as fast as possible) or `recorded` (the recorded gaps)
    /// [default: fast]
    #[arg(long, value_name = "PACE")]
    pub replay_pace: Option<String>,

    /// With --replay: no progress bar (it is shown only when stderr is a terminal)
    #[arg(long)]
    pub no_progress: bool,
}

/// `--replay` and its options, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySettings {
    pub files: Vec<PathBuf>,
    pub pace: Pace,
    pub progress: bool,
}

/// Why the capture and replay flags are refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplayArgsError {
    #[error("--replay-pace {0:?}: use fast or recorded")]
    Pace(String),
    #[error("--capture and --replay do not go together")]
    CaptureAndReplay,
}

impl ReplayArgs {
    /// The replay asked for, if any.
    pub fn replay_settings(&self) -> Result<Option<ReplaySettings>, ReplayArgsError> {
        let pace = match self.replay_pace.as_deref() {
            None | Some("fast") => Pace::Fast,
            Some("recorded") => Pace::Recorded,
            Some(other) => return Err(ReplayArgsError::Pace(other.to_string())),
        };
        if self.replay.is_empty() {
            return Ok(None);
        }
        if self.capture.is_some() {
            return Err(ReplayArgsError::CaptureAndReplay);
        }
        Ok(Some(ReplaySettings {
            files: self.replay.clone(),
            pace,
            progress: !self.no_progress,
        }))
    }
}

/// How [`Replay`] reads its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Keep only UDP datagrams to this port from pcap/pcapng files.
    pub port: Option<u16>,
    pub pace: Pace,
    /// Show a progress bar on stderr, if stderr is a terminal.
    pub progress: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            port: None,
            pace: Pace::Fast,
            progress: true,
        }
    }
}

/// What a replay read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Datagrams handed out.
    pub datagrams: u64,
    /// Files read to their end.
    pub files_done: u64,
    /// Files abandoned on an error.
    pub files_failed: u64,
    /// pcap/pcapng frames skipped, by reason.
    pub skipped: Skipped,
}

/// Datagrams from several files, one file after the other, paced and with a progress bar.
///
/// Every file is opened once up front (so a missing file or unknown format is reported
/// before anything is replayed) and read lazily, one at a time. An error in a file is
/// yielded once, and the replay goes on with the next file. The iteration also ends when the
/// [`Shutdown`] given to [`with_shutdown`](Self::with_shutdown) is raised.
pub struct Replay {
    paths: Vec<PathBuf>,
    next_file: usize,
    current: Option<DatagramReader>,
    options: ReplayOptions,
    shutdown: Option<Shutdown>,
    bar: indicatif::ProgressBar,
    /// Bytes of the files finished.
    done_bytes: u64,
    /// (recorded time, instant) that the pacing clock is anchored to.
    anchor: Option<(f64, Instant)>,
    last_time: f64,
    stats: ReplayStats,
    since_draw: u32,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("paths", &self.paths)
            .field("options", &self.options)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Replay {
    /// Checks that every file opens and has a known format, then returns the replay. `-` is
    /// stdin (checked when it is reached).
    pub fn open(paths: &[PathBuf], options: ReplayOptions) -> Result<Replay, CaptureError> {
        let mut total = 0u64;
        let mut sized = true;
        for p in paths {
            if p.as_os_str() == "-" {
                sized = false;
                continue;
            }
            let r = DatagramReader::open(p, options.port)?;
            drop(r);
            match std::fs::metadata(p) {
                Ok(m) => total += m.len(),
                Err(_) => sized = false,
            }
        }
        let bar = if options.progress && io::stderr().is_terminal() {
            let bar = if sized {
                indicatif::ProgressBar::new(total)
            } else {
                indicatif::ProgressBar::new_spinner()
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "replay {wide_bar} {bytes}/{total_bytes} {msg} ({eta})",
            ) {
                bar.set_style(style);
            }
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        Ok(Replay {
            paths: paths.to_vec(),
            next_file: 0,
            current: None,
            options,
            shutdown: None,
            bar,
            done_bytes: 0,
            anchor: None,
            last_time: f64::NEG_INFINITY,
            stats: ReplayStats::default(),
            since_draw: 0,
        })
    }

    /// Ends the replay early (and interrupts a paced wait) when `shutdown` is raised.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Replay {
        self.shutdown = Some(shutdown);
        self
    }

    /// What was read so far.
    pub fn stats(&self) -> ReplayStats {
        let mut s = self.stats;
        if let Some(r) = &self.current {
            s.skipped.add(&r.skipped());
        }
        s
    }

    fn stopped(&self) -> bool {
        self.shutdown.as_ref().is_some_and(Shutdown::is_set)
    }

    fn finish_current(&mut self, failed: bool) {
        if let Some(r) = self.current.take() {
            self.stats.skipped.add(&r.skipped());
            self.done_bytes += r.bytes_read();
            if failed {
                self.stats.files_failed += 1;
            } else {
                self.stats.files_done += 1;
            }
        }
    }

    /// Waits until `time` is due on the recorded clock. Returns false if shut down meanwhile.
    fn pace(&mut self, time: f64) -> bool {
        if self.options.pace != Pace::Recorded {
            return true;
        }
        let anchor = match self.anchor {
            Some(a) if time >= self.last_time => a,
            _ => {
                let a = (time, Instant::now());
                self.anchor = Some(a);
                a
            }
        };
        self.last_time = time;
        let due = Duration::try_from_secs_f64(time - anchor.0).unwrap_or(Duration::ZERO);
        let until = anchor.1 + due;
        loop {
            let now = Instant::now();
            if now >= until {
                return true;
            }
            let left = until - now;
            match &self.shutdown {
                Some(s) => {
                    if s.wait_timeout(left) {
                        return false;
                    }
                }
                None => std::thread::sleep(left),
            }
        }
    }
}

impl Iterator for Replay {
    type Item = Result<Datagram, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.stopped() {
                self.bar.finish_and_clear();
                return None;
            }
            if self.current.is_none() {
                let Some(path) = self.paths.get(self.next_file) else {
                    self.bar.finish_and_clear();
                    return None;
                };
                self.next_file += 1;
                self.bar.set_message(path.display().to_string());
                match DatagramReader::open(path, self.options.port) {
                    Ok(r) => self.current = Some(r),
                    Err(e) => {
                        self.stats.files_failed += 1;
                        return Some(Err(e));
                    }
                }
            }
            let reader = self.current.as_mut()?;
            match reader.next_datagram() {
                Ok(Some(d)) => {
                    self.stats.datagrams += 1;
                    self.since_draw += 1;
                    if self.since_draw >= 256 {
                        self.since_draw = 0;
                        self.bar.set_position(self.done_bytes + reader.bytes_read());
                    }
                    if !self.pace(d.time) {
                        self.bar.finish_and_clear();
                        return None;
                    }
                    return Some(Ok(d));
                }
                Ok(None) => self.finish_current(false),
                Err(e) => {
                    self.finish_current(true);
                    return Some(Err(e));
                }
            }
        }
    }
}

/// A placeholder source address for datagrams whose sender is unknown.
pub const UNKNOWN_SOURCE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

#[cfg(test)]
mod tests;
