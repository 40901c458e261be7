//! Metric naming: how a sample's (host, name) becomes the Graphite path (spec §2).
//!
//! The receivers emit raw names; `bucky-carbon` applies these rules just before writing, so
//! the processor and every tool in between see the raw names, as in the original.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;

/// The naming options, with the original's key names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct NamingOptions {
    pub name_prefix: Option<String>,
    pub name_prefix_parts: Vec<String>,
    pub name_postfix: Option<String>,
    pub name_postfix_parts: Vec<String>,
    /// Replaces `.` inside prefix, postfix and parts components; `None` keeps them.
    pub name_replace_char: Option<String>,
    pub name_strip_duplicates: bool,
    pub name_host_trim: Vec<String>,
}

impl Default for NamingOptions {
    fn default() -> Self {
        NamingOptions {
            name_prefix: None,
            name_prefix_parts: Vec::new(),
            name_postfix: None,
            name_postfix_parts: Vec::new(),
            name_replace_char: Some("_".into()),
            name_strip_duplicates: true,
            name_host_trim: Vec::new(),
        }
    }
}

/// The naming rules, prepared once so that naming a sample allocates nothing.
#[derive(Debug, Clone)]
pub struct Namer {
    /// Prefix components, with the replace char already applied.
    head: Vec<String>,
    /// Postfix components, likewise.
    tail: Vec<String>,
    strip_duplicates: bool,
    /// Each trim entry split on `.`, stripped and reversed, to compare with a reversed host.
    host_trim: Vec<Vec<String>>,
}

impl Namer {
    pub fn new(opts: &NamingOptions) -> Namer {
        let replace = |c: &str| match &opts.name_replace_char {
            Some(r) => c.replace('.', r),
            None => c.to_string(),
        };
        // Python truthiness: an empty prefix string is skipped.
        let mut head = Vec::new();
        head.extend(
            opts.name_prefix
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| replace(p)),
        );
        head.extend(opts.name_prefix_parts.iter().map(|p| replace(p)));
        let mut tail: Vec<String> = opts.name_postfix_parts.iter().map(|p| replace(p)).collect();
        tail.extend(
            opts.name_postfix
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| replace(p)),
        );
        let host_trim = opts
            .name_host_trim
            .iter()
            .map(|t| t.split('.').rev().map(|c| c.trim().to_string()).collect())
            .collect();
        Namer {
            head,
            tail,
            strip_duplicates: opts.name_strip_duplicates,
            host_trim,
        }
    }

    /// Appends the Graphite path of `(host, name)` to `out`.
    ///
    /// Graphite tags (`name;k=v`) are kept as they are after the named path.
    pub fn push_path(&self, out: &mut Vec<u8>, host: Option<&str>, name: &str) {
        self.push_path_bytes(out, host.map(str::as_bytes), name.as_bytes());
    }

    /// [`push_path`](Self::push_path) over bytes, for writers that never convert to `str`.
    pub fn push_path_bytes(&self, out: &mut Vec<u8>, host: Option<&[u8]>, name: &[u8]) {
        let host = host.filter(|h| !h.is_empty());
        if host.is_none() && self.head.is_empty() && self.tail.is_empty() {
            // The common StatsD case: the rules leave the name as it is unless it repeats a
            // component. One scan finds the tags and the dots.
            let unchanged = !self.strip_duplicates
                || match crate::scan::bitmap2(name, b';', b'.') {
                    Some((semis, dots)) => {
                        let end = semis.trailing_zeros().min(name.len() as u32);
                        let below = if end >= 128 { !0 } else { (1u128 << end) - 1 };
                        !has_adjacent_duplicate_in(&name[..end as usize], dots & below)
                    }
                    None => !has_adjacent_duplicate(split_tags(name).0),
                };
            if unchanged {
                out.extend_from_slice(name);
                return;
            }
        }
        let (path, tags) = split_tags(name);
        let mut w = PathWriter {
            out,
            last: None,
            strip: self.strip_duplicates,
        };
        for c in &self.head {
            w.push(c.as_bytes());
        }
        if let Some(host) = host {
            self.push_host(&mut w, host);
        }
        w.push_dotted(path);
        for c in &self.tail {
            w.push(c.as_bytes());
        }
        out.extend_from_slice(tags);
    }

    /// The path as a `String` (tests, logs).
    pub fn path(&self, host: Option<&str>, name: &str) -> String {
        let mut out = Vec::with_capacity(name.len() + 32);
        self.push_path(&mut out, host, name);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn push_host(&self, w: &mut PathWriter<'_>, host: &[u8]) {
        // The original raised IndexError when a trim entry was longer than the host; a trim
        // that does not fit simply does not match.
        let skip = if self.host_trim.is_empty() {
            0
        } else {
            let parts = || host.rsplit(|&c| c == b'.').map(<[u8]>::trim_ascii);
            let count = parts().count();
            self.host_trim
                .iter()
                .find(|trim| {
                    trim.len() <= count && parts().zip(trim.iter()).all(|(p, t)| p == t.as_bytes())
                })
                .map_or(0, Vec::len)
        };
        let mut end = host.len();
        let mut k = 0;
        for i in (0..host.len()).rev() {
            if host[i] == b'.' {
                if k >= skip {
                    w.push(host[i + 1..end].trim_ascii());
                }
                k += 1;
                end = i;
            }
        }
        if k >= skip {
            w.push(host[..end].trim_ascii());
        }
    }
}

