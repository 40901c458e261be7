//! bucky-carbon: the end of every bucky pipeline. Reads samples (or plain Graphite lines) and
//! writes them to carbon over plaintext or pickle, applying the naming rules on the way.
//!
//! Start-up never waits for carbon; input keeps flowing into a bounded queue while carbon is
//! away; batches are resent after a reconnect so a carbon restart loses nothing.
//!
//! For a Graphite cluster it routes each series with carbon's consistent-hash ring
//! ([`ring`], [`route`]) to several destinations, each with its own connection, queue and
//! backoff ([`writer`]), and can keep what a destination cannot take in a durable spool
//! ([`spool`]).

pub mod encode;
pub mod queue;
pub mod ring;
pub mod route;
pub mod spool;
pub mod writer;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
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
use nix::fcntl::{Flock, FlockArg};

pub use encode::{Batch, Encoder, Protocol};
pub use queue::Queue;
pub use ring::{HashType, Ring};
pub use route::{Destination, Router};
pub use spool::Spool;
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

    /// Carbon host (graphite_ip) [default: 127.0.0.1]
    #[arg(long, value_name = "IP", conflicts_with = "destinations")]
    pub graphite_ip: Option<String>,

    /// Carbon port (graphite_port) [default: 2003, or 2004 with --pickle]
    #[arg(long, value_name = "PORT", conflicts_with = "destinations")]
    pub graphite_port: Option<u16>,

    /// A carbon-cache of a cluster, as in carbon's DESTINATIONS: HOST:PORT[:INSTANCE]
    /// ([V6ADDR]:PORT[:INSTANCE] for IPv6); repeat it for each one. Series are spread by
    /// carbon's consistent-hash ring (graphite_destinations, a list) [default: the single
    /// graphite_ip:graphite_port]
    #[arg(long = "destination", value_name = "HOST:PORT[:INSTANCE]")]
    pub destinations: Vec<String>,

    /// Copies of each series, on distinct destinations (graphite_replication_factor)
    /// [default: 1]
    #[arg(long, value_name = "N")]
    pub replication_factor: Option<usize>,

    /// carbon's DIVERSE_REPLICAS: replicas go to distinct servers (hosts), not only to
    /// distinct instances; `--diverse-replicas=false` turns it off; carbon hash only
    /// (graphite_diverse_replicas) [default: true]
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub diverse_replicas: Option<bool>,

    /// The ring to reproduce: `carbon` (graphite's carbon-relay, carbon_ch) or
    /// `carbon-c-relay` (its carbon_ch) (graphite_hash_type) [default: carbon]
    #[arg(long = "hash", value_name = "TYPE")]
    pub hash: Option<String>,

    /// Durable spool folder: what a destination cannot take now is kept there (one
    /// subfolder per destination), survives restarts and is replayed in order when the
    /// destination is back (graphite_spool_dir) [default: none: memory only]
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,

    /// Bytes each destination's spool may hold; over it the oldest data is dropped and
    /// counted (graphite_spool_max_bytes) [default: 1073741824]
    #[arg(long, value_name = "BYTES")]
    pub spool_max_bytes: Option<u64>,

    /// Samples per second replayed from a spool to a destination that is back, so that a
    /// recovering carbon is not flooded; 0: as fast as it reads (graphite_spool_replay_rate)
    /// [default: 50000]
    #[arg(long, value_name = "N")]
    pub spool_replay_rate: Option<f64>,

    /// Print what waits in each destination's spool under --spool DIR, then exit
    #[arg(long)]
    pub spool_status: bool,

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

    /// Write the carbon lines to stdout instead of a socket (debug)
    #[arg(long)]
    pub debug: bool,

    #[command(flatten)]
    pub common: bucky_proto::cli::CommonArgs,
}

/// Everything bucky-carbon needs, resolved from flags, config file and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The carbon-caches, in configuration order (the ring depends on it); one by default.
    pub destinations: Vec<Destination>,
    /// `--debug`: everything to stdout once, no sockets, no routing.
    pub debug: bool,
    pub hash: HashType,
    pub replication: usize,
    pub diverse_replicas: bool,
    pub spool: Option<SpoolSettings>,
    pub protocol: Protocol,
    pub backoff: Backoff,
    pub queue_size: usize,
    pub resend_window: usize,
    pub shutdown_timeout: Duration,
    pub self_metrics: SelfMetricsOptions,
    pub naming: NamingOptions,
    pub log_level: log::LevelFilter,
    /// The user and group to switch to (uid, gid).
    pub uid: Option<String>,
    pub gid: Option<String>,
}

