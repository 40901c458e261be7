//! Capture files round-trip; pcap/pcapng files of every supported link type replay their
//! UDP datagrams; truncated and corrupt files give errors naming the file and the offset.

use super::*;
use etherparse::{LinuxSllPacketType, PacketBuilder};
use std::net::{Ipv6Addr, SocketAddrV4};

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port))
}

fn sample_datagrams() -> Vec<Datagram> {
    vec![
        Datagram {
            time: 1795650000.25,
            source: v4([127, 0, 0, 1], 40000),
            bytes: b"hello".to_vec(),
        },
        Datagram {
            time: 1795650001.0,
            source: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 5),
            bytes: Vec::new(),
        },
        Datagram {
            time: 1795650002.125,
            source: v4([10, 1, 2, 3], 65535),
            bytes: vec![0xab; MAX_DATAGRAM],
        },
    ]
}

fn write_capture(path: &Path, datagrams: &[Datagram]) {
    let mut w = CaptureWriter::create(path).unwrap();
    for d in datagrams {
        w.write(d).unwrap();
    }
    assert_eq!(w.count(), datagrams.len() as u64);
    w.flush().unwrap();
}

fn read_all(path: &Path, port: Option<u16>) -> (Vec<Datagram>, Option<CaptureError>, Skipped) {
    let mut r = DatagramReader::open(path, port).unwrap();
    let mut got = Vec::new();
    let mut err = None;
    for d in &mut r {
        match d {
            Ok(d) => got.push(d),
            Err(e) => err = Some(e),
        }
    }
    (got, err, r.skipped())
}

#[test]
fn capture_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.cap");
    let ds = sample_datagrams();
    write_capture(&path, &ds);
    let mut r = DatagramReader::open(&path, Some(1)).unwrap();
    assert_eq!(r.format(), Format::Capture);
    let got: Vec<Datagram> = (&mut r).map(Result::unwrap).collect();
    assert_eq!(got, ds, "the port filter does not apply to capture files");
    assert_eq!(r.bytes_read(), std::fs::metadata(&path).unwrap().len());
}

#[test]
fn oversized_datagram_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = CaptureWriter::create(&dir.path().join("c.cap")).unwrap();
    let err = w
        .write_parts(1.0, UNKNOWN_SOURCE, &vec![0; MAX_DATAGRAM + 1])
        .unwrap_err();
    assert!(err.to_string().contains("65536 bytes"), "{err}");
    assert_eq!(w.count(), 0);
}

#[test]
fn truncated_capture_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.cap");
    let ds = sample_datagrams();
    write_capture(&path, &ds[..2]);
    let full = std::fs::read(&path).unwrap();
    // Record 2 starts after the header (12) and record 1.
    let second = 12 + 4 + bincode::serialize(&ds[0]).unwrap().len() as u64;
    for cut in [1usize, 3, 5] {
        std::fs::write(&path, &full[..full.len() - cut]).unwrap();
        let (got, err, _) = read_all(&path, None);
        assert_eq!(got, ds[..1]);
        let msg = err.expect("an error").to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("offset {second}")), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
    }
    // Cut inside the 4-byte length of record 2.
    std::fs::write(&path, &full[..second as usize + 2]).unwrap();
    let (got, err, _) = read_all(&path, None);
    assert_eq!(got.len(), 1);
    assert!(err.unwrap().to_string().contains("record header cut short"));
}

#[test]
fn corrupt_records_are_errors_not_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.cap");
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&[0; 64]);
    std::fs::write(&path, &bytes).unwrap();
    let (got, err, _) = read_all(&path, None);
    assert!(got.is_empty());
    let msg = err.unwrap().to_string();
    assert!(
        msg.contains("offset 12") && msg.contains("record length 4294967295"),
        "{msg}"
    );

    // A body that does not decode: an address kind that does not exist.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    let mut body = 1.0f64.to_le_bytes().to_vec();
    body.extend_from_slice(&7u32.to_le_bytes());
    body.extend_from_slice(&[0; 20]);
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    std::fs::write(&path, &bytes).unwrap();
    let msg = read_all(&path, None).1.unwrap().to_string();
    assert!(msg.contains("offset 12: record does not decode"), "{msg}");

    // A byte string longer than its record.
    let mut body = bincode::serialize(&sample_datagrams()[0]).unwrap();
    let n = body.len();
    body[n - 13..n - 5].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    std::fs::write(&path, &bytes).unwrap();
    assert!(read_all(&path, None).1.is_some());
}