/// A [`Namer`] that remembers the paths of the series it has named.
///
/// A series reports every interval, so nearly every sample repeats a (host, name) pair seen
/// moments ago; one hash lookup then replaces the naming rules. The remembered bytes live in
/// one arena in first-seen order, which is close to the order series come back in, so lookups
/// walk memory mostly forwards. Memory is bounded: when the cache holds `capacity` series, or
/// its arena [`CACHE_BYTES`], it starts afresh.
#[derive(Debug, Clone)]
pub struct CachedNamer {
    namer: Namer,
    /// Indexes into `series`, hashed over (host, name); looked up without building a key.
    paths: HashTable<u32>,
    /// The remembered series, in first-seen order.
    series: Vec<Named>,
    /// The series after the last one found: series tend to come back in the order they were
    /// first seen (a collectd plugin reads its values in a fixed order), so this one is tried
    /// before hashing.
    next: usize,
    /// `host`, `name` and path of each remembered series, back to back.
    arena: Vec<u8>,
    hasher: foldhash::fast::RandomState,
    capacity: usize,
    max_bytes: usize,
    /// Host-less names pass through the rules unchanged unless these say otherwise.
    rules_touch_bare_names: bool,
}

/// The most bytes a [`CachedNamer`] keeps (names, hosts and paths together).
pub const CACHE_BYTES: usize = 32 << 20;

/// One remembered series: where its bytes are in the arena, and its hash.
#[derive(Debug, Clone, Copy)]
struct Named {
    hash: u64,
    at: u32,
    host_len: u32,
    name_len: u32,
    path_len: u32,
}

impl Named {
    fn is(&self, arena: &[u8], host: &[u8], name: &[u8]) -> bool {
        let (at, hl, nl) = (
            self.at as usize,
            self.host_len as usize,
            self.name_len as usize,
        );
        hl == host.len()
            && nl == name.len()
            && arena.get(at..at + hl) == Some(host)
            && arena.get(at + hl..at + hl + nl) == Some(name)
    }

    fn path<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        let start = (self.at + self.host_len + self.name_len) as usize;
        arena
            .get(start..start + self.path_len as usize)
            .unwrap_or_default()
    }
}

impl CachedNamer {
    pub fn new(namer: Namer, capacity: usize) -> Self {
        Self::with_limits(namer, capacity, CACHE_BYTES)
    }

