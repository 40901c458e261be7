//! A real carbon-cache (Debian's `graphite-carbon`) under the test's control, and reading
//! its whisper files back (Debian's `python3-whisper`).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{
    file_tail, finish_temp, free_port, pickle, poll_until, port_accepts, temp_dir, unix_now,
    ChildGuard,
};

/// Points by series name: `(timestamp, value)` pairs.
pub type Points = HashMap<String, Vec<(i64, f64)>>;

/// How long carbon-cache may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long carbon-cache may take to write its cache out and exit on SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The Python that has Debian's `whisper` module.
const PYTHON: &str = "/usr/bin/python3";

/// Reads whisper files: argv = whisper dir, from, until; stdin = metric names, one a line;
/// stdout = `name\ttimestamp\trepr(value)` per point present, `!\tname\terror` when a file
/// cannot be read (e.g. being created).
const FETCH_PY: &str = r#"
import os, sys, time, whisper
root, frm, until = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# whisper cuts a fetch at "now": moved to `until`, points stamped ahead of the clock show.
now = max(until, int(time.time()))
out = []
for name in sys.stdin.read().split():
    path = os.path.join(root, *name.split('.')) + '.wsp'
    if not os.path.exists(path):
        continue
    try:
        (start, end, step), values = whisper.fetch(path, frm, until, now=now)
    except Exception as e:
        out.append('!\t%s\t%r\n' % (name, e))
        continue
    t = start
    for v in values:
        if v is not None:
            out.append('%s\t%d\t%r\n' % (name, t, v))
        t += step
sys.stdout.write(''.join(out))
"#;

/// A carbon-cache instance in its own temporary directory, on free loopback ports, with a
/// 1-second whisper retention (`1s:1d`), `xFilesFactor = 0`, no create or update limits,
/// tags off and no self-metrics. It runs in the foreground under a [`ChildGuard`].
#[derive(Debug)]
pub struct CarbonCache {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    line_port: u16,
    pickle_port: u16,
    query_port: u16,
    child: Option<ChildGuard>,
    starts: u32,
    retentions: String,
}

impl CarbonCache {
    /// Configures an instance (directory, config files, ports) without starting it: its
    /// ports are reserved, nothing listens on them yet. Start it with
    /// [`start_again`](Self::start_again).
    pub fn new() -> CarbonCache {
        CarbonCache::with_retentions("1s:1d")
    }

    /// Like [`new`](Self::new) with another whisper retention (storage-schemas.conf
    /// `retentions`), e.g. `60s:30m` for tests that create many series: a `1s:1d` file is
    /// 1 MB.
    pub fn with_retentions(retentions: &str) -> CarbonCache {
        let dir = temp_dir("carbon");
        let root = dir.path().to_path_buf();
        let carbon = CarbonCache {
            dir: Some(dir),
            root,
            line_port: free_port(),
            pickle_port: free_port(),
            query_port: free_port(),
            child: None,
            starts: 0,
            retentions: retentions.to_string(),
        };
        carbon.write_config();
        carbon
    }

    /// Configures and starts an instance; returns once it accepts connections.
    pub fn start() -> CarbonCache {
        let mut carbon = CarbonCache::new();
        carbon.start_again();
        carbon
    }

