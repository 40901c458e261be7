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
