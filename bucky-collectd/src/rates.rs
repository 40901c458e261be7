//! Rates of COUNTER, DERIVE and ABSOLUTE values (spec §4.7), computed from collectd's
//! high-resolution times, in a cache of series that forgets the ones that stop reporting and
//! never holds more than a fixed number.
//!
//! * The first value of a series is stored and nothing is emitted.
//! * Every later value replaces the stored one. If its time is not after the stored time,
//!   nothing is emitted.
//! * COUNTER: `(value - previous) / Δt`; a value below the previous one is a wrap, at 2^32
//!   if the previous value was below 2^32, else at 2^64.
//! * DERIVE: the signed difference over Δt (negative when the counter went back).
//! * ABSOLUTE: `value / Δt`.
//! * GAUGE values are not rates and never touch the cache.

use std::collections::HashMap;

use crate::packet::{CdTime, RawValue, CDTIME_PER_SECOND};

/// What [`RateCache::rate`] made of a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// The value to emit.
    Value(f64),
    /// The first value of the series: stored, nothing to emit.
    First,
    /// Its time is not after the stored one: stored, nothing to emit.
    NotLater,
    /// A new series while the cache is full: not stored, nothing to emit.
    CacheFull,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    value: RawValue,
    time: CdTime,
    /// Arrival time (Unix seconds) of the last value, for expiry.
    seen: f64,
}

/// The previous value of each (host, name) series.
#[derive(Debug)]
pub struct RateCache {
    map: HashMap<Box<str>, Entry>,
    /// Seconds without a value after which a series is forgotten.
    expiry: f64,
    max_series: usize,
    next_sweep: f64,
    key: String,
    expired: u64,
}

impl RateCache {
    pub fn new(expiry_secs: f64, max_series: usize) -> RateCache {
        RateCache {
            map: HashMap::new(),
            expiry: expiry_secs.max(0.0),
            max_series,
            next_sweep: f64::NEG_INFINITY,
            key: String::new(),
            expired: 0,
        }
    }

    /// Series held now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Series forgotten so far.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// The rate of `value` at `time` for series (`host`, `name`); `now` is the arrival time
    /// (Unix seconds), which drives expiry. GAUGE values come back as they are.
    pub fn rate(
        &mut self,
        host: &str,
        name: &str,
        value: RawValue,
        time: CdTime,
        now: f64,
    ) -> Rate {
        if let RawValue::Gauge(v) = value {
            return Rate::Value(v);
        }
        self.key.clear();
        self.key.push_str(host);
        self.key.push('\0');
        self.key.push_str(name);
        let Some(entry) = self.map.get_mut(self.key.as_str()) else {
            if self.map.len() >= self.max_series {
                return Rate::CacheFull;
            }
            self.map.insert(
                self.key.as_str().into(),
                Entry {
                    value,
                    time,
                    seen: now,
                },
            );
            return Rate::First;
        };
        let prev = std::mem::replace(
            entry,
            Entry {
                value,
                time,
                seen: now,
            },
        );
        if time <= prev.time {
            return Rate::NotLater;
        }
        let dt = (time - prev.time) as f64 / CDTIME_PER_SECOND;
        match rate_of(prev.value, value, dt) {
            Some(v) => Rate::Value(v),
            // The kind of the series changed (a new types.db): start over from this value.
            None => Rate::First,
        }
    }

    /// Forgets the series not seen for longer than the expiry; does the work at most every
    /// quarter of the expiry (and at least every minute). Returns how many were forgotten.
    pub fn sweep(&mut self, now: f64) -> usize {
        if now < self.next_sweep {
            return 0;
        }
        self.next_sweep = now + (self.expiry / 4.0).clamp(1.0, 60.0);
        let before = self.map.len();
        let expiry = self.expiry;
        self.map.retain(|_, e| now - e.seen <= expiry);
        let n = before - self.map.len();
        self.expired += n as u64;
        n
    }
}