    /// At most `capacity` series and `max_bytes` bytes of names, hosts and paths.
    pub fn with_limits(namer: Namer, capacity: usize, max_bytes: usize) -> Self {
        let rules_touch_bare_names = !namer.head.is_empty() || !namer.tail.is_empty();
        CachedNamer {
            namer,
            paths: HashTable::new(),
            series: Vec::new(),
            next: 0,
            arena: Vec::new(),
            hasher: Default::default(),
            capacity: capacity.max(1),
            max_bytes: max_bytes.min(CACHE_BYTES),
            rules_touch_bare_names,
        }
    }

    /// [`Namer::push_path_bytes`], from the cache when the series was seen before.
    pub fn push_path_bytes(&mut self, out: &mut Vec<u8>, host: Option<&[u8]>, name: &[u8]) {
        let host = host.filter(|h| !h.is_empty());
        if host.is_none() && !self.rules_touch_bare_names {
            // Cheaper than a lookup (which touches memory beyond the line): at most a scan
            // for duplicate components.
            self.namer.push_path_bytes(out, None, name);
            return;
        }
        let host = host.unwrap_or_default();
        let arena = &self.arena;
        if let Some(named) = self.series.get(self.next) {
            if named.is(arena, host, name) {
                out.extend_from_slice(named.path(arena));
                self.next += 1;
                return;
            }
        }
        // Ambiguous splits of the same bytes hash alike; `Named::is` tells them apart.
        let mut hasher = self.hasher.build_hasher();
        hasher.write(host);
        hasher.write(name);
        let hash = hasher.finish();
        let series = &self.series;
        let found = self.paths.find(hash, |&i| {
            series
                .get(i as usize)
                .is_some_and(|e| e.is(arena, host, name))
        });
        if let Some(&i) = found {
            if let Some(named) = series.get(i as usize) {
                out.extend_from_slice(named.path(arena));
                self.next = i as usize + 1;
                return;
            }
        }
        let start = out.len();
        self.namer.push_path_bytes(out, Some(host), name);
        let path = &out[start..];
        let bytes = host.len() + name.len() + path.len();
        if self.series.len() >= self.capacity || self.arena.len() + bytes > self.max_bytes {
            self.paths.clear();
            self.series.clear();
            self.arena.clear();
        }
        if bytes > self.max_bytes {
            return;
        }
        // Every length and index fits: the arena and the series are far below 4 Gi.
        let index = self.series.len() as u32;
        self.series.push(Named {
            hash,
            at: self.arena.len() as u32,
            host_len: host.len() as u32,
            name_len: name.len() as u32,
            path_len: path.len() as u32,
        });
        self.arena.extend_from_slice(host);
        self.arena.extend_from_slice(name);
        self.arena.extend_from_slice(path);
        let series = &self.series;
        self.paths.insert_unique(hash, index, |&i| {
            series.get(i as usize).map_or(0, |e| e.hash)
        });
        self.next = self.series.len();
    }

    /// The rules themselves.
    pub fn namer(&self) -> &Namer {
        &self.namer
    }

    /// Series currently remembered.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// The path and the Graphite tags (`;k=v...`, kept as they are) of a name.
fn split_tags(name: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b';', name) {
        Some(i) => name.split_at(i),
        None => (name, b""),
    }
}

/// True when two consecutive components are equal (`a.b.b.c`), which strip_duplicates removes.
fn has_adjacent_duplicate(path: &[u8]) -> bool {
    match crate::scan::bitmap(path, b'.') {
        Some(dots) => has_adjacent_duplicate_in(path, dots),
        None => has_adjacent_duplicate_bytewise(path),
    }
}

/// [`has_adjacent_duplicate`] given the bitmap of the dots in `path`.
fn has_adjacent_duplicate_in(path: &[u8], dots: u128) -> bool {
    // Most paths fit in 64 bytes, where u64 bit operations are single instructions.
    match u64::try_from(dots) {
        Ok(dots) => walk_components(path, dots, |d| d.trailing_zeros(), |d| d & (d - 1)),
        Err(_) => walk_components(path, dots, |d| d.trailing_zeros(), |d| d & (d - 1)),
    }
}

