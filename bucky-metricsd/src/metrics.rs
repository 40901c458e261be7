//! The MetricsD metric types (bucky 2.2.1 §5.3, after Coda Hale's metrics library), done as
//! the original's code intended: counter, gauge, histogram (exponentially decaying reservoir),
//! meter (1/5/15-minute EWMAs ticked every 5 s) and timer (a meter and a histogram).
//!
//! Time is passed in as seconds on a monotonic clock (`now`), so the maths is testable and a
//! wall-clock jump cannot distort a rate.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::wire::MetricType;

/// Seconds between EWMA ticks.
pub const TICK_SECONDS: f64 = 5.0;

/// Reservoir size of the histogram's decaying sample.
pub const RESERVOIR_SIZE: usize = 1028;

/// Decay factor of the histogram's sample, per second: a value's weight grows by e^0.015 a
/// second, so the sample favours the last five minutes or so.
pub const RESERVOIR_ALPHA: f64 = 0.015;

/// Seconds between rescalings of the sample's priorities (which grow exponentially).
pub const RESCALE_SECONDS: f64 = 3600.0;

/// The percentiles a histogram emits, with their name suffixes.
pub const PERCENTILES: [(f64, &str); 6] = [
    (0.75, ".perc_75"),
    (0.85, ".perc_85"),
    (0.90, ".perc_90"),
    (0.95, ".perc_95"),
    (0.99, ".perc_99"),
    (0.999, ".perc_99_9"),
];

/// A counter: update adds, clear sets 0. Emits `name`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counter {
    pub count: f64,
}

/// A gauge: update sets, clear does nothing (as in the original). Emits `name`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauge {
    pub value: f64,
}

/// An exponentially weighted moving average of a rate per second, ticked every
/// [`TICK_SECONDS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ewma {
    alpha: f64,
    rate: f64,
    uncounted: f64,
    initialized: bool,
}

impl Ewma {
    /// An average over `minutes` minutes: alpha = 1 - e^(-5 / (60 * minutes)).
    pub fn over_minutes(minutes: f64) -> Ewma {
        Ewma {
            alpha: 1.0 - (-TICK_SECONDS / 60.0 / minutes).exp(),
            rate: 0.0,
            uncounted: 0.0,
            initialized: false,
        }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    pub fn update(&mut self, n: f64) {
        self.uncounted += n;
    }

    /// One tick: the first sets the rate to what was counted in the interval, later ones move
    /// it by alpha towards that.
    pub fn tick(&mut self) {
        let instant = self.uncounted / TICK_SECONDS;
        self.uncounted = 0.0;
        if self.initialized {
            self.rate += self.alpha * (instant - self.rate);
        } else {
            self.rate = instant;
            self.initialized = true;
        }
    }

    /// `n` ticks at once: after the first, nothing is uncounted, so each further tick only
    /// decays the rate by (1 - alpha). Keeps a long idle gap O(1).
    pub fn tick_n(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.tick();
        if n > 1 {
            let rest = i32::try_from(n - 1).unwrap_or(i32::MAX);
            self.rate *= (1.0 - self.alpha).powi(rest);
        }
    }

    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// A meter: counts events and their 1, 5 and 15-minute rates. Emits `name.count`,
/// `name.rate_avg` (count / seconds since creation), `name.rate_1m`, `name.rate_5m`,
/// `name.rate_15m` (per second).
#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    count: f64,
    start: f64,
    last_tick: f64,
    m1: Ewma,
    m5: Ewma,
    m15: Ewma,
}

impl Meter {
    pub fn new(now: f64) -> Meter {
        Meter {
            count: 0.0,
            start: now,
            last_tick: now,
            m1: Ewma::over_minutes(1.0),
            m5: Ewma::over_minutes(5.0),
            m15: Ewma::over_minutes(15.0),
        }
    }

    /// Ticks the averages once per whole [`TICK_SECONDS`] since the last tick.
    fn tick_if_necessary(&mut self, now: f64) {
        let age = now - self.last_tick;
        if age >= TICK_SECONDS {
            let ticks = (age / TICK_SECONDS).floor();
            self.last_tick += ticks * TICK_SECONDS;
            let n = ticks as u64;
            self.m1.tick_n(n);
            self.m5.tick_n(n);
            self.m15.tick_n(n);
        }
    }

    pub fn mark(&mut self, n: f64, now: f64) {
        self.tick_if_necessary(now);
        self.count += n;
        self.m1.update(n);
        self.m5.update(n);
        self.m15.update(n);
    }

    pub fn count(&self) -> f64 {
        self.count
    }

    /// The mean rate since creation, per second (0 before any time has passed).
    pub fn rate_avg(&self, now: f64) -> f64 {
        let elapsed = now - self.start;
        if elapsed > 0.0 {
            self.count / elapsed
        } else {
            0.0
        }
    }

