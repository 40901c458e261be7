//! The flush: merges the threads' aggregates into the state that outlives an interval
//! (gauges, the keys idle counters and timers keep reporting) and turns it into samples, per
//! decisions.md §3 and spec §3.3-3.6: timers (with percentile thresholds), counters, gauges,
//! sets, then numStats, under the legacy namespace or the configurable prefixes.

use std::sync::Arc;

use bucky_proto::sample::{push_line, push_number, Sample};
use hashbrown::hash_map::Entry;
use hashbrown::HashMap;

use crate::aggregate::{AggStats, Aggregate, GaugeAcc, Key, Limits, MemberSet};
use crate::parse::{Kind, MAX_NAME};

/// Where each kind of metric is named (spec §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `stats.<k>` and `stats_counts.<k>` for counters, fixed prefixes for the rest.
    pub legacy: bool,
    /// Before `numStats`.
    pub global: String,
    pub counter: String,
    pub timer: String,
    pub gauge: String,
    pub set: String,
}

impl Names {
    /// The legacy namespace (the default): the prefix settings are ignored.
    pub fn legacy() -> Names {
        Names {
            legacy: true,
            global: "stats.".into(),
            counter: String::new(),
            timer: "stats.timers.".into(),
            gauge: "stats.gauges.".into(),
            set: "stats.sets.".into(),
        }
    }

    /// Non-legacy names: each prefix is the non-empty parts, each followed by a dot
    /// (`None` or `""` skips a part), as the original's `make_name`.
    pub fn prefixed(
        global: Option<&str>,
        counter: Option<&str>,
        timer: Option<&str>,
        gauge: Option<&str>,
        set: Option<&str>,
    ) -> Names {
        fn make(parts: &[Option<&str>]) -> String {
            let mut s = String::new();
            for p in parts.iter().flatten().filter(|p| !p.is_empty()) {
                s.push_str(p);
                s.push('.');
            }
            s
        }
        Names {
            legacy: false,
            global: make(&[global]),
            counter: make(&[global, counter]),
            timer: make(&[global, timer]),
            gauge: make(&[global, gauge]),
            set: make(&[global, set]),
        }
    }
}

/// The `statsd_timer_*` switches: which timer statistics are emitted (all by default). The
/// percentile variants follow the switch of their base statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerStats {
    pub mean: bool,
    pub upper: bool,
    pub lower: bool,
    pub count: bool,
    pub count_ps: bool,
    pub sum: bool,
    pub sum_squares: bool,
    pub median: bool,
    pub std: bool,
}

impl Default for TimerStats {
    fn default() -> Self {
        TimerStats {
            mean: true,
            upper: true,
            lower: true,
            count: true,
            count_ps: true,
            sum: true,
            sum_squares: true,
            median: true,
            std: true,
        }
    }
}

/// What a flush emits and forgets.
#[derive(Debug, Clone, PartialEq)]
pub struct FlushOptions {
    /// Seconds between flushes; counters' rates and timers' `count_ps` divide by it.
    pub flush_time: f64,
    pub names: Names,
    /// `statsd_percentile_thresholds`, each in (0, 100].
    pub thresholds: Vec<f64>,
    pub timer: TimerStats,
    /// Delete-idle (`statsd_delete_idlestats` and each kind's switch): a key not updated
    /// during the interval is forgotten instead of reporting 0.
    pub delete_counters: bool,
    pub delete_timers: bool,
    pub delete_sets: bool,
    /// Only gauges updated during the interval are sent (with delete-idle only, as 2.3.0).
    pub only_changed_gauges: bool,
}

impl Default for FlushOptions {
    fn default() -> Self {
        FlushOptions {
            flush_time: 10.0,
            names: Names::legacy(),
            thresholds: vec![90.0],
            timer: TimerStats::default(),
            delete_counters: false,
            delete_timers: false,
            delete_sets: false,
            only_changed_gauges: false,
        }
    }
}

/// `_90`, `_99_9`: the name suffix of a percentile threshold, as Etsy statsd writes it.
pub fn threshold_suffix(p: f64) -> String {
    let mut text = Vec::new();
    push_number(&mut text, p);
    format!("_{}", String::from_utf8_lossy(&text).replace('.', "_"))
}

#[derive(Debug)]
struct Counter {
    value: f64,
    seen: bool,
}