/// The durable spool's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    /// Per destination.
    pub max_bytes: u64,
    /// Samples per second; 0: unpaced.
    pub replay_rate: f64,
}

/// The smallest spool cap accepted (a few segments of the smallest size).
pub const MIN_SPOOL_BYTES: u64 = 1 << 20;

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
        let default_port = if pickle { 2004 } else { 2003 };
        let listed: Vec<String> = if args.destinations.is_empty()
            && args.graphite_ip.is_none()
            && args.graphite_port.is_none()
        {
            cfg.get::<Vec<String>>("graphite_destinations")?
                .unwrap_or_default()
        } else {
            args.destinations.clone()
        };
        let destinations = if listed.is_empty() {
            vec![Destination {
                host,
                port,
                instance: None,
            }]
        } else {
            listed
                .iter()
                .map(|d| Destination::parse(d, default_port))
                .collect::<Result<Vec<_>, _>>()?
        };
        let hash_name = pick(
            args.hash.clone(),
            cfg,
            "graphite_hash_type",
            "carbon".into(),
        )?;
        let hash = HashType::parse(&hash_name).with_context(|| {
            format!("graphite_hash_type: {hash_name:?} is not carbon or carbon-c-relay")
        })?;
        let replication = pick(
            args.replication_factor,
            cfg,
            "graphite_replication_factor",
            1,
        )?;
        if replication == 0 {
            anyhow::bail!("graphite_replication_factor: 0 is not a number of copies >= 1");
        }
        let diverse: Option<bool> = match args.diverse_replicas {
            Some(v) => Some(v),
            None => cfg.get("graphite_diverse_replicas")?,
        };
        let diverse_replicas = match (hash, diverse) {
            (HashType::CarbonCRelay, Some(true)) => anyhow::bail!(
                "graphite_diverse_replicas: carbon-c-relay's ring has no diverse replicas"
            ),
            (HashType::CarbonCRelay, _) => false,
            (HashType::Carbon, d) => d.unwrap_or(true),
        };
        let spool_dir: Option<PathBuf> = match &args.spool {
            Some(d) => Some(d.clone()),
            None => cfg.get("graphite_spool_dir")?,
        };
        let spool = match spool_dir {
            Some(dir) => {
                let max_bytes = pick(
                    args.spool_max_bytes,
                    cfg,
                    "graphite_spool_max_bytes",
                    1 << 30,
                )?;
                if max_bytes < MIN_SPOOL_BYTES {
                    anyhow::bail!(
                        "graphite_spool_max_bytes: {max_bytes} is below the minimum of \
                         {MIN_SPOOL_BYTES}"
                    );
                }
                let replay_rate = pick(
                    args.spool_replay_rate,
                    cfg,
                    "graphite_spool_replay_rate",
                    50_000.0,
                )?;
                if !(replay_rate.is_finite() && replay_rate >= 0.0) {
                    anyhow::bail!(
                        "graphite_spool_replay_rate: {replay_rate} is not a rate >= 0 \
                         (samples per second; 0 for unpaced)"
                    );
                }
                Some(SpoolSettings {
                    dir,
                    max_bytes,
                    replay_rate,
                })
            }
            None => None,
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
        let common = args.common.resolve(cfg)?;
        Ok(Settings {
            destinations,
            debug,
            hash,
            replication,
            diverse_replicas,
            spool,
            protocol,
            backoff,
            queue_size: pick(args.queue_size, cfg, "graphite_queue_size", 2_000_000)?,
            resend_window: pick(args.resend_window, cfg, "graphite_resend_window", 16 << 20)?,
            shutdown_timeout,
            self_metrics: common.self_metrics,
            naming: naming_options(cfg)?,
            log_level: common.log_level,
            uid: common.uid,
            gid: common.gid,
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

/// What bucky-carbon counts over all destinations; emitted as bucky.carbon.<name> and logged
/// at exit, with the destinations' counters summed.
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples read.
    pub lines_in: Counter,
    /// Input lines that are not samples.
    pub bad_lines: Counter,
}

/// What one destination's writer counts.
#[derive(Debug, Default)]
pub struct DestCounters {
    /// Samples written to carbon for the first time (replayed ones included; resends not).
    pub sent: Counter,
    /// Samples thrown away: queue full without a spool, attempts exhausted, shutdown
    /// timeout, spool write failures (the spool's own drops are added at snapshot time).
    pub dropped: Counter,
    /// Connections made again after one was lost.
    pub reconnects: Counter,
    /// Failed connection attempts.
    pub connect_failures: Counter,
    /// Samples sent again after a reconnect (resend window, or resend records of a spool).
    pub resent: Counter,
    /// Samples sent from the spool (counted in `sent` too).
    pub replayed: Counter,
    /// Failed fsyncs of spool files.
    pub spool_errors: Counter,
}

/// One destination's numbers at an instant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DestSnapshot {
    pub sent: u64,
    pub queued: u64,
    pub dropped: u64,
    pub reconnects: u64,
    pub connect_failures: u64,
    pub resent: u64,
    pub spooled: u64,
    pub replayed: u64,
    pub spool_dropped: u64,
    pub spool_samples: u64,
    pub spool_bytes: u64,
    pub spool_corrupt: u64,
    pub spool_errors: u64,
}

impl DestSnapshot {
    fn add(&mut self, o: &DestSnapshot) {
        self.sent += o.sent;
        self.queued += o.queued;
        self.dropped += o.dropped;
        self.reconnects += o.reconnects;
        self.connect_failures += o.connect_failures;
        self.resent += o.resent;
        self.spooled += o.spooled;
        self.replayed += o.replayed;
        self.spool_dropped += o.spool_dropped;
        self.spool_samples += o.spool_samples;
        self.spool_bytes += o.spool_bytes;
        self.spool_corrupt += o.spool_corrupt;
        self.spool_errors += o.spool_errors;
    }

    /// `(name, value)` pairs; the spool's only when there is a spool.
    fn pairs(&self, spool: bool) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("sent", self.sent),
            ("queued", self.queued),
            ("dropped", self.dropped),
            ("reconnects", self.reconnects),
            ("connect_failures", self.connect_failures),
            ("resent", self.resent),
        ];
        if spool {
            v.extend([
                ("spooled", self.spooled),
                ("replayed", self.replayed),
                ("spool_dropped", self.spool_dropped),
                ("spool_samples", self.spool_samples),
                ("spool_bytes", self.spool_bytes),
                ("spool_corrupt", self.spool_corrupt),
                ("spool_errors", self.spool_errors),
            ]);
        }
        v
    }
}

