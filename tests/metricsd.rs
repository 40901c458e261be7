//! bucky-metricsd through its real binary: real UDP datagrams built with the crate's encoder,
//! samples read back from its stdout.
//!
//! Each test starts its own bucky-metricsd on a free loopback port (`cargo build --workspace
//! --bins` first; scripts/test does). Waits poll with a bound; flush intervals are short so
//! that the whole file runs in a few seconds.

// Test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bucky_metricsd::wire::{Encoder, MetricType, Number};
use bucky_tests::{free_udp_port, poll_until, temp_dir, wait_until, write_file, Tool};

/// How long a condition on the output may take to come true (2 slow CI cores, parallel tests).
const TIMEOUT: Duration = Duration::from_secs(30);

/// A running bucky-metricsd and a socket to send it datagrams.
struct Metricsd {
    tool: Tool,
    port: u16,
    client: UdpSocket,
    _dir: tempfile::TempDir,
}

impl Metricsd {
    /// Starts bucky-metricsd with `config` (TOML) and `extra` flags; returns once it listens.
    fn start(config: &str, extra: &[&str]) -> Metricsd {
        let dir = temp_dir("metricsd-config");
        let conf = write_file(dir.path(), "bucky.toml", config.as_bytes());
        let port = free_udp_port();
        let mut args: Vec<String> = vec![
            "--config".into(),
            conf.display().to_string(),
            "--metricsd-port".into(),
            port.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut tool = Tool::start("bucky-metricsd", &args);
        wait_until(TIMEOUT, "bucky-metricsd to listen", || {
            assert!(
                tool.is_running(),
                "bucky-metricsd exited: {}",
                tool.stderr_tail()
            );
            tool.stderr().contains("listening on UDP")
        });
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        Metricsd {
            tool,
            port,
            client,
            _dir: dir,
        }
    }

    fn send(&self, datagram: &[u8]) {
        self.client
            .send_to(datagram, ("127.0.0.1", self.port))
            .unwrap();
    }

    /// The samples written so far: (name, value, timestamp, host).
    fn samples(&self) -> Vec<(String, f64, f64, Option<String>)> {
        self.tool
            .stdout()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert!(f.len() == 3 || f.len() == 4, "not a sample line: {l:?}");
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f.get(3).map(|h| h.to_string()),
                )
            })
            .collect()
    }

    /// How many times `name` was written.
    fn count(&self, name: &str) -> usize {
        self.samples().iter().filter(|s| s.0 == name).count()
    }

    /// The last value written for `name`.
    fn last(&self, name: &str) -> Option<f64> {
        self.samples()
            .iter()
            .rev()
            .find(|s| s.0 == name)
            .map(|s| s.1)
    }

    /// SIGTERM, then the exit (0) and its final flush.
    fn stop(&mut self) {
        self.tool.terminate();
        self.tool.wait_success(TIMEOUT);
    }
}

fn datagram(host: &str, f: impl FnOnce(&mut Encoder)) -> Vec<u8> {
    let mut e = Encoder::new(host).unwrap();
    f(&mut e);
    e.into_bytes()
}

