//! bucky-statsd: a StatsD server. Receives StatsD lines over UDP (and TCP when enabled),
//! aggregates them per flush interval and writes the results to stdout as samples
//! (`NAME VALUE TIMESTAMP`), for `bucky-process` and `bucky-carbon` downstream.
//!
//! * Protocol: spec §3.2 with decisions.md §3 ([`parse`]).
//! * Speed: one receiving thread per socket, sockets sharing the port with SO_REUSEPORT,
//!   recvmmsg in batches, per-thread aggregation merged at flush time ([`server`]).
//! * Safety: a cap on distinct keys and on values per interval ([`aggregate::Limits`]); kernel
//!   drops counted; a final flush of everything received on SIGTERM/SIGINT.

pub mod aggregate;
pub mod flush;
pub mod gauges_file;
pub mod parse;
pub mod server;
pub mod tcp;
pub mod udp;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context};
use bucky_proto::capture::{
    CaptureWriter, Replay, ReplayArgs, ReplayOptions, ReplaySettings, UNKNOWN_SOURCE,
};
use bucky_proto::config::{pick, Config};
use bucky_proto::io::{is_broken_pipe, LineWriter};
use bucky_proto::log::{suppressed_note, RateLimit};
use bucky_proto::shutdown::Shutdown;
use bucky_proto::stats::{summary, unix_now, Counter, SelfMetrics, SelfMetricsOptions};
use clap::Parser;

use crate::aggregate::{Aggregate, Ingest, Limits};
use crate::flush::{FlushOptions, Flusher, Names, TimerStats};
use crate::server::{end_time, interval_end, Hub};
use crate::tcp::{TcpCounters, TcpOptions};

/// How long the flusher waits for the threads' aggregates at a flush.
const COLLECT_WAIT: Duration = Duration::from_secs(2);
/// How long the threads may take to drain their sockets and stop.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Command line of bucky-statsd. Every flag overrides the config file key named in its help.
#[derive(Debug, Parser)]
#[command(
    name = "bucky-statsd",
    version,
    about = "A StatsD server: StatsD over UDP (and TCP) in, aggregated samples on stdout.",
    long_about = "A StatsD server: StatsD over UDP (and TCP) in, aggregated samples on stdout.\n\n\
        Every flush interval the counters, timers, gauges and sets received are written to \
        stdout as samples (`NAME VALUE TIMESTAMP`), named as the original bucky and Etsy \
        statsd name them; pipe them into bucky-carbon. On SIGTERM/SIGINT everything received \
        is flushed before exiting. With --replay it reads recorded traffic (its own --capture \
        files, or tcpdump's pcap/pcapng) instead of the sockets and flushes on the recorded \
        clock, then exits."
)]
pub struct Args {
    /// Address to receive on (statsd_ip) [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub statsd_ip: Option<String>,

    /// UDP port (statsd_port) [default: 8125]
    #[arg(long, value_name = "PORT")]
    pub statsd_port: Option<u16>,

    /// Also receive newline-framed StatsD over TCP (statsd_tcp_enabled) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tcp: Option<bool>,

    /// TCP port (statsd_tcp_port) [default: the UDP port]
    #[arg(long, value_name = "PORT")]
    pub tcp_port: Option<u16>,

    /// Open TCP connections at most; more are closed at once and counted
    /// (statsd_tcp_max_connections) [default: 1000]
    #[arg(long, value_name = "N")]
    pub tcp_max_connections: Option<usize>,

    /// Seconds between flushes; also the divisor of counter rates (statsd_flush_time)
    /// [default: 10]
    #[arg(long, value_name = "SECS")]
    pub flush_time: Option<f64>,

    /// Name counters `stats.<key>` / `stats_counts.<key>` and ignore the prefixes below
    /// (statsd_legacy_namespace) [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub legacy_namespace: Option<bool>,

    /// First name component, non-legacy names only; "" for none (statsd_global_prefix)
    /// [default: stats]
    #[arg(long, value_name = "PREFIX")]
    pub global_prefix: Option<String>,

    /// Counter prefix, non-legacy (statsd_prefix_counter) [default: counters]
    #[arg(long, value_name = "PREFIX")]
    pub prefix_counter: Option<String>,

    /// Timer prefix, non-legacy (statsd_prefix_timer) [default: timers]
    #[arg(long, value_name = "PREFIX")]
    pub prefix_timer: Option<String>,

