//! bucky-collectd: receives collectd's binary network protocol (plain, signed or encrypted)
//! on UDP and writes one sample line per value to stdout:
//! `NAME VALUE TIMESTAMP HOST`, with COUNTER, DERIVE and ABSOLUTE turned into rates.
//!
//! The pieces, each usable without a socket: [`types_db`] (collectd's data sets),
//! [`security`] (Sign/Encrypt), [`packet`] (the decoder), [`naming`] (converters, Lua),
//! [`rates`] (the rate cache), [`process`] (datagram → lines), [`encode`] (writing packets,
//! for tests and benchmarks), [`receiver`] (the UDP socket).

pub mod encode;
pub mod naming;
pub mod packet;
pub mod process;
pub mod rates;
pub mod receiver;
pub mod security;
pub mod types_db;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bucky_proto::capture::{CaptureWriter, Pace, Replay, ReplayArgs, ReplayOptions};
use bucky_proto::config::{pick, Config};
use bucky_proto::io::{is_broken_pipe, PIPE_BUF};
use bucky_proto::log::{suppressed_note, RateLimit};
use bucky_proto::shutdown::Shutdown;
use bucky_proto::stats::{summary, unix_now, SelfMetrics, SelfMetricsOptions};
use clap::Parser;

use crate::naming::{Converters, LuaConverters};
use crate::process::{Options, Processor};
use crate::security::{AuthFile, Level, Reload, Security, Users};
use crate::types_db::TypesDb;

/// Command line of bucky-collectd. Every flag overrides the config file key named in its
/// help.
#[derive(Debug, Parser)]
#[command(
    name = "bucky-collectd",
    version,
    about = "Receive collectd's network protocol and write samples to stdout.",
    long_about = "Receive collectd's network protocol and write samples to stdout.\n\n\
        Listens on UDP for collectd's network plugin (plain, signed or encrypted) and writes \
        one line per value: `NAME VALUE TIMESTAMP HOST`. COUNTER, DERIVE and ABSOLUTE values \
        become rates per second; the first value of a series is only remembered. \
        With --replay it reads recorded traffic (its own --capture files, or tcpdump's \
        pcap/pcapng) instead of a socket, then exits."
)]
pub struct Args {
    /// Address to listen on; a name is resolved (collectd_ip) [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub collectd_ip: Option<String>,

    /// UDP port to listen on (collectd_port) [default: 25826]
    #[arg(long, value_name = "PORT")]
    pub collectd_port: Option<u16>,

    /// A types.db file; repeat for more, read in order, after those of collectd_types
    /// (collectd_types) [default: collectd's installed types.db, else the built-in one]
    #[arg(long = "collectd-types", value_name = "FILE")]
    pub collectd_types: Vec<PathBuf>,

    /// 0/None, 1/Sign or 2/Encrypt: the least a packet must be (collectd_security_level)
    /// [default: 0]
    #[arg(long, value_name = "LEVEL")]
    pub security_level: Option<String>,

    /// File of `user: password` lines for signed and encrypted packets, re-read when it
    /// changes (collectd_auth_file)
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,

    /// Accept COUNTER values for DERIVE data sources and the reverse
    /// (collectd_counter_eq_derive)
    #[arg(long)]
    pub counter_eq_derive: bool,

    /// Seconds without a value after which a series (its previous value and name) is
    /// forgotten (collectd_rate_expiry) [default: 600]
    #[arg(long, value_name = "SECS")]
    pub rate_expiry: Option<f64>,

    /// Most series held at once (one per data source of each value list); beyond it a new
    /// series' COUNTER, DERIVE and ABSOLUTE values are dropped and counted, its gauges
    /// still pass (collectd_max_series) [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_series: Option<usize>,

    /// Socket receive buffer to ask for, bytes (collectd_recv_buffer) [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub recv_buffer: Option<usize>,

    /// Lua script defining converter functions (collectd_lua)
    #[arg(long, value_name = "FILE")]
    pub lua: Option<PathBuf>,

    #[command(flatten)]
    pub capture_replay: ReplayArgs,

    #[command(flatten)]
    pub common: bucky_proto::cli::CommonArgs,
}

/// Where datagrams come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Socket(SocketAddr),
    Replay {
        files: Vec<PathBuf>,
        pace: Pace,
        progress: bool,
    },
}

