//! The rules on single lines: what comes out for what goes in.

use super::*;
use crate::rules;
use bucky_proto::config::Config;

const NOW: f64 = 1_795_650_000.0;

fn processor(toml: &str, lua: Option<&str>, drop_on_error: bool) -> Processor {
    let cfg = Config::parse_toml(toml, "t.toml").unwrap();
    let rules = rules::from_config(&cfg).unwrap();
    let lua = lua.map(|src| LuaProcessor::from_source(src.as_bytes(), "t.lua").unwrap());
    Processor::new(rules, lua, drop_on_error)
}

fn run(p: &mut Processor, lines: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        p.process(l.as_bytes(), "test", i as u64 + 1, NOW, &mut out);
    }
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn no_rules_pass_everything_through_normalised() {
    let mut p = processor("", None, false);
    let got = run(
        &mut p,
        &[
            "a.b 1 1795650000",
            "c 2.5 1795650000.25 h1",
            "  d\t-0 7  \r",
            "",
            "bad line",
            "e nan 1",
        ],
    );
    assert_eq!(
        got,
        ["a.b 1 1795650000", "c 2.5 1795650000.25 h1", "d -0 7"]
    );
    let c = p.counters;
    assert_eq!((c.lines_in, c.out, c.bad_lines), (4, 3, 1));
    assert_eq!(c.dropped_unwritable, 1, "nan cannot be written");
    assert_eq!(c.lines_in, c.out + c.dropped());
}

#[test]
fn the_seed_readme_timediff() {
    // The original README's `timediff` processor: drop samples more than 2 minutes in the
    // future or more than 5 minutes in the past.
    let mut p = processor(
        "[[processor_rules]]\naction = \"time_window\"\nfuture = 120\npast = 300\n",
        None,
        false,
    );
    let line = |dt: f64| format!("m {dt} {}", NOW + dt);
    let cases = [
        (0.0, true),
        (120.0, true),
        (120.5, false),
        (3600.0, false),
        (-300.0, true),
        (-300.25, false),
        (-86400.0, false),
        (-299.0, true),
    ];
    for (dt, kept) in cases {
        let got = run(&mut p, &[&line(dt)]);
        assert_eq!(got.len(), usize::from(kept), "offset {dt}: {got:?}");
    }
    assert_eq!(p.counters.dropped_time_window, 4);
}

#[test]
fn rules_in_order() {
    let toml = r#"processor_rules = [
        { action = "drop", name = '^debug\.' },
        { action = "drop", host = '^test' },
        { action = "keep", name = '^(servers|apps)\.' },
        { action = "rename", name = '^servers\.([^.]+)\.', to = 'hosts.$1.' },
        { action = "rename", name = '^hosts\.(?P<h>web\d+)\.', to = 'web.${h}.' },
        { action = "rename", field = "host", host = '\.example\.com$', to = '' },
        { action = "drop", name = 'web\.web2\.' },
    ]"#;
    let mut p = processor(toml, None, false);
    let cases: &[(&str, Option<&str>)] = &[
        ("debug.x 1 1", None),
        ("servers.web1.cpu 1 1 test1", None),
        ("other.x 1 1", None),
        ("apps.x 1 1", Some("apps.x 1 1")),
        (
            "servers.db1.cpu 5 2 db1.example.com",
            Some("hosts.db1.cpu 5 2 db1"),
        ),
        ("servers.web1.cpu 5 2", Some("web.web1.cpu 5 2")),
        ("servers.web2.cpu 5 2", None),
        (
            "servers.x.y.z 1.5 3 h.example.com.au",
            Some("hosts.x.y.z 1.5 3 h.example.com.au"),
        ),
        // A host that is only the domain becomes no host at all.
        ("apps.y 1 1 .example.com", Some("apps.y 1 1")),
        // Unicode names go through the byte regexes untouched.
        ("apps.é 1 1 hôst", Some("apps.é 1 1 hôst")),
    ];
    for (input, want) in cases {
        let got = run(&mut p, &[input]);
        assert_eq!(got.first().map(String::as_str), *want, "{input}");
    }
    let c = p.counters;
    assert_eq!(c.dropped_drop, 3);
    assert_eq!(c.dropped_keep, 1);
    assert_eq!(c.lines_in, c.out + c.dropped());
}

