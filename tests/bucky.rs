//! The `bucky` command end to end: the real wrapper running the real stages, fed by a real
//! StatsD client library (UDP and TCP) and MetricsD datagrams, writing into a real
//! carbon-cache; its lifecycle (SIGTERM drains, a dead stage stops it non-zero) and the
//! original's example config.

// Test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use bucky_metricsd::wire::{Encoder, MetricType, Number};
use bucky_tests::collectd::{Collectd, Server, HOST};
use bucky_tests::{
    bin, free_port, free_udp_port, poll_until, temp_dir, wait_until, write_file, CarbonCache, Tool,
};
use cadence::prelude::*;
use cadence::{MetricSink, StatsdClient, UdpMetricSink};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const START: Duration = Duration::from_secs(60);
const ARRIVE: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(90);

/// cadence ships no TCP sink: StatsD over TCP is one metric per line.
struct TcpSink(Mutex<TcpStream>);

impl MetricSink for TcpSink {
    fn emit(&self, metric: &str) -> std::io::Result<usize> {
        use std::io::Write;
        let mut s = self.0.lock().unwrap();
        s.write_all(metric.as_bytes())?;
        s.write_all(b"\n")?;
        Ok(metric.len() + 1)
    }
}

/// Ports of one bucky instance.
struct Ports {
    statsd: u16,
    statsd_tcp: u16,
    collectd: u16,
    metricsd: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            statsd: free_udp_port(),
            statsd_tcp: free_port(),
            collectd: free_udp_port(),
            metricsd: free_udp_port(),
        }
    }

    fn flags(&self, carbon_port: u16) -> Vec<String> {
        [
            "--statsd-port",
            &self.statsd.to_string(),
            "--collectd-port",
            &self.collectd.to_string(),
            "--metricsd-port",
            &self.metricsd.to_string(),
            "--graphite-port",
            &carbon_port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// Every pid below `pid` (children first found through /proc).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// The pid of the stage `name` (by /proc/PID/comm) under the wrapper.
fn stage_pid(wrapper: u32, name: &str) -> Option<u32> {
    descendants(wrapper).into_iter().find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm"))
            .map(|c| name.starts_with(c.trim()))
            .unwrap_or(false)
    })
}

/// A running `bucky`; its stages are killed with it if a test fails.
struct Bucky {
    tool: Tool,
}

impl Bucky {
    fn start(config: Option<&Path>, args: &[String]) -> Bucky {
        let mut all: Vec<String> = args.to_vec();
        if let Some(c) = config {
            all.push(c.display().to_string());
        }
        let mut tool = Tool::start_program("bucky", &bin("bucky"), &all, Stdio::null());
        wait_until(START, "bucky's receivers to listen", || {
            assert!(tool.is_running(), "bucky exited:\n{}", tool.stderr_tail());
            let e = tool.stderr();
            [
                "receiving StatsD on UDP",
                "listening on udp",
                "listening on UDP",
            ]
            .iter()
            .filter(|w| e.contains(*w))
            .count()
                == 3
        });
        Bucky { tool }
    }

    fn pid(&self) -> u32 {
        self.tool.pid()
    }

    /// SIGTERM, then exit 0 within the bound.
    fn stop(&mut self) {
        self.tool.terminate();
        self.tool.wait_success(EXIT);
    }
}

impl Drop for Bucky {
    fn drop(&mut self) {
        for p in descendants(self.tool.pid()) {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
        }
    }
}

fn config(dir: &Path, extra: &str) -> PathBuf {
    write_file(
        dir,
        "bucky.toml",
        format!(
            "statsd_flush_time = 1.0\n\
             statsd_delete_idlestats = true\n\
             metricsd_default_interval = 1.0\n\
             graphite_reconnect_delay = 0.2\n\
             graphite_backoff_max = 0.5\n\
             self_metrics_interval = 0\n{extra}"
        )
        .as_bytes(),
    )
}

/// The sum of all stored points of each metric.
fn sums(carbon: &CarbonCache, names: &[&str]) -> HashMap<String, f64> {
    carbon
        .fetch(names)
        .into_iter()
        .map(|(k, v)| (k, v.iter().map(|p| p.1).sum()))
        .collect()
}

