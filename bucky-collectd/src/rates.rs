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
//! * GAUGE values are not rates.
//!
//! A series is one value list identity (host, plugin, plugin instance, type, type
//! instance) with one slot per data source. Besides the previous values the entry keeps the
//! names its values were given, so a value list seen before is named with one hash lookup
//! instead of running its converter for every value.

use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

// Keys come from the network: a randomly seeded hasher, fast on short strings.
use foldhash::fast::RandomState;

use crate::packet::{CdTime, RawValue, ValueList, CDTIME_PER_SECOND};

/// What [`Series::rate`] made of a value.
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

/// A name remembered for one data source of a series.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CachedName {
    /// Not named yet (or named by a converter whose result may change: Lua).
    #[default]
    Unknown,
    Name(Box<str>),
    /// The converter drops this value.
    Drop,
}

/// One data source of a series: its previous value and its name.
#[derive(Debug, Clone, Default)]
struct Slot {
    prev: Option<(RawValue, CdTime)>,
    name: CachedName,
}

/// One value list identity: per data source, the previous value and the name.
#[derive(Debug, Clone)]
pub struct Series {
    slots: Vec<Slot>,
    /// Arrival time (Unix seconds) of the last value, for expiry.
    seen: f64,
}

impl Series {
    fn new(sources: usize, now: f64) -> Series {
        Series {
            slots: vec![Slot::default(); sources],
            seen: now,
        }
    }

    /// The name remembered for data source `i`.
    pub fn name(&self, i: usize) -> &CachedName {
        const UNKNOWN: &CachedName = &CachedName::Unknown;
        self.slots.get(i).map_or(UNKNOWN, |s| &s.name)
    }

    /// Remembers the name of data source `i`.
    pub fn set_name(&mut self, i: usize, name: CachedName) {
        if let Some(s) = self.slots.get_mut(i) {
            s.name = name;
        }
    }

    /// The rate of data source `i`'s `value` at `time`. GAUGE values come back as they are.
    pub fn rate(&mut self, i: usize, value: RawValue, time: CdTime) -> Rate {
        if let RawValue::Gauge(v) = value {
            return Rate::Value(v);
        }
        let Some(slot) = self.slots.get_mut(i) else {
            return Rate::CacheFull;
        };
        let Some((prev, prev_time)) = slot.prev.replace((value, time)) else {
            return Rate::First;
        };
        if time <= prev_time {
            return Rate::NotLater;
        }
        let dt = (time - prev_time) as f64 / CDTIME_PER_SECOND;
        match rate_of(prev, value, dt) {
            Some(v) => Rate::Value(v),
            // The kind changed (a new types.db): start over from this value.
            None => Rate::First,
        }
    }
}

/// The series seen recently, by value list identity.
#[derive(Debug)]
pub struct SeriesCache {
    map: HashMap<Box<str>, Series, RandomState>,
    /// Seconds without a value after which a series is forgotten.
    expiry: f64,
    /// Most data sources held, over all series.
    max_sources: usize,
    sources: usize,
    next_sweep: f64,
    key: String,
    expired: u64,
}

impl SeriesCache {
    /// `max_sources` bounds the data sources held (a value list of `if_octets` holds two).
    pub fn new(expiry_secs: f64, max_sources: usize) -> SeriesCache {
        SeriesCache {
            map: HashMap::default(),
            expiry: expiry_secs.max(0.0),
            max_sources,
            sources: 0,
            next_sweep: f64::NEG_INFINITY,
            key: String::new(),
            expired: 0,
        }
    }

    /// Data sources held now (the `series` counter).
    pub fn len(&self) -> usize {
        self.sources
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Data sources forgotten so far.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// The series of `vl` with `sources` data sources, created if new; `None` when it is
    /// new and the cache is full. `now` is the arrival time (Unix seconds).
    pub fn get(&mut self, vl: &ValueList<'_>, sources: usize, now: f64) -> Option<&mut Series> {
        self.key.clear();
        for part in [
            vl.host,
            vl.plugin,
            vl.plugin_instance,
            vl.type_,
            vl.type_instance,
        ] {
            // Strings end at their first NUL, so NUL cannot occur inside a part.
            self.key.push_str(part);
            self.key.push('\0');
        }
        let series = match self.map.entry_ref(self.key.as_str()) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(v) => {
                if self.sources + sources > self.max_sources {
                    return None;
                }
                self.sources += sources;
                v.insert(Series::new(sources, now))
            }
        };
        if series.slots.len() != sources {
            // The data set changed size (a new types.db): start over.
            self.sources = self.sources + sources - series.slots.len();
            *series = Series::new(sources, now);
        }
        series.seen = now;
        Some(series)
    }

