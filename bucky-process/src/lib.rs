//! bucky-process: the sample filter between the receivers and `bucky-carbon`. Reads samples,
//! runs the declarative rules of `processor_rules` ([`rules`]) and the Lua function of
//! `processor_lua` ([`lua`]) on each, in order ([`processor`]), and writes what is left.
//!
//! It is the original's `processor` without Python (decisions.md §6): the same semantics
//! (drop, forward, forward the original on error unless `processor_drop_on_error`), as a pipe.

pub mod lua;
pub mod processor;
pub mod rules;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bucky_proto::config::Config;
use bucky_proto::io::{is_broken_pipe, Line, LineReader, LineWriter, DEFAULT_MAX_LINE};
use bucky_proto::shutdown::Shutdown;
use bucky_proto::stats::{summary, unix_now, SelfMetrics, SelfMetricsOptions};
use clap::Parser;

pub use lua::LuaProcessor;
pub use processor::{Counters, Processor};
pub use rules::Rule;

/// Command line of bucky-process. Every flag overrides the config file key named in its help.
#[derive(Debug, Parser)]
#[command(
    name = "bucky-process",
    version,
    about = "Filter samples from stdin (or files) to stdout with rules and a Lua function.",
    long_about = "Filter samples from stdin (or files) to stdout with rules and a Lua function.\n\n\
        Input and output: one sample per line, `NAME VALUE TIMESTAMP[ HOST]`. The rules \
        (processor_rules in the config file) drop, keep or rename samples by regex, drop \
        samples outside a time window around now, or drop non-finite values, in order; the \
        Lua function (processor_lua) gets host, name, value and time and returns them \
        (forward), nothing (drop), or fails (the original is forwarded unless \
        processor_drop_on_error)."
)]
pub struct Args {
    /// Input files of samples; `-` is stdin.
    #[arg(value_name = "INPUT", default_value = "-")]
    pub inputs: Vec<PathBuf>,

    /// Lua script returning (or defining a global `process`) function(host, name, value,
    /// time) (processor_lua; a relative path in the config file is relative to that file)
    /// [default: none]
    #[arg(long, value_name = "FILE")]
    pub lua: Option<PathBuf>,

    /// Drop the sample when the Lua function fails, instead of forwarding it unchanged
    /// (processor_drop_on_error) [default: off]
    #[arg(long)]
    pub drop_on_error: bool,

    #[command(flatten)]
    pub common: bucky_proto::cli::CommonArgs,
}

/// Everything bucky-process needs, resolved from flags, config file and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rules: Vec<Rule>,
    pub lua: Option<PathBuf>,
    pub drop_on_error: bool,
    pub self_metrics: SelfMetricsOptions,
    pub log_level: log::LevelFilter,
    /// The user and group to switch to (uid, gid).
    pub uid: Option<String>,
    pub gid: Option<String>,
}

impl Settings {
    /// Flags beat the config file, which beats the defaults.
    pub fn resolve(args: &Args, cfg: &Config) -> anyhow::Result<Settings> {
        let rules = rules::from_config(cfg)?;
        let lua = match &args.lua {
            Some(p) => Some(p.clone()),
            None => cfg.get::<PathBuf>("processor_lua")?.map(|p| {
                // Relative to the config file, so that the two can move together.
                match cfg.path().and_then(Path::parent) {
                    Some(dir) if p.is_relative() => dir.join(p),
                    _ => p,
                }
            }),
        };
        if lua.is_none() && rules.iter().any(|r| matches!(r, Rule::Lua)) {
            anyhow::bail!(
                "{}: processor_rules has a lua rule but no processor_lua script is set",
                cfg.origin()
            );
        }
        let common = args.common.resolve(cfg)?;
        Ok(Settings {
            rules,
            lua,
            drop_on_error: args.drop_on_error || cfg.get_or("processor_drop_on_error", false)?,
            self_metrics: common.self_metrics,
            log_level: common.log_level,
            uid: common.uid,
            gid: common.gid,
        })
    }

    /// The processor these settings describe (loads the Lua script).
    pub fn processor(&self) -> anyhow::Result<Processor> {
        let lua = match &self.lua {
            Some(p) => Some(LuaProcessor::load(p)?),
            None => None,
        };
        Ok(Processor::new(self.rules.clone(), lua, self.drop_on_error))
    }
}

/// One input and the name used in messages.
#[derive(Debug)]
pub struct Input {
    pub name: String,
    pub file: File,
    /// Wait for it with poll(2) (stdin), so a signal is noticed while no input comes.
    pub poll: bool,
}

/// Opens the inputs up front so a missing file fails before anything starts.
pub fn open_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    paths
        .iter()
        .map(|p| {
            if p.as_os_str() == "-" {
                // Our own descriptor of stdin: a File reads without std's extra buffer, which
                // would hide buffered input from poll(2).
                let fd = io::stdin()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("duplicating stdin")?;
                Ok(Input {
                    name: "stdin".into(),
                    file: File::from(fd),
                    poll: true,
                })
            } else {
                let file = File::open(p).with_context(|| format!("input {}", p.display()))?;
                Ok(Input {
                    name: p.display().to_string(),
                    file,
                    poll: false,
                })
            }
        })
        .collect()
}