#[test]
fn a_rename_to_nothing_keeps_the_name() {
    let mut p = processor(
        r#"processor_rules = [{ action = "rename", name = '^.*$', to = '' }]"#,
        None,
        false,
    );
    assert_eq!(run(&mut p, &["a.b 1 1"]), ["a.b 1 1"]);
    assert_eq!(p.counters.rename_errors, 1);
}

#[test]
fn non_finite_values() {
    let lines = ["a nan 1", "b inf 1 h", "c -inf 1", "d 1e400 1", "e 1 1"];
    let mut p = processor(
        r#"processor_rules = [{ action = "drop_non_finite" }]"#,
        None,
        false,
    );
    assert_eq!(run(&mut p, &lines), ["e 1 1"]);
    assert_eq!(p.counters.dropped_non_finite, 4);
    assert_eq!(p.counters.bad_lines, 0);
    // Without the rule they cannot be written either: dropped, counted apart and logged.
    let mut p = processor("", None, false);
    assert_eq!(run(&mut p, &lines), ["e 1 1"]);
    assert_eq!(p.counters.dropped_unwritable, 4);
    // A bad timestamp or field count still makes a bad line.
    let mut p = processor("", None, false);
    assert!(run(&mut p, &["a nan x", "a nan", "a nan 1 h x"]).is_empty());
    assert_eq!(p.counters.bad_lines, 3);
}

const LUA_DOUBLE: &str = "return function(host, name, value, time)\n\
    if name:find('^skip') then return end\n\
    return host, 'lua.' .. name, value * 2, time\n\
    end";

#[test]
fn lua_runs_after_the_rules() {
    let toml = r#"processor_rules = [{ action = "rename", name = '^x', to = 'y' }]"#;
    let mut p = processor(toml, Some(LUA_DOUBLE), false);
    assert_eq!(
        run(&mut p, &["x.a 1.5 1795650000.5 h", "skip.me 1 1", "z 3 4"]),
        ["lua.y.a 3 1795650000.5 h", "lua.z 6 4"]
    );
    assert_eq!(p.counters.dropped_lua, 1);
    assert_eq!(p.counters.renamed, 1);
}

#[test]
fn lua_where_the_rule_puts_it() {
    let toml = r#"processor_rules = [
        { action = "lua" },
        { action = "rename", name = '^lua\.', to = 'after.' },
        { action = "drop_non_finite" },
    ]"#;
    let lua = "return function(h, n, v, t) return h, 'lua.' .. n, v / 0, t end";
    let mut p = processor(toml, Some(lua), false);
    assert!(
        run(&mut p, &["a 0 1", "b 0 1"]).is_empty(),
        "0/0 is nan: dropped"
    );
    let lua = "return function(h, n, v, t) return h, 'lua.' .. n, v, t end";
    let mut p = processor(toml, Some(lua), false);
    assert_eq!(run(&mut p, &["a 0 1"]), ["after.a 0 1"]);
}

#[test]
fn lua_sees_non_finite_values_and_may_fix_them() {
    let lua = "return function(h, n, v, t)\n\
        if v ~= v or v == math.huge or v == -math.huge then v = 0 end\n\
        return h, n, v, t end";
    let mut p = processor("", Some(lua), false);
    assert_eq!(run(&mut p, &["a nan 1", "b -inf 2"]), ["a 0 1", "b 0 2"]);
}

#[test]
fn lua_errors_forward_the_original_unless_drop_on_error() {
    let lua = "return function(h, n, v, t)\n\
        if n == 'boom' then error('kaput') end\n\
        if n == 'shape' then return n end\n\
        return h, n .. '.ok', v, t end";
    let lines = ["boom 1 1 h", "shape 2 2", "fine 3 3"];
    let mut p = processor("", Some(lua), false);
    assert_eq!(
        run(&mut p, &lines),
        ["boom 1 1 h", "shape 2 2", "fine.ok 3 3"]
    );
    assert_eq!(p.counters.lua_errors, 2);
    let mut p = processor("", Some(lua), true);
    assert_eq!(run(&mut p, &lines), ["fine.ok 3 3"]);
    assert_eq!(p.counters.lua_errors, 2);
    assert_eq!(p.counters.dropped_lua_error, 2);
}