    /// Forgets the series not seen for longer than the expiry; does the work at most every
    /// quarter of the expiry (and at least every minute). Returns how many data sources
    /// were forgotten.
    pub fn sweep(&mut self, now: f64) -> usize {
        if now < self.next_sweep {
            return 0;
        }
        self.next_sweep = now + (self.expiry / 4.0).clamp(1.0, 60.0);
        let expiry = self.expiry;
        let mut forgotten = 0;
        self.map.retain(|_, s| {
            let keep = now - s.seen <= expiry;
            if !keep {
                forgotten += s.slots.len();
            }
            keep
        });
        self.sources -= forgotten;
        self.expired += forgotten as u64;
        forgotten
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

    fn vl<'a>(host: &'a str, plugin: &'a str, ti: &'a str) -> ValueList<'a> {
        ValueList {
            host,
            plugin,
            type_: "derive",
            type_instance: ti,
            ..ValueList::default()
        }
    }

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
        let mut c = SeriesCache::new(600.0, 10);
        let t0 = 1_795_650_000 * S;
        let id = vl("h", "p", "n");
        let rate =
            |c: &mut SeriesCache, v: RawValue, t: CdTime| c.get(&id, 1, 0.0).unwrap().rate(0, v, t);
        assert_eq!(rate(&mut c, RawValue::Counter(100), t0), Rate::First);
        assert_eq!(
            rate(&mut c, RawValue::Counter(300), t0 + 2 * S),
            Rate::Value(100.0)
        );
        // Sub-second updates count (the original truncated to whole seconds).
        assert_eq!(
            rate(&mut c, RawValue::Counter(350), t0 + 2 * S + S / 4),
            Rate::Value(200.0)
        );
        // Not later: stored, nothing emitted; the next rate is from the stored value.
        assert_eq!(
            rate(&mut c, RawValue::Counter(360), t0 + 2 * S),
            Rate::NotLater
        );
        assert_eq!(
            rate(&mut c, RawValue::Counter(380), t0 + 3 * S),
            Rate::Value(20.0)
        );
        // Series are per value list identity: another host, plugin or instance is another.
        for other in [
            vl("h2", "p", "n"),
            vl("h", "p2", "n"),
            vl("h", "p", "n2"),
            vl("h\0p", "", "n"),
        ] {
            assert_eq!(
                c.get(&other, 1, 0.0)
                    .unwrap()
                    .rate(0, RawValue::Counter(1), t0),
                Rate::First
            );
        }
        assert_eq!(c.len(), 5);
        // Gauges pass through and are not stored.
        assert_eq!(
            c.get(&id, 1, 0.0)
                .unwrap()
                .rate(0, RawValue::Gauge(-1.5), t0),
            Rate::Value(-1.5)
        );
    }

    #[test]
    fn absolute_kind_and_size_changes() {
        let mut c = SeriesCache::new(600.0, 10);
        let id = vl("h", "a", "");
        let mut rate = |v: RawValue, t: CdTime| c.get(&id, 1, 0.0).unwrap().rate(0, v, t);
        assert_eq!(rate(RawValue::Absolute(5), 10 * S), Rate::First);
        assert_eq!(rate(RawValue::Absolute(8), 12 * S), Rate::Value(4.0));
        assert_eq!(rate(RawValue::Derive(8), 13 * S), Rate::First);
        assert_eq!(rate(RawValue::Derive(9), 14 * S), Rate::Value(1.0));
        // The same identity with two data sources now: a fresh series.
        let s = c.get(&id, 2, 0.0).unwrap();
        assert_eq!(s.rate(1, RawValue::Derive(1), 15 * S), Rate::First);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn idle_series_expire_and_the_cache_is_bounded() {
        let mut c = SeriesCache::new(60.0, 3);
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let s = c.get(&vl("h", "p", name), 1, i as f64).unwrap();
            assert_eq!(s.rate(0, RawValue::Derive(1), S), Rate::First);
        }
        assert!(c.get(&vl("h", "p", "d"), 1, 3.0).is_none(), "full");
        // "a" keeps reporting; the others go quiet.
        let s = c.get(&vl("h", "p", "a"), 1, 50.0).unwrap();
        assert_eq!(s.rate(0, RawValue::Derive(2), 2 * S), Rate::Value(1.0));
        assert_eq!(c.sweep(62.5), 2);
        assert_eq!(c.len(), 1);
        assert_eq!(c.expired(), 2);
        // Sweeps are spaced out.
        assert_eq!(c.sweep(63.0), 0);
        assert!(c.get(&vl("h", "p", "d"), 1, 63.0).is_some());
        let s = c.get(&vl("h", "p", "b"), 1, 63.0).unwrap();
        assert_eq!(s.rate(0, RawValue::Derive(5), 3 * S), Rate::First);
        assert!(c.get(&vl("h", "p", "e"), 1, 63.0).is_none());
    }
}
