//! bucky-carbon: the end of every bucky pipeline. Reads samples (or plain Graphite lines) and
//! writes them to carbon over plaintext or pickle, applying the naming rules on the way.
//!
//! Start-up never waits for carbon; input keeps flowing into a bounded queue while carbon is
//! away; batches are resent after a reconnect so a carbon restart loses nothing.

pub mod encode;
pub mod queue;
pub mod ring;
pub mod spool;
pub mod writer;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use bucky_proto::config::{pick, Config, Value};
use bucky_proto::io::{Line, LineReader};
use bucky_proto::log::{suppressed_note, RateLimit};
use bucky_proto::sample::{split_line, LineError};
use bucky_proto::shutdown::Shutdown;
use bucky_proto::stats::{summary, unix_now, Counter, SelfMetrics, SelfMetricsOptions};
use bucky_proto::{Namer, NamingOptions};
use clap::Parser;

pub use encode::{Batch, Encoder, Protocol};
pub use queue::Queue;
pub use writer::{Backoff, Target};

/// Command line of bucky-carbon. Every flag overrides the config file key named in its help.
#[derive(Debug, Parser)]
#[command(
    name = "bucky-carbon",
    version,
    about = "Write samples from stdin (or files) to Graphite carbon.",
    long_about = "Write samples from stdin (or files) to Graphite carbon.\n\n\
        Input: one sample per line, `NAME VALUE TIMESTAMP[ HOST]` (plain Graphite lines are \
        samples too). The naming rules (name_prefix, host reversal, ...) are applied here.\n\
        Carbon may be down at start and may restart: input is queued in bounded memory and \
        batches are sent again after a reconnect."
)]
pub struct Args {
    /// Input files of samples; `-` is stdin.
    #[arg(value_name = "INPUT", default_value = "-")]
    pub inputs: Vec<PathBuf>,

    /// Config file: TOML, or an original bucky config (Python literals only).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Carbon host (graphite_ip) [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub graphite_ip: Option<String>,

    /// Carbon port (graphite_port) [default: 2003, or 2004 with --pickle]
    #[arg(long, value_name = "PORT")]
    pub graphite_port: Option<u16>,

    /// Use carbon's pickle protocol instead of plaintext (graphite_pickle_enabled)
    #[arg(long)]
    pub pickle: bool,

    /// Points per pickle frame (graphite_pickle_buffer_size) [default: 500]
    #[arg(long, value_name = "N")]
    pub pickle_buffer_size: Option<usize>,

    /// Failed connection attempts before the queued samples are dropped and a new round of
    /// attempts starts; 0 or less retries forever (graphite_max_reconnects) [default: 0]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_reconnects: Option<i64>,

    /// Seconds before the first retry (graphite_reconnect_delay) [default: 5]
    #[arg(long, value_name = "SECS")]
    pub reconnect_delay: Option<f64>,

    /// Each retry waits this many times longer (graphite_backoff_factor) [default: 1.5]
    #[arg(long, value_name = "F")]
    pub backoff_factor: Option<f64>,

    /// Longest wait between retries, seconds (graphite_backoff_max) [default: 60]
    #[arg(long, value_name = "SECS")]
    pub backoff_max: Option<f64>,

    /// Samples held while carbon is away; when full the oldest are dropped and counted
    /// (graphite_queue_size) [default: 2000000]
    #[arg(long, value_name = "N")]
    pub queue_size: Option<usize>,

    /// Bytes of recently sent data resent after a reconnect, to cover what the lost
    /// connection's buffers held; 0 turns resending off (graphite_resend_window)
    /// [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub resend_window: Option<usize>,

    /// On SIGTERM/SIGINT, seconds to keep sending what is held before exiting
    /// (graphite_shutdown_timeout) [default: 10]
    #[arg(long, value_name = "SECS")]
    pub shutdown_timeout: Option<f64>,

