//! bucky: the drop-in replacement for the original `bucky` command.
//!
//! It reads the original's flags and config file, works out the pipeline (the enabled
//! receivers, the processor when rules or Lua are configured, the carbon writer), and runs
//! each stage as its own process joined by pipes, supervising them: a stage that dies is
//! reported and the rest are stopped cleanly; SIGTERM/SIGINT drains the whole pipe.

pub mod multicall;
pub mod supervise;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bucky_proto::config::{pick, Config};
use clap::Parser;

/// The original's command line (bucky 2.2.1, optparse), with its defaults.
#[derive(Debug, Parser)]
#[command(
    name = "bucky",
    version,
    about = "Receive StatsD, collectd and MetricsD metrics and write them to Graphite.",
    long_about = "Receive StatsD, collectd and MetricsD metrics and write them to Graphite.\n\n\
        Runs the pipeline bucky-statsd/bucky-collectd/bucky-metricsd | [bucky-process] | \
        bucky-carbon, each stage its own process. CONFIG_FILE is TOML or the original's Python \
        config (literal assignments only); flags given here beat it."
)]
pub struct Args {
    /// Config file: TOML, or an original bucky config (Python literals only).
    #[arg(value_name = "CONFIG_FILE")]
    pub config: Option<PathBuf>,

    /// Write the carbon lines to stdout instead of sending them (debug) [default: off]
    #[arg(long)]
    pub debug: bool,

    /// IP address to bind for the MetricsD UDP socket (metricsd_ip) [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub metricsd_ip: Option<String>,

    /// Port to bind for the MetricsD UDP socket (metricsd_port) [default: 23632]
    #[arg(long, value_name = "INT")]
    pub metricsd_port: Option<u16>,

    /// Disable the MetricsD UDP server (metricsd_enabled = False)
    #[arg(long)]
    pub disable_metricsd: bool,

    /// IP address to bind for the collectd UDP socket (collectd_ip) [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub collectd_ip: Option<String>,

    /// Port to bind for the collectd UDP socket (collectd_port) [default: 25826]
    #[arg(long, value_name = "INT")]
    pub collectd_port: Option<u16>,

    /// Path to a collectd types.db file, can be given several times (collectd_types)
    /// [default: collectd's installed types.db, else the built-in one]
    #[arg(long, value_name = "FILE")]
    pub collectd_types: Vec<PathBuf>,

    /// Disable the collectd UDP server (collectd_enabled = False)
    #[arg(long)]
    pub disable_collectd: bool,

    /// IP address to bind for the StatsD UDP socket (statsd_ip) [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub statsd_ip: Option<String>,

    /// Port to bind for the StatsD UDP socket (statsd_port) [default: 8125]
    #[arg(long, value_name = "INT")]
    pub statsd_port: Option<u16>,

    /// Disable the StatsD server (statsd_enabled = False)
    #[arg(long)]
    pub disable_statsd: bool,

    /// IP address of the Graphite/carbon server (graphite_ip) [default: 127.0.0.1]
    #[arg(long, value_name = "IP")]
    pub graphite_ip: Option<String>,

    /// Port of the Graphite/carbon server (graphite_port) [default: 2003]
    #[arg(long, value_name = "INT")]
    pub graphite_port: Option<u16>,

    /// Accepted for compatibility: config errors are always reported in full (full_trace)
    #[arg(long)]
    pub full_trace: bool,

    /// Logging verbosity: CRITICAL, ERROR, WARNING, INFO, DEBUG (log_level) [default: INFO]
    #[arg(long, value_name = "NAME")]
    pub log_level: Option<String>,

    /// Add this to the scheduling niceness of every stage (nice) [default: none]
    #[arg(long, value_name = "NICE", allow_negative_numbers = true)]
    pub nice: Option<i32>,

    /// Run as this user (name or number) once the sockets are bound (uid) [default: none]
    #[arg(long, value_name = "UID")]
    pub uid: Option<String>,

    /// Run as this group (name or number) once the sockets are bound (gid)
    /// [default: the user's group]
    #[arg(long, value_name = "GID")]
    pub gid: Option<String>,
}

