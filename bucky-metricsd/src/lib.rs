//! bucky-metricsd: the MetricsD receiver the original bucky never delivered. Reads the binary
//! MetricsD protocol ([`wire`]) from UDP, keeps counters, gauges, histograms, meters and timers
//! ([`metrics`]) per sending host and name ([`store`]), and writes their values as samples to
//! stdout, each handler ([`handlers`]) on its own schedule.
//!
//! Two threads: the receiver decodes datagrams and applies them to the table; the flusher
//! wakes at each handler's deadline, renders that handler's metrics under the lock and writes
//! them after releasing it, so a slow stdout never stops reception.

pub mod handlers;
pub mod metrics;
pub mod store;
pub mod wire;

use std::io::{self, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use bucky_proto::config::{pick, Config};
use bucky_proto::io::{is_broken_pipe, LineWriter};
use bucky_proto::log::{suppressed_note, RateLimit};
use bucky_proto::shutdown::Shutdown;
use bucky_proto::stats::{summary, unix_now, Counter, SelfMetrics, SelfMetricsOptions};
use clap::Parser;

use handlers::{HandlerSpec, Router};
use store::Store;

/// Command line of bucky-metricsd. Every flag overrides the config file key named in its help.
#[derive(Debug, Parser)]
#[command(
    name = "bucky-metricsd",
    version,
    about = "Receive MetricsD datagrams over UDP and write their metrics as samples to stdout.",
    long_about = "Receive MetricsD datagrams over UDP and write their metrics as samples to stdout.\n\n\
        Output: one sample per line, `NAME VALUE TIMESTAMP HOST`, HOST being the host named in \
        the datagram. Counters, gauges, histograms, meters and timers are kept per host and \
        name and written by their handler (metricsd_handlers in the config file) every \
        interval. The protocol is documented in the README."
)]
pub struct Args {
    /// Address to listen on (metricsd_ip) [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub metricsd_ip: Option<String>,

    /// UDP port to listen on (metricsd_port) [default: 23632]
    #[arg(long, value_name = "PORT")]
    pub metricsd_port: Option<u16>,

    /// Flush interval of metrics no handler matches, seconds (metricsd_default_interval)
    /// [default: 10]
    #[arg(long, value_name = "SECS")]
    pub default_interval: Option<f64>,

    /// Most metrics held at once; updates that would create more are dropped and counted
    /// (metricsd_max_metrics) [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_metrics: Option<usize>,

    #[command(flatten)]
    pub common: bucky_proto::cli::CommonArgs,
}

/// Everything bucky-metricsd needs, resolved from flags, config file and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub ip: String,
    pub port: u16,
    pub handlers: Vec<HandlerSpec>,
    pub default_interval: Duration,
    pub max_metrics: usize,
    pub self_metrics: SelfMetricsOptions,
    pub log_level: log::LevelFilter,
    /// The user and group to switch to (uid, gid).
    pub uid: Option<String>,
    pub gid: Option<String>,
}

impl Settings {
    /// Flags beat the config file, which beats the defaults.
    pub fn resolve(args: &Args, cfg: &Config) -> anyhow::Result<Settings> {
        let default_interval = handlers::interval(
            "metricsd_default_interval",
            pick(
                args.default_interval,
                cfg,
                "metricsd_default_interval",
                10.0,
            )?,
        )?;
        let common = args.common.resolve(cfg)?;
        Ok(Settings {
            ip: pick(
                args.metricsd_ip.clone(),
                cfg,
                "metricsd_ip",
                "127.0.0.1".into(),
            )?,
            port: pick(args.metricsd_port, cfg, "metricsd_port", 23632)?,
            handlers: handlers::from_config(cfg)?,
            default_interval,
            max_metrics: pick(args.max_metrics, cfg, "metricsd_max_metrics", 10_000)?,
            self_metrics: common.self_metrics,
            log_level: common.log_level,
            uid: common.uid,
            gid: common.gid,
        })
    }

    /// The handlers' router.
    pub fn router(&self) -> anyhow::Result<Router> {
        Ok(Router::new(self.handlers.clone(), self.default_interval)?)
    }
}

/// What bucky-metricsd counts; emitted as bucky.metricsd.<name> and logged at exit.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams received.
    pub datagrams: Counter,
    /// Datagrams refused whole (bad magic byte or host).
    pub bad_datagrams: Counter,
    /// Records applied.
    pub records: Counter,
    /// Malformed records skipped.
    pub bad_records: Counter,
    /// Records naming an existing metric with another type (ignored).
    pub type_conflicts: Counter,
    /// Records dropped because `max_metrics` metrics are held.
    pub dropped: Counter,
    /// Samples written.
    pub samples: Counter,
    /// Values not written because they were not finite (a sum out of f64's range).
    pub non_finite: Counter,
}