/// Walks the components from one dot to the next; only equal lengths need comparing.
#[inline(always)]
fn walk_components<T: Copy + Default + PartialEq>(
    path: &[u8],
    mut dots: T,
    lowest: impl Fn(T) -> u32,
    clear_lowest: impl Fn(T) -> T,
) -> bool {
    let (mut prev_start, mut prev_len) = (0, usize::MAX);
    let mut start = 0;
    loop {
        let none_left = dots == T::default();
        let end = if none_left {
            path.len()
        } else {
            lowest(dots) as usize
        };
        let len = end - start;
        if len == prev_len && path[prev_start..prev_start + len] == path[start..end] {
            return true;
        }
        if none_left {
            return false;
        }
        (prev_start, prev_len) = (start, len);
        start = end + 1;
        dots = clear_lowest(dots);
    }
}

/// [`has_adjacent_duplicate`] for paths too short or too long for a bitmap.
fn has_adjacent_duplicate_bytewise(path: &[u8]) -> bool {
    // Names are short: a plain loop beats a memchr call per dot.
    let (mut prev_start, mut prev_end) = (usize::MAX, 0);
    let mut start = 0;
    for i in 0..=path.len() {
        if i == path.len() || path[i] == b'.' {
            if prev_start != usize::MAX
                && prev_end - prev_start == i - start
                && path[prev_start..prev_end] == path[start..i]
            {
                return true;
            }
            (prev_start, prev_end) = (start, i);
            start = i + 1;
        }
    }
    false
}

/// Joins components with `.`, collapsing consecutive duplicates when asked to.
struct PathWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Byte range of the last component written, for duplicate stripping.
    last: Option<(usize, usize)>,
    strip: bool,
}