/// One process of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The stage's binary name, e.g. `bucky-statsd`.
    pub name: &'static str,
    pub args: Vec<OsString>,
}

/// The pipeline bucky runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub receivers: Vec<Stage>,
    pub processor: Option<Stage>,
    pub writer: Stage,
    pub nice: i32,
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

/// Keys of the original (2.2.1 to HEAD) that this bucky recognises but that have nothing to
/// act on: its stages bound their own queues, stop in order, and run no Python.
pub const INERT_KEYS: &[&str] = &[
    "full_trace",
    "process_join_timeout",
    "max_sample_queue",
    "sentry_enabled",
    "sentry_dsn",
    "sentry_log_level",
    "sentry_auto_log_stacks",
    "collectd_workers",
    "statsd_metadata",
    "graphite_enabled",
    "influxdb_enabled",
    "influxdb_hosts",
];

/// Works out the pipeline from the flags and the config file (flags beat the file).
pub fn plan(args: &Args, cfg: &Config, config_path: Option<&Path>) -> anyhow::Result<Plan> {
    if cfg
        .raw("custom_clients")
        .and_then(|v| v.as_items())
        .is_some_and(|items| !items.is_empty())
    {
        anyhow::bail!(
            "{}: custom_clients: Python client classes cannot run in bucky: \
             compose another writer by hand (bucky-statsd | your-writer) instead",
            cfg.origin()
        );
    }
    // Every stage reads the same file and takes its own keys; only flags given here are
    // passed on, so a stage's own defaults and the file keep their say otherwise.
    let common = |extra: Vec<OsString>| {
        let mut v = Vec::new();
        if let Some(p) = config_path {
            v.push(os("--config"));
            v.push(os(p));
        }
        if let Some(l) = &args.log_level {
            v.push(os("--log-level"));
            v.push(os(l));
        }
        v.extend(extra);
        v
    };
    let flag = |name: &str, value: &Option<String>| -> Vec<OsString> {
        value
            .iter()
            .flat_map(|v| [os(format!("--{name}")), os(v)])
            .collect()
    };
    let port = |name: &str, value: Option<u16>| -> Vec<OsString> {
        value
            .iter()
            .flat_map(|v| [os(format!("--{name}")), os(v.to_string())])
            .collect()
    };
    let privs = {
        let mut v = flag("uid", &args.uid);
        v.extend(flag("gid", &args.gid));
        v
    };

    let enabled = |disabled_flag: bool, key: &str| -> anyhow::Result<bool> {
        Ok(!disabled_flag && cfg.get_or(key, true)?)
    };
    let mut receivers = Vec::new();
    if enabled(args.disable_statsd, "statsd_enabled")? {
        let mut a = flag("statsd-ip", &args.statsd_ip);
        a.extend(port("statsd-port", args.statsd_port));
        a.extend(privs.clone());
        receivers.push(Stage {
            name: "bucky-statsd",
            args: common(a),
        });
    }
    if enabled(args.disable_collectd, "collectd_enabled")? {
        let mut a = flag("collectd-ip", &args.collectd_ip);
        a.extend(port("collectd-port", args.collectd_port));
        for t in &args.collectd_types {
            a.push(os("--collectd-types"));
            a.push(os(t));
        }
        a.extend(privs.clone());
        receivers.push(Stage {
            name: "bucky-collectd",
            args: common(a),
        });
    }
    if enabled(args.disable_metricsd, "metricsd_enabled")? {
        let mut a = flag("metricsd-ip", &args.metricsd_ip);
        a.extend(port("metricsd-port", args.metricsd_port));
        a.extend(privs.clone());
        receivers.push(Stage {
            name: "bucky-metricsd",
            args: common(a),
        });
    }
    if receivers.is_empty() {
        anyhow::bail!(
            "every receiver is disabled: enable at least one of statsd, collectd, metricsd"
        );
    }

    let has_rules = cfg
        .raw("processor_rules")
        .is_some_and(|v| !v.is_none() && v.as_items().map_or(true, |i| !i.is_empty()));
    let has_lua = cfg.get::<String>("processor_lua")?.is_some();
    let processor = (has_rules || has_lua).then(|| Stage {
        name: "bucky-process",
        args: common(privs.clone()),
    });

    let mut w = flag("graphite-ip", &args.graphite_ip);
    w.extend(port("graphite-port", args.graphite_port));
    if args.debug {
        w.push(os("--debug"));
    }
    w.extend(privs);
    let writer = Stage {
        name: "bucky-carbon",
        args: common(w),
    };
    Ok(Plan {
        receivers,
        processor,
        writer,
        nice: {
            let n: i64 = pick(args.nice.map(i64::from), cfg, "nice", 0)?;
            i32::try_from(n).with_context(|| format!("nice: {n} is out of range"))?
        },
    })
}

