//! bucky-process through its real binary: lines piped in, lines read back; and the whole
//! pipeline `bucky-metricsd | bucky-process | bucky-carbon` into a real carbon-cache.
//!
//! `cargo build --workspace --bins` first (scripts/test does).

// Test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use bucky_metricsd::wire::{Encoder, MetricType, Number};
use bucky_tests::{
    bin, free_udp_port, poll_until, temp_dir, unix_now, wait_until, write_file, CarbonCache,
    ChildGuard, Tool,
};
use nix::sys::signal::Signal;

/// How long a run over a small input may take (2 slow CI cores, tests in parallel).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs bucky-process with `args` over `input`; returns (stdout, stderr) after it exits 0.
fn filter(args: &[String], input: &str) -> (String, String) {
    let mut p = Tool::start("bucky-process", args);
    let mut feeder = p.feeder();
    feeder.send(input.as_bytes().to_vec());
    feeder.close(TIMEOUT);
    p.wait_success(TIMEOUT);
    (p.stdout(), p.stderr())
}

fn config(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    write_file(dir.path(), name, text.as_bytes())
        .display()
        .to_string()
}

/// The original README's `timediff` processor ("drop samples that are more than 2 minutes in
/// the future or more than 5 minutes in the past"), as the README's four lines of config.
#[test]
fn the_seed_readme_timediff_processor() {
    let dir = temp_dir("process-timediff");
    let conf = config(
        &dir,
        "bucky.toml",
        "[[processor_rules]]\n\
         action = \"time_window\"\n\
         future = 120\n\
         past = 300\n",
    );
    let now = unix_now();
    // Offsets well clear of the edges: the clock moves while the test runs.
    let offsets = [0, 60, -60, 100, -280, 200, 3600, -330, -86400];
    let input: String = offsets
        .iter()
        .enumerate()
        .map(|(i, dt)| format!("m.s{i} {i} {}.5 h{i}\n", now + dt))
        .collect();
    let (out, err) = filter(
        &[
            "--config".into(),
            conf,
            "--self-metrics-interval".into(),
            "0".into(),
        ],
        &input,
    );
    let kept: Vec<&str> = out.lines().collect();
    let want: Vec<String> = offsets
        .iter()
        .enumerate()
        .filter(|(_, dt)| (-300..=120).contains(*dt))
        .map(|(i, dt)| format!("m.s{i} {i} {}.5 h{i}", now + dt))
        .collect();
    assert_eq!(kept, want);
    assert!(
        err.contains("in=9 out=5 dropped=4"),
        "the exit summary counts: {err}"
    );
}

/// An original-style (Python literal) config: rules, a Lua script next to the config file,
/// processor_drop_on_error; plus the counters as bucky.process.* samples at exit.
#[test]
fn python_config_rules_and_lua() {
    let dir = temp_dir("process-python");
    config(
        &dir,
        "filter.lua",
        "-- seconds to milliseconds; drop secrets; fail on purpose for 'boom'\n\
         return function(host, name, value, time)\n\
           if name:find('secret') then return end\n\
           if name == 'hosts.boom.x' then error('boom') end\n\
           local base = name:match('^(.*)%.seconds$')\n\
           if base then return host, base .. '.ms', value * 1000, time end\n\
           return host, name, value, time\n\
         end\n",
    );
    let conf = config(
        &dir,
        "bucky.conf",
        "# An original bucky config: only literals.\n\
         processor_rules = [\n\
             {'action': 'drop', 'name': '^debug\\\\.'},\n\
             {'action': 'rename', 'name': '^servers\\\\.([^.]+)\\\\.', 'to': 'hosts.$1.'},\n\
         ]\n\
         processor_lua = 'filter.lua'\n\
         processor_drop_on_error = True\n\
         self_metrics_interval = 3600\n",
    );
    let input = "debug.x 1 1795650000\n\
                 servers.web1.latency.seconds 0.25 1795650000 web1\n\
                 servers.web1.secret.token 1 1795650000\n\
                 servers.boom.x 1 1795650000\n\
                 plain.count 7 1795650001.5\n";
    let (out, err) = filter(&["-c".into(), conf], input);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        &lines[..2],
        &[
            "hosts.web1.latency.ms 250 1795650000 web1",
            "plain.count 7 1795650001.5"
        ],
        "{out}"
    );
    // Then the counters (forced out at exit), every one a sample line.
    let counter = |name: &str| -> u64 {
        let prefix = format!("bucky.process.{name} ");
        let line = lines
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}in {out}"));
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(counter("in"), 5);
    assert_eq!(counter("out"), 2);
    assert_eq!(counter("dropped_drop"), 1);
    assert_eq!(counter("dropped_lua"), 1);
    assert_eq!(counter("dropped_lua_error"), 1);
    assert_eq!(counter("lua_errors"), 1);
    assert_eq!(counter("renamed"), 3);
    assert!(
        err.contains("stdin line 4: Lua function: ") && err.contains("boom (sample dropped)"),
        "{err}"
    );
}

