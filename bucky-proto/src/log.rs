//! Logging for every bucky tool: one line per message on stderr, prefixed by the tool's name,
//! with the original's level names, and rate limiting for messages driven by input.

use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown log level {0:?}: use one of CRITICAL, ERROR, WARNING, INFO, DEBUG")]
pub struct LevelError(pub String);

/// Parses the original's level names (CRITICAL, ERROR, WARNING, INFO, DEBUG), case-insensitive,
/// plus Rust's `warn` and `trace`.
pub fn parse_level(name: &str) -> Result<log::LevelFilter, LevelError> {
    Ok(match name.trim().to_ascii_uppercase().as_str() {
        "CRITICAL" | "FATAL" | "ERROR" => log::LevelFilter::Error,
        "WARNING" | "WARN" => log::LevelFilter::Warn,
        "INFO" => log::LevelFilter::Info,
        "DEBUG" => log::LevelFilter::Debug,
        "TRACE" => log::LevelFilter::Trace,
        "OFF" | "NONE" => log::LevelFilter::Off,
        _ => return Err(LevelError(name.to_string())),
    })
}

/// Sets up stderr logging as `TOOL: LEVEL: message`. Safe to call more than once; the level
/// can be changed later with `log::set_max_level`.
pub fn init(tool: &'static str, level: log::LevelFilter) {
    use std::io::Write;
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Trace)
        .format(move |buf, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            writeln!(buf, "{tool}: {level}: {}", record.args())
        })
        .target(env_logger::Target::Stderr)
        .try_init();
    log::set_max_level(level);
}

/// Lets through at most `burst` messages per `period`, and says how many were held back.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    burst: u32,
    window: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(burst: u32, period: Duration) -> Self {
        RateLimit {
            period,
            burst,
            window: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a message may be logged now, `n` being how many were suppressed since the
    /// last one that was; `None` when this one must be suppressed.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    pub fn allow_at(&mut self, now: Instant) -> Option<u64> {
        match self.window {
            Some(start) if now.duration_since(start) < self.period => {}
            _ => {
                self.window = Some(now);
                self.in_window = 0;
            }
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Messages held back and not yet reported.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

impl Default for RateLimit {
    /// Ten messages a second.
    fn default() -> Self {
        RateLimit::new(10, Duration::from_secs(1))
    }
}

/// Formats the "and N more" suffix for a rate-limited message.
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar messages suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("WARNING"), Ok(log::LevelFilter::Warn));
        assert_eq!(parse_level("critical"), Ok(log::LevelFilter::Error));
        assert_eq!(parse_level("DEBUG"), Ok(log::LevelFilter::Debug));
        assert_eq!(
            parse_level("LOUD").unwrap_err().to_string(),
            "unknown log level \"LOUD\": use one of CRITICAL, ERROR, WARNING, INFO, DEBUG"
        );
    }

    #[test]
    fn rate_limit_counts_what_it_holds_back() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(2, Duration::from_secs(1));
        assert_eq!(r.allow_at(t0), Some(0));
        assert_eq!(r.allow_at(t0), Some(0));
        assert_eq!(r.allow_at(t0), None);
        assert_eq!(r.allow_at(t0 + Duration::from_millis(500)), None);
        assert_eq!(r.suppressed(), 2);
        assert_eq!(r.allow_at(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(r.allow_at(t0 + Duration::from_secs(1)), Some(0));
    }
}