impl PathWriter<'_> {
    fn push(&mut self, component: &[u8]) {
        if let Some((s, e)) = self.last {
            if self.strip && e - s == component.len() && self.out[s..e] == *component {
                return;
            }
            self.out.push(b'.');
        }
        let s = self.out.len();
        self.out.extend_from_slice(component);
        self.last = Some((s, self.out.len()));
    }

    /// Pushes each `.`-separated component of `path`, empty ones included.
    fn push_dotted(&mut self, path: &[u8]) {
        let mut start = 0;
        for i in 0..path.len() {
            if path[i] == b'.' {
                self.push(&path[start..i]);
                start = i + 1;
            }
        }
        self.push(&path[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> NamingOptions {
        NamingOptions::default()
    }

    /// The examples of spec §2, verified on 2.2.1, plus the crash case done sensibly.
    #[test]
    fn spec_examples() {
        let trim = |t: &[&str]| NamingOptions {
            name_host_trim: t.iter().map(|s| s.to_string()).collect(),
            ..opts()
        };
        let cases: Vec<(Option<&str>, &str, NamingOptions, &str)> = vec![
            (None, "stats.gorm", opts(), "stats.gorm"),
            (
                Some("node.company.tld"),
                "cpu.0.idle",
                opts(),
                "tld.company.node.cpu.0.idle",
            ),
            (
                Some("node.company.tld"),
                "cpu.0.idle",
                trim(&["company.tld"]),
                "node.cpu.0.idle",
            ),
            (
                Some("node.other.tld"),
                "cpu.0.idle",
                trim(&["company.tld"]),
                "tld.other.node.cpu.0.idle",
            ),
            (
                Some("a.b.company.tld"),
                "x",
                trim(&["tld", "company.tld"]),
                "company.b.a.x",
            ),
            (Some("company.tld"), "x", trim(&["company.tld"]), "x"),
            // 2.2.1 raised IndexError here; a trim longer than the host does not match.
            (Some("tld"), "x", trim(&["company.tld"]), "tld.x"),
            (Some(" node . company "), "x", opts(), "company.node.x"),
            (Some(""), "x", opts(), "x"),
            (
                Some("h.d"),
                "a.b",
                NamingOptions {
                    name_prefix: Some("pre.fix".into()),
                    name_postfix: Some("post".into()),
                    ..opts()
                },
                "pre_fix.d.h.a.b.post",
            ),
            (
                Some("h"),
                "a",
                NamingOptions {
                    name_prefix_parts: vec!["p1".into(), "p.2".into()],
                    ..opts()
                },
                "p1.p_2.h.a",
            ),
            (Some("a.a"), "a.b.b.a", opts(), "a.b.a"),
            (
                Some("a.a"),
                "a.b.b.a",
                NamingOptions {
                    name_strip_duplicates: false,
                    ..opts()
                },
                "a.a.a.b.b.a",
            ),
            (
                None,
                "a",
                NamingOptions {
                    name_prefix: Some("x.y".into()),
                    name_replace_char: None,
                    ..opts()
                },
                "x.y.a",
            ),
            (None, "a..b.", opts(), "a..b."),
            (None, "stats.stats.x", opts(), "stats.x"),
            (
                Some("machine_uuid"),
                "test.squares.gauge",
                opts(),
                "machine_uuid.test.squares.gauge",
            ),
            (
                Some("stats"),
                "stats.x",
                NamingOptions {
                    name_prefix: Some("stats".into()),
                    ..opts()
                },
                "stats.x",
            ),
            // 2.3.0 semantics for postfix parts (2.2.1 crashed on them).
            (
                None,
                "a",
                NamingOptions {
                    name_postfix_parts: vec!["q.1".into(), "q2".into()],
                    name_postfix: Some("end".into()),
                    ..opts()
                },
                "a.q_1.q2.end",
            ),
            // The legacy statsd consequence from the spec.
            (None, "stats.stats.dup", opts(), "stats.dup"),
            (
                None,
                "stats_counts.stats.dup",
                opts(),
                "stats_counts.stats.dup",
            ),
            // Tags ride along after the path.
            (
                Some("h"),
                "a.a.b;env=prod;dc=x.y",
                opts(),
                "h.a.b;env=prod;dc=x.y",
            ),
            (None, "", opts(), ""),
            (None, ".", opts(), ""),
            (None, "..", opts(), ""),
            (None, "a..", opts(), "a."),
            (
                None,
                "a",
                NamingOptions {
                    name_prefix: Some("".into()),
                    name_replace_char: Some("--".into()),
                    name_postfix: Some("p.q".into()),
                    ..opts()
                },
                "a.p--q",
            ),
        ];
        for (host, name, o, want) in cases {
            assert_eq!(
                Namer::new(&o).path(host, name),
                want,
                "{host:?} {name:?} {o:?}"
            );
        }
    }

    #[test]
    fn identity_fast_path_matches_general_path() {
        let plain = Namer::new(&NamingOptions {
            name_strip_duplicates: false,
            ..opts()
        });
        for name in ["a.a.b", "x", "", "a..b;t=1"] {
            assert_eq!(plain.path(None, name), name);
        }
    }

    /// The spec's algorithm, written as plainly as possible, to check the fast paths against.
    fn reference(o: &NamingOptions, host: Option<&str>, name: &str) -> String {
        let (path, tags) = match name.find(';') {
            Some(i) => name.split_at(i),
            None => (name, ""),
        };
        let mut parts: Vec<String> = Vec::new();
        parts.extend(o.name_prefix.iter().filter(|p| !p.is_empty()).cloned());
        parts.extend(o.name_prefix_parts.iter().cloned());
        if let Some(h) = host.filter(|h| !h.is_empty()) {
            let mut hp: Vec<String> = h.split('.').rev().map(|c| c.trim().to_string()).collect();
            for t in &o.name_host_trim {
                let tp: Vec<String> = t.split('.').rev().map(|c| c.trim().to_string()).collect();
                if tp.len() <= hp.len() && hp[..tp.len()] == tp[..] {
                    hp.drain(..tp.len());
                    break;
                }
            }
            parts.extend(hp);
        }
        parts.extend(path.split('.').map(str::to_string));
        parts.extend(o.name_postfix_parts.iter().cloned());
        parts.extend(o.name_postfix.iter().filter(|p| !p.is_empty()).cloned());
        if let Some(r) = &o.name_replace_char {
            parts = parts.into_iter().map(|p| p.replace('.', r)).collect();
        }
        if o.name_strip_duplicates {
            parts.dedup();
        }
        parts.join(".") + tags
    }

    proptest::proptest! {
        #[test]
        fn duplicate_scan_agrees_with_the_bytewise_one(path in "[ab.]{0,140}") {
            proptest::prop_assert_eq!(
                has_adjacent_duplicate(path.as_bytes()),
                has_adjacent_duplicate_bytewise(path.as_bytes())
            );
        }

        #[test]
        fn cached_namer_agrees_with_the_rules(
            series in proptest::collection::vec(
                (proptest::option::of("[ab.]{0,3}"), "[ab.]{0,3}|[ab.]{16,20}"),
                1..60,
            ),
            prefix in proptest::option::of("[ab]{1,2}"),
        ) {
            let o = NamingOptions { name_prefix: prefix, ..NamingOptions::default() };
            let plain = Namer::new(&o);
            let mut cached = CachedNamer::new(plain.clone(), 7);
            for _ in 0..2 {
                for (host, name) in &series {
                    let mut got = Vec::new();
                    cached.push_path_bytes(&mut got, host.as_deref().map(str::as_bytes), name.as_bytes());
                    proptest::prop_assert_eq!(
                        String::from_utf8_lossy(&got),
                        plain.path(host.as_deref(), name)
                    );
                }
            }
            proptest::prop_assert!(cached.len() <= 7);
        }

        #[test]
        fn matches_the_reference(
            name in "[ab.;=]{0,12}|[ab.;=]{14,40}|[ab.;]{120,135}",
            host in proptest::option::of("[ab. ]{0,8}"),
            prefix in proptest::option::of("[ab.]{0,3}"),
            postfix in proptest::option::of("[ab.]{0,3}"),
            trim in proptest::collection::vec("[ab.]{1,4}", 0..3),
            strip in proptest::bool::ANY,
        ) {
            let o = NamingOptions {
                name_prefix: prefix,
                name_postfix: postfix,
                name_host_trim: trim,
                name_strip_duplicates: strip,
                ..NamingOptions::default()
            };
            proptest::prop_assert_eq!(
                Namer::new(&o).path(host.as_deref(), &name),
                reference(&o, host.as_deref(), &name)
            );
        }
    }

    #[test]
    fn cached_namer_gives_the_same_paths_and_stays_bounded() {
        let o = NamingOptions {
            name_prefix: Some("pre".into()),
            name_host_trim: vec!["example.com".into()],
            ..opts()
        };
        let plain = Namer::new(&o);
        let mut cached = CachedNamer::new(plain.clone(), 10);
        for round in 0..3 {
            for i in 0..25 {
                let host = format!("web{}.example.com", i % 7);
                let name = format!("cpu.{}.idle;k=v", i % 5);
                for h in [Some(host.as_str()), None, Some("")] {
                    let mut a = Vec::new();
                    let mut b = Vec::new();
                    plain.push_path_bytes(&mut a, h.map(str::as_bytes), name.as_bytes());
                    cached.push_path_bytes(&mut b, h.map(str::as_bytes), name.as_bytes());
                    assert_eq!(a, b, "round {round} {h:?} {name}");
                }
                assert!(cached.len() <= 10);
            }
        }
        // The byte bound: 100 bytes hold two of these series, never three.
        let mut small = CachedNamer::with_limits(plain.clone(), 1000, 100);
        for i in 0..20 {
            let host = format!("host{}.example.com", i % 4);
            let mut got = Vec::new();
            small.push_path_bytes(&mut got, Some(host.as_bytes()), b"a.long.enough.name");
            assert_eq!(
                got,
                plain.path(Some(&host), "a.long.enough.name").into_bytes()
            );
            assert!(
                small.len() <= 2 && small.arena.len() <= 100,
                "{}",
                small.arena.len()
            );
        }
        let mut bare = CachedNamer::new(Namer::new(&opts()), 10);
        let mut out = Vec::new();
        bare.push_path_bytes(&mut out, None, b"a.a.b");
        assert_eq!(out, b"a.b");
        assert!(bare.is_empty());
    }
}
