//! The flags every bucky tool shares (config file, logging, self-metrics, user switch) and
//! their resolution against the config file, so that each tool reads them the same way.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::config::{pick, Config, ConfigError};
use crate::stats::SelfMetricsOptions;

/// The shared flags; each tool's `Args` flattens this in.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CommonArgs {
    /// Config file: TOML, or an original bucky config (Python literals only).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Seconds between this tool's self-metrics (bucky.<tool>.*); 0 turns them off
    /// (self_metrics_interval) [default: 10]
    #[arg(long, value_name = "SECS")]
    pub self_metrics_interval: Option<f64>,

    /// First component of the self-metric names (self_metrics_prefix) [default: bucky]
    #[arg(long, value_name = "PREFIX")]
    pub self_metrics_prefix: Option<String>,

    /// CRITICAL, ERROR, WARNING, INFO or DEBUG (log_level) [default: INFO]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Run as this user (a name or a number) once the sockets are bound and the files open
    /// (uid) [default: none]
    #[arg(long, value_name = "UID")]
    pub uid: Option<String>,

    /// Run as this group (a name or a number) (gid) [default: the user's group]
    #[arg(long, value_name = "GID")]
    pub gid: Option<String>,
}

impl CommonArgs {
    /// Loads `--config` (nothing when absent) and warns about keys no tool knows. Under the
    /// `bucky` wrapper, which has read the same file and warned already, a stage stays quiet:
    /// one misspelt key is reported once, not by every stage.
    pub fn load_config(&self, tool: &str) -> Result<Config, ConfigError> {
        let cfg = Config::load_optional(self.config.as_deref())?;
        if std::env::var_os(crate::shutdown::SUPERVISOR_VAR).is_none() {
            cfg.warn_unknown(tool);
        }
        Ok(cfg)
    }
}

/// The shared settings, resolved: flags beat the file, which beats the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub self_metrics: SelfMetricsOptions,
    pub log_level: log::LevelFilter,
    pub uid: Option<String>,
    pub gid: Option<String>,
}

#[derive(Debug, Error)]
pub enum CommonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("self_metrics_interval: {0} is not a number of seconds >= 0")]
    Interval(f64),
    #[error(transparent)]
    Level(#[from] crate::log::LevelError),
}

impl CommonArgs {
    pub fn resolve(&self, cfg: &Config) -> Result<Common, CommonError> {
        let interval = pick(
            self.self_metrics_interval,
            cfg,
            "self_metrics_interval",
            10.0,
        )?;
        let interval =
            Duration::try_from_secs_f64(interval).map_err(|_| CommonError::Interval(interval))?;
        let level = pick(self.log_level.clone(), cfg, "log_level", "INFO".into())?;
        Ok(Common {
            self_metrics: SelfMetricsOptions {
                interval,
                prefix: pick(
                    self.self_metrics_prefix.clone(),
                    cfg,
                    "self_metrics_prefix",
                    "bucky".into(),
                )?,
            },
            log_level: crate::log::parse_level(&level)?,
            uid: crate::privs::id_setting(&self.uid, cfg, "uid")?,
            gid: crate::privs::id_setting(&self.gid, cfg, "gid")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let cfg = Config::parse_python(
            "self_metrics_interval = 30\nlog_level = 'DEBUG'\nuid = 1000\n",
            "t.conf",
        )
        .unwrap();
        let a = Args::parse_from(["t", "--self-metrics-prefix", "x", "--uid", "nobody"]);
        let c = a.common.resolve(&cfg).unwrap();
        assert_eq!(c.self_metrics.interval, Duration::from_secs(30));
        assert_eq!(c.self_metrics.prefix, "x");
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(c.uid.as_deref(), Some("nobody"));
        assert_eq!(c.gid, None);
        let d = Args::parse_from(["t"])
            .common
            .resolve(&Config::empty())
            .unwrap();
        assert_eq!(d.self_metrics, SelfMetricsOptions::default());
        assert_eq!(d.log_level, log::LevelFilter::Info);
        let bad = Args::parse_from(["t", "--self-metrics-interval=-1"]);
        assert!(bad.common.resolve(&Config::empty()).is_err());
        let level = Args::parse_from(["t", "--log-level", "LOUD"]);
        assert!(level.common.resolve(&Config::empty()).is_err());
    }
}