/// The whole program after argument parsing: returns the exit code.
pub fn main_with(args: Args) -> anyhow::Result<u8> {
    bucky_proto::log::init("bucky", log::LevelFilter::Info);
    let config_path = args.config.as_deref();
    let cfg = Config::load_optional(config_path)
        .with_context(|| "failed to read config file".to_string())?;
    cfg.warn_unknown("bucky");
    for key in INERT_KEYS.iter().filter(|k| cfg.raw(k).is_some()) {
        log::info!("config key '{key}' is recognised but has no effect in this bucky");
    }
    let level = pick(args.log_level.clone(), &cfg, "log_level", "INFO".into())?;
    log::set_max_level(bucky_proto::log::parse_level(&level)?);
    let plan = plan(&args, &cfg, config_path)?;
    bucky_proto::privs::nice(plan.nice)?;
    supervise::run(&plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("bucky").chain(argv.iter().copied())).unwrap()
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.receivers
            .iter()
            .chain(&p.processor)
            .chain(std::iter::once(&p.writer))
            .map(|s| s.name)
            .collect()
    }

    #[test]
    fn python_client_classes_are_refused() {
        let cfg = Config::parse_python("custom_clients = [('mod', 'Cls')]\n", "t.conf").unwrap();
        let e = plan(&args(&[]), &cfg, None).unwrap_err().to_string();
        assert!(e.contains("custom_clients"), "{e}");
        let empty = Config::parse_python("custom_clients = []\n", "t.conf").unwrap();
        assert!(plan(&args(&[]), &empty, None).is_ok());
    }

    #[test]
    fn default_pipeline() {
        let p = plan(&args(&[]), &Config::empty(), None).unwrap();
        assert_eq!(
            names(&p),
            [
                "bucky-statsd",
                "bucky-collectd",
                "bucky-metricsd",
                "bucky-carbon"
            ]
        );
        assert!(p.writer.args.is_empty());
        assert_eq!(p.nice, 0);
    }

    #[test]
    fn flags_are_passed_to_their_stage() {
        let a = args(&[
            "--statsd-port=9125",
            "--graphite-ip",
            "10.0.0.1",
            "--debug",
            "--disable-metricsd",
            "--collectd-types",
            "/a/types.db",
            "--collectd-types=/b/types.db",
            "--log-level",
            "DEBUG",
            "--uid",
            "nobody",
            "--nice",
            "-5",
            "my.conf",
        ]);
        let p = plan(&a, &Config::empty(), a.config.as_deref()).unwrap();
        assert_eq!(
            names(&p),
            ["bucky-statsd", "bucky-collectd", "bucky-carbon"]
        );
        let s: Vec<_> = p.receivers[0]
            .args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect();
        assert_eq!(
            s,
            [
                "--config",
                "my.conf",
                "--log-level",
                "DEBUG",
                "--statsd-port",
                "9125",
                "--uid",
                "nobody"
            ]
        );
        let c: Vec<_> = p.receivers[1]
            .args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect();
        assert!(c
            .windows(2)
            .any(|w| w == ["--collectd-types", "/a/types.db"]));
        assert!(c
            .windows(2)
            .any(|w| w == ["--collectd-types", "/b/types.db"]));
        let w: Vec<_> = p.writer.args.iter().map(|a| a.to_string_lossy()).collect();
        assert!(w.windows(2).any(|w| w == ["--graphite-ip", "10.0.0.1"]));
        assert!(w.contains(&"--debug".into()));
        assert_eq!(p.nice, -5);
    }

    #[test]
    fn config_disables_and_enables_the_processor() {
        let cfg = Config::parse_python(
            "statsd_enabled = False\nprocessor_lua = '/etc/bucky/p.lua'\nnice = 3\n",
            "t.conf",
        )
        .unwrap();
        let p = plan(&args(&[]), &cfg, None).unwrap();
        assert_eq!(
            names(&p),
            [
                "bucky-collectd",
                "bucky-metricsd",
                "bucky-process",
                "bucky-carbon"
            ]
        );
        assert_eq!(p.nice, 3);
        // The flag beats the file.
        let p = plan(&args(&["--nice", "1"]), &cfg, None).unwrap();
        assert_eq!(p.nice, 1);
        let none = Config::parse_python(
            "statsd_enabled = False\ncollectd_enabled = False\nmetricsd_enabled = False\n",
            "t.conf",
        )
        .unwrap();
        assert!(plan(&args(&[]), &none, None).is_err());
        let empty_rules = Config::parse_python("processor_rules = []\n", "t.conf").unwrap();
        assert!(plan(&args(&[]), &empty_rules, None)
            .unwrap()
            .processor
            .is_none());
    }

    #[test]
    fn the_seed_readme_config_loads_and_plans() {
        let text = include_str!("../../tests/fixtures/seed-readme-config.py");
        let cfg = Config::parse_python(text, "seed-readme-config.py").unwrap();
        assert!(cfg.unknown_keys().is_empty());
        let p = plan(&args(&[]), &cfg, None).unwrap();
        assert_eq!(
            names(&p),
            [
                "bucky-statsd",
                "bucky-collectd",
                "bucky-metricsd",
                "bucky-carbon"
            ]
        );
    }

    #[test]
    fn the_example_configs_load_without_unknown_keys() {
        for (name, text) in [
            (
                "bucky.toml",
                include_str!("../../scripts/examples/bucky.toml"),
            ),
            (
                "bucky.conf",
                include_str!("../../scripts/examples/bucky.conf"),
            ),
        ] {
            let cfg = Config::parse_auto(text, name).unwrap();
            assert!(
                cfg.unknown_keys().is_empty(),
                "{name}: {:?}",
                cfg.unknown_keys()
            );
            let p = plan(&args(&[]), &cfg, None).unwrap();
            assert_eq!(
                names(&p),
                [
                    "bucky-statsd",
                    "bucky-collectd",
                    "bucky-metricsd",
                    "bucky-process",
                    "bucky-carbon"
                ],
                "{name}"
            );
        }
    }

    /// Every stage accepts the example configs and the seed config: right types everywhere.
    #[test]
    fn every_stage_resolves_the_example_and_seed_configs() {
        use clap::Parser as _;
        for (name, text) in [
            (
                "bucky.toml",
                include_str!("../../scripts/examples/bucky.toml"),
            ),
            (
                "bucky.conf",
                include_str!("../../scripts/examples/bucky.conf"),
            ),
            (
                "seed-readme-config.py",
                include_str!("../../tests/fixtures/seed-readme-config.py"),
            ),
        ] {
            let cfg = Config::parse_auto(text, name).unwrap();
            let ctx = |stage: &str| format!("{name}: {stage}");
            bucky_statsd::Settings::resolve(&bucky_statsd::Args::parse_from(["s"]), &cfg)
                .unwrap_or_else(|e| panic!("{}: {e:#}", ctx("statsd")));
            bucky_collectd::Settings::resolve(&bucky_collectd::Args::parse_from(["c"]), &cfg)
                .unwrap_or_else(|e| panic!("{}: {e:#}", ctx("collectd")));
            bucky_metricsd::Settings::resolve(&bucky_metricsd::Args::parse_from(["m"]), &cfg)
                .unwrap_or_else(|e| panic!("{}: {e:#}", ctx("metricsd")));
            bucky_process::Settings::resolve(&bucky_process::Args::parse_from(["p"]), &cfg)
                .unwrap_or_else(|e| panic!("{}: {e:#}", ctx("process")));
            bucky_carbon::Settings::resolve(&bucky_carbon::Args::parse_from(["w"]), &cfg)
                .unwrap_or_else(|e| panic!("{}: {e:#}", ctx("carbon")));
        }
    }
}
