//! Aggregation of parsed metrics, one [`Aggregate`] per receiving thread, with no lock on the
//! hot path: a key the thread has already seen this interval costs one hash lookup by `&[u8]`
//! and no allocation. [`Limits`] bounds memory whatever arrives: at most `max_keys` distinct
//! keys are held (over the cap a key is dropped and counted), and at most `max_values` timer
//! values and set members per flush interval.
//!
//! Datagrams can come from any source: [`Ingest::datagram`] takes an arrival time, a source
//! address and the bytes (a socket, a TCP stream, a capture replay, a test).

use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bucky_proto::log::{suppressed_note, RateLimit};
use foldhash::fast::FixedState;
use hashbrown::hash_map::EntryRef;
use hashbrown::{HashMap, HashSet};

use crate::parse::{BadLine, Kind, Metric, Parser, Sink};

/// Hashes that are already well mixed (foldhash output) go into sets unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A set of members, each kept as its 64-bit hash (8 bytes whatever the member's length).
pub type MemberSet = HashSet<u64, BuildHasherDefault<IdentityHasher>>;

/// Registry shards: a key seen for the first time in an interval locks one of them.
const SHARDS: usize = 64;
/// Timer values and set members a thread reserves from the shared budget at a time.
const CREDIT_CHUNK: i64 = 1024;

/// The caps shared by every thread: distinct keys held, values per interval.
#[derive(Debug)]
pub struct Limits {
    max_keys: usize,
    max_values: i64,
    held: AtomicUsize,
    values_left: AtomicI64,
    /// Hashes of the (kind, key) pairs held, by thread maps or by the flusher.
    shards: Box<[Mutex<MemberSet>]>,
    /// One seed for every thread, so that a key or a set member hashes alike everywhere.
    hasher: FixedState,
}

impl Limits {
    pub fn new(max_keys: usize, max_values: u64) -> Limits {
        let max_values = i64::try_from(max_values).unwrap_or(i64::MAX);
        Limits {
            max_keys,
            max_values,
            held: AtomicUsize::new(0),
            values_left: AtomicI64::new(max_values),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(MemberSet::default()))
                .collect(),
            hasher: FixedState::with_seed(random_seed()),
        }
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Distinct (kind, key) pairs held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    fn key_hash(&self, kind: Kind, key: &[u8]) -> u64 {
        self.hasher.hash_one((kind as u8, key))
    }

    /// The hash a set member is kept as.
    pub fn member_hash(&self, member: &[u8]) -> u64 {
        self.hasher.hash_one(member)
    }

