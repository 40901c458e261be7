//! The sample line: the one text format every bucky tool reads and writes.
//!
//! The grammar, fields and examples are documented at the crate root; this module holds the
//! pure parser and formatter. Parsing borrows from the input line and allocates nothing.

use std::fmt;

use thiserror::Error;
use wide::u8x16;

use crate::scan::load16;

/// One sample, borrowed from the line it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The metric name before the final naming rules (may carry `;k=v` Graphite tags).
    pub name: &'a str,
    /// A finite value.
    pub value: f64,
    /// Unix seconds, possibly fractional.
    pub timestamp: f64,
    /// The sending host, when the protocol has one (collectd, MetricsD).
    pub host: Option<&'a str>,
}

/// A parsed sample line together with the exact text of its numeric fields.
///
/// Writers that only re-emit the numbers (the carbon plaintext writer) copy the text instead of
/// formatting the floats again; the text is known to parse to the finite values in `sample`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParsedLine<'a> {
    pub sample: Sample<'a>,
    pub value_text: &'a str,
    pub timestamp_text: &'a str,
}

/// Why a line is not a sample line. The text names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    #[error("empty line")]
    Empty,
    #[error("line is not valid UTF-8")]
    Utf8,
    #[error("expected 'NAME VALUE TIMESTAMP[ HOST]', found {0} field(s)")]
    FieldCount(usize),
    #[error("value {0:?} is not a finite number")]
    Value(String),
    #[error("timestamp {0:?} is not a finite number of seconds >= 0")]
    Timestamp(String),
}

/// The four fields of a sample line, checked but not converted.
///
/// The line is known to be UTF-8, and `value` and `timestamp` to parse to a finite number (a
/// non-negative one for the timestamp). Writers that only re-emit the fields (the carbon
/// plaintext writer) copy these bytes and never pay for conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    pub timestamp: &'a [u8],
    pub host: Option<&'a [u8]>,
    /// `VALUE TIMESTAMP` as one slice of the line, when one space separates them there:
    /// writers that re-emit both copy it in one go.
    pub numbers: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    /// Converts the fields (already validated by [`split_line`]).
    pub fn sample(&self) -> Sample<'a> {
        let text = |b: &'a [u8]| std::str::from_utf8(b).unwrap_or_default();
        Sample {
            name: text(self.name),
            value: self.value_f64(),
            timestamp: self.timestamp_f64(),
            host: self.host.map(text),
        }
    }

    /// The value as a number, for writers that need the numbers but not the texts.
    pub fn value_f64(&self) -> f64 {
        parse_value_bytes(self.value).unwrap_or(0.0)
    }

    /// The timestamp as a number.
    pub fn timestamp_f64(&self) -> f64 {
        std::str::from_utf8(self.timestamp)
            .ok()
            .and_then(parse_timestamp)
            .unwrap_or(0.0)
    }
}

fn is_separator(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c')
}

/// Splits and checks one line (with or without its trailing `\n` or `\r\n`).
///
/// Fields may be separated by runs of ASCII whitespace and the line may carry surrounding
/// whitespace, so any Graphite plaintext producer is accepted as it stands.
// Inlined into the caller's per-line loop: the fields then stay in registers instead of
// making a round trip through memory.
#[inline]
pub fn split_line(line: &[u8]) -> Result<Fields<'_>, LineError> {
    match split_canonical(line) {
        Some(fields) => Ok(fields),
        None => split_general(line),
    }
}

