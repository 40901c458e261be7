//! The per-line hot path: split the line, run the rules in order, write the sample.
//!
//! Nothing is allocated per line: the fields are slices of the input line; a renamed name or
//! host goes into one of two reusable buffers (each rename reads one and writes the other);
//! numbers are converted only when a rule needs them, and an unchanged value or timestamp is
//! copied out as the text it came in. What each run of name-and-host rules does to a series
//! is remembered ([`memo`]), so a series seen before skips their regexes.

use bucky_proto::log::{suppressed_note, RateLimit};
use bucky_proto::sample::{push_number, split_line, LineError};
use regex::bytes::{CaptureLocations, RegexSet};

use crate::lua::{LuaProcessor, Returned, Verdict};
use crate::rules::{Cond, Field, Pattern, Piece, Rule};

mod memo;

use memo::{Fate, HostOut, Memo, Outcome};

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
    // One pass: a Unix time has 10 digits, the first 8 are read in one go.
    let (mut n, mut i) = match b.first_chunk::<8>().and_then(|h| eight_digits(*h)) {
        Some(n) => (n, 8),
        None => (0, 0),
    };
    // Up to one digit too many (then refused): n stays far below u64::MAX.
    while let Some(&c) = b.get(i).filter(|c| i <= 15 && c.is_ascii_digit()) {
        n = n * 10 + u64::from(c - b'0');
        i += 1;
    }
    if i == 0 || i > 15 {
        return None;
    }
    match b.get(i) {
        None => {}
        Some(b'.') if b[i + 1..].iter().all(u8::is_ascii_digit) => {}
        Some(_) => return None,
    }
    // Exact: below 10^15 < 2^53.
    Some(n as f64)
}

/// The number 8 ASCII digits write, or `None` when one of them is not a digit; SWAR, as in
/// simdjson's `parse_eight_digits_unrolled`.
fn eight_digits(b: [u8; 8]) -> Option<u64> {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let v = u64::from_le_bytes(b);
    // Each byte is 0x30..=0x3F, and adding 6 leaves it below 0x40 (no carries: every byte
    // passed the first test).
    if v & HIGH != ZEROS || v.wrapping_add(0x0606_0606_0606_0606) & HIGH != ZEROS {
        return None;
    }
    let v = v - ZEROS;
    // Pairs of digits, then the pairs into fours, then the whole.
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let mask = 0x0000_00FF_0000_00FF;
    let v = (v & mask)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & mask).wrapping_mul(1 + (10_000 << 32)))
        >> 32;
    Some(v)
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

/// Whether `field` is where the field after the one ending at `end` of `line` would be, one
/// space after it.
#[inline]
fn next_field(line: &[u8], end: usize, field: &[u8]) -> bool {
    line.get(end) == Some(&b' ') && line.as_ptr().wrapping_add(end + 1) == field.as_ptr()
}

/// The end of the timestamp when `line` starts with `name`, `value` and `timestamp` (slices
/// of it) one space apart: then the line up to there is the output's start as it stands.
#[inline]
fn unchanged_head(line: &[u8], name: &[u8], value: &[u8], ts: &[u8]) -> Option<usize> {
    let value_at = name.len();
    let ts_at = value_at + 1 + value.len();
    (name.as_ptr() == line.as_ptr()
        && next_field(line, value_at, value)
        && next_field(line, ts_at, ts))
    .then_some(ts_at + 1 + ts.len())
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

/// Whether a step only reads (and rewrites) the name and the host.
fn is_name_host(step: &Step, rules: &[Rule]) -> bool {
    match step {
        Step::DropNames { .. } => true,
        Step::Rule(i) => matches!(
            rules[*i],
            Rule::Drop(_) | Rule::Keep(_) | Rule::Rename { .. }
        ),
    }
}

/// Whether remembering a run of name-and-host steps beats running them: it does when one of
/// them may need a regex search, or when there are several (one hash lookup against their
/// literal comparisons).
fn worth_remembering(run: &[Step], rules: &[Rule]) -> bool {
    let needs_regex = |p: &Option<Pattern>| p.as_ref().is_some_and(|p| !p.is_literal());
    run.len() >= 4
        || run.iter().any(|s| match s {
            Step::DropNames { .. } => true,
            Step::Rule(i) => match &rules[*i] {
                Rule::Drop(c) | Rule::Keep(c) => needs_regex(&c.name) || needs_regex(&c.host),
                Rule::Rename { pattern, .. } => !pattern.is_literal(),
                _ => false,
            },
        })
}

/// For each step, the memoised run starting there: its number and the step after it.
fn memo_runs(steps: &[Step], rules: &[Rule]) -> Vec<Option<(u32, usize)>> {
    let mut at = vec![None; steps.len()];
    let mut id = 0u32;
    let mut k = 0;
    while k < steps.len() {
        let mut end = k;
        while end < steps.len() && is_name_host(&steps[end], rules) {
            end += 1;
        }
        if end > k && worth_remembering(&steps[k..end], rules) {
            at[k] = Some((id, end));
            id += 1;
        }
        k = end.max(k + 1);
    }
    at
}

/// A sample's name and host as the rules go: where the text of each is now.
#[derive(Debug, Clone, Copy)]
struct NameHost<'l> {
    line_name: &'l [u8],
    line_host: &'l [u8],
    name: Src,
    host: Src,
}