#[test]
fn unknown_formats_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u");
    std::fs::write(&path, b"").unwrap();
    let e = DatagramReader::open(&path, None).unwrap_err().to_string();
    assert!(
        e.ends_with("not a bucky capture, pcap or pcapng file (it is empty)"),
        "{e}"
    );
    std::fs::write(&path, b"stats.x 1 2\n").unwrap();
    let e = DatagramReader::open(&path, None).unwrap_err().to_string();
    assert!(
        e.ends_with("not a bucky capture, pcap or pcapng file"),
        "{e}"
    );
    let mut v2 = MAGIC.to_vec();
    v2.extend_from_slice(&2u32.to_le_bytes());
    std::fs::write(&path, &v2).unwrap();
    let e = DatagramReader::open(&path, None).unwrap_err().to_string();
    assert!(e.contains("offset 8: capture format version 2"), "{e}");
    std::fs::write(&path, &MAGIC[..]).unwrap();
    let e = DatagramReader::open(&path, None).unwrap_err().to_string();
    assert!(e.contains("header is cut short"), "{e}");
    std::fs::write(&path, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0]).unwrap();
    let e = DatagramReader::open(&path, None).unwrap_err().to_string();
    assert!(e.contains("offset 0"), "{e}");
    let e = DatagramReader::open(&dir.path().join("missing"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing") && e.contains("No such file"), "{e}");
}

// ---- pcap and pcapng writers for the tests ----

const PORT: u16 = 25826;

fn udp_v4(src: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src, [127, 0, 0, 1], 64).udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn udp_v6(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv6(
        Ipv6Addr::LOCALHOST.octets(),
        Ipv6Addr::LOCALHOST.octets(),
        64,
    )
    .udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

fn ether(ip: &[u8], v6: bool) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    f.extend_from_slice(ip);
    f
}

fn ether_tcp() -> Vec<u8> {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
        .tcp(1000, PORT, 1, 100);
    let mut out = Vec::new();
    b.write(&mut out, b"not udp").unwrap();
    out
}

/// A legacy pcap file: little-endian, microseconds (or nanoseconds), given link type.
fn pcap(linktype: u32, nanos: bool, frames: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let magic: u32 = if nanos { 0xa1b23c4d } else { 0xa1b2c3d4 };
    let mut out = Vec::new();
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&262144u32.to_le_bytes());
    out.extend_from_slice(&linktype.to_le_bytes());
    for (sec, frac, data) in frames {
        out.extend_from_slice(&sec.to_le_bytes());
        out.extend_from_slice(&frac.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

/// The same file written big-endian, as a big-endian machine's tcpdump does.
fn pcap_be(linktype: u32, frames: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_be_bytes());
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_be_bytes());
    out.extend_from_slice(&linktype.to_be_bytes());
    for (sec, frac, data) in frames {
        out.extend_from_slice(&sec.to_be_bytes());
        out.extend_from_slice(&frac.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    }
    out
}

fn pad4(v: &mut Vec<u8>) {
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

fn ng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let len = 12 + body.len() as u32;
    let mut out = kind.to_le_bytes().to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&len.to_le_bytes());
    out
}

fn ng_section() -> Vec<u8> {
    let mut body = 0x1A2B3C4Du32.to_le_bytes().to_vec();
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(-1i64).to_le_bytes());
    ng_block(0x0A0D0D0A, &body)
}