    /// Seconds between self-metrics (bucky.carbon.*); 0 turns them off
    /// (self_metrics_interval) [default: 10]
    #[arg(long, value_name = "SECS")]
    pub self_metrics_interval: Option<f64>,

    /// First component of the self-metric names (self_metrics_prefix) [default: bucky]
    #[arg(long, value_name = "PREFIX")]
    pub self_metrics_prefix: Option<String>,

    /// Write the carbon lines to stdout instead of a socket (debug)
    #[arg(long)]
    pub debug: bool,

    /// CRITICAL, ERROR, WARNING, INFO or DEBUG (log_level) [default: INFO]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// Everything bucky-carbon needs, resolved from flags, config file and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub target: Target,
    pub protocol: Protocol,
    pub backoff: Backoff,
    pub queue_size: usize,
    pub resend_window: usize,
    pub shutdown_timeout: Duration,
    pub self_metrics: SelfMetricsOptions,
    pub naming: NamingOptions,
    pub log_level: log::LevelFilter,
}

fn seconds(key: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("{key}: {v} is not a number of seconds >= 0"))
}

impl Settings {
    /// Flags beat the config file, which beats the defaults.
    pub fn resolve(args: &Args, cfg: &Config) -> anyhow::Result<Settings> {
        let debug = args.debug || cfg.get_or("debug", false)?;
        let pickle = args.pickle || cfg.get_or("graphite_pickle_enabled", false)?;
        let host = pick(
            args.graphite_ip.clone(),
            cfg,
            "graphite_ip",
            "127.0.0.1".into(),
        )?;
        let port = pick(
            args.graphite_port,
            cfg,
            "graphite_port",
            if pickle { 2004 } else { 2003 },
        )?;
        let target = if debug {
            Target::Stdout
        } else {
            Target::Tcp { host, port }
        };
        // In debug mode the lines are for a person: plaintext whatever the protocol.
        let protocol = if pickle && !debug {
            Protocol::Pickle {
                points_per_frame: pick(
                    args.pickle_buffer_size,
                    cfg,
                    "graphite_pickle_buffer_size",
                    500,
                )?
                .max(1),
            }
        } else {
            Protocol::Plaintext
        };
        let d = Backoff::default();
        let backoff = Backoff {
            max_reconnects: pick(
                args.max_reconnects,
                cfg,
                "graphite_max_reconnects",
                d.max_reconnects,
            )?,
            delay: pick(
                args.reconnect_delay,
                cfg,
                "graphite_reconnect_delay",
                d.delay,
            )?,
            factor: pick(
                args.backoff_factor,
                cfg,
                "graphite_backoff_factor",
                d.factor,
            )?,
            max: pick(args.backoff_max, cfg, "graphite_backoff_max", d.max)?,
        };
        seconds("graphite_reconnect_delay", backoff.delay)?;
        let shutdown_timeout = seconds(
            "graphite_shutdown_timeout",
            pick(
                args.shutdown_timeout,
                cfg,
                "graphite_shutdown_timeout",
                10.0,
            )?,
        )?;
        let self_metrics = SelfMetricsOptions {
            interval: seconds(
                "self_metrics_interval",
                pick(
                    args.self_metrics_interval,
                    cfg,
                    "self_metrics_interval",
                    10.0,
                )?,
            )?,
            prefix: pick(
                args.self_metrics_prefix.clone(),
                cfg,
                "self_metrics_prefix",
                "bucky".into(),
            )?,
        };
        let level_name = pick(args.log_level.clone(), cfg, "log_level", "INFO".into())?;
        Ok(Settings {
            target,
            protocol,
            backoff,
            queue_size: pick(args.queue_size, cfg, "graphite_queue_size", 2_000_000)?,
            resend_window: pick(args.resend_window, cfg, "graphite_resend_window", 16 << 20)?,
            shutdown_timeout,
            self_metrics,
            naming: naming_options(cfg)?,
            log_level: bucky_proto::log::parse_level(&level_name)?,
        })
    }
}