/// One carbon destination: its queue, counters and spool, shared by the reader (which
/// fills the queue), its writer and main.
#[derive(Debug)]
pub struct Dest {
    pub spec: Destination,
    pub target: Target,
    pub queue: Queue,
    pub counters: DestCounters,
    pub spool: Option<Mutex<Spool>>,
    /// Name in self-metrics (`bucky.carbon.<label>.sent`).
    pub label: String,
}

fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    // Every spool update leaves it consistent between calls, so a poisoned lock is usable.
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dest {
    pub fn snapshot(&self) -> DestSnapshot {
        let c = &self.counters;
        let mut s = DestSnapshot {
            sent: c.sent.get(),
            queued: self.queue.len() as u64,
            dropped: c.dropped.get(),
            reconnects: c.reconnects.get(),
            connect_failures: c.connect_failures.get(),
            resent: c.resent.get(),
            replayed: c.replayed.get(),
            spool_errors: c.spool_errors.get(),
            ..DestSnapshot::default()
        };
        if let Some(sp) = &self.spool {
            let sp = lock(sp);
            let st = sp.stats();
            s.dropped += st.dropped;
            s.spool_dropped = st.dropped;
            s.spooled = st.spooled;
            s.spool_samples = sp.samples();
            s.spool_bytes = sp.bytes();
            s.spool_corrupt = st.corrupt;
            s.spool_errors += st.errors;
        }
        s
    }

    /// Queues `batch`; what no longer fits in memory goes to the spool, or is dropped and
    /// counted. The spool's lock is held across both steps when it is free, so the spool
    /// stays in order; when the writer holds it (writing to disk), the reader does not wait
    /// for it unless the queue is full: one destination's disk never stalls the others.
    fn deliver(&self, batch: Batch, spill: &mut Vec<Batch>, full_log: &mut RateLimit) {
        match &self.spool {
            Some(sp) => {
                let mut sp = match sp.try_lock() {
                    Ok(guard) => {
                        self.queue.push_spill(batch, spill);
                        guard
                    }
                    Err(std::sync::TryLockError::Poisoned(p)) => {
                        self.queue.push_spill(batch, spill);
                        p.into_inner()
                    }
                    Err(std::sync::TryLockError::WouldBlock) => {
                        self.queue.push_spill(batch, spill);
                        if spill.is_empty() {
                            return;
                        }
                        lock(sp)
                    }
                };
                for b in spill.drain(..) {
                    if let Err(e) = sp.append(&b, false) {
                        self.counters.dropped.add(b.samples as u64);
                        if let Some(n) = full_log.allow() {
                            log::error!(
                                "queue of {} full and its spool cannot be written: {e}: \
                                 dropped {} samples{}",
                                self.spec,
                                b.samples,
                                suppressed_note(n)
                            );
                        }
                    }
                }
            }
            None => {
                self.queue.push_spill(batch, spill);
                let dropped: usize = spill.drain(..).map(|b| b.samples).sum();
                if dropped > 0 {
                    self.counters.dropped.add(dropped as u64);
                    if let Some(n) = full_log.allow() {
                        log::error!(
                            "queue of {} full (carbon is not keeping up or is away): dropped \
                             the oldest {dropped} samples{}",
                            self.spec,
                            suppressed_note(n)
                        );
                    }
                }
            }
        }
    }

    /// Moves the memory queue to the spool, or drops it (counted); returns the samples
    /// dropped.
    fn abandon_queue(&self) -> u64 {
        let mut dropped = 0;
        match &self.spool {
            Some(sp) => {
                let mut sp = lock(sp);
                for b in self.queue.take_all() {
                    if sp.append(&b, false).is_err() {
                        dropped += b.samples as u64;
                    }
                }
            }
            None => dropped = self.queue.take_all().iter().map(|b| b.samples as u64).sum(),
        }
        self.counters.dropped.add(dropped);
        dropped
    }
}

