//! bucky-carbon in front of a Graphite cluster: three real carbon-caches on loopback
//! (instances `a`, `b`, `c` of 127.0.0.1, as carbon's DESTINATIONS would name them).
//!
//! * every series is found on the node graphite's own ring (Debian's `carbon.routers`, run
//!   with /usr/bin/python3) names, and on no other;
//! * a cache that goes down and comes back gets all its points, while the others keep
//!   receiving theirs the whole time (memory queue, and spool);
//! * bucky-carbon killed (SIGKILL) with a cache's share spooled, restarted: the spool drains
//!   into the cache, a torn record at the spool's end notwithstanding.

// Test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bucky_tests::{
    bin, poll_until, temp_dir, unix_now, wait_until, CarbonCache, Points, Samples, Tool,
};

/// How long carbon may take to hold every expected point (2 slow CI cores, tests in parallel).
const POINTS_TIMEOUT: Duration = Duration::from_secs(120);
/// How long bucky-carbon may take to exit once its input has ended.
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long writing a test's input into bucky-carbon's stdin may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long three carbon-caches may take to create the whisper files of the big routing test.
const CREATE_TIMEOUT: Duration = Duration::from_secs(600);

const INSTANCES: [&str; 3] = ["a", "b", "c"];

/// Three carbon-caches, configured (not started) with `retentions`.
fn caches(retentions: &str) -> Vec<CarbonCache> {
    INSTANCES
        .iter()
        .map(|_| CarbonCache::with_retentions(retentions))
        .collect()
}

/// `--destination 127.0.0.1:PORT:INSTANCE` for each cache (line or pickle port).
fn destination_args(caches: &[CarbonCache], pickle: bool) -> Vec<String> {
    let mut args = Vec::new();
    for (c, inst) in caches.iter().zip(INSTANCES) {
        let port = if pickle {
            c.pickle_port()
        } else {
            c.line_port()
        };
        args.push("--destination".to_string());
        args.push(format!("127.0.0.1:{port}:{inst}"));
    }
    args
}