impl Counters {
    pub fn snapshot(&self, metrics: usize) -> Vec<(&'static str, u64)> {
        vec![
            ("datagrams", self.datagrams.get()),
            ("bad_datagrams", self.bad_datagrams.get()),
            ("records", self.records.get()),
            ("bad_records", self.bad_records.get()),
            ("type_conflicts", self.type_conflicts.get()),
            ("dropped", self.dropped.get()),
            ("metrics", metrics as u64),
            ("samples", self.samples.get()),
            ("non_finite", self.non_finite.get()),
        ]
    }
}

/// State shared by the receiver and the flusher.
struct Shared {
    store: Mutex<Store>,
    counters: Counters,
    /// The metrics' monotonic clock starts here.
    epoch: Instant,
}

impl Shared {
    fn clock(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.epoch).as_secs_f64()
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a metric half-updated in a way that
        // matters more than stopping would: keep going.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let metrics = self.store().len();
        self.counters.snapshot(metrics)
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A signal came: everything held was flushed.
    Done,
    /// Stdout's reader went away.
    BrokenPipe,
    /// Writing stdout failed otherwise.
    OutputError(String),
}

/// Binds the UDP socket.
pub fn bind(ip: &str, port: u16) -> anyhow::Result<UdpSocket> {
    let addrs: Vec<SocketAddr> = (ip, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving metricsd_ip {ip:?}"))?
        .collect();
    let addr = addrs
        .first()
        .with_context(|| format!("metricsd_ip {ip:?} resolves to no address"))?;
    UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))
}

/// Runs until `shutdown` is raised (or stdout breaks): receives on `socket`, writes samples
/// to `out`. Returns how it ended and the final counters.
pub fn run<W: Write>(
    settings: &Settings,
    socket: UdpSocket,
    out: W,
    shutdown: Shutdown,
) -> anyhow::Result<(Outcome, Vec<(&'static str, u64)>)> {
    let router = settings.router()?;
    let shared = Arc::new(Shared {
        store: Mutex::new(Store::new(router.clone(), settings.max_metrics)),
        counters: Counters::default(),
        epoch: Instant::now(),
    });
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .context("setting the socket's read timeout")?;
    let receiver = {
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        thread::Builder::new()
            .name("receiver".into())
            .spawn(move || receive(&socket, &shared, &shutdown))
            .context("starting the receiver thread")?
    };
    let outcome = flush_loop(settings, &router, &shared, out, &shutdown, receiver);
    Ok((outcome, shared.snapshot()))
}

fn receive(socket: &UdpSocket, shared: &Shared, shutdown: &Shutdown) {
    let mut buf = vec![0u8; 65_536];
    let mut bad_log = RateLimit::default();
    let mut err_log = RateLimit::new(1, Duration::from_secs(10));
    let c = &shared.counters;
    // After a signal: what the socket still holds is taken in (bounded), then it stops.
    let mut drain_left: Option<u32> = None;
    loop {
        if drain_left.is_none() && shutdown.is_set() {
            if socket.set_nonblocking(true).is_err() {
                break;
            }
            drain_left = Some(100_000);
        }
        if let Some(left) = drain_left.as_mut() {
            if *left == 0 {
                break;
            }
            *left -= 1;
        }
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(_) if drain_left.is_some() => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                if let Some(n) = err_log.allow() {
                    log::error!("receiving: {e}{}", suppressed_note(n));
                }
                // Do not spin on a persistent error.
                shutdown.wait_timeout(Duration::from_millis(10));
                continue;
            }
        };
        c.datagrams.inc();
        let packet = match wire::decode(&buf[..n]) {
            Ok(p) => p,
            Err(e) => {
                c.bad_datagrams.inc();
                if let Some(s) = bad_log.allow() {
                    log::warn!("datagram from {from}: {e} (dropped){}", suppressed_note(s));
                }
                continue;
            }
        };
        let now = shared.clock(Instant::now());
        let summary = shared.store().apply_packet(&packet, now, &mut |e| {
            if let Some(s) = bad_log.allow() {
                let rest = if e.loses_framing() {
                    "; the rest of the datagram is unreadable"
                } else {
                    ""
                };
                log::warn!(
                    "datagram from {from} (host {:?}): {e} (skipped{rest}){}",
                    packet.host,
                    suppressed_note(s)
                );
            }
        });
        c.records.add(summary.records);
        c.bad_records.add(summary.bad_records);
        c.type_conflicts.add(summary.type_conflicts);
        c.dropped.add(summary.dropped);
        if summary.type_conflicts > 0 {
            if let Some(s) = bad_log.allow() {
                log::warn!(
                    "datagram from {from} (host {:?}): {} record(s) name a metric held with another type (ignored; delete it first){}",
                    packet.host,
                    summary.type_conflicts,
                    suppressed_note(s)
                );
            }
        }
        if summary.dropped > 0 {
            if let Some(s) = bad_log.allow() {
                log::warn!(
                    "metric table full ({} metrics): dropped {} record(s) for new metrics{}",
                    shared.store().len(),
                    summary.dropped,
                    suppressed_note(s)
                );
            }
        }
    }
}