/// The two scratch buffers of the name and of the host.
#[derive(Debug)]
struct Bufs {
    names: [Vec<u8>; 2],
    hosts: [Vec<u8>; 2],
}

impl NameHost<'_> {
    fn name<'a>(&'a self, b: &'a Bufs) -> &'a [u8] {
        text(self.name, self.line_name, &b.names)
    }

    fn host<'a>(&'a self, b: &'a Bufs) -> &'a [u8] {
        text(self.host, self.line_host, &b.hosts)
    }

    /// The host, `None` when the sample has none.
    fn host_opt<'a>(&'a self, b: &'a Bufs) -> Option<&'a [u8]> {
        (self.host != Src::None).then(|| self.host(b))
    }
}

/// Runs one step that reads only the name and host (see [`is_name_host`]); renames are counted
/// here, drops by the caller.
fn name_host_step(
    step: &Step,
    rules: &[Rule],
    locs: &mut [Option<CaptureLocations>],
    nh: &mut NameHost<'_>,
    bufs: &mut Bufs,
    c: &mut Counters,
) -> Fate {
    let i = match step {
        Step::Rule(i) => *i,
        Step::DropNames { members, set } => {
            let name_now = nh.name(bufs);
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
            return if dropped { Fate::Drop } else { Fate::Pass };
        }
    };
    match &rules[i] {
        Rule::Drop(cond) if cond.matches(nh.name(bufs), nh.host(bufs)) => Fate::Drop,
        Rule::Keep(cond) if !cond.matches(nh.name(bufs), nh.host(bufs)) => Fate::Keep,
        Rule::Rename {
            field,
            pattern,
            template,
        } => {
            let Some(locs) = locs[i].as_mut() else {
                return Fate::Pass;
            };
            let (src, line_field, bufs) = match field {
                Field::Name => (nh.name, nh.line_name, &mut bufs.names),
                Field::Host => (nh.host, nh.line_host, &mut bufs.hosts),
            };
            if src == Src::None {
                return Fate::Pass;
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
                let empty = text(new, line_field, bufs).is_empty();
                match field {
                    Field::Name if empty => c.rename_errors += 1,
                    Field::Name => {
                        nh.name = new;
                        c.renamed += 1;
                    }
                    Field::Host => {
                        nh.host = if empty { Src::None } else { new };
                        c.renamed += 1;
                    }
                }
            }
            Fate::Pass
        }
        _ => Fate::Pass,
    }
}

/// Runs `steps` (all of them name-and-host steps) until one drops the sample.
fn name_host_steps(
    steps: &[Step],
    rules: &[Rule],
    locs: &mut [Option<CaptureLocations>],
    nh: &mut NameHost<'_>,
    bufs: &mut Bufs,
    c: &mut Counters,
) -> Fate {
    for step in steps {
        let fate = name_host_step(step, rules, locs, nh, bufs, c);
        if fate != Fate::Pass {
            return fate;
        }
    }
    Fate::Pass
}

/// Puts `new` in the free buffer and returns where it went.
fn replace(src: Src, line: &[u8], bufs: &mut [Vec<u8>; 2], new: &[u8]) -> Src {
    rewrite(src, line, bufs, |_, to| {
        to.extend_from_slice(new);
        true
    })
    .unwrap_or(src)
}

