//! The per-line hot path: split the line, run the rules in order, write the sample.
//!
//! Nothing is allocated per line: the fields are slices of the input line; a renamed name or
//! host goes into one of two reusable buffers (each rename reads one and writes the other);
//! numbers are converted only when a rule needs them, and an unchanged value or timestamp is
//! copied out as the text it came in.

use bucky_proto::log::{suppressed_note, RateLimit};
use bucky_proto::sample::{push_number, split_line, LineError};
use regex::bytes::{CaptureLocations, RegexSet};

use crate::lua::{LuaProcessor, Returned, Verdict};
use crate::rules::{Cond, Field, Pattern, Piece, Rule};

/// What bucky-process counts; emitted as `bucky.process.<name>` and logged at exit.
/// `in` = `out` + `dropped`, and `dropped` is the sum of the `dropped_*` counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Samples read (lines that are not samples are `bad_lines`).
    pub lines_in: u64,
    /// Samples written.
    pub out: u64,
    /// Input lines that are not samples (or longer than the line limit).
    pub bad_lines: u64,
    pub dropped_drop: u64,
    pub dropped_keep: u64,
    pub dropped_time_window: u64,
    pub dropped_non_finite: u64,
    /// The Lua function returned nothing.
    pub dropped_lua: u64,
    /// The Lua function failed and `processor_drop_on_error` is set.
    pub dropped_lua_error: u64,
    /// Samples still holding nan or inf when written (no `drop_non_finite` rule caught them):
    /// a sample line cannot carry them, so they are dropped and reported.
    pub dropped_unwritable: u64,
    /// Names or hosts rewritten by a rename rule.
    pub renamed: u64,
    /// Renames whose result would have been an empty name (the name was kept).
    pub rename_errors: u64,
    /// Lua calls that raised an error or returned a wrong shape.
    pub lua_errors: u64,
}

impl Counters {
    pub fn dropped(&self) -> u64 {
        self.dropped_drop
            + self.dropped_keep
            + self.dropped_time_window
            + self.dropped_non_finite
            + self.dropped_lua
            + self.dropped_lua_error
            + self.dropped_unwritable
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("in", self.lines_in),
            ("out", self.out),
            ("dropped", self.dropped()),
            ("bad_lines", self.bad_lines),
            ("dropped_drop", self.dropped_drop),
            ("dropped_keep", self.dropped_keep),
            ("dropped_time_window", self.dropped_time_window),
            ("dropped_non_finite", self.dropped_non_finite),
            ("dropped_lua", self.dropped_lua),
            ("dropped_lua_error", self.dropped_lua_error),
            ("dropped_unwritable", self.dropped_unwritable),
            ("renamed", self.renamed),
            ("rename_errors", self.rename_errors),
            ("lua_errors", self.lua_errors),
        ]
    }
}

/// Where a field's current text lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    /// Absent (a host only).
    None,
    /// The input line.
    Line,
    /// One of the two scratch buffers.
    Buf(usize),
}

fn text<'a>(src: Src, line: &'a [u8], bufs: &'a [Vec<u8>; 2]) -> &'a [u8] {
    match src {
        Src::None => b"",
        Src::Line => line,
        Src::Buf(i) => &bufs[i & 1],
    }
}

/// Writes a new text derived from the current one into the free buffer; returns where it
/// went, or `None` (nothing changed) when `f` returns false.
fn rewrite(
    src: Src,
    line: &[u8],
    bufs: &mut [Vec<u8>; 2],
    f: impl FnOnce(&[u8], &mut Vec<u8>) -> bool,
) -> Option<Src> {
    let [b0, b1] = bufs;
    let (from, to, dest): (&[u8], &mut Vec<u8>, usize) = match src {
        Src::None => (&[], b0, 0),
        Src::Line => (line, b0, 0),
        Src::Buf(0) => (b0.as_slice(), b1, 1),
        Src::Buf(_) => (b1.as_slice(), b0, 0),
    };
    to.clear();
    f(from, to).then_some(Src::Buf(dest))
}

fn expand(template: &[Piece], src: &[u8], locs: &CaptureLocations, out: &mut Vec<u8>) {
    for p in template {
        match p {
            Piece::Literal(l) => out.extend_from_slice(l),
            Piece::Group(g) => {
                if let Some((s, e)) = locs.get(*g) {
                    out.extend_from_slice(&src[s..e]);
                }
            }
        }
    }
}

/// The whole seconds of a plain timestamp text (`1795650000` or `1795650000.25`), or `None`
/// for any other form (exponents, signs, more than 15 digits).
fn whole_seconds(b: &[u8]) -> Option<f64> {
    let (int, frac) = match memchr::memchr(b'.', b) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b""[..]),
    };
    if int.is_empty() || int.len() > 15 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for &c in int {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    // Exact: below 10^15 < 2^53.
    Some(n as f64)
}

