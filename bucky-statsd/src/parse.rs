//! The StatsD line grammar (spec §3.2 with decisions.md §3): a pure parser over the bytes of a
//! datagram or a TCP chunk. Once its scratch buffers are warm it allocates nothing, except
//! to describe a bad line.
//!
//! ```text
//! datagram = line *( ( "\n" / "\r" ) line )     ; empty and blank lines are skipped
//! line     = key 1*( ":" sample ) [ "|#" tags [ "|" ignored ] ]
//! sample   = value "|" type [ "|" field *( "|" field ) ]
//! type     = "c" / "ms" / "h" / "d" / "g" / "s"  ; anything else is a bad line
//! field    = "@" rate / anything                 ; only a third field starting with "@" counts
//! tags     = tag *( "," tag )
//! tag      = name [ ( ":" / "=" ) value ]        ; split at the first ":" or "="
//! ```
//!
//! * The key keeps `[A-Za-z0-9_.-]`: each run of whitespace becomes `_`, each `/` becomes `-`,
//!   everything else (non-ASCII bytes included) is deleted, as the original does. An empty key
//!   is a bad line (the original emitted names like `stats.`).
//! * Values are Python `float()` numbers (surrounding whitespace allowed, an empty value is 0)
//!   and must be finite: a sample line cannot carry inf or nan.
//! * Counters add `value / rate` as a float; timers add `1 / rate` to their count; a rate that
//!   does not parse counts as 1 (as the original); a rate of 0 or below is a bad line.
//! * A gauge value starting with `+` or `-` is a delta (on a new key it starts from 0).
//! * DogStatsD tags become Graphite tags: `name;k=v;k2=v2`, sorted by tag name (the last of
//!   equal names wins), a bare tag is kept bare (`name;k`) as Etsy statsd does.
//! * A bad sample never affects the other samples of its line, nor the other lines.

use std::ops::Range;

use memchr::{memchr, memchr2};

/// The longest metric name accepted (key and tags, after sanitising), in bytes.
pub const MAX_NAME: usize = 1024;

/// Longest piece of offending text quoted in an error.
const QUOTE_MAX: usize = 80;

/// What one sample does to its key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric<'a> {
    /// A counter increment: the value divided by the sample rate.
    Counter(f64),
    /// A timer value (`ms`, `h`, `d`); `weight` (1 / sample rate) is what it adds to `count`.
    Timer { value: f64, weight: f64 },
    /// Set the gauge to `value`, or add `value` to it when `delta`.
    Gauge { value: f64, delta: bool },
    /// A set member, as sent.
    Set(&'a [u8]),
}

/// The four kinds of StatsD metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Timer,
    Gauge,
    Set,
}

impl Metric<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Metric::Counter(_) => Kind::Counter,
            Metric::Timer { .. } => Kind::Timer,
            Metric::Gauge { .. } => Kind::Gauge,
            Metric::Set(_) => Kind::Set,
        }
    }
}

/// Why a line (or one sample of it) was refused. The text quotes the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLine {
    #[error("no ':' separates the key from a value")]
    NoValue,
    #[error("the key is empty once sanitised")]
    EmptyKey,
    #[error("the name is {0} bytes long (at most {MAX_NAME})")]
    NameTooLong(usize),
    #[error("sample {0:?} has no '|type'")]
    NoType(String),
    #[error("unknown metric type {0:?} (c, ms, h, d, g or s)")]
    UnknownType(String),
    #[error("value {0:?} is not a finite number")]
    Value(String),
    #[error("sample rate {0:?} is not above 0")]
    Rate(String),
}

/// Receives what the parser finds.
pub trait Sink {
    /// One valid sample for `key` (sanitised, with its Graphite tags: always printable
    /// ASCII, so valid UTF-8).
    fn metric(&mut self, key: &[u8], metric: Metric<'_>);
    /// A refused line or sample; `line` is the whole line it came from.
    fn bad_line(&mut self, line: &[u8], error: BadLine);
    /// A line carried tags but tag output is off: they were dropped.
    fn tags_dropped(&mut self) {}
}

/// Byte classes of the key sanitiser.
const DELETE: u8 = 0;
const KEEP: u8 = 1;
const SPACE: u8 = 2;
const SLASH: u8 = 3;

const fn key_classes() -> [u8; 256] {
    let mut t = [DELETE; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-' {
            KEEP
        } else if is_space(b) {
            SPACE
        } else if b == b'/' {
            SLASH
        } else {
            DELETE
        };
        i += 1;
    }
    t
}

