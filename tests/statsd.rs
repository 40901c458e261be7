//! bucky-statsd end to end: the real binary on loopback, fed by a real StatsD client library
//! (the `cadence` crate) over UDP and TCP, by raw sockets (bad input, bursts before
//! SIGTERM), by its own capture file, and piped into bucky-carbon and a real carbon-cache.
//!
//! Most tests stop bucky-statsd with SIGTERM and read everything from its output: the final
//! flush holds everything received, so totals are exact without waiting for flush timers.

// Test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use bucky_tests::{
    bin, free_port, free_udp_port, poll_until, port_accepts, temp_dir, wait_until, CarbonCache,
    ChildGuard, Tool,
};
use cadence::prelude::*;
use cadence::{MetricSink, StatsdClient, UdpMetricSink};

/// How long bucky-statsd may take to start receiving.
const START: Duration = Duration::from_secs(30);
/// How long it may take to drain, flush and exit after SIGTERM.
const EXIT: Duration = Duration::from_secs(30);

/// bucky-statsd on a free UDP port with 1 s flushes, plus `extra` flags; returns once it
/// receives.
fn start_statsd(port: u16, extra: &[&str]) -> Tool {
    let mut args: Vec<String> = ["--statsd-port", &port.to_string(), "--flush-time", "1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut tool = Tool::start("bucky-statsd", args);
    wait_until(START, "bucky-statsd to receive", || {
        assert!(
            tool.is_running(),
            "bucky-statsd exited:\n{}",
            tool.stderr_tail()
        );
        tool.stderr().contains("receiving StatsD on UDP")
    });
    tool
}

/// SIGTERM, then the exit status must be 0.
fn stop(tool: &mut Tool) {
    tool.terminate();
    tool.wait_success(EXIT);
}

/// The sample lines of an output: (name, value, timestamp), in order.
fn samples(text: &str) -> Vec<(String, f64, i64)> {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 3, "not a host-less sample line: {l:?}");
            (
                f[0].to_string(),
                f[1].parse().unwrap_or_else(|_| panic!("value in {l:?}")),
                f[2].parse()
                    .unwrap_or_else(|_| panic!("integer timestamp in {l:?}")),
            )
        })
        .collect()
}

/// Sum of each name's values over all flushes.
fn sums(text: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for (name, v, _) in samples(text) {
        *m.entry(name).or_insert(0.0) += v;
    }
    m
}

/// Each name's last value.
fn last(text: &str) -> BTreeMap<String, f64> {
    samples(text).into_iter().map(|(n, v, _)| (n, v)).collect()
}

fn udp_client(port: u16, prefix: &str) -> StatsdClient {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = UdpMetricSink::from(("127.0.0.1", port), socket).unwrap();
    StatsdClient::from_sink(prefix, sink)
}

/// StatsD over TCP for cadence: one line per metric on a connection.
struct TcpSink(Mutex<TcpStream>);

impl MetricSink for TcpSink {
    fn emit(&self, metric: &str) -> std::io::Result<usize> {
        let mut s = self.0.lock().unwrap();
        s.write_all(metric.as_bytes())?;
        s.write_all(b"\n")?;
        Ok(metric.len() + 1)
    }
}

/// The same traffic through cadence, whatever the transport; then checks the totals.
fn cadence_traffic(client: &StatsdClient) {
    for i in 0..1000u64 {
        client.count("requests", 1).unwrap();
        client.time("latency", i % 100).unwrap();
    }
    for _ in 0..100 {
        client
            .count_with_tags("sampled", 1)
            .with_sampling_rate(0.5)
            .try_send()
            .unwrap();
    }
    client.gauge("queue", 5u64).unwrap();
    client.gauge("queue", 9u64).unwrap();
    client
        .gauge_with_tags("queue", 7u64)
        .with_tag("env", "prod")
        .with_tag("dc", "ams")
        .try_send()
        .unwrap();
    client.gauge("temperature", 21.5f64).unwrap();
    for i in 0..40i64 {
        client.set("users", i % 10).unwrap();
    }
    client.histogram("sizes", 3u64).unwrap();
    client.distribution("spread", 4u64).unwrap();
    client
        .count_with_tags("hits", 2)
        .with_tag("route", "/api v1")
        .try_send()
        .unwrap();
}

