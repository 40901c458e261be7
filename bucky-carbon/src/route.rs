//! Destinations and routing: which carbon-caches each sample goes to, and its batches there.
//!
//! The routing key is the final Graphite path (naming applied), as a carbon-relay in front of
//! the caches would see it. Paths repeat (a series is sent every interval), so the route of
//! a path is cached: a bounded map from path to destination set, so MD5 and the ring walk
//! are paid once per series, not once per sample.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bucky_proto::sample::Fields;
use bucky_proto::{CachedNamer, Namer};

use crate::encode::{Batch, Encoder, Protocol};
use crate::ring::{Node, Ring};

/// A carbon destination: `host:port[:instance]` (carbon's DESTINATIONS syntax; an IPv6
/// address goes in brackets, `[::1]:2003:a`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    pub instance: Option<String>,
}

/// Why a destination string is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("destination {text:?}: {why} (expected host:port[:instance], e.g. 10.0.0.1:2004:a)")]
pub struct DestinationError {
    text: String,
    why: &'static str,
}

impl Destination {
    /// Parses `host:port[:instance]` as carbon does (`[v6addr]:port[:instance]` too). A
    /// missing port is `default_port`; everything after the port's colon is the instance.
    pub fn parse(text: &str, default_port: u16) -> Result<Destination, DestinationError> {
        let err = |why| DestinationError {
            text: text.to_string(),
            why,
        };
        let s = text.trim();
        let (host, rest) = if let Some(inner) = s.strip_prefix('[') {
            let Some((host, rest)) = inner.split_once(']') else {
                return Err(err("no closing bracket"));
            };
            match rest.strip_prefix(':') {
                Some(r) => (host, Some(r)),
                None if rest.is_empty() => (host, None),
                None => return Err(err("text after the bracket")),
            }
        } else {
            match s.split_once(':') {
                Some((h, r)) => (h, Some(r)),
                None => (s, None),
            }
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        let (port, instance) = match rest {
            None => (default_port, None),
            Some(r) => {
                let (p, inst) = match r.split_once(':') {
                    Some((p, i)) => (p, Some(i.to_string())),
                    None => (r, None),
                };
                let port = p.parse::<u16>().map_err(|_| err("bad port"))?;
                if port == 0 {
                    return Err(err("port 0"));
                }
                (port, inst)
            }
        };
        Ok(Destination {
            host: host.to_string(),
            port,
            instance,
        })
    }

    /// The ring node: carbon's `(server, instance)`.
    pub fn node(&self) -> Node {
        Node::new(&self.host, self.instance.as_deref())
    }

    /// The destination in self-metric names: one Graphite path component
    /// (`10_0_0_1_2004_a`).
    pub fn label(&self) -> String {
        let mut out = String::new();
        let mut push = |s: &str| {
            if !out.is_empty() {
                out.push('_');
            }
            out.extend(s.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            }));
        };
        push(&self.host);
        push(&self.port.to_string());
        if let Some(i) = &self.instance {
            push(i);
        }
        out
    }

    /// The folder of this destination's spool: named by the ring node (server and instance,
    /// not the port, like the ring), so a node keeps its spool when its port changes.
    pub fn spool_dir_name(&self) -> String {
        fn enc(s: &str, out: &mut String) {
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
        let mut out = String::new();
        enc(&self.host, &mut out);
        if let Some(i) = &self.instance {
            out.push('@');
            enc(i, &mut out);
        }
        out
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if let Some(i) = &self.instance {
            write!(f, ":{i}")?;
        }
        Ok(())
    }
}

/// Routes of recent paths, bounded: two generations of at most `cap` paths each; a path
/// found in the old generation moves to the new one, and when the new one is full the old
/// one is forgotten. Series sent every interval stay; one-off names age out.
#[derive(Debug)]
pub struct RouteCache {
    cur: HashMap<Box<[u8]>, u32, foldhash::fast::FixedState>,
    old: HashMap<Box<[u8]>, u32, foldhash::fast::FixedState>,
    cap: usize,
    /// Distinct destination lists, by id.
    sets: Vec<Box<[u16]>>,
    set_ids: HashMap<Box<[u16]>, u32>,
    misses: u64,
}

/// Paths per generation of the route cache (two generations: about 50 MB at most with
/// 100-byte paths).
pub const ROUTE_CACHE_PATHS: usize = 1 << 18;

impl RouteCache {
    pub fn new(cap: usize) -> RouteCache {
        RouteCache {
            cur: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            old: HashMap::with_hasher(foldhash::fast::FixedState::default()),
            cap: cap.max(1),
            sets: Vec::new(),
            set_ids: HashMap::new(),
            misses: 0,
        }
    }

    /// The destination list of `path`.
    pub fn route(&mut self, ring: &Ring, path: &[u8]) -> &[u16] {
        let id = match self.cur.get(path) {
            Some(&id) => id,
            None => {
                let id = match self.old.get(path) {
                    Some(&id) => id,
                    None => {
                        self.misses += 1;
                        let set = ring.route(path).into_boxed_slice();
                        match self.set_ids.get(&set) {
                            Some(&id) => id,
                            None => {
                                let id = self.sets.len() as u32;
                                self.sets.push(set.clone());
                                self.set_ids.insert(set, id);
                                id
                            }
                        }
                    }
                };
                if self.cur.len() >= self.cap {
                    self.old = std::mem::replace(
                        &mut self.cur,
                        HashMap::with_capacity_and_hasher(
                            self.cap,
                            foldhash::fast::FixedState::default(),
                        ),
                    );
                }
                self.cur.insert(path.into(), id);
                id
            }
        };
        &self.sets[id as usize]
    }

