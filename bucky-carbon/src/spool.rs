//! The durable spool of one destination: batches that cannot go to carbon now wait on disk,
//! survive a restart of bucky-carbon, and are read back in order.
//!
//! A spool is a folder of segment files named by a sequence number (`00000001099511627776.spool`),
//! read oldest first. A segment starts with a 16-byte header (magic, format version, wire
//! protocol) followed by records: `payload length, sample count, flags, CRC-32` (little-endian
//! u32s; the CRC covers the first three fields and the payload) and the payload, which is the
//! batch exactly as it goes to carbon. A record is written with one `write(2)`, so a crash of
//! bucky-carbon leaves at most one torn record at the end of the segment it was writing;
//! reading detects it (short header or payload, or a CRC mismatch), skips it and counts it.
//!
//! Appends go to the newest segment; [`Spool::prepend`] writes a segment *before* the oldest
//! (data that was sent once but may have been lost with a broken connection is older than
//! everything spooled). Over the size cap the oldest segments are deleted and their samples
//! counted as dropped.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::encode::Batch;

const MAGIC: &[u8; 8] = b"BKYSPOOL";
const VERSION: u8 = 1;
/// Bytes of the segment header.
pub const SEGMENT_HEADER: u64 = 16;
/// Bytes of a record header.
pub const RECORD_HEADER: u64 = 16;
/// Larger records are taken for corruption (a batch is at most a few MiB).
const MAX_RECORD: u64 = 256 << 20;
/// Record flag: the batch was sent once already (it came from the resend window).
const FLAG_RESEND: u32 = 1;
/// The first sequence number of an empty spool: room below it for prepends.
const FIRST_SEQ: u64 = 1 << 40;
const SUFFIX: &str = ".spool";

/// What a spool has done, for the counters (all in samples unless named otherwise).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolStats {
    /// Samples written to the spool for the first time (resends not included).
    pub spooled: u64,
    /// Samples thrown away: oldest segments over the cap, unreadable segments, records that
    /// failed their checksum. Resend records are not counted (they were sent once).
    pub dropped: u64,
    /// Records skipped as torn or corrupt (a torn tail after a crash is one).
    pub corrupt: u64,
    /// Failed writes, reads and deletes of spool files.
    pub errors: u64,
}

/// What [`scan`] finds in a spool folder, without changing anything.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub segments: u64,
    pub bytes: u64,
    pub records: u64,
    /// Samples never sent.
    pub samples: u64,
    /// Samples of resend records (sent once before the connection broke).
    pub resend_samples: u64,
    /// Torn or unreadable records (or segments).
    pub corrupt: u64,
}

/// A record read back: the batch and whether it was sent once already.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub batch: Batch,
    pub resend: bool,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    /// Bytes of the file that hold whole records (after the scan at open, or as written).
    size: u64,
    /// Unread samples (fresh and resend).
    fresh: u64,
    resend: u64,
    /// Offset of the next unread record.
    read_at: u64,
}

/// The spool of one destination. Not thread-safe by itself: callers hold it in a mutex.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    protocol: u8,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// The newest segment, when this process appends to it: (seq, file).
    active: Option<(u64, File)>,
    reader: Option<(u64, File)>,
    /// The record handed out by [`Spool::peek`] and not yet consumed: (length, samples, resend).
    pending: Option<(u64, u64, bool)>,
    bytes: u64,
    stats: SpoolStats,
    /// Files written since the last [`Spool::take_unsynced`].
    unsynced: Vec<File>,
    active_dirty: bool,
    dir_dirty: bool,
    buf: Vec<u8>,
}

fn seg_name(seq: u64) -> String {
    format!("{seq:020}{SUFFIX}")
}

fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
            continue;
        };
        if let Ok(seq) = stem.parse::<u64>() {
            out.push((seq, entry.path()));
        }
    }
    out.sort_unstable_by_key(|&(seq, _)| seq);
    Ok(out)
}