/// Starts bucky-carbon for the cluster, without self-metrics, retrying quickly.
fn bucky_carbon(caches: &[CarbonCache], pickle: bool, extra: &[&str]) -> Tool {
    let mut args = destination_args(caches, pickle);
    if pickle {
        args.push("--pickle".into());
    }
    for a in [
        "--self-metrics-interval",
        "0",
        "--reconnect-delay",
        "0.1",
        "--backoff-max",
        "0.5",
    ] {
        args.push(a.into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Tool::start("bucky-carbon", args)
}

/// What graphite's own router (carbon.routers.ConsistentHashingRouter over
/// carbon.hashing.ConsistentHashRing, Debian's graphite-carbon) does with DESTINATIONS
/// `127.0.0.1:PORT:a`, `:b`, `:c`: per name (stdin), the instance indexes it yields.
const ROUTER_PY: &str = r#"
import sys
from carbon.routers import ConsistentHashingRouter
class Settings(object):
    ROUTER_HASH_TYPE = 'carbon_ch'
    REPLICATION_FACTOR = int(sys.argv[1])
    DIVERSE_REPLICAS = sys.argv[2] == 'true'
router = ConsistentHashingRouter(Settings())
for i, inst in enumerate(sys.argv[3:]):
    router.addDestination(('127.0.0.1', 2003 + i, inst))
index = dict((inst, i) for i, inst in enumerate(sys.argv[3:]))
out = []
for name in sys.stdin.read().split('\n'):
    if name:
        out.append(','.join(str(index[d[2]]) for d in router.getDestinations(name)))
sys.stdout.write('\n'.join(out) + '\n')
"#;

/// The cache indexes graphite's router names for each of `names`.
fn graphite_routes(names: &[String], replication: usize, diverse: bool) -> Vec<Vec<usize>> {
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(ROUTER_PY)
        .arg(replication.to_string())
        .arg(diverse.to_string())
        .args(INSTANCES)
        .env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (scripts/test installs graphite-carbon)");
    let mut stdin = child.stdin.take().unwrap();
    let input = names.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "graphite's router failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let routes: Vec<Vec<usize>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(|i| i.parse().unwrap()).collect())
        .collect();
    assert_eq!(routes.len(), names.len());
    routes
}

/// The expected points of `samples`, split by the cache each series belongs to.
fn points_by_node(samples: &Samples, routes: &HashMap<String, Vec<usize>>) -> Vec<Points> {
    let mut by_node: Vec<Points> = vec![Points::new(); INSTANCES.len()];
    for (name, points) in samples.expected() {
        for &n in &routes[&name] {
            by_node[n].insert(name.clone(), points.clone());
        }
    }
    by_node
}

fn routes_of(samples: &Samples) -> HashMap<String, Vec<usize>> {
    let routes = graphite_routes(&samples.names, 1, true);
    samples.names.iter().cloned().zip(routes).collect()
}

/// Polls until each cache holds exactly the series `want[i]`; panics with a summary after
/// `timeout`.
#[track_caller]
fn wait_for_series(caches: &[CarbonCache], want: &[BTreeSet<String>], timeout: Duration) {
    let mut have: Vec<BTreeSet<String>> = Vec::new();
    let done = poll_until(timeout, || {
        have = caches
            .iter()
            .map(|c| c.metric_names().into_iter().collect())
            .collect();
        have.iter().zip(want).all(|(h, w)| w.is_subset(h))
    });
    for (i, (h, w)) in have.iter().zip(want).enumerate() {
        let missing: Vec<&String> = w.difference(h).take(5).collect();
        let extra: Vec<&String> = h.difference(w).take(5).collect();
        assert!(
            done && missing.is_empty() && extra.is_empty(),
            "cache {}: {} series expected, {} present; missing e.g. {missing:?}, on the wrong \
             node e.g. {extra:?}",
            INSTANCES[i],
            w.len(),
            h.len()
        );
    }
}

/// `series` series, one point each, sent to three caches: every series must be on the
/// node graphite's ring names and nowhere else (checked by whisper file, with a small
/// `60s:30m` retention so files stay small). The series are `test.<prefix>.s<i>`, all in
/// one folder: a folder per series (`….s<i>.value`) makes creating and deleting 100k files
/// several times slower.
fn routing_matches_graphite(prefix: &str, series: usize, replication: usize) {
    let mut cluster = caches("60s:30m");
    for c in cluster.iter_mut() {
        c.start_again();
    }
    let now = unix_now();
    let ts = now - now % 60 - 60;
    let names: Vec<String> = (0..series).map(|i| format!("test.{prefix}.s{i}")).collect();
    let input: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n} {i} {ts}\n"))
        .collect();
    let routes = graphite_routes(&names, replication, false);
    let mut want: Vec<BTreeSet<String>> = vec![BTreeSet::new(); INSTANCES.len()];
    for (name, r) in names.iter().zip(&routes) {
        assert_eq!(r.len(), replication, "{name}: {r:?}");
        for &n in r {
            want[n].insert(name.clone());
        }
    }
    let rf = replication.to_string();
    let mut bc = bucky_carbon(
        &cluster,
        false,
        &["--replication-factor", &rf, "--diverse-replicas=false"],
    );
    let started = Instant::now();
    let mut feeder = bc.feeder();
    feeder.send(input);
    feeder.close(WRITE_TIMEOUT);
    bc.wait_success(EXIT_TIMEOUT);
    let sent = started.elapsed();
    wait_for_series(&cluster, &want, CREATE_TIMEOUT);
    eprintln!(
        "[cluster] {series} series x{replication}: sent in {sent:.1?}, all whisper files \
         created after {:.1?} (per cache: {:?})",
        started.elapsed(),
        want.iter().map(BTreeSet::len).collect::<Vec<_>>()
    );
}

/// 100k series, as the issue asks: each on the one node graphite names. Most of the time is
/// carbon creating 100k whisper files (about 33k per cache).
#[test]
fn routing_100k_series_matches_graphites_ring() {
    routing_matches_graphite("ring100k", 100_000, 1);
}

/// Replication 2 without diverse replicas (the three caches share one server): each series
/// on exactly the two nodes graphite names.
#[test]
fn replication_2_matches_graphites_ring() {
    routing_matches_graphite("ringrf2", 5_000, 2);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outage {
    /// SIGTERM: connections to it are refused until it starts again.
    Stop,
    /// SIGSTOP: it accepts nothing and reads nothing, its socket buffers fill and writes to
    /// it block, then SIGCONT.
    Hang,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    /// The down cache's share waits in memory.
    Memory,
    /// It waits in a spool (and bucky-carbon's memory stays small).
    Spool,
}

/// Three caches up; 90 series × 120 timestamps fed in parts. After part 1, cache `c` goes
/// away (`outage`); part 2 is fed while it is away, and `a` and `b` must get their share of
/// it meanwhile (the others never stall); then `c` comes back and part 3 follows. Every
/// cache ends with every point of its series.
fn one_cache_down_then_back(pickle: bool, outage: Outage, keep: Keep, prefix: &str) {
    let mut cluster = caches("1s:1d");
    for c in cluster.iter_mut() {
        c.start_again();
    }
    let samples = Samples::generate(prefix, 90, 120);
    let routes = routes_of(&samples);
    let n = samples.len();
    let (p1, p2) = (n / 4, n * 3 / 4);
    let spool = temp_dir("spool");
    let spool_arg = spool.path().to_str().unwrap().to_string();
    let mut extra: Vec<&str> = Vec::new();
    if keep == Keep::Spool {
        extra.extend(["--spool", &spool_arg, "--spool-replay-rate", "0"]);
    }
    let mut bc = bucky_carbon(&cluster, pickle, &extra);
    let mut feeder = bc.feeder();

    // Part 1: everyone up.
    feeder.send(samples.bytes_of(0..p1));
    let part1 = points_by_node_of(&samples, &routes, 0..p1);
    for (c, want) in cluster.iter().zip(&part1) {
        c.wait_for_points(want, POINTS_TIMEOUT);
    }
    // Part 2: c is away; a and b keep receiving.
    match outage {
        Outage::Stop => cluster[2].stop(),
        Outage::Hang => cluster[2].pause(),
    }
    feeder.send(samples.bytes_of(p1..p2));
    feeder.wait_written(WRITE_TIMEOUT);
    let part2 = points_by_node_of(&samples, &routes, p1..p2);
    assert!(!part2[2].is_empty());
    for (c, want) in cluster.iter().zip(&part2).take(2) {
        c.wait_for_points(want, POINTS_TIMEOUT);
    }
    assert!(
        bc.is_running(),
        "bucky-carbon exited while a cache was down; stderr:\n{}",
        bc.stderr_tail()
    );
    if keep == Keep::Spool && outage == Outage::Stop {
        // c's share of part 2 is on disk, not in memory.
        let c_part2: usize = part2[2].values().map(Vec::len).sum();
        wait_until(WRITE_TIMEOUT, "c's share to reach the spool", || {
            spool_status(spool.path())
                .get("127.0.0.1@c")
                .is_some_and(|s| s.samples >= c_part2 as u64)
        });
    }
    // Part 3: c is back.
    match outage {
        Outage::Stop => cluster[2].start_again(),
        Outage::Hang => cluster[2].resume(),
    }
    feeder.send(samples.bytes_of(p2..n));
    feeder.close(WRITE_TIMEOUT);
    bc.wait_success(EXIT_TIMEOUT);
    let all = points_by_node(&samples, &routes);
    for (c, want) in cluster.iter().zip(&all) {
        c.wait_for_points(want, POINTS_TIMEOUT);
        let have: BTreeSet<String> = c.metric_names().into_iter().collect();
        let want: BTreeSet<String> = want.keys().cloned().collect();
        assert_eq!(have, want, "series on the wrong cache");
    }
    if keep == Keep::Spool {
        let status = spool_status(spool.path());
        assert!(
            status.values().all(|s| s.samples == 0 && s.resend == 0),
            "the spool did not drain: {status:?}"
        );
        let stderr = bc.stderr();
        assert!(
            stderr.contains("replayed="),
            "no spool counters at exit:\n{stderr}"
        );
    }
}

fn points_by_node_of(
    samples: &Samples,
    routes: &HashMap<String, Vec<usize>>,
    range: std::ops::Range<usize>,
) -> Vec<Points> {
    let mut by_node: Vec<Points> = vec![Points::new(); INSTANCES.len()];
    for (name, points) in samples.expected_of(range) {
        for &n in &routes[&name] {
            by_node[n].insert(name.clone(), points.clone());
        }
    }
    by_node
}

#[test]
fn one_cache_down_then_back_memory_plaintext() {
    one_cache_down_then_back(false, Outage::Stop, Keep::Memory, "downmem");
}

#[test]
fn one_cache_down_then_back_spool_pickle() {
    one_cache_down_then_back(true, Outage::Stop, Keep::Spool, "downspool");
}

#[test]
fn one_cache_hangs_then_resumes_memory_plaintext() {
    one_cache_down_then_back(false, Outage::Hang, Keep::Memory, "hangmem");
}

/// One destination's line of `bucky-carbon --spool-status`.
#[derive(Debug, Default, Clone, Copy)]
struct SpoolLine {
    samples: u64,
    resend: u64,
    corrupt: u64,
}

/// `bucky-carbon --spool DIR --spool-status`, by destination folder.
fn spool_status(dir: &Path) -> HashMap<String, SpoolLine> {
    let out = Command::new(bin("bucky-carbon"))
        .arg("--spool")
        .arg(dir)
        .arg("--spool-status")
        .output()
        .expect("run bucky-carbon --spool-status");
    assert!(
        out.status.success(),
        "--spool-status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut map = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split(' ');
        let name = f.next().unwrap().to_string();
        let mut s = SpoolLine::default();
        for kv in f {
            let (k, v) = kv.split_once('=').unwrap();
            let v: u64 = v.parse().unwrap();
            match k {
                "samples" => s.samples = v,
                "resend_samples" => s.resend = v,
                "corrupt" => s.corrupt = v,
                _ => {}
            }
        }
        map.insert(name, s);
    }
    map
}

/// Cache c is down from the start; bucky-carbon (with a spool) gets the whole input while
/// its stdin stays open, a and b get their share, c's share reaches the spool; then
/// bucky-carbon is killed (SIGKILL) and a torn record is appended to the spool, as a kill
/// in the middle of a write leaves it. c starts; bucky-carbon starts again on the same
/// spool with no input: it replays c's share and exits, and c holds every point.
#[test]
fn killed_with_data_spooled_then_restarted_drains_the_spool() {
    let mut cluster = caches("1s:1d");
    for c in cluster.iter_mut().take(2) {
        c.start_again();
    }
    let samples = Samples::generate("killspool", 90, 60);
    let routes = routes_of(&samples);
    let by_node = points_by_node(&samples, &routes);
    let c_samples: usize = by_node[2].values().map(Vec::len).sum();
    assert!(c_samples > 0);
    let spool = temp_dir("spool");
    let spool_arg = spool.path().to_str().unwrap().to_string();
    let extra = [
        "--spool",
        spool_arg.as_str(),
        "--spool-replay-rate",
        "20000",
    ];

    let mut bc = bucky_carbon(&cluster, false, &extra);
    let mut feeder = bc.feeder();
    feeder.send(samples.bytes());
    feeder.wait_written(WRITE_TIMEOUT);
    for (c, want) in cluster.iter().zip(&by_node).take(2) {
        c.wait_for_points(want, POINTS_TIMEOUT);
    }
    wait_until(WRITE_TIMEOUT, "c's share to reach the spool", || {
        spool_status(spool.path())
            .get("127.0.0.1@c")
            .is_some_and(|s| s.samples == c_samples as u64)
    });
    bc.guard().kill();
    drop(feeder);

    // A kill -9 in the middle of a record's write leaves a torn record at the end.
    let cdir = spool.path().join("127.0.0.1@c");
    let mut segments: Vec<_> = std::fs::read_dir(&cdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "spool"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a spool segment of c");
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    f.write_all(&[0x40, 0, 0, 0, 7, 0, 0, 0, 0, 0]).unwrap();
    drop(f);
    assert_eq!(spool_status(spool.path())["127.0.0.1@c"].corrupt, 1);

    cluster[2].start_again();
    let mut bc = bucky_carbon(&cluster, false, &extra);
    bc.close_stdin();
    bc.wait_success(EXIT_TIMEOUT);
    cluster[2].wait_for_points(&by_node[2], POINTS_TIMEOUT);
    let have: BTreeSet<String> = cluster[2].metric_names().into_iter().collect();
    let want: BTreeSet<String> = by_node[2].keys().cloned().collect();
    assert_eq!(have, want);
    let status = spool_status(spool.path());
    assert_eq!(status["127.0.0.1@c"].samples, 0, "{status:?}");
    let stderr = bc.stderr();
    assert!(
        stderr.contains("torn record") && stderr.contains(&format!("replayed={c_samples}")),
        "stderr:\n{stderr}"
    );
}