/// Lines that are not samples are counted and reported with their line numbers; everything
/// else goes through whole, values and timestamps exactly as they came.
#[test]
fn bad_lines_are_counted_with_their_line_numbers() {
    let long = "x".repeat(70_000);
    let input = format!(
        "a.b 1 1795650000\n\
         not a sample at all\n\
         c 1e-7 1795650000.125 host.example\n\
         d nan 1795650000\n\
         {long} 1 1\n\
         \n\
         e -0 0\r\n\
         f 12 -5"
    );
    let (out, err) = filter(
        &[
            "--self-metrics-interval".into(),
            "0".into(),
            "--log-level".into(),
            "WARNING".into(),
        ],
        &input,
    );
    let lines: Vec<&str> = out.lines().map(|l| &l[..l.len().min(80)]).collect();
    assert_eq!(
        lines,
        [
            "a.b 1 1795650000",
            "c 1e-7 1795650000.125 host.example",
            "e -0 0"
        ]
    );
    for want in [
        "stdin line 2: expected 'NAME VALUE TIMESTAMP[ HOST]', found 5 field(s) (skipped)",
        "stdin line 4: value NaN is not finite and cannot be written",
        "stdin line 5: line of 70004 bytes is too long (skipped)",
        "stdin line 8: timestamp \"-5\" is not a finite number of seconds >= 0 (skipped)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// A signal while stdin is open but idle: what was read is out, and it exits 0 promptly.
#[test]
fn sigterm_while_stdin_is_idle() {
    let mut p = Tool::start("bucky-process", ["--self-metrics-interval", "0"]);
    let mut feeder = p.feeder();
    feeder.send(b"a 1 1\nb 2 2\n".to_vec());
    feeder.wait_written(TIMEOUT);
    wait_until(TIMEOUT, "the lines to come out", || {
        p.stdout() == "a 1 1\nb 2 2\n"
    });
    p.terminate();
    p.wait_success(TIMEOUT);
    drop(feeder);
}

/// When stdout's reader goes away, bucky-process exits 0 without an error message.
#[test]
fn a_broken_stdout_pipe_ends_it_quietly() {
    let dir = temp_dir("process-pipe");
    let stderr_path = dir.path().join("stderr");
    let mut cmd = Command::new(bin("bucky-process"));
    cmd.args(["--self-metrics-interval", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&stderr_path).unwrap());
    let mut child = ChildGuard::spawn("bucky-process", &mut cmd);
    let stdin = child.child_mut().stdin.take().unwrap();
    drop(child.child_mut().stdout.take());
    let mut feeder = bucky_tests::Feeder::new(stdin);
    // Enough lines that writing them must fail; the feeder stops once the pipe breaks.
    for _ in 0..100 {
        feeder.send("some.metric 1 1795650000\n".repeat(1000));
    }
    let status = child
        .wait_timeout(TIMEOUT)
        .expect("bucky-process did not exit");
    assert!(status.success(), "{status:?}");
    let err = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!err.contains(": error:"), "{err}");
    drop(feeder);
}

/// `bucky-metricsd | bucky-process | bucky-carbon` into a real carbon-cache: MetricsD
/// datagrams become whisper points, renamed and filtered on the way, under the sender's
/// (reversed) host.
#[test]
fn metricsd_process_carbon_pipeline() {
    let carbon = CarbonCache::start();
    let dir = temp_dir("pipeline");
    let port = free_udp_port();
    let conf = config(
        &dir,
        "bucky.toml",
        &format!(
            "metricsd_port = {port}\n\
             metricsd_handlers = [['^fast\\.', 0.2]]\n\
             metricsd_default_interval = 0.5\n\
             self_metrics_interval = 0\n\
             graphite_port = {}\n\
             graphite_reconnect_delay = 0.1\n\
             processor_rules = [\n\
               {{ action = 'drop', name = '\\.rate_' }},\n\
               {{ action = 'rename', name = '^fast\\.', to = 'quick.' }},\n\
               {{ action = 'time_window', future = 120, past = 300 }},\n\
             ]\n",
            carbon.line_port()
        ),
    );
    let log = |name: &str| File::create(dir.path().join(name)).unwrap();
    let mut metricsd = ChildGuard::spawn(
        "bucky-metricsd",
        Command::new(bin("bucky-metricsd"))
            .args(["-c", &conf])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log("metricsd.err")),
    );
    let m_out = metricsd.child_mut().stdout.take().unwrap();
    let mut process = ChildGuard::spawn(
        "bucky-process",
        Command::new(bin("bucky-process"))
            .args(["-c", &conf])
            .stdin(m_out)
            .stdout(Stdio::piped())
            .stderr(log("process.err")),
    );
    let p_out = process.child_mut().stdout.take().unwrap();
    let mut carbon_writer = ChildGuard::spawn(
        "bucky-carbon",
        Command::new(bin("bucky-carbon"))
            .args(["-c", &conf])
            .stdin(p_out)
            .stdout(Stdio::null())
            .stderr(log("carbon.err")),
    );
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    wait_until(TIMEOUT, "bucky-metricsd to listen", || {
        read("metricsd.err").contains("listening on UDP")
    });

    // One datagram, so every flush carries the final values.
    let mut e = Encoder::new("web1.example.com").unwrap();
    for v in [1u8, 2, 3] {
        e.update(MetricType::Counter, "fast.requests", Number::U8(v))
            .unwrap();
    }
    e.update(MetricType::Gauge, "load", Number::F64(0.5))
        .unwrap();
    for v in [10u8, 20, 30] {
        e.update(MetricType::Timer, "db.query", Number::U8(v))
            .unwrap();
    }
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(e.as_bytes(), ("127.0.0.1", port))
        .unwrap();

    let want = [
        ("com.example.web1.quick.requests", 6.0),
        ("com.example.web1.load", 0.5),
        ("com.example.web1.db.query.calls.count", 3.0),
        ("com.example.web1.db.query.histo.mean", 20.0),
        ("com.example.web1.db.query.histo.max", 30.0),
    ];
    let names: Vec<&str> = want.iter().map(|(n, _)| *n).collect();
    let arrived = poll_until(Duration::from_secs(120), || {
        let points = carbon.fetch(&names);
        want.iter().all(|(name, value)| {
            points
                .get(*name)
                .is_some_and(|p| !p.is_empty() && p.iter().all(|(_, v)| v == value))
        })
    });
    assert!(
        arrived,
        "carbon holds {:?}\nseries: {:?}\nmetricsd: {}\nprocess: {}\ncarbon: {}",
        carbon.fetch(&names),
        carbon.metric_names(),
        read("metricsd.err"),
        read("process.err"),
        read("carbon.err")
    );

    // SIGTERM to the head: each stage sees EOF in turn, flushes and exits 0.
    metricsd.signal(Signal::SIGTERM);
    for stage in [&mut metricsd, &mut process, &mut carbon_writer] {
        let status = stage
            .wait_timeout(TIMEOUT)
            .unwrap_or_else(|| panic!("{} did not exit", stage.name()));
        assert!(status.success(), "{}: {status:?}", stage.name());
    }
    let series = carbon.metric_names();
    assert!(
        series.iter().all(|s| !s.contains(".rate_")),
        "the drop rule let rates through: {series:?}"
    );
    assert!(
        series.iter().all(|s| !s.contains(".fast.")),
        "the rename rule missed: {series:?}"
    );
    assert!(series.contains(&"com.example.web1.db.query.histo.perc_99_9".to_string()));
}