/// Each handler flushes on its own schedule, also while datagrams keep arriving (the original
/// flushed only after a whole interval without traffic).
#[test]
fn handlers_flush_on_their_own_schedule_under_steady_traffic() {
    let mut m = Metricsd::start(
        "metricsd_handlers = [['^fast\\.', 0.1]]\n\
         metricsd_default_interval = 1.0\n\
         self_metrics_interval = 0\n",
        &[],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let client = m.client.try_clone().unwrap();
        let port = m.port;
        std::thread::spawn(move || {
            let d = datagram("web1", |e| {
                e.update(MetricType::Counter, "fast.hits", Number::U8(1))
                    .unwrap();
                e.update(MetricType::Counter, "slow.hits", Number::U8(1))
                    .unwrap();
            });
            // Bounded: at most 60 s of traffic, every 10 ms.
            for _ in 0..6000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                client.send_to(&d, ("127.0.0.1", port)).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    wait_until(TIMEOUT, "three flushes of the default handler", || {
        m.count("slow.hits") >= 3
    });
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let (fast, slow) = (m.count("fast.hits"), m.count("slow.hits"));
    // 10 fast flushes per slow one when on time; allow for a loaded machine.
    assert!(
        fast >= 4 * (slow - 1),
        "fast handler flushed {fast} times while the default flushed {slow} times"
    );
    // Counters keep counting: later flushes carry larger totals.
    let hits: Vec<f64> = m
        .samples()
        .iter()
        .filter(|s| s.0 == "fast.hits")
        .map(|s| s.1)
        .collect();
    assert!(hits.windows(2).all(|w| w[0] <= w[1]), "{hits:?}");
    assert!(hits.last().unwrap() > hits.first().unwrap(), "{hits:?}");
    assert!(m.samples().iter().all(|s| s.3.as_deref() == Some("web1")));
    m.stop();
}

/// The largest priority wins among matching handlers; the default catches the rest; at
/// SIGTERM every handler flushes what it holds.
#[test]
fn the_largest_priority_wins_and_sigterm_flushes_everything() {
    let mut m = Metricsd::start(
        "metricsd_handlers = [['^app\\.', 0.1, 100], ['^app\\.batch\\.', 3600, 200], ['^app\\.batch\\.x', 0.1, 50]]\n\
         metricsd_default_interval = 3600\n\
         self_metrics_interval = 0\n",
        &[],
    );
    m.send(&datagram("h", |e| {
        e.update(MetricType::Gauge, "app.web.load", Number::F64(0.5))
            .unwrap();
        e.update(MetricType::Gauge, "app.batch.x.size", Number::U16(700))
            .unwrap();
        e.update(MetricType::Gauge, "other.thing", Number::I8(-3))
            .unwrap();
    }));
    wait_until(TIMEOUT, "the fast handler's flushes", || {
        m.count("app.web.load") >= 3
    });
    // app.batch.x.size matches all three handlers: priority 200 (hourly) wins over 100 and 50.
    assert_eq!(m.count("app.batch.x.size"), 0);
    assert_eq!(m.count("other.thing"), 0);
    m.stop();
    assert_eq!(m.last("app.batch.x.size"), Some(700.0));
    assert_eq!(m.last("other.thing"), Some(-3.0));
    assert_eq!(m.last("app.web.load"), Some(0.5));
}

/// Every metric type, every number type and every action through the real socket.
#[test]
fn every_type_number_and_action() {
    let mut m = Metricsd::start(
        "metricsd_default_interval = 3600\nself_metrics_interval = 0.1\n",
        &[],
    );
    let numbers = [
        Number::U8(1),
        Number::I8(-2),
        Number::U16(300),
        Number::I16(-400),
        Number::U32(70_000),
        Number::I32(-80_000),
        Number::U64(1 << 40),
        Number::I64(-(1 << 41)),
        Number::F32(0.5),
        Number::F64(0.25),
    ];
    let total: f64 = numbers.iter().map(|n| n.to_f64()).sum();
    m.send(&datagram("db1.example.com", |e| {
        for n in numbers {
            e.update(MetricType::Counter, "c", n).unwrap();
        }
        e.update(MetricType::Gauge, "g", Number::F64(1.5)).unwrap();
        e.update(MetricType::Gauge, "g", Number::F64(2.5)).unwrap();
        for v in 1..=4u8 {
            e.update(MetricType::Histogram, "h", Number::U8(v)).unwrap();
            e.update(MetricType::Timer, "t", Number::U8(v * 10))
                .unwrap();
        }
        e.update(MetricType::Meter, "m", Number::U8(7)).unwrap();
        e.update(MetricType::Counter, "cleared", Number::U8(9))
            .unwrap();
        e.clear(MetricType::Counter, "cleared").unwrap();
        e.update(MetricType::Counter, "deleted", Number::U8(9))
            .unwrap();
        e.delete(MetricType::Counter, "deleted").unwrap();
        e.update(MetricType::Histogram, "hc", Number::U8(5))
            .unwrap();
        e.clear(MetricType::Histogram, "hc").unwrap();
    }));
    // A second datagram from another host: the same names are other metrics.
    m.send(&datagram("", |e| {
        e.update(MetricType::Counter, "c", Number::U8(5)).unwrap();
    }));
    // The self-metrics (every 0.1 s) tell when all 28 records are applied.
    wait_until(TIMEOUT, "both datagrams applied", || {
        m.last("bucky.metricsd.records") == Some(28.0)
    });
    m.stop();
    let samples = m.samples();
    let get = |name: &str, host: Option<&str>| -> f64 {
        samples
            .iter()
            .find(|s| s.0 == name && s.3.as_deref() == host)
            .unwrap_or_else(|| panic!("no {name} for {host:?} in {samples:?}"))
            .1
    };
    let h = Some("db1.example.com");
    assert_eq!(get("c", h), total);
    assert_eq!(get("c", None), 5.0, "an empty host: no HOST field");
    assert_eq!(get("g", h), 2.5);
    assert_eq!(get("h.count", h), 4.0);
    assert_eq!(get("h.sum", h), 10.0);
    assert_eq!(get("h.min", h), 1.0);
    assert_eq!(get("h.max", h), 4.0);
    assert_eq!(get("h.mean", h), 2.5);
    assert_eq!(get("h.stddev", h), (5.0f64 / 3.0).sqrt());
    // Sorted 1 2 3 4: p75 at 0.75 * 5 = 3.75 -> 3 + 0.75 * (4 - 3).
    assert_eq!(get("h.perc_75", h), 3.75);
    assert_eq!(get("h.perc_99_9", h), 4.0);
    assert_eq!(get("t.calls.count", h), 4.0);
    assert_eq!(get("t.histo.mean", h), 25.0);
    assert_eq!(get("t.histo.max", h), 40.0);
    assert_eq!(get("m.count", h), 7.0);
    assert!(get("m.rate_avg", h) > 0.0);
    assert_eq!(get("cleared", h), 0.0);
    assert_eq!(get("hc.count", h), 0.0);
    assert!(!samples.iter().any(|s| s.0 == "hc.mean"));
    assert!(!samples.iter().any(|s| s.0 == "deleted"), "{samples:?}");
    for s in &samples {
        assert!(s.1.is_finite() && s.2 > 1e9, "{s:?}");
    }
}

/// Malformed datagrams and records are counted and skipped; the good records of a datagram
/// before (and, where the framing allows, after) a bad one are kept; `EXIT` stops nothing.
#[test]
fn malformed_input_is_counted_and_survived() {
    let mut m = Metricsd::start(
        "metricsd_default_interval = 3600\nself_metrics_interval = 3600\n",
        &["--max-metrics", "3"],
    );
    m.send(b"EXIT");
    m.send(b"");
    m.send(&[0xAA, 0x00, 0x05, b'h']); // the host string runs past the end
    let mut d = datagram("h", |e| {
        e.update(MetricType::Gauge, "before", Number::U8(1))
            .unwrap();
    });
    // Unknown metric type 7 with a delete action: its extent is known, so it is skipped.
    d.extend_from_slice(&[0x72, 0x00, 0x02, b'x', 0x00]);
    let tail = datagram("h", |e| {
        e.update(MetricType::Gauge, "after", Number::U8(2)).unwrap();
    });
    d.extend_from_slice(&tail[5..]); // the record without the header (magic, "h")
                                     // An unknown number type: the rest cannot be framed.
    d.extend_from_slice(&[0x10, 0x00, 0x02, b'y', 0x00, 0x99, 1, 2]);
    d.extend_from_slice(&tail[5..]);
    m.send(&d);
    // A full table: the fourth metric is dropped and counted.
    m.send(&datagram("h", |e| {
        e.update(MetricType::Counter, "third", Number::U8(1))
            .unwrap();
        e.update(MetricType::Counter, "fourth", Number::U8(1))
            .unwrap();
    }));
    // A type conflict: "before" is a gauge.
    m.send(&datagram("h", |e| {
        e.update(MetricType::Counter, "before", Number::U8(1))
            .unwrap();
    }));
    let warned = poll_until(TIMEOUT, || {
        let err = m.tool.stderr();
        err.contains("magic byte 0x45")
            && err.contains("empty datagram")
            && err.contains("host: length 5")
            && err.contains("unknown number type 0x99")
            && err.contains("metric table full")
            && err.contains("another type")
    });
    assert!(warned, "missing warnings:\n{}", m.tool.stderr());
    assert!(m.tool.is_running(), "EXIT or bad data stopped it");
    m.stop();
    let get = |name: &str| m.last(name);
    assert_eq!(get("before"), Some(1.0));
    assert_eq!(get("after"), Some(2.0));
    assert_eq!(get("third"), Some(1.0));
    assert_eq!(get("fourth"), None);
    assert_eq!(get("bucky.metricsd.bad_datagrams"), Some(3.0));
    assert_eq!(get("bucky.metricsd.bad_records"), Some(2.0));
    assert_eq!(get("bucky.metricsd.dropped"), Some(1.0));
    assert_eq!(get("bucky.metricsd.type_conflicts"), Some(1.0));
    assert_eq!(get("bucky.metricsd.metrics"), Some(3.0));
    assert_eq!(get("bucky.metricsd.datagrams"), Some(6.0));
    let err = m.tool.stderr();
    assert!(
        err.contains("the rest of the datagram is unreadable"),
        "{err}"
    );
}

/// When stdout's reader goes away, bucky-metricsd exits 0 without a word of error.
#[test]
fn a_broken_stdout_pipe_ends_it_quietly() {
    let dir = temp_dir("metricsd-pipe");
    let port = free_udp_port();
    let stderr_path = dir.path().join("stderr");
    let mut cmd = std::process::Command::new(bucky_tests::bin("bucky-metricsd"));
    cmd.args([
        "--metricsd-port",
        &port.to_string(),
        "--default-interval",
        "0.05",
        "--self-metrics-interval",
        "0",
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut child = bucky_tests::ChildGuard::spawn("bucky-metricsd", &mut cmd);
    let stdout = child.child_mut().stdout.take().unwrap();
    wait_until(TIMEOUT, "bucky-metricsd to listen", || {
        std::fs::read_to_string(&stderr_path)
            .unwrap()
            .contains("listening")
    });
    drop(stdout);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let d = datagram("h", |e| {
        e.update(MetricType::Gauge, "g", Number::U8(1)).unwrap();
    });
    // A flush now writes into a pipe without a reader; resend until it has one to write.
    let mut status = None;
    wait_until(TIMEOUT, "bucky-metricsd to exit", || {
        let _ = client.send_to(&d, ("127.0.0.1", port));
        status = child.try_wait();
        status.is_some()
    });
    assert!(status.unwrap().success(), "{status:?}");
    let err = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!err.contains(": error:"), "{err}");
}

/// As root, `--uid nobody` binds first and then runs as nobody (and keeps working).
#[test]
fn drops_privileges_after_binding() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: not running as root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a user named nobody");
    let mut m = Metricsd::start(
        "metricsd_default_interval = 0.1\nself_metrics_interval = 0\n",
        &["--uid", "nobody"],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.tool.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let want = nobody.uid.to_string();
    assert!(
        uid_line.split_whitespace().skip(1).all(|id| id == want),
        "{uid_line}"
    );
    m.send(&datagram("h", |e| {
        e.update(MetricType::Gauge, "g", Number::U8(1)).unwrap();
    }));
    wait_until(TIMEOUT, "a flush", || m.count("g") >= 1);
    m.stop();
}

/// The Python client of the README's protocol section, as printed there (on the test's port).
const README_CLIENT: &str = r#"
import socket, struct

def string(text):
    b = text.encode()
    return struct.pack('>H', len(b) + 1) + b + b'\0'

def update(type_nibble, name, value):          # value as f64
    return bytes([type_nibble]) + string(name) + b'\x41' + struct.pack('>d', value)

datagram = (b'\xaa' + string('web1.example.com')
            + update(0x00, 'requests', 1)       # counter
            + update(0x40, 'db.query', 12.5))   # timer
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(datagram, ('127.0.0.1', 23632))
"#;

/// A client written from the README alone works; and a datagram received just before SIGTERM
/// is still in the final flush (the socket is drained first).
#[test]
fn the_readme_python_client_and_the_drain_at_sigterm() {
    let mut m = Metricsd::start(
        "metricsd_default_interval = 3600\nself_metrics_interval = 0\n",
        &[],
    );
    let client = README_CLIENT.replace("23632", &m.port.to_string());
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(&client)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "{status:?}");
    m.stop();
    let samples = m.samples();
    let find = |name: &str| samples.iter().find(|s| s.0 == name).cloned();
    let requests = find("requests").expect("requests");
    assert_eq!(requests.1, 1.0);
    assert_eq!(requests.3.as_deref(), Some("web1.example.com"));
    assert_eq!(find("db.query.histo.mean").map(|s| s.1), Some(12.5));
    assert_eq!(find("db.query.calls.count").map(|s| s.1), Some(1.0));
}