/// The counters of a run: totals (`in`, `sent`, ...) and, with several destinations, each
/// destination's (`<label>.sent`, ...).
pub fn snapshot(counters: &Counters, dests: &[Dest]) -> Vec<(String, u64)> {
    let spool = dests.iter().any(|d| d.spool.is_some());
    let per: Vec<DestSnapshot> = dests.iter().map(Dest::snapshot).collect();
    let mut total = DestSnapshot::default();
    for p in &per {
        total.add(p);
    }
    let mut out: Vec<(String, u64)> = vec![("in".into(), counters.lines_in.get())];
    for (k, v) in total.pairs(spool) {
        out.push((k.into(), v));
        if k == "dropped" {
            out.push(("bad_lines".into(), counters.bad_lines.get()));
        }
    }
    if dests.len() > 1 {
        for (d, p) in dests.iter().zip(&per) {
            for (k, v) in p.pairs(spool) {
                out.push((format!("{}.{k}", d.label), v));
            }
        }
    }
    out
}

fn as_pairs(v: &[(String, u64)]) -> Vec<(&str, u64)> {
    v.iter().map(|(k, n)| (k.as_str(), *n)).collect()
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
    dests: Vec<Dest>,
    counters: Counters,
    control: Control,
    /// Held while a chunk of input is turned into batches, so a shutdown can wait for it.
    processing: Mutex<()>,
}

impl Shared {
    fn close_queues(&self) {
        for d in &self.dests {
            d.queue.close();
        }
    }