fn checksum(len: u32, samples: u32, flags: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&samples.to_le_bytes());
    h.update(&flags.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn header_fields(h: &[u8; RECORD_HEADER as usize]) -> (u32, u32, u32, u32) {
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    (word(0), word(4), word(8), word(12))
}

/// Header walk of one segment: whole records up to the first torn or impossible one.
struct SegmentScan {
    /// The segment header is unreadable or of another format: the whole file is unusable.
    bad_header: Option<String>,
    protocol: u8,
    /// Length of the valid prefix.
    size: u64,
    file_len: u64,
    records: u64,
    fresh: u64,
    resend: u64,
}

fn scan_segment(path: &Path) -> io::Result<SegmentScan> {
    let mut f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut scan = SegmentScan {
        bad_header: None,
        protocol: 0,
        size: 0,
        file_len,
        records: 0,
        fresh: 0,
        resend: 0,
    };
    let mut head = [0u8; SEGMENT_HEADER as usize];
    if f.read_exact(&mut head).is_err() {
        scan.bad_header = Some(format!("{file_len} bytes: no segment header"));
        return Ok(scan);
    }
    if &head[..8] != MAGIC || head[8] != VERSION {
        scan.bad_header = Some("not a bucky-carbon spool segment of this version".into());
        return Ok(scan);
    }
    scan.protocol = head[9];
    let mut at = SEGMENT_HEADER;
    let mut rh = [0u8; RECORD_HEADER as usize];
    loop {
        if f.read_exact_at(&mut rh, at).is_err() {
            break;
        }
        let (len, samples, flags, _) = header_fields(&rh);
        let end = at + RECORD_HEADER + u64::from(len);
        if u64::from(len) > MAX_RECORD || end > file_len {
            break;
        }
        scan.records += 1;
        if flags & FLAG_RESEND != 0 {
            scan.resend += u64::from(samples);
        } else {
            scan.fresh += u64::from(samples);
        }
        at = end;
    }
    scan.size = at;
    Ok(scan)
}

/// Reads a spool folder (one destination's) without changing it.
pub fn scan(dir: &Path) -> io::Result<Summary> {
    let mut s = Summary::default();
    for (_, path) in list_segments(dir)? {
        let seg = match scan_segment(&path) {
            Ok(seg) => seg,
            // Deleted while we looked (replayed meanwhile): nothing waits there.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        s.segments += 1;
        s.bytes += seg.file_len;
        if seg.bad_header.is_some() {
            s.corrupt += 1;
            continue;
        }
        s.records += seg.records;
        s.samples += seg.fresh;
        s.resend_samples += seg.resend;
        s.corrupt += u64::from(seg.size < seg.file_len);
    }
    Ok(s)
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir` for batches of wire protocol
    /// `protocol`, holding at most about `max_bytes`. Segments left by an earlier run are
    /// checked: a torn last record is cut off and counted; segments of another protocol or
    /// format cannot be sent and are deleted, their samples counted as dropped.
    pub fn open(dir: &Path, protocol: u8, max_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let max_bytes = max_bytes.max(1 << 20);
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            protocol,
            max_bytes,
            segment_bytes: (max_bytes / 16).clamp(256 << 10, 64 << 20),
            segments: VecDeque::new(),
            active: None,
            reader: None,
            pending: None,
            bytes: 0,
            stats: SpoolStats::default(),
            unsynced: Vec::new(),
            active_dirty: false,
            dir_dirty: false,
            buf: Vec::new(),
        };
        for (seq, path) in list_segments(dir)? {
            let scan = scan_segment(&path)?;
            if let Some(why) = scan.bad_header {
                log::error!(
                    "spool {}: deleting unusable segment ({why})",
                    path.display()
                );
                spool.stats.corrupt += 1;
                spool.remove_file(&path);
                continue;
            }
            if scan.protocol != protocol {
                log::error!(
                    "spool {}: the segment holds {} samples for the {} protocol, not {}: \
                     deleted (count as dropped)",
                    path.display(),
                    scan.fresh,
                    protocol_name(scan.protocol),
                    protocol_name(protocol)
                );
                spool.stats.dropped += scan.fresh;
                spool.remove_file(&path);
                continue;
            }
            if scan.size < scan.file_len {
                log::warn!(
                    "spool {}: cut a torn record of {} bytes at its end (a crash while \
                     writing it)",
                    path.display(),
                    scan.file_len - scan.size
                );
                spool.stats.corrupt += 1;
                if let Err(e) = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(scan.size))
                {
                    log::error!("spool {}: cannot cut it: {e}", path.display());
                    spool.stats.errors += 1;
                }
            }
            if scan.records == 0 {
                spool.remove_file(&path);
                continue;
            }
            spool.bytes += scan.size;
            spool.segments.push_back(Segment {
                seq,
                size: scan.size,
                fresh: scan.fresh,
                resend: scan.resend,
                read_at: SEGMENT_HEADER,
            });
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Samples waiting (never sent, plus resends).
    pub fn samples(&self) -> u64 {
        self.segments.iter().map(|s| s.fresh + s.resend).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.fresh + s.resend == 0)
    }

    /// Bytes of the segment files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    fn remove_file(&mut self, path: &Path) {
        match fs::remove_file(path) {
            Ok(()) => self.dir_dirty = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                log::error!("spool: cannot delete {}: {e}", path.display());
                self.stats.errors += 1;
            }
        }
    }

    fn encode_record(buf: &mut Vec<u8>, batch: &Batch, resend: bool) {
        let len = batch.bytes.len() as u32;
        let samples = batch.samples as u32;
        let flags = if resend { FLAG_RESEND } else { 0 };
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&samples.to_le_bytes());
        buf.extend_from_slice(&flags.to_le_bytes());
        buf.extend_from_slice(&checksum(len, samples, flags, &batch.bytes).to_le_bytes());
        buf.extend_from_slice(&batch.bytes);
    }

    fn new_segment(&mut self, seq: u64) -> io::Result<File> {
        let path = self.dir.join(seg_name(seq));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut head = [0u8; SEGMENT_HEADER as usize];
        head[..8].copy_from_slice(MAGIC);
        head[8] = VERSION;
        head[9] = self.protocol;
        if let Err(e) = f.write_all(&head) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.dir_dirty = true;
        Ok(f)
    }

    /// Appends `batch` after everything spooled. On error nothing is appended (the caller
    /// counts the samples as dropped).
    pub fn append(&mut self, batch: &Batch, resend: bool) -> io::Result<()> {
        if batch.samples == 0 {
            return Ok(());
        }
        let rec_len = RECORD_HEADER + batch.bytes.len() as u64;
        let roll = match (&self.active, self.segments.back()) {
            (Some((seq, _)), Some(last)) => {
                *seq != last.seq
                    || (last.size + rec_len > self.segment_bytes && last.size > SEGMENT_HEADER)
            }
            _ => true,
        };
        if roll {
            self.seal();
            let seq = self.segments.back().map_or(FIRST_SEQ, |s| s.seq + 1);
            let f = self.new_segment(seq)?;
            self.active = Some((seq, f));
            self.bytes += SEGMENT_HEADER;
            self.segments.push_back(Segment {
                seq,
                size: SEGMENT_HEADER,
                fresh: 0,
                resend: 0,
                read_at: SEGMENT_HEADER,
            });
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        Self::encode_record(&mut buf, batch, resend);
        let result = match (&mut self.active, self.segments.back_mut()) {
            (Some((_, f)), Some(seg)) => match f.write_all(&buf) {
                Ok(()) => {
                    seg.size += rec_len;
                    if resend {
                        seg.resend += batch.samples as u64;
                    } else {
                        seg.fresh += batch.samples as u64;
                    }
                    Ok(())
                }
                Err(e) => {
                    // Cut off whatever part was written; if even that fails, stop appending
                    // to this file (reading will skip the torn record).
                    if f.set_len(seg.size).is_err() {
                        self.active = None;
                    }
                    Err(e)
                }
            },
            _ => Err(io::Error::other("no active spool segment")),
        };
        self.buf = buf;
        match result {
            Ok(()) => {
                self.bytes += rec_len;
                self.active_dirty = true;
                if !resend {
                    self.stats.spooled += batch.samples as u64;
                }
                self.enforce_cap();
                Ok(())
            }
            Err(e) => {
                self.stats.errors += 1;
                Err(e)
            }
        }
    }

    /// Writes `batches` (with their resend flags) as a new segment before everything
    /// spooled, so they are read first.
    pub fn prepend(&mut self, batches: &[(&Batch, bool)]) -> io::Result<()> {
        let batches: Vec<&(&Batch, bool)> = batches.iter().filter(|(b, _)| b.samples > 0).collect();
        if batches.is_empty() {
            return Ok(());
        }
        let seq = match self.segments.front() {
            Some(s) => s.seq.saturating_sub(1),
            None => FIRST_SEQ,
        };
        let mut f = self.new_segment(seq)?;
        let mut buf = Vec::new();
        let mut seg = Segment {
            seq,
            size: SEGMENT_HEADER,
            fresh: 0,
            resend: 0,
            read_at: SEGMENT_HEADER,
        };
        for (b, resend) in &batches {
            Self::encode_record(&mut buf, b, *resend);
            if *resend {
                seg.resend += b.samples as u64;
            } else {
                seg.fresh += b.samples as u64;
            }
        }
        if let Err(e) = f.write_all(&buf) {
            let _ = fs::remove_file(self.dir.join(seg_name(seq)));
            self.stats.errors += 1;
            return Err(e);
        }
        seg.size += buf.len() as u64;
        self.bytes += seg.size;
        self.stats.spooled += seg.fresh;
        self.segments.push_front(seg);
        self.unsynced.push(f);
        self.enforce_cap();
        Ok(())
    }

    /// Stops appending to the newest segment; the next append starts a new one.
    fn seal(&mut self) {
        if let Some((_, f)) = self.active.take() {
            if self.active_dirty {
                self.unsynced.push(f);
            }
            self.active_dirty = false;
        }
    }

    /// Deletes the oldest segments while the spool is over its cap (never the only one).
    fn enforce_cap(&mut self) {
        while self.bytes > self.max_bytes && self.segments.len() > 1 {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            self.bytes -= seg.size;
            self.stats.dropped += seg.fresh;
            if self.reader.as_ref().is_some_and(|(s, _)| *s == seg.seq) {
                self.reader = None;
                self.pending = None;
            }
            log::error!(
                "spool {}: over its cap of {} bytes: dropped the oldest segment ({} samples)",
                self.dir.display(),
                self.max_bytes,
                seg.fresh
            );
            self.remove_file(&self.dir.join(seg_name(seg.seq)));
        }
    }

    /// Drops the front segment once it has been read to its end.
    fn finish_front(&mut self) {
        let Some(seg) = self.segments.pop_front() else {
            return;
        };
        self.bytes -= seg.size;
        if self.reader.as_ref().is_some_and(|(s, _)| *s == seg.seq) {
            self.reader = None;
        }
        if self.active.as_ref().is_some_and(|(s, _)| *s == seg.seq) {
            self.active = None;
            self.active_dirty = false;
        }
        self.remove_file(&self.dir.join(seg_name(seg.seq)));
    }

    /// The oldest unread record, without consuming it ([`Spool::consume`] does). Torn and
    /// corrupt records are skipped and counted.
    pub fn peek(&mut self) -> Option<Record> {
        loop {
            let (seq, read_at, size) = {
                let seg = self.segments.front()?;
                (seg.seq, seg.read_at, seg.size)
            };
            let is_active = self.active.as_ref().is_some_and(|(s, _)| *s == seq);
            if read_at >= size {
                if is_active {
                    return None;
                }
                self.finish_front();
                continue;
            }
            if self.reader.as_ref().map_or(true, |(s, _)| *s != seq) {
                match File::open(self.dir.join(seg_name(seq))) {
                    Ok(f) => self.reader = Some((seq, f)),
                    Err(e) => {
                        log::error!(
                            "spool {}: cannot read segment {seq}: {e}; dropping it",
                            self.dir.display()
                        );
                        self.stats.errors += 1;
                        if let Some(seg) = self.segments.front() {
                            self.stats.dropped += seg.fresh;
                        }
                        self.finish_front();
                        continue;
                    }
                }
            }
            let Some((_, f)) = &self.reader else {
                continue;
            };
            let mut rh = [0u8; RECORD_HEADER as usize];
            let header_ok = f.read_exact_at(&mut rh, read_at).is_ok();
            let (len, samples, flags, crc) = header_fields(&rh);
            let end = read_at + RECORD_HEADER + u64::from(len);
            if !header_ok || u64::from(len) > MAX_RECORD || end > size {
                self.corrupt_rest(seq);
                continue;
            }
            let mut payload = vec![0u8; len as usize];
            let read_ok = f
                .read_exact_at(&mut payload, read_at + RECORD_HEADER)
                .is_ok();
            let resend = flags & FLAG_RESEND != 0;
            if !read_ok || checksum(len, samples, flags, &payload) != crc {
                log::error!(
                    "spool {}: segment {seq}: a record of {len} bytes fails its checksum: \
                     skipped",
                    self.dir.display()
                );
                self.stats.corrupt += 1;
                if let Some(seg) = self.segments.front_mut() {
                    let n = u64::from(samples);
                    if resend {
                        seg.resend = seg.resend.saturating_sub(n);
                    } else {
                        let n = n.min(seg.fresh);
                        seg.fresh -= n;
                        self.stats.dropped += n;
                    }
                    seg.read_at = end;
                }
                continue;
            }
            self.pending = Some((RECORD_HEADER + u64::from(len), u64::from(samples), resend));
            return Some(Record {
                batch: Batch {
                    bytes: payload,
                    samples: samples as usize,
                },
                resend,
            });
        }
    }

    /// The rest of segment `seq` cannot be read: count it and move on.
    fn corrupt_rest(&mut self, seq: u64) {
        log::error!(
            "spool {}: segment {seq} ends in a torn or corrupt record: skipped",
            self.dir.display()
        );
        self.stats.corrupt += 1;
        if let Some(seg) = self.segments.front_mut() {
            self.stats.dropped += seg.fresh;
            seg.fresh = 0;
            seg.resend = 0;
            seg.read_at = seg.size;
        }
    }

    /// Marks the record last returned by [`Spool::peek`] as sent.
    pub fn consume(&mut self) {
        let Some((len, samples, resend)) = self.pending.take() else {
            return;
        };
        let Some(seg) = self.segments.front_mut() else {
            return;
        };
        seg.read_at += len;
        if resend {
            seg.resend = seg.resend.saturating_sub(samples);
        } else {
            seg.fresh = seg.fresh.saturating_sub(samples);
        }
        if seg.read_at >= seg.size {
            self.finish_front();
        }
    }

    /// Handles to fsync: files written since the last call, and the folder when files were
    /// created or deleted. The caller syncs them outside the lock.
    pub fn take_unsynced(&mut self) -> Vec<File> {
        let mut out = std::mem::take(&mut self.unsynced);
        if self.active_dirty {
            if let Some((_, f)) = &self.active {
                match f.try_clone() {
                    Ok(c) => out.push(c),
                    Err(_) => self.stats.errors += 1,
                }
            }
            self.active_dirty = false;
        }
        if self.dir_dirty {
            if let Ok(d) = File::open(&self.dir) {
                out.push(d);
            }
            self.dir_dirty = false;
        }
        out
    }
}

/// The name of a wire protocol tag, for messages.
pub fn protocol_name(tag: u8) -> &'static str {
    match tag {
        0 => "plaintext",
        1 => "pickle",
        _ => "unknown",
    }
}

/// fdatasync's each file (the folder: fsync), logging failures; returns how many failed.
pub fn sync_all(files: Vec<File>) -> u64 {
    let mut failed = 0;
    for f in files {
        if let Err(e) = f.sync_data() {
            log::error!("spool: fsync failed: {e}");
            failed += 1;
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(tag: &str, samples: usize) -> Batch {
        let mut bytes = Vec::new();
        for i in 0..samples {
            bytes.extend_from_slice(format!("{tag}.{i} {i} 1700000000\n").as_bytes());
        }
        Batch { bytes, samples }
    }

    fn drain(s: &mut Spool) -> Vec<(Batch, bool)> {
        let mut out = Vec::new();
        while let Some(r) = s.peek() {
            out.push((r.batch, r.resend));
            s.consume();
        }
        out
    }

    #[test]
    fn appends_read_back_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        let batches: Vec<Batch> = (0..50)
            .map(|i| batch(&format!("a{i}"), 1 + i % 7))
            .collect();
        for b in &batches {
            s.append(b, false).unwrap();
        }
        assert_eq!(
            s.samples(),
            batches.iter().map(|b| b.samples as u64).sum::<u64>()
        );
        // Read half, then "restart" without consuming the rest.
        for b in &batches[..20] {
            assert_eq!(s.peek().unwrap().batch, *b);
            s.consume();
        }
        drop(s);
        let mut s = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        let got: Vec<Batch> = drain(&mut s).into_iter().map(|(b, _)| b).collect();
        // The segment being read was not finished: it is read again from its start.
        assert_eq!(got, batches);
        assert!(s.is_empty());
        assert_eq!(list_segments(dir.path()).unwrap().len(), 0);
        assert_eq!(scan(dir.path()).unwrap(), Summary::default());
    }

    #[test]
    fn a_torn_tail_is_cut_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        for i in 0..5 {
            s.append(&batch(&format!("t{i}"), 3), false).unwrap();
        }
        drop(s);
        let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
        let len = fs::metadata(&path).unwrap().len();
        // A kill -9 in the middle of the last record's write.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let summary = scan(dir.path()).unwrap();
        assert_eq!(
            (summary.records, summary.samples, summary.corrupt),
            (4, 12, 1)
        );
        let mut s = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        assert_eq!(s.stats().corrupt, 1);
        let got = drain(&mut s);
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].0, batch("t3", 3));
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        for i in 0..3 {
            s.append(&batch(&format!("c{i}"), 2), false).unwrap();
        }
        drop(s);
        let (_, path) = list_segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = fs::read(&path).unwrap();
        // Flip a payload byte of the second record.
        let first = RECORD_HEADER as usize + batch("c0", 2).bytes.len();
        bytes[SEGMENT_HEADER as usize + first + RECORD_HEADER as usize + 3] ^= 0x20;
        fs::write(&path, &bytes).unwrap();
        let mut s = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        let got: Vec<Batch> = drain(&mut s).into_iter().map(|(b, _)| b).collect();
        assert_eq!(got, vec![batch("c0", 2), batch("c2", 2)]);
        assert_eq!(s.stats().corrupt, 1);
        assert_eq!(s.stats().dropped, 2);
    }

    #[test]
    fn prepend_goes_first_and_keeps_the_read_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1, 1 << 30).unwrap();
        s.append(&batch("x0", 1), false).unwrap();
        s.append(&batch("x1", 1), false).unwrap();
        s.append(&batch("x2", 1), false).unwrap();
        assert_eq!(s.peek().unwrap().batch, batch("x0", 1));
        s.consume();
        // x1 is handed out, the connection breaks before it is sent: not consumed.
        assert_eq!(s.peek().unwrap().batch, batch("x1", 1));
        let w = batch("x0", 1);
        s.prepend(&[(&w, true)]).unwrap();
        s.append(&batch("x3", 1), false).unwrap();
        let got = drain(&mut s);
        let names: Vec<(String, bool)> = got
            .iter()
            .map(|(b, r)| (String::from_utf8_lossy(&b.bytes[..2]).into_owned(), *r))
            .collect();
        assert_eq!(
            names,
            vec![
                ("x0".into(), true),
                ("x1".into(), false),
                ("x2".into(), false),
                ("x3".into(), false)
            ]
        );
        assert_eq!(s.stats().spooled, 4);
    }

    #[test]
    fn over_the_cap_the_oldest_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB cap (the minimum): 256 KiB segments.
        let mut s = Spool::open(dir.path(), 0, 1 << 20).unwrap();
        let b = Batch {
            bytes: vec![b'x'; 60_000],
            samples: 1000,
        };
        for _ in 0..40 {
            s.append(&b, false).unwrap();
        }
        assert!(s.bytes() <= 1 << 20, "{}", s.bytes());
        let st = s.stats();
        assert_eq!(st.spooled, 40_000);
        assert!(st.dropped > 0);
        assert_eq!(st.dropped + s.samples(), 40_000);
        let on_disk: u64 = list_segments(dir.path())
            .unwrap()
            .iter()
            .map(|(_, p)| fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(on_disk, s.bytes());
    }

    #[test]
    fn another_protocol_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        s.append(&batch("p", 5), false).unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1, 1 << 30).unwrap();
        assert_eq!(s.stats().dropped, 5);
        assert!(s.peek().is_none());
        assert_eq!(list_segments(dir.path()).unwrap().len(), 0);
    }

    #[test]
    fn sync_handles_cover_written_files_and_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 0, 1 << 30).unwrap();
        assert!(s.take_unsynced().is_empty());
        s.append(&batch("s", 1), false).unwrap();
        let files = s.take_unsynced();
        assert_eq!(files.len(), 2);
        assert_eq!(sync_all(files), 0);
        assert!(s.take_unsynced().is_empty());
    }
}