/// The rate between two values of the same kind, `dt` seconds apart (`dt > 0`).
pub fn rate_of(prev: RawValue, value: RawValue, dt: f64) -> Option<f64> {
    Some(match (prev, value) {
        (RawValue::Counter(p), RawValue::Counter(v)) => {
            let delta = if v >= p {
                v - p
            } else if p < 1 << 32 {
                // Wrapped at 2^32: v < p < 2^32, so this cannot overflow.
                v + (1 << 32) - p
            } else {
                v.wrapping_sub(p)
            };
            delta as f64 / dt
        }
        (RawValue::Derive(p), RawValue::Derive(v)) => (i128::from(v) - i128::from(p)) as f64 / dt,
        (RawValue::Absolute(_), RawValue::Absolute(v)) => v as f64 / dt,
        (RawValue::Gauge(_), RawValue::Gauge(v)) => v,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: CdTime = 1 << 30;

    #[test]
    fn rate_table() {
        use RawValue::*;
        let cases: &[(RawValue, RawValue, f64, f64)] = &[
            (Counter(100), Counter(300), 2.0, 100.0),
            (Counter(u32::MAX as u64 - 9), Counter(10), 1.0, 20.0),
            (
                Counter((1 << 32) + 5),
                Counter(4),
                1.0,
                (u64::MAX - (1 << 32)) as f64,
            ),
            (Counter(u64::MAX - 1), Counter(3), 1.0, 5.0),
            (Derive(10), Derive(25), 0.5, 30.0),
            (Derive(25), Derive(10), 1.0, -15.0),
            (Derive(i64::MIN), Derive(i64::MAX), 1.0, u64::MAX as f64),
            (Absolute(7), Absolute(30), 3.0, 10.0),
            (Gauge(1.0), Gauge(2.5), 1.0, 2.5),
        ];
        for (prev, v, dt, want) in cases {
            assert_eq!(rate_of(*prev, *v, *dt), Some(*want), "{prev:?} -> {v:?}");
        }
        assert_eq!(rate_of(Counter(1), Derive(2), 1.0), None);
    }

    #[test]
    fn first_value_is_stored_then_rates_follow() {
        let mut c = RateCache::new(600.0, 10);
        let t0 = 1_795_650_000 * S;
        assert_eq!(
            c.rate("h", "n", RawValue::Counter(100), t0, 0.0),
            Rate::First
        );
        assert_eq!(
            c.rate("h", "n", RawValue::Counter(300), t0 + 2 * S, 0.0),
            Rate::Value(100.0)
        );
        // Sub-second updates count (the original truncated to whole seconds).
        assert_eq!(
            c.rate("h", "n", RawValue::Counter(350), t0 + 2 * S + S / 4, 0.0),
            Rate::Value(200.0)
        );
        // Not later: stored, nothing emitted; the next rate is from the stored value.
        assert_eq!(
            c.rate("h", "n", RawValue::Counter(360), t0 + 2 * S, 0.0),
            Rate::NotLater
        );
        assert_eq!(
            c.rate("h", "n", RawValue::Counter(380), t0 + 3 * S, 0.0),
            Rate::Value(20.0)
        );
        // Series are per host and name.
        assert_eq!(
            c.rate("h2", "n", RawValue::Counter(1), t0, 0.0),
            Rate::First
        );
        assert_eq!(
            c.rate("h", "n2", RawValue::Counter(1), t0, 0.0),
            Rate::First
        );
        // The key cannot be forged by moving the separator.
        assert_eq!(
            c.rate("h\0n", "", RawValue::Counter(1), t0, 0.0),
            Rate::First
        );
        assert_eq!(c.len(), 4);
        // Gauges pass through and are not stored.
        assert_eq!(
            c.rate("h", "g", RawValue::Gauge(-1.5), t0, 0.0),
            Rate::Value(-1.5)
        );
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn absolute_and_kind_changes() {
        let mut c = RateCache::new(600.0, 10);
        assert_eq!(
            c.rate("h", "a", RawValue::Absolute(5), 10 * S, 0.0),
            Rate::First
        );
        assert_eq!(
            c.rate("h", "a", RawValue::Absolute(8), 12 * S, 0.0),
            Rate::Value(4.0)
        );
        assert_eq!(
            c.rate("h", "a", RawValue::Derive(8), 13 * S, 0.0),
            Rate::First
        );
        assert_eq!(
            c.rate("h", "a", RawValue::Derive(9), 14 * S, 0.0),
            Rate::Value(1.0)
        );
    }

    #[test]
    fn idle_series_expire_and_the_cache_is_bounded() {
        let mut c = RateCache::new(60.0, 3);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(
                c.rate("h", name, RawValue::Derive(1), S, i as f64),
                Rate::First
            );
        }
        assert_eq!(
            c.rate("h", "d", RawValue::Derive(1), S, 3.0),
            Rate::CacheFull
        );
        // "a" keeps reporting; the others go quiet.
        assert_eq!(
            c.rate("h", "a", RawValue::Derive(2), 2 * S, 50.0),
            Rate::Value(1.0)
        );
        assert_eq!(c.sweep(62.5), 2);
        assert_eq!(c.len(), 1);
        assert_eq!(c.expired(), 2);
        // Sweeps are spaced out.
        assert_eq!(c.sweep(63.0), 0);
        assert_eq!(c.rate("h", "d", RawValue::Derive(1), S, 63.0), Rate::First);
        assert_eq!(
            c.rate("h", "b", RawValue::Derive(5), 3 * S, 63.0),
            Rate::First
        );
    }
}
