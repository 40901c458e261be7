//! Metric naming: how a sample's (host, name) becomes the Graphite path (spec §2).
//!
//! The receivers emit raw names; `bucky-carbon` applies these rules just before writing, so
//! the processor and every tool in between see the raw names, as in the original.

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
    /// True when the rules leave a host-less name unchanged, so the hot path can copy it.
    identity_without_host: bool,
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
        let identity_without_host =
            head.is_empty() && tail.is_empty() && !opts.name_strip_duplicates;
        Namer {
            head,
            tail,
            strip_duplicates: opts.name_strip_duplicates,
            host_trim,
            identity_without_host,
        }
    }

    /// Appends the Graphite path of `(host, name)` to `out`.
    ///
    /// Graphite tags (`name;k=v`) are kept as they are after the named path.
    pub fn push_path(&self, out: &mut Vec<u8>, host: Option<&str>, name: &str) {
        let (path, tags) = match name.find(';') {
            Some(i) => name.split_at(i),
            None => (name, ""),
        };
        let host = host.filter(|h| !h.is_empty());
        if host.is_none() && self.identity_without_host {
            out.extend_from_slice(path.as_bytes());
        } else {
            let mut w = PathWriter {
                out,
                start: 0,
                last: None,
                strip: self.strip_duplicates,
            };
            w.start = w.out.len();
            for c in &self.head {
                w.push(c);
            }
            if let Some(host) = host {
                self.push_host(&mut w, host);
            }
            for c in path.split('.') {
                w.push(c);
            }
            for c in &self.tail {
                w.push(c);
            }
        }
        out.extend_from_slice(tags.as_bytes());
    }

    /// The path as a `String` (tests, logs).
    pub fn path(&self, host: Option<&str>, name: &str) -> String {
        let mut out = Vec::with_capacity(name.len() + 32);
        self.push_path(&mut out, host, name);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn push_host(&self, w: &mut PathWriter<'_>, host: &str) {
        // A stack buffer would do for any real host; hosts with more parts fall back to the heap.
        let mut parts: Vec<&str> = host.split('.').rev().map(str::trim).collect();
        for trim in &self.host_trim {
            // The original raised IndexError when a trim entry was longer than the host; a trim
            // that does not fit simply does not match.
            if trim.len() <= parts.len() && parts.iter().zip(trim).all(|(p, t)| p == t) {
                parts.drain(..trim.len());
                break;
            }
        }
        for p in parts {
            w.push(p);
        }
    }
}

/// Joins components with `.`, collapsing consecutive duplicates when asked to.
struct PathWriter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    /// Byte range of the last component written, for duplicate stripping.
    last: Option<(usize, usize)>,
    strip: bool,
}

impl PathWriter<'_> {
    fn push(&mut self, component: &str) {
        if self.strip {
            if let Some((s, e)) = self.last {
                if &self.out[s..e] == component.as_bytes() {
                    return;
                }
            }
        }
        if self.out.len() > self.start || self.last.is_some() {
            self.out.push(b'.');
        }
        let s = self.out.len();
        self.out.extend_from_slice(component.as_bytes());
        self.last = Some((s, self.out.len()));
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
}