fn check_cadence_totals(out: &str, prefix: &str) {
    let s = sums(out);
    let l = last(out);
    let get = |m: &BTreeMap<String, f64>, k: &str| -> f64 {
        *m.get(k)
            .unwrap_or_else(|| panic!("no {k} in the output:\n{out}"))
    };
    assert_eq!(get(&s, &format!("stats_counts.{prefix}.requests")), 1000.0);
    assert_eq!(
        get(&s, &format!("stats.timers.{prefix}.latency.count")),
        1000.0
    );
    // 100 samples at rate 0.5 stand for 200 events.
    assert_eq!(get(&s, &format!("stats_counts.{prefix}.sampled")), 200.0);
    assert_eq!(get(&l, &format!("stats.gauges.{prefix}.queue")), 9.0);
    assert_eq!(
        get(&l, &format!("stats.gauges.{prefix}.queue;dc=ams;env=prod")),
        7.0
    );
    assert_eq!(get(&l, &format!("stats.gauges.{prefix}.temperature")), 21.5);
    assert_eq!(get(&s, &format!("stats.timers.{prefix}.sizes.count")), 1.0);
    assert_eq!(get(&s, &format!("stats.timers.{prefix}.spread.count")), 1.0);
    assert_eq!(
        get(&s, &format!("stats_counts.{prefix}.hits;route=/api_v1")),
        2.0
    );
    // Ten distinct members, maybe spread over two flushes.
    let users = samples(out)
        .into_iter()
        .filter(|(n, _, _)| n == &format!("stats.sets.{prefix}.users.count"))
        .map(|(_, v, _)| v)
        .collect::<Vec<_>>();
    assert!(users.iter().all(|v| *v <= 10.0), "{users:?}");
    assert!(users.iter().sum::<f64>() >= 10.0, "{users:?}");
    // Timer statistics over everything sent: every value 0..99 ten times.
    let uppers: Vec<f64> = samples(out)
        .into_iter()
        .filter(|(n, _, _)| n == &format!("stats.timers.{prefix}.latency.upper"))
        .map(|(_, v, _)| v)
        .collect();
    assert!(
        uppers.iter().all(|v| *v <= 99.0) && uppers.contains(&99.0),
        "{uppers:?}"
    );
    // Nothing refused, nothing lost; the self-metrics are in the final flush.
    assert_eq!(get(&l, "bucky.statsd.bad_lines_seen"), 0.0);
    assert_eq!(get(&l, "bucky.statsd.kernel_drops"), 0.0);
    assert_eq!(get(&l, "bucky.statsd.metrics"), 2147.0);
}

#[test]
fn cadence_over_udp() {
    let port = free_udp_port();
    let mut st = start_statsd(port, &[]);
    cadence_traffic(&udp_client(port, "cad"));
    stop(&mut st);
    let out = st.stdout();
    check_cadence_totals(&out, "cad");
    assert_eq!(last(&out)["bucky.statsd.datagrams"], 2147.0);
}

#[test]
fn cadence_over_tcp() {
    let port = free_udp_port();
    let tcp_port = free_port();
    let mut st = start_statsd(port, &["--tcp", "--tcp-port", &tcp_port.to_string()]);
    wait_until(START, "the TCP port", || port_accepts(tcp_port));
    let stream = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    let client = StatsdClient::from_sink("cadtcp", TcpSink(Mutex::new(stream)));
    cadence_traffic(&client);
    // Still connected: SIGTERM must take what the connection holds.
    stop(&mut st);
    let out = st.stdout();
    check_cadence_totals(&out, "cadtcp");
    let l = last(&out);
    assert_eq!(l["bucky.statsd.tcp_connections"], 2.0); // ours and the readiness probe
    assert_eq!(l["bucky.statsd.datagrams"], 0.0);
}