    /// (1, 5, 15)-minute rates per second, as of `now`.
    pub fn rates(&mut self, now: f64) -> (f64, f64, f64) {
        self.tick_if_necessary(now);
        (self.m1.rate(), self.m5.rate(), self.m15.rate())
    }

    pub fn flush(&mut self, now: f64, emit: &mut dyn FnMut(&str, f64)) {
        let (r1, r5, r15) = self.rates(now);
        emit(".count", self.count);
        emit(".rate_avg", self.rate_avg(now));
        emit(".rate_1m", r1);
        emit(".rate_5m", r5);
        emit(".rate_15m", r15);
    }
}

/// A reservoir entry; ordered by priority (lowest first out of the min-heap).
#[derive(Debug, Clone, Copy)]
struct Weighted {
    priority: f64,
    value: f64,
}

impl PartialEq for Weighted {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Weighted {}
impl PartialOrd for Weighted {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Weighted {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the lowest priority.
    fn cmp(&self, other: &Self) -> Ordering {
        other.priority.total_cmp(&self.priority)
    }
}

/// An exponentially decaying random sample (Cormode et al., forward decay), as in Coda
/// Hale's `ExponentiallyDecayingReservoir`: each value gets priority
/// `e^(alpha * (t - start)) / u` with `u` uniform in (0, 1]; the `size` highest priorities
/// are kept. The priorities are rescaled every [`RESCALE_SECONDS`] so they stay finite.
#[derive(Debug, Clone)]
pub struct DecayingSample {
    size: usize,
    alpha: f64,
    start: f64,
    next_rescale: f64,
    heap: BinaryHeap<Weighted>,
    rng: fastrand::Rng,
}

impl DecayingSample {
    pub fn new(size: usize, alpha: f64, now: f64, rng: fastrand::Rng) -> DecayingSample {
        DecayingSample {
            size: size.max(1),
            alpha,
            start: now,
            next_rescale: now + RESCALE_SECONDS,
            heap: BinaryHeap::new(),
            rng,
        }
    }

    pub fn update(&mut self, value: f64, now: f64) {
        if now >= self.next_rescale {
            self.rescale(now);
        }
        let u = 1.0 - self.rng.f64(); // (0, 1]
        let priority = (self.alpha * (now - self.start)).exp() / u;
        let entry = Weighted { priority, value };
        if self.heap.len() < self.size {
            if self.heap.len() == self.heap.capacity() {
                // Grow by doubling, but never past the reservoir: 16 KiB, not 32.
                let want = (self.heap.len().max(4) * 2).min(self.size);
                self.heap.reserve_exact(want - self.heap.len());
            }
            self.heap.push(entry);
        } else if let Some(mut lowest) = self.heap.peek_mut() {
            if priority > lowest.priority {
                *lowest = entry;
            }
        }
    }

    /// Moves the landmark to `now`, scaling every priority by `e^(-alpha * (now - start))`,
    /// which keeps their order.
    fn rescale(&mut self, now: f64) {
        let factor = (-self.alpha * (now - self.start)).exp();
        self.start = now;
        self.next_rescale = now + RESCALE_SECONDS;
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        for e in &mut entries {
            e.priority *= factor;
        }
        self.heap = BinaryHeap::from(entries);
    }

    pub fn clear(&mut self, now: f64) {
        self.heap.clear();
        self.start = now;
        self.next_rescale = now + RESCALE_SECONDS;
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The sampled values, sorted, into `out` (cleared first).
    pub fn sorted_values(&self, out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.heap.iter().map(|e| e.value));
        out.sort_by(f64::total_cmp);
    }
}

/// The value at quantile `q` of sorted `values`, interpolating between neighbours at position
/// `q * (n + 1)` (Coda Hale's snapshot, which the original meant to use).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let pos = q * (n as f64 + 1.0);
    if pos < 1.0 {
        return values[0];
    }
    if pos >= n as f64 {
        return values[n - 1];
    }
    let index = pos.floor();
    let lower = values[index as usize - 1];
    let upper = values[index as usize];
    lower + (pos - index) * (upper - lower)
}

/// A histogram: count, sum, min, max, mean and (sample) standard deviation of every value
/// since creation or the last clear, and percentiles over the decaying sample. Emits
/// `name.count`, `name.sum`, and once a value arrived `name.min`, `name.max`, `name.mean`,
/// `name.stddev`, `name.perc_75` ... `name.perc_99_9`.
#[derive(Debug, Clone)]
pub struct Histogram {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Welford's running mean and sum of squared deviations.
    mean: f64,
    m2: f64,
    sample: DecayingSample,
}

impl Histogram {
    pub fn new(now: f64, rng: fastrand::Rng) -> Histogram {
        Histogram {
            count: 0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
            mean: 0.0,
            m2: 0.0,
            sample: DecayingSample::new(RESERVOIR_SIZE, RESERVOIR_ALPHA, now, rng),
        }
    }