#[derive(Debug)]
struct Timer {
    values: Vec<f64>,
    count: f64,
    seen: bool,
}

#[derive(Debug)]
struct Gauge {
    value: f64,
    pending: Option<GaugeAcc>,
    seen: bool,
}

#[derive(Debug)]
struct Set {
    members: MemberSet,
    seen: bool,
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// The value of numStats: timers, counters, gauges sent and sets.
    pub num_stats: u64,
    /// Sample lines written (numStats included).
    pub samples: u64,
    /// Keys forgotten to make room after the key cap was hit.
    pub evicted: u64,
    /// Keys forgotten by delete-idle.
    pub deleted: u64,
}

/// Counts kept by the flusher over its whole life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushTotals {
    pub flushes: u64,
    pub samples: u64,
    pub keys_evicted: u64,
    /// Results that were not finite (a sum overflowed) and so could not be written.
    pub not_finite: u64,
}

/// Appends sample lines, splitting a tagged key so the tags stay last:
/// `prefix + base + suffix + ;tags`.
struct Emitter<'a> {
    out: &'a mut Vec<u8>,
    ts: f64,
    name: String,
    samples: u64,
    not_finite: u64,
}

impl Emitter<'_> {
    fn emit(&mut self, prefix: &str, key: &[u8], suffix: &str, value: f64) {
        if !value.is_finite() {
            self.not_finite += 1;
            return;
        }
        // Keys are printable ASCII (the parser and the gauges loader see to it).
        let key = std::str::from_utf8(key).unwrap_or("invalid");
        let (base, tags) = key.find(';').map_or((key, ""), |i| key.split_at(i));
        self.name.clear();
        self.name.push_str(prefix);
        self.name.push_str(base);
        self.name.push_str(suffix);
        self.name.push_str(tags);
        push_line(
            self.out,
            &Sample {
                name: &self.name,
                value,
                timestamp: self.ts,
                host: None,
            },
        );
        self.samples += 1;
    }
}

/// The state that outlives a flush interval, and the flush itself. Single-threaded: the
/// receiving threads hand their [`Aggregate`]s over and [`merge`](Self::merge) takes them in.
#[derive(Debug)]
pub struct Flusher {
    opts: FlushOptions,
    suffixes: Vec<(f64, String)>,
    limits: Arc<Limits>,
    counters: HashMap<Key, Counter>,
    timers: HashMap<Key, Timer>,
    gauges: HashMap<Key, Gauge>,
    sets: HashMap<Key, Set>,
    stats: AggStats,
    over_cap_in_interval: u64,
    totals: FlushTotals,
}

impl Flusher {
    pub fn new(opts: FlushOptions, limits: Arc<Limits>) -> Flusher {
        let suffixes = opts
            .thresholds
            .iter()
            .map(|&p| (p, threshold_suffix(p)))
            .collect();
        Flusher {
            opts,
            suffixes,
            limits,
            counters: HashMap::new(),
            timers: HashMap::new(),
            gauges: HashMap::new(),
            sets: HashMap::new(),
            stats: AggStats::default(),
            over_cap_in_interval: 0,
            totals: FlushTotals::default(),
        }
    }

    pub fn options(&self) -> &FlushOptions {
        &self.opts
    }

    /// What the threads counted, over the flusher's life (merged aggregates only).
    pub fn stats(&self) -> &AggStats {
        &self.stats
    }

    pub fn totals(&self) -> &FlushTotals {
        &self.totals
    }

    /// Keys held now, all kinds together.
    pub fn keys(&self) -> usize {
        self.counters.len() + self.timers.len() + self.gauges.len() + self.sets.len()
    }