#[test]
fn lua_can_remove_or_add_the_host_and_chain_with_renames() {
    let lua = "return function(h, n, v, t)\n\
        if h then return nil, n, v, t end\n\
        return 'added', n, v, t end";
    let toml = r#"processor_rules = [
        { action = "rename", name = 'a', to = 'b' },
        { action = "lua" },
        { action = "rename", name = 'b', to = 'c' },
        { action = "rename", field = "host", host = 'added', to = 'h2' },
        { action = "rename", name = 'c', to = 'd' },
    ]"#;
    let mut p = processor(toml, Some(lua), false);
    assert_eq!(run(&mut p, &["a 1 1 h", "a 2 2"]), ["d 1 1", "d 2 2 h2"]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// The whole seconds of a timestamp text are those the standard parser finds.
    #[test]
    fn whole_seconds_of_any_text(text in "[0-9]{0,30}(\\.[0-9]{0,3})?|[0-9:/.a -]{0,12}") {
        let want = match text.split_once('.') {
            Some((i, f)) if !i.is_empty() && i.len() <= 15 && f.bytes().all(|c| c.is_ascii_digit()) => {
                i.parse::<u64>().ok().map(|n| n as f64)
            }
            None if !text.is_empty() && text.len() <= 15 => text.parse::<u64>().ok().map(|n| n as f64),
            _ => None,
        };
        proptest::prop_assert_eq!(whole_seconds(text.as_bytes()), want, "{:?}", text);
    }

    /// The window's quick test on whole seconds agrees with converting the timestamp.
    #[test]
    fn time_window_quick_test_is_exact(
        offset in -400i64..400,
        frac in proptest::option::of("[0-9]{1,20}"),
        f in 0u32..300,
        p in 0u32..600,
        which in 0u8..3,
        now_frac in 0u32..4,
    ) {
        let future = (which != 2).then_some(f);
        let past = (which != 1).then_some(p);
        let now = NOW + f64::from(now_frac) / 4.0;
        let ts = match &frac {
            Some(f) => format!("{}.{f}", NOW as i64 + offset),
            None => format!("{}", NOW as i64 + offset),
        };
        let mut rule = String::from("processor_rules = [{ action = \"time_window\"");
        if let Some(f) = future {
            rule.push_str(&format!(", future = {f}"));
        }
        if let Some(p) = past {
            rule.push_str(&format!(", past = {p}"));
        }
        rule.push_str(" }]");
        let mut p = processor(&rule, None, false);
        let mut out = Vec::new();
        p.process(format!("m 1 {ts}").as_bytes(), "t", 1, now, &mut out);
        let t: f64 = ts.parse().unwrap();
        let outside = future.is_some_and(|f| t > now + f64::from(f))
            || past.is_some_and(|p| t < now - f64::from(p));
        proptest::prop_assert_eq!(out.is_empty(), outside, "{} now {}", ts, now);
    }
}

#[test]
fn consecutive_name_drops_run_as_one_set() {
    let toml = r#"processor_rules = [
        { action = "drop", name = '^a\.' },
        { action = "drop", name = 'secret' },
        { action = "drop", name = '\.tmp$' },
        { action = "drop", host = 'test' },
        { action = "drop", name = '^b\.' },
        { action = "rename", name = '^c', to = 'd' },
        { action = "drop", name = '^d\.x' },
        { action = "drop", name = '(?i)^D\.Y' },
    ]"#;
    let mut p = processor(toml, None, false);
    let shape: Vec<String> = p
        .steps
        .iter()
        .map(|s| match s {
            Step::Rule(i) => format!("{i}"),
            Step::DropNames { members, .. } => format!("{members:?}"),
        })
        .collect();
    assert_eq!(shape, ["[0, 1, 2]", "3", "4", "5", "[6, 7]"]);
    let cases: &[(&str, bool)] = &[
        ("a.b 1 1", false),
        ("x.secret.y 1 1", false),
        ("x.y.tmp 1 1", false),
        ("x.y 1 1 test1", false),
        ("b.c 1 1", false),
        ("c.x 1 1", false), // renamed to d.x, then dropped
        ("c.y 1 1", false), // renamed to d.y, dropped by the case-insensitive regex
        ("c.z 1 1", true),
        ("x.a.tmpx 1 1", true),
        ("x.b.c 1 1 prod", true),
    ];
    for (line, kept) in cases {
        let got = run(&mut p, &[line]);
        assert_eq!(!got.is_empty(), *kept, "{line}: {got:?}");
    }
    assert_eq!(p.counters.dropped_drop, 7);
}