fn wait_for_sums(carbon: &CarbonCache, want: &[(&str, f64)]) {
    let names: Vec<&str> = want.iter().map(|w| w.0).collect();
    let ok = poll_until(ARRIVE, || {
        let got = sums(carbon, &names);
        want.iter().all(|(n, v)| got.get(*n) == Some(v))
    });
    assert!(
        ok,
        "expected sums {want:?}, carbon has {:?}",
        sums(carbon, &names)
    );
}

#[test]
fn statsd_udp_and_tcp_signed_collectd_and_metricsd_reach_carbon_with_the_right_names() {
    let carbon = CarbonCache::start();
    let dir = temp_dir("bucky-all");
    let ports = Ports::new();
    let auth = write_file(dir.path(), "collectd.auth", b"alice: secret\n");
    let cfg = config(
        dir.path(),
        &format!(
            "statsd_tcp_enabled = true\nstatsd_tcp_port = {}\n\
             collectd_security_level = 1\ncollectd_auth_file = \"{}\"\n",
            ports.statsd_tcp,
            auth.display()
        ),
    );
    let mut bucky = Bucky::start(Some(&cfg), &ports.flags(carbon.line_port()));
    // A real collectd signing its packets (level 1 refuses unsigned ones).
    let collectd = Collectd::start(&[Server::new(ports.collectd, "Sign", "alice", "secret")]);
    let t = bucky_tests::unix_now() - 30;
    for i in 0..3 {
        collectd.putval("fixture/gauge-g1", t + i, &format!("{}.5", i + 40));
    }

    let udp = StatsdClient::from_sink(
        "app",
        UdpMetricSink::from(
            ("127.0.0.1", ports.statsd),
            UdpSocket::bind("127.0.0.1:0").unwrap(),
        )
        .unwrap(),
    );
    let tcp = StatsdClient::from_sink(
        "app",
        TcpSink(Mutex::new(
            TcpStream::connect(("127.0.0.1", ports.statsd_tcp)).unwrap(),
        )),
    );
    for _ in 0..25 {
        udp.count("udp_hits", 2).unwrap();
        tcp.count("tcp_hits", 3).unwrap();
    }
    udp.gauge("queue_depth", 42).unwrap();
    drop(tcp);
    let mut e = Encoder::new("web1.example.com").unwrap();
    e.update(MetricType::Gauge, "app.load", Number::F64(0.5))
        .unwrap();
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(e.as_bytes(), ("127.0.0.1", ports.metricsd))
        .unwrap();

    wait_for_sums(
        &carbon,
        &[
            ("stats_counts.app.udp_hits", 50.0),
            ("stats_counts.app.tcp_hits", 75.0),
        ],
    );
    let got = carbon.fetch(&["stats.gauges.app.queue_depth", "com.example.web1.app.load"]);
    assert!(
        poll_until(ARRIVE, || {
            let got = carbon.fetch(&["stats.gauges.app.queue_depth", "com.example.web1.app.load"]);
            got.get("stats.gauges.app.queue_depth")
                .is_some_and(|p| p.iter().any(|p| p.1 == 42.0))
                && got
                    .get("com.example.web1.app.load")
                    .is_some_and(|p| p.iter().any(|p| p.1 == 0.5))
        }),
        "gauges: {got:?}; names in carbon: {:?}",
        carbon.metric_names()
    );
    // collectd's values: the host's name first, the converter's name after it.
    let name = format!("{HOST}.fixture.gauge.g1");
    let want: bucky_tests::Points = [(name, (0..3).map(|i| (t + i, i as f64 + 40.5)).collect())]
        .into_iter()
        .collect();
    carbon.wait_for_points(&want, ARRIVE);
    bucky.stop();
    // `ps` shows the pipeline: each stage is named by its binary.
    let e = bucky.tool.stderr();
    for stage in [
        "bucky-statsd",
        "bucky-collectd",
        "bucky-metricsd",
        "bucky-carbon",
    ] {
        assert!(e.contains(&format!("started {stage}")), "{e}");
        assert!(e.contains(&format!("{stage} finished")), "{e}");
    }
}

