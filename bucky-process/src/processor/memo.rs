//! The per-series memo of the name-and-host rules: series come back every interval, and what a
//! run of drop, keep and rename rules does to a sample depends on its name and host alone, so
//! it is worked out once per series and looked up after that.
//!
//! Bounded: at most `capacity` entries and [`MAX_BYTES`] bytes of text; when either is full
//! the memo starts afresh (as `bucky_proto::naming::CachedNamer` does). A name or host longer
//! than [`MAX_FIELD`] is never remembered: its sample just runs the rules.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;

/// Entries of the memo unless said otherwise: more series than most installations have.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// Longest name or host (in and out) remembered.
pub const MAX_FIELD: usize = 512;
/// Text bytes held at most (keys and results together).
pub const MAX_BYTES: usize = 32 << 20;

/// What a run of name-and-host rules decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Pass,
    /// Dropped by a `drop` rule.
    Drop,
    /// Dropped by a `keep` rule.
    Keep,
}

/// The host after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOut<T> {
    Same,
    Absent,
    New(T),
}

/// What a run did to one (name, host): its fate, the renames to count, the new texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<T> {
    pub fate: Fate,
    pub renamed: u32,
    pub rename_errors: u32,
    /// `None`: the name's text is unchanged.
    pub name: Option<T>,
    pub host: HostOut<T>,
}

// An entry is a stretch of the memo's arena (`&arena[offset..]`): a header of [`HEADER`]
// bytes (run u32, then u16s: key name length, key host length or [`NONE`], result name length
// or [`SAME`], result host length or [`SAME`] or [`NONE`], renames, rename errors; then the
// fate u8, then the offset of the entry its run looked up next last time, or [`NO_ENTRY`]),
// the key name, the key host, the result name, the result host. The entries lie in the order
// their series were first seen, which is the order series tend to come back in, so lookups
// walk the arena as the hardware prefetches it; the table holds 4-byte offsets.
//
// Receivers write their series in much the same order every interval, so each run follows
// the chain of "next" offsets and compares the key of the entry it predicts before hashing:
// when the prediction holds (it is checked byte for byte, so it is never wrong, only useless)
// the hash and the table are skipped. A run predicts only after [`TRUST`] correct predictions
// in a row (counted also while not predicting), so a stream in no order pays nothing but a
// comparison of offsets.

const HEADER: usize = 21;
const NEXT: usize = 17;
const NO_ENTRY: u32 = u32::MAX;
/// Correct predictions in a row before a run relies on them.
const TRUST: u8 = 4;
const NONE: u16 = u16::MAX;
const SAME: u16 = u16::MAX - 1;

#[inline]
fn u16_at(e: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([e[at], e[at + 1]])
}

#[inline]
fn next_of(e: &[u8]) -> u32 {
    u32::from_le_bytes([e[NEXT], e[NEXT + 1], e[NEXT + 2], e[NEXT + 3]])
}

#[inline]
fn run_of(e: &[u8]) -> u32 {
    u32::from_le_bytes([e[0], e[1], e[2], e[3]])
}

/// The key name and host of an entry.
#[inline]
fn key_of(e: &[u8]) -> (&[u8], Option<&[u8]>) {
    let name_len = usize::from(u16_at(e, 4));
    let name = &e[HEADER..HEADER + name_len];
    let host = match u16_at(e, 6) {
        NONE => None,
        len => Some(&e[HEADER + name_len..HEADER + name_len + usize::from(len)]),
    };
    (name, host)
}

/// The memo of every memoised run of a processor (the run's number is part of the key).
pub struct Memo {
    /// Offsets of the entries in `arena`.
    table: HashTable<u32>,
    arena: Vec<u8>,
    state: foldhash::fast::RandomState,
    capacity: usize,
    /// By run: the entry it looked up last and how often in a row the chain predicted it.
    follow: Vec<Follow>,
    #[cfg(test)]
    predicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Follow {
    last: u32,
    trust: u8,
}

impl Default for Follow {
    fn default() -> Self {
        Follow {
            last: NO_ENTRY,
            trust: 0,
        }
    }
}

/// A lookup that found nothing; [`Memo::insert`] takes it.
#[derive(Debug)]
pub struct Miss {
    hash: u64,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.table.len())
            .field("capacity", &self.capacity)
            .field("bytes", &self.arena.len())
            .finish()
    }
}

/// Whether a name or host may be a key or a result.
#[inline]
pub fn fits(text: &[u8]) -> bool {
    text.len() <= MAX_FIELD
}

fn hash_key(
    state: &foldhash::fast::RandomState,
    run: u32,
    name: &[u8],
    host: Option<&[u8]>,
) -> u64 {
    // Two byte writes (each folds its length in) and one number: cheaper than hashing the
    // tuple, which adds the lengths and the option's tag as numbers of their own.
    let mut h = state.build_hasher();
    h.write(name);
    let tag = match host {
        Some(host) => {
            h.write(host);
            1
        }
        None => 0,
    };
    h.write_u64(u64::from(run) << 1 | tag);
    h.finish()
}

