//! The test harness of bucky: real peers, real binaries, bounded waits.
//!
//! Every test of the pipeline runs the workspace's own binaries (built beforehand by
//! `cargo build --workspace --bins`, which `scripts/test` does) against real peers such as
//! Debian's carbon-cache. The rules this harness enforces:
//!
//! * only loopback addresses, and free ports picked per test ([`free_port`]);
//! * waits poll for a condition and are bounded in time ([`wait_until`]); no fixed sleeps;
//! * every child process is killed and reaped when its guard drops, also on panic
//!   ([`ChildGuard`], [`Tool`], [`CarbonCache`]);
//! * each test has its own temporary directories, so tests run in parallel safely.
//!
//! Set `BUCKY_TEST_KEEP=1` to keep the temporary directories (carbon's logs and whisper files,
//! the tools' stdout and stderr) for a post-mortem; their paths are printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod carbon;
pub mod collectd;
pub mod net;
pub mod pickle;
pub mod process;
pub mod samples;

pub use carbon::{CarbonCache, Points};
pub use net::{free_port, free_udp_port, poll_until, port_accepts, tcp_in_flight, wait_until};
pub use process::{bin, proc_read_bytes, ChildGuard, Feeder, Tool};
pub use samples::{sample_value, Samples};

use std::path::Path;

/// A temporary directory for one test object, kept when `BUCKY_TEST_KEEP` is set.
pub fn temp_dir(label: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("bucky-test-{label}-"))
        .tempdir()
        .expect("create a temporary directory");
    if keep_temp() {
        eprintln!("[harness] {label}: {}", dir.path().display());
    }
    dir
}

/// Whether temporary directories are kept (`BUCKY_TEST_KEEP` set and not `0`).
pub fn keep_temp() -> bool {
    std::env::var_os("BUCKY_TEST_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Removes a temporary directory unless `BUCKY_TEST_KEEP` is set.
pub(crate) fn finish_temp(dir: tempfile::TempDir) {
    if keep_temp() {
        let _ = dir.keep();
    }
}

/// The last `max_lines` lines of a text file, or a note saying it could not be read.
pub fn file_tail(path: &Path, max_lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), max_lines),
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// The last `max_lines` lines of `text`.
pub fn tail(text: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(max_lines);
    lines[from..].join("\n")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Writes `bytes` to file `name` in `dir` and returns its path (for tools that read files).
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write file");
    path
}