#[test]
fn counters_sent_just_before_sigterm_all_reach_carbon() {
    let carbon = CarbonCache::start();
    let dir = temp_dir("bucky-sigterm");
    let ports = Ports::new();
    // A long flush interval: everything must come out of the final flush.
    let cfg = write_file(
        dir.path(),
        "bucky.toml",
        b"statsd_flush_time = 60.0\nself_metrics_interval = 0\n",
    );
    let mut bucky = Bucky::start(Some(&cfg), &ports.flags(carbon.line_port()));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    const N: usize = 5000;
    for i in 0..N {
        let line = format!("burst.c{}:1|c", i % 50);
        sock.send_to(line.as_bytes(), ("127.0.0.1", ports.statsd))
            .unwrap();
    }
    kill(Pid::from_raw(bucky.pid() as i32), Signal::SIGTERM).unwrap();
    bucky.tool.wait_success(EXIT);
    let want: Vec<(String, f64)> = (0..50)
        .map(|k| (format!("stats_counts.burst.c{k}"), (N / 50) as f64))
        .collect();
    let want: Vec<(&str, f64)> = want.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    wait_for_sums(&carbon, &want);
}

#[test]
fn dead_carbon_at_start_and_a_carbon_restart_lose_nothing() {
    let mut carbon = CarbonCache::new();
    let dir = temp_dir("bucky-carbon-down");
    let ports = Ports::new();
    let cfg = config(dir.path(), "");
    let mut bucky = Bucky::start(Some(&cfg), &ports.flags(carbon.line_port()));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |key: &str, n: usize| {
        for _ in 0..n {
            sock.send_to(format!("{key}:1|c").as_bytes(), ("127.0.0.1", ports.statsd))
                .unwrap();
        }
    };
    // Carbon is not there yet: these wait in bucky-carbon's queue.
    send("down.before_start", 100);
    let out = bucky.tool.stderr();
    wait_until(ARRIVE, "a flush while carbon is down", || {
        bucky.tool.stderr().contains("failed to connect")
    });
    drop(out);
    carbon.start_again();
    send("down.after_start", 200);
    wait_for_sums(
        &carbon,
        &[
            ("stats_counts.down.before_start", 100.0),
            ("stats_counts.down.after_start", 200.0),
        ],
    );
    carbon.stop();
    send("down.while_restarting", 300);
    wait_until(ARRIVE, "bucky-carbon to notice the restart", || {
        let e = bucky.tool.stderr();
        e.contains("closed the connection") || e.matches("failed to connect").count() > 1
    });
    carbon.start_again();
    send("down.after_restart", 400);
    bucky.stop();
    wait_for_sums(
        &carbon,
        &[
            ("stats_counts.down.before_start", 100.0),
            ("stats_counts.down.after_start", 200.0),
            ("stats_counts.down.while_restarting", 300.0),
            ("stats_counts.down.after_restart", 400.0),
        ],
    );
}

#[test]
fn a_killed_stage_stops_bucky_with_a_clear_message() {
    let carbon = CarbonCache::start();
    let dir = temp_dir("bucky-killed");
    let ports = Ports::new();
    let cfg = config(dir.path(), "");
    let mut bucky = Bucky::start(Some(&cfg), &ports.flags(carbon.line_port()));
    let victim = stage_pid(bucky.pid(), "bucky-collectd").expect("bucky-collectd runs");
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let status = bucky.tool.wait_exit(EXIT);
    assert!(!status.success(), "bucky exited {status}");
    let e = bucky.tool.stderr();
    assert!(
        e.contains("bucky-collectd exited with signal SIGKILL"),
        "stderr:\n{e}"
    );
    assert!(e.contains("stopping the other stages"), "stderr:\n{e}");
    // The others were stopped cleanly, not left behind.
    assert!(descendants(bucky.pid()).is_empty());
}

