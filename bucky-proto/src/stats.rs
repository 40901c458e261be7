//! Self-metrics: the counters each tool keeps of what it receives, emits and drops, written as
//! ordinary samples named `<prefix>.<tool>.<counter>` so they flow to Graphite like the rest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sample::{push_line, Sample};

/// A monotonically increasing count, shared between threads.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// For gauges (a current level, such as a queue length) kept in the same table.
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// Where and how often the self-metrics go.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfMetricsOptions {
    /// Zero turns them off.
    pub interval: Duration,
    /// The first name component; `bucky` by default.
    pub prefix: String,
}

impl Default for SelfMetricsOptions {
    fn default() -> Self {
        SelfMetricsOptions {
            interval: Duration::from_secs(10),
            prefix: "bucky".into(),
        }
    }
}

/// Writes counters as sample lines under `<prefix>.<tool>.`.
#[derive(Debug, Clone)]
pub struct SelfMetrics {
    base: String,
}

impl SelfMetrics {
    pub fn new(prefix: &str, tool: &str) -> Self {
        let base = if prefix.is_empty() {
            format!("{tool}.")
        } else {
            format!("{prefix}.{tool}.")
        };
        SelfMetrics { base }
    }

    /// Appends one sample line per counter.
    pub fn push(&self, out: &mut Vec<u8>, counters: &[(&str, u64)], timestamp: f64) {
        let mut name = String::with_capacity(self.base.len() + 24);
        for (counter, value) in counters {
            name.clear();
            name.push_str(&self.base);
            name.push_str(counter);
            push_line(
                out,
                &Sample {
                    name: &name,
                    value: *value as f64,
                    timestamp,
                    host: None,
                },
            );
        }
    }
}

/// `in=10 sent=9 dropped=1`, for the summary each tool logs at exit.
pub fn summary(counters: &[(&str, u64)]) -> String {
    counters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The wall clock as Unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_metric_lines() {
        let m = SelfMetrics::new("bucky", "carbon");
        let mut out = Vec::new();
        m.push(&mut out, &[("in", 10), ("dropped", 0)], 1795650000.0);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "bucky.carbon.in 10 1795650000\nbucky.carbon.dropped 0 1795650000\n"
        );
        let mut out = Vec::new();
        SelfMetrics::new("", "statsd").push(&mut out, &[("bad_lines", 3)], 5.0);
        assert_eq!(String::from_utf8(out).unwrap(), "statsd.bad_lines 3 5\n");
    }

    #[test]
    fn counters_and_summary() {
        let c = Counter::new();
        c.inc();
        c.add(4);
        assert_eq!(c.get(), 5);
        assert_eq!(summary(&[("in", 5), ("out", 4)]), "in=5 out=4");
    }
}