/// Everything bucky-collectd needs, resolved from flags, config file and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub input: Input,
    /// The port pcap files are filtered by.
    pub port: u16,
    pub types: Vec<PathBuf>,
    pub level: Level,
    pub auth_file: Option<PathBuf>,
    pub counter_eq_derive: bool,
    pub rate_expiry: f64,
    pub max_series: usize,
    pub recv_buffer: usize,
    pub lua: Option<PathBuf>,
    pub converters: Option<bucky_proto::config::Value>,
    pub use_entry_points: bool,
    pub capture: Option<PathBuf>,
    pub self_metrics: SelfMetricsOptions,
    /// The user and group to switch to once the socket is bound (uid, gid).
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub log_level: log::LevelFilter,
}

fn seconds(key: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("{key}: {v} is not a number of seconds >= 0"))
}

impl Settings {
    /// Flags beat the config file, which beats the defaults.
    pub fn resolve(args: &Args, cfg: &Config) -> anyhow::Result<Settings> {
        let host = pick(
            args.collectd_ip.clone(),
            cfg,
            "collectd_ip",
            "127.0.0.1".to_string(),
        )?;
        let port = pick(args.collectd_port, cfg, "collectd_port", 25826)?;
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => (host.as_str(), port)
                .to_socket_addrs()
                .with_context(|| format!("collectd_ip: cannot resolve {host:?}"))?
                .next()
                .with_context(|| format!("collectd_ip: {host:?} has no address"))?,
        };
        let mut types: Vec<PathBuf> = cfg.get_or("collectd_types", Vec::new())?;
        types.extend(args.collectd_types.iter().cloned());
        let level = match &args.security_level {
            Some(s) => Level::parse(s).with_context(|| {
                format!("--security-level {s:?}: use 0/None, 1/Sign or 2/Encrypt")
            })?,
            None => match cfg.raw("collectd_security_level") {
                None | Some(bucky_proto::config::Value::None) => Level::None,
                Some(v) => Level::from_value(v).with_context(|| {
                    format!(
                        "{}: collectd_security_level = {v}: use 0/None, 1/Sign or 2/Encrypt",
                        cfg.origin()
                    )
                })?,
            },
        };
        let auth_file = match &args.auth_file {
            Some(p) => Some(p.clone()),
            None => cfg.get::<PathBuf>("collectd_auth_file")?,
        };
        let rate_expiry = pick(args.rate_expiry, cfg, "collectd_rate_expiry", 600.0)?;
        seconds("collectd_rate_expiry", rate_expiry)?;
        let input = match args.capture_replay.replay_settings()? {
            None => Input::Socket(addr),
            Some(r) => Input::Replay {
                files: r.files,
                pace: r.pace,
                progress: r.progress,
            },
        };
        let workers: i64 = cfg.get_or("collectd_workers", 1)?;
        if workers > 1 {
            log::warn!(
                "collectd_workers = {workers} is ignored: one bucky-collectd process keeps up \
                 with far more traffic than the original's workers"
            );
        }
        let common = args.common.resolve(cfg)?;
        Ok(Settings {
            input,
            port,
            types,
            level,
            auth_file,
            counter_eq_derive: args.counter_eq_derive
                || cfg.get_or("collectd_counter_eq_derive", false)?,
            rate_expiry,
            max_series: pick(args.max_series, cfg, "collectd_max_series", 1_000_000)?,
            recv_buffer: pick(args.recv_buffer, cfg, "collectd_recv_buffer", 8 << 20)?,
            lua: match &args.lua {
                Some(p) => Some(p.clone()),
                None => cfg.get::<PathBuf>("collectd_lua")?,
            },
            converters: cfg.raw("collectd_converters").cloned(),
            use_entry_points: cfg.get_or("collectd_use_entry_points", true)?,
            capture: args.capture_replay.capture.clone(),
            self_metrics: common.self_metrics,
            uid: common.uid,
            gid: common.gid,
            log_level: common.log_level,
        })
    }
}

/// The parts of a run that need files: types.db, converters, users.
pub struct Setup {
    pub processor: Processor,
    pub auth: Option<AuthFile>,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup").field("auth", &self.auth).finish()
    }
}