/// The naming keys of the config file (spec §2), with the original's defaults.
pub fn naming_options(cfg: &Config) -> anyhow::Result<NamingOptions> {
    let d = NamingOptions::default();
    // `name_replace_char = None` turns replacing off, while an absent key keeps the default.
    let name_replace_char = match cfg.raw("name_replace_char") {
        Some(Value::None) => None,
        _ => cfg.get("name_replace_char")?.or(d.name_replace_char),
    };
    Ok(NamingOptions {
        name_prefix: cfg.get("name_prefix")?,
        name_prefix_parts: cfg.get("name_prefix_parts")?.unwrap_or_default(),
        name_postfix: cfg.get("name_postfix")?,
        name_postfix_parts: cfg.get("name_postfix_parts")?.unwrap_or_default(),
        name_replace_char,
        name_strip_duplicates: cfg.get_or("name_strip_duplicates", d.name_strip_duplicates)?,
        name_host_trim: cfg.get("name_host_trim")?.unwrap_or_default(),
    })
}

/// What bucky-carbon counts; emitted as bucky.carbon.<name> and logged at exit.
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples read.
    pub lines_in: Counter,
    /// Samples written to carbon (first sends; resends are counted apart).
    pub sent: Counter,
    /// Samples thrown away: queue full, attempts exhausted, or shutdown timeout.
    pub dropped: Counter,
    /// Input lines that are not samples.
    pub bad_lines: Counter,
    /// Connections made again after one was lost.
    pub reconnects: Counter,
    /// Failed connection attempts.
    pub connect_failures: Counter,
    /// Samples sent again from the resend window after a reconnect.
    pub resent: Counter,
}

impl Counters {
    pub fn snapshot(&self, queued: usize) -> Vec<(&'static str, u64)> {
        vec![
            ("in", self.lines_in.get()),
            ("sent", self.sent.get()),
            ("queued", queued as u64),
            ("dropped", self.dropped.get()),
            ("bad_lines", self.bad_lines.get()),
            ("reconnects", self.reconnects.get()),
            ("connect_failures", self.connect_failures.get()),
            ("resent", self.resent.get()),
        ]
    }
}

/// Shutdown timing shared by the reader, the writer and main.
#[derive(Debug)]
pub struct Control {
    shutdown: Shutdown,
    timeout: Duration,
    deadline: Mutex<Option<Instant>>,
}

impl Control {
    pub fn new(shutdown: Shutdown, timeout: Duration) -> Self {
        Control {
            shutdown,
            timeout,
            deadline: Mutex::new(None),
        }
    }

    /// Starts the shutdown clock (once).
    pub fn start_deadline(&self) {
        if let Ok(mut d) = self.deadline.lock() {
            d.get_or_insert_with(|| Instant::now() + self.timeout);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.lock().ok().and_then(|d| *d)
    }

    pub fn deadline_passed(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Time left for the final handshake with carbon.
    pub fn drain_time(&self) -> Duration {
        match self.deadline() {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => self.timeout.max(Duration::from_secs(1)),
        }
    }

    /// Sleeps `d`, or less when a signal arrives or the deadline comes first.
    pub fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= until || self.deadline_passed() {
                return;
            }
            let step = until
                .saturating_duration_since(now)
                .min(Duration::from_millis(50));
            if self.shutdown.wait_timeout(step) {
                self.start_deadline();
                // Keep trying (at most until the deadline) but notice it promptly.
                thread::sleep(step);
            }
        }
    }
}

/// One input stream and the name used in messages.
pub struct Input {
    pub name: String,
    pub reader: Box<dyn Read + Send>,
}