/// Whether `file` has input (or EOF) within `timeout`.
fn wait_readable(file: &File, timeout: Duration) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The input ended, or a signal came; everything read was written.
    Done,
    /// Stdout's reader went away.
    BrokenPipe,
    /// Reading an input failed; what was read before was processed.
    InputError(String),
    /// Writing the output failed (other than a broken pipe).
    OutputError(String),
}

/// Bytes of output a [`Burst`] holds back at most.
const BURST_MAX: usize = 1 << 20;

/// Holds back the writes of a [`LineWriter`] (each whole lines of at most `PIPE_BUF` bytes)
/// and makes them, one write each, in a row when flushed (after every read of the input) or
/// when [`BURST_MAX`] bytes wait. The writes are the same; made back to back, they wake the
/// reader of a pipe once per burst rather than once per write, which costs both sides far
/// more CPU than the writes themselves.
#[derive(Debug)]
pub struct Burst<W: Write> {
    inner: W,
    buf: Vec<u8>,
    /// Where each held write ends in `buf`.
    ends: Vec<usize>,
}

impl<W: Write> Burst<W> {
    pub fn new(inner: W) -> Self {
        Burst {
            inner,
            buf: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Makes the held writes.
    fn write_out(&mut self) -> io::Result<()> {
        let mut start = 0;
        let mut done = 0;
        let r = self.ends.iter().try_for_each(|&end| {
            self.inner.write_all(&self.buf[start..end])?;
            start = end;
            done += 1;
            Ok(())
        });
        // What was written is gone, also after an error.
        self.ends.drain(..done);
        self.buf.drain(..start);
        for end in &mut self.ends {
            *end -= start;
        }
        r
    }
}

impl<W: Write> Write for Burst<W> {
    /// Takes all of `data` as one write to make later.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !data.is_empty() {
            if self.buf.len() + data.len() > BURST_MAX {
                self.write_out()?;
            }
            self.buf.extend_from_slice(data);
            self.ends.push(self.buf.len());
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.inner.flush()
    }
}

/// Runs `processor` over `inputs` until they end or `stop` is raised, writing to `out`.
pub fn run<W: Write>(
    settings: &Settings,
    processor: &mut Processor,
    inputs: Vec<Input>,
    out: W,
    stop: &Shutdown,
) -> Outcome {
    let mut writer = LineWriter::new(Burst::new(out));
    let metrics = SelfMetrics::new(&settings.self_metrics.prefix, "process");
    let every = settings.self_metrics.interval;
    let mut next_metrics = (!every.is_zero()).then(|| Instant::now() + every);
    let mut lines = Vec::new();
    let mut outcome = Outcome::Done;

    // Writes the self-metrics when due (or when `force`d and they are on).
    let mut self_metrics =
        |writer: &mut LineWriter<Burst<W>>, p: &Processor, force: bool| -> io::Result<()> {
            let Some(due) = next_metrics else {
                return Ok(());
            };
            let now = Instant::now();
            if !force && now < due {
                return Ok(());
            }
            lines.clear();
            metrics.push(&mut lines, &p.counters.snapshot(), unix_now().trunc());
            next_metrics = Some(now + every);
            for line in lines.split_inclusive(|b| *b == b'\n') {
                writer.write_lines(line)?;
            }
            Ok(())
        };

    let mut write_error = None;
    'inputs: for input in inputs {
        let mut reader = LineReader::new(&input.file);
        loop {
            if stop.is_set() {
                log::info!("received a signal: stopping");
                break 'inputs;
            }
            if input.poll {
                match wait_readable(&input.file, Duration::from_millis(100)) {
                    Ok(true) => {}
                    Ok(false) => {
                        let r = self_metrics(&mut writer, processor, false)
                            .and_then(|()| writer.flush());
                        if let Err(e) = r {
                            write_error = Some(e);
                            break 'inputs;
                        }
                        continue;
                    }
                    Err(e) => {
                        outcome = Outcome::InputError(format!("waiting for {}: {e}", input.name));
                        break 'inputs;
                    }
                }
            }
            let more = match reader.fill() {
                Ok(more) => more,
                Err(e) => {
                    outcome = Outcome::InputError(format!("reading {}: {e}", input.name));
                    false
                }
            };
            let now = unix_now();
            let mut err = None;
            reader.drain(|line_no, line| {
                if err.is_some() {
                    return;
                }
                match line {
                    // The reader bounds what it buffers; a long line that arrived whole in
                    // one read is refused here, as one that did not would have been.
                    Line::Text(text) if text.len() > DEFAULT_MAX_LINE => processor.bad_line(
                        &input.name,
                        line_no,
                        &format!("line of {} bytes is too long", text.len()),
                    ),
                    Line::Text(text) => {
                        let r = writer
                            .push(|buf| processor.process(text, &input.name, line_no, now, buf));
                        if let Err(e) = r {
                            err = Some(e);
                        }
                    }
                    Line::TooLong(len) => processor.bad_line(
                        &input.name,
                        line_no,
                        &format!("line of {len} bytes is too long"),
                    ),
                }
            });
            // Flush whenever the input pauses (each read), so no sample waits in a buffer.
            let r = match err {
                Some(e) => Err(e),
                None => self_metrics(&mut writer, processor, false).and_then(|()| writer.flush()),
            };
            if let Err(e) = r {
                write_error = Some(e);
                break 'inputs;
            }
            if outcome != Outcome::Done {
                break 'inputs;
            }
            if !more {
                break;
            }
        }
    }
    if write_error.is_none() {
        write_error = self_metrics(&mut writer, processor, true)
            .and_then(|()| writer.flush())
            .err();
    }
    match write_error {
        Some(e) if is_broken_pipe(&e) => Outcome::BrokenPipe,
        Some(e) => Outcome::OutputError(e.to_string()),
        None => outcome,
    }
}

