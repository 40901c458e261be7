//! bucky-carbon against a real carbon-cache: every point arrives with its exact value, over
//! plaintext and pickle, through carbon restarts, a carbon that starts late, and SIGTERM.
//!
//! Each test has its own carbon-cache (own directory, own free loopback ports) and runs the
//! real `bucky-carbon` binary (`cargo build --workspace --bins` first; scripts/test does).

// Test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::time::Duration;

use bucky_tests::{tcp_in_flight, wait_until, write_file, CarbonCache, Samples, Tool};

/// How long carbon may take to hold every expected point (2 slow CI cores, tests in parallel).
const POINTS_TIMEOUT: Duration = Duration::from_secs(120);
/// How long bucky-carbon may take to exit once its input has ended and carbon is up.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long writing a test's input into bucky-carbon's stdin may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Protocol {
    Plaintext,
    Pickle,
}

impl Protocol {
    fn port(self, carbon: &CarbonCache) -> u16 {
        match self {
            Protocol::Plaintext => carbon.line_port(),
            Protocol::Pickle => carbon.pickle_port(),
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Protocol::Plaintext => &[],
            Protocol::Pickle => &["--pickle"],
        }
    }
}

/// Starts bucky-carbon sending to 127.0.0.1:`port`, without self-metrics, retrying quickly
/// (0.1 s, backoff capped at 0.5 s), plus `extra` flags.
fn bucky_carbon(port: u16, extra: &[&str]) -> Tool {
    let mut args: Vec<String> = [
        "--graphite-ip",
        "127.0.0.1",
        "--graphite-port",
        &port.to_string(),
        "--self-metrics-interval",
        "0",
        "--reconnect-delay",
        "0.1",
        "--backoff-max",
        "0.5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Tool::start("bucky-carbon", args)
}

/// Carbon holds exactly the series of `samples` (no others, no mangled names).
#[track_caller]
fn assert_only_series(carbon: &CarbonCache, samples: &Samples) {
    let want: BTreeSet<String> = samples.names.iter().cloned().collect();
    let have: BTreeSet<String> = carbon.metric_names().into_iter().collect();
    assert_eq!(
        have, want,
        "carbon's series differ from the samples' series"
    );
}

fn send_100k(protocol: Protocol, prefix: &str) {
    let carbon = CarbonCache::start();
    let samples = Samples::generate(prefix, 100, 1000);
    let mut bc = bucky_carbon(protocol.port(&carbon), protocol.flags());
    let mut feeder = bc.feeder();
    feeder.send(samples.bytes());
    feeder.close(WRITE_TIMEOUT);
    bc.wait_success(EXIT_TIMEOUT);
    carbon.wait_for_points(&samples.expected(), POINTS_TIMEOUT);
    assert_only_series(&carbon, &samples);
}

#[test]
fn plaintext_100k() {
    send_100k(Protocol::Plaintext, "plain100k");
}

#[test]
fn pickle_100k() {
    send_100k(Protocol::Pickle, "pickle100k");
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outage {
    /// SIGTERM: carbon writes its cache out; what sat in its socket buffers is lost.
    Stop,
    /// Carbon hangs (SIGSTOP) while bucky-carbon keeps sending into the socket buffers, then
    /// is killed (SIGKILL): everything in its buffers and cache is lost, and bucky-carbon's
    /// resend window (16 MiB by default) must cover it.
    HangThenKill,
}

/// 100 series × 200 timestamps fed in paced bursts; carbon goes away after the first points
/// arrived (while bursts are still being written), part of the stream is written while it is
/// down, then it comes back on the same ports and the rest follows. Nothing may be lost.
fn carbon_outage_mid_stream(protocol: Protocol, outage: Outage, prefix: &str) {
    let mut carbon = CarbonCache::start();
    let samples = Samples::generate(prefix, 100, 200);
    let n = samples.len();
    // Part 1: 0..a, carbon up; part 2: a..b, carbon away; part 3: b..n, carbon back.
    let (a, b) = (n * 2 / 5, n * 7 / 10);
    const BURST: usize = 100;

    let port = protocol.port(&carbon);
    let mut bc = bucky_carbon(port, protocol.flags());
    let mut feeder = bc.paced_feeder(Duration::from_millis(15));
    let send = |feeder: &mut bucky_tests::Feeder, from: usize, to: usize| {
        for start in (from..to).step_by(BURST) {
            feeder.send(samples.bytes_of(start..(start + BURST).min(to)));
        }
    };

    // Part 1: carbon is up. Take it away once the first burst is in whisper.
    send(&mut feeder, 0, a);
    carbon.wait_for_points(&samples.expected_of(0..BURST), POINTS_TIMEOUT);
    let mut from = a;
    match outage {
        Outage::Stop => carbon.stop(),
        Outage::HangThenKill => {
            carbon.pause();
            feeder.wait_written(WRITE_TIMEOUT);
            // Half of part 2 goes into the frozen carbon's socket buffers, where
            // bucky-carbon cannot tell it from delivered data; then carbon dies with it.
            let h = (a + b) / 2;
            send(&mut feeder, a, h);
            feeder.wait_written(WRITE_TIMEOUT);
            let at_least = samples.bytes_of(a..h).len() as u64 / 2;
            wait_until(
                WRITE_TIMEOUT,
                "bucky-carbon to send into the frozen carbon's socket buffers",
                || tcp_in_flight(port) >= at_least,
            );
            carbon.kill();
            from = h;
        }
    }
    // Part 2: written while carbon is down; bucky-carbon must keep reading.
    feeder.wait_written(WRITE_TIMEOUT);
    send(&mut feeder, from, b);
    feeder.wait_written(WRITE_TIMEOUT);
    assert!(
        bc.is_running(),
        "bucky-carbon exited while carbon was down; stderr:\n{}",
        bc.stderr_tail()
    );
    // Part 3: carbon is back on the same ports.
    carbon.start_again();
    send(&mut feeder, b, n);
    feeder.close(WRITE_TIMEOUT);
    bc.wait_success(EXIT_TIMEOUT);
    carbon.wait_for_points(&samples.expected(), POINTS_TIMEOUT);
    assert_only_series(&carbon, &samples);
}

#[test]
fn carbon_restart_mid_stream_plaintext() {
    carbon_outage_mid_stream(Protocol::Plaintext, Outage::Stop, "restartplain");
}

#[test]
fn carbon_restart_mid_stream_pickle() {
    carbon_outage_mid_stream(Protocol::Pickle, Outage::Stop, "restartpickle");
}

#[test]
fn carbon_hangs_then_is_killed_mid_stream_plaintext() {
    carbon_outage_mid_stream(Protocol::Plaintext, Outage::HangThenKill, "killplain");
}

#[test]
fn carbon_hangs_then_is_killed_mid_stream_pickle() {
    carbon_outage_mid_stream(Protocol::Pickle, Outage::HangThenKill, "killpickle");
}

#[test]
fn carbon_down_at_start() {
    // The ports are reserved; nothing listens on them yet.
    let mut carbon = CarbonCache::new();
    let samples = Samples::generate("downatstart", 100, 100);
    let input = samples.bytes();
    let mut bc = bucky_carbon(carbon.line_port(), &[]);
    let mut feeder = bc.feeder();
    feeder.send(input.clone());
    feeder.close(WRITE_TIMEOUT);
    // It has read its whole input (and its EOF) and must still be retrying.
    wait_until(WRITE_TIMEOUT, "bucky-carbon to read its input", || {
        bc.read_bytes().is_some_and(|n| n >= input.len() as u64)
    });
    assert!(
        bc.is_running(),
        "bucky-carbon gave up before carbon came up; stderr:\n{}",
        bc.stderr_tail()
    );
    carbon.start_again();
    carbon.wait_for_points(&samples.expected(), POINTS_TIMEOUT);
    bc.wait_success(EXIT_TIMEOUT);
    assert_only_series(&carbon, &samples);
}

#[test]
fn debug_writes_lines_to_stdout() {
    // A listener on the port: --debug must not connect to it.
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let samples = Samples::generate("debug", 7, 30);
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "input", &samples.bytes());

    let mut bc = bucky_carbon(port, &["--debug", input.to_str().unwrap()]);
    bc.close_stdin();
    bc.wait_success(EXIT_TIMEOUT);

    let stdout = bc.stdout();
    let mut got = Vec::new();
    for line in stdout.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "not a carbon line: {line:?}");
        let value: f64 = f[1]
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let ts: f64 = f[2]
            .parse()
            .unwrap_or_else(|_| panic!("bad timestamp in {line:?}"));
        got.push((f[0].to_string(), ts as i64, value.to_bits()));
    }
    let want: Vec<(String, i64, u64)> = samples
        .points
        .iter()
        .map(|(n, t, v)| (n.clone(), *t, v.to_bits()))
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "stdout:\n{}",
        bucky_tests::tail(&stdout, 10)
    );
    assert_eq!(got, want);
    assert!(stdout.ends_with('\n'));
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "--debug connected to the carbon port"
    );
}