/// Loads types.db, the converters and the auth file; refuses settings that cannot work.
pub fn setup(settings: &Settings) -> anyhow::Result<Setup> {
    let (types, skipped) = TypesDb::load(&settings.types)?;
    for s in &skipped {
        log::warn!("{s}");
    }
    log::info!(
        "types.db: {} types from {}",
        types.len(),
        types.sources().join(", ")
    );
    let lua = match &settings.lua {
        Some(p) => Some(LuaConverters::load(p).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let converters =
        Converters::from_config(settings.converters.as_ref(), lua, settings.use_entry_points)
            .map_err(anyhow::Error::msg)?;
    let (auth, users) = match &settings.auth_file {
        Some(path) => {
            let (auth, users, warnings) = AuthFile::open(path)?;
            for w in warnings {
                log::warn!("{w}");
            }
            (Some(auth), users)
        }
        None => (None, Users::new()),
    };
    if settings.level > Level::None {
        match &settings.auth_file {
            None => bail!(
                "collectd_security_level {} needs collectd_auth_file (--auth-file)",
                settings.level.name()
            ),
            Some(p) if users.is_empty() => bail!(
                "collectd_security_level {} needs at least one user in the auth file {}",
                settings.level.name(),
                p.display()
            ),
            Some(_) => {}
        }
    }
    let options = Options {
        security: Security::new(settings.level, users),
        counter_eq_derive: settings.counter_eq_derive,
        rate_expiry: settings.rate_expiry,
        max_series: settings.max_series,
    };
    Ok(Setup {
        processor: Processor::new(types, converters, options),
        auth,
    })
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A signal, or the end of the replay.
    Done,
    /// Stdout's reader went away.
    BrokenPipe,
    /// Some replay files could not be read to their end (what they held was processed).
    ReplayErrors(u64),
}

/// Writes whole lines in writes of at most `PIPE_BUF` bytes, so that several writers can
/// share a pipe; keeps what does not end in a newline (there never is any).
fn write_lines(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        let chunk = if rest.len() <= PIPE_BUF {
            rest.len()
        } else {
            match memrchr(b'\n', &rest[..PIPE_BUF]) {
                Some(i) => i + 1,
                // A single line longer than PIPE_BUF: write it alone.
                None => rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1),
            }
        };
        out.write_all(&rest[..chunk])?;
        rest = &rest[chunk..];
    }
    Ok(())
}

fn memrchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().rposition(|b| *b == needle)
}

/// The periodic work of a run: self-metrics, capture flushes, auth file checks, expiry.
struct Periodic {
    metrics: SelfMetrics,
    interval: Duration,
    next_metrics: Instant,
    next_second: Instant,
}

impl Periodic {
    fn new(options: &SelfMetricsOptions) -> Periodic {
        let now = Instant::now();
        Periodic {
            metrics: SelfMetrics::new(&options.prefix, "collectd"),
            interval: options.interval,
            next_metrics: now + options.interval,
            next_second: now + Duration::from_secs(1),
        }
    }
}

/// State shared by the live and replay loops.
struct Run<'a, W: Write> {
    processor: Processor,
    auth: Option<AuthFile>,
    capture: Option<CaptureWriter>,
    capture_log: RateLimit,
    out: W,
    buf: Vec<u8>,
    periodic: Periodic,
    settings: &'a Settings,
}