/// Rules for the memo's equivalence test: every kind, some that only a regex decides, some
/// that a literal does, renames to an empty name or host and to the same text.
const MEMO_RULES: &[&str] = &[
    r#"{ action = "drop", name = '^a\.x' }"#,
    r#"{ action = "drop", name = 'tmp' }"#,
    r#"{ action = "drop", host = '^cache' }"#,
    r#"{ action = "keep", name = '^(a|b|c|h|x)' }"#,
    r#"{ action = "keep", host = 'o' }"#,
    r#"{ action = "rename", name = '^a\.(\w+)\.', to = 'b.$1.' }"#,
    r#"{ action = "rename", name = '^b', to = 'c' }"#,
    r#"{ action = "rename", name = '^c\.y$', to = '' }"#,
    r#"{ action = "rename", field = "host", host = '\.example\.com$', to = '' }"#,
    r#"{ action = "rename", field = "host", host = '^(\w+)$', to = '' }"#,
    r#"{ action = "rename", field = "host", host = 'web', to = 'web' }"#,
    r#"{ action = "rename", field = "host", host = '^db(\d)', to = 'x$1' }"#,
    r#"{ action = "drop", name = 'z$', host = 'db' }"#,
    r#"{ action = "rename", name = '(?P<all>^h.*)', to = 'x.${all}' }"#,
    r#"{ action = "time_window", future = 60, past = 120 }"#,
    r#"{ action = "drop_non_finite" }"#,
    r#"{ action = "lua" }"#,
];

const MEMO_LUA: &str = "return function(h, n, v, t)\n\
    if n:find('lua_drop') then return end\n\
    if h == 'db1' then return nil, n .. '.l', v, t end\n\
    if not h and n:find('^c') then return 'added.example.com', n, v, t end\n\
    return h, n, v, t end";

const MEMO_NAMES: &[&str] = &[
    "a.x.1",
    "a.y.tmp",
    "a.w.q",
    "b.z",
    "c.y",
    "h.q",
    "lua_drop.a",
    "d.e.z",
    "x.é",
];
const MEMO_HOSTS: &[Option<&str>] = &[
    None,
    Some("web1.example.com"),
    Some("db1"),
    Some("db2.example.com"),
    Some("cache2.example.com"),
    Some("h.example.com.au"),
    Some(".example.com"),
    Some("dbz"),
];
const MEMO_VALUES: &[&str] = &["1", "2.5", "nan", "-inf", "-0"];
const MEMO_OFFSETS: &[f64] = &[0.0, -100.0, -200.5, 100.0, 30.25];

/// A processor of `rules` (indices into MEMO_RULES) remembering up to `series` series.
fn memo_processor(rules: &[usize], series: usize) -> Processor {
    let list: Vec<&str> = rules.iter().map(|&i| MEMO_RULES[i]).collect();
    let toml = format!("processor_rules = [{}]", list.join(", "));
    let rules = rules::from_config(&Config::parse_toml(&toml, "t.toml").unwrap()).unwrap();
    let lua = rules
        .iter()
        .any(|r| matches!(r, Rule::Lua))
        .then(|| LuaProcessor::from_source(MEMO_LUA.as_bytes(), "t.lua").unwrap());
    Processor::with_memo(rules, lua, false, series)
}