/// [`split_line`] without the canonical fast path.
#[inline(never)]
fn split_general(line: &[u8]) -> Result<Fields<'_>, LineError> {
    let (n, fields) = match split_single_spaces(line) {
        Some(Scan::Ascii(n, f)) => (n, f),
        Some(Scan::NonAscii(n, f)) => {
            std::str::from_utf8(line).map_err(|_| LineError::Utf8)?;
            (n, f)
        }
        None => {
            std::str::from_utf8(line).map_err(|_| LineError::Utf8)?;
            split_any_whitespace(line)
        }
    };
    match n {
        0 => return Err(LineError::Empty),
        1 | 2 | 5.. => return Err(LineError::FieldCount(n)),
        _ => {}
    }
    let [name, value, timestamp, host] = fields;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if !(is_plain_decimal(value) || parse_value_bytes(value).is_some()) {
        return Err(LineError::Value(text(value)));
    }
    let ts_ok = if is_plain_decimal(timestamp) && timestamp[0] != b'-' {
        true
    } else {
        parse_value_bytes(timestamp).is_some_and(|t| t >= 0.0)
    };
    if !ts_ok {
        return Err(LineError::Timestamp(text(timestamp)));
    }
    // The span from the value's first byte to the timestamp's last, by offsets in the line.
    let offset = |f: &[u8]| f.as_ptr() as usize - line.as_ptr() as usize;
    let (v, t) = (offset(value), offset(timestamp));
    let numbers = (t == v + value.len() + 1 && line.get(t - 1) == Some(&b' '))
        .then(|| line.get(v..t + timestamp.len()))
        .flatten();
    Ok(Fields {
        name,
        value,
        timestamp,
        host: (n == 4).then_some(host),
        numbers,
    })
}

/// Bitmaps of the spaces, and of the bytes that need the general path (control characters,
/// other whitespace among them, and non-ASCII bytes), in 16 bytes.
#[inline(always)]
fn classify16(v: u8x16) -> (u32, u32) {
    let spaces = v.cmp_eq(u8x16::splat(b' ')).move_mask() as u32;
    let control = v.min(u8x16::splat(0x1f)).cmp_eq(v).move_mask() as u32;
    let non_ascii = v.move_mask() as u32;
    (spaces, control | non_ascii)
}

/// The fastest path, for the form bucky's tools write: 16 to 128 printable ASCII bytes in
/// three or four single-space-separated fields, value and timestamp plain decimals of at most
/// 16 digits. Classifies 16 bytes at a time into bitmaps, so a line costs a handful of vector
/// compares and no per-byte branches. `None` for anything else (not necessarily an error):
/// the general paths then decide.
#[inline(always)]
fn split_canonical(line: &[u8]) -> Option<Fields<'_>> {
    let mut b = line;
    if let [rest @ .., b'\n'] = b {
        b = rest;
    }
    let len = b.len();
    if !(16..=crate::scan::MAX).contains(&len) {
        return None;
    }
    let mut bad = 0u32;
    let spaces = crate::scan::gather(len, |at| {
        let (sp, x) = classify16(load16(b, at));
        bad |= x;
        sp
    });
    if bad != 0 {
        return None;
    }
    // Two or three spaces. The halves as u64s: bit operations on them are single
    // instructions (and no popcount: baseline x86-64 has none).
    let (lo, hi) = (spaces as u64, (spaces >> 64) as u64);
    let (s1, lo, hi) = take_lowest(lo, hi)?;
    let (s2, lo, hi) = take_lowest(lo, hi)?;
    let (s3, has_host) = match take_lowest(lo, hi) {
        None => (len, false),
        Some((s3, 0, 0)) => (s3, true),
        Some(_) => return None,
    };
    // No empty field: the spaces are neither first, last nor doubled.
    if s1 == 0 || s2 == s1 + 1 || s3 == s2 + 1 || s3 + 1 == len {
        return None;
    }
    if !plain_decimal16(b, s1 + 1, s2, true) || !plain_decimal16(b, s2 + 1, s3, false) {
        return None;
    }
    Some(Fields {
        name: &b[..s1],
        value: &b[s1 + 1..s2],
        timestamp: &b[s2 + 1..s3],
        host: has_host.then(|| &b[s3 + 1..]),
        numbers: Some(&b[s1 + 1..s3]),
    })
}

/// The lowest set bit of the 128-bit `(lo, hi)` and the bits left without it.
#[inline(always)]
fn take_lowest(lo: u64, hi: u64) -> Option<(usize, u64, u64)> {
    if lo != 0 {
        Some((lo.trailing_zeros() as usize, lo & (lo - 1), hi))
    } else if hi != 0 {
        Some((64 + hi.trailing_zeros() as usize, 0, hi & (hi - 1)))
    } else {
        None
    }
}