    /// Takes in one thread's aggregate and leaves it empty (its maps keep their capacity).
    pub fn merge(&mut self, agg: &mut Aggregate) {
        let limits = &self.limits;
        for (k, v) in agg.counters.drain() {
            match self.counters.entry(k) {
                Entry::Occupied(mut e) => {
                    let c = e.get_mut();
                    c.value += v;
                    c.seen = true;
                }
                Entry::Vacant(e) => {
                    limits.ensure(Kind::Counter, e.key().as_bytes());
                    e.insert(Counter {
                        value: v,
                        seen: true,
                    });
                }
            }
        }
        for (k, mut v) in agg.timers.drain() {
            match self.timers.entry(k) {
                Entry::Occupied(mut e) => {
                    let t = e.get_mut();
                    if t.values.is_empty() {
                        std::mem::swap(&mut t.values, &mut v.values);
                    } else {
                        t.values.extend_from_slice(&v.values);
                    }
                    t.count += v.count;
                    t.seen = true;
                }
                Entry::Vacant(e) => {
                    limits.ensure(Kind::Timer, e.key().as_bytes());
                    e.insert(Timer {
                        values: v.values,
                        count: v.count,
                        seen: true,
                    });
                }
            }
        }
        for (k, v) in agg.gauges.drain() {
            match self.gauges.entry(k) {
                Entry::Occupied(mut e) => {
                    let g = e.get_mut();
                    match &mut g.pending {
                        Some(p) => p.merge(&v),
                        None => g.pending = Some(v),
                    }
                    g.seen = true;
                }
                Entry::Vacant(e) => {
                    limits.ensure(Kind::Gauge, e.key().as_bytes());
                    e.insert(Gauge {
                        value: 0.0,
                        pending: Some(v),
                        seen: true,
                    });
                }
            }
        }
        for (k, mut v) in agg.sets.drain() {
            match self.sets.entry(k) {
                Entry::Occupied(mut e) => {
                    let s = e.get_mut();
                    if s.members.is_empty() {
                        std::mem::swap(&mut s.members, &mut v);
                    } else {
                        s.members.extend(v.iter());
                    }
                    s.seen = true;
                }
                Entry::Vacant(e) => {
                    limits.ensure(Kind::Set, e.key().as_bytes());
                    e.insert(Set {
                        members: v,
                        seen: true,
                    });
                }
            }
        }
        self.stats.add(&agg.stats);
        self.over_cap_in_interval += agg.stats.keys_over_cap;
        agg.stats = AggStats::default();
    }

    /// Loads gauges (persistent gauges at start-up), up to the key cap; they count as updated,
    /// so the first flush sends them. Returns how many were loaded.
    pub fn load_gauges(&mut self, gauges: impl IntoIterator<Item = (String, f64)>) -> usize {
        let mut n = 0;
        for (k, v) in gauges {
            // Whatever the file says, a name must fit in a sample line.
            let printable = k.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if !v.is_finite() || k.is_empty() || !printable || k.len() > MAX_NAME {
                continue;
            }
            let k = Key::from(k.as_bytes());
            if !self.gauges.contains_key(k.as_bytes()) {
                if self.limits.held() >= self.limits.max_keys() {
                    break;
                }
                self.limits.ensure(Kind::Gauge, k.as_bytes());
            }
            self.gauges.insert(
                k,
                Gauge {
                    value: v,
                    pending: None,
                    seen: true,
                },
            );
            n += 1;
        }
        n
    }

    /// The current gauge values (to save them), with any merged updates applied.
    pub fn gauge_values(&self) -> Vec<(&str, f64)> {
        self.gauges
            .iter()
            .filter_map(|(k, g)| {
                let v = g.pending.map_or(g.value, |p| p.resolve(g.value));
                let k = std::str::from_utf8(k.as_bytes()).ok()?;
                Some((k, if v.is_finite() { v } else { g.value }))
            })
            .collect()
    }