#[test]
fn the_seed_readme_config_runs_unchanged() {
    let carbon = CarbonCache::start();
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/seed-readme-config.py");
    let ports = Ports::new();
    let mut bucky = Bucky::start(Some(&seed), &ports.flags(carbon.line_port()));
    let e = bucky.tool.stderr();
    assert!(!e.contains("unknown key"), "{e}");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..7 {
        sock.send_to(b"seed.hits:1|c", ("127.0.0.1", ports.statsd))
            .unwrap();
    }
    // The seed's flush time is 10 s: SIGTERM's final flush delivers them now.
    bucky.stop();
    wait_for_sums(&carbon, &[("stats_counts.seed.hits", 7.0)]);
}

#[test]
fn a_misspelt_key_is_reported_once_not_by_every_stage() {
    let dir = temp_dir("bucky-typo");
    let ports = Ports::new();
    let cfg = config(dir.path(), "statsd_flush_tme = 2.0\n");
    // A live carbon, so that the drain after SIGTERM is quick.
    let carbon = CarbonCache::start();
    let mut bucky = Bucky::start(Some(&cfg), &ports.flags(carbon.line_port()));
    bucky.stop();
    let e = bucky.tool.stderr();
    let warnings: Vec<&str> = e
        .lines()
        .filter(|l| l.contains("unknown key 'statsd_flush_tme'"))
        .collect();
    assert_eq!(warnings.len(), 1, "{e}");
    assert!(
        warnings[0].contains("did you mean 'statsd_flush_time'"),
        "{e}"
    );
}

#[test]
fn statsd_over_tcp_survives_a_reconnecting_client() {
    // A plain TCP client, as simple StatsD libraries write: lines and a close.
    let carbon = CarbonCache::start();
    let dir = temp_dir("bucky-tcp");
    let ports = Ports::new();
    let cfg = config(
        dir.path(),
        &format!(
            "statsd_tcp_enabled = true\nstatsd_tcp_port = {}\n",
            ports.statsd_tcp
        ),
    );
    let mut bucky = Bucky::start(Some(&cfg), &ports.flags(carbon.line_port()));
    for _ in 0..3 {
        use std::io::Write;
        let mut s = TcpStream::connect(("127.0.0.1", ports.statsd_tcp)).unwrap();
        s.write_all(b"tcp.plain:4|c\ntcp.plain:1|c\n").unwrap();
    }
    bucky.stop();
    wait_for_sums(&carbon, &[("stats_counts.tcp.plain", 15.0)]);
}

/// The uid and gid of a process, from /proc.
fn ids(pid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u32 {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("Uid:"), field("Gid:"))
}

/// The nice value of a process (field 19 of /proc/PID/stat, after the parenthesised name).
fn niceness(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split_whitespace().nth(16).unwrap().parse().unwrap()
}

#[test]
fn stages_run_niced_and_drop_to_uid_and_gid_after_binding_a_privileged_port() {
    if !nix::unistd::Uid::effective().is_root() {
        // Binding below 1024 and switching users both need root; CI runs as root.
        eprintln!("skipped: not root");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    // A privileged UDP port that is free now.
    let low = (600..1000)
        .find(|p| UdpSocket::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    let carbon = CarbonCache::start();
    let mut ports = Ports::new();
    ports.statsd = low;
    let mut flags = ports.flags(carbon.line_port());
    flags.extend(["--uid", "nobody", "--nice", "5"].map(String::from));
    let dir = temp_dir("bucky-uid");
    // The gauge save file's directory must be the new user's to write.
    let cfg = config(dir.path(), "directory = \"/tmp\"\n");
    let mut bucky = Bucky::start(Some(&cfg), &flags);
    for stage in [
        "bucky-statsd",
        "bucky-collectd",
        "bucky-metricsd",
        "bucky-carbon",
    ] {
        let pid = stage_pid(bucky.pid(), stage).unwrap_or_else(|| panic!("{stage} runs"));
        assert_eq!(
            ids(pid),
            (nobody.uid.as_raw(), nobody.gid.as_raw()),
            "{stage} runs as nobody"
        );
        assert_eq!(niceness(pid), 5, "{stage} inherits bucky's nice");
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"uid.hits:3|c", ("127.0.0.1", low)).unwrap();
    bucky.stop();
    wait_for_sums(&carbon, &[("stats_counts.uid.hits", 3.0)]);
}