/// `b[start..end]` is `[0-9.]{1,16}` with at most one dot and at least one digit, after a
/// `+` or `-` when `signed`. `b` holds at least 16 bytes.
#[inline(always)]
fn plain_decimal16(b: &[u8], mut start: usize, end: usize, signed: bool) -> bool {
    if signed && matches!(b[start], b'+' | b'-') {
        start += 1;
    }
    let len = end.saturating_sub(start);
    if len == 0 || len > 16 {
        return false;
    }
    // 16 bytes holding the field: from its start, or ending where the line ends.
    let (v, skip) = if start + 16 <= b.len() {
        (load16(b, start), 0)
    } else {
        (load16(b, b.len() - 16), start - (b.len() - 16))
    };
    let d = v - u8x16::splat(b'0');
    let digits = (d.min(u8x16::splat(9)).cmp_eq(d).move_mask() as u32) >> skip;
    let dots = (v.cmp_eq(u8x16::splat(b'.')).move_mask() as u32) >> skip;
    let field = (1u32 << len) - 1;
    let dots = dots & field;
    // Every byte a digit or a dot, at most one dot, at least one digit.
    (digits | dots) & field == field && dots & dots.wrapping_sub(1) == 0 && digits & field != 0
}

fn parse_value_bytes(b: &[u8]) -> Option<f64> {
    std::str::from_utf8(b).ok().and_then(parse_value)
}