fn ng_interface(linktype: u16, tsresol: Option<u8>) -> Vec<u8> {
    let mut body = linktype.to_le_bytes().to_vec();
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&262144u32.to_le_bytes());
    if let Some(r) = tsresol {
        body.extend_from_slice(&9u16.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&[r, 0, 0, 0]);
        body.extend_from_slice(&[0, 0, 0, 0]);
    }
    ng_block(1, &body)
}

fn ng_epb(if_id: u32, ticks: u64, data: &[u8]) -> Vec<u8> {
    let mut body = if_id.to_le_bytes().to_vec();
    body.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ticks as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    pad4(&mut body);
    ng_block(6, &body)
}

fn ng_spb(data: &[u8]) -> Vec<u8> {
    let mut body = (data.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(data);
    pad4(&mut body);
    ng_block(3, &body)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn pcap_ethernet_keeps_udp_to_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let frames = vec![
        (
            1795650000,
            250_000,
            ether(&udp_v4([127, 0, 0, 2], 4000, PORT, b"one"), false),
        ),
        (1795650000, 500_000, ether_tcp()),
        (
            1795650001,
            0,
            ether(&udp_v4([127, 0, 0, 3], 4001, 8125, b"other"), false),
        ),
        (
            1795650001,
            750_000,
            ether(&udp_v6(4002, PORT, b"two"), true),
        ),
        (
            1795650002,
            0,
            ether(&udp_v4([127, 0, 0, 4], 4003, PORT, b""), false),
        ),
    ];
    let path = write(dir.path(), "e.pcap", &pcap(1, false, &frames));
    let (got, err, skipped) = read_all(&path, Some(PORT));
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        got,
        vec![
            Datagram {
                time: 1795650000.25,
                source: v4([127, 0, 0, 2], 4000),
                bytes: b"one".to_vec()
            },
            Datagram {
                time: 1795650001.75,
                source: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 4002),
                bytes: b"two".to_vec()
            },
            Datagram {
                time: 1795650002.0,
                source: v4([127, 0, 0, 4], 4003),
                bytes: Vec::new()
            },
        ]
    );
    assert_eq!(skipped.not_udp, 1);
    assert_eq!(skipped.other_port, 1);
    assert_eq!(skipped.total(), 2);
    // Without a port filter every UDP datagram comes through.
    assert_eq!(read_all(&path, None).0.len(), 4);
    // Big-endian files read the same.
    let path = write(dir.path(), "be.pcap", &pcap_be(1, &frames));
    let (got_be, err, _) = read_all(&path, Some(PORT));
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got_be, got);
}

#[test]
fn pcap_link_types() {
    let dir = tempfile::tempdir().unwrap();
    let ip = udp_v4([127, 0, 0, 9], 999, PORT, b"payload");
    let ip6 = udp_v6(998, PORT, b"payload6");
    let mut sll = Vec::new();
    PacketBuilder::linux_sll(LinuxSllPacketType::HOST, 6, [0; 8])
        .ipv4([127, 0, 0, 9], [127, 0, 0, 1], 64)
        .udp(999, PORT)
        .write(&mut sll, b"payload")
        .unwrap();
    let sll2 = |ip: &[u8], proto: u16| {
        let mut f = proto.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(ip);
        f
    };
    let null = |ip: &[u8], family: [u8; 4]| {
        let mut f = family.to_vec();
        f.extend_from_slice(ip);
        f
    };
    let cases: Vec<(&str, u32, Vec<u8>, &[u8])> = vec![
        ("sll", 113, sll, b"payload"),
        ("sll2", 276, sll2(&ip, 0x0800), b"payload"),
        ("sll2-v6", 276, sll2(&ip6, 0x86dd), b"payload6"),
        ("null", 0, null(&ip, 2u32.to_le_bytes()), b"payload"),
        ("null-v6", 0, null(&ip6, 30u32.to_le_bytes()), b"payload6"),
        ("loop", 108, null(&ip, 2u32.to_be_bytes()), b"payload"),
        ("raw", 101, ip.clone(), b"payload"),
        ("ipv4", 228, ip.clone(), b"payload"),
        ("ipv6", 229, ip6.clone(), b"payload6"),
    ];
    for (name, linktype, frame, payload) in cases {
        let path = write(
            dir.path(),
            name,
            &pcap(linktype, true, &[(7, 500_000_000, frame)]),
        );
        let (got, err, skipped) = read_all(&path, Some(PORT));
        assert!(err.is_none(), "{name}: {err:?}");
        assert_eq!(got.len(), 1, "{name}: {skipped:?}");
        assert_eq!(got[0].bytes, payload, "{name}");
        assert_eq!(got[0].time, 7.5, "{name}: nanosecond timestamps");
    }
    // Unsupported link types are skipped and counted, short frames too.
    let path = write(
        dir.path(),
        "wifi",
        &pcap(105, false, &[(1, 0, vec![1, 2, 3])]),
    );
    let (got, _, skipped) = read_all(&path, Some(PORT));
    assert!(got.is_empty());
    assert_eq!(skipped.link_type, 1);
    let path = write(
        dir.path(),
        "short",
        &pcap(276, false, &[(1, 0, vec![8, 0, 1])]),
    );
    assert_eq!(read_all(&path, Some(PORT)).2.malformed, 1);
}