/// Bytes of pipe buffer asked for on stdout.
const PIPE_SIZE: i32 = 1 << 20;

/// When `out` is a pipe, asks for a 1 MiB buffer (Linux; the default is 64 KiB), so that the
/// small whole-line writes wake the reader less often. Best effort: a refusal changes nothing.
fn grow_pipe(out: &impl AsFd) {
    use std::os::fd::AsRawFd;
    let fd = out.as_fd();
    let is_pipe = nix::sys::stat::fstat(fd.as_raw_fd())
        .map(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFIFO)
        .unwrap_or(false);
    if is_pipe {
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE),
        );
    }
}

/// The whole program after argument parsing: returns the process exit code.
pub fn main_with(args: Args) -> anyhow::Result<u8> {
    bucky_proto::log::init("bucky-process", log::LevelFilter::Info);
    let cfg = args.common.load_config("bucky-process")?;
    let settings = Settings::resolve(&args, &cfg)?;
    log::set_max_level(settings.log_level);
    let mut processor = settings.processor()?;
    let inputs = open_inputs(&args.inputs)?;
    bucky_proto::privs::drop_privileges(settings.uid.as_deref(), settings.gid.as_deref())
        .context("dropping privileges")?;
    let stop = Shutdown::on_signals().context("installing signal handlers")?;
    grow_pipe(&io::stdout());
    let outcome = run(
        &settings,
        &mut processor,
        inputs,
        io::stdout().lock(),
        &stop,
    );
    log::info!("exiting: {}", summary(&processor.counters.snapshot()));
    Ok(match outcome {
        Outcome::Done | Outcome::BrokenPipe => 0,
        Outcome::InputError(e) | Outcome::OutputError(e) => {
            log::error!("{e}");
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every write it is asked to make.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.push(data.to_vec());
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bursts_make_the_same_whole_line_writes_later() {
        let lines: Vec<String> = (0..100_000).map(|i| format!("n.{i} {i} 1\n")).collect();
        let mut w = LineWriter::new(Burst::new(Writes::default()));
        let mut sent = 0;
        for l in &lines {
            w.write_lines(l.as_bytes()).unwrap();
            sent += l.len();
            if sent < BURST_MAX - bucky_proto::io::PIPE_BUF {
                assert!(w.get_ref().inner.0.is_empty(), "held until flushed");
            }
        }
        assert!(sent > BURST_MAX);
        assert!(!w.get_ref().inner.0.is_empty(), "a full burst goes out");
        w.flush().unwrap();
        let writes = &w.get_ref().inner.0;
        assert!(writes
            .iter()
            .all(|b| b.len() <= bucky_proto::io::PIPE_BUF && b.ends_with(b"\n")));
        assert_eq!(writes.concat(), lines.concat().into_bytes());
    }

    #[test]
    fn settings_from_config_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("bucky.conf");
        std::fs::write(
            &conf,
            "processor_lua = 'p.lua'\nprocessor_drop_on_error = True\nuid = 1000\n",
        )
        .unwrap();
        let cfg = Config::load(&conf).unwrap();
        let s = Settings::resolve(&Args::parse_from(["bucky-process"]), &cfg).unwrap();
        assert_eq!(s.lua.as_deref(), Some(dir.path().join("p.lua").as_path()));
        assert!(s.drop_on_error);
        assert_eq!(s.uid.as_deref(), Some("1000"));
        // A flag's path is taken as given (relative to the working directory).
        let args = Args::parse_from(["bucky-process", "--lua", "x.lua"]);
        let s = Settings::resolve(&args, &cfg).unwrap();
        assert_eq!(s.lua.as_deref(), Some(Path::new("x.lua")));
        // A lua rule needs a script.
        let cfg = Config::parse_toml("processor_rules = [{ action = 'lua' }]\n", "t.toml").unwrap();
        let e = Settings::resolve(&Args::parse_from(["bucky-process"]), &cfg).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml: processor_rules has a lua rule but no processor_lua script is set"
        );
    }
}