/// Runs memoised run number `run` (`steps`) on the sample: from the memo when it has seen
/// this name and host, else by running the steps (and remembering what they did).
#[allow(clippy::too_many_arguments)]
fn memo_run(
    memo: &mut Memo,
    run: u32,
    steps: &[Step],
    rules: &[Rule],
    locs: &mut [Option<CaptureLocations>],
    nh: &mut NameHost<'_>,
    bufs: &mut Bufs,
    c: &mut Counters,
) -> Fate {
    let name = nh.name(bufs);
    let host = nh.host_opt(bufs);
    if !memo::fits(name) || !host.map_or(true, memo::fits) {
        return name_host_steps(steps, rules, locs, nh, bufs, c);
    }
    let miss = match memo.get(run, name, host) {
        Err(miss) => miss,
        Ok(o) => {
            c.renamed += u64::from(o.renamed);
            c.rename_errors += u64::from(o.rename_errors);
            if o.fate == Fate::Pass {
                if let Some(new) = o.name {
                    nh.name = replace(nh.name, nh.line_name, &mut bufs.names, new);
                }
                match o.host {
                    HostOut::Same => {}
                    HostOut::Absent => nh.host = Src::None,
                    HostOut::New(new) => {
                        nh.host = replace(nh.host, nh.line_host, &mut bufs.hosts, new);
                    }
                }
            }
            return o.fate;
        }
    };
    // The key, copied before the steps overwrite the buffers it may be in.
    let mut key = Vec::with_capacity(name.len() + host.map_or(0, <[u8]>::len));
    key.extend_from_slice(name);
    key.extend_from_slice(host.unwrap_or_default());
    let (name_len, had_host) = (name.len(), host.is_some());
    let (renamed, rename_errors) = (c.renamed, c.rename_errors);
    let fate = name_host_steps(steps, rules, locs, nh, bufs, c);
    let (name_in, host_in) = key.split_at(name_len);
    let host_in = had_host.then_some(host_in);
    let name_out = nh.name(bufs);
    let host_out = nh.host_opt(bufs);
    let out = Outcome {
        fate,
        // At most one per rule.
        renamed: u32::try_from(c.renamed - renamed).unwrap_or(u32::MAX),
        rename_errors: u32::try_from(c.rename_errors - rename_errors).unwrap_or(u32::MAX),
        // Only what can be seen is remembered: the texts, not which buffer holds them.
        name: (fate == Fate::Pass && name_out != name_in).then_some(name_out),
        host: match (host_in, host_out) {
            _ if fate != Fate::Pass => HostOut::Same,
            (_, None) if host_in.is_some() => HostOut::Absent,
            (Some(a), Some(b)) if a != b => HostOut::New(b),
            (None, Some(b)) => HostOut::New(b),
            _ => HostOut::Same,
        },
    };
    memo.insert(miss, run, name_in, host_in, out);
    fate
}

/// The rules (and the Lua function) ready to run.
#[derive(Debug)]
pub struct Processor {
    rules: Vec<Rule>,
    /// The rules as run: runs of consecutive name-only drop rules are merged into one step.
    steps: Vec<Step>,
    /// For each step, the memoised run of name-and-host steps that starts there, if any: its
    /// number in `memo` and the step after it.
    memo_at: Vec<Option<(u32, usize)>>,
    /// For each step, whether it is a name-and-host step ([`is_name_host`]).
    name_host: Vec<bool>,
    memo: Memo,
    /// Capture locations of each rename rule, by rule index.
    locs: Vec<Option<CaptureLocations>>,
    lua: Option<LuaProcessor>,
    drop_on_error: bool,
    bufs: Bufs,
    pub counters: Counters,
    bad_log: RateLimit,
    lua_log: RateLimit,
}

impl Processor {
    /// `rules` run in order; the Lua function, when given, runs at the `lua` rule or, without
    /// one, after all the rules. What the name-and-host rules do to each series is remembered
    /// for up to 100,000 series.
    pub fn new(rules: Vec<Rule>, lua: Option<LuaProcessor>, drop_on_error: bool) -> Processor {
        Processor::with_memo(rules, lua, drop_on_error, memo::DEFAULT_CAPACITY)
    }