/// What the fast scan found: the fields, and whether UTF-8 still needs checking.
enum Scan<'a> {
    Ascii(usize, [&'a [u8]; 4]),
    NonAscii(usize, [&'a [u8]; 4]),
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// 0x80 in each byte of `v` that is zero, 0 in the others (exact: no false positives).
fn zero_bytes(v: u64) -> u64 {
    !(((v & LOW7).wrapping_add(LOW7)) | v | LOW7)
}

/// 0x80 in each ASCII byte of `v` that is `\t`, `\n`, `\x0b`, `\x0c` or `\r`.
fn control_whitespace(v: u64) -> u64 {
    let low = v & LOW7;
    let at_least_9 = low.wrapping_add((0x80 - 9) * ONES);
    let at_least_14 = low.wrapping_add((0x80 - 14) * ONES);
    at_least_9 & !at_least_14 & !v & HIGH
}

/// The canonical form, fast: fields separated by single spaces, an optional `\n` or `\r\n`.
/// Scans eight bytes at a time for spaces, other whitespace and non-ASCII bytes. `None` sends
/// the line to [`split_any_whitespace`].
fn split_single_spaces(line: &[u8]) -> Option<Scan<'_>> {
    let mut b = line;
    if let [rest @ .., b'\n'] = b {
        b = rest;
    }
    if let [rest @ .., b'\r'] = b {
        b = rest;
    }
    let mut spaces = [0usize; 4];
    let mut n_spaces = 0;
    let mut high = 0u64;
    let mut other = 0u64;
    let mut record = |i: usize| {
        if n_spaces < 4 {
            spaces[n_spaces] = i;
        }
        n_spaces += 1;
    };
    let mut chunks = b.chunks_exact(8);
    for (ci, chunk) in chunks.by_ref().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        high |= v & HIGH;
        other |= control_whitespace(v);
        let mut m = zero_bytes(v ^ (b' ' as u64 * ONES));
        while m != 0 {
            record(ci * 8 + (m.trailing_zeros() / 8) as usize);
            m &= m - 1;
        }
    }
    let base = b.len() - chunks.remainder().len();
    for (i, &c) in chunks.remainder().iter().enumerate() {
        high |= u64::from(c & 0x80);
        other |= u64::from(matches!(c, b'\t'..=b'\r'));
        if c == b' ' {
            record(base + i);
        }
    }
    if other != 0 || n_spaces > 3 {
        return None;
    }
    let mut fields: [&[u8]; 4] = [b""; 4];
    let mut start = 0;
    for (k, &end) in spaces[..n_spaces]
        .iter()
        .chain(std::iter::once(&b.len()))
        .enumerate()
    {
        if end == start {
            // Empty field: leading, trailing or doubled space, or an empty line.
            return None;
        }
        fields[k] = &b[start..end];
        start = end + 1;
    }
    let n = n_spaces + 1;
    Some(if high == 0 {
        Scan::Ascii(n, fields)
    } else {
        Scan::NonAscii(n, fields)
    })
}

/// Any run of ASCII whitespace separates fields; counts every field for the error message.
fn split_any_whitespace(b: &[u8]) -> (usize, [&[u8]; 4]) {
    let mut fields: [&[u8]; 4] = [b""; 4];
    let mut n = 0;
    let mut i = 0;
    loop {
        while i < b.len() && is_separator(b[i]) {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !is_separator(b[i]) {
            i += 1;
        }
        if n < 4 {
            fields[n] = &b[start..i];
        }
        n += 1;
    }
    (n, fields)
}

/// `[+-]digits[.digits]` (or `.digits`, `digits.`) short enough to be finite: the common case,
/// checked without converting.
fn is_plain_decimal(t: &[u8]) -> bool {
    let digits = match t.first() {
        Some(b'+' | b'-') => &t[1..],
        _ => t,
    };
    if digits.is_empty() || digits.len() > 300 {
        return false;
    }
    let mut seen_digit = false;
    let mut seen_dot = false;
    for &c in digits {
        match c {
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_dot => seen_dot = true,
            _ => return false,
        }
    }
    seen_digit
}

/// Parses one line (with or without its trailing `\n` or `\r\n`) and converts its numbers.
pub fn parse_line(line: &[u8]) -> Result<ParsedLine<'_>, LineError> {
    let f = split_line(line)?;
    Ok(ParsedLine {
        sample: f.sample(),
        value_text: std::str::from_utf8(f.value).unwrap_or_default(),
        timestamp_text: std::str::from_utf8(f.timestamp).unwrap_or_default(),
    })
}

/// [`parse_line`] for text already known to be UTF-8.
pub fn parse_str(text: &str) -> Result<ParsedLine<'_>, LineError> {
    parse_line(text.as_bytes())
}

/// A finite float, or `None`. Accepts what Graphite's carbon accepts, minus inf and nan.
pub fn parse_value(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Unix seconds: a finite, non-negative number.
pub fn parse_timestamp(text: &str) -> Option<f64> {
    parse_value(text).filter(|t| *t >= 0.0)
}

/// Largest magnitude below which an integral f64 is printed as a plain integer.
const INTEGER_LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63

/// Appends `v` in the sample line's number form: integral values without a fraction (`42`,
/// `-0`), others in the shortest form that parses back to the same f64 (`0.1`, `1e-7`).
pub fn push_number(out: &mut Vec<u8>, v: f64) {
    if v == v.trunc() && v.abs() < INTEGER_LIMIT {
        if v == 0.0 && v.is_sign_negative() {
            out.extend_from_slice(b"-0");
        } else {
            let mut buf = itoa::Buffer::new();
            // Exact: |v| < 2^63 and integral, so the cast neither saturates nor rounds.
            out.extend_from_slice(buf.format(v as i64).as_bytes());
        }
    } else {
        let mut buf = ryu::Buffer::new();
        // ryu's format_finite prints non-finite values as garbage; callers guarantee finite,
        // but print them explicitly anyway so a bug upstream stays visible and parseable-fails.
        let text = if v.is_finite() {
            buf.format_finite(v)
        } else {
            buf.format(v)
        };
        out.extend_from_slice(text.as_bytes());
    }
}

/// A number in the sample line's form, for `format!` and friends.
#[derive(Debug, Clone, Copy)]
pub struct Number(pub f64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(24);
        push_number(&mut buf, self.0);
        // push_number writes only ASCII.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// Appends one whole sample line, `\n` included.
///
/// The name and host must hold no whitespace; receivers replace it with `_` (see
/// [`sanitize_whitespace`]) before they get here.
pub fn push_line(out: &mut Vec<u8>, sample: &Sample<'_>) {
    out.extend_from_slice(sample.name.as_bytes());
    out.push(b' ');
    push_number(out, sample.value);
    out.push(b' ');
    push_number(out, sample.timestamp);
    if let Some(host) = sample.host.filter(|h| !h.is_empty()) {
        out.push(b' ');
        out.extend_from_slice(host.as_bytes());
    }
    out.push(b'\n');
}

/// The sample's line as a `String` (tests, logs); hot paths use [`push_line`].
pub fn format_line(sample: &Sample<'_>) -> String {
    let mut out = Vec::with_capacity(sample.name.len() + 40);
    push_line(&mut out, sample);
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces every whitespace character with `_`, so that a name or host fits in one field.
pub fn sanitize_whitespace(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_whitespace) {
        text.chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(line: &str) -> (String, f64, f64, Option<String>) {
        let p = parse_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        (
            p.sample.name.to_string(),
            p.sample.value,
            p.sample.timestamp,
            p.sample.host.map(str::to_string),
        )
    }

    type Expected<'a> = (&'a str, f64, f64, Option<&'a str>);

    #[test]
    fn parse_table() {
        let cases: &[(&str, Expected)] = &[
            (
                "stats.gauges.queue_depth 42 1795650000",
                ("stats.gauges.queue_depth", 42.0, 1795650000.0, None),
            ),
            (
                "interface.en0.if_octets.rx 408.4 1795650000.25 toroid.local",
                (
                    "interface.en0.if_octets.rx",
                    408.4,
                    1795650000.25,
                    Some("toroid.local"),
                ),
            ),
            ("a 1 2\n", ("a", 1.0, 2.0, None)),
            ("a 1 2\r\n", ("a", 1.0, 2.0, None)),
            ("  a\t\t-1.5e3   2.5  h  ", ("a", -1500.0, 2.5, Some("h"))),
            ("name;k=v;k2=v2 0 0", ("name;k=v;k2=v2", 0.0, 0.0, None)),
            ("x +7 1e9", ("x", 7.0, 1e9, None)),
            ("x .5 5.", ("x", 0.5, 5.0, None)),
            ("ünïcode 1 1 hôst", ("ünïcode", 1.0, 1.0, Some("hôst"))),
        ];
        for (line, (name, value, ts, host)) in cases {
            let got = ok(line);
            assert_eq!(got.0, *name, "{line:?}");
            assert_eq!(got.1.to_bits(), value.to_bits(), "{line:?}");
            assert_eq!(got.2, *ts, "{line:?}");
            assert_eq!(got.3.as_deref(), *host, "{line:?}");
        }
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&[u8], LineError)] = &[
            (b"", LineError::Empty),
            (b"  \r\n", LineError::Empty),
            (b"a", LineError::FieldCount(1)),
            (b"a 1", LineError::FieldCount(2)),
            (b"a 1 2 h extra", LineError::FieldCount(5)),
            (b"a 1 2 h x y", LineError::FieldCount(6)),
            (b"a nan 2", LineError::Value("nan".into())),
            (b"a inf 2", LineError::Value("inf".into())),
            (b"a -infinity 2", LineError::Value("-infinity".into())),
            (b"a 1e400 2", LineError::Value("1e400".into())),
            (b"a 0x10 2", LineError::Value("0x10".into())),
            (b"a 1_0 2", LineError::Value("1_0".into())),
            (b"a abc 2", LineError::Value("abc".into())),
            (b"a 1 -5", LineError::Timestamp("-5".into())),
            (b"a 1 now", LineError::Timestamp("now".into())),
            (b"a 1 NaN", LineError::Timestamp("NaN".into())),
            (b"a\xff 1 2", LineError::Utf8),
        ];
        for (line, err) in cases {
            assert_eq!(
                parse_line(line).err().as_ref(),
                Some(err),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn fast_number_check_agrees_with_the_parser() {
        for t in [
            "1",
            "-1",
            "+1",
            "1.",
            ".5",
            "-.5",
            "0",
            "-0",
            "1.2.3",
            ".",
            "-",
            "+",
            "",
            "1e5",
            "12a",
            "١",
            "00012.5000",
            "--1",
            "+-1",
        ] {
            let fast = is_plain_decimal(t.as_bytes());
            if fast {
                assert!(parse_value(t).is_some(), "{t:?}");
            }
        }
        let long = "9".repeat(300);
        assert!(is_plain_decimal(long.as_bytes()) && parse_value(&long).is_some());
        let longer = "9".repeat(400);
        assert!(!is_plain_decimal(longer.as_bytes()) && parse_value(&longer).is_none());
        assert_eq!(
            split_line(b"a -0 -0").unwrap(),
            Fields {
                name: b"a",
                value: b"-0",
                timestamp: b"-0",
                host: None,
                numbers: Some(b"-0 -0"),
            }
        );
        assert_eq!(
            split_line(b"a 1 -1").unwrap_err(),
            LineError::Timestamp("-1".into())
        );
    }

    #[test]
    fn error_text_names_the_value() {
        let e = parse_str("a 12x 3").unwrap_err();
        assert_eq!(e.to_string(), "value \"12x\" is not a finite number");
    }

    #[test]
    fn number_forms() {
        let cases: &[(f64, &str)] = &[
            (42.0, "42"),
            (-3.0, "-3"),
            (0.0, "0"),
            (-0.0, "-0"),
            (0.1, "0.1"),
            (408.4, "408.4"),
            (1795650000.25, "1795650000.25"),
            (1e-7, "1e-7"),
            (1e15, "1000000000000000"),
            (9007199254740993.0, "9007199254740992"),
            (1152921504606846976.0, "1152921504606846976"),
            (1e300, "1e300"),
            (f64::MAX, "1.7976931348623157e308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (10.0 / 3.0, "3.3333333333333335"),
        ];
        for (v, text) in cases {
            assert_eq!(Number(*v).to_string(), *text);
        }
    }

    #[test]
    fn numbers_span_value_and_timestamp_when_one_space_parts_them() {
        fn numbers(l: &str) -> Result<Option<&[u8]>, LineError> {
            split_line(l.as_bytes()).map(|f| f.numbers)
        }
        let long = "a.much.longer.metric.name.past.sixteen.bytes";
        for (line, want) in [
            ("a 1 2", Some(&b"1 2"[..])),
            ("a 1.5 2 host.example\n", Some(b"1.5 2")),
            ("a\t-1 2\r\n", Some(b"-1 2")),
            ("a 1\t2", None),
            ("a 1  2 h", None),
            (
                &format!("{long} 1e3 1795650000.5 h"),
                Some(b"1e3 1795650000.5"),
            ),
            (&format!("{long} 12.5 1795650000"), Some(b"12.5 1795650000")),
        ] {
            assert_eq!(numbers(line), Ok(want), "{line:?}");
        }
    }

    #[test]
    fn line_forms() {
        let s = Sample {
            name: "a.b",
            value: 1.5,
            timestamp: 1795650000.0,
            host: Some("h.example"),
        };
        assert_eq!(format_line(&s), "a.b 1.5 1795650000 h.example\n");
        let s = Sample { host: None, ..s };
        assert_eq!(format_line(&s), "a.b 1.5 1795650000\n");
        let s = Sample {
            host: Some(""),
            ..s
        };
        assert_eq!(format_line(&s), "a.b 1.5 1795650000\n");
    }

    #[test]
    fn whitespace_is_replaced() {
        assert_eq!(sanitize_whitespace("a b\tc"), "a_b_c");
        assert!(matches!(
            sanitize_whitespace("abc"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
            (any::<i64>()).prop_map(|i| i as f64),
            (0u64..(1u64 << 52)).prop_map(f64::from_bits), // subnormal (and zero)
            (0u64..(1u64 << 52)).prop_map(|m| -f64::from_bits(m)),
            (1e15f64..1e308).prop_map(|v| v.trunc()),
            (-1e308f64..-1e15).prop_map(|v| v.trunc()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn round_trip_is_exact(v in finite(), t in (0u64..(1u64 << 40)), frac in 0u32..1000, host in proptest::option::of("[a-z.]{1,12}")) {
            let ts = t as f64 + f64::from(frac) / 1000.0;
            let s = Sample { name: "a.b;k=v", value: v, timestamp: ts, host: host.as_deref() };
            let line = format_line(&s);
            prop_assert!(line.ends_with('\n'));
            let back = parse_str(&line).map_err(|e| TestCaseError::fail(format!("{line:?}: {e}")))?;
            prop_assert_eq!(back.sample.value.to_bits(), v.to_bits(), "{}", line);
            prop_assert_eq!(back.sample.timestamp.to_bits(), ts.to_bits(), "{}", line);
            prop_assert_eq!(back.sample.name, "a.b;k=v");
            prop_assert_eq!(back.sample.host, host.as_deref());
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_line(&bytes);
        }

        #[test]
        fn near_canonical_lines_never_panic(
            line in "[a.]{0,70}[ 1.+-]{0,30}[ 0-9.e-]{0,40}[ a\n]{0,3}"
        ) {
            let b = line.as_bytes();
            if let Ok(f) = split_line(b) {
                prop_assert_eq!(Ok(f), split_general(b));
            }
        }

        #[test]
        fn fast_scan_agrees_with_the_general_split(line in "[a1.é \t\r\x0b-]{0,40}\n?") {
            let b = line.as_bytes();
            let general = split_any_whitespace(b);
            match split_single_spaces(b) {
                Some(Scan::Ascii(n, f)) => {
                    prop_assert!(line.is_ascii());
                    prop_assert_eq!((n, f), general);
                }
                Some(Scan::NonAscii(n, f)) => {
                    prop_assert!(!line.is_ascii());
                    prop_assert_eq!((n, f), general);
                }
                None => {}
            }
        }

        #[test]
        fn canonical_path_agrees_with_the_general_one(
            line in "[a-z.é;=]{1,60}( |  |\t)[-+]?[0-9.]{0,18}( |\r)[-+.]?[0-9.]{0,18}( [a-z.\t]{0,50}| )?\r?\n?"
        ) {
            let b = line.as_bytes();
            if let Some(f) = split_canonical(b) {
                prop_assert_eq!(Ok(f), split_general(b), "{:?}", line);
            }
        }

        #[test]
        fn canonical_path_takes_what_bucky_writes(
            name in "[a-z0-9_.;=-]{1,60}",
            v in -1e12f64..1e12,
            t in 0u64..(1u64 << 33),
            frac in proptest::option::of(0u32..1000),
            host in proptest::option::of("[a-z0-9.-]{1,30}"),
        ) {
            let v = (v * 1000.0).round() / 1000.0;
            let mut line = format!("{name} {} {t}", Number(v));
            if let Some(f) = frac {
                line.push_str(&format!(".{f}"));
            }
            if let Some(h) = &host {
                line.push(' ');
                line.push_str(h);
            }
            line.push('\n');
            let b = line.as_bytes();
            if (17..=129).contains(&b.len()) && !Number(v).to_string().contains('e') {
                prop_assert!(split_canonical(b).is_some(), "{:?}", line);
            }
            prop_assert_eq!(split_line(b), split_general(b));
        }

        #[test]
        fn split_accepts_exactly_what_parses(v in "[-+]?[0-9.]{0,6}(e[-+]?[0-9]{1,3})?", t in "[-+]?[0-9.]{0,6}") {
            let line = format!("n {v} {t}");
            let ok = parse_value(&v).is_some() && parse_timestamp(&t).is_some();
            prop_assert_eq!(split_line(line.as_bytes()).is_ok(), ok, "{}", line);
        }
    }
}