    /// Emits one flush at timestamp `ts` into `out` (whole sample lines) and starts the next
    /// interval.
    pub fn flush(&mut self, ts: f64, out: &mut Vec<u8>) -> FlushReport {
        let mut report = FlushReport::default();
        let mut not_finite = 0;
        for g in self.gauges.values_mut() {
            if let Some(p) = g.pending.take() {
                let v = p.resolve(g.value);
                if v.is_finite() {
                    g.value = v;
                } else {
                    not_finite += 1;
                }
            }
        }
        // Room for new keys: after the cap was hit, idle keys of every kind go.
        if self.over_cap_in_interval > 0 {
            report.evicted = self.forget_idle(true, true, true, true);
            if report.evicted > 0 {
                log::warn!(
                    "key cap reached ({} keys): {} new keys were dropped this interval; forgot \
                     {} idle keys to make room (raise statsd_max_keys, or set \
                     statsd_delete_idlestats to forget idle keys at every flush)",
                    self.limits.max_keys(),
                    self.over_cap_in_interval,
                    report.evicted
                );
            }
            self.over_cap_in_interval = 0;
        }
        let (dc, dt, ds) = (
            self.opts.delete_counters,
            self.opts.delete_timers,
            self.opts.delete_sets,
        );
        report.deleted = self.forget_idle(dc, dt, ds, false);

        let mut em = Emitter {
            out,
            ts,
            name: String::with_capacity(128),
            samples: 0,
            not_finite,
        };
        let opts = &self.opts;
        let names = &opts.names;
        let ts_flush = opts.flush_time;

        for (k, t) in self.timers.iter_mut() {
            emit_timer(&mut em, opts, &self.suffixes, k.as_bytes(), t, ts_flush);
            t.values = Vec::new();
            t.count = 0.0;
            t.seen = false;
            report.num_stats += 1;
        }
        for (k, c) in self.counters.iter_mut() {
            if names.legacy {
                em.emit("stats.", k.as_bytes(), "", c.value / ts_flush);
                em.emit("stats_counts.", k.as_bytes(), "", c.value);
            } else {
                em.emit(&names.counter, k.as_bytes(), ".rate", c.value / ts_flush);
                em.emit(&names.counter, k.as_bytes(), ".count", c.value);
            }
            c.value = 0.0;
            c.seen = false;
            report.num_stats += 1;
        }
        for (k, g) in self.gauges.iter_mut() {
            if !opts.only_changed_gauges || g.seen {
                em.emit(&names.gauge, k.as_bytes(), "", g.value);
                report.num_stats += 1;
            }
            g.seen = false;
        }
        for (k, s) in self.sets.iter_mut() {
            em.emit(&names.set, k.as_bytes(), ".count", s.members.len() as f64);
            s.members = MemberSet::default();
            s.seen = false;
            report.num_stats += 1;
        }
        em.emit(&names.global, b"numStats", "", report.num_stats as f64);

        report.samples = em.samples;
        self.totals.flushes += 1;
        self.totals.samples += em.samples;
        self.totals.keys_evicted += report.evicted;
        self.totals.not_finite += em.not_finite;
        self.limits.new_interval();
        report
    }

    /// Forgets the keys not updated since the last flush, for the kinds asked.
    fn forget_idle(&mut self, counters: bool, timers: bool, sets: bool, gauges: bool) -> u64 {
        let limits = &self.limits;
        let mut n = 0u64;
        if counters {
            self.counters.retain(|k, c| {
                c.seen || {
                    limits.forget(Kind::Counter, k.as_bytes());
                    n += 1;
                    false
                }
            });
        }
        if timers {
            self.timers.retain(|k, t| {
                t.seen || {
                    limits.forget(Kind::Timer, k.as_bytes());
                    n += 1;
                    false
                }
            });
        }
        if sets {
            self.sets.retain(|k, s| {
                s.seen || {
                    limits.forget(Kind::Set, k.as_bytes());
                    n += 1;
                    false
                }
            });
        }
        if gauges {
            self.gauges.retain(|k, g| {
                g.seen || {
                    limits.forget(Kind::Gauge, k.as_bytes());
                    n += 1;
                    false
                }
            });
        }
        n
    }
}