/// Whether `bound` is absent or greater than `v` (the time window's quick test).
fn none_or_gt(bound: Option<f64>, v: f64) -> bool {
    bound.map_or(true, |b| b > v)
}

/// Whether `bound` is absent or at most `v`.
fn none_or_le(bound: Option<f64>, v: f64) -> bool {
    bound.map_or(true, |b| b <= v)
}

/// [`expand`] for a regex without groups: `$0` is the only group a template can name.
fn expand_whole(template: &[Piece], matched: &[u8], out: &mut Vec<u8>) {
    for p in template {
        match p {
            Piece::Literal(l) => out.extend_from_slice(l),
            Piece::Group(_) => out.extend_from_slice(matched),
        }
    }
}

fn parse_f64(b: &[u8]) -> f64 {
    std::str::from_utf8(b)
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// A line whose value is `nan`, `inf` or out of f64's range: the strict reader refuses it,
/// but the rules (and Lua) may deal with it. `None` unless everything else is a good sample.
fn split_non_finite(line: &[u8]) -> Option<([&[u8]; 4], usize, f64)> {
    std::str::from_utf8(line).ok()?;
    let mut fields: [&[u8]; 4] = [b""; 4];
    let mut n = 0;
    for f in line
        .split(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c'))
        .filter(|f| !f.is_empty())
    {
        if n == 4 {
            return None;
        }
        fields[n] = f;
        n += 1;
    }
    if n < 3 {
        return None;
    }
    let value = parse_f64(fields[1]);
    let ts = parse_f64(fields[2]);
    (!value.is_finite() && ts.is_finite() && ts >= 0.0).then_some((fields, n, value))
}

/// One step of the run: a rule, or a run of name-only drop rules tested together.
#[derive(Debug)]
enum Step {
    Rule(usize),
    /// Drop rules (by index) with a name regex and no host regex, and their regexes as one
    /// set: however many there are, a name is searched once.
    DropNames {
        members: Vec<usize>,
        set: RegexSet,
    },
}

fn name_only_drop(r: &Rule) -> Option<&Pattern> {
    match r {
        Rule::Drop(Cond {
            name: Some(p),
            host: None,
        }) => Some(p),
        _ => None,
    }
}

/// Merges each run of two or more consecutive name-only drop rules into one step (exact:
/// such rules commute, and every one of them counts as `dropped_drop`).
fn steps(rules: &[Rule]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut i = 0;
    while i < rules.len() {
        let mut j = i;
        while j < rules.len() && name_only_drop(&rules[j]).is_some() {
            j += 1;
        }
        let set = (j - i >= 2)
            .then(|| {
                RegexSet::new(
                    rules[i..j]
                        .iter()
                        .filter_map(|r| Some(name_only_drop(r)?.regex.as_str())),
                )
                .ok()
            })
            .flatten();
        match set {
            Some(set) => {
                steps.push(Step::DropNames {
                    members: (i..j).collect(),
                    set,
                });
                i = j;
            }
            None => {
                steps.push(Step::Rule(i));
                i += 1;
            }
        }
    }
    steps
}

/// The rules (and the Lua function) ready to run.
#[derive(Debug)]
pub struct Processor {
    rules: Vec<Rule>,
    /// The rules as run: runs of consecutive name-only drop rules are merged into one step.
    steps: Vec<Step>,
    /// Capture locations of each rename rule, by rule index.
    locs: Vec<Option<CaptureLocations>>,
    lua: Option<LuaProcessor>,
    drop_on_error: bool,
    names: [Vec<u8>; 2],
    hosts: [Vec<u8>; 2],
    pub counters: Counters,
    bad_log: RateLimit,
    lua_log: RateLimit,
}

impl Processor {
    /// `rules` run in order; the Lua function, when given, runs at the `lua` rule or, without
    /// one, after all the rules.
    pub fn new(mut rules: Vec<Rule>, lua: Option<LuaProcessor>, drop_on_error: bool) -> Processor {
        if lua.is_some() && !rules.iter().any(|r| matches!(r, Rule::Lua)) {
            rules.push(Rule::Lua);
        }
        let locs = rules
            .iter()
            .map(|r| match r {
                Rule::Rename { pattern, .. } => Some(pattern.regex.capture_locations()),
                _ => None,
            })
            .collect();
        Processor {
            steps: steps(&rules),
            rules,
            locs,
            lua,
            drop_on_error,
            names: [Vec::with_capacity(256), Vec::with_capacity(256)],
            hosts: [Vec::with_capacity(256), Vec::with_capacity(256)],
            counters: Counters::default(),
            bad_log: RateLimit::default(),
            lua_log: RateLimit::default(),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Counts (and reports, rate-limited) an input line that is not a sample.
    pub fn bad_line(&mut self, input: &str, line_no: u64, why: &str) {
        self.counters.bad_lines += 1;
        if let Some(n) = self.bad_log.allow() {
            log::warn!(
                "{input} line {line_no}: {why} (skipped){}",
                suppressed_note(n)
            );
        }
    }

    /// Runs one input line (without its `\n`) through the rules; appends the resulting sample
    /// line, if any, to `out`. `now` is the wall clock in Unix seconds (for `time_window`).
    pub fn process(&mut self, line: &[u8], input: &str, line_no: u64, now: f64, out: &mut Vec<u8>) {
        let (fields, n, mut value, mut finite) = match split_line(line) {
            Ok(f) => (
                [f.name, f.value, f.timestamp, f.host.unwrap_or_default()],
                if f.host.is_some() { 4 } else { 3 },
                None,
                true,
            ),
            Err(LineError::Empty) => return,
            Err(e @ LineError::Value(_)) => match split_non_finite(line) {
                Some((fields, n, v)) => (fields, n, Some(v), false),
                None => return self.bad_line(input, line_no, &e.to_string()),
            },
            Err(e) => return self.bad_line(input, line_no, &e.to_string()),
        };
        self.counters.lines_in += 1;
        let [line_name, line_value, line_ts, line_host] = fields;
        let mut name = Src::Line;
        let mut host = if n == 4 { Src::Line } else { Src::None };
        // The numbers as text while unchanged, converted when a rule needs them.
        let mut value_text = Some(line_value);
        let mut ts_text = Some(line_ts);
        let mut ts: Option<f64> = None;

        let Processor {
            rules,
            steps,
            locs,
            lua,
            drop_on_error,
            names,
            hosts,
            counters: c,
            lua_log,
            ..
        } = self;
        for step in steps.iter() {
            let i = match step {
                Step::Rule(i) => *i,
                Step::DropNames { members, set } => {
                    let name_now = text(name, line_name, names);
                    // The literal quick tests first: usually none or one regex is left.
                    let mut left = members
                        .iter()
                        .filter_map(|&m| name_only_drop(&rules[m]))
                        .filter(|p| p.may_match(name_now));
                    let dropped = match (left.next(), left.next()) {
                        (None, _) => false,
                        (Some(p), None) => p.regex.is_match(name_now),
                        (Some(_), Some(_)) => set.is_match(name_now),
                    };
                    if dropped {
                        c.dropped_drop += 1;
                        return;
                    }
                    continue;
                }
            };
            let rule = &rules[i];
            match rule {
                Rule::Drop(cond) => {
                    if cond.matches(text(name, line_name, names), text(host, line_host, hosts)) {
                        c.dropped_drop += 1;
                        return;
                    }
                }
                Rule::Keep(cond) => {
                    if !cond.matches(text(name, line_name, names), text(host, line_host, hosts)) {
                        c.dropped_keep += 1;
                        return;
                    }
                }
                Rule::Rename {
                    field,
                    pattern,
                    template,
                } => {
                    let Some(locs) = locs[i].as_mut() else {
                        continue;
                    };
                    let (src, line_field, bufs) = match field {
                        Field::Name => (name, line_name, &mut *names),
                        Field::Host => (host, line_host, &mut *hosts),
                    };
                    if src == Src::None {
                        continue;
                    }
                    let new = rewrite(src, line_field, bufs, |from, to| {
                        if !pattern.may_match(from) {
                            return false;
                        }
                        let end = match pattern.literal_match(from) {
                            Some(None) => return false,
                            Some(Some((start, end))) => {
                                to.extend_from_slice(&from[..start]);
                                expand_whole(template, &from[start..end], to);
                                end
                            }
                            None => {
                                let Some(m) = pattern.regex.captures_read(locs, from) else {
                                    return false;
                                };
                                to.extend_from_slice(&from[..m.start()]);
                                expand(template, from, locs, to);
                                m.end()
                            }
                        };
                        to.extend_from_slice(&from[end..]);
                        true
                    });
                    if let Some(new) = new {
                        match field {
                            Field::Name if text(new, line_name, names).is_empty() => {
                                c.rename_errors += 1;
                            }
                            Field::Name => {
                                name = new;
                                c.renamed += 1;
                            }
                            Field::Host => {
                                let empty = text(new, line_host, hosts).is_empty();
                                host = if empty { Src::None } else { new };
                                c.renamed += 1;
                            }
                        }
                    }
                }
                Rule::TimeWindow { future, past } => {
                    let above = future.map(|f| now + f);
                    let below = past.map(|p| now - p);
                    let outside = match (ts, ts_text.and_then(whole_seconds)) {
                        // Decided from the whole seconds when all of [s, s + 1] is on one side
                        // of both bounds; converting the text is slower than the test.
                        (None, Some(s)) if above.is_some_and(|a| s > a) => Some(true),
                        (None, Some(s)) if below.is_some_and(|b| s + 1.0 < b) => Some(true),
                        (None, Some(s)) if none_or_gt(above, s + 1.0) && none_or_le(below, s) => {
                            Some(false)
                        }
                        _ => None,
                    };
                    let outside = outside.unwrap_or_else(|| {
                        let t = *ts.get_or_insert_with(|| parse_f64(ts_text.unwrap_or_default()));
                        above.is_some_and(|a| t > a) || below.is_some_and(|b| t < b)
                    });
                    if outside {
                        c.dropped_time_window += 1;
                        return;
                    }
                }
                Rule::DropNonFinite => {
                    if !finite {
                        c.dropped_non_finite += 1;
                        return;
                    }
                }
                Rule::Lua => {
                    let Some(lua) = lua.as_ref() else {
                        continue;
                    };
                    let v = *value.get_or_insert_with(|| parse_f64(value_text.unwrap_or_default()));
                    let t = *ts.get_or_insert_with(|| parse_f64(ts_text.unwrap_or_default()));
                    // The result goes to the buffers not holding the current name and host,
                    // which the call reads.
                    let name_dest = usize::from(name == Src::Buf(0));
                    let host_dest = usize::from(host == Src::Buf(0));
                    let [n0, n1] = &mut *names;
                    let [h0, h1] = &mut *hosts;
                    let (name_out, name_keep) = if name_dest == 0 {
                        (n0, &*n1)
                    } else {
                        (n1, &*n0)
                    };
                    let (host_out, host_keep) = if host_dest == 0 {
                        (h0, &*h1)
                    } else {
                        (h1, &*h0)
                    };
                    let name_now = match name {
                        Src::Buf(_) => name_keep.as_slice(),
                        _ => line_name,
                    };
                    let host_now = match host {
                        Src::None => None,
                        Src::Buf(_) => Some(host_keep.as_slice()),
                        Src::Line => Some(line_host),
                    };
                    // Both were checked as UTF-8 (by the line reader or the last Lua call).
                    let name_now = std::str::from_utf8(name_now).unwrap_or_default();
                    let host_now = host_now.map(|h| std::str::from_utf8(h).unwrap_or_default());
                    let verdict = lua.call(host_now, name_now, v, t, name_out, host_out);
                    match verdict {
                        Ok(Verdict::Drop) => {
                            c.dropped_lua += 1;
                            return;
                        }
                        Ok(Verdict::Forward {
                            host: new_host,
                            name: new_name,
                            value: nv,
                            timestamp: nt,
                        }) => {
                            if new_name == Returned::New {
                                name = Src::Buf(name_dest);
                            }
                            host = match new_host {
                                Returned::Same => host,
                                Returned::New => Src::Buf(host_dest),
                                Returned::Absent => Src::None,
                            };
                            // An unchanged number keeps its text: no formatting, and the
                            // exact input form.
                            if nv.to_bits() != v.to_bits() {
                                value = Some(nv);
                                value_text = None;
                                finite = nv.is_finite();
                            }
                            if nt.to_bits() != t.to_bits() {
                                ts = Some(nt);
                                ts_text = None;
                            }
                        }
                        Err(why) => {
                            c.lua_errors += 1;
                            let action = if *drop_on_error {
                                "dropped"
                            } else {
                                "forwarded unchanged"
                            };
                            if let Some(n) = lua_log.allow() {
                                log::warn!(
                                    "{input} line {line_no}: Lua function: {why} (sample {action}){}",
                                    suppressed_note(n)
                                );
                            }
                            if *drop_on_error {
                                c.dropped_lua_error += 1;
                                return;
                            }
                        }
                    }
                }
            }
        }
        if !finite {
            c.dropped_unwritable += 1;
            if let Some(n) = self.bad_log.allow() {
                log::warn!(
                    "{input} line {line_no}: value {} is not finite and cannot be written (dropped; a drop_non_finite rule drops such samples quietly){}",
                    value.unwrap_or(f64::NAN),
                    suppressed_note(n)
                );
            }
            return;
        }
        c.out += 1;
        out.extend_from_slice(text(name, line_name, names));
        out.push(b' ');
        match value_text {
            Some(t) => out.extend_from_slice(t),
            None => push_number(out, value.unwrap_or_default()),
        }
        out.push(b' ');
        match ts_text {
            Some(t) => out.extend_from_slice(t),
            None => push_number(out, ts.unwrap_or_default()),
        }
        if host != Src::None {
            out.push(b' ');
            out.extend_from_slice(text(host, line_host, hosts));
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests;