    fn write_config(&self) {
        let r = self.root.display();
        let conf = format!(
            "[cache]\n\
             STORAGE_DIR = {r}/storage\n\
             LOCAL_DATA_DIR = {r}/storage/whisper\n\
             WHITELISTS_DIR = {r}/storage/lists\n\
             LOG_DIR = {r}/log\n\
             PID_DIR = {r}\n\
             USER =\n\
             ENABLE_TAGS = False\n\
             MAX_CACHE_SIZE = inf\n\
             MAX_UPDATES_PER_SECOND = inf\n\
             MAX_UPDATES_PER_SECOND_ON_SHUTDOWN = inf\n\
             MAX_CREATES_PER_MINUTE = inf\n\
             LINE_RECEIVER_INTERFACE = 127.0.0.1\n\
             LINE_RECEIVER_PORT = {}\n\
             PICKLE_RECEIVER_INTERFACE = 127.0.0.1\n\
             PICKLE_RECEIVER_PORT = {}\n\
             CACHE_QUERY_INTERFACE = 127.0.0.1\n\
             CACHE_QUERY_PORT = {}\n\
             ENABLE_UDP_LISTENER = False\n\
             ENABLE_MANHOLE = False\n\
             ENABLE_AMQP = False\n\
             CARBON_METRIC_INTERVAL = 0\n\
             WHISPER_AUTOFLUSH = True\n\
             WHISPER_SPARSE_CREATE = True\n\
             WHISPER_FALLOCATE_CREATE = False\n\
             LOG_UPDATES = False\n\
             LOG_CREATES = False\n\
             LOG_CACHE_HITS = False\n\
             LOG_CACHE_QUEUE_SORTS = False\n\
             LOG_LISTENER_CONNECTIONS = True\n",
            self.line_port, self.pickle_port, self.query_port
        );
        std::fs::write(self.root.join("carbon.conf"), conf).expect("write carbon.conf");
        std::fs::write(
            self.root.join("storage-schemas.conf"),
            format!("[all]\npattern = .*\nretentions = {}\n", self.retentions),
        )
        .expect("write storage-schemas.conf");
        std::fs::write(
            self.root.join("storage-aggregation.conf"),
            "[all]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n",
        )
        .expect("write storage-aggregation.conf");
        for sub in ["storage/whisper", "storage/lists", "log"] {
            std::fs::create_dir_all(self.root.join(sub)).expect("create carbon dirs");
        }
    }

    /// Starts carbon-cache (again) with the same directory and ports; returns once both the
    /// line and the pickle port accept connections. Panics with carbon's output tail if it
    /// exits or is not ready within [`START_TIMEOUT`].
    pub fn start_again(&mut self) {
        assert!(!self.is_running(), "carbon-cache is already running");
        // A pidfile left by a killed instance would make carbon refuse to start.
        let _ = std::fs::remove_file(self.pidfile());
        self.starts += 1;
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.output_path())
            .expect("open carbon output file");
        let mut out2 = out.try_clone().expect("clone carbon output file");
        let _ = writeln!(out2, "==== harness: start #{} ====", self.starts);
        let mut cmd = Command::new(carbon_cache_program());
        cmd.arg(format!(
            "--config={}",
            self.root.join("carbon.conf").display()
        ))
        .arg(format!("--pidfile={}", self.pidfile().display()))
        .arg("--nodaemon")
        .arg("start")
        .env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(out2)
        .current_dir(&self.root);
        self.child = Some(ChildGuard::spawn("carbon-cache", &mut cmd));