#[test]
fn fragments_and_snapped_frames_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut frag = udp_v4([127, 0, 0, 2], 1, PORT, &[7; 100]);
    frag[6] = 0x20; // more fragments
    let full = ether(&udp_v4([127, 0, 0, 2], 1, PORT, &[7; 100]), false);
    let snapped = full[..60].to_vec();
    let path = write(
        dir.path(),
        "f.pcap",
        &pcap(
            1,
            false,
            &[(1, 0, ether(&frag, false)), (2, 0, snapped), (3, 0, full)],
        ),
    );
    let (got, err, skipped) = read_all(&path, Some(PORT));
    assert!(err.is_none());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].time, 3.0);
    assert_eq!(skipped.fragmented, 1);
    assert_eq!(skipped.malformed, 1);
}

#[test]
fn pcapng_sections_interfaces_and_resolutions() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = ng_section();
    file.extend(ng_interface(1, None)); // microseconds
    file.extend(ng_interface(113, Some(9))); // nanoseconds
    let a = ether(&udp_v4([127, 0, 0, 2], 10, PORT, b"a"), false);
    file.extend(ng_epb(0, 1_795_650_000_250_000, &a));
    let mut sll = Vec::new();
    PacketBuilder::linux_sll(LinuxSllPacketType::HOST, 6, [0; 8])
        .ipv4([127, 0, 0, 3], [127, 0, 0, 1], 64)
        .udp(11, PORT)
        .write(&mut sll, b"bb")
        .unwrap();
    file.extend(ng_epb(1, 1_795_650_001_000_000_001, &sll));
    file.extend(ng_spb(&a));
    // A second section starts over with its own interfaces.
    file.extend(ng_section());
    file.extend(ng_interface(101, Some(0x80 | 10)));
    file.extend(ng_epb(0, 3 * 1024 + 512, &udp_v6(12, PORT, b"ccc")));
    let path = write(dir.path(), "n.pcapng", &file);
    let mut r = DatagramReader::open(&path, Some(PORT)).unwrap();
    assert_eq!(r.format(), Format::PcapNg);
    let got: Vec<Datagram> = (&mut r).map(Result::unwrap).collect();
    let summary: Vec<(f64, &[u8])> = got.iter().map(|d| (d.time, &d.bytes[..])).collect();
    assert_eq!(
        summary,
        vec![
            (1795650000.25, &b"a"[..]),
            (1795650001.000000001, &b"bb"[..]),
            (1795650001.000000001, &b"a"[..]),
            (3.5, &b"ccc"[..]),
        ]
    );
    assert_eq!(got[1].source, v4([127, 0, 0, 3], 11));
    assert_eq!(r.bytes_read(), file.len() as u64);

    // A packet of an interface that was never described is corrupt.
    let mut bad = ng_section();
    bad.extend(ng_epb(3, 1, &a));
    let path = write(dir.path(), "bad.pcapng", &bad);
    let (_, err, _) = read_all(&path, None);
    let msg = err.unwrap().to_string();
    assert!(
        msg.contains("offset 28: packet of undeclared interface 3"),
        "{msg}"
    );
}