/// One timer's statistics, in the order of decisions.md §3: per threshold `mean_T`,
/// `upper_T`, `sum_T`, `sum_squares_T`, `count_T`; then `mean`, `upper`, `lower`, `count`,
/// `count_ps`, `median`, `sum`, `sum_squares`, `std`. A timer without values this interval
/// sends `count 0` and `count_ps 0`.
fn emit_timer(
    em: &mut Emitter<'_>,
    opts: &FlushOptions,
    suffixes: &[(f64, String)],
    key: &[u8],
    t: &mut Timer,
    flush_time: f64,
) {
    let on = opts.timer;
    let p = opts.names.timer.as_str();
    let v = &mut t.values;
    if v.is_empty() {
        if on.count {
            em.emit(p, key, ".count", 0.0);
        }
        if on.count_ps {
            em.emit(p, key, ".count_ps", 0.0);
        }
        return;
    }
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    for (pct, suffix) in suffixes {
        // HEAD's int(floor(pct / 100.0 * count)).
        let k = (pct / 100.0 * n as f64).floor() as usize;
        if k == 0 {
            continue;
        }
        let k = k.min(n);
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for x in &v[..k] {
            sum += x;
            sum_sq += x * x;
        }
        if on.mean {
            em.emit(p, key, &format!(".mean{suffix}"), sum / k as f64);
        }
        if on.upper {
            em.emit(p, key, &format!(".upper{suffix}"), v[k - 1]);
        }
        if on.sum {
            em.emit(p, key, &format!(".sum{suffix}"), sum);
        }
        if on.sum_squares {
            em.emit(p, key, &format!(".sum_squares{suffix}"), sum_sq);
        }
        if on.count {
            em.emit(p, key, &format!(".count{suffix}"), k as f64);
        }
    }
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    for x in v.iter() {
        sum += x;
        sum_sq += x * x;
    }
    let mean = sum / n as f64;
    if on.mean {
        em.emit(p, key, ".mean", mean);
    }
    if on.upper {
        em.emit(p, key, ".upper", v[n - 1]);
    }
    if on.lower {
        em.emit(p, key, ".lower", v[0]);
    }
    if on.count {
        em.emit(p, key, ".count", t.count);
    }
    if on.count_ps {
        em.emit(p, key, ".count_ps", t.count / flush_time);
    }
    if on.median {
        let mid = n / 2;
        let median = if n % 2 == 0 {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        em.emit(p, key, ".median", median);
    }
    if on.sum {
        em.emit(p, key, ".sum", sum);
    }
    if on.sum_squares {
        em.emit(p, key, ".sum_squares", sum_sq);
    }
    if on.std {
        let mut diffs = 0.0;
        for x in v.iter() {
            diffs += (x - mean) * (x - mean);
        }
        em.emit(p, key, ".std", (diffs / n as f64).sqrt());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Ingest;
    use std::collections::BTreeMap;

    /// Feeds `data` through one thread's ingest, merges, flushes at `ts`; returns the lines
    /// as a name -> value map (and checks no name repeats).
    struct Rig {
        limits: Arc<Limits>,
        ingest: Ingest,
        flusher: Flusher,
    }

    impl Rig {
        fn new(opts: FlushOptions) -> Rig {
            let limits = Arc::new(Limits::new(1000, 100_000));
            Rig {
                ingest: Ingest::new(limits.clone(), true),
                flusher: Flusher::new(opts, limits.clone()),
                limits,
            }
        }

        fn send(&mut self, data: &[u8]) {
            let mut agg = Aggregate::new();
            self.ingest.datagram(&mut agg, 0.0, None, data);
            self.flusher.merge(&mut agg);
        }

        fn flush(&mut self, ts: f64) -> BTreeMap<String, f64> {
            let mut out = Vec::new();
            let report = self.flusher.flush(ts, &mut out);
            let text = String::from_utf8(out).unwrap();
            let mut map = BTreeMap::new();
            for line in text.lines() {
                let p = bucky_proto::sample::parse_str(line).unwrap();
                assert_eq!(p.sample.timestamp, ts, "{line}");
                assert!(
                    map.insert(p.sample.name.to_string(), p.sample.value)
                        .is_none(),
                    "{line} twice"
                );
            }
            assert_eq!(report.samples as usize, map.len());
            map
        }
    }

    fn lines(map: &BTreeMap<String, f64>) -> Vec<String> {
        map.iter().map(|(k, v)| format!("{k} {v:?}")).collect()
    }

    #[test]
    fn timer_maths() {
        let mut rig = Rig::new(FlushOptions::default());
        rig.send(b"t:100|ms\nt:300|ms\nt:200|ms");
        let m = rig.flush(1000.0);
        assert_eq!(
            lines(&m),
            [
                "stats.numStats 1.0",
                "stats.timers.t.count 3.0",
                "stats.timers.t.count_90 2.0",
                "stats.timers.t.count_ps 0.3",
                "stats.timers.t.lower 100.0",
                "stats.timers.t.mean 200.0",
                "stats.timers.t.mean_90 150.0",
                "stats.timers.t.median 200.0",
                "stats.timers.t.std 81.64965809277261",
                "stats.timers.t.sum 600.0",
                "stats.timers.t.sum_90 300.0",
                "stats.timers.t.sum_squares 140000.0",
                "stats.timers.t.sum_squares_90 50000.0",
                "stats.timers.t.upper 300.0",
                "stats.timers.t.upper_90 200.0",
            ]
        );
        // Next interval: the key stays and reports an empty timer.
        let m = rig.flush(1010.0);
        assert_eq!(
            lines(&m),
            [
                "stats.numStats 1.0",
                "stats.timers.t.count 0.0",
                "stats.timers.t.count_ps 0.0",
            ]
        );
    }

    #[test]
    fn timer_rates_thresholds_and_switches() {
        let opts = FlushOptions {
            thresholds: vec![50.0, 99.9, 100.0],
            timer: TimerStats {
                sum_squares: false,
                std: false,
                ..TimerStats::default()
            },
            flush_time: 2.0,
            ..FlushOptions::default()
        };
        let mut rig = Rig::new(opts);
        // Four values, one sent at rate 0.5: count = 5.
        rig.send(b"t:4|ms\nt:1|ms\nt:3|ms|@0.5\nt:2|ms");
        let m = rig.flush(5.0);
        assert_eq!(m["stats.timers.t.count"], 5.0);
        assert_eq!(m["stats.timers.t.count_ps"], 2.5);
        assert_eq!(m["stats.timers.t.median"], 2.5);
        assert_eq!(m["stats.timers.t.mean"], 2.5);
        assert_eq!(m["stats.timers.t.upper_50"], 2.0);
        assert_eq!(m["stats.timers.t.count_50"], 2.0);
        assert_eq!(m["stats.timers.t.mean_50"], 1.5);
        // floor(0.999 * 4) = 3
        assert_eq!(m["stats.timers.t.upper_99_9"], 3.0);
        assert_eq!(m["stats.timers.t.sum_99_9"], 6.0);
        assert_eq!(m["stats.timers.t.count_100"], 4.0);
        assert!(!m
            .keys()
            .any(|k| k.contains("sum_squares") || k.ends_with(".std")));
        // One value: floor(0.5 * 1) = 0 skips that threshold (as HEAD).
        rig.send(b"t:7|ms");
        let m = rig.flush(6.0);
        assert!(!m.contains_key("stats.timers.t.mean_50"));
        assert_eq!(m["stats.timers.t.mean_100"], 7.0);
        assert_eq!(m["stats.timers.t.median"], 7.0);
    }

    #[test]
    fn threshold_suffixes() {
        assert_eq!(threshold_suffix(90.0), "_90");
        assert_eq!(threshold_suffix(99.9), "_99_9");
        assert_eq!(threshold_suffix(99.99), "_99_99");
        assert_eq!(threshold_suffix(100.0), "_100");
    }

    /// The oracle of spec §3.5 (2.2.1, flush 1 s), with our decisions: exact numbers, the
    /// full timer set, and numStats counting empty timers (as 2.3.0 and HEAD).
    #[test]
    fn counters_gauges_and_numstats_across_flushes() {
        let opts = FlushOptions {
            flush_time: 1.0,
            ..FlushOptions::default()
        };
        let mut rig = Rig::new(opts);
        assert_eq!(lines(&rig.flush(1.0)), ["stats.numStats 0.0"]);
        rig.send(b"gorm:1|c");
        rig.send(b"gorm:5|g");
        rig.send(b"t:1|ms\nt:2|ms");
        let m = rig.flush(2.0);
        assert_eq!(m["stats.gorm"], 1.0);
        assert_eq!(m["stats_counts.gorm"], 1.0);
        assert_eq!(m["stats.gauges.gorm"], 5.0);
        assert_eq!(m["stats.timers.t.mean"], 1.5);
        assert_eq!(m["stats.timers.t.upper"], 2.0);
        assert_eq!(m["stats.timers.t.upper_90"], 1.0);
        assert_eq!(m["stats.timers.t.lower"], 1.0);
        assert_eq!(m["stats.timers.t.count"], 2.0);
        assert_eq!(m["stats.numStats"], 3.0);
        let m = rig.flush(3.0);
        assert_eq!(
            lines(&m),
            [
                "stats.gauges.gorm 5.0",
                "stats.gorm 0.0",
                "stats.numStats 3.0",
                "stats.timers.t.count 0.0",
                "stats.timers.t.count_ps 0.0",
                "stats_counts.gorm 0.0",
            ]
        );
    }

    #[test]
    fn counter_rates_use_the_flush_time() {
        let mut rig = Rig::new(FlushOptions::default());
        rig.send(b"c:3|c\nc:1|c|@0.1\nc:0.5|c");
        let m = rig.flush(1.0);
        assert_eq!(m["stats_counts.c"], 13.5);
        assert_eq!(m["stats.c"], 1.35);
    }

    #[test]
    fn gauges_persist_and_take_deltas() {
        let mut rig = Rig::new(FlushOptions::default());
        rig.send(b"g:-5|g");
        assert_eq!(rig.flush(1.0)["stats.gauges.g"], -5.0);
        rig.send(b"g:+2|g\ng:+1|g");
        assert_eq!(rig.flush(2.0)["stats.gauges.g"], -2.0);
        rig.send(b"g:10|g\ng:-3|g");
        assert_eq!(rig.flush(3.0)["stats.gauges.g"], 7.0);
        assert_eq!(rig.flush(4.0)["stats.gauges.g"], 7.0);
        assert_eq!(rig.flusher.gauge_values(), [("g", 7.0)]);
    }

    #[test]
    fn sets_count_distinct_members() {
        let mut rig = Rig::new(FlushOptions::default());
        rig.send(b"u:alice|s\nu:bob|s\nu:alice|s");
        rig.send(b"u:carol|s\nu:bob|s");
        let m = rig.flush(1.0);
        assert_eq!(m["stats.sets.u.count"], 3.0);
        assert_eq!(m["stats.numStats"], 1.0);
        assert_eq!(rig.flush(2.0)["stats.sets.u.count"], 0.0);
    }

    #[test]
    fn non_legacy_names() {
        let opts = FlushOptions {
            names: Names::prefixed(
                Some("stats"),
                Some("counters"),
                Some("timers"),
                Some("gauges"),
                Some("sets"),
            ),
            ..FlushOptions::default()
        };
        let mut rig = Rig::new(opts);
        rig.send(b"c:2|c\ng:1|g\ns:x|s\nt:1|ms|#env:prod");
        let m = rig.flush(1.0);
        assert_eq!(m["stats.counters.c.rate"], 0.2);
        assert_eq!(m["stats.counters.c.count"], 2.0);
        assert_eq!(m["stats.gauges.g"], 1.0);
        assert_eq!(m["stats.sets.s.count"], 1.0);
        assert_eq!(m["stats.timers.t.mean;env=prod"], 1.0);
        assert_eq!(m["stats.numStats"], 4.0);

        let opts = FlushOptions {
            names: Names::prefixed(None, Some(""), Some("t"), None, Some("s")),
            ..FlushOptions::default()
        };
        let mut rig = Rig::new(opts);
        rig.send(b"c:2|c\ng:1|g\ns:x|s\nt:1|ms");
        let m = rig.flush(1.0);
        assert_eq!(m["c.rate"], 0.2);
        assert_eq!(m["g"], 1.0);
        assert_eq!(m["s.s.count"], 1.0);
        assert_eq!(m["t.t.mean"], 1.0);
        assert_eq!(m["numStats"], 4.0);
    }

    #[test]
    fn tags_stay_last_in_names() {
        let mut rig = Rig::new(FlushOptions::default());
        rig.send(b"req:1|c|#env:prod\nq:3|g|#b:2,a:1\nu:x|s|#k");
        let m = rig.flush(1.0);
        assert_eq!(m["stats.req;env=prod"], 0.1);
        assert_eq!(m["stats_counts.req;env=prod"], 1.0);
        assert_eq!(m["stats.gauges.q;a=1;b=2"], 3.0);
        assert_eq!(m["stats.sets.u.count;k"], 1.0);
    }

    #[test]
    fn delete_idle_and_only_changed_gauges() {
        let opts = FlushOptions {
            delete_counters: true,
            delete_timers: true,
            delete_sets: true,
            only_changed_gauges: true,
            ..FlushOptions::default()
        };
        let mut rig = Rig::new(opts);
        rig.send(b"c:1|c\nt:1|ms\ns:a|s\ng:4|g");
        assert_eq!(rig.flush(1.0)["stats.numStats"], 4.0);
        assert_eq!(rig.limits.held(), 4);
        rig.send(b"c2:1|c");
        let m = rig.flush(2.0);
        assert_eq!(
            lines(&m),
            ["stats.c2 0.1", "stats.numStats 1.0", "stats_counts.c2 1.0"]
        );
        // Idle gauges are kept (and sent again once updated), the rest forgotten.
        assert_eq!(rig.limits.held(), 2);
        rig.send(b"g:+1|g");
        assert_eq!(rig.flush(3.0)["stats.gauges.g"], 5.0);

        // Per-kind switches: counters kept.
        let opts = FlushOptions {
            delete_counters: false,
            delete_timers: true,
            delete_sets: true,
            ..FlushOptions::default()
        };
        let mut rig = Rig::new(opts);
        rig.send(b"c:1|c\nt:1|ms");
        rig.flush(1.0);
        let m = rig.flush(2.0);
        assert_eq!(m["stats_counts.c"], 0.0);
        assert!(!m.keys().any(|k| k.starts_with("stats.timers")));
    }

    #[test]
    fn threads_merge() {
        let limits = Arc::new(Limits::new(1000, 100_000));
        let mut flusher = Flusher::new(FlushOptions::default(), limits.clone());
        let (mut a, mut b) = (
            Ingest::new(limits.clone(), true),
            Ingest::new(limits.clone(), true),
        );
        let (mut aa, mut ba) = (Aggregate::new(), Aggregate::new());
        a.datagram(&mut aa, 1.0, None, b"c:1|c\nt:1|ms\ns:x|s\ng:5|g");
        b.datagram(&mut ba, 2.0, None, b"c:2|c\nt:2|ms\ns:y|s\ns:x|s\ng:+1|g");
        flusher.merge(&mut aa);
        flusher.merge(&mut ba);
        assert!(aa.is_empty() && ba.is_empty());
        let mut out = Vec::new();
        flusher.flush(10.0, &mut out);
        let text = String::from_utf8(out).unwrap();
        for want in [
            "stats_counts.c 3 10\n",
            "stats.timers.t.count 2 10\n",
            "stats.sets.s.count 2 10\n",
            "stats.gauges.g 6 10\n",
            "stats.numStats 4 10\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert_eq!(flusher.stats().metrics, 9);
    }

    #[test]
    fn cap_pressure_forgets_idle_keys() {
        let limits = Arc::new(Limits::new(3, 100));
        let mut flusher = Flusher::new(FlushOptions::default(), limits.clone());
        let mut ing = Ingest::new(limits.clone(), true);
        let mut agg = Aggregate::new();
        ing.datagram(&mut agg, 0.0, None, b"a:1|c\nb:1|c\nc:1|g");
        flusher.merge(&mut agg);
        flusher.flush(1.0, &mut Vec::new());
        // Full: a new key is dropped, and idle keys are forgotten at the next flush.
        ing.datagram(&mut agg, 0.0, None, b"a:1|c\nd:1|c");
        assert_eq!(agg.stats.keys_over_cap, 1);
        flusher.merge(&mut agg);
        let report = flusher.flush(2.0, &mut Vec::new());
        assert_eq!(report.evicted, 2);
        assert_eq!(limits.held(), 1);
        ing.datagram(&mut agg, 0.0, None, b"d:1|c");
        assert_eq!(agg.stats.keys_over_cap, 0);
    }

    #[test]
    fn overflowing_sums_are_not_written() {
        let mut rig = Rig::new(FlushOptions::default());
        rig.send(b"c:1e308|c\nc:1e308|c\ng:1e308|g\ng:+1e308|g");
        let m = rig.flush(1.0);
        assert!(!m.contains_key("stats_counts.c"));
        assert!(!m.contains_key("stats.c"));
        assert_eq!(m["stats.gauges.g"], 0.0);
        assert_eq!(rig.flusher.totals().not_finite, 3);
    }

    #[test]
    fn loaded_gauges_are_sent_first() {
        let opts = FlushOptions {
            only_changed_gauges: true,
            ..FlushOptions::default()
        };
        let mut rig = Rig::new(opts);
        assert_eq!(
            rig.flusher
                .load_gauges(vec![("a".to_string(), 1.5), ("b".to_string(), f64::NAN)]),
            1
        );
        assert_eq!(rig.flush(1.0)["stats.gauges.a"], 1.5);
        assert!(!rig.flush(2.0).contains_key("stats.gauges.a"));
    }
}