    fn is_closed(&self) -> bool {
        self.dests.iter().all(|d| d.queue.is_closed())
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Input ended or a signal came; everything held was sent, spooled or counted as dropped.
    Done,
    /// Debug mode's stdout reader went away.
    BrokenPipe,
    /// Reading an input failed; what was read was still sent.
    InputError(String),
}

/// The ring over the destinations, or none when there is a single one.
pub fn build_ring(settings: &Settings) -> anyhow::Result<Option<Arc<Ring>>> {
    if settings.debug || settings.destinations.len() < 2 {
        return Ok(None);
    }
    if settings.replication > settings.destinations.len() {
        log::warn!(
            "graphite_replication_factor {} is more than the {} destinations: each series goes \
             to every one",
            settings.replication,
            settings.destinations.len()
        );
    }
    let nodes = settings
        .destinations
        .iter()
        .map(Destination::node)
        .collect();
    let ring = Ring::new(
        settings.hash,
        nodes,
        settings.replication,
        settings.diverse_replicas,
    )
    .context("graphite_destinations")?;
    Ok(Some(Arc::new(ring)))
}

fn protocol_tag(p: Protocol) -> u8 {
    match p {
        Protocol::Plaintext => 0,
        Protocol::Pickle { .. } => 1,
    }
}

/// Takes the spool folder for this process (an exclusive lock on DIR/.lock, held until
/// exit): two bucky-carbons must not replay, or append to, the same spool.
pub fn lock_spool_dir(dir: &Path) -> anyhow::Result<Flock<File>> {
    std::fs::create_dir_all(dir).with_context(|| format!("spool {}", dir.display()))?;
    let path = dir.join(".lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("spool lock {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!(
            "spool {}: {e}: another bucky-carbon uses this spool folder",
            dir.display()
        )
    })
}

/// The destinations with their queues and spools (opened, so an earlier run's data is
/// found and checked now).
pub fn make_dests(settings: &Settings) -> anyhow::Result<Vec<Dest>> {
    if settings.debug {
        return Ok(vec![Dest {
            spec: Destination {
                host: "stdout".into(),
                port: 0,
                instance: None,
            },
            target: Target::Stdout,
            queue: Queue::new(settings.queue_size),
            counters: DestCounters::default(),
            spool: None,
            label: "stdout".into(),
        }]);
    }
    let mut dests = Vec::new();
    for d in &settings.destinations {
        let spool = match &settings.spool {
            Some(sp) => {
                let dir = sp.dir.join(d.spool_dir_name());
                let spool = Spool::open(&dir, protocol_tag(settings.protocol), sp.max_bytes)
                    .with_context(|| format!("spool {}", dir.display()))?;
                if !spool.is_empty() {
                    log::info!(
                        "spool of {d}: {} samples from an earlier run wait to be replayed",
                        spool.samples()
                    );
                }
                Some(Mutex::new(spool))
            }
            None => None,
        };
        dests.push(Dest {
            spec: d.clone(),
            target: Target::Tcp {
                host: d.host.clone(),
                port: d.port,
            },
            queue: Queue::new(settings.queue_size),
            counters: DestCounters::default(),
            spool,
            label: d.label(),
        });
    }
    if let Some(sp) = &settings.spool {
        warn_orphan_spools(&sp.dir, &dests);
    }
    Ok(dests)
}

/// Spool folders of destinations no longer configured hold data nobody will send.
fn warn_orphan_spools(dir: &Path, dests: &[Dest]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_dir() || dests.iter().any(|d| d.spec.spool_dir_name() == name) {
            continue;
        }
        if let Ok(s) = spool::scan(&entry.path()) {
            if s.samples > 0 {
                log::warn!(
                    "spool {}: {} samples wait for a destination that is not configured",
                    entry.path().display(),
                    s.samples
                );
            }
        }
    }
}

/// Self-metrics: every interval, the counters as samples, routed like any other.
struct Ticker {
    interval: Duration,
    next: Instant,
    metrics: SelfMetrics,
    router: Router,
    lines: Vec<u8>,
    spill: Vec<Batch>,
    full_log: RateLimit,
}

impl Ticker {
    fn new(settings: &Settings, router: Router) -> Option<Ticker> {
        let interval = settings.self_metrics.interval;
        if interval.is_zero() {
            return None;
        }
        Some(Ticker {
            interval,
            next: Instant::now() + interval,
            metrics: SelfMetrics::new(&settings.self_metrics.prefix, "carbon"),
            router,
            lines: Vec::new(),
            spill: Vec::new(),
            full_log: RateLimit::new(1, Duration::from_secs(10)),
        })
    }

    fn tick(&mut self, shared: &Shared) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + self.interval;
        self.lines.clear();
        let snap = snapshot(&shared.counters, &shared.dests);
        self.metrics
            .push(&mut self.lines, &as_pairs(&snap), unix_now().trunc());
        let (router, spill, full_log) = (&mut self.router, &mut self.spill, &mut self.full_log);
        let mut out = |d: usize, b: Batch| shared.dests[d].deliver(b, spill, full_log);
        for line in self.lines.split(|&c| c == b'\n') {
            if let Ok(f) = split_line(line) {
                router.push(&f, &mut out);
            }
        }
        router.take_partials(&mut out);
    }
}