#[test]
fn truncated_pcap_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let frame = ether(&udp_v4([127, 0, 0, 2], 10, PORT, b"abc"), false);
    let full = pcap(1, false, &[(1, 0, frame.clone()), (2, 0, frame.clone())]);
    let path = write(dir.path(), "t.pcap", &full[..full.len() - 5]);
    let (got, err, _) = read_all(&path, Some(PORT));
    assert_eq!(got.len(), 1);
    let second = 24 + 16 + frame.len();
    let msg = err.unwrap().to_string();
    assert!(msg.contains("t.pcap"), "{msg}");
    assert!(msg.contains(&format!("offset {second}")), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");

    let mut ng = ng_section();
    ng.extend(ng_interface(1, None));
    let epb_at = ng.len();
    ng.extend(ng_epb(0, 5, &frame));
    let path = write(dir.path(), "t.pcapng", &ng[..ng.len() - 3]);
    let msg = read_all(&path, None).1.unwrap().to_string();
    assert!(msg.contains(&format!("offset {epb_at}")), "{msg}");
}

#[test]
fn huge_frame_lengths_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = pcap(1, false, &[]);
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&0u32.to_le_bytes());
    file.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
    file.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
    file.extend_from_slice(&[0; 100]);
    let path = write(dir.path(), "h.pcap", &file);
    let (got, err, _) = read_all(&path, None);
    assert!(got.is_empty());
    assert!(err.is_some());
}

/// A reader that hands out one byte per read, as a slow pipe might.
struct Trickle(Vec<u8>, usize);
impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.1 >= self.0.len() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[self.1];
        self.1 += 1;
        Ok(1)
    }
}

#[test]
fn short_reads_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.cap");
    let ds = sample_datagrams();
    write_capture(&path, &ds[..2]);
    let bytes = std::fs::read(&path).unwrap();
    let r =
        DatagramReader::from_reader(Path::new("pipe"), Box::new(Trickle(bytes, 0)), None).unwrap();
    let got: Vec<Datagram> = r.map(Result::unwrap).collect();
    assert_eq!(got, ds[..2]);

    let frame = ether(&udp_v4([127, 0, 0, 2], 10, PORT, b"abc"), false);
    let file = pcap(1, false, &[(1, 0, frame.clone()), (2, 0, frame)]);
    let r =
        DatagramReader::from_reader(Path::new("pipe"), Box::new(Trickle(file, 0)), None).unwrap();
    let got: Vec<Datagram> = r.map(Result::unwrap).collect();
    assert_eq!(got.len(), 2);
}

#[test]
fn replay_goes_on_after_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.cap");
    let ds = sample_datagrams();
    write_capture(&a, &ds[..2]);
    let b = dir.path().join("b.cap");
    write_capture(&b, &ds[..2]);
    let full = std::fs::read(&b).unwrap();
    std::fs::write(&b, &full[..full.len() - 1]).unwrap();
    let frame = ether(&udp_v4([127, 0, 0, 2], 10, PORT, b"abc"), false);
    let c = write(
        dir.path(),
        "c.pcap",
        &pcap(1, false, &[(1, 0, frame), (2, 0, ether_tcp())]),
    );
    let opts = ReplayOptions {
        port: Some(PORT),
        pace: Pace::Fast,
        progress: false,
    };
    let replay = Replay::open(&[a.clone(), b.clone(), c.clone()], opts).unwrap();
    let mut items = Vec::new();
    let mut replay = replay;
    for item in &mut replay {
        items.push(item.map(|d| d.bytes).map_err(|e| e.to_string()));
    }
    assert_eq!(items.len(), 5, "{items:?}");
    assert_eq!(items[0].as_deref(), Ok(&b"hello"[..]));
    assert_eq!(items[2].as_deref(), Ok(&b"hello"[..]));
    assert!(items[3].as_ref().unwrap_err().contains("b.cap"));
    assert_eq!(items[4].as_deref(), Ok(&b"abc"[..]));
    let stats = replay.stats();
    assert_eq!(stats.datagrams, 4);
    assert_eq!(stats.files_done, 2);
    assert_eq!(stats.files_failed, 1);
    assert_eq!(stats.skipped.not_udp, 1);

    // A missing file is reported before anything is replayed.
    let e = Replay::open(&[a, dir.path().join("nope.cap")], opts).unwrap_err();
    assert!(e.to_string().contains("nope.cap"));
}