/// Opens the inputs up front so a missing file fails before anything starts.
pub fn open_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    paths
        .iter()
        .map(|p| {
            if p.as_os_str() == "-" {
                Ok(Input {
                    name: "stdin".into(),
                    reader: Box::new(io::stdin()),
                })
            } else {
                let f = File::open(p).with_context(|| format!("input {}", p.display()))?;
                Ok(Input {
                    name: p.display().to_string(),
                    reader: Box::new(f),
                })
            }
        })
        .collect()
}

struct Shared {
    queue: Queue,
    counters: Counters,
    control: Control,
    /// Held while a chunk of input is turned into batches, so a shutdown can wait for it.
    processing: Mutex<()>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Input ended or a signal came; everything held was sent or counted as dropped.
    Done,
    /// Debug mode's stdout reader went away.
    BrokenPipe,
    /// Reading an input failed; what was read was still sent.
    InputError(String),
}

/// Runs bucky-carbon until the input ends or a signal arrives. Returns the final counters.
pub fn run(
    settings: &Settings,
    inputs: Vec<Input>,
    shutdown: Shutdown,
) -> (Outcome, Vec<(&'static str, u64)>) {
    let shared = Arc::new(Shared {
        queue: Queue::new(settings.queue_size),
        counters: Counters::default(),
        control: Control::new(shutdown.clone(), settings.shutdown_timeout),
        processing: Mutex::new(()),
    });
    let namer = Namer::new(&settings.naming);

    let reader = {
        let shared = shared.clone();
        let encoder = Encoder::new(namer.clone(), settings.protocol);
        thread::Builder::new()
            .name("reader".into())
            .spawn(move || read_inputs(inputs, encoder, &shared))
    };
    let writer = {
        let shared = shared.clone();
        let settings = settings.clone();
        thread::Builder::new().name("writer".into()).spawn(move || {
            let metrics = SelfMetrics::new(&settings.self_metrics.prefix, "carbon");
            let mut encoder = Encoder::new(namer, settings.protocol);
            let mut lines = Vec::new();
            let sh = &shared;
            let mut w = writer::Writer::new(
                settings.target.clone(),
                settings.backoff.clone(),
                settings.resend_window,
                &sh.queue,
                &sh.counters,
                &sh.control,
            )
            .with_ticker(settings.self_metrics.interval, move || {
                lines.clear();
                let snapshot = sh.counters.snapshot(sh.queue.len());
                metrics.push(&mut lines, &snapshot, unix_now().trunc());
                for l in String::from_utf8_lossy(&lines).lines() {
                    if let Ok(p) = split_line(l.as_bytes()) {
                        if let Some(b) = encoder.push(&p) {
                            sh.queue.push(b);
                        }
                    }
                }
                encoder.take_partial()
            });
            w.run()
        })
    };
    let (reader, writer) = match (reader, writer) {
        (Ok(r), Ok(w)) => (r, w),
        (r, w) => {
            let e = r
                .err()
                .or(w.err())
                .map(|e| e.to_string())
                .unwrap_or_default();
            return (
                Outcome::InputError(format!("cannot start threads: {e}")),
                shared.counters.snapshot(0),
            );
        }
    };

    // Wait for the end of input or a signal.
    let mut outcome = Outcome::Done;
    loop {
        if reader.is_finished() {
            if let Ok(Err(e)) = reader.join() {
                outcome = Outcome::InputError(e);
            }
            break;
        }
        if shutdown.wait_timeout(Duration::from_millis(100)) {
            log::info!("received a signal: sending what is held, then exiting");
            shared.control.start_deadline();
            // Let the reader finish the chunk it is on, then stop it taking more.
            let _chunk = shared.processing.lock();
            shared.queue.close();
            break;
        }
        if writer.is_finished() {
            // Only a broken stdout ends the writer before the input does.
            break;
        }
    }

    // Let the writer drain; a signal now starts the clock, and the clock is enforced here too
    // in case the writer is stuck in a write to a stalled carbon.
    loop {
        if writer.is_finished() {
            match writer.join() {
                Ok(Err(writer::Stop::BrokenPipe)) => outcome = Outcome::BrokenPipe,
                Ok(Ok(())) => {}
                Err(_) => outcome = Outcome::InputError("the writer thread panicked".into()),
            }
            break;
        }
        if shutdown.wait_timeout(Duration::from_millis(50)) {
            shared.control.start_deadline();
        }
        if let Some(d) = shared.control.deadline() {
            if Instant::now() > d + Duration::from_secs(2) {
                let n = shared.queue.clear();
                shared.counters.dropped.add(n as u64);
                log::error!("carbon did not take the data in time: dropped {n} queued samples");
                break;
            }
        }
    }
    let snapshot = shared.counters.snapshot(shared.queue.len());
    (outcome, snapshot)
}

fn read_inputs(inputs: Vec<Input>, mut encoder: Encoder, shared: &Shared) -> Result<(), String> {
    let mut bad_log = RateLimit::default();
    let mut full_log = RateLimit::new(1, Duration::from_secs(10));
    let mut result = Ok(());
    'inputs: for input in inputs {
        let mut lines = LineReader::new(input.reader);
        loop {
            let more = match lines.fill() {
                Ok(m) => m,
                Err(e) => {
                    log::error!("reading {}: {e}", input.name);
                    result = Err(format!("reading {}: {e}", input.name));
                    false
                }
            };
            let _chunk = shared.processing.lock().unwrap_or_else(|p| p.into_inner());
            if shared.queue.is_closed() {
                return result;
            }
            let mut push = |b: Batch| {
                let dropped = shared.queue.push(b);
                if dropped > 0 {
                    shared.counters.dropped.add(dropped as u64);
                    if let Some(n) = full_log.allow() {
                        log::error!(
                            "queue full (carbon is not keeping up or is away): dropped the oldest {dropped} samples{}",
                            suppressed_note(n)
                        );
                    }
                }
            };
            // Counted locally: one atomic add per chunk, not per line.
            let (mut good, mut bad) = (0u64, 0u64);
            lines.drain(|line_no, line| {
                let err = match line {
                    Line::Text(text) => match split_line(text) {
                        Ok(f) => {
                            good += 1;
                            if let Some(b) = encoder.push(&f) {
                                push(b);
                            }
                            return;
                        }
                        Err(LineError::Empty) => return,
                        Err(e) => e.to_string(),
                    },
                    Line::TooLong(len) => format!("line of {len} bytes is too long"),
                };
                bad += 1;
                if let Some(n) = bad_log.allow() {
                    log::warn!(
                        "{} line {line_no}: {err} (skipped){}",
                        input.name,
                        suppressed_note(n)
                    );
                }
            });
            shared.counters.lines_in.add(good);
            shared.counters.bad_lines.add(bad);
            if let Some(b) = encoder.take_partial() {
                push(b);
            }
            if !more {
                if result.is_err() {
                    break 'inputs;
                }
                break;
            }
        }
    }
    shared.queue.close();
    result
}

/// Loads the config named by `--config`, warning about unknown keys.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let cfg = Config::load_optional(path)?;
    cfg.warn_unknown("bucky-carbon");
    Ok(cfg)
}

/// The whole program after argument parsing: returns the process exit code.
pub fn main_with(args: Args) -> anyhow::Result<u8> {
    // Log config problems at the default level until the configured one is known.
    bucky_proto::log::init("bucky-carbon", log::LevelFilter::Info);
    let cfg = load_config(args.config.as_deref())?;
    let settings = Settings::resolve(&args, &cfg)?;
    log::set_max_level(settings.log_level);
    let inputs = open_inputs(&args.inputs)?;
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    let (outcome, counters) = run(&settings, inputs, shutdown);
    log::info!("exiting: {}", summary(&counters));
    Ok(match outcome {
        Outcome::Done | Outcome::BrokenPipe => 0,
        Outcome::InputError(e) => {
            log::error!("{e}");
            1
        }
    })
}