/// Runs bucky-carbon until the input ends or a signal arrives. Returns the final counters.
pub fn run(
    settings: &Settings,
    inputs: Vec<Input>,
    shutdown: Shutdown,
) -> anyhow::Result<(Outcome, Vec<(String, u64)>)> {
    let _spool_lock = match (&settings.spool, settings.debug) {
        (Some(sp), false) => Some(lock_spool_dir(&sp.dir)?),
        _ => None,
    };
    let ring = build_ring(settings)?;
    let shared = Arc::new(Shared {
        dests: make_dests(settings)?,
        counters: Counters::default(),
        control: Control::new(shutdown.clone(), settings.shutdown_timeout),
        processing: Mutex::new(()),
    });
    let namer = Namer::new(&settings.naming);
    let mut ticker = Ticker::new(
        settings,
        Router::new(namer.clone(), settings.protocol, ring.clone()),
    );

    let reader = {
        let shared = shared.clone();
        let router = Router::new(namer, settings.protocol, ring);
        thread::Builder::new()
            .name("reader".into())
            .spawn(move || read_inputs(inputs, router, &shared))
            .context("starting the reader thread")?
    };
    let mut writers = Vec::new();
    for i in 0..shared.dests.len() {
        let sh = shared.clone();
        let settings = settings.clone();
        let name = format!("writer {}", shared.dests[i].label);
        let spawned = thread::Builder::new().name(name).spawn(move || {
            let shared = sh;
            let d = &shared.dests[i];
            let mut w = writer::Writer::new(
                d.target.clone(),
                settings.backoff.clone(),
                settings.resend_window,
                &d.queue,
                &d.counters,
                &shared.control,
            );
            if let (Some(sp), Some(cfg)) = (&d.spool, &settings.spool) {
                w = w.with_spool(sp, cfg.replay_rate);
            }
            w.run()
        });
        match spawned {
            Ok(h) => writers.push(Some(h)),
            Err(e) => {
                // The reader is running: stop it and let the writers started so far drain.
                shared.close_queues();
                log::error!("cannot start a writer thread: {e}");
                break;
            }
        }
    }

    // Wait for the end of input or a signal.
    let mut outcome = Outcome::Done;
    let mut reader = Some(reader);
    loop {
        if let Some(t) = ticker.as_mut() {
            t.tick(&shared);
        }
        if reader.as_ref().is_some_and(|r| r.is_finished()) {
            if let Some(Ok(Err(e))) = reader.take().map(|r| r.join()) {
                outcome = Outcome::InputError(e);
            }
            break;
        }
        if shutdown.wait_timeout(Duration::from_millis(100)) {
            log::info!("received a signal: sending what is held, then exiting");
            shared.control.start_deadline();
            // Let the reader finish the chunk it is on, then stop it taking more.
            let _chunk = shared.processing.lock();
            shared.close_queues();
            break;
        }
        if writers.iter().flatten().all(|w| w.is_finished()) {
            // Only a broken stdout ends the writers before the input does.
            break;
        }
    }

    // Let the writers drain; a signal now starts the clock, and the clock is enforced here
    // too in case a writer is stuck in a write to a stalled carbon.
    loop {
        if let Some(t) = ticker.as_mut() {
            t.tick(&shared);
        }
        for w in writers.iter_mut() {
            if w.as_ref().is_some_and(|h| h.is_finished()) {
                match w.take().map(|h| h.join()) {
                    Some(Ok(Err(writer::Stop::BrokenPipe))) => outcome = Outcome::BrokenPipe,
                    Some(Ok(Ok(()))) | None => {}
                    Some(Err(_)) => {
                        outcome = Outcome::InputError("a writer thread panicked".into())
                    }
                }
            }
        }
        if writers.iter().all(Option::is_none) {
            break;
        }
        if shutdown.wait_timeout(Duration::from_millis(50)) {
            shared.control.start_deadline();
        }
        if let Some(d) = shared.control.deadline() {
            if Instant::now() > d + Duration::from_secs(2) {
                for (i, w) in writers.iter().enumerate() {
                    if w.is_none() {
                        continue;
                    }
                    let dest = &shared.dests[i];
                    let spool = dest.spool.is_some();
                    let n = dest.abandon_queue();
                    if spool {
                        log::error!(
                            "{} did not take the data in time: the rest of its queue went to \
                             the spool ({n} samples dropped)",
                            dest.spec
                        );
                    } else {
                        log::error!(
                            "{} did not take the data in time: dropped {n} queued samples",
                            dest.spec
                        );
                    }
                }
                break;
            }
        }
    }
    for d in &shared.dests {
        if let Some(sp) = &d.spool {
            let files = lock(sp).take_unsynced();
            d.counters.spool_errors.add(spool::sync_all(files));
        }
    }
    Ok((outcome, snapshot(&shared.counters, &shared.dests)))
}