        let (line, pickle) = (self.line_port, self.pickle_port);
        let mut exited = None;
        let ready = poll_until(START_TIMEOUT, || {
            if let Some(status) = self.child.as_mut().and_then(ChildGuard::try_wait) {
                exited = Some(status);
                return true;
            }
            port_accepts(line) && port_accepts(pickle)
        });
        if let Some(status) = exited {
            panic!(
                "carbon-cache exited with {status} while starting; its output:\n{}",
                self.output_tail()
            );
        }
        if !ready {
            panic!(
                "carbon-cache did not accept connections on ports {line} and {pickle} within \
                 {START_TIMEOUT:?}; its output:\n{}",
                self.output_tail()
            );
        }
    }

    /// Whether the carbon-cache process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Stops carbon-cache gracefully: SIGTERM (it writes its cache out), then waits for it to
    /// exit, bounded by [`STOP_TIMEOUT`] (then it is killed and this panics).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        child.terminate();
        child.signal(Signal::SIGCONT);
        if child.wait_timeout(STOP_TIMEOUT).is_none() {
            child.kill();
            panic!(
                "carbon-cache did not exit within {STOP_TIMEOUT:?} of SIGTERM; its output:\n{}",
                self.output_tail()
            );
        }
    }

    /// Freezes carbon-cache (SIGSTOP): it stops reading and writing, its connections stay
    /// open, and senders fill the socket buffers. [`resume`](Self::resume) undoes it;
    /// [`kill`](Self::kill) and [`stop`](Self::stop) work on a frozen instance too.
    pub fn pause(&mut self) {
        if let Some(child) = self.child.as_mut() {
            child.signal(Signal::SIGSTOP);
        }
    }

    /// Lets a frozen carbon-cache run again (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(child) = self.child.as_mut() {
            child.signal(Signal::SIGCONT);
        }
    }

    /// Kills carbon-cache (SIGKILL): what it held in its cache is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// The plaintext (line) receiver port.
    pub fn line_port(&self) -> u16 {
        self.line_port
    }

    /// The pickle receiver port.
    pub fn pickle_port(&self) -> u16 {
        self.pickle_port
    }

    /// The cache query port.
    pub fn cache_query_port(&self) -> u16 {
        self.query_port
    }

    /// The instance's directory (carbon.conf, logs, storage).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The whisper root: `STORAGE_DIR/whisper`.
    pub fn whisper_dir(&self) -> PathBuf {
        self.root.join("storage").join("whisper")
    }

    /// The whisper file of metric `name` (`a.b.c` is `whisper/a/b/c.wsp`).
    pub fn wsp_path(&self, name: &str) -> PathBuf {
        let mut path = self.whisper_dir();
        for part in name.split('.') {
            path.push(part);
        }
        path.set_extension("wsp");
        path
    }

    /// The names of all metrics that have a whisper file, sorted.
    pub fn metric_names(&self) -> Vec<String> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, &format!("{prefix}{name}."), out);
                } else if let Some(stem) = name.strip_suffix(".wsp") {
                    out.push(format!("{prefix}{stem}"));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.whisper_dir(), "", &mut out);
        out.sort();
        out
    }

    fn pidfile(&self) -> PathBuf {
        self.root.join("carbon.pid")
    }

    fn output_path(&self) -> PathBuf {
        self.root.join("carbon.out")
    }

    /// The tail of carbon's output (its console log) and of its log files.
    pub fn output_tail(&self) -> String {
        let mut text = format!(
            "--- {}:\n{}",
            self.output_path().display(),
            file_tail(&self.output_path(), 40)
        );
        if let Ok(entries) = std::fs::read_dir(self.root.join("log")) {
            for entry in entries.flatten() {
                let _ = write!(
                    text,
                    "\n--- {}:\n{}",
                    entry.path().display(),
                    file_tail(&entry.path(), 20)
                );
            }
        }
        text
    }

    /// Sends plaintext lines (`name value timestamp\n`...) to the line port on a new
    /// connection.
    pub fn send_plaintext(&self, text: &str) {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.line_port))
            .expect("connect to carbon's line port");
        s.write_all(text.as_bytes())
            .expect("write to carbon's line port");
    }

    /// Sends points to the pickle port on a new connection, 500 per frame.
    pub fn send_pickle(&self, points: &[(&str, i64, f64)]) {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.pickle_port))
            .expect("connect to carbon's pickle port");
        for chunk in points.chunks(500) {
            s.write_all(&pickle::frame(chunk))
                .expect("write to carbon's pickle port");
        }
    }

    /// Every point of metrics `names` stored in whisper over the last two hours and the next
    /// two minutes: bucky-statsd stamps its final flush with the end of the interval that was
    /// running, which can lie ahead of the clock. Missing series are absent from the map;
    /// empty slots are skipped.
    pub fn fetch(&self, names: &[&str]) -> Points {
        let now = unix_now();
        self.fetch_range(names, now - 7200, now + 120)
    }

    /// Every point of metrics `names` stored in whisper with `from < timestamp <= until`
    /// (whisper's own interval rule), read with one Python process. Values are exact
    /// (printed with `repr`).
    pub fn fetch_range(&self, names: &[&str], from: i64, until: i64) -> Points {
        self.fetch_raw(names, from, until).0
    }

    /// [`fetch_range`](Self::fetch_range) plus the read errors (`name: error`) of files that
    /// exist but could not be read (e.g. half-created).
    fn fetch_raw(&self, names: &[&str], from: i64, until: i64) -> (Points, Vec<String>) {
        let mut child = Command::new(PYTHON)
            .arg("-c")
            .arg(FETCH_PY)
            .arg(self.whisper_dir())
            .arg(from.to_string())
            .arg(until.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {PYTHON}: {e} (scripts/test installs python3-whisper)")
            });
        let mut stdin = child.stdin.take().expect("python stdin");
        let input = names.join("\n");
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().expect("run the whisper reader");
        let _ = writer.join();
        assert!(
            out.status.success(),
            "the whisper reader failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut points = Points::new();
        let mut errors = Vec::new();
        for line in text.lines() {
            let mut f = line.splitn(3, '\t');
            let (Some(name), Some(ts), Some(v)) = (f.next(), f.next(), f.next()) else {
                panic!("bad whisper reader line: {line:?}");
            };
            if name == "!" {
                errors.push(format!("{ts}: {v}"));
                continue;
            }
            let ts: i64 = ts
                .parse()
                .unwrap_or_else(|_| panic!("bad timestamp in {line:?}"));
            let v: f64 = v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            points.entry(name.to_string()).or_default().push((ts, v));
        }
        (points, errors)
    }

    /// Polls whisper until every expected point is present with exactly the expected value
    /// (bit for bit), then returns. Panics after `timeout` with a summary of what is missing
    /// or wrong. Points that are present but not expected are ignored.
    #[track_caller]
    pub fn wait_for_points(&self, expected: &Points, timeout: Duration) {
        let names: Vec<&str> = expected.keys().map(String::as_str).collect();
        let (from, until) = expected
            .values()
            .flatten()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &(ts, _)| {
                (lo.min(ts), hi.max(ts))
            });
        if names.is_empty() || from > until {
            return;
        }
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        let report = loop {
            let (got, errors) = self.fetch_raw(&names, from - 1, until.min(unix_now()));
            let Some(mut report) = compare(expected, &got) else {
                return;
            };
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                if !errors.is_empty() {
                    let _ = write!(report, "\nunreadable files: {}", errors.join("; "));
                }
                break report;
            }
            std::thread::sleep(pause.min(timeout - elapsed));
            pause = (pause * 2).min(Duration::from_secs(1));
        };
        panic!(
            "carbon did not hold every expected point within {timeout:?}: {report}\n\
             carbon output tail:\n{}",
            self.output_tail()
        );
    }
}

