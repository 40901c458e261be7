//! Runs the pipeline's stages as processes joined by pipes and watches over them.
//!
//! Shutdown order is what makes it lossless: only the receivers are told to stop; they make
//! their final flush and exit, which closes the pipe; the processor and the writer then see
//! the end of their input, send everything on, and exit by themselves.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use bucky_proto::shutdown::Shutdown;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, Pid};

use crate::multicall::STAGE_VAR;
use crate::{Plan, Stage};

/// How long receivers get for their final flush before they are killed.
const RECEIVER_GRACE: Duration = Duration::from_secs(30);
/// How long the processor and writer get to pass on what they hold once their input ended,
/// before they are asked to stop (the writer then gets its own shutdown timeout).
const DRAIN_GRACE: Duration = Duration::from_secs(60);
/// How long after SIGTERM anything still running is killed.
const KILL_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Receiver,
    Downstream,
}

struct Running {
    name: &'static str,
    role: Role,
    child: Child,
    status: Option<ExitStatus>,
    last_message: Arc<Mutex<Option<String>>>,
    terminated_at: Option<Instant>,
    killed: bool,
}

impl Running {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&mut self, sig: Signal) {
        if self.status.is_none() {
            let _ = kill(self.pid(), sig);
            if sig == Signal::SIGKILL {
                self.killed = true;
            } else {
                self.terminated_at.get_or_insert_with(Instant::now);
            }
        }
    }

    fn last_message(&self) -> Option<String> {
        self.last_message.lock().ok().and_then(|m| m.clone())
    }
}

/// Where a stage's program is: beside this executable when installed or built together,
/// otherwise this very binary run under the stage's name.
fn command_for(stage: &Stage) -> anyhow::Result<Command> {
    let me = std::env::current_exe().context("locating the bucky executable")?;
    let sibling: Option<PathBuf> = me.parent().map(|d| d.join(stage.name));
    let mut cmd = match sibling.filter(|p| p.is_file()) {
        Some(path) => Command::new(path),
        None => {
            let mut c = Command::new(&me);
            c.arg0(stage.name).env(STAGE_VAR, stage.name);
            c
        }
    };
    cmd.args(&stage.args).env(
        bucky_proto::shutdown::SUPERVISOR_VAR,
        std::process::id().to_string(),
    );
    // A terminal's Ctrl-C must reach only bucky, which then stops the stages in order.
    cmd.process_group(0);
    Ok(cmd)
}

fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => {
            let name = Signal::try_from(s).map_or_else(|_| s.to_string(), |s| s.to_string());
            format!("signal {name}")
        }
        _ => status.to_string(),
    }
}

fn spawn(stage: &Stage, role: Role, stdin: Stdio, stdout: Stdio) -> anyhow::Result<Running> {
    let mut child = command_for(stage)?
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", stage.name))?;
    let last_message = Arc::new(Mutex::new(None));
    if let Some(err) = child.stderr.take() {
        let last = last_message.clone();
        // Each stage logs whole lines; pass them on as they come and keep the latest warning
        // or error for the report if the stage dies.
        thread::Builder::new()
            .name(format!("{}-stderr", stage.name))
            .spawn(move || {
                let mut reader = BufReader::new(err);
                let mut line = String::new();
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let _ = std::io::stderr().write_all(line.as_bytes());
                            let text = line.trim_end();
                            if text.contains("error") || text.contains("warning") {
                                if let Ok(mut m) = last.lock() {
                                    *m = Some(text.to_string());
                                }
                            }
                        }
                    }
                }
            })
            .context("starting a stderr reader")?;
    }
    log::info!("started {} (pid {})", stage.name, child.id());
    Ok(Running {
        name: stage.name,
        role,
        child,
        status: None,
        last_message,
        terminated_at: None,
        killed: false,
    })
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    // Close-on-exec, so no stage inherits a stray end that would keep the pipe open.
    pipe2(OFlag::O_CLOEXEC).context("creating a pipe")
}