    fn shard(
        &self,
        h: u64,
    ) -> std::sync::MutexGuard<'_, HashSet<u64, BuildHasherDefault<IdentityHasher>>> {
        let i = (h >> 58) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a thread start holding `key`? Yes if it is already held somewhere or there is room.
    pub fn admit(&self, kind: Kind, key: &[u8]) -> bool {
        let h = self.key_hash(kind, key);
        let mut shard = self.shard(h);
        if shard.contains(&h) {
            return true;
        }
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.max_keys {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        shard.insert(h);
        true
    }

    /// Records `key` as held without checking the cap (the flusher keeps what threads admitted,
    /// and what it loads at start up to the cap).
    pub fn ensure(&self, kind: Kind, key: &[u8]) {
        let h = self.key_hash(kind, key);
        if self.shard(h).insert(h) {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The flusher no longer holds `key`.
    pub fn forget(&self, kind: Kind, key: &[u8]) {
        let h = self.key_hash(kind, key);
        if self.shard(h).remove(&h) {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A new flush interval: the value budget is full again.
    pub fn new_interval(&self) {
        self.values_left.store(self.max_values, Ordering::Relaxed);
    }

    /// Reserves up to a chunk of the interval's value budget; 0 when it is spent.
    fn reserve_values(&self) -> i64 {
        let before = self.values_left.fetch_sub(CREDIT_CHUNK, Ordering::Relaxed);
        before.clamp(0, CREDIT_CHUNK)
    }
}

/// A process-wide random seed, so that hash flooding cannot be planned offline.
fn random_seed() -> u64 {
    use std::collections::hash_map::RandomState;
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// Bytes of a key held in the map's own slot; longer keys go to the heap.
const INLINE: usize = 46;

/// A metric key as the maps hold it. Short keys (most of them) live in the map's slot
/// itself, so a lookup compares bytes already in the cache line it probes instead of chasing
/// a pointer: at low rates, between two wake-ups, that pointer's target is usually cold.
#[derive(Clone)]
pub enum Key {
    Inline(u8, [u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Key {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline(len, buf) => &buf[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

impl From<&[u8]> for Key {
    fn from(b: &[u8]) -> Key {
        if b.len() <= INLINE {
            let mut buf = [0u8; INLINE];
            buf[..b.len()].copy_from_slice(b);
            Key::Inline(b.len() as u8, buf)
        } else {
            Key::Heap(b.into())
        }
    }
}

impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Hashes as its bytes do, so that maps can be searched by `&[u8]`.
impl std::hash::Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A timer's values and count (the sum of 1/rate) in one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimerAcc {
    pub values: Vec<f64>,
    pub count: f64,
}

/// A gauge's updates in one interval, from one thread or merged from several.
///
/// `base` is the last absolute value and when it arrived; `delta` the sum of the `+`/`-`
/// updates after it (or of all of them, without a base), `delta_time` when the last arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GaugeAcc {
    pub base: Option<(f64, f64)>,
    pub delta: f64,
    pub delta_time: f64,
}

impl GaugeAcc {
    pub fn apply(&mut self, value: f64, delta: bool, time: f64) {
        if delta {
            self.delta += value;
            self.delta_time = time;
        } else {
            self.base = Some((value, time));
            self.delta = 0.0;
        }
    }

    /// Merges the updates of another thread. The latest absolute value wins; deltas that
    /// arrived after it are added. (Arrival order is only known to the datagram batch, and a
    /// thread's deltas are summed, so this is as close as it gets without a lock.)
    pub fn merge(&mut self, other: &GaugeAcc) {
        match (self.base, other.base) {
            (Some((_, mine)), Some((_, theirs))) if theirs > mine => {
                let mut keep = *other;
                if self.delta_time > theirs {
                    keep.delta += self.delta;
                }
                *self = keep;
            }
            (None, Some((_, theirs))) => {
                let mut keep = *other;
                if self.delta_time > theirs {
                    keep.delta += self.delta;
                }
                *self = keep;
            }
            (Some((_, mine)), _) => {
                if other.delta_time > mine {
                    self.delta += other.delta;
                    self.delta_time = self.delta_time.max(other.delta_time);
                }
            }
            (None, None) => {
                self.delta += other.delta;
                self.delta_time = self.delta_time.max(other.delta_time);
            }
        }
    }

    /// The gauge after these updates, from its previous value (0 for a new gauge).
    pub fn resolve(&self, previous: f64) -> f64 {
        self.base.map_or(previous, |(v, _)| v) + self.delta
    }
}

/// What a thread counted while filling an [`Aggregate`]; handed to the flusher with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AggStats {
    pub datagrams: u64,
    pub bytes: u64,
    /// Samples applied.
    pub metrics: u64,
    /// Refused lines and samples.
    pub bad_lines: u64,
    /// Samples of a new key dropped because `max_keys` keys were held.
    pub keys_over_cap: u64,
    /// Timer values and set members dropped because the interval's budget was spent.
    pub values_over_cap: u64,
    /// Lines whose tags were dropped (tag output off).
    pub tags_dropped: u64,
}

impl AggStats {
    pub fn add(&mut self, o: &AggStats) {
        self.datagrams += o.datagrams;
        self.bytes += o.bytes;
        self.metrics += o.metrics;
        self.bad_lines += o.bad_lines;
        self.keys_over_cap += o.keys_over_cap;
        self.values_over_cap += o.values_over_cap;
        self.tags_dropped += o.tags_dropped;
    }
}

/// One thread's metrics for one flush interval.
#[derive(Debug, Default)]
pub struct Aggregate {
    pub counters: HashMap<Key, f64>,
    pub timers: HashMap<Key, TimerAcc>,
    pub gauges: HashMap<Key, GaugeAcc>,
    pub sets: HashMap<Key, MemberSet>,
    pub stats: AggStats,
}

impl Aggregate {
    pub fn new() -> Aggregate {
        Aggregate::default()
    }

    /// Distinct keys held, all kinds together.
    pub fn len(&self) -> usize {
        self.counters.len() + self.timers.len() + self.gauges.len() + self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.stats == AggStats::default()
    }

    /// Empties the maps (keeping their capacity, unless it grew far beyond `keep`).
    pub fn clear(&mut self, keep: usize) {
        fn clear_map<V>(m: &mut HashMap<Key, V>, keep: usize) {
            if m.capacity() > keep.max(1024) * 4 {
                *m = HashMap::new();
            } else {
                m.clear();
            }
        }
        clear_map(&mut self.counters, keep);
        clear_map(&mut self.timers, keep);
        clear_map(&mut self.gauges, keep);
        clear_map(&mut self.sets, keep);
        self.stats = AggStats::default();
    }
}

/// Turns datagrams into updates of an [`Aggregate`]: one per receiving thread (it holds the
/// parser's scratch space, the thread's share of the value budget and its log limiter).
#[derive(Debug)]
pub struct Ingest {
    parser: Parser,
    limits: Arc<Limits>,
    credit: i64,
    bad_log: RateLimit,
    cap_log: RateLimit,
}

impl Ingest {
    pub fn new(limits: Arc<Limits>, tags: bool) -> Ingest {
        Ingest {
            parser: Parser::new(tags),
            limits,
            credit: 0,
            bad_log: RateLimit::default(),
            cap_log: RateLimit::new(1, Duration::from_secs(10)),
        }
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Applies every line of one datagram that arrived at `time` (Unix seconds) from
    /// `source`.
    pub fn datagram(
        &mut self,
        agg: &mut Aggregate,
        time: f64,
        source: Option<SocketAddr>,
        bytes: &[u8],
    ) {
        agg.stats.datagrams += 1;
        self.lines(agg, time, source, bytes);
    }

    /// Applies complete lines from a stream (TCP): like [`datagram`](Self::datagram), without
    /// counting a datagram.
    pub fn lines(
        &mut self,
        agg: &mut Aggregate,
        time: f64,
        source: Option<SocketAddr>,
        bytes: &[u8],
    ) {
        agg.stats.bytes += bytes.len() as u64;
        let before = agg.stats.keys_over_cap + agg.stats.values_over_cap;
        let mut apply = Apply {
            agg,
            limits: &self.limits,
            credit: &mut self.credit,
            bad_log: &mut self.bad_log,
            time,
            source,
        };
        self.parser.datagram(bytes, &mut apply);
        if agg.stats.keys_over_cap + agg.stats.values_over_cap > before {
            if let Some(n) = self.cap_log.allow() {
                log::warn!(
                    "over the caps: {} new keys dropped ({} keys held, max_keys {}), {} values \
                     dropped so far this interval{}",
                    agg.stats.keys_over_cap,
                    self.limits.held(),
                    self.limits.max_keys,
                    agg.stats.values_over_cap,
                    suppressed_note(n)
                );
            }
        }
    }

    /// The aggregate was handed to the flusher: a new interval starts for this thread.
    pub fn new_interval(&mut self) {
        self.credit = 0;
    }
}

struct Apply<'a> {
    agg: &'a mut Aggregate,
    limits: &'a Limits,
    credit: &'a mut i64,
    bad_log: &'a mut RateLimit,
    time: f64,
    source: Option<SocketAddr>,
}

impl Apply<'_> {
    /// One timer value or set member from the interval's budget.
    fn take_value(&mut self) -> bool {
        if *self.credit > 0 {
            *self.credit -= 1;
            return true;
        }
        if *self.credit < 0 {
            return false; // spent for this interval
        }
        let got = self.limits.reserve_values();
        if got == 0 {
            *self.credit = -1;
            return false;
        }
        *self.credit = got - 1;
        true
    }
}

impl Sink for Apply<'_> {
    fn metric(&mut self, key: &[u8], metric: Metric<'_>) {
        let stats = &mut self.agg.stats;
        match metric {
            Metric::Counter(v) => match self.agg.counters.entry_ref(key) {
                EntryRef::Occupied(mut e) => *e.get_mut() += v,
                EntryRef::Vacant(e) => {
                    if !self.limits.admit(Kind::Counter, key) {
                        stats.keys_over_cap += 1;
                        return;
                    }
                    e.insert(v);
                }
            },
            Metric::Timer { value, weight } => {
                if !self.take_value() {
                    self.agg.stats.values_over_cap += 1;
                    return;
                }
                let stats = &mut self.agg.stats;
                match self.agg.timers.entry_ref(key) {
                    EntryRef::Occupied(mut e) => {
                        let t = e.get_mut();
                        t.values.push(value);
                        t.count += weight;
                    }
                    EntryRef::Vacant(e) => {
                        if !self.limits.admit(Kind::Timer, key) {
                            stats.keys_over_cap += 1;
                            return;
                        }
                        e.insert(TimerAcc {
                            values: vec![value],
                            count: weight,
                        });
                    }
                }
            }
            Metric::Gauge { value, delta } => match self.agg.gauges.entry_ref(key) {
                EntryRef::Occupied(mut e) => e.get_mut().apply(value, delta, self.time),
                EntryRef::Vacant(e) => {
                    if !self.limits.admit(Kind::Gauge, key) {
                        stats.keys_over_cap += 1;
                        return;
                    }
                    e.insert(GaugeAcc::default()).apply(value, delta, self.time);
                }
            },
            Metric::Set(member) => {
                let h = self.limits.member_hash(member);
                if let Some(set) = self.agg.sets.get(key) {
                    if set.contains(&h) {
                        self.agg.stats.metrics += 1;
                        return;
                    }
                }
                if !self.take_value() {
                    self.agg.stats.values_over_cap += 1;
                    return;
                }
                let stats = &mut self.agg.stats;
                match self.agg.sets.entry_ref(key) {
                    EntryRef::Occupied(mut e) => {
                        e.get_mut().insert(h);
                    }
                    EntryRef::Vacant(e) => {
                        if !self.limits.admit(Kind::Set, key) {
                            stats.keys_over_cap += 1;
                            return;
                        }
                        e.insert(MemberSet::default()).insert(h);
                    }
                }
            }
        }
        self.agg.stats.metrics += 1;
    }

    fn bad_line(&mut self, line: &[u8], error: BadLine) {
        self.agg.stats.bad_lines += 1;
        if let Some(n) = self.bad_log.allow() {
            let from = self
                .source
                .map(|s| format!(" from {s}"))
                .unwrap_or_default();
            log::warn!(
                "bad line{from}: {error}: {}{}",
                quote_line(line),
                suppressed_note(n)
            );
        }
    }

    fn tags_dropped(&mut self) {
        self.agg.stats.tags_dropped += 1;
    }
}

/// A line for a log message: lossy UTF-8, escaped, at most 200 characters.
fn quote_line(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let short: String = text.chars().take(200).collect();
    let mut q = format!("{short:?}");
    if text.chars().count() > 200 {
        q.push_str("...");
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bytes biased towards the grammar's characters.
    fn grammar_bytes() -> impl Strategy<Value = Vec<u8>> {
        const ALPHABET: &[u8] = b":|@#,\nc g s m+-.1e=";
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|v| {
            v.into_iter()
                .map(|b| {
                    if b < 160 {
                        ALPHABET[usize::from(b) % ALPHABET.len()]
                    } else {
                        b
                    }
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever arrives: no panic, and the maps never hold more keys or values than
        /// the caps allow.
        #[test]
        fn any_bytes_are_safe(datagrams in proptest::collection::vec(grammar_bytes(), 1..20)) {
            let limits = Arc::new(Limits::new(8, 64));
            let mut ing = Ingest::new(limits.clone(), true);
            let mut agg = Aggregate::new();
            for d in &datagrams {
                ing.datagram(&mut agg, 0.0, None, d);
            }
            prop_assert!(agg.len() <= 8);
            prop_assert!(limits.held() <= 8);
            prop_assert_eq!(agg.stats.datagrams, datagrams.len() as u64);
            let values: usize = agg.timers.values().map(|t| t.values.len()).sum::<usize>()
                + agg.sets.values().map(|s| s.len()).sum::<usize>();
            prop_assert!(values <= 64);
        }
    }

    fn ingest(limits: &Arc<Limits>) -> Ingest {
        Ingest::new(limits.clone(), true)
    }

    #[test]
    fn counters_timers_gauges_sets() {
        let limits = Arc::new(Limits::new(100, 1000));
        let mut ing = ingest(&limits);
        let mut agg = Aggregate::new();
        ing.datagram(
            &mut agg,
            1.0,
            None,
            b"c:1|c\nc:2|c|@0.5\nt:3|ms\nt:4|ms|@0.5\ng:5|g\ng:+2|g\ns:a|s\ns:b|s\ns:a|s\nbad",
        );
        assert_eq!(agg.counters[&b"c"[..]], 5.0);
        assert_eq!(
            agg.timers[&b"t"[..]],
            TimerAcc {
                values: vec![3.0, 4.0],
                count: 3.0
            }
        );
        assert_eq!(agg.gauges[&b"g"[..]].resolve(100.0), 7.0);
        assert_eq!(agg.sets[&b"s"[..]].len(), 2);
        assert_eq!(agg.stats.metrics, 9);
        assert_eq!(agg.stats.bad_lines, 1);
        assert_eq!(agg.stats.datagrams, 1);
        assert_eq!(limits.held(), 4);
    }

    #[test]
    fn keys_inline_and_on_the_heap() {
        let short: &[u8] = b"a.short.key";
        let long = [b'k'; INLINE + 1];
        let edge = [b'e'; INLINE];
        for k in [short, &long[..], &edge[..], b""] {
            let key = Key::from(k);
            assert_eq!(key.as_bytes(), k);
            assert_eq!(key, Key::from(k));
        }
        assert!(matches!(Key::from(&edge[..]), Key::Inline(..)));
        assert!(matches!(Key::from(&long[..]), Key::Heap(_)));
        let mut m: HashMap<Key, u32> = HashMap::new();
        m.insert(Key::from(short), 1);
        m.insert(Key::from(&long[..]), 2);
        assert_eq!(m[short], 1);
        assert_eq!(m[&long[..]], 2);
        assert_eq!(std::mem::size_of::<Key>(), 48);
    }

    #[test]
    fn gauge_deltas_and_merges() {
        let mut g = GaugeAcc::default();
        g.apply(3.0, true, 1.0);
        assert_eq!(g.resolve(10.0), 13.0);
        assert_eq!(g.resolve(0.0), 3.0); // a delta on a new gauge starts from 0
        g.apply(5.0, false, 2.0);
        g.apply(-1.0, true, 3.0);
        assert_eq!(g.resolve(10.0), 4.0);

        // Another thread set the gauge later: its value wins, earlier deltas do not count.
        let mut a = GaugeAcc::default();
        a.apply(1.0, true, 1.0);
        let mut b = GaugeAcc::default();
        b.apply(50.0, false, 2.0);
        a.merge(&b);
        assert_eq!(a.resolve(7.0), 50.0);
        // Deltas that arrived after the chosen absolute value are added.
        let mut c = GaugeAcc::default();
        c.apply(2.0, true, 3.0);
        a.merge(&c);
        assert_eq!(a.resolve(7.0), 52.0);
        // An older absolute value loses.
        let mut d = GaugeAcc::default();
        d.apply(-9.0, false, 0.5);
        a.merge(&d);
        assert_eq!(a.resolve(7.0), 52.0);
        // Deltas only: all added.
        let mut e = GaugeAcc::default();
        e.apply(1.0, true, 1.0);
        let mut f = GaugeAcc::default();
        f.apply(2.0, true, 0.5);
        e.merge(&f);
        assert_eq!(e.resolve(10.0), 13.0);
    }

    /// Millions of unique keys: the maps stay at the cap, the rest is counted and dropped.
    #[test]
    fn unique_key_flood_stays_capped() {
        let cap = 10_000;
        let limits = Arc::new(Limits::new(cap, 1_000_000));
        let mut ing = ingest(&limits);
        let mut agg = Aggregate::new();
        let mut datagram = Vec::with_capacity(2048);
        let total: u64 = 2_000_000;
        let per = 50;
        let mut n = 0u64;
        while n < total {
            datagram.clear();
            for _ in 0..per {
                datagram.extend_from_slice(format!("flood.key{n}:1|c\n").as_bytes());
                n += 1;
            }
            ing.datagram(&mut agg, 0.0, None, &datagram);
        }
        assert_eq!(agg.counters.len(), cap);
        assert_eq!(limits.held(), cap);
        assert_eq!(agg.stats.keys_over_cap, total - cap as u64);
        assert_eq!(agg.stats.metrics, cap as u64);
        // Keys already held keep counting.
        ing.datagram(&mut agg, 0.0, None, b"flood.key0:1|c");
        assert_eq!(agg.counters[&b"flood.key0"[..]], 2.0);
        // The maps did not grow past what the cap needs.
        assert!(
            agg.counters.capacity() <= 4 * cap,
            "{}",
            agg.counters.capacity()
        );
    }

    #[test]
    fn a_second_thread_shares_the_cap_and_held_keys() {
        let limits = Arc::new(Limits::new(2, 1000));
        let (mut a, mut b) = (ingest(&limits), ingest(&limits));
        let (mut aa, mut ba) = (Aggregate::new(), Aggregate::new());
        a.datagram(&mut aa, 0.0, None, b"x:1|c\ny:1|c");
        // Held by thread a: thread b may hold it too, without using room.
        b.datagram(&mut ba, 0.0, None, b"x:1|c\nz:1|c");
        assert_eq!(ba.counters.len(), 1);
        assert_eq!(ba.stats.keys_over_cap, 1);
        limits.forget(Kind::Counter, b"y");
        b.datagram(&mut ba, 0.0, None, b"z:1|c");
        assert_eq!(ba.counters.len(), 2);
    }

    #[test]
    fn value_budget_per_interval() {
        let limits = Arc::new(Limits::new(100, 2000));
        let mut ing = ingest(&limits);
        let mut agg = Aggregate::new();
        let mut d = Vec::new();
        for i in 0..3000 {
            d.extend_from_slice(format!("t:{i}|ms\n").as_bytes());
        }
        ing.datagram(&mut agg, 0.0, None, &d);
        assert_eq!(agg.timers[&b"t"[..]].values.len(), 2000);
        assert_eq!(agg.stats.values_over_cap, 1000);
        // Set members already present cost nothing.
        limits.new_interval();
        ing.new_interval();
        let mut agg = Aggregate::new();
        ing.datagram(&mut agg, 0.0, None, b"s:a|s\ns:a|s\ns:b|s");
        assert_eq!(agg.sets[&b"s"[..]].len(), 2);
        assert_eq!(agg.stats.metrics, 3);
    }
}