    /// Paths whose route had to be computed.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Paths held.
    pub fn len(&self) -> usize {
        self.cur.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Names samples, routes them and builds each destination's batches.
#[derive(Debug)]
pub struct Router {
    namer: CachedNamer,
    ring: Option<Arc<Ring>>,
    encoders: Vec<Encoder>,
    cache: RouteCache,
    path: Vec<u8>,
}

impl Router {
    /// A router over `ring`'s nodes (destination `i` is node `i`); without a ring there is
    /// one destination and every sample goes to it.
    pub fn new(namer: Namer, protocol: Protocol, ring: Option<Arc<Ring>>) -> Router {
        let n = ring.as_ref().map_or(1, |r| r.nodes().len());
        Router {
            encoders: (0..n)
                .map(|_| Encoder::new(namer.clone(), protocol))
                .collect(),
            namer: CachedNamer::new(namer, crate::encode::NAME_CACHE_SERIES),
            ring,
            cache: RouteCache::new(ROUTE_CACHE_PATHS),
            path: Vec::with_capacity(256),
        }
    }

    /// Adds one sample; `out(destination, batch)` receives every batch that fills up.
    pub fn push(&mut self, f: &Fields<'_>, mut out: impl FnMut(usize, Batch)) {
        let Some(ring) = &self.ring else {
            if let Some(b) = self.encoders[0].push(f) {
                out(0, b);
            }
            return;
        };
        self.path.clear();
        self.namer.push_path_bytes(&mut self.path, f.host, f.name);
        for &d in self.cache.route(ring, &self.path) {
            let d = usize::from(d);
            if let Some(b) = self.encoders[d].push_named(&self.path, f) {
                out(d, b);
            }
        }
    }

    /// Hands out every partial batch.
    pub fn take_partials(&mut self, mut out: impl FnMut(usize, Batch)) {
        for (d, e) in self.encoders.iter_mut().enumerate() {
            if let Some(b) = e.take_partial() {
                out(d, b);
            }
        }
    }

    pub fn cache(&self) -> &RouteCache {
        &self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::HashType;
    use bucky_proto::sample::split_line;
    use bucky_proto::NamingOptions;

    #[test]
    fn destinations_parse_like_carbon() {
        let d = |s| Destination::parse(s, 2003);
        assert_eq!(
            d("10.0.0.1:2004:a").unwrap(),
            Destination {
                host: "10.0.0.1".into(),
                port: 2004,
                instance: Some("a".into())
            }
        );
        assert_eq!(d("carbon1").unwrap().port, 2003);
        assert_eq!(d("carbon1:2104").unwrap().instance, None);
        assert_eq!(d("h:2003:").unwrap().instance, Some(String::new()));
        assert_eq!(d("h:2003:a:b").unwrap().instance, Some("a:b".into()));
        let v6 = d("[::1]:2004:x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 2004));
        assert_eq!(v6.to_string(), "[::1]:2004:x");
        assert_eq!(d("[::1]").unwrap().port, 2003);
        for bad in ["", ":2003", "h:port", "h:0", "h:70000", "[::1", "[::1]x"] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
        let e = d("h:x").unwrap_err().to_string();
        assert!(e.contains("\"h:x\"") && e.contains("bad port"), "{e}");
    }

    #[test]
    fn labels_and_spool_folders() {
        let d = Destination::parse("10.0.0.1:2004:a/b", 2003).unwrap();
        assert_eq!(d.label(), "10_0_0_1_2004_a_b");
        assert_eq!(d.spool_dir_name(), "10.0.0.1@a%2Fb");
        let d = Destination::parse("[::1]:2003", 2003).unwrap();
        assert_eq!(d.spool_dir_name(), "%3A%3A1");
    }

    #[test]
    fn router_sends_each_sample_to_its_ring_nodes() {
        let nodes = vec![
            Node::new("127.0.0.1", Some("a")),
            Node::new("127.0.0.1", Some("b")),
            Node::new("127.0.0.1", Some("c")),
        ];
        let ring = Arc::new(Ring::new(HashType::Carbon, nodes, 2, false).unwrap());
        let namer = Namer::new(&NamingOptions::default());
        let mut r = Router::new(namer, Protocol::Plaintext, Some(ring.clone()));
        let mut got: Vec<Vec<u8>> = vec![Vec::new(); 3];
        for round in 0..3 {
            for i in 0..1000 {
                let l = format!("x.s{i} {round} 1700000000");
                r.push(&split_line(l.as_bytes()).unwrap(), |d, b| {
                    got[d].extend(b.bytes)
                });
            }
        }
        r.take_partials(|d, b| got[d].extend(b.bytes));
        assert_eq!(r.cache().misses(), 1000, "one ring walk per series");
        let mut total = 0;
        for (d, bytes) in got.iter().enumerate() {
            for line in String::from_utf8_lossy(bytes).lines() {
                let name = line.split(' ').next().unwrap();
                assert!(ring.route(name.as_bytes()).contains(&(d as u16)), "{line}");
                total += 1;
            }
        }
        assert_eq!(total, 3 * 1000 * 2, "two replicas of every sample");
    }

    #[test]
    fn route_cache_stays_bounded_and_right() {
        let nodes: Vec<Node> = (0..5).map(|i| Node::new(&format!("h{i}"), None)).collect();
        let ring = Ring::new(HashType::Carbon, nodes, 1, false).unwrap();
        let mut c = RouteCache::new(100);
        for i in 0..1000 {
            let p = format!("p.{i}");
            assert_eq!(c.route(&ring, p.as_bytes()), &ring.route(p.as_bytes())[..]);
            assert!(c.len() <= 200);
        }
        // Recent paths hit.
        let before = c.misses();
        for i in 950..1000 {
            c.route(&ring, format!("p.{i}").as_bytes());
        }
        assert_eq!(c.misses(), before);
    }
}