impl Memo {
    pub fn new(capacity: usize) -> Memo {
        Memo {
            table: HashTable::new(),
            state: Default::default(),
            arena: Vec::new(),
            capacity: capacity.max(1),
            follow: Vec::new(),
            #[cfg(test)]
            predicted: 0,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// What run `run` did to (name, host) when it last saw them; the texts are those of the
    /// results.
    #[inline]
    pub fn get(
        &mut self,
        run: u32,
        name: &[u8],
        host: Option<&[u8]>,
    ) -> Result<Outcome<&[u8]>, Miss> {
        let r = run as usize;
        if r >= self.follow.len() {
            self.follow.resize(r + 1, Follow::default());
        }
        let Follow { last, trust } = self.follow[r];
        let arena = self.arena.as_slice();
        let at = |off: u32| arena.get(off as usize..).unwrap_or_default();
        let is_key = |off: u32| {
            let e = at(off);
            run_of(e) == run && key_of(e) == (name, host)
        };
        let predicted = if last == NO_ENTRY {
            NO_ENTRY
        } else {
            next_of(at(last))
        };
        let found = if trust >= TRUST && predicted != NO_ENTRY && is_key(predicted) {
            #[cfg(test)]
            {
                self.predicted += 1;
            }
            predicted
        } else {
            let hash = hash_key(&self.state, run, name, host);
            match self.table.find(hash, |&off| is_key(off)) {
                Some(&off) => off,
                None => {
                    self.follow[r].trust = 0;
                    return Err(Miss { hash });
                }
            }
        };
        let f = &mut self.follow[r];
        if found == predicted {
            f.trust = f.trust.saturating_add(1);
        } else {
            f.trust = 0;
            if last != NO_ENTRY {
                let at = last as usize + NEXT;
                self.arena[at..at + 4].copy_from_slice(&found.to_le_bytes());
            }
        }
        f.last = found;
        let e = &self.arena[found as usize..];
        let mut at = HEADER + name.len() + host.map_or(0, <[u8]>::len);
        let mut text = |len: u16| {
            let t = &e[at..at + usize::from(len)];
            at += usize::from(len);
            t
        };
        let name = match u16_at(e, 8) {
            SAME => None,
            len => Some(text(len)),
        };
        let host = match u16_at(e, 10) {
            SAME => HostOut::Same,
            NONE => HostOut::Absent,
            len => HostOut::New(text(len)),
        };
        Ok(Outcome {
            fate: match e[16] {
                0 => Fate::Pass,
                1 => Fate::Drop,
                _ => Fate::Keep,
            },
            renamed: u32::from(u16_at(e, 12)),
            rename_errors: u32::from(u16_at(e, 14)),
            name,
            host,
        })
    }

    /// Remembers what run `run` did to (name, host), which [`Memo::get`] did not know. Texts
    /// that do not [`fits`] (and counts above 65,533) are not remembered.
    pub fn insert(
        &mut self,
        Miss { hash }: Miss,
        run: u32,
        name: &[u8],
        host: Option<&[u8]>,
        out: Outcome<&[u8]>,
    ) {
        let host_out = match out.host {
            HostOut::New(h) => h,
            _ => b"",
        };
        let name_out = out.name.unwrap_or_default();
        let texts = [name, host.unwrap_or_default(), name_out, host_out];
        let small = |n: u32| u16::try_from(n).ok().filter(|&n| n < SAME);
        let (Some(renamed), Some(rename_errors)) = (small(out.renamed), small(out.rename_errors))
        else {
            return;
        };
        if !texts.iter().all(|t| fits(t)) {
            return;
        }
        // Each text fits, far below SAME.
        let len16 = |t: &[u8]| u16::try_from(t.len()).unwrap_or(SAME - 1);
        let len = HEADER + texts.iter().map(|t| t.len()).sum::<usize>();
        if self.table.len() >= self.capacity || self.arena.len() + len > MAX_BYTES {
            self.table.clear();
            self.arena.clear();
            self.follow.fill(Follow::default());
        }
        // Below MAX_BYTES.
        let off = u32::try_from(self.arena.len()).unwrap_or(u32::MAX);
        let e = &mut self.arena;
        e.extend_from_slice(&run.to_le_bytes());
        for n in [
            len16(name),
            host.map_or(NONE, len16),
            out.name.map_or(SAME, len16),
            match out.host {
                HostOut::Same => SAME,
                HostOut::Absent => NONE,
                HostOut::New(h) => len16(h),
            },
            renamed,
            rename_errors,
        ] {
            e.extend_from_slice(&n.to_le_bytes());
        }
        e.push(match out.fate {
            Fate::Pass => 0,
            Fate::Drop => 1,
            Fate::Keep => 2,
        });
        e.extend_from_slice(&NO_ENTRY.to_le_bytes());
        for t in texts {
            e.extend_from_slice(t);
        }
        // The run came here from its last entry; `get` made room for the run.
        if let Some(f) = self.follow.get_mut(run as usize) {
            if f.last != NO_ENTRY {
                let at = f.last as usize + NEXT;
                self.arena[at..at + 4].copy_from_slice(&off.to_le_bytes());
            }
            f.last = off;
        }
        let (state, arena) = (&self.state, self.arena.as_slice());
        self.table.insert_unique(hash, off, |&off| {
            let e = arena.get(off as usize..).unwrap_or_default();
            let (name, host) = key_of(e);
            hash_key(state, run_of(e), name, host)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass<'a>(name: Option<&'a [u8]>, host: HostOut<&'a [u8]>) -> Outcome<&'a [u8]> {
        Outcome {
            fate: Fate::Pass,
            renamed: 1,
            rename_errors: 0,
            name,
            host,
        }
    }

    /// Looks (run, name, host) up and, when it is not there, remembers `out` for it.
    fn get_or_insert(
        m: &mut Memo,
        run: u32,
        name: &[u8],
        host: Option<&[u8]>,
        out: Outcome<&[u8]>,
    ) -> bool {
        match m.get(run, name, host) {
            Ok(got) => {
                assert_eq!(got, out);
                true
            }
            Err(miss) => {
                m.insert(miss, run, name, host, out);
                false
            }
        }
    }

    #[test]
    fn keys_are_run_name_and_host_exactly() {
        let mut m = Memo::new(10);
        let out = pass(Some(b"new"), HostOut::New(b"h2"));
        assert!(!get_or_insert(&mut m, 0, b"a", Some(b"h"), out));
        assert_eq!(m.get(0, b"a", Some(b"h")).ok(), Some(out));
        for (run, name, host) in [
            (1, &b"a"[..], Some(&b"h"[..])),
            (0, b"a", None),
            (0, b"a", Some(b"")),
            (0, b"ah", Some(b"")),
            (0, b"", Some(b"ah")),
        ] {
            assert!(m.get(run, name, host).is_err());
        }
        let out2 = pass(None, HostOut::Absent);
        assert!(!get_or_insert(&mut m, 0, b"a", None, out2));
        assert_eq!(m.get(0, b"a", None).ok(), Some(out2));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn starts_afresh_when_full() {
        let mut m = Memo::new(3);
        let out = pass(None, HostOut::Same);
        for i in 0..7u8 {
            let name = [i];
            assert!(!get_or_insert(&mut m, 0, &name, None, out));
            assert!(m.len() <= 3);
            assert_eq!(m.get(0, &name, None).ok(), Some(out));
        }
        // 0..3 filled it; 3 started afresh, 6 again.
        assert_eq!(m.len(), 1);
        // The byte bound too.
        let mut m = Memo::new(1_000_000);
        let big = vec![b'x'; MAX_FIELD];
        for i in 0..(MAX_BYTES / (2 * MAX_FIELD) + 10) {
            let host = i.to_le_bytes();
            let out = pass(Some(&big), HostOut::Same);
            assert!(!get_or_insert(&mut m, 0, &big, Some(&host), out));
            assert!(m.arena.len() <= MAX_BYTES);
        }
        assert!(m.len() < MAX_BYTES / (2 * MAX_FIELD));
    }

    #[test]
    fn series_in_the_order_last_seen_are_found_without_hashing() {
        let mut m = Memo::new(1000);
        let names: Vec<String> = (0..50).map(|i| format!("series.{i}")).collect();
        let out = |i: usize| {
            if i % 3 == 0 {
                pass(None, HostOut::Absent)
            } else {
                pass(Some(b"x"), HostOut::Same)
            }
        };
        // Two runs interleaved, as a processor looks them up; the first round remembers.
        let round = |m: &mut Memo, order: &[usize]| {
            for &i in order {
                for run in [0, 1] {
                    get_or_insert(m, run, names[i].as_bytes(), Some(b"h"), out(i));
                }
            }
        };
        let order: Vec<usize> = (0..50).collect();
        round(&mut m, &order);
        assert_eq!(m.len(), 100);
        assert_eq!(m.predicted, 0);
        // Then the same order again: after TRUST correct guesses, every lookup is predicted.
        round(&mut m, &order);
        round(&mut m, &order);
        assert!(
            m.predicted >= 2 * (2 * 50 - 2 * u64::from(TRUST) - 2),
            "{}",
            m.predicted
        );
        // A new order: every answer is still right, and predictions stop until it repeats.
        let before = m.predicted;
        let shuffled: Vec<usize> = (0..50).map(|i| (i * 7) % 50).collect();
        round(&mut m, &shuffled);
        assert!(
            m.predicted - before <= 2 * u64::from(TRUST),
            "{}",
            m.predicted - before
        );
        round(&mut m, &shuffled);
        round(&mut m, &shuffled);
        assert!(m.predicted - before >= 2 * 50, "{}", m.predicted - before);
        // A new series breaks the chain and is remembered.
        assert!(!get_or_insert(&mut m, 0, b"new", None, out(1)));
        assert!(get_or_insert(&mut m, 0, b"new", None, out(1)));
        assert_eq!(m.len(), 101);
    }
}