impl<W: Write> Run<'_, W> {
    fn handle(&mut self, bytes: &[u8], source: SocketAddr, arrival: f64) {
        if let Some(c) = &mut self.capture {
            if let Err(e) = c.write_parts(arrival, source, bytes) {
                self.processor.counters_mut().capture_errors += 1;
                if let Some(n) = self.capture_log.allow() {
                    log::error!("capture: {e}{}", suppressed_note(n));
                }
            }
        }
        self.processor.handle(bytes, source, arrival, &mut self.buf);
    }

    fn write_out(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            write_lines(&mut self.out, &self.buf).map_err(stdout_error)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn flush_out(&mut self) -> io::Result<()> {
        self.out.flush().map_err(stdout_error)
    }

    /// Once a second: capture flush, auth file check, rate expiry; and the self-metrics.
    fn periodic(&mut self, now: Instant, arrival: f64) {
        if now >= self.periodic.next_second {
            self.periodic.next_second = now + Duration::from_secs(1);
            if let Some(c) = &mut self.capture {
                if let Err(e) = c.flush() {
                    self.processor.counters_mut().capture_errors += 1;
                    if let Some(n) = self.capture_log.allow() {
                        log::error!("capture: {e}{}", suppressed_note(n));
                    }
                }
            }
            if let Some(auth) = &mut self.auth {
                match auth.poll(now) {
                    Some(Reload::Users(users, warnings)) => {
                        for w in warnings {
                            log::warn!("{w}");
                        }
                        if users.is_empty() && self.settings.level > Level::None {
                            log::error!(
                                "auth file {} has no users now: every packet will be refused",
                                auth.path().display()
                            );
                        }
                        log::info!(
                            "auth file {} changed: {} user(s)",
                            auth.path().display(),
                            users.len()
                        );
                        self.processor.set_users(users);
                    }
                    Some(Reload::Failed(msg)) => log::error!("{msg}"),
                    None => {}
                }
            }
        }
        self.processor.tick(arrival);
        if !self.periodic.interval.is_zero() && now >= self.periodic.next_metrics {
            self.periodic.next_metrics = now + self.periodic.interval;
            self.push_metrics();
        }
    }

    fn push_metrics(&mut self) {
        let snapshot = self.processor.counters().snapshot();
        self.periodic
            .metrics
            .push(&mut self.buf, &snapshot, unix_now().trunc());
    }

    fn finish(&mut self) -> io::Result<()> {
        if !self.periodic.interval.is_zero() {
            self.processor.tick(unix_now());
            self.push_metrics();
        }
        self.write_out()?;
        self.flush_out()?;
        if let Some(c) = &mut self.capture {
            if let Err(e) = c.flush() {
                log::error!("capture: {e}");
            }
            log::info!(
                "capture: {} datagrams written to {}",
                c.count(),
                c.path().display()
            );
        }
        Ok(())
    }
}

/// Names stdout in a write error (keeping its kind, so a broken pipe is still one).
fn stdout_error(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("writing samples to stdout: {e}"))
}

/// Switches to the configured user and group (after the socket is bound).
fn drop_privileges(settings: &Settings) -> io::Result<()> {
    bucky_proto::privs::drop_privileges(settings.uid.as_deref(), settings.gid.as_deref())
        .map_err(|e| io::Error::other(format!("dropping privileges: {e}")))
}

