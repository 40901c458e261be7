//! bucky-collectd end to end against a real collectd (Debian's collectd-core 5.12): its
//! network plugin sends plain, signed and encrypted packets to the real binary; exact
//! values are injected with `collectdctl putval`, so names and rates are checked exactly.
//! Refused packets (unsigned at level 1, unencrypted at level 2, wrong passwords, unknown
//! users) are counted; tcpdump's pcaps of the live traffic (Ethernet-framed loopback and
//! Linux cooked `-i any`) and bucky-collectd's own capture replay to the same samples; and
//! `bucky-collectd | bucky-carbon` lands the values in a real carbon-cache.

// Test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bucky_proto::capture::DatagramReader;
use bucky_tests::collectd::{Collectd, Server, HOST};
use bucky_tests::{
    bin, free_udp_port, poll_until, temp_dir, unix_now, wait_until, CarbonCache, ChildGuard, Tool,
};
use nix::sys::signal::Signal;

/// How long collectd and bucky-collectd may take to start.
const START: Duration = Duration::from_secs(30);
/// How long values may take from putval to bucky-collectd's output (collectd flushes its
/// network buffer every second; CI machines are slow).
const ARRIVE: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM.
const EXIT: Duration = Duration::from_secs(30);

/// Injects the exact series whose names and rates the tests check, at times from `t`.
fn inject(c: &Collectd, t: i64) {
    let puts: &[(&str, i64, &str)] = &[
        ("fixture/gauge-g1", 0, "42.5"),
        ("fixture/gauge-g1", 1, "-7.25"),
        ("fixture/derive-d1", 0, "100"),
        ("fixture/derive-d1", 2, "300"),
        ("fixture/counter-c1", 0, "4294967290"),
        ("fixture/counter-c1", 1, "10"),
        ("fixture/absolute-a1", 0, "5"),
        ("fixture/absolute-a1", 5, "20"),
        ("fixture/if_octets-x1", 0, "1000:2000"),
        ("fixture/if_octets-x1", 4, "3000:2000"),
        ("fixture/percent-p1", 0, "150"),
        ("interface-eth0/if_octets", 0, "0:0"),
        ("interface-eth0/if_octets", 2, "2000:4000"),
        ("cpu-0/cpu-idle", 0, "0"),
        ("cpu-0/cpu-idle", 1, "100"),
        ("memory/memory-used", 0, "1024"),
    ];
    for (id, dt, v) in puts {
        c.putval(id, t + dt, v);
    }
}

/// The sample lines the injected series must give (value, timestamp): names from the
/// converters, rates per second, the out-of-range percent dropped.
fn expected(t: i64) -> BTreeSet<String> {
    [
        ("fixture.gauge.g1", "42.5", 0),
        ("fixture.gauge.g1", "-7.25", 1),
        ("fixture.derive.d1", "100", 2),
        // 4294967290 -> 10 is a 2^32 wrap: 16 in one second.
        ("fixture.counter.c1", "16", 1),
        ("fixture.absolute.a1", "4", 5),
        ("fixture.if_octets.x1.rx", "500", 4),
        ("fixture.if_octets.x1.tx", "0", 4),
        ("interface.eth0.if_octets.rx", "1000", 2),
        ("interface.eth0.if_octets.tx", "2000", 2),
        ("cpu.0.idle", "100", 1),
        ("memory.used", "1024", 0),
    ]
    .iter()
    .map(|(n, v, dt)| format!("{n} {v} {} {HOST}", t + dt))
    .collect()
}

/// bucky-collectd on `port` with self-metrics every second, plus `extra`; returns once it
/// listens.
fn start_bucky(port: u16, extra: &[&str]) -> Tool {
    let mut args: Vec<String> = [
        "--collectd-port",
        &port.to_string(),
        "--self-metrics-interval",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut tool = Tool::start("bucky-collectd", args);
    wait_until(START, "bucky-collectd to listen", || {
        assert!(
            tool.is_running(),
            "bucky-collectd exited:\n{}",
            tool.stderr_tail()
        );
        tool.stderr().contains("listening on udp")
    });
    tool
}

/// The sample lines of an output, without bucky's own counters.
fn sample_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with("bucky.collectd."))
        .map(str::to_string)
        .collect()
}