fn read_inputs(inputs: Vec<Input>, mut router: Router, shared: &Shared) -> Result<(), String> {
    let mut bad_log = RateLimit::default();
    let mut full_log = RateLimit::new(1, Duration::from_secs(10));
    let mut spill = Vec::new();
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
            if shared.is_closed() {
                return result;
            }
            let mut out =
                |d: usize, b: Batch| shared.dests[d].deliver(b, &mut spill, &mut full_log);
            // Counted locally: one atomic add per chunk, not per line.
            let (mut good, mut bad) = (0u64, 0u64);
            lines.drain(|line_no, line| {
                let err = match line {
                    Line::Text(text) => match split_line(text) {
                        Ok(f) => {
                            good += 1;
                            router.push(&f, &mut out);
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
            router.take_partials(&mut out);
            if !more {
                if result.is_err() {
                    break 'inputs;
                }
                break;
            }
        }
    }
    shared.close_queues();
    result
}

/// `--spool-status`: what waits in each destination's spool folder under `dir`.
pub fn spool_status(dir: &Path, out: &mut impl io::Write) -> anyhow::Result<()> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("spool {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    for path in names {
        let s = spool::scan(&path).with_context(|| format!("spool {}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        writeln!(
            out,
            "{name} samples={} resend_samples={} records={} segments={} bytes={} corrupt={}",
            s.samples, s.resend_samples, s.records, s.segments, s.bytes, s.corrupt
        )?;
    }
    Ok(())
}

/// The whole program after argument parsing: returns the process exit code.
pub fn main_with(args: Args) -> anyhow::Result<u8> {
    // Log config problems at the default level until the configured one is known.
    bucky_proto::log::init("bucky-carbon", log::LevelFilter::Info);
    let cfg = args.common.load_config("bucky-carbon")?;
    let settings = Settings::resolve(&args, &cfg)?;
    log::set_max_level(settings.log_level);
    if args.spool_status {
        let Some(sp) = &settings.spool else {
            anyhow::bail!("--spool-status needs --spool DIR (or graphite_spool_dir)");
        };
        spool_status(&sp.dir, &mut io::stdout().lock())?;
        return Ok(0);
    }
    let inputs = open_inputs(&args.inputs)?;
    bucky_proto::privs::drop_privileges(settings.uid.as_deref(), settings.gid.as_deref())?;
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    let (outcome, counters) = run(&settings, inputs, shutdown)?;
    let totals: Vec<(&str, u64)> = as_pairs(&counters)
        .into_iter()
        .filter(|(k, _)| !k.contains('.'))
        .collect();
    log::info!("exiting: {}", summary(&totals));
    if settings.destinations.len() > 1 && !settings.debug {
        for d in &settings.destinations {
            let prefix = format!("{}.", d.label());
            let mine: Vec<(&str, u64)> = as_pairs(&counters)
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix.as_str()).map(|k| (k, v)))
                .collect();
            log::info!("{d}: {}", summary(&mine));
        }
    }
    Ok(match outcome {
        Outcome::Done | Outcome::BrokenPipe => 0,
        Outcome::InputError(e) => {
            log::error!("{e}");
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(argv: &[&str], toml: &str) -> anyhow::Result<Settings> {
        let mut full = vec!["bucky-carbon"];
        full.extend_from_slice(argv);
        let args = Args::try_parse_from(full)?;
        let cfg = Config::parse_toml(toml, "test.toml")?;
        Settings::resolve(&args, &cfg)
    }

    #[test]
    fn one_destination_by_default() {
        let s = resolve(&[], "").unwrap();
        assert_eq!(
            s.destinations,
            vec![Destination::parse("127.0.0.1:2003", 2003).unwrap()]
        );
        assert_eq!(
            (s.hash, s.replication, s.diverse_replicas),
            (HashType::Carbon, 1, true)
        );
        assert!(s.spool.is_none());
        let s = resolve(&["--pickle", "--graphite-ip", "c1"], "").unwrap();
        assert_eq!(s.destinations[0].to_string(), "c1:2004");
    }

    #[test]
    fn destinations_from_flags_or_the_file() {
        let file = "graphite_destinations = [\"10.0.0.1:2004:a\", \"10.0.0.2\"]\n\
                    graphite_replication_factor = 2\n\
                    graphite_diverse_replicas = false\n\
                    graphite_hash_type = \"carbon-c-relay\"\n";
        let s = resolve(&["--pickle"], file).unwrap();
        let d: Vec<String> = s.destinations.iter().map(|d| d.to_string()).collect();
        assert_eq!(d, vec!["10.0.0.1:2004:a", "10.0.0.2:2004"]);
        assert_eq!(
            (s.hash, s.replication, s.diverse_replicas),
            (HashType::CarbonCRelay, 2, false)
        );
        // Flags beat the file, a single --graphite-ip too.
        let s = resolve(&["--destination", "h:1:x"], file).unwrap();
        assert_eq!(s.destinations.len(), 1);
        assert_eq!(s.destinations[0].instance.as_deref(), Some("x"));
        let s = resolve(&["--graphite-ip", "single"], file).unwrap();
        assert_eq!(s.destinations[0].to_string(), "single:2003");
        assert!(resolve(&["--destination", "a:1", "--graphite-port", "2"], "").is_err());
    }

    #[test]
    fn refused_settings_name_the_key() {
        let err = |argv: &[&str], toml: &str| format!("{:#}", resolve(argv, toml).unwrap_err());
        assert!(err(&["--replication-factor", "0"], "").contains("graphite_replication_factor"));
        assert!(err(&["--hash", "fnv"], "").contains("\"fnv\""));
        assert!(err(&["--hash", "carbon-c-relay", "--diverse-replicas"], "")
            .contains("graphite_diverse_replicas"));
        assert!(err(&["--spool", "/x", "--spool-max-bytes", "1000"], "")
            .contains("graphite_spool_max_bytes"));
        assert!(
            err(&["--spool", "/x"], "graphite_spool_replay_rate = -1.0\n")
                .contains("graphite_spool_replay_rate")
        );
        assert!(err(&["--destination", "h:nope"], "").contains("h:nope"));
    }

    #[test]
    fn spool_settings() {
        let s = resolve(&["--spool", "/var/spool/bucky"], "").unwrap();
        assert_eq!(
            s.spool,
            Some(SpoolSettings {
                dir: "/var/spool/bucky".into(),
                max_bytes: 1 << 30,
                replay_rate: 50_000.0
            })
        );
        let s = resolve(
            &["--diverse-replicas=false"],
            "graphite_spool_dir = \"/s\"\ngraphite_spool_max_bytes = 2097152\n\
             graphite_spool_replay_rate = 0\n",
        )
        .unwrap();
        assert!(!s.diverse_replicas);
        let sp = s.spool.unwrap();
        assert_eq!((sp.max_bytes, sp.replay_rate), (2 << 20, 0.0));
    }

    #[test]
    fn queue_overflow_spills_to_the_spool_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = |spool: bool| Dest {
            spec: Destination::parse("h:1", 1).unwrap(),
            target: Target::Stdout,
            queue: Queue::new(10),
            counters: DestCounters::default(),
            spool: spool.then(|| Mutex::new(Spool::open(dir.path(), 0, 1 << 30).unwrap())),
            label: "h_1".into(),
        };
        let batch = |i: usize| Batch {
            bytes: format!("b{i} 1 1\n").into_bytes(),
            samples: 4,
        };
        let (mut spill, mut log) = (Vec::new(), RateLimit::default());
        let with = d(true);
        for i in 0..6 {
            with.deliver(batch(i), &mut spill, &mut log);
        }
        // 10 samples fit: the newest two batches stay in memory, the oldest four are spooled.
        assert_eq!(with.queue.len(), 8);
        let mut sp = lock(with.spool.as_ref().unwrap());
        for i in 0..4 {
            assert_eq!(sp.peek().unwrap().batch, batch(i));
            sp.consume();
        }
        assert!(sp.peek().is_none());
        drop(sp);
        assert_eq!(with.snapshot().spooled, 16);
        assert_eq!(with.snapshot().dropped, 0);
        // Without a spool they are dropped and counted.
        let without = d(false);
        for i in 0..6 {
            without.deliver(batch(i), &mut spill, &mut log);
        }
        assert_eq!(without.snapshot().dropped, 16);
    }

    #[test]
    fn self_metrics_name_each_destination() {
        let settings = resolve(
            &[
                "--destination",
                "127.0.0.1:1:a",
                "--destination",
                "127.0.0.1:2:b",
            ],
            "",
        )
        .unwrap();
        let dests = make_dests(&settings).unwrap();
        dests[1].counters.sent.add(5);
        let counters = Counters::default();
        counters.lines_in.add(5);
        let snap = snapshot(&counters, &dests);
        let get = |k: &str| snap.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(get("in"), Some(5));
        assert_eq!(get("sent"), Some(5));
        assert_eq!(get("127_0_0_1_2_b.sent"), Some(5));
        assert_eq!(get("127_0_0_1_1_a.sent"), Some(0));
        assert_eq!(get("spooled"), None, "no spool counters without a spool");
    }
}