/// Runs until a signal (live) or the end of the replay, writing samples to `out`. Returns
/// how it ended and the final counters.
pub fn run<W: Write>(
    settings: &Settings,
    setup: Setup,
    out: W,
    shutdown: Shutdown,
) -> anyhow::Result<(Outcome, Vec<(&'static str, u64)>)> {
    let capture = match &settings.capture {
        Some(p) => Some(CaptureWriter::create(p)?),
        None => None,
    };
    let mut run = Run {
        processor: setup.processor,
        auth: setup.auth,
        capture,
        capture_log: RateLimit::default(),
        out,
        buf: Vec::with_capacity(1 << 20),
        periodic: Periodic::new(&settings.self_metrics),
        settings,
    };
    let result = match &settings.input {
        Input::Socket(addr) => live(&mut run, *addr, &shutdown),
        Input::Replay {
            files,
            pace,
            progress,
        } => replay(&mut run, files, *pace, *progress, &shutdown),
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) if is_broken_pipe(&e) => Outcome::BrokenPipe,
        Err(e) => return Err(e.into()),
    };
    if outcome != Outcome::BrokenPipe {
        match run.finish() {
            Ok(()) => {}
            Err(e) if is_broken_pipe(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((outcome, run.processor.counters().snapshot()))
}

fn live<W: Write>(
    run: &mut Run<'_, W>,
    addr: SocketAddr,
    shutdown: &Shutdown,
) -> io::Result<Outcome> {
    let mut receiver =
        receiver::Receiver::bind(addr, run.settings.recv_buffer, Duration::from_millis(100))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on udp {addr}: {e}")))?;
    drop_privileges(run.settings)?;
    log::info!(
        "listening on udp {} (receive buffer {} bytes, security level {})",
        receiver.local_addr()?,
        receiver.granted_buffer(),
        run.settings.level.name()
    );
    // Lines go out when 64 KiB are waiting, 50 ms after the last write, or when the socket
    // is idle: whole writes without a syscall per datagram, and little latency.
    let mut last_write = Instant::now();
    // The drop counter is read from /proc: once a second is plenty.
    let mut last_drop_check = Instant::now();
    while !shutdown.is_set() {
        let arrival = unix_now();
        let n = receiver.recv_batch(|d| {
            if d.truncated {
                run.processor.counters_mut().oversized += 1;
                return;
            }
            run.handle(d.bytes, d.source, arrival);
        })?;
        if last_drop_check.elapsed() >= Duration::from_secs(1) {
            run.processor.counters_mut().kernel_drops = receiver.kernel_drops();
            last_drop_check = Instant::now();
        }
        let now = Instant::now();
        if !run.buf.is_empty()
            && (n == 0
                || run.buf.len() >= 64 * 1024
                || now.duration_since(last_write) >= Duration::from_millis(50))
        {
            run.write_out()?;
            run.flush_out()?;
            last_write = now;
        }
        run.periodic(now, arrival);
    }
    // What is already in the socket's buffer was sent before we stopped: take it in too.
    receiver.set_nonblocking()?;
    for _ in 0..4096 {
        let arrival = unix_now();
        let n = receiver.recv_batch(|d| {
            if !d.truncated {
                run.handle(d.bytes, d.source, arrival);
            }
        })?;
        if n == 0 {
            break;
        }
    }
    run.processor.counters_mut().kernel_drops = receiver.kernel_drops();
    log::info!("received a signal: exiting");
    Ok(Outcome::Done)
}

fn replay<W: Write>(
    run: &mut Run<'_, W>,
    files: &[PathBuf],
    pace: Pace,
    progress: bool,
    shutdown: &Shutdown,
) -> io::Result<Outcome> {
    let options = ReplayOptions {
        port: Some(run.settings.port),
        pace,
        progress,
    };
    let mut replay = Replay::open(files, options)
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_shutdown(shutdown.clone());
    drop_privileges(run.settings)?;
    let mut last = unix_now();
    let mut since_periodic = 0u32;
    for item in &mut replay {
        match item {
            Ok(d) => {
                run.handle(&d.bytes, d.source, d.time);
                last = d.time;
                if run.buf.len() >= 256 * 1024 {
                    run.write_out()?;
                }
            }
            Err(e) => log::error!("replay: {e} (rest of the file skipped)"),
        }
        since_periodic += 1;
        if since_periodic >= 1024 || pace == Pace::Recorded {
            since_periodic = 0;
            run.periodic(Instant::now(), last);
        }
    }
    run.processor.tick(last);
    let stats = replay.stats();
    let skipped = stats.skipped;
    log::info!(
        "replay: {} datagrams from {} file(s){}",
        stats.datagrams,
        stats.files_done + stats.files_failed,
        if skipped.total() > 0 {
            format!(
                "; skipped {} frames ({} not UDP, {} to other ports, {} fragments, {} malformed, {} of unsupported link types)",
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
    Ok(if stats.files_failed > 0 {
        Outcome::ReplayErrors(stats.files_failed)
    } else {
        Outcome::Done
    })
}

/// The whole program after argument parsing: returns the process exit code.
pub fn main_with(args: Args) -> anyhow::Result<u8> {
    bucky_proto::log::init("bucky-collectd", log::LevelFilter::Info);
    let cfg = args.common.load_config("bucky-collectd")?;
    let settings = Settings::resolve(&args, &cfg)?;
    log::set_max_level(settings.log_level);
    let setup = setup(&settings)?;
    let shutdown = Shutdown::on_signals().context("installing signal handlers")?;
    let (outcome, counters) = run(&settings, setup, io::stdout(), shutdown)?;
    log::info!("exiting: {}", summary(&counters));
    Ok(match outcome {
        Outcome::Done | Outcome::BrokenPipe => 0,
        Outcome::ReplayErrors(n) => {
            log::error!("{n} replay file(s) could not be read to their end");
            1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str], config: &str) -> anyhow::Result<Settings> {
        let mut argv = vec!["bucky-collectd"];
        argv.extend_from_slice(args);
        let cfg = Config::parse_python(config, "test.conf")?;
        Settings::resolve(&Args::parse_from(argv), &cfg)
    }

    #[test]
    fn defaults_file_and_flags() {
        let s = resolve(&[], "").unwrap();
        assert_eq!(s.input, Input::Socket("127.0.0.1:25826".parse().unwrap()));
        assert_eq!(s.level, Level::None);
        assert_eq!(
            (s.rate_expiry, s.max_series, s.recv_buffer),
            (600.0, 1_000_000, 8 << 20)
        );
        assert!(s.use_entry_points && !s.counter_eq_derive && s.types.is_empty());
        let conf = "collectd_ip = '0.0.0.0'\ncollectd_port = 1234\ncollectd_types = ['/a.db']\n\
                    collectd_security_level = 'Encrypt'\ncollectd_auth_file = '/auth'\n\
                    collectd_counter_eq_derive = True\ncollectd_rate_expiry = 60\nuid = 1000\n";
        let s = resolve(&[], conf).unwrap();
        assert_eq!(s.input, Input::Socket("0.0.0.0:1234".parse().unwrap()));
        assert_eq!(s.level, Level::Encrypt);
        assert_eq!(s.auth_file, Some(PathBuf::from("/auth")));
        assert!(s.counter_eq_derive);
        assert_eq!(s.rate_expiry, 60.0);
        assert_eq!(s.uid.as_deref(), Some("1000"));
        // Flags beat the file; --collectd-types adds to the file's list, as the original.
        let s = resolve(
            &[
                "--collectd-port",
                "99",
                "--security-level",
                "sign",
                "--collectd-types",
                "/b.db",
            ],
            conf,
        )
        .unwrap();
        assert_eq!(s.port, 99);
        assert_eq!(s.level, Level::Sign);
        assert_eq!(
            s.types,
            vec![PathBuf::from("/a.db"), PathBuf::from("/b.db")]
        );
        let s = resolve(
            &["--replay", "a.pcap", "b.cap", "--replay-pace", "recorded"],
            "",
        )
        .unwrap();
        assert!(
            matches!(s.input, Input::Replay { ref files, pace: Pace::Recorded, .. } if files.len() == 2)
        );
    }

    #[test]
    fn bad_settings_are_errors_that_say_why() {
        let e = resolve(&[], "collectd_security_level = 'Encrypted'\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("use 0/None, 1/Sign or 2/Encrypt"),
            "{e:#}"
        );
        let e = resolve(&["--security-level", "3"], "").unwrap_err();
        assert!(format!("{e:#}").contains("--security-level \"3\""), "{e:#}");
        let e = resolve(&["--replay-pace", "slow"], "").unwrap_err();
        assert!(format!("{e:#}").contains("use fast or recorded"));
        assert!(resolve(&[], "collectd_rate_expiry = -1\n").is_err());
        assert!(resolve(&[], "collectd_ip = 'no-such-host.invalid'\n").is_err());
        let s = resolve(&["--collectd-ip", "localhost"], "").unwrap();
        assert!(matches!(s.input, Input::Socket(a) if a.ip().is_loopback() && a.port() == 25826));
        // Security without users cannot work.
        let s = resolve(&["--security-level", "1"], "").unwrap();
        let e = setup(&s).unwrap_err().to_string();
        assert!(e.contains("needs collectd_auth_file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("auth");
        std::fs::write(&auth, "# nobody\n").unwrap();
        let s = resolve(
            &[
                "--security-level",
                "2",
                "--auth-file",
                auth.to_str().unwrap(),
            ],
            "",
        )
        .unwrap();
        let e = setup(&s).unwrap_err().to_string();
        assert!(e.contains("needs at least one user"), "{e}");
    }

    #[test]
    fn lines_are_written_whole_within_pipe_buf() {
        struct Writes(Vec<usize>, Vec<u8>);
        impl Write for Writes {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.push(b.len());
                self.1.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut data = Vec::new();
        for i in 0..2000 {
            data.extend_from_slice(
                format!("some.metric.name.{i} {i}.5 1795650000 host\n").as_bytes(),
            );
        }
        data.extend_from_slice(&[b'x'; 5000]);
        data.push(b'\n');
        let mut w = Writes(Vec::new(), Vec::new());
        write_lines(&mut w, &data).unwrap();
        assert_eq!(w.1, data);
        let mut at = 0;
        for len in &w.0 {
            assert!(w.1[at + len - 1] == b'\n');
            assert!(*len <= PIPE_BUF || !w.1[at..at + len - 1].contains(&b'\n'));
            at += len;
        }
    }
}