/// Runs the plan until every stage has exited; returns bucky's exit code.
pub fn run(plan: &Plan) -> anyhow::Result<u8> {
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    let (samples_r, samples_w) = pipe()?;
    let mut stages = Vec::new();

    let writer_input = match &plan.processor {
        Some(p) => {
            let (filtered_r, filtered_w) = pipe()?;
            stages.push(spawn(
                p,
                Role::Downstream,
                Stdio::from(samples_r),
                Stdio::from(filtered_w),
            )?);
            filtered_r
        }
        None => samples_r,
    };
    stages.push(spawn(
        &plan.writer,
        Role::Downstream,
        Stdio::from(writer_input),
        Stdio::inherit(),
    )?);
    for r in &plan.receivers {
        let out = samples_w.try_clone().context("duplicating the pipe")?;
        match spawn(r, Role::Receiver, Stdio::null(), Stdio::from(out)) {
            Ok(s) => stages.push(s),
            Err(e) => {
                log::error!("{e:#}");
                shutdown.trigger(None);
                break;
            }
        }
    }
    // Only the receivers hold the write end now: when the last one exits, the pipe closes.
    drop(samples_w);
    Ok(supervise(&mut stages, &shutdown))
}

fn supervise(stages: &mut [Running], shutdown: &Shutdown) -> u8 {
    let mut stopping_since: Option<Instant> = None;
    let mut failed = false;
    let mut receivers_done_at: Option<Instant> = None;
    loop {
        for s in stages.iter_mut().filter(|s| s.status.is_none()) {
            if let Ok(Some(status)) = s.child.try_wait() {
                s.status = Some(status);
                let expected = stopping_since.is_some() && status.success();
                if expected {
                    log::info!("{} finished", s.name);
                } else {
                    failed = true;
                    let last = s
                        .last_message()
                        .map(|m| format!("; its last message: {m}"))
                        .unwrap_or_default();
                    log::error!("{} exited with {}{last}", s.name, describe(&status));
                }
            }
        }
        if stages.iter().all(|s| s.status.is_some()) {
            break;
        }
        let now = Instant::now();
        if stopping_since.is_none() && (shutdown.is_set() || failed) {
            if failed {
                log::error!("stopping the other stages");
            } else {
                log::info!("stopping: receivers flush, then the pipeline drains");
            }
            stopping_since = Some(now);
            for s in stages.iter_mut().filter(|s| s.role == Role::Receiver) {
                s.signal(Signal::SIGTERM);
            }
        }
        if let Some(since) = stopping_since {
            let receivers_left = stages
                .iter()
                .any(|s| s.role == Role::Receiver && s.status.is_none());
            if receivers_left && now > since + RECEIVER_GRACE {
                for s in stages
                    .iter_mut()
                    .filter(|s| s.role == Role::Receiver && !s.killed)
                {
                    log::error!("{} did not stop in time: killing it", s.name);
                    s.signal(Signal::SIGKILL);
                }
            }
            if !receivers_left {
                let done = *receivers_done_at.get_or_insert(now);
                if now > done + DRAIN_GRACE {
                    for s in stages.iter_mut().filter(|s| s.terminated_at.is_none()) {
                        log::warn!("{} is still draining: asking it to stop", s.name);
                        s.signal(Signal::SIGTERM);
                    }
                }
            }
            for s in stages.iter_mut() {
                if let Some(t) = s.terminated_at {
                    if s.status.is_none() && !s.killed && now > t + KILL_GRACE {
                        log::error!("{} did not stop in time: killing it", s.name);
                        s.signal(Signal::SIGKILL);
                    }
                }
            }
        }
        // A second signal is no reason to hurry: the order above is what loses nothing.
        shutdown.wait_timeout(Duration::from_millis(50));
        if stopping_since.is_some() {
            thread::sleep(Duration::from_millis(20));
        }
    }
    if failed {
        1
    } else {
        0
    }
}