#[test]
fn bad_lines_are_counted_not_fatal() {
    let carbon = CarbonCache::start();
    let samples = Samples::generate("badlines", 10, 10);
    let garbage = [
        "this is not a sample at all\n",
        "test.badlines.junk1 notanumber 1700000000\n",
        "test.badlines.junk2 17\n",
        "test.badlines.junk3 1 1700000000 host extra\n",
        "test.badlines.junk4 nan 1700000000\n",
        "test.badlines.junk5 1 yesterday\n",
    ];
    // 1-based line numbers at which garbage goes.
    let bad_at = [1usize, 7, 42, 73, 91, 106];
    let mut input = String::new();
    let mut good = samples.lines.iter();
    let mut bad = garbage.iter();
    for line_no in 1..=samples.len() + garbage.len() {
        if bad_at.contains(&line_no) {
            input.push_str(bad.next().unwrap());
        } else {
            input.push_str(good.next().unwrap());
        }
    }
    let mut bc = bucky_carbon(carbon.line_port(), &[]);
    let mut feeder = bc.feeder();
    feeder.send(input);
    feeder.close(WRITE_TIMEOUT);
    bc.wait_success(EXIT_TIMEOUT);
    carbon.wait_for_points(&samples.expected(), POINTS_TIMEOUT);
    assert_only_series(&carbon, &samples);

    let stderr = bc.stderr();
    let numbers: BTreeSet<usize> = stderr
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    for line_no in bad_at {
        assert!(
            numbers.contains(&line_no),
            "stderr does not mention bad line {line_no}:\n{stderr}"
        );
    }
}