    pub fn update(&mut self, v: f64, now: f64) {
        self.count += 1;
        self.sum += v;
        if self.count == 1 {
            self.min = v;
            self.max = v;
            self.mean = v;
            self.m2 = 0.0;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            let old = self.mean;
            self.mean += (v - old) / self.count as f64;
            self.m2 += (v - old) * (v - self.mean);
        }
        self.sample.update(v, now);
    }

    pub fn clear(&mut self, now: f64) {
        self.count = 0;
        self.sum = 0.0;
        self.min = 0.0;
        self.max = 0.0;
        self.mean = 0.0;
        self.m2 = 0.0;
        self.sample.clear(now);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// sum / count (0 with no values).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    /// The sample standard deviation (n - 1 in the denominator); 0 for fewer than 2 values.
    pub fn stddev(&self) -> f64 {
        if self.count > 1 {
            (self.m2 / (self.count - 1) as f64).max(0.0).sqrt()
        } else {
            0.0
        }
    }

    pub fn sample(&self) -> &DecayingSample {
        &self.sample
    }

    /// Emits the statistics; `scratch` is reused for the sorted sample.
    pub fn flush(&self, scratch: &mut Vec<f64>, emit: &mut dyn FnMut(&str, f64)) {
        emit(".count", self.count as f64);
        emit(".sum", self.sum);
        if self.count == 0 {
            return;
        }
        emit(".min", self.min);
        emit(".max", self.max);
        emit(".mean", self.mean());
        emit(".stddev", self.stddev());
        self.sample.sorted_values(scratch);
        for (q, suffix) in PERCENTILES {
            emit(suffix, quantile(scratch, q));
        }
    }
}

/// A timer: every update is one call (the meter, under `name.calls.*`) and one duration (the
/// histogram, under `name.histo.*`). Clear clears the histogram, as in the original.
#[derive(Debug, Clone)]
pub struct Timer {
    pub calls: Meter,
    pub histo: Histogram,
}

/// Any metric, as stored.
#[derive(Debug, Clone)]
pub enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Box<Histogram>),
    Meter(Meter),
    Timer(Box<Timer>),
}

impl Metric {
    pub fn new(kind: MetricType, now: f64, rng: &mut fastrand::Rng) -> Metric {
        match kind {
            MetricType::Counter => Metric::Counter(Counter::default()),
            MetricType::Gauge => Metric::Gauge(Gauge::default()),
            MetricType::Histogram => Metric::Histogram(Box::new(Histogram::new(now, rng.fork()))),
            MetricType::Meter => Metric::Meter(Meter::new(now)),
            MetricType::Timer => Metric::Timer(Box::new(Timer {
                calls: Meter::new(now),
                histo: Histogram::new(now, rng.fork()),
            })),
        }
    }

    pub fn kind(&self) -> MetricType {
        match self {
            Metric::Counter(_) => MetricType::Counter,
            Metric::Gauge(_) => MetricType::Gauge,
            Metric::Histogram(_) => MetricType::Histogram,
            Metric::Meter(_) => MetricType::Meter,
            Metric::Timer(_) => MetricType::Timer,
        }
    }

    pub fn update(&mut self, v: f64, now: f64) {
        match self {
            Metric::Counter(c) => c.count += v,
            Metric::Gauge(g) => g.value = v,
            Metric::Histogram(h) => h.update(v, now),
            Metric::Meter(m) => m.mark(v, now),
            Metric::Timer(t) => {
                t.calls.mark(1.0, now);
                t.histo.update(v, now);
            }
        }
    }

    pub fn clear(&mut self, now: f64) {
        match self {
            Metric::Counter(c) => c.count = 0.0,
            Metric::Gauge(_) | Metric::Meter(_) => {}
            Metric::Histogram(h) => h.clear(now),
            Metric::Timer(t) => t.histo.clear(now),
        }
    }

    /// Calls `emit(group, stat, value)` for every value this metric reports now; the sample
    /// name is the metric's name followed by `group` and `stat` (both empty for counters and
    /// gauges; `.calls`/`.histo` is the group of a timer's parts).
    pub fn flush(
        &mut self,
        now: f64,
        scratch: &mut Vec<f64>,
        emit: &mut dyn FnMut(&str, &str, f64),
    ) {
        match self {
            Metric::Counter(c) => emit("", "", c.count),
            Metric::Gauge(g) => emit("", "", g.value),
            Metric::Histogram(h) => h.flush(scratch, &mut |s, v| emit("", s, v)),
            Metric::Meter(m) => m.flush(now, &mut |s, v| emit("", s, v)),
            Metric::Timer(t) => {
                t.calls.flush(now, &mut |s, v| emit(".calls", s, v));
                t.histo.flush(scratch, &mut |s, v| emit(".histo", s, v));
            }
        }
    }
}

#[cfg(test)]
mod tests;