impl Default for CarbonCache {
    fn default() -> Self {
        CarbonCache::new()
    }
}

impl Drop for CarbonCache {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
        if let Some(dir) = self.dir.take() {
            finish_temp(dir);
        }
    }
}

/// `None` if every expected point is in `got` with the same bits, else a summary of the
/// differences.
pub fn compare(expected: &Points, got: &Points) -> Option<String> {
    let mut total = 0usize;
    let mut missing = 0usize;
    let mut wrong = 0usize;
    let mut series_absent = BTreeSet::new();
    let mut examples = Vec::new();
    for (name, want) in expected {
        total += want.len();
        let Some(have) = got.get(name) else {
            missing += want.len();
            series_absent.insert(name.as_str());
            continue;
        };
        let have: HashMap<i64, f64> = have.iter().copied().collect();
        for &(ts, v) in want {
            match have.get(&ts) {
                None => {
                    missing += 1;
                    if examples.len() < 8 {
                        examples.push(format!("{name}@{ts}: missing (want {v:?})"));
                    }
                }
                Some(h) if h.to_bits() != v.to_bits() => {
                    wrong += 1;
                    if examples.len() < 8 {
                        examples.push(format!("{name}@{ts}: want {v:?}, got {h:?}"));
                    }
                }
                Some(_) => {}
            }
        }
    }
    if missing == 0 && wrong == 0 {
        return None;
    }
    let mut text = format!(
        "{} of {total} points present and exact: {missing} missing, {wrong} with a wrong value; \
         {} of {} series have no file",
        total - missing - wrong,
        series_absent.len(),
        expected.len()
    );
    if !series_absent.is_empty() {
        let few: Vec<&str> = series_absent.iter().take(5).copied().collect();
        let _ = write!(text, " (e.g. {})", few.join(", "));
    }
    if !examples.is_empty() {
        let _ = write!(text, "; examples: {}", examples.join("; "));
    }
    Some(text)
}

/// The carbon-cache program: on PATH, else Debian's /usr/bin/carbon-cache.
fn carbon_cache_program() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("carbon-cache");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let debian = PathBuf::from("/usr/bin/carbon-cache");
    assert!(
        debian.is_file(),
        "carbon-cache not found: install graphite-carbon (scripts/test does)"
    );
    debian
}