    /// Gauge prefix, non-legacy (statsd_prefix_gauge) [default: gauges]
    #[arg(long, value_name = "PREFIX")]
    pub prefix_gauge: Option<String>,

    /// Set prefix, non-legacy (statsd_prefix_set) [default: sets]
    #[arg(long, value_name = "PREFIX")]
    pub prefix_set: Option<String>,

    /// Timer percentiles, comma-separated, each in (0, 100] (statsd_percentile_thresholds)
    /// [default: 90]
    #[arg(long, value_name = "P,...", value_delimiter = ',')]
    pub percentile_thresholds: Option<Vec<f64>>,

    /// Forget counters, timers and sets not updated during an interval instead of sending 0
    /// (statsd_delete_idlestats) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub delete_idlestats: Option<bool>,

    /// With --delete-idlestats: forget idle counters (statsd_delete_counters) [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub delete_counters: Option<bool>,

    /// With --delete-idlestats: forget idle timers (statsd_delete_timers) [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub delete_timers: Option<bool>,

    /// With --delete-idlestats: forget idle sets (statsd_delete_sets) [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub delete_sets: Option<bool>,

    /// With --delete-idlestats: send only gauges updated during the interval
    /// (statsd_onlychanged_gauges) [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub onlychanged_gauges: Option<bool>,

    /// Load gauges at start and save them at exit (statsd_persistent_gauges) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub persistent_gauges: Option<bool>,

    /// The gauges file, relative to --directory (statsd_gauges_savefile)
    /// [default: gauges.save]
    #[arg(long, value_name = "FILE")]
    pub gauges_savefile: Option<PathBuf>,

    /// Folder of the gauges file, created if missing (directory) [default: /var/lib/bucky]
    #[arg(long, value_name = "DIR")]
    pub directory: Option<PathBuf>,

    /// Receiving threads, each with its own UDP socket on the port (SO_REUSEPORT); 0 means
    /// one per core (statsd_threads) [default: 0]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Receive buffer per UDP socket, bytes; as root it may exceed net.core.rmem_max
    /// (statsd_recv_buffer) [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub recv_buffer: Option<usize>,

    /// Distinct keys held at most; samples of new keys beyond it are dropped and counted
    /// (statsd_max_keys) [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_keys: Option<usize>,

    /// Timer values and set members held per flush interval at most; more are dropped and
    /// counted (statsd_max_values) [default: 10000000]
    #[arg(long, value_name = "N")]
    pub max_values: Option<u64>,

    /// Turn DogStatsD tags (`|#k:v`) into Graphite tags (`name;k=v`); when false they are
    /// dropped and counted (statsd_tags_enabled) [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tags: Option<bool>,

    #[command(flatten)]
    pub capture_replay: ReplayArgs,

    #[command(flatten)]
    pub common: bucky_proto::cli::CommonArgs,
}

/// Everything bucky-statsd needs, resolved from flags, config file and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub udp: SocketAddr,
    pub tcp: Option<SocketAddr>,
    pub tcp_options: TcpOptions,
    pub threads: usize,
    pub recv_buffer: usize,
    pub max_keys: usize,
    pub max_values: u64,
    pub tags: bool,
    pub flush: FlushOptions,
    /// The persistent gauges file, when they are on.
    pub gauges_file: Option<PathBuf>,
    pub self_metrics: SelfMetricsOptions,
    pub log_level: log::LevelFilter,
    /// The user and group to switch to once the sockets are bound (uid, gid).
    pub uid: Option<String>,
    pub gid: Option<String>,
    /// Record the UDP datagrams to this file.
    pub capture: Option<PathBuf>,
    /// Replay files instead of sockets.
    pub replay: Option<ReplaySettings>,
}