static KEY_CLASS: [u8; 256] = key_classes();

/// Python 2's `\s` on bytes, and what `str.strip()` removes.
const fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_space(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_space(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn quote(s: &[u8]) -> String {
    let text = String::from_utf8_lossy(s);
    if text.chars().count() > QUOTE_MAX {
        text.chars().take(QUOTE_MAX).collect::<String>() + "..."
    } else {
        text.into_owned()
    }
}

/// Python `float()` on a value field: empty means 0; the result must be finite.
fn number(text: &[u8]) -> Result<f64, BadLine> {
    if text.is_empty() {
        return Ok(0.0);
    }
    if let Some(v) = small_integer(text) {
        return Ok(v);
    }
    std::str::from_utf8(trim(text))
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .ok_or_else(|| BadLine::Value(quote(text)))
}

/// Most StatsD values are small integers: read them without the general float parser.
/// Up to 15 digits, so the value is exact as an f64.
#[inline]
fn small_integer(text: &[u8]) -> Option<f64> {
    let (neg, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n * 10 + u64::from(d);
    }
    let v = n as f64;
    Some(if neg { -v } else { v })
}

/// The sample rate of a third field: `@rate`; anything that does not parse counts as 1.
fn rate(field: Option<&[u8]>) -> Result<f64, BadLine> {
    let Some(text) = field.and_then(|f| f.strip_prefix(b"@")) else {
        return Ok(1.0);
    };
    let r = std::str::from_utf8(trim(text))
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(1.0);
    if r > 0.0 {
        Ok(r)
    } else {
        // 0 (the original's division by zero), negative (Etsy refuses them too) and nan.
        Err(BadLine::Rate(quote(text)))
    }
}

/// One Graphite tag: byte ranges into the parser's tag text.
#[derive(Debug, Clone)]
struct Tag {
    name: Range<usize>,
    value: Option<Range<usize>>,
}

/// The StatsD parser. Keep one per thread: it holds scratch buffers.
#[derive(Debug, Clone)]
pub struct Parser {
    tags: bool,
    key: Vec<u8>,
    tag_text: Vec<u8>,
    tag_list: Vec<Tag>,
}

impl Parser {
    /// `tags`: DogStatsD tags become Graphite tags; when false they are dropped (and counted).
    pub fn new(tags: bool) -> Parser {
        Parser {
            tags,
            key: Vec::with_capacity(256),
            tag_text: Vec::with_capacity(256),
            tag_list: Vec::with_capacity(8),
        }
    }

    /// Parses every line of `data` (a datagram, or complete lines from a stream).
    pub fn datagram(&mut self, data: &[u8], sink: &mut impl Sink) {
        let mut rest = data;
        loop {
            let (line, next) = match memchr2(b'\n', b'\r', rest) {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            let blank = match line.first() {
                None => true,
                Some(&b) => is_space(b) && line.iter().all(|&b| is_space(b)),
            };
            if !blank {
                self.line(line, sink);
            }
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }
    }

    /// Parses one line (without its line break).
    pub fn line(&mut self, line: &[u8], sink: &mut impl Sink) {
        let (body, tags) = split_tags(line);
        let Some(colon) = memchr(b':', body) else {
            sink.bad_line(line, BadLine::NoValue);
            return;
        };
        let raw_key = &body[..colon];
        let tags = match tags {
            Some(t) if !self.tags => {
                if !t.is_empty() {
                    sink.tags_dropped();
                }
                None
            }
            t => t.filter(|t| !t.is_empty()),
        };
        let key: &[u8] = match tags {
            None if raw_key.iter().all(|&b| KEY_CLASS[usize::from(b)] == KEEP) => raw_key,
            _ => {
                self.key.clear();
                sanitize_key(raw_key, &mut self.key);
                if !self.key.is_empty() {
                    if let Some(t) = tags {
                        self.append_tags(t);
                    }
                }
                &self.key
            }
        };
        if key.is_empty() {
            sink.bad_line(line, BadLine::EmptyKey);
            return;
        }
        if key.len() > MAX_NAME {
            sink.bad_line(line, BadLine::NameTooLong(key.len()));
            return;
        }
        let mut samples = &body[colon + 1..];
        loop {
            let (sample, next) = match memchr(b':', samples) {
                Some(i) => (&samples[..i], Some(&samples[i + 1..])),
                None => (samples, None),
            };
            match parse_sample(sample) {
                Ok(m) => sink.metric(key, m),
                Err(e) => sink.bad_line(line, e),
            }
            match next {
                Some(n) => samples = n,
                None => break,
            }
        }
    }

    /// Parses the tag section and appends `;name=value` pairs, sorted by name, to the key.
    fn append_tags(&mut self, section: &[u8]) {
        self.tag_text.clear();
        self.tag_list.clear();
        for tag in section.split(|&b| b == b',') {
            let (name, value) = match tag.iter().position(|&b| b == b':' || b == b'=') {
                Some(i) => (&tag[..i], Some(&tag[i + 1..])),
                None => (tag, None),
            };
            let start = self.tag_text.len();
            push_tag_part(name, &mut self.tag_text, false);
            let name = start..self.tag_text.len();
            if name.is_empty() {
                continue;
            }
            let value = value.and_then(|v| {
                let start = self.tag_text.len();
                push_tag_part(v, &mut self.tag_text, true);
                let r = start..self.tag_text.len();
                (!r.is_empty()).then_some(r)
            });
            self.tag_list.push(Tag { name, value });
        }
        let text = &self.tag_text;
        // Stable: among equal names the last one sent stays last, and wins below.
        self.tag_list
            .sort_by(|a, b| text[a.name.clone()].cmp(&text[b.name.clone()]));
        for (i, tag) in self.tag_list.iter().enumerate() {
            let name = &text[tag.name.clone()];
            if self
                .tag_list
                .get(i + 1)
                .is_some_and(|next| &text[next.name.clone()] == name)
            {
                continue;
            }
            self.key.push(b';');
            self.key.extend_from_slice(name);
            if let Some(v) = &tag.value {
                self.key.push(b'=');
                self.key.extend_from_slice(&text[v.clone()]);
            }
        }
    }
}

/// Splits a line at its DogStatsD tag marker `|#`: the metric part, and the tag section (up to
/// the next `|`), if any.
fn split_tags(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut from = 0;
    while let Some(i) = memchr(b'#', &line[from..]) {
        let hash = from + i;
        if hash > 0 && line[hash - 1] == b'|' {
            let rest = &line[hash + 1..];
            let end = memchr(b'|', rest).unwrap_or(rest.len());
            return (&line[..hash - 1], Some(&rest[..end]));
        }
        from = hash + 1;
    }
    (line, None)
}

/// The original's key rules: whitespace runs to `_`, `/` to `-`, keep `[A-Za-z0-9_.-]`.
pub fn sanitize_key(raw: &[u8], out: &mut Vec<u8>) {
    let mut in_space = false;
    for &b in raw {
        match KEY_CLASS[usize::from(b)] {
            SPACE => {
                if !in_space {
                    out.push(b'_');
                }
                in_space = true;
                continue;
            }
            KEEP => out.push(b),
            SLASH => out.push(b'-'),
            _ => {}
        }
        in_space = false;
    }
}

/// Carbon's tag character rules: printable ASCII; whitespace runs become `_`; `;` is never
/// allowed, and names also refuse `!`, `^` and `=`; a value may not start with `~`.
fn push_tag_part(raw: &[u8], out: &mut Vec<u8>, is_value: bool) {
    let start = out.len();
    let mut in_space = false;
    for &b in raw {
        if is_space(b) {
            if !in_space {
                out.push(b'_');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        let refused = !(0x21..=0x7e).contains(&b)
            || b == b';'
            || (!is_value && matches!(b, b'!' | b'^' | b'='));
        let leading_tilde = is_value && b == b'~' && out.len() == start;
        if !(refused || leading_tilde) {
            out.push(b);
        }
    }
}

/// One `value|type[|@rate...]` piece.
fn parse_sample(sample: &[u8]) -> Result<Metric<'_>, BadLine> {
    let Some(bar) = memchr(b'|', sample) else {
        return Err(BadLine::NoType(quote(sample)));
    };
    let value = &sample[..bar];
    let rest = &sample[bar + 1..];
    let (kind, third) = match memchr(b'|', rest) {
        None => (rest, None),
        Some(i) => {
            let after = &rest[i + 1..];
            (
                &rest[..i],
                Some(&after[..memchr(b'|', after).unwrap_or(after.len())]),
            )
        }
    };
    let kind = match kind {
        b"c" | b"ms" | b"g" | b"s" | b"h" | b"d" => kind,
        _ => trim(kind),
    };
    match kind {
        b"c" => {
            let v = number(value)?;
            let r = rate(third)?;
            let inc = v / r;
            if inc.is_finite() {
                Ok(Metric::Counter(inc))
            } else {
                Err(BadLine::Value(quote(value)))
            }
        }
        b"ms" | b"h" | b"d" => {
            let v = number(value)?;
            let r = rate(third)?;
            Ok(Metric::Timer {
                value: v,
                weight: 1.0 / r,
            })
        }
        b"g" => {
            let v = number(value)?;
            let delta = matches!(value.first(), Some(b'+' | b'-'));
            Ok(Metric::Gauge { value: v, delta })
        }
        b"s" => Ok(Metric::Set(if value.is_empty() { b"0" } else { value })),
        other => Err(BadLine::UnknownType(quote(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a sink saw, in order, as text that is easy to compare.
    #[derive(Default)]
    struct Seen {
        events: Vec<String>,
        tags_dropped: usize,
    }

    impl Sink for Seen {
        fn metric(&mut self, key: &[u8], m: Metric<'_>) {
            let key = std::str::from_utf8(key).unwrap();
            self.events.push(match m {
                Metric::Counter(v) => format!("c {key} {v:?}"),
                Metric::Timer { value, weight } => format!("ms {key} {value:?} w{weight:?}"),
                Metric::Gauge { value, delta } => {
                    format!("g {key} {}{value:?}", if delta { "Δ" } else { "=" })
                }
                Metric::Set(m) => format!("s {key} {}", String::from_utf8_lossy(m)),
            });
        }
        fn bad_line(&mut self, _line: &[u8], e: BadLine) {
            self.events.push(format!("bad: {e}"));
        }
        fn tags_dropped(&mut self) {
            self.tags_dropped += 1;
        }
    }

    fn parse(data: &[u8]) -> Vec<String> {
        let mut s = Seen::default();
        Parser::new(true).datagram(data, &mut s);
        s.events
    }

    /// The table of spec §3.2 (verified on 2.2.1), under decisions.md §3. Where our answer
    /// differs from 2.2.1 the comment says why.
    #[test]
    fn spec_table() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"a:1", &["bad: sample \"1\" has no '|type'"]),
            // 2.2.1: counter += 1. decisions §3: any type but c/ms/h/d/g/s is a bad line.
            (
                b"a:1|",
                &["bad: unknown metric type \"\" (c, ms, h, d, g or s)"],
            ),
            // 2.2.1: counter "" += 1, emitted as `stats.`. An empty key is a bad line here.
            (b":1|c", &["bad: the key is empty once sanitised"]),
            (b"b:1|c|@0.1", &["c b 10.0"]),
            (b"b2:1|c|0.1", &["c b2 1.0"]),
            (b"a.b:3|c|@0.5", &["c a.b 6.0"]),
            // 2.2.1: int(3.33) = 3. decisions §3: value / rate as a float, as Etsy.
            (b"n:1|c|@0.3", &["c n 3.3333333333333335"]),
            (b"r:1|c|@abc", &["c r 1.0"]),
            (b"r:1|c|@0", &["bad: sample rate \"0\" is not above 0"]),
            // 2.2.1: int(1.5) = 1.
            (b"m:1.5|c", &["c m 1.5"]),
            (b"z:-1.9|c", &["c z -1.9"]),
            (b"e:1e3|c", &["c e 1000.0"]),
            (b"i:inf|c", &["bad: value \"inf\" is not a finite number"]),
            (
                b"hex:0x10|c",
                &["bad: value \"0x10\" is not a finite number"],
            ),
            (b"q:abc|c", &["bad: value \"abc\" is not a finite number"]),
            // 2.2.1: counters. decisions §3: h is a timer, s a set.
            (b"h:7|h", &["ms h 7.0 w1.0"]),
            (b"s:1|s", &["s s 1"]),
            (b"s2:x|s", &["s s2 x"]),
            (b"m:2|c:3|g:4|ms", &["c m 2.0", "g m =3.0", "ms m 4.0 w1.0"]),
            // 2.2.1 ignores a timer's rate; decisions §3: it scales the count, as Etsy.
            (b"k:1|ms|@0.1", &["ms k 1.0 w10.0"]),
            (b"k2:1|g|@0.5", &["g k2 =1.0"]),
            (b"g:+|g", &["bad: value \"+\" is not a finite number"]),
            (b"g1:+5|g", &["g g1 Δ5.0"]),
            (b"g2:-3|g", &["g g2 Δ-3.0"]),
            (b"lead: 5 |c", &["c lead 5.0"]),
            (b"sp ace/sl@sh:1|c", &["c sp_ace-slsh 1.0"]),
            (b"tab\tkey:1|c", &["c tab_key 1.0"]),
            (b"pct%:1|c", &["c pct 1.0"]),
            (b"v\xc3\xa9:1|c", &["c v 1.0"]),
            (b"e:|ms", &["ms e 0.0 w1.0"]),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn more_cases() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"d:3|d", &["ms d 3.0 w1.0"]),
            (b"t:2|ms|@0.5", &["ms t 2.0 w2.0"]),
            (b"t:2|ms|@-1", &["bad: sample rate \"-1\" is not above 0"]),
            (
                b"c:1|c|@-0.5",
                &["bad: sample rate \"-0.5\" is not above 0"],
            ),
            (b"c:1|c|@nan", &["bad: sample rate \"nan\" is not above 0"]),
            (b"c:1| c ", &["c c 1.0"]),
            (
                b"c:1|C",
                &["bad: unknown metric type \"C\" (c, ms, h, d, g or s)"],
            ),
            (
                b"c:1|x",
                &["bad: unknown metric type \"x\" (c, ms, h, d, g or s)"],
            ),
            (b"g: -5|g", &["g g =-5.0"]),
            (b"g:|g", &["g g =0.0"]),
            (b"g:nan|g", &["bad: value \"nan\" is not a finite number"]),
            (
                b"t:1e400|ms",
                &["bad: value \"1e400\" is not a finite number"],
            ),
            (
                b"c:1e308|c|@0.1",
                &["bad: value \"1e308\" is not a finite number"],
            ),
            (b"s:|s", &["s s 0"]),
            (
                b"a:1|c:2:3|g",
                &["c a 1.0", "bad: sample \"2\" has no '|type'", "g a =3.0"],
            ),
            (b"nocolon", &["bad: no ':' separates the key from a value"]),
            (b"%%%:1|c", &["bad: the key is empty once sanitised"]),
            (b"a  \t b:1|c", &["c a_b 1.0"]),
            (b"a \xff b:1|c", &["c a__b 1.0"]),
            (b" x:1|c", &["c _x 1.0"]),
            // Extra DogStatsD fields after the rate are ignored.
            (b"c:1|c|@0.5|T123", &["c c 2.0"]),
            (b"c:1|c|T123", &["c c 1.0"]),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn lines_and_blank_lines() {
        assert_eq!(
            parse(b"a:1|c\nb:2|c\r\nc:3|c\r\n\n  \t\nd:4|c"),
            ["c a 1.0", "c b 2.0", "c c 3.0", "c d 4.0"]
        );
        assert_eq!(parse(b""), Vec::<String>::new());
        assert_eq!(parse(b"\n\n"), Vec::<String>::new());
        // A bad line never affects its neighbours.
        assert_eq!(
            parse(b"a:1|c\nk\xff\xfe:x|c\nb:2|c"),
            [
                "c a 1.0",
                "bad: value \"x\" is not a finite number",
                "c b 2.0"
            ]
        );
    }

    #[test]
    fn tags() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"req:1|c|#env:prod,dc:ams", &["c req;dc=ams;env=prod 1.0"]),
            (b"req:1|c|@0.5|#env:prod", &["c req;env=prod 2.0"]),
            (b"req:1|c|#env=prod", &["c req;env=prod 1.0"]),
            (b"req:1|c|#b,a:1", &["c req;a=1;b 1.0"]),
            (b"req:1|c|#a:1,a:2", &["c req;a=2 1.0"]),
            (b"req:1|c|#url:http://x=y", &["c req;url=http://x=y 1.0"]),
            (b"req:1|c|#sp ace:v al;ue", &["c req;sp_ace=v_alue 1.0"]),
            (b"req:1|c|#n!a^m=e:~v", &["c req;nam=e:~v 1.0"]),
            (b"req:1|c|#n:~~v", &["c req;n=v 1.0"]),
            (b"req:1|c|#k:,,:v", &["c req;k 1.0"]),
            (b"req:1|c|#", &["c req 1.0"]),
            (b"req:1|c|#env:prod|c:container", &["c req;env=prod 1.0"]),
            (b"a/b c:5|g|#t:1", &["g a-b_c;t=1 =5.0"]),
            (b"%:5|g|#t:1", &["bad: the key is empty once sanitised"]),
            (b"m:1|c:2|ms|#k:v", &["c m;k=v 1.0", "ms m;k=v 2.0 w1.0"]),
            // `#` without `|` is not a tag marker.
            (b"a#b:1|c", &["c ab 1.0"]),
            (b"s:a#b|s", &["s s a#b"]),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut s = Seen::default();
        Parser::new(false).datagram(b"req:1|c|#env:prod\nx:1|c|#", &mut s);
        assert_eq!(s.events, ["c req 1.0", "c x 1.0"]);
        assert_eq!(s.tags_dropped, 1);
    }

    #[test]
    fn numbers() {
        for (text, want) in [
            (&b"0"[..], 0.0),
            (b"-0", -0.0),
            (b"42", 42.0),
            (b"-17", -17.0),
            (b"999999999999999", 999999999999999.0),
            (b"9999999999999999", 1e16),
            (b"+5", 5.0),
            (b" 5", 5.0),
            (b"1.5", 1.5),
            (b"1e3", 1000.0),
        ] {
            let got = number(text).unwrap();
            assert_eq!(got.to_bits(), f64::to_bits(want), "{text:?}");
        }
        for bad in [&b"-"[..], b"1-", b"0x1", b"--1", b"1 2"] {
            assert!(number(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn name_length_is_bounded() {
        let mut line = vec![b'k'; MAX_NAME];
        line.extend_from_slice(b":1|c");
        assert_eq!(parse(&line).len(), 1);
        assert!(parse(&line)[0].starts_with("c kkk"));
        let mut line = vec![b'k'; MAX_NAME + 1];
        line.extend_from_slice(b":1|c");
        assert_eq!(
            parse(&line),
            ["bad: the name is 1025 bytes long (at most 1024)"]
        );
    }

    #[test]
    fn never_panics_on_bytes() {
        // Every short byte string over an alphabet of the grammar's characters.
        let alphabet = b":|@#,=c1.g-+sm \n\xff";
        let mut p = Parser::new(true);
        let mut s = Seen::default();
        let mut buf = Vec::new();
        for n in 0..alphabet.len().pow(4) {
            buf.clear();
            let mut x = n;
            for _ in 0..4 {
                buf.push(alphabet[x % alphabet.len()]);
                x /= alphabet.len();
            }
            p.datagram(&buf, &mut s);
        }
        let big = vec![b'x'; 65536];
        p.datagram(&big, &mut s);
    }
}
