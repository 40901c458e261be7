//! Child processes that never outlive their test: [`ChildGuard`], the workspace's binaries
//! ([`bin`], [`Tool`]) and a writer thread for their stdin ([`Feeder`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{file_tail, finish_temp, poll_until, temp_dir};

/// The path of a workspace binary: `target/<profile>/<name>`, found next to the running test
/// executable (`target/<profile>/deps/<test>-<hash>`). `BUCKY_BIN_DIR` overrides the folder.
///
/// Panics if the binary does not exist: run `cargo build --workspace` first.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("BUCKY_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("current_exe");
            let mut dir = exe
                .parent()
                .expect("test executable has a folder")
                .to_path_buf();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --workspace` first (scripts/test does)",
        path.display()
    );
    path
}

/// A child process that is killed (SIGKILL) and reaped when the guard drops, also when the
/// test panics.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd`; panics (naming `name`) if it cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
            status: None,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying child, e.g. to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the process has exited (it is reaped then), without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends `signal` if the process has not been reaped yet (so its pid cannot have been
    /// reused).
    pub fn signal(&mut self, signal: Signal) {
        if self.try_wait().is_none() {
            // ESRCH cannot happen before we reap; any error here is not the test's concern.
            let _ = kill(Pid::from_raw(self.child.id() as i32), signal);
        }
    }

    /// Sends SIGTERM (a graceful stop). Use [`wait_timeout`](Self::wait_timeout) after it.
    pub fn terminate(&mut self) {
        self.signal(Signal::SIGTERM);
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        poll_until(timeout, || {
            status = self.try_wait();
            status.is_some()
        });
        status
    }

    /// Kills the process (SIGKILL) and reaps it; returns its status.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for a killed child");
        self.status = Some(status);
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How many bytes process `pid` has read with read(2) and friends so far (`rchar` of
/// `/proc/PID/io`: pipes and sockets included). Linux only; `None` if unavailable.
pub fn proc_read_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A running workspace binary (or any program) with its stdin piped to the test and its
/// stdout and stderr written to files in its own temporary directory (files never fill up
/// and block the child, and they are kept for post-mortems with `BUCKY_TEST_KEEP=1`).
#[derive(Debug)]
pub struct Tool {
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    dir: Option<tempfile::TempDir>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Tool {
    /// Starts workspace binary `name` (see [`bin`]) with `args`, stdin piped.
    pub fn start<I, S>(name: &str, args: I) -> Tool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Tool::start_program(name, &bin(name), args, Stdio::piped())
    }

    /// Starts `program` with `args` and the given stdin; `label` names it in messages and
    /// its files.
    pub fn start_program<I, S>(label: &str, program: &Path, args: I, stdin: Stdio) -> Tool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let dir = temp_dir(label);
        let stdout_path = dir.path().join("stdout");
        let stderr_path = dir.path().join("stderr");
        let stdout = File::create(&stdout_path).expect("create stdout file");
        let stderr = File::create(&stderr_path).expect("create stderr file");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .current_dir(dir.path());
        let mut guard = ChildGuard::spawn(label, &mut cmd);
        let stdin = guard.child_mut().stdin.take();
        Tool {
            guard,
            stdin,
            dir: Some(dir),
            stdout_path,
            stderr_path,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.guard.id()
    }

    /// The guard of the process (signals, waits).
    pub fn guard(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }

    /// The child's stdin. Panics if it was taken or closed.
    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.stdin.as_mut().expect("stdin is piped and still open")
    }

    /// Takes the child's stdin (e.g. for a [`Feeder`]).
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin is piped and still open")
    }

    /// Closes the child's stdin (EOF), if the test still holds it.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// A [`Feeder`] writing to the child's stdin from a thread.
    pub fn feeder(&mut self) -> Feeder {
        Feeder::new(self.take_stdin())
    }

    /// A [`Feeder::paced`] writing to the child's stdin.
    pub fn paced_feeder(&mut self, pause: Duration) -> Feeder {
        Feeder::paced(self.take_stdin(), pause)
    }

    /// Everything the child wrote to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout_path).unwrap_or_default()).into_owned()
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// The last lines of stderr, for panic messages.
    pub fn stderr_tail(&self) -> String {
        file_tail(&self.stderr_path, 30)
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// Sends SIGTERM.
    pub fn terminate(&mut self) {
        self.guard.terminate();
    }

    /// How many bytes the child has read so far (see [`proc_read_bytes`]).
    pub fn read_bytes(&self) -> Option<u64> {
        proc_read_bytes(self.pid())
    }

    /// Waits up to `timeout` for the child to exit; panics with its stderr tail if it does
    /// not (the guard then kills it).
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.guard.wait_timeout(timeout) {
            Some(status) => status,
            None => panic!(
                "{} did not exit within {timeout:?}; stderr tail:\n{}",
                self.guard.name(),
                self.stderr_tail()
            ),
        }
    }

    /// Waits up to `timeout` for the child to exit with status 0; panics with its stderr tail
    /// otherwise.
    #[track_caller]
    pub fn wait_success(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout);
        assert!(
            status.success(),
            "{} exited with {status}; stderr tail:\n{}",
            self.guard.name(),
            self.stderr_tail()
        );
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        self.stdin = None;
        self.guard.kill();
        if let Some(dir) = self.dir.take() {
            finish_temp(dir);
        }
    }
}