fn resolve(ip: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (ip, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {ip}"))?
        .next()
        .with_context(|| format!("{ip} has no address"))
}

/// A prefix flag or key: the flag when given, else the key (`None` in the file means no
/// prefix), else the default.
fn prefix(
    flag: &Option<String>,
    cfg: &Config,
    key: &str,
    default: &str,
) -> anyhow::Result<Option<String>> {
    if let Some(f) = flag {
        return Ok(Some(f.clone()));
    }
    Ok(match cfg.get_nullable::<String>(key)? {
        None => Some(default.to_string()),
        Some(v) => v,
    })
}

impl Settings {
    /// Flags beat the config file, which beats the defaults.
    pub fn resolve(args: &Args, cfg: &Config) -> anyhow::Result<Settings> {
        let ip = pick(args.statsd_ip.clone(), cfg, "statsd_ip", "127.0.0.1".into())?;
        let port = pick(args.statsd_port, cfg, "statsd_port", 8125)?;
        let udp = resolve(&ip, port)?;
        let tcp_on = pick(args.tcp, cfg, "statsd_tcp_enabled", false)?;
        let tcp_port = pick(args.tcp_port, cfg, "statsd_tcp_port", port)?;
        let tcp = if tcp_on {
            Some(resolve(&ip, tcp_port)?)
        } else {
            None
        };
        let tcp_options = TcpOptions {
            max_connections: pick(
                args.tcp_max_connections,
                cfg,
                "statsd_tcp_max_connections",
                1000,
            )?
            .max(1),
            max_line: 64 * 1024,
        };

        let flush_time = pick(args.flush_time, cfg, "statsd_flush_time", 10.0)?;
        if !(flush_time.is_finite() && (0.1..=86400.0).contains(&flush_time)) {
            bail!("statsd_flush_time: {flush_time} is not a number of seconds from 0.1 to 86400");
        }
        let legacy = pick(args.legacy_namespace, cfg, "statsd_legacy_namespace", true)?;
        let names = if legacy {
            Names::legacy()
        } else {
            let g = prefix(&args.global_prefix, cfg, "statsd_global_prefix", "stats")?;
            let c = prefix(
                &args.prefix_counter,
                cfg,
                "statsd_prefix_counter",
                "counters",
            )?;
            let t = prefix(&args.prefix_timer, cfg, "statsd_prefix_timer", "timers")?;
            let ga = prefix(&args.prefix_gauge, cfg, "statsd_prefix_gauge", "gauges")?;
            let s = prefix(&args.prefix_set, cfg, "statsd_prefix_set", "sets")?;
            Names::prefixed(
                g.as_deref(),
                c.as_deref(),
                t.as_deref(),
                ga.as_deref(),
                s.as_deref(),
            )
        };
        let thresholds = pick(
            args.percentile_thresholds.clone(),
            cfg,
            "statsd_percentile_thresholds",
            vec![90.0],
        )?;
        if let Some(bad) = thresholds.iter().find(|p| !(**p > 0.0 && **p <= 100.0)) {
            bail!("statsd_percentile_thresholds: {bad} is not a percentile in (0, 100]");
        }
        let d = TimerStats::default();
        let timer = TimerStats {
            mean: cfg.get_or("statsd_timer_mean", d.mean)?,
            upper: cfg.get_or("statsd_timer_upper", d.upper)?,
            lower: cfg.get_or("statsd_timer_lower", d.lower)?,
            count: cfg.get_or("statsd_timer_count", d.count)?,
            count_ps: cfg.get_or("statsd_timer_count_ps", d.count_ps)?,
            sum: cfg.get_or("statsd_timer_sum", d.sum)?,
            sum_squares: cfg.get_or("statsd_timer_sum_squares", d.sum_squares)?,
            median: cfg.get_or("statsd_timer_median", d.median)?,
            std: cfg.get_or("statsd_timer_std", d.std)?,
        };
        // As 2.3.0: the per-kind switches only count with delete_idlestats.
        let idle = pick(args.delete_idlestats, cfg, "statsd_delete_idlestats", false)?;
        let flush = FlushOptions {
            flush_time,
            names,
            thresholds,
            timer,
            delete_counters: idle
                && pick(args.delete_counters, cfg, "statsd_delete_counters", true)?,
            delete_timers: idle && pick(args.delete_timers, cfg, "statsd_delete_timers", true)?,
            delete_sets: idle && pick(args.delete_sets, cfg, "statsd_delete_sets", true)?,
            only_changed_gauges: idle
                && pick(
                    args.onlychanged_gauges,
                    cfg,
                    "statsd_onlychanged_gauges",
                    true,
                )?,
        };

        let persistent = pick(
            args.persistent_gauges,
            cfg,
            "statsd_persistent_gauges",
            false,
        )?;
        let gauges_file = if persistent {
            let dir = pick(
                args.directory.clone(),
                cfg,
                "directory",
                "/var/lib/bucky".into(),
            )?;
            let file = pick(
                args.gauges_savefile.clone(),
                cfg,
                "statsd_gauges_savefile",
                "gauges.save".into(),
            )?;
            Some(dir.join(file))
        } else {
            None
        };

        let threads = match pick(args.threads, cfg, "statsd_threads", 0)? {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let common = args.common.resolve(cfg)?;
        let replay = args.capture_replay.replay_settings()?;
        Ok(Settings {
            udp,
            tcp,
            tcp_options,
            threads,
            recv_buffer: pick(args.recv_buffer, cfg, "statsd_recv_buffer", 8 << 20)?,
            max_keys: pick(args.max_keys, cfg, "statsd_max_keys", 1_000_000)?,
            max_values: pick(args.max_values, cfg, "statsd_max_values", 10_000_000)?,
            tags: pick(args.tags, cfg, "statsd_tags_enabled", true)?,
            flush,
            gauges_file,
            self_metrics: common.self_metrics,
            log_level: common.log_level,
            uid: common.uid,
            gid: common.gid,
            capture: args.capture_replay.capture.clone(),
            replay,
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A signal came (or the replay ended); everything received was flushed.
    Done,
    /// Our stdout's reader went away.
    BrokenPipe,
    /// A receiving thread died (a bug): what it held may be lost.
    WorkerDied,
    /// This many replay files could not be read to their end.
    ReplayErrors(u64),
}

/// Writes the lines of `buf` whole and flushes.
fn write_lines<W: Write>(w: &mut LineWriter<W>, buf: &[u8]) -> io::Result<()> {
    let mut start = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[start..]) {
        w.write_lines(&buf[start..start + i + 1])?;
        start += i + 1;
    }
    w.flush()
}

/// Counters kept outside the flusher: TCP and capture.
#[derive(Debug, Default)]
struct SideCounters {
    tcp: Arc<TcpCounters>,
    kernel_drops: Counter,
    captured: Counter,
    capture_errors: Counter,
}

/// The counters emitted as `bucky.statsd.<name>` and logged at exit.
fn counters(flusher: &Flusher, limits: &Limits, side: &SideCounters) -> Vec<(&'static str, u64)> {
    let s = flusher.stats();
    let t = flusher.totals();
    vec![
        ("datagrams", s.datagrams),
        ("metrics", s.metrics),
        ("bad_lines_seen", s.bad_lines),
        ("kernel_drops", side.kernel_drops.get()),
        ("keys_over_cap", s.keys_over_cap),
        ("values_over_cap", s.values_over_cap),
        ("keys_evicted", t.keys_evicted),
        ("keys_held", limits.held() as u64),
        ("tags_dropped", s.tags_dropped),
        ("not_finite", t.not_finite),
        ("flushes", t.flushes),
        ("samples_out", t.samples),
        ("tcp_connections", side.tcp.connections.get()),
        ("tcp_refused", side.tcp.refused.get()),
        ("tcp_lines_too_long", side.tcp.lines_too_long.get()),
        ("captured", side.captured.get()),
        ("capture_errors", side.capture_errors.get()),
    ]
}

/// Takes in the datagrams the kernel dropped since the last look, and says so.
fn count_drops(drops: &mut udp::SocketDrops, side: &SideCounters) {
    let n = drops.new_drops();
    if n > 0 {
        side.kernel_drops.add(n);
        log::warn!(
            "the kernel dropped {n} datagrams on full socket buffers ({} so far): raise \
             --recv-buffer, or --threads if senders are many",
            side.kernel_drops.get()
        );
    }
}

/// Where flushes go: whole lines to stdout, with the self-metrics now and then.
struct Output<W: Write> {
    writer: LineWriter<W>,
    buf: Vec<u8>,
    self_metrics: SelfMetrics,
    /// Seconds between self-metrics, 0 for none.
    every: f64,
    /// When the next self-metrics are due, on the run's clock.
    next_self: Option<f64>,
}

impl<W: Write> Output<W> {
    fn new(out: W, settings: &Settings) -> Output<W> {
        Output {
            writer: LineWriter::new(out),
            buf: Vec::with_capacity(1 << 16),
            self_metrics: SelfMetrics::new(&settings.self_metrics.prefix, "statsd"),
            every: settings.self_metrics.interval.as_secs_f64(),
            next_self: None,
        }
    }

    /// Flushes `flusher` at timestamp `ts`; `now` is the run's clock (wall or replayed).
    fn flush(
        &mut self,
        flusher: &mut Flusher,
        ts: f64,
        now: f64,
        last: bool,
        counters: &dyn Fn(&Flusher) -> Vec<(&'static str, u64)>,
    ) -> io::Result<()> {
        self.buf.clear();
        flusher.flush(ts, &mut self.buf);
        if self.every > 0.0 {
            let due = *self.next_self.get_or_insert(now + self.every);
            if last || now >= due {
                self.next_self = Some(now + self.every);
                self.self_metrics
                    .push(&mut self.buf, &counters(flusher), ts);
            }
        }
        write_lines(&mut self.writer, &self.buf)
    }
}

fn load_gauges(path: &Path, flusher: &mut Flusher) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            log::error!("cannot create {}: {e}", dir.display());
        }
    }
    match gauges_file::load(path) {
        Ok(None) => log::info!("no saved gauges at {}", path.display()),
        Ok(Some((gauges, skipped))) => {
            let offered = gauges.len();
            let n = flusher.load_gauges(gauges);
            log::info!("loaded {n} saved gauges from {}", path.display());
            if !skipped.is_empty() || n < offered {
                log::warn!(
                    "{}: skipped {} entries that are not numbers and {} over the key cap",
                    path.display(),
                    skipped.len(),
                    offered - n
                );
            }
        }
        Err(e) => log::error!("cannot load saved gauges: {e}"),
    }
}

fn save_gauges(path: &Path, flusher: &Flusher) {
    let gauges = flusher.gauge_values();
    match gauges_file::save(path, &gauges) {
        Ok(()) => log::info!("saved {} gauges to {}", gauges.len(), path.display()),
        Err(e) => log::error!("cannot save gauges: {e}"),
    }
}

/// The capture file shared by the receiving threads.
struct Capture {
    writer: Mutex<CaptureWriter>,
    log: Mutex<RateLimit>,
}

impl Capture {
    fn write(&self, side: &SideCounters, time: f64, source: Option<SocketAddr>, bytes: &[u8]) {
        let source = source.unwrap_or(UNKNOWN_SOURCE);
        let result = match self.writer.lock() {
            Ok(mut w) => w.write_parts(time, source, bytes),
            Err(p) => p.into_inner().write_parts(time, source, bytes),
        };
        match result {
            Ok(()) => side.captured.inc(),
            Err(e) => {
                side.capture_errors.inc();
                let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = log.allow() {
                    log::error!("capture: {e}{}", suppressed_note(n));
                }
            }
        }
    }

    fn flush(&self, side: &SideCounters) {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = w.flush() {
            side.capture_errors.inc();
            log::error!("capture: {e}");
        }
    }
}

/// Binds the sockets, then receives and flushes until `shutdown`; the final flush holds
/// everything received. Samples go to `out`. With `settings.replay` it reads the replay
/// files instead of sockets (see [`replay`]).
pub fn run<W: Write>(settings: &Settings, shutdown: Shutdown, out: W) -> anyhow::Result<Outcome> {
    if let Some(r) = &settings.replay {
        return replay(settings, r, shutdown, out);
    }
    let limits = Arc::new(Limits::new(settings.max_keys, settings.max_values));
    let mut flusher = Flusher::new(settings.flush.clone(), limits.clone());
    if let Some(path) = &settings.gauges_file {
        load_gauges(path, &mut flusher);
    }

    let bound = udp::bind_sockets(settings.udp, settings.threads, settings.recv_buffer)?;
    let tcp_listener = match settings.tcp {
        Some(addr) => Some(TcpListener::bind(addr).with_context(|| format!("binding TCP {addr}"))?),
        None => None,
    };
    let side = Arc::new(SideCounters::default());
    let capture = match &settings.capture {
        Some(path) => {
            let w = CaptureWriter::create(path)?;
            log::info!("capturing every UDP datagram to {}", path.display());
            Some(Arc::new(Capture {
                writer: Mutex::new(w),
                log: Mutex::new(RateLimit::new(1, Duration::from_secs(10))),
            }))
        }
        None => None,
    };
    // Sockets bound and files open: root is no longer needed.
    bucky_proto::privs::drop_privileges(settings.uid.as_deref(), settings.gid.as_deref())?;
    log::info!(
        "receiving StatsD on UDP {} with {} thread(s); receive buffer {} bytes asked, {} granted \
         by the kernel{}",
        bound.addr,
        bound.sockets.len(),
        settings.recv_buffer,
        bound.granted,
        if bound.forced {
            " (forced, as root)"
        } else {
            ""
        }
    );
    if bound.granted / 2 < settings.recv_buffer {
        log::warn!(
            "the kernel granted less receive buffer than asked (net.core.rmem_max caps it unless \
             bucky-statsd runs as root): bursts may overflow it; kernel drops are counted in \
             bucky.statsd.kernel_drops"
        );
    }
    if let Some(l) = &tcp_listener {
        log::info!(
            "receiving StatsD on TCP {}",
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
    }

    let mut drops = bound.drops();
    if drops.total().is_none() {
        log::warn!("cannot read /proc/net/udp: kernel drops will not be counted");
    }
    // The sockets stay open (and in /proc/net/udp) until their last drops are counted, after
    // the threads that receive on them have stopped.
    let keep_open: Vec<std::net::UdpSocket> = bound
        .sockets
        .iter()
        .filter_map(|s| s.try_clone().ok())
        .collect();
    let workers = bound.sockets.len() + usize::from(tcp_listener.is_some());
    let (mut hub, exchanges) = Hub::new(workers, settings.flush.flush_time);
    let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(workers);
    let mut exchanges = exchanges.into_iter();
    let tap: Option<Arc<udp::Tap>> = capture.clone().map(|c| {
        let side = side.clone();
        Arc::new(move |t: f64, s: Option<SocketAddr>, b: &[u8]| c.write(&side, t, s, b))
            as Arc<udp::Tap>
    });
    for (i, sock) in bound.sockets.into_iter().enumerate() {
        let Some(ex) = exchanges.next() else { break };
        let ingest = Ingest::new(limits.clone(), settings.tags);
        let tap = tap.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("udp-{i}"))
                .spawn(move || udp::worker(sock, ingest, ex, tap))
                .context("starting a receiving thread")?,
        );
    }
    if let (Some(listener), Some(ex)) = (tcp_listener, exchanges.next()) {
        let ingest = Ingest::new(limits.clone(), settings.tags);
        let opts = settings.tcp_options;
        let counters = side.tcp.clone();
        handles.push(
            std::thread::Builder::new()
                .name("tcp".into())
                .spawn(move || tcp::worker(listener, opts, ingest, ex, counters))
                .context("starting the TCP thread")?,
        );
    }

    let ft = settings.flush.flush_time;
    let count = |f: &Flusher| counters(f, &limits, &side);
    let mut output = Output::new(out, settings);
    let mut next = interval_end(unix_now(), ft);
    let mut outcome = Outcome::Done;
    let mut late_log = RateLimit::new(1, Duration::from_secs(60));
    loop {
        let now = unix_now();
        if end_time(next, ft) - now > ft + 1.0 {
            // The wall clock went back: resume on the new clock.
            next = interval_end(now, ft);
        }
        let wait = (end_time(next, ft) - now).max(0.0);
        if shutdown.wait_timeout(Duration::from_secs_f64(wait)) {
            break;
        }
        let now = unix_now();
        if now < end_time(next, ft) {
            continue;
        }
        let end = next;
        let ts = end_time(end, ft).floor();
        next = (end + 1).max(interval_end(now, ft)); // after a stall or clock jump, catch up
        if !hub.collect(&mut flusher, end, COLLECT_WAIT) {
            if let Some(n) = late_log.allow() {
                log::warn!(
                    "a receiving thread did not hand its data over in time: it goes into the \
                     next flush{}",
                    suppressed_note(n)
                );
            }
        }
        count_drops(&mut drops, &side);
        if let Some(c) = &capture {
            c.flush(&side);
        }
        if let Err(e) = output.flush(&mut flusher, ts, now, false, &count) {
            if is_broken_pipe(&e) {
                outcome = Outcome::BrokenPipe;
                break;
            }
            return Err(e).context("writing to stdout");
        }
        if handles.iter().any(JoinHandle::is_finished) {
            log::error!("a receiving thread stopped unexpectedly: stopping");
            outcome = Outcome::WorkerDied;
            break;
        }
    }

    if outcome == Outcome::Done {
        log::info!("stopping: draining the sockets for a final flush");
    }
    if !hub.stop(&mut flusher, STOP_WAIT) {
        log::error!(
            "{} of {workers} receiving threads did not stop within {STOP_WAIT:?}",
            workers - hub.finished()
        );
    }
    count_drops(&mut drops, &side);
    drop(keep_open);
    if outcome != Outcome::BrokenPipe {
        // The final flush belongs to the interval that was running: stamping it with that
        // interval's time keeps it from overwriting the previous flush's Graphite slot.
        let ts = end_time(next, ft).floor();
        if let Err(e) = output.flush(&mut flusher, ts, unix_now(), true, &count) {
            if is_broken_pipe(&e) {
                outcome = Outcome::BrokenPipe;
            } else {
                log::error!("writing the final flush: {e}");
            }
        }
    }
    for h in handles {
        if h.join().is_err() {
            outcome = Outcome::WorkerDied;
        }
    }
    if let Some(c) = &capture {
        c.flush(&side);
        log::info!("capture: {} datagrams written", side.captured.get());
    }
    if let Some(path) = &settings.gauges_file {
        save_gauges(path, &flusher);
    }
    log::info!("exiting: {}", summary(&count(&flusher)));
    Ok(outcome)
}

/// Replays recorded datagrams instead of receiving: capture files of `--capture`, or tcpdump's
/// pcap/pcapng (UDP to the StatsD port). Flushes follow the recorded clock: a flush is due
/// when a datagram's arrival time passes the next boundary, and carries that boundary as its
/// timestamp, so a replay gives the samples the live run gave. Ends with a final flush.
fn replay<W: Write>(
    settings: &Settings,
    r: &ReplaySettings,
    shutdown: Shutdown,
    out: W,
) -> anyhow::Result<Outcome> {
    if settings.gauges_file.is_some() {
        log::info!("replay: persistent gauges are neither loaded nor saved");
    }
    let limits = Arc::new(Limits::new(settings.max_keys, settings.max_values));
    let mut flusher = Flusher::new(settings.flush.clone(), limits.clone());
    let mut ingest = Ingest::new(limits.clone(), settings.tags);
    let mut agg = Aggregate::new();
    let side = SideCounters::default();
    let count = |f: &Flusher| counters(f, &limits, &side);
    let mut output = Output::new(out, settings);
    let ft = settings.flush.flush_time;
    let options = ReplayOptions {
        port: Some(settings.udp.port()),
        pace: r.pace,
        progress: r.progress,
    };
    let mut replay = Replay::open(&r.files, options)?.with_shutdown(shutdown);
    let mut next: Option<i64> = None;
    let mut clock = 0.0;
    for item in &mut replay {
        let d = match item {
            Ok(d) => d,
            Err(e) => {
                log::error!("replay: {e} (rest of the file skipped)");
                continue;
            }
        };
        clock = d.time;
        // The same rule as the receiving threads: a datagram past the end of the interval
        // closes it first.
        let end = interval_end(d.time, ft);
        let current = *next.get_or_insert(end);
        if end > current {
            flusher.merge(&mut agg);
            ingest.new_interval();
            let ts = end_time(current, ft).floor();
            match output.flush(&mut flusher, ts, clock, false, &count) {
                Err(e) if is_broken_pipe(&e) => return Ok(Outcome::BrokenPipe),
                r => r.context("writing to stdout")?,
            }
            next = Some(end);
        }
        ingest.datagram(&mut agg, d.time, Some(d.source), &d.bytes);
    }
    flusher.merge(&mut agg);
    let end = next.unwrap_or_else(|| interval_end(unix_now(), ft));
    match output.flush(&mut flusher, end_time(end, ft).floor(), clock, true, &count) {
        Err(e) if is_broken_pipe(&e) => return Ok(Outcome::BrokenPipe),
        r => r.context("writing to stdout")?,
    }
    let stats = replay.stats();
    let skipped = stats.skipped;
    log::info!(
        "replay: {} datagrams from {} file(s){}",
        stats.datagrams,
        stats.files_done + stats.files_failed,
        if skipped.total() > 0 {
            format!(
                "; skipped {} frames ({} not UDP, {} to other ports, {} fragments, {} malformed, \
                 {} of unsupported link types)",
                skipped.total(),
                skipped.not_udp,
                skipped.other_port,
                skipped.fragmented,
                skipped.malformed,
                skipped.link_type
            )
        } else {
            String::new()
        }
    );
    log::info!("exiting: {}", summary(&count(&flusher)));
    Ok(if stats.files_failed > 0 {
        Outcome::ReplayErrors(stats.files_failed)
    } else {
        Outcome::Done
    })
}

/// stdout as a plain file: whole-line writes of our own, without std's line buffering.
fn raw_stdout() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsFd;
    let fd = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stdout")?;
    Ok(std::fs::File::from(fd))
}