fn memo_line((name, host, value, offset, tabs): (usize, usize, usize, usize, bool)) -> String {
    let sep = if tabs { "\t" } else { " " };
    let mut line = format!(
        "{}{sep}{}{sep}{}",
        MEMO_NAMES[name],
        MEMO_VALUES[value],
        NOW + MEMO_OFFSETS[offset]
    );
    if let Some(h) = MEMO_HOSTS[host] {
        line.push_str(sep);
        line.push_str(h);
    }
    line
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

    /// The memo changes nothing that can be seen: the same stream through the same rules
    /// gives the same bytes and the same counters with a memo, with a memo that fills up all
    /// the time, and without one.
    #[test]
    fn the_memo_changes_nothing(
        rules in proptest::collection::vec(0..MEMO_RULES.len(), 0..9),
        lines in proptest::collection::vec(
            (
                0..MEMO_NAMES.len(),
                0..MEMO_HOSTS.len(),
                0..MEMO_VALUES.len(),
                0..MEMO_OFFSETS.len(),
                proptest::bool::weighted(0.1),
            ),
            0..120,
        ),
    ) {
        // Three times over: series that come back in the order last seen are predicted.
        let lines: Vec<String> = lines.iter().map(|&l| memo_line(l)).collect();
        let lines = [&lines[..], &lines[..], &lines[..]].concat();
        let mut outs = Vec::new();
        for series in [0, memo::DEFAULT_CAPACITY, 3] {
            let mut p = memo_processor(&rules, series);
            let mut out = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                p.process(l.as_bytes(), "test", i as u64 + 1, NOW, &mut out);
            }
            outs.push((String::from_utf8(out).unwrap(), p.counters));
        }
        proptest::prop_assert_eq!(&outs[0], &outs[1]);
        proptest::prop_assert_eq!(&outs[0], &outs[2]);
    }
}

#[test]
fn the_memo_remembers_runs_of_name_and_host_rules() {
    // Runs: [0, 1] (regexes), [3] (a literal: not worth a lookup), [5, 6] (a regex).
    let rules = [5, 1, 14, 8, 16, 6, 9];
    let mut p = memo_processor(&rules, memo::DEFAULT_CAPACITY);
    assert_eq!(
        p.memo_at,
        [Some((0, 2)), None, None, None, None, Some((1, 7)), None]
    );
    let lines = [
        "a.w.q 1 1795650000 web1.example.com",
        "a.w.q 2 1795650000 web1.example.com",
        "a.w.q 3 1795650000",
        "a.y.tmp 1 1795650000",
        "a.y.tmp 1 1795650000",
    ];
    let got = run(&mut p, &lines);
    assert_eq!(
        got,
        [
            "c.w.q 1 1795650000",
            "c.w.q 2 1795650000",
            "c.w.q 3 1795650000"
        ]
    );
    // Series seen per run: 3 in the first, 2 in the second.
    assert_eq!(p.memo.len(), 5);
    let c = p.counters;
    assert_eq!(
        (c.renamed, c.dropped_drop, c.out),
        (4 + 4 + 2 + 1 + 1, 2, 3)
    );
    // Without a memo, the same.
    let mut q = memo_processor(&rules, 0);
    assert_eq!(q.memo_at, [None; 7]);
    assert_eq!(run(&mut q, &lines), got);
    assert_eq!(q.counters, c);
}

#[test]
fn long_names_and_hosts_run_the_rules_unremembered() {
    let mut p = memo_processor(&[5, 8], memo::DEFAULT_CAPACITY);
    let long = format!("a.{}.q", "n".repeat(memo::MAX_FIELD));
    let host = format!("{}.example.com", "h".repeat(memo::MAX_FIELD));
    let lines = [
        format!("{long} 1 1795650000"),
        format!("a.n.q 1 1795650000 {host}"),
        format!("{long} 1 1795650000"),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let got = run(&mut p, &lines);
    assert_eq!(
        got[0],
        format!("b.{}.q 1 1795650000", "n".repeat(memo::MAX_FIELD))
    );
    assert_eq!(
        got[1],
        format!("b.n.q 1 1795650000 {}", "h".repeat(memo::MAX_FIELD))
    );
    assert_eq!(got[2], got[0]);
    assert_eq!(p.memo.len(), 0);
    assert_eq!(p.counters.renamed, 4);
}

#[test]
fn unchanged_fields_are_copied_as_they_came() {
    let mut p = memo_processor(&[8], memo::DEFAULT_CAPACITY);
    let got = run(
        &mut p,
        &[
            "a 1 2 h.example.com",
            "a 1 2 h",
            "a\t1 2 h",
            "a 1\t2 h.example.com",
            "a 1 2\th",
            " a 1 2 h",
            "a 1 2",
            "a 1 2 ",
            "a 1 2\r",
            "a 1.50 2.250 h  ",
        ],
    );
    assert_eq!(
        got,
        [
            "a 1 2 h",
            "a 1 2 h",
            "a 1 2 h",
            "a 1 2 h",
            "a 1 2 h",
            "a 1 2 h",
            "a 1 2",
            "a 1 2",
            "a 1 2",
            "a 1.50 2.250 h"
        ]
    );
}