/// Writes chunks to a child's stdin from a thread, so that the test itself never blocks on
/// a full pipe: [`send`](Self::send) queues, [`wait_written`](Self::wait_written) waits
/// (bounded) until everything queued so far has been written, [`close`](Self::close) ends
/// the stream (EOF).
#[derive(Debug)]
pub struct Feeder {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    written: mpsc::Receiver<u64>,
    queued_bytes: u64,
    written_bytes: u64,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Feeder {
    /// A feeder writing to `out`, which it drops (closes) at [`close`](Self::close).
    pub fn new<W: Write + Send + 'static>(out: W) -> Feeder {
        Feeder::paced(out, Duration::ZERO)
    }

    /// A feeder that pauses `pause` after writing each chunk (to spread a stream over time).
    pub fn paced<W: Write + Send + 'static>(mut out: W, pause: Duration) -> Feeder {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let (written_tx, written) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            for chunk in rx {
                out.write_all(&chunk)?;
                out.flush()?;
                let _ = written_tx.send(chunk.len() as u64);
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
            Ok(())
        });
        Feeder {
            tx: Some(tx),
            written,
            queued_bytes: 0,
            written_bytes: 0,
            handle: Some(handle),
        }
    }

    /// Queues `bytes` for writing.
    pub fn send(&mut self, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        self.queued_bytes += bytes.len() as u64;
        if let Some(tx) = &self.tx {
            // If the writer thread has stopped (write error), close() reports it.
            let _ = tx.send(bytes);
        }
    }

    /// Bytes queued so far.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes
    }

    /// Waits up to `timeout` until everything queued so far has been written to the pipe.
    #[track_caller]
    pub fn wait_written(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.written_bytes < self.queued_bytes {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.written.recv_timeout(left) {
                Ok(n) => self.written_bytes += n,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "feeder: only {} of {} bytes written to the pipe after {timeout:?} \
                     (is the reader stuck?)",
                    self.written_bytes, self.queued_bytes
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let result = self.handle.take().map(|h| h.join());
                    panic!(
                        "feeder: the writer stopped after {} of {} bytes: {result:?}",
                        self.written_bytes, self.queued_bytes
                    )
                }
            }
        }
    }

    /// Waits (bounded) until everything queued has been written, then closes the pipe.
    #[track_caller]
    pub fn close(mut self, timeout: Duration) {
        self.wait_written(timeout);
        self.tx = None;
        if let Some(handle) = self.handle.take() {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("feeder: write failed: {e}"),
                Err(_) => panic!("feeder: the writer thread panicked"),
            }
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its current write returns; the thread is
        // not joined here, so a stuck write (the child is being killed) cannot hang the test.
        self.tx = None;
    }
}