/// The whole program after argument parsing: returns the process exit code.
pub fn main_with(args: Args) -> anyhow::Result<u8> {
    bucky_proto::log::init("bucky-statsd", log::LevelFilter::Info);
    let cfg = args.common.load_config("bucky-statsd")?;
    let settings = Settings::resolve(&args, &cfg)?;
    log::set_max_level(settings.log_level);
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    let outcome = run(&settings, shutdown, raw_stdout()?)?;
    Ok(match outcome {
        Outcome::Done | Outcome::BrokenPipe => 0,
        Outcome::WorkerDied => 1,
        Outcome::ReplayErrors(n) => {
            log::error!("{n} replay file(s) could not be read to their end");
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(argv: &[&str], config: &str) -> anyhow::Result<Settings> {
        let mut full = vec!["bucky-statsd"];
        full.extend_from_slice(argv);
        let args = Args::try_parse_from(full)?;
        let cfg = Config::parse_python(config, "test.conf")?;
        Settings::resolve(&args, &cfg)
    }

    #[test]
    fn defaults() {
        let s = settings(&[], "").unwrap();
        assert_eq!(s.udp, "127.0.0.1:8125".parse().unwrap());
        assert_eq!(s.tcp, None);
        assert_eq!(s.flush, FlushOptions::default());
        assert_eq!(s.recv_buffer, 8 << 20);
        assert_eq!(s.max_keys, 1_000_000);
        assert!(s.tags);
        assert!(s.threads >= 1);
        assert_eq!(s.gauges_file, None);
        assert_eq!(s.self_metrics.interval, Duration::from_secs(10));
    }

    #[test]
    fn the_original_config_keys() {
        let cfg = r#"
statsd_ip = "127.0.0.1"
statsd_port = 9125
statsd_flush_time = 5
statsd_legacy_namespace = False
statsd_global_prefix = None
statsd_prefix_counter = "c"
statsd_prefix_set = ""
statsd_percentile_thresholds = [90, 99.9]
statsd_timer_std = False
statsd_delete_idlestats = True
statsd_delete_counters = False
statsd_persistent_gauges = True
directory = "/tmp/bucky-x"
statsd_gauges_savefile = "g.json"
statsd_threads = 3
statsd_tags_enabled = False
statsd_tcp_enabled = True
"#;
        let s = settings(&[], cfg).unwrap();
        assert_eq!(s.udp.port(), 9125);
        assert_eq!(s.tcp.map(|a| a.port()), Some(9125));
        assert_eq!(s.flush.flush_time, 5.0);
        assert_eq!(
            s.flush.names,
            Names::prefixed(None, Some("c"), Some("timers"), Some("gauges"), Some(""))
        );
        assert_eq!(s.flush.names.counter, "c.");
        assert_eq!(s.flush.names.global, "");
        assert_eq!(s.flush.names.set, "");
        assert_eq!(s.flush.thresholds, [90.0, 99.9]);
        assert!(!s.flush.timer.std && s.flush.timer.mean);
        assert!(!s.flush.delete_counters && s.flush.delete_timers && s.flush.delete_sets);
        assert!(s.flush.only_changed_gauges);
        assert_eq!(s.gauges_file, Some(PathBuf::from("/tmp/bucky-x/g.json")));
        assert_eq!(s.threads, 3);
        assert!(!s.tags);

        // Flags beat the file.
        let s = settings(
            &[
                "--statsd-port",
                "7000",
                "--legacy-namespace",
                "--delete-idlestats=false",
                "--tcp=false",
                "--percentile-thresholds",
                "50,95",
            ],
            cfg,
        )
        .unwrap();
        assert_eq!(s.udp.port(), 7000);
        assert_eq!(s.tcp, None);
        assert_eq!(s.flush.names, Names::legacy());
        assert!(!s.flush.delete_timers && !s.flush.only_changed_gauges);
        assert_eq!(s.flush.thresholds, [50.0, 95.0]);
    }

    #[test]
    fn refusals_name_the_key() {
        let e = settings(&[], "statsd_percentile_thresholds = [0]").unwrap_err();
        assert!(
            e.to_string().contains("statsd_percentile_thresholds"),
            "{e}"
        );
        let e = settings(&["--flush-time", "0"], "").unwrap_err();
        assert!(e.to_string().contains("statsd_flush_time"), "{e}");
        let e = settings(&[], "statsd_port = 'x'").unwrap_err();
        assert!(e.to_string().contains("statsd_port"), "{e}");
        let e = settings(&["--replay", "a", "--capture", "b"], "").unwrap_err();
        assert!(e.to_string().contains("--capture"), "{e}");
    }
}