/// A burst from several sockets and a TCP connection, SIGTERM at once: all of it counts.
#[test]
fn sigterm_right_after_sending_loses_nothing() {
    let port = free_udp_port();
    let tcp_port = free_port();
    let mut st = start_statsd(
        port,
        &[
            "--tcp",
            "--tcp-port",
            &tcp_port.to_string(),
            "--threads",
            "2",
        ],
    );
    wait_until(START, "the TCP port", || port_accepts(tcp_port));
    let sockets: Vec<UdpSocket> = (0..4)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut tcp = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    let mut tcp_text = String::new();
    for i in 0..2000 {
        tcp_text.push_str(&format!("burst.tcp.k{}:1|c\n", i % 20));
    }
    let datagrams = 5000;
    for d in 0..datagrams {
        let text: Vec<String> = (0..10)
            .map(|j| format!("burst.udp.k{}:1|c", (d * 10 + j) % 100))
            .collect();
        sockets[d % 4]
            .send_to(text.join("\n").as_bytes(), ("127.0.0.1", port))
            .unwrap();
        if d == datagrams / 2 {
            tcp.write_all(tcp_text.as_bytes()).unwrap();
        }
    }
    stop(&mut st);
    let out = st.stdout();
    let s = sums(&out);
    let udp: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("stats_counts.burst.udp."))
        .map(|(_, v)| v)
        .sum();
    let tcp_total: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("stats_counts.burst.tcp."))
        .map(|(_, v)| v)
        .sum();
    let l = last(&out);
    assert_eq!(l["bucky.statsd.kernel_drops"], 0.0);
    assert_eq!(udp, (datagrams * 10) as f64);
    assert_eq!(tcp_total, 2000.0);
    assert_eq!(l["bucky.statsd.datagrams"], datagrams as f64);
}