/// The next time after `prev` on the cadence `every`, skipping slots already past.
fn next_deadline(prev: Instant, every: Duration, now: Instant) -> Instant {
    let next = prev + every;
    if next > now {
        next
    } else {
        // Behind (a stall): realign on the cadence instead of flushing in a burst.
        let behind = now.duration_since(prev).as_secs_f64() / every.as_secs_f64();
        prev + every.mul_f64(behind.floor() + 1.0)
    }
}

fn flush_loop<W: Write>(
    settings: &Settings,
    router: &Router,
    shared: &Shared,
    out: W,
    shutdown: &Shutdown,
    receiver: thread::JoinHandle<()>,
) -> Outcome {
    let mut writer = LineWriter::new(out);
    let mut lines = Vec::with_capacity(64 * 1024);
    let metrics = SelfMetrics::new(&settings.self_metrics.prefix, "metricsd");
    let self_every = settings.self_metrics.interval;
    let start = shared.epoch;
    let mut deadlines: Vec<Instant> = (0..router.len())
        .map(|h| start + router.interval(h))
        .collect();
    let mut self_deadline = (!self_every.is_zero()).then(|| start + self_every);
    let mut write_err = None;

    let write = |writer: &mut LineWriter<W>, lines: &[u8]| -> io::Result<()> {
        // One line per push keeps every write to whole lines of at most PIPE_BUF bytes.
        for line in lines.split_inclusive(|b| *b == b'\n') {
            writer.write_lines(line)?;
        }
        Ok(())
    };
    let flush_handler = |h: usize, lines: &mut Vec<u8>| {
        lines.clear();
        let now = Instant::now();
        let s = shared
            .store()
            .flush(h, shared.clock(now), unix_now(), lines);
        shared.counters.samples.add(s.samples);
        shared.counters.non_finite.add(s.non_finite);
        log::debug!(
            "handler {:?}: flushed {} samples",
            router.describe(h),
            s.samples
        );
    };

    loop {
        let due = deadlines
            .iter()
            .copied()
            .chain(self_deadline)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        if shutdown.wait_timeout(due.saturating_duration_since(Instant::now())) {
            break;
        }
        let now = Instant::now();
        let mut result = Ok(());
        for (h, deadline) in deadlines.iter_mut().enumerate() {
            if *deadline <= now {
                flush_handler(h, &mut lines);
                result = result.and_then(|()| write(&mut writer, &lines));
                *deadline = next_deadline(*deadline, router.interval(h), now);
            }
        }
        if let Some(d) = self_deadline.filter(|d| *d <= now) {
            lines.clear();
            metrics.push(&mut lines, &shared.snapshot(), unix_now().trunc());
            result = result.and_then(|()| write(&mut writer, &lines));
            self_deadline = Some(next_deadline(d, self_every, now));
        }
        if let Err(e) = result.and_then(|()| writer.flush()) {
            write_err = Some(e);
            break;
        }
    }

    // The receiver stops within its read timeout, after taking in what the socket holds.
    shutdown.trigger(None);
    if receiver.join().is_err() {
        log::error!("the receiver thread panicked");
    }
    if write_err.is_none() {
        // Stopping: emit what every handler holds.
        let mut result = Ok(());
        for h in 0..deadlines.len() {
            flush_handler(h, &mut lines);
            result = result.and_then(|()| write(&mut writer, &lines));
        }
        if self_deadline.is_some() {
            lines.clear();
            metrics.push(&mut lines, &shared.snapshot(), unix_now().trunc());
            result = result.and_then(|()| write(&mut writer, &lines));
        }
        write_err = result.and_then(|()| writer.flush()).err();
    }
    match write_err {
        None => Outcome::Done,
        Some(e) if is_broken_pipe(&e) => Outcome::BrokenPipe,
        Some(e) => Outcome::OutputError(e.to_string()),
    }
}