/// The last value of self-metric `bucky.collectd.<name>` in an output (0 if none yet).
fn counter(text: &str, name: &str) -> u64 {
    let prefix = format!("bucky.collectd.{name} ");
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix(&prefix))
        .find_map(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn has_all(text: &str, want: &BTreeSet<String>) -> bool {
    let have: BTreeSet<String> = sample_lines(text).into_iter().collect();
    want.is_subset(&have)
}

/// tcpdump writing every UDP datagram to `port` on `iface` to `file`, packet-buffered.
fn start_tcpdump(iface: &str, port: u16, file: &Path) -> ChildGuard {
    let err = file.with_extension("err");
    let mut cmd = Command::new("tcpdump");
    cmd.args(["-i", iface, "-U", "-n", "-s", "0", "-w"])
        .arg(file)
        .args(["udp", "and", "dst", "port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = ChildGuard::spawn("tcpdump", &mut cmd);
    wait_until(START, "tcpdump to listen", || {
        assert!(
            child.is_running(),
            "tcpdump exited: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening on")
    });
    child
}

/// UDP datagrams to `port` in a pcap file so far (0 while it cannot be read yet).
fn pcap_datagrams(file: &Path, port: u16) -> usize {
    match DatagramReader::open(file, Some(port)) {
        Ok(r) => r.take_while(Result::is_ok).count(),
        Err(_) => 0,
    }
}

/// Stops tcpdump once it holds `datagrams` datagrams (it writes each packet as it comes).
fn stop_tcpdump(mut t: ChildGuard, file: &Path, port: u16, datagrams: usize) {
    wait_until(ARRIVE, "tcpdump to write every datagram", || {
        pcap_datagrams(file, port) >= datagrams
    });
    t.signal(Signal::SIGINT);
    assert!(t.wait_timeout(EXIT).is_some(), "tcpdump did not exit");
}

/// `bucky-collectd --replay FILE...` with `extra`; returns its stdout.
fn replay(files: &[&Path], extra: &[&str]) -> String {
    let out = Command::new(bin("bucky-collectd"))
        .arg("--replay")
        .args(files)
        .args(["--self-metrics-interval", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run bucky-collectd --replay");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn auth_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("auth");
    std::fs::write(&p, text).unwrap();
    p
}

/// Plain, signed and encrypted traffic from one collectd to three bucky-collectds: every
/// expected name and rate arrives at each; then the recordings of that traffic (tcpdump on
/// lo and on any, bucky's own capture) replay to the very same samples.
#[test]
fn plain_signed_and_encrypted_traffic_and_its_replays() {
    let dir = temp_dir("collectd-modes");
    let auth = auth_file(dir.path(), "alice: secret\n");
    let auth = auth.to_str().unwrap();
    let (p_plain, p_sign, p_enc) = (free_udp_port(), free_udp_port(), free_udp_port());
    let capture = dir.path().join("encrypted.cap");
    let mut plain = start_bucky(p_plain, &[]);
    let mut signed = start_bucky(p_sign, &["--security-level", "Sign", "--auth-file", auth]);
    let mut encrypted = start_bucky(
        p_enc,
        &[
            "--security-level",
            "2",
            "--auth-file",
            auth,
            "--capture",
            capture.to_str().unwrap(),
        ],
    );
    let lo_pcap = dir.path().join("lo.pcap");
    let any_pcap = dir.path().join("any.pcap");
    let tcpdump_lo = start_tcpdump("lo", p_plain, &lo_pcap);
    let tcpdump_any = start_tcpdump("any", p_sign, &any_pcap);

    let mut collectd = Collectd::start(&[
        Server::new(p_plain, "None", "", ""),
        Server::new(p_sign, "Sign", "alice", "secret"),
        Server::new(p_enc, "Encrypt", "alice", "secret"),
    ]);
    let t = unix_now() - 300;
    inject(&collectd, t);
    let want = expected(t);
    for (name, tool) in [
        ("plain", &plain),
        ("signed", &signed),
        ("encrypted", &encrypted),
    ] {
        let ok = poll_until(ARRIVE, || has_all(&tool.stdout(), &want));
        assert!(
            ok,
            "{name}: expected samples missing.\nwant: {want:#?}\ngot:\n{}\nstderr:\n{}",
            tool.stdout(),
            tool.stderr_tail()
        );
    }
    // Real traffic from collectd's load plugin is named by the default converter.
    wait_until(ARRIVE, "load values", || {
        plain.stdout().contains("load.load.shortterm ")
    });
    // The out-of-range percent never shows; no packet was refused.
    wait_until(ARRIVE, "the range drop to be counted", || {
        counter(&plain.stdout(), "dropped_range") >= 1
    });
    collectd.stop();

    for tool in [&mut plain, &mut signed, &mut encrypted] {
        tool.terminate();
        tool.wait_success(EXIT);
        let out = tool.stdout();
        assert!(!out.contains("fixture.percent"), "{out}");
        for reason in [
            "refused_unsigned",
            "refused_bad_signature",
            "error_truncated",
        ] {
            assert_eq!(counter(&out, reason), 0, "{reason}");
        }
        assert!(
            tool.stderr().contains("exiting: datagrams="),
            "{}",
            tool.stderr_tail()
        );
    }
    // The three modes carried the same values.
    let fixture = |text: &str| -> BTreeSet<String> {
        sample_lines(text)
            .into_iter()
            .filter(|l| want.contains(l))
            .collect()
    };
    assert_eq!(fixture(&plain.stdout()), want);
    assert_eq!(fixture(&signed.stdout()), want);
    assert_eq!(fixture(&encrypted.stdout()), want);

    // Replays: the same samples, in the same order, as the live runs.
    let n_plain = counter(&plain.stdout(), "datagrams") as usize;
    let n_sign = counter(&signed.stdout(), "datagrams") as usize;
    stop_tcpdump(tcpdump_lo, &lo_pcap, p_plain, n_plain);
    stop_tcpdump(tcpdump_any, &any_pcap, p_sign, n_sign);
    let port = |p: u16| p.to_string();
    let replayed = replay(&[&lo_pcap], &["--collectd-port", &port(p_plain)]);
    assert_eq!(
        sample_lines(&replayed),
        sample_lines(&plain.stdout()),
        "lo.pcap"
    );
    let replayed = replay(
        &[&any_pcap],
        &[
            "--collectd-port",
            &port(p_sign),
            "--security-level",
            "1",
            "--auth-file",
            auth,
        ],
    );
    assert_eq!(
        sample_lines(&replayed),
        sample_lines(&signed.stdout()),
        "any.pcap"
    );
    let replayed = replay(&[&capture], &["--security-level", "2", "--auth-file", auth]);
    assert_eq!(
        sample_lines(&replayed),
        sample_lines(&encrypted.stdout()),
        "bucky's own capture"
    );
    // A pcap filtered by another port holds nothing for bucky.
    let other = replay(&[&lo_pcap], &["--collectd-port", &port(p_sign)]);
    assert!(sample_lines(&other).is_empty());
}

/// Packets below the required level, with a wrong password or from an unknown user are
/// refused and counted by reason; the receiver keeps going.
#[test]
fn refused_packets_are_counted_by_reason() {
    let dir = temp_dir("collectd-refused");
    let auth = auth_file(dir.path(), "alice: secret\n# bob is gone\n");
    let auth = auth.to_str().unwrap();
    let ports: Vec<u16> = (0..5).map(|_| free_udp_port()).collect();
    let level1 = ["--security-level", "1", "--auth-file", auth];
    let level2 = ["--security-level", "encrypt", "--auth-file", auth];
    let mut buckies = vec![
        (start_bucky(ports[0], &level1), "refused_unsigned"),
        (start_bucky(ports[1], &level1), "refused_bad_signature"),
        (start_bucky(ports[2], &level1), "refused_unknown_user"),
        (start_bucky(ports[3], &level2), "refused_unencrypted"),
        (start_bucky(ports[4], &level2), "refused_bad_checksum"),
    ];
    let mut collectd = Collectd::start(&[
        Server::new(ports[0], "None", "", ""),
        Server::new(ports[1], "Sign", "alice", "wrong"),
        Server::new(ports[2], "Sign", "bob", "secret"),
        Server::new(ports[3], "Sign", "alice", "secret"),
        Server::new(ports[4], "Encrypt", "alice", "wrong"),
    ]);
    inject(&collectd, unix_now() - 300);
    for (tool, reason) in &buckies {
        let ok = poll_until(ARRIVE, || counter(&tool.stdout(), reason) >= 2);
        assert!(ok, "{reason} not counted:\n{}", tool.stdout());
        assert!(tool.stderr().contains("refused a packet from 127.0.0.1:"));
    }
    collectd.stop();
    for (tool, reason) in &mut buckies {
        tool.terminate();
        tool.wait_success(EXIT);
        let out = tool.stdout();
        assert!(
            sample_lines(&out).is_empty(),
            "{reason}: samples from refused packets: {out}"
        );
        assert_eq!(
            counter(&out, reason),
            counter(&out, "datagrams"),
            "{reason}: every datagram refused for this reason"
        );
    }
}

/// The auth file is read again when it changes: bob's packets are refused until bob is
/// added, then accepted, without a restart.
#[test]
fn the_auth_file_is_reread() {
    let dir = temp_dir("collectd-auth");
    let auth = auth_file(dir.path(), "alice: secret\n");
    let port = free_udp_port();
    let mut bucky = start_bucky(
        port,
        &[
            "--security-level",
            "1",
            "--auth-file",
            auth.to_str().unwrap(),
        ],
    );
    let mut collectd = Collectd::start(&[Server::new(port, "Sign", "bob", "pw")]);
    let t = unix_now() - 300;
    collectd.putval("fixture/gauge-g1", t, "1");
    wait_until(ARRIVE, "bob's packets to be refused", || {
        counter(&bucky.stdout(), "refused_unknown_user") >= 1
    });
    std::fs::write(&auth, "alice: secret\nbob: pw\n").unwrap();
    wait_until(ARRIVE, "the auth file to be read again", || {
        bucky.stderr().contains("changed: 2 user(s)")
    });
    for i in 1..5 {
        collectd.putval("fixture/gauge-g1", t + i, &i.to_string());
    }
    wait_until(ARRIVE, "bob's values", || {
        bucky
            .stdout()
            .contains(&format!("fixture.gauge.g1 4 {} {HOST}", t + 4))
    });
    collectd.stop();
    bucky.terminate();
    bucky.wait_success(EXIT);
}

/// `bucky-collectd | bucky-carbon` into a real carbon-cache: the exact values land in
/// whisper under carbon's names (host first).
#[test]
fn pipeline_into_carbon() {
    let carbon = CarbonCache::start();
    let port = free_udp_port();
    let dir = temp_dir("collectd-pipeline");
    let mut bucky = Command::new(bin("bucky-collectd"));
    bucky
        .args([
            "--collectd-port",
            &port.to_string(),
            "--self-metrics-interval",
            "0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("collectd.err")).unwrap());
    let mut bucky = ChildGuard::spawn("bucky-collectd", &mut bucky);
    let stdout = bucky.child_mut().stdout.take().unwrap();
    let mut writer = Tool::start_program(
        "bucky-carbon",
        &bin("bucky-carbon"),
        [
            "--graphite-port",
            &carbon.line_port().to_string(),
            "--self-metrics-interval",
            "0",
        ],
        Stdio::from(stdout),
    );
    let err = dir.path().join("collectd.err");
    wait_until(START, "bucky-collectd to listen", || {
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("listening on udp")
    });
    let mut collectd = Collectd::start(&[Server::new(port, "None", "", "")]);
    let t = unix_now() - 120;
    inject(&collectd, t);
    let mut expected = bucky_tests::Points::new();
    for (name, v, dt) in [
        ("fixture.gauge.g1", 42.5, 0),
        ("fixture.gauge.g1", -7.25, 1),
        ("fixture.derive.d1", 100.0, 2),
        ("fixture.counter.c1", 16.0, 1),
        ("fixture.if_octets.x1.rx", 500.0, 4),
        ("cpu.0.idle", 100.0, 1),
        ("memory.used", 1024.0, 0),
    ] {
        expected
            .entry(format!("{HOST}.{name}"))
            .or_default()
            .push((t + dt, v));
    }
    carbon.wait_for_points(&expected, Duration::from_secs(120));
    collectd.stop();
    bucky.terminate();
    assert!(bucky.wait_timeout(EXIT).is_some_and(|s| s.success()));
    writer.wait_success(EXIT);
}

/// Garbage of every size to the live receiver, then real packets: it keeps running, counts
/// what it refused, and decodes the real packets (the plain fixture, sent twice).
#[test]
fn garbage_never_stops_the_receiver() {
    let port = free_udp_port();
    let mut bucky = start_bucky(port, &[]);
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut garbage = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let mut sent = 0u64;
    for n in [0usize, 1, 3, 4, 5, 36, 40, 100, 1452, 9000, 65507] {
        for _ in 0..5 {
            tx.send_to(&garbage(n), ("127.0.0.1", port)).unwrap();
            sent += 1;
        }
    }
    // Headers that lie about their lengths.
    for d in [
        &[0x00, 0x06, 0x00, 0x00][..],
        &[0x00, 0x00, 0xff, 0xff, 0x00],
        &[0x02, 0x00, 0x00, 0x05, 0x00],
        &[0x02, 0x10, 0x00, 0x04],
    ] {
        tx.send_to(d, ("127.0.0.1", port)).unwrap();
        sent += 1;
    }
    let fixture =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/collectd512-plain.bin"))
            .unwrap();
    for _ in 0..2 {
        let mut rest = &fixture[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            tx.send_to(&rest[4..4 + len], ("127.0.0.1", port)).unwrap();
            sent += 1;
            rest = &rest[4 + len..];
        }
    }
    wait_until(ARRIVE, "every datagram to be counted", || {
        counter(&bucky.stdout(), "datagrams") == sent
    });
    let out = bucky.stdout();
    assert!(bucky.is_running());
    assert!(out.contains("fixture.derive.d1 "), "{out}");
    assert!(out.contains(" bench\n"));
    assert!(counter(&out, "error_truncated") + counter(&out, "refused_truncated") > 0);
    bucky.terminate();
    bucky.wait_success(EXIT);
}