/// Junk never stops the server nor touches the good lines beside it.
#[test]
fn bad_input_is_counted_and_harmless() {
    let port = free_udp_port();
    let mut st = start_statsd(port, &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |b: &[u8]| {
        sock.send_to(b, ("127.0.0.1", port)).unwrap();
    };
    send(b"");
    send(b"\n\r\n   \n");
    send(b"\xff\xfe\xfd:1|c\ngood.a:1|c\nk\xc3\x28:2|c\n\x00\x01|#\n");
    send(b"good.a:1|c\nnocolon\ngood.a:1|x\ngood.a:abc|c\ngood.a:1|c|@0\ngood.a:2|c:3|g");
    // The largest UDP payload, full of valid lines.
    let line = b"big.lines:1|c\n";
    let n = 65507 / line.len();
    let mut big = line.repeat(n);
    big.resize(65507, b'\n');
    send(&big);
    let mut long_name = vec![b'x'; 2000];
    long_name.extend_from_slice(b":1|c\ngood.a:1|c");
    send(&long_name);
    stop(&mut st);
    let out = st.stdout();
    let s = sums(&out);
    let l = last(&out);
    assert_eq!(s["stats_counts.good.a"], 5.0, "{out}");
    assert_eq!(l["stats.gauges.good.a"], 3.0);
    assert_eq!(s["stats_counts.big.lines"], n as f64);
    assert_eq!(s["stats_counts.k"], 2.0);
    // empty key, \x00\x01|# (no colon), no colon, type x, abc, rate 0, the 2000-byte name
    assert_eq!(l["bucky.statsd.bad_lines_seen"], 7.0, "{}", st.stderr());
    assert_eq!(l["bucky.statsd.datagrams"], 6.0);
    assert!(st.stderr().contains("bad line from 127.0.0.1:"));
}

/// `bucky-statsd | bucky-carbon` into a real carbon-cache: the totals are in whisper.
#[test]
fn pipeline_into_carbon() {
    let carbon = CarbonCache::start();
    let port = free_udp_port();
    let dir = temp_dir("statsd-pipe");
    let statsd_err = std::fs::File::create(dir.path().join("statsd.err")).unwrap();
    let mut statsd = ChildGuard::spawn(
        "bucky-statsd",
        Command::new(bin("bucky-statsd"))
            .args([
                "--statsd-port",
                &port.to_string(),
                "--flush-time",
                "1",
                "--self-metrics-interval",
                "0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(statsd_err),
    );
    let statsd_out = statsd.child_mut().stdout.take().unwrap();
    let mut bc = Tool::start_program(
        "bucky-carbon",
        &bin("bucky-carbon"),
        [
            "--graphite-port",
            &carbon.line_port().to_string(),
            "--self-metrics-interval",
            "0",
            "--reconnect-delay",
            "0.1",
        ],
        Stdio::from(statsd_out),
    );
    let err_path = dir.path().join("statsd.err");
    wait_until(START, "bucky-statsd to receive", || {
        std::fs::read_to_string(&err_path).is_ok_and(|t| t.contains("receiving StatsD on UDP"))
    });
    let client = udp_client(port, "pipe");
    // Spread over a few flushes.
    for round in 0..3 {
        for _ in 0..100 {
            client.count("requests", 1).unwrap();
            client.time("latency", 10 + round).unwrap();
        }
        client.gauge("depth", 40 + round).unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    statsd.terminate();
    let status = statsd.wait_timeout(EXIT).expect("bucky-statsd exits");
    assert!(status.success(), "bucky-statsd: {status}");
    bc.wait_success(EXIT);

    let names = [
        "stats_counts.pipe.requests",
        "stats.pipe.requests",
        "stats.timers.pipe.latency.count",
        "stats.timers.pipe.latency.upper",
        "stats.gauges.pipe.depth",
    ];
    let mut last_seen = None;
    let ok = poll_until(Duration::from_secs(120), || {
        let points = carbon.fetch(&names);
        let total = |n: &str| -> f64 { points.get(n).map_or(0.0, |p| p.iter().map(|x| x.1).sum()) };
        let done = total("stats_counts.pipe.requests") == 300.0
            && total("stats.timers.pipe.latency.count") == 300.0
            && (total("stats.pipe.requests") - 300.0).abs() < 1e-9
            && points
                .get("stats.gauges.pipe.depth")
                .and_then(|p| p.iter().max_by_key(|x| x.0))
                .map(|x| x.1)
                == Some(42.0)
            && points
                .get("stats.timers.pipe.latency.upper")
                .is_some_and(|p| p.iter().any(|x| x.1 == 12.0));
        last_seen = Some(points);
        done
    });
    assert!(
        ok,
        "whisper does not hold the totals: {last_seen:?}\ncarbon:\n{}",
        carbon.output_tail()
    );
}

/// A capture replayed gives the samples the live run gave.
#[test]
fn capture_replays_to_the_same_samples() {
    let port = free_udp_port();
    let dir = temp_dir("statsd-capture");
    let cap = dir.path().join("traffic.cap");
    let mut st = start_statsd(
        port,
        &[
            "--capture",
            cap.to_str().unwrap(),
            "--self-metrics-interval",
            "0",
        ],
    );
    let client = udp_client(port, "cap");
    for i in 0..60u64 {
        client.count("c", 1).unwrap();
        client.time("t", i).unwrap();
        client.gauge("g", i).unwrap();
        client.set("s", (i % 7) as i64).unwrap();
        std::thread::sleep(Duration::from_millis(40));
    }
    stop(&mut st);
    let live = st.stdout();
    let mut replay = Tool::start(
        "bucky-statsd",
        [
            "--statsd-port",
            &port.to_string(),
            "--flush-time",
            "1",
            "--self-metrics-interval",
            "0",
            "--replay",
            cap.to_str().unwrap(),
        ],
    );
    replay.wait_success(EXIT);
    let replayed = replay.stdout();
    let live_lines: std::collections::HashSet<&str> = live.lines().collect();
    let mut n = 0;
    for line in replayed.lines() {
        assert!(
            live_lines.contains(line),
            "replayed {line:?} is not in the live output:\n{live}\n---\n{replayed}"
        );
        n += 1;
    }
    assert!(n > 20, "{replayed}");
    assert_eq!(sums(&replayed)["stats_counts.cap.c"], 60.0);
    assert!(replay
        .stderr()
        .contains("replay: 240 datagrams from 1 file(s)"));
}

/// Persistent gauges: saved at exit (the original's JSON form), loaded and sent at start.
#[test]
fn persistent_gauges_survive_a_restart() {
    let dir = temp_dir("statsd-gauges");
    let dir_s = dir.path().to_str().unwrap().to_string();
    std::fs::write(
        dir.path().join("gauges.save"),
        r#"{"old.one": 1.5, "old.two": [2, null]}"#,
    )
    .unwrap();
    let port = free_udp_port();
    let flags = ["--persistent-gauges", "--directory", &dir_s];
    let mut st = start_statsd(port, &flags);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"new.g:7|g\nold.one:+1|g", ("127.0.0.1", port))
        .unwrap();
    stop(&mut st);
    let l = last(&st.stdout());
    assert_eq!(l["stats.gauges.old.one"], 2.5);
    assert_eq!(l["stats.gauges.old.two"], 2.0);
    assert_eq!(l["stats.gauges.new.g"], 7.0);
    let saved = std::fs::read_to_string(dir.path().join("gauges.save")).unwrap();
    assert_eq!(saved, r#"{"new.g":7.0,"old.one":2.5,"old.two":2.0}"#);

    let mut st = start_statsd(port, &flags);
    stop(&mut st);
    let l = last(&st.stdout());
    assert_eq!(l["stats.gauges.new.g"], 7.0);
    assert_eq!(l["stats.gauges.old.one"], 2.5);
}

/// Loss is never silent: with a tiny receive buffer and the receiver frozen, a burst
/// overflows the socket; every datagram is then either counted or in `kernel_drops`.
#[test]
fn kernel_drops_are_counted() {
    use nix::sys::signal::Signal;
    let port = free_udp_port();
    let mut st = start_statsd(port, &["--threads", "1", "--recv-buffer", "4096"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    st.guard().signal(Signal::SIGSTOP);
    let burst = 2000;
    for i in 0..burst {
        sock.send_to(
            format!("drop.burst:1|c|#n:{}", i % 3).as_bytes(),
            ("127.0.0.1", port),
        )
        .unwrap();
    }
    st.guard().signal(Signal::SIGCONT);
    stop(&mut st);
    let out = st.stdout();
    let received: f64 = sums(&out)
        .iter()
        .filter(|(k, _)| k.starts_with("stats_counts.drop.burst;"))
        .map(|(_, v)| v)
        .sum();
    let l = last(&out);
    let drops = l["bucky.statsd.kernel_drops"];
    assert!(
        drops > 0.0,
        "a 4 KiB buffer took a frozen burst of {burst}?\n{out}"
    );
    assert_eq!(
        received + drops,
        burst as f64,
        "received {received}, kernel drops {drops}, sent {burst}"
    );
    assert_eq!(l["bucky.statsd.datagrams"], received);
    assert!(st.stderr().contains("the kernel dropped"));
}

/// TCP is bounded: connections over the limit are closed at once, overlong lines skipped;
/// the rest is counted.
#[test]
fn tcp_limits() {
    use std::io::Read;
    let port = free_udp_port();
    let tcp_port = free_port();
    let mut st = start_statsd(
        port,
        &[
            "--tcp",
            "--tcp-port",
            &tcp_port.to_string(),
            "--tcp-max-connections",
            "2",
        ],
    );
    wait_until(START, "the TCP listener", || {
        st.stderr().contains("receiving StatsD on TCP")
    });
    let mut c1 = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    let mut c2 = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    let mut c3 = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    c3.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 16];
    wait_until(START, "the third connection to be closed", || {
        match c3.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        }
    });
    c1.write_all(b"tcp.one:1|c\n").unwrap();
    let mut long = vec![b'x'; 70_000];
    long.extend_from_slice(b":1|c\ntcp.two:2|c\n");
    c2.write_all(&long).unwrap();
    c1.write_all(b"tcp.one:1|c").unwrap(); // no newline: still taken at SIGTERM
    stop(&mut st);
    let out = st.stdout();
    let s = sums(&out);
    let l = last(&out);
    assert_eq!(s["stats_counts.tcp.one"], 2.0, "{out}");
    assert_eq!(s["stats_counts.tcp.two"], 2.0);
    assert_eq!(l["bucky.statsd.tcp_refused"], 1.0);
    assert_eq!(l["bucky.statsd.tcp_connections"], 2.0);
    assert_eq!(l["bucky.statsd.tcp_lines_too_long"], 1.0);
}