/// The whole program after argument parsing: returns the process exit code.
pub fn main_with(args: Args) -> anyhow::Result<u8> {
    bucky_proto::log::init("bucky-metricsd", log::LevelFilter::Info);
    let cfg = args.common.load_config("bucky-metricsd")?;
    let settings = Settings::resolve(&args, &cfg)?;
    log::set_max_level(settings.log_level);
    settings.router()?;
    let socket = bind(&settings.ip, settings.port)?;
    bucky_proto::privs::drop_privileges(settings.uid.as_deref(), settings.gid.as_deref())
        .context("dropping privileges")?;
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    log::info!(
        "listening on UDP {}; {} handler(s) plus the default every {:?}",
        socket
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string()),
        settings.handlers.len(),
        settings.default_interval
    );
    let stdout = io::stdout().lock();
    let (outcome, counters) = run(&settings, socket, stdout, shutdown)?;
    log::info!("exiting: {}", summary(&counters));
    Ok(match outcome {
        Outcome::Done | Outcome::BrokenPipe => 0,
        Outcome::OutputError(e) => {
            log::error!("writing stdout: {e}");
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_keep_their_cadence() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(next_deadline(t0, s, t0 + s / 2), t0 + s);
        // Late by 3.5 intervals: the next slot on the cadence, no burst of catch-up flushes.
        assert_eq!(next_deadline(t0, s, t0 + s * 7 / 2), t0 + s * 4);
        assert_eq!(next_deadline(t0, s, t0 + s), t0 + s * 2);
    }

    #[test]
    fn settings_from_config_and_flags() {
        let cfg = Config::parse_python(
            "metricsd_port = 9999\nmetricsd_default_interval = 2.5\nmetricsd_handlers = [('^a', 1)]\n",
            "t.conf",
        )
        .unwrap();
        let args = Args::parse_from(["bucky-metricsd", "--metricsd-port", "7777"]);
        let s = Settings::resolve(&args, &cfg).unwrap();
        assert_eq!(s.port, 7777);
        assert_eq!(s.ip, "127.0.0.1");
        assert_eq!(s.default_interval, Duration::from_millis(2500));
        assert_eq!(s.handlers.len(), 1);
        assert_eq!(s.max_metrics, 10_000);
        assert_eq!((s.uid, s.gid), (None, None));
        let cfg = Config::parse_python("uid = 1000\ngid = 'staff'\n", "t.conf").unwrap();
        let s = Settings::resolve(&Args::parse_from(["bucky-metricsd"]), &cfg).unwrap();
        assert_eq!(
            (s.uid.as_deref(), s.gid.as_deref()),
            (Some("1000"), Some("staff"))
        );
        let args = Args::parse_from(["bucky-metricsd", "--uid", "nobody"]);
        assert_eq!(
            Settings::resolve(&args, &cfg).unwrap().uid.as_deref(),
            Some("nobody")
        );
        let args = Args::parse_from(["bucky-metricsd", "--default-interval", "0"]);
        let e = Settings::resolve(&args, &Config::empty()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "metricsd_default_interval: 0 is not a number of seconds > 0"
        );
    }

    /// A whole run in-process: a datagram in, its samples out at the handler's interval, and
    /// everything held flushed at shutdown.
    #[test]
    fn run_receives_and_flushes() {
        use std::sync::mpsc;
        struct Chan(mpsc::Sender<Vec<u8>>);
        impl Write for Chan {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let _ = self.0.send(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let args = Args::parse_from(["bucky-metricsd", "--self-metrics-interval", "0"]);
        let mut settings = Settings::resolve(&args, &Config::empty()).unwrap();
        settings.handlers = vec![HandlerSpec {
            pattern: "fast".into(),
            interval: Duration::from_millis(50),
            priority: 1,
        }];
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let shutdown = Shutdown::new();
        let sd = shutdown.clone();
        let h = thread::spawn(move || run(&settings, socket, Chan(tx), sd).unwrap());
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut e = wire::Encoder::new("h1").unwrap();
        e.update(wire::MetricType::Counter, "fast.c", wire::Number::U8(3))
            .unwrap();
        e.update(wire::MetricType::Gauge, "slow.g", wire::Number::U8(9))
            .unwrap();
        let mut got = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !got.contains("fast.c 3 ") {
            client.send_to(e.as_bytes(), addr).unwrap();
            if let Ok(b) = rx.recv_timeout(Duration::from_millis(200)) {
                got.push_str(&String::from_utf8(b).unwrap());
            }
            assert!(Instant::now() < deadline, "no flush: {got:?}");
        }
        assert!(
            !got.contains("slow.g"),
            "the default handler flushed early: {got}"
        );
        shutdown.trigger(None);
        let (outcome, counters) = h.join().unwrap();
        assert_eq!(outcome, Outcome::Done);
        while let Ok(b) = rx.try_recv() {
            got.push_str(&String::from_utf8(b).unwrap());
        }
        assert!(got.contains("slow.g 9 "), "final flush: {got}");
        assert!(got.lines().all(|l| l.ends_with(" h1")), "{got}");
        let get = |k: &str| counters.iter().find(|(n, _)| *n == k).unwrap().1;
        assert!(get("datagrams") >= 1);
        assert_eq!(get("metrics"), 2);
        assert_eq!(get("bad_records"), 0);
    }
}