#[test]
fn replay_at_the_recorded_pace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.cap");
    let mut ds = sample_datagrams();
    ds[0].time = 100.0;
    ds[1].time = 100.15;
    ds[2].time = 100.3;
    write_capture(&path, &ds);
    let opts = ReplayOptions {
        port: None,
        pace: Pace::Recorded,
        progress: false,
    };
    let start = Instant::now();
    let n = Replay::open(std::slice::from_ref(&path), opts)
        .unwrap()
        .count();
    assert_eq!(n, 3);
    // Pacing waits at least the recorded gaps (an upper bound would be a timed test).
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );

    // A raised shutdown ends a paced replay at once, even in a long gap.
    ds[1].time = 1e9;
    write_capture(&path, &ds);
    let shutdown = Shutdown::new();
    let mut replay = Replay::open(&[path], opts)
        .unwrap()
        .with_shutdown(shutdown.clone());
    assert!(replay.next().is_some());
    let t = shutdown.clone();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        t.trigger(None);
    });
    assert!(replay.next().is_none());
    h.join().unwrap();
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever follows a valid header, reading ends (with datagrams or an error)
        /// and never panics.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2000), kind in 0u8..3) {
            let mut file = match kind {
                0 => { let mut v = MAGIC.to_vec(); v.extend_from_slice(&VERSION.to_le_bytes()); v }
                1 => pcap(1, false, &[]),
                _ => { let mut v = ng_section(); v.extend(ng_interface(1, None)); v }
            };
            file.extend_from_slice(&body);
            let r = DatagramReader::from_reader(Path::new("p"), Box::new(Cursor::new(file)), Some(PORT));
            if let Ok(r) = r {
                let n = r.take(10_000).count();
                prop_assert!(n < 10_000);
            }
        }
    }
}

#[test]
fn replay_flags_resolve_or_say_what_is_wrong() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        r: ReplayArgs,
    }
    let settings = |argv: &[&str]| {
        Cli::try_parse_from(std::iter::once("t").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())
            .and_then(|c| c.r.replay_settings().map_err(|e| e.to_string()))
    };
    assert_eq!(settings(&[]), Ok(None));
    assert_eq!(settings(&["--capture", "c.cap"]), Ok(None));
    assert_eq!(
        settings(&[
            "--replay",
            "a.pcap",
            "b.cap",
            "--replay-pace",
            "recorded",
            "--no-progress"
        ]),
        Ok(Some(ReplaySettings {
            files: vec!["a.pcap".into(), "b.cap".into()],
            pace: Pace::Recorded,
            progress: false,
        }))
    );
    assert_eq!(
        settings(&["--replay", "a.cap"]).map(|s| s.map(|s| (s.pace, s.progress))),
        Ok(Some((Pace::Fast, true)))
    );
    assert_eq!(
        settings(&["--replay", "a.cap", "--replay-pace", "slow"]),
        Err("--replay-pace \"slow\": use fast or recorded".into())
    );
    assert_eq!(
        settings(&["--replay", "a.cap", "--capture", "c.cap"]),
        Err("--capture and --replay do not go together".into())
    );
}