/// With carbon up, bucky-carbon reads samples and is sent SIGTERM while its stdin is still
/// open: it exits 0 within its shutdown timeout, and every sample it had read arrives.
fn sigterm_sends_what_it_holds(protocol: Protocol, prefix: &str) {
    let carbon = CarbonCache::start();
    let samples = Samples::generate(prefix, 50, 60);
    // 1750 samples after the first batch: with 500-point pickle frames, 250 wait in the
    // pickle buffer for the flush timer when SIGTERM comes.
    let (first, end) = (1000, 2750);
    let mut extra = protocol.flags().to_vec();
    extra.extend(["--pickle-buffer-size", "500", "--shutdown-timeout", "10"]);
    let mut bc = bucky_carbon(protocol.port(&carbon), &extra);
    let mut feeder = bc.feeder();

    feeder.send(samples.bytes_of(0..first));
    carbon.wait_for_points(&samples.expected_of(0..first), POINTS_TIMEOUT);
    // Everything bucky-carbon read so far (start-up reads included) is behind this mark.
    let mark = bc.read_bytes().expect("/proc/PID/io of bucky-carbon");
    let rest = samples.bytes_of(first..end);
    let rest_len = rest.len() as u64;
    feeder.send(rest);
    feeder.wait_written(WRITE_TIMEOUT);
    wait_until(
        WRITE_TIMEOUT,
        "bucky-carbon to read the rest of its input",
        || bc.read_bytes().is_some_and(|n| n >= mark + rest_len),
    );
    bc.terminate();
    bc.wait_success(Duration::from_secs(20));
    carbon.wait_for_points(&samples.expected_of(0..end), POINTS_TIMEOUT);
    drop(feeder);
}

#[test]
fn sigterm_sends_what_it_holds_plaintext() {
    sigterm_sends_what_it_holds(Protocol::Plaintext, "sigtermplain");
}

#[test]
fn sigterm_sends_what_it_holds_pickle() {
    sigterm_sends_what_it_holds(Protocol::Pickle, "sigtermpickle");
}