    /// [`Processor::new`] remembering up to `series` series (0: none; every sample runs every
    /// rule). The output and the counters are the same whatever `series` is.
    pub fn with_memo(
        mut rules: Vec<Rule>,
        lua: Option<LuaProcessor>,
        drop_on_error: bool,
        series: usize,
    ) -> Processor {
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
        let steps = steps(&rules);
        let memo_at = if series == 0 {
            vec![None; steps.len()]
        } else {
            memo_runs(&steps, &rules)
        };
        Processor {
            memo_at,
            name_host: steps.iter().map(|s| is_name_host(s, &rules)).collect(),
            memo: Memo::new(series),
            steps,
            rules,
            locs,
            lua,
            drop_on_error,
            bufs: Bufs {
                names: [Vec::with_capacity(256), Vec::with_capacity(256)],
                hosts: [Vec::with_capacity(256), Vec::with_capacity(256)],
            },
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
        let mut nh = NameHost {
            line_name,
            line_host,
            name: Src::Line,
            host: if n == 4 { Src::Line } else { Src::None },
        };
        // The numbers as text while unchanged, converted when a rule needs them.
        let mut value_text = Some(line_value);
        let mut ts_text = Some(line_ts);
        let mut ts: Option<f64> = None;

        let Processor {
            rules,
            steps,
            memo_at,
            name_host,
            memo,
            locs,
            lua,
            drop_on_error,
            bufs,
            counters: c,
            lua_log,
            ..
        } = self;
        let mut k = 0;
        while k < steps.len() {
            // The fate of the name-and-host steps run, or the other rule to run.
            let (fate, other) = match memo_at[k] {
                Some((run, end)) => {
                    let fate = memo_run(memo, run, &steps[k..end], rules, locs, &mut nh, bufs, c);
                    k = end;
                    (fate, None)
                }
                None => {
                    let step = &steps[k];
                    k += 1;
                    match step {
                        _ if name_host[k - 1] => {
                            (name_host_step(step, rules, locs, &mut nh, bufs, c), None)
                        }
                        Step::Rule(i) => (Fate::Pass, Some(*i)),
                        Step::DropNames { .. } => (Fate::Pass, None),
                    }
                }
            };
            match fate {
                Fate::Pass => {}
                Fate::Drop => {
                    c.dropped_drop += 1;
                    return;
                }
                Fate::Keep => {
                    c.dropped_keep += 1;
                    return;
                }
            }
            let Some(i) = other else {
                continue;
            };
            match &rules[i] {
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
                    let name_dest = usize::from(nh.name == Src::Buf(0));
                    let host_dest = usize::from(nh.host == Src::Buf(0));
                    let [n0, n1] = &mut bufs.names;
                    let [h0, h1] = &mut bufs.hosts;
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
                    let name_now = match nh.name {
                        Src::Buf(_) => name_keep.as_slice(),
                        _ => nh.line_name,
                    };
                    let host_now = match nh.host {
                        Src::None => None,
                        Src::Buf(_) => Some(host_keep.as_slice()),
                        Src::Line => Some(nh.line_host),
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
                                nh.name = Src::Buf(name_dest);
                            }
                            nh.host = match new_host {
                                Returned::Same => nh.host,
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
                // Run above, as name-and-host steps.
                Rule::Drop(_) | Rule::Keep(_) | Rule::Rename { .. } => {}
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
        // Most lines come out as they came in, or with only a new host: what is unchanged is
        // copied from the line in one go.
        let head = match (nh.name, value_text, ts_text) {
            (Src::Line, Some(v), Some(t)) => unchanged_head(line, line_name, v, t),
            _ => None,
        };
        let host_too = match head {
            Some(end) => {
                let whole = nh.host == Src::Line && next_field(line, end, line_host);
                let end = if whole {
                    end + 1 + line_host.len()
                } else {
                    end
                };
                out.extend_from_slice(&line[..end]);
                whole
            }
            None => {
                out.extend_from_slice(nh.name(bufs));
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
                false
            }
        };
        if nh.host != Src::None && !host_too {
            out.push(b' ');
            out.extend_from_slice(nh.host(bufs));
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests;
