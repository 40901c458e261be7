use super::*;
use proptest::prelude::*;
use std::io::Write;

/// The example config of the original README (bucky 2.2.1 PKG-INFO), dedented, unchanged.
const SEED: &str = include_str!("../../../tests/fixtures/seed-readme-config.py");

fn seed_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/seed-readme-config.py")
}

fn py(text: &str) -> Config {
    Config::parse_python(text, "/etc/bucky.conf").unwrap_or_else(|e| panic!("{e}"))
}

fn py_err(text: &str) -> String {
    match Config::parse_python(text, "/etc/bucky.conf") {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn seed_readme_config_loads_unchanged() {
    let cfg = Config::parse_python(SEED, "seed-readme-config.py").unwrap();
    assert_eq!(cfg.keys().len(), 40);
    assert_eq!(cfg.unknown_keys(), Vec::<&str>::new());
    assert_eq!(cfg.get::<bool>("debug").unwrap(), Some(false));
    assert_eq!(cfg.line_of("debug"), Some(2));
    assert_eq!(
        cfg.get::<String>("log_level").unwrap().as_deref(),
        Some("INFO")
    );
    assert_eq!(cfg.get::<u16>("statsd_port").unwrap(), Some(8125));
    assert_eq!(cfg.get::<u16>("metricsd_port").unwrap(), Some(23632));
    assert_eq!(cfg.get::<u16>("collectd_port").unwrap(), Some(25826));
    assert_eq!(cfg.get::<i64>("graphite_max_reconnects").unwrap(), Some(3));
    assert_eq!(
        cfg.get::<f64>("graphite_reconnect_delay").unwrap(),
        Some(5.0)
    );
    assert_eq!(
        cfg.get::<f64>("graphite_backoff_factor").unwrap(),
        Some(1.5)
    );
    assert_eq!(
        cfg.get::<f64>("metricsd_default_interval").unwrap(),
        Some(10.0)
    );
    assert_eq!(
        cfg.get::<usize>("graphite_pickle_buffer_size").unwrap(),
        Some(500)
    );
    assert_eq!(
        cfg.get::<String>("name_replace_char").unwrap().as_deref(),
        Some("_")
    );
    assert_eq!(
        cfg.get::<String>("statsd_ip").unwrap().as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(cfg.raw("collectd_converters"), Some(&Value::Dict(vec![])));
    let conv: BTreeMap<String, String> =
        cfg.get_or("collectd_converters", BTreeMap::new()).unwrap();
    assert!(conv.is_empty());
    // `processor = None` is the same as no processor.
    assert_eq!(cfg.get::<Value>("processor").unwrap(), None);
    assert_eq!(cfg.raw("processor"), Some(&Value::None));
    assert_eq!(cfg.get_nullable::<String>("processor").unwrap(), Some(None));
    assert_eq!(cfg.get::<String>("name_prefix").unwrap(), None);
    assert_eq!(cfg.raw("metricsd_handlers"), Some(&Value::List(vec![])));
    let handlers: Vec<(String, f64, Option<i64>)> =
        cfg.get_or("metricsd_handlers", Vec::new()).unwrap();
    assert!(handlers.is_empty());
    assert_eq!(
        cfg.get::<Vec<String>>("collectd_types").unwrap(),
        Some(vec![])
    );
    assert_eq!(
        cfg.get::<Vec<String>>("name_host_trim").unwrap(),
        Some(vec![])
    );
    assert_eq!(
        cfg.get::<bool>("processor_drop_on_error").unwrap(),
        Some(false)
    );
    assert_eq!(cfg.get::<String>("collectd_auth_file").unwrap(), None);
}

#[test]
fn seed_readme_config_loads_from_disk_by_any_name() {
    let cfg = Config::load(&seed_path()).unwrap();
    assert_eq!(cfg.path(), Some(seed_path().as_path()));
    assert_eq!(cfg.get::<u16>("statsd_port").unwrap(), Some(8125));

    // Under the original's usual name (no extension): Python is tried first.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bucky.conf");
    std::fs::write(&conf, SEED).unwrap();
    let cfg = Config::load(&conf).unwrap();
    assert_eq!(cfg.get::<i64>("graphite_max_reconnects").unwrap(), Some(3));
    assert_eq!(cfg.origin(), conf.display().to_string());
}

#[test]
fn seed_readme_config_matches_python() {
    // What Python itself makes of the fixture, written out by hand: the two must agree.
    let cfg = Config::parse_python(SEED, "seed").unwrap();
    let expected: &[(&str, Value)] = &[
        ("full_trace", Value::Bool(false)),
        ("metricsd_ip", Value::Str("127.0.0.1".into())),
        ("metricsd_enabled", Value::Bool(true)),
        ("collectd_use_entry_points", Value::Bool(true)),
        ("collectd_security_level", Value::Int(0)),
        ("statsd_flush_time", Value::Float(10.0)),
        ("statsd_legacy_namespace", Value::Bool(true)),
        ("statsd_global_prefix", Value::Str("stats".into())),
        ("statsd_prefix_counter", Value::Str("counters".into())),
        ("statsd_prefix_timer", Value::Str("timers".into())),
        ("statsd_prefix_gauge", Value::Str("gauges".into())),
        ("graphite_port", Value::Int(2003)),
        ("graphite_backoff_max", Value::Int(60)),
        ("graphite_pickle_enabled", Value::Bool(false)),
        ("name_postfix", Value::None),
        ("name_strip_duplicates", Value::Bool(true)),
    ];
    for (k, v) in expected {
        assert_eq!(cfg.raw(k), Some(v), "{k}");
    }
}

#[test]
fn refusal_messages_name_file_line_and_alternative() {
    assert_eq!(
        py_err("debug = True\n\nimport time\n"),
        "/etc/bucky.conf: line 3: 'import time' is not supported: a bucky config may only \
         assign literals (numbers, strings, True/False/None, lists, tuples, dicts)"
    );
    assert_eq!(
        py_err("processor = timediff\n"),
        "/etc/bucky.conf: line 1: 'timediff' is not a literal: Python functions cannot run in \
         bucky: use processor rules (processor_rules) or a Lua processor (processor_lua) instead"
    );
    let cases: &[(&str, &str)] = &[
        ("from time import time\n", "line 1: 'from time import time' is not supported: a bucky"),
        ("\ndef f(h, n, v, t):\n  return None\n", "line 2: 'def f(h, n, v, t):' is not supported: Python functions cannot run in bucky: use processor rules (processor_rules)"),
        ("class Client:\n  pass\n", "line 1: 'class Client:' is not supported: Python classes cannot run in bucky"),
        ("processor = lambda h, n, v, t: (h, n, v, t)\n", "line 1: 'lambda h, n, v, t: (h, n, v, t)' is not supported: Python functions cannot run in bucky: use processor rules"),
        ("collectd_converters = {'cpu': cpu_conv}\n", "line 1: 'cpu_conv' is not a literal: Python functions cannot run in bucky: use name templates or Lua functions in collectd_converters instead"),
        ("x = load()\n", "line 1: 'load()' is not a literal: a bucky config may only assign literals"),
        ("graphite_port = statsd_port\n", "line 1: 'statsd_port' is not a literal: a bucky config may only assign literals"),
        ("x = os.path\n", "line 1: 'os.path' is not a literal: a bucky config may only"),
        ("statsd_port = 8000 + 125\n", "line 1: '8000 + 125' is not a literal: a bucky config may only"),
        ("x = 1\nx += 1\n", "line 2: 'x += 1' is not supported: write the final value with '=' instead; a bucky config may only assign literals"),
    ];
    for (src, want) in cases {
        let got = py_err(src);
        assert!(got.starts_with("/etc/bucky.conf: "), "{got}");
        assert!(got.contains(want), "{src:?}:\n got {got}\nwant {want}");
    }
}

#[test]
fn later_assignment_wins() {
    let cfg = py("statsd_port = 1\nstatsd_port = 2\n");
    assert_eq!(cfg.get::<i64>("statsd_port").unwrap(), Some(2));
    assert_eq!(cfg.line_of("statsd_port"), Some(2));
    assert_eq!(cfg.keys(), ["statsd_port"]);
}

const TOML_EQUIVALENT: &str = r#"
debug = false
log_level = "INFO"
statsd_port = 8125
statsd_flush_time = 10.0
graphite_max_reconnects = 3
name_replace_char = '_'
name_host_trim = ["example.com", "example.org"]
metricsd_handlers = [["^foo", 10.0], ["^bar", 60, 2]]
statsd_percentile_thresholds = [90, 99.9]

[collectd_converters]
cpu = "cpu.{type_instance}"
"#;

const PYTHON_EQUIVALENT: &str = r#"
debug = False
log_level = "INFO"
statsd_port = 8125
statsd_flush_time = 10.0
graphite_max_reconnects = 3
name_replace_char = '_'
name_host_trim = ["example.com", "example.org"]
metricsd_handlers = [["^foo", 10.0], ["^bar", 60, 2]]
statsd_percentile_thresholds = [90, 99.9]
collectd_converters = {"cpu": "cpu.{type_instance}"}
"#;

#[test]
fn toml_and_python_give_the_same_values() {
    let t = Config::parse_toml(TOML_EQUIVALENT, "bucky.toml").unwrap();
    let p = Config::parse_python(PYTHON_EQUIVALENT, "bucky.conf").unwrap();
    let mut tk = t.keys();
    let mut pk = p.keys();
    tk.sort_unstable();
    pk.sort_unstable();
    assert_eq!(tk, pk);
    for k in tk {
        assert_eq!(t.raw(k), p.raw(k), "{k}");
    }
    assert_eq!(t.line_of("statsd_port"), Some(4));
    assert_eq!(t.line_of("collectd_converters"), Some(12));
    let h: Vec<Value> = t.get_or("metricsd_handlers", Vec::new()).unwrap();
    assert_eq!(h.len(), 2);
    let first: (String, f64) = FromValue::from_value(&h[0]).unwrap();
    assert_eq!(first, ("^foo".to_string(), 10.0));
    let second: (String, f64, Option<i64>) = FromValue::from_value(&h[1]).unwrap();
    assert_eq!(second, ("^bar".to_string(), 60.0, Some(2)));
    let conv: BTreeMap<String, String> = t.get_or("collectd_converters", BTreeMap::new()).unwrap();
    assert_eq!(
        conv.get("cpu").map(String::as_str),
        Some("cpu.{type_instance}")
    );
    assert_eq!(t.unknown_keys(), Vec::<&str>::new());
}

#[test]
fn toml_errors_name_file_and_line() {
    let e = Config::parse_toml("a = 1\nstart = 1979-05-27T07:32:00Z\n", "b.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "b.toml: line 2: key 'start': TOML dates and times are not supported: use a string or a \
         number"
    );
    let e = Config::parse_toml("[a]\nb = [1, 1979-05-27]\n", "b.toml").unwrap_err();
    assert!(e.to_string().contains("key 'a.b[1]': TOML dates"), "{e}");
    let e = Config::parse_toml("a = 1\nb = \n", "b.toml").unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(e.to_string().starts_with("b.toml: line 2: "), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    let e = Config::parse_toml("a = 1\na = 2\n", "b.toml").unwrap_err();
    assert!(e.to_string().starts_with("b.toml: line 2: "), "{e}");
}

fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(text).unwrap();
    p
}

#[test]
fn format_follows_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // TOML in a .toml file; the same text as .py is refused (`true` is not Python).
    let toml_text = b"debug = true\nstatsd_port = 8126\n";
    let cfg = Config::load(&write(d, "a.toml", toml_text)).unwrap();
    assert_eq!(cfg.get::<bool>("debug").unwrap(), Some(true));
    let e = Config::load(&write(d, "a.py", toml_text))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a.py: line 1: 'true' is not a literal: Python spells it True"),
        "{e}"
    );
    // No known extension: Python fails, TOML succeeds.
    let cfg = Config::load(&write(d, "a.conf", toml_text)).unwrap();
    assert_eq!(cfg.get::<u16>("statsd_port").unwrap(), Some(8126));
    let cfg = Config::load(&write(d, "bucky", b"[collectd_converters]\ncpu = 'x'\n")).unwrap();
    assert!(cfg.raw("collectd_converters").is_some());
    // Python in a .toml file is a TOML error.
    let e = Config::load(&write(d, "b.toml", b"debug = True\n")).unwrap_err();
    assert!(e.to_string().contains("b.toml: line 1: "), "{e}");
    // Neither: both readings are reported, in one line.
    let p = write(d, "c.conf", b"debug = False\n\nimport time\n");
    let e = Config::load(&p).unwrap_err().to_string();
    assert!(e.starts_with(&format!(
        "{}: not a bucky config in either format: ",
        p.display()
    )));
    assert!(
        e.contains(
            "as Python: line 3: 'import time' is not supported: a bucky config may only assign \
             literals"
        ),
        "{e}"
    );
    assert!(e.contains("; as TOML: line 1: "), "{e}");
    assert!(!e.contains('\n'), "{e}");
    // The reading that got further comes first.
    let e = Config::load(&write(d, "d.conf", b"debug = true\n[a]\nb = 1\nc = \n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("either format: as TOML: line 4: "), "{e}");
    assert!(
        e.contains("; as Python: line 1: 'true' is not a literal"),
        "{e}"
    );
}

#[test]
fn load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.conf");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e
        .to_string()
        .starts_with(&format!("{}: cannot read", missing.display())));
    // `-` is a file name like any other here.
    assert!(matches!(
        Config::load(Path::new("-")),
        Err(ConfigError::Read { .. })
    ));
    let p = write(dir.path(), "latin1.conf", b"a = 1\nb = '\xe9'\n");
    let e = Config::load(&p).unwrap_err();
    assert_eq!(e.line(), Some(2));
    assert!(e.to_string().contains("not UTF-8"), "{e}");
    let p = write(dir.path(), "bom.conf", "\u{feff}a = 1\n".as_bytes());
    assert_eq!(Config::load(&p).unwrap().get::<i64>("a").unwrap(), Some(1));
    let empty = Config::load_optional(None).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.path(), None);
    assert_eq!(empty.get::<i64>("statsd_port").unwrap(), None);
    let some = Config::load_optional(Some(&p)).unwrap();
    assert_eq!(some.path(), Some(p.as_path()));
}

#[test]
fn wrong_types_are_errors_naming_file_line_key_and_type() {
    let mut text = "\n".repeat(11);
    text.push_str("statsd_port = \"abc\"\n");
    let cfg = py(&text);
    assert_eq!(
        cfg.get::<i64>("statsd_port").unwrap_err().to_string(),
        "/etc/bucky.conf: line 12: key 'statsd_port': expected an integer, found a string (\"abc\")"
    );
    assert_eq!(
        cfg.get::<u16>("statsd_port").unwrap_err().to_string(),
        "/etc/bucky.conf: line 12: key 'statsd_port': expected an integer from 0 to 65535, found \
         a string (\"abc\")"
    );
    let cfg = py(concat!(
        "a = True\n",
        "b = 70000\n",
        "c = -1\n",
        "d = [1, 'x']\n",
        "e = 1.5\n",
        "f = ('x', 1, 2, 3)\n",
        "g = 'a very long string that goes on and on and on and on and on and on'\n",
        "h = {'k': 1}\n",
    ));
    let msg = |e: ConfigError| e.to_string();
    assert_eq!(
        msg(cfg.get::<i64>("a").unwrap_err()),
        "/etc/bucky.conf: line 1: key 'a': expected an integer, found a boolean (True)"
    );
    assert!(msg(cfg.get::<f64>("a").unwrap_err()).contains("expected a number, found a boolean"));
    assert!(msg(cfg.get::<u16>("b").unwrap_err()).contains(
        "line 2: key 'b': expected an integer from 0 to 65535, found an integer (70000)"
    ));
    assert_eq!(cfg.get::<u32>("b").unwrap(), Some(70000));
    assert!(msg(cfg.get::<u64>("c").unwrap_err())
        .contains("expected a non-negative integer, found an integer (-1)"));
    assert!(msg(cfg.get::<usize>("c").unwrap_err()).contains("non-negative"));
    assert_eq!(cfg.get::<i64>("c").unwrap(), Some(-1));
    assert_eq!(
        msg(cfg.get::<Vec<i64>>("d").unwrap_err()),
        "/etc/bucky.conf: line 4: key 'd': expected a list (each item an integer), found a list \
         [1, \"x\"]"
    );
    assert_eq!(
        cfg.get::<Vec<Value>>("d").unwrap().map(|v| v.len()),
        Some(2)
    );
    assert!(
        msg(cfg.get::<i64>("e").unwrap_err()).contains("expected an integer, found a float (1.5)")
    );
    assert_eq!(cfg.get::<f64>("e").unwrap(), Some(1.5));
    assert!(msg(cfg.get::<bool>("e").unwrap_err()).contains("expected a boolean (True or False)"));
    assert!(msg(cfg.get::<(String, i64)>("f").unwrap_err())
        .contains("expected a pair (a string, an integer), found a tuple (\"x\", 1, 2, 3)"));
    assert!(msg(cfg.get::<(String, i64, Option<i64>)>("f").unwrap_err())
        .contains("expected a triple (a string, an integer, an integer or None)"));
    let long = msg(cfg.get::<i64>("g").unwrap_err());
    assert!(
        long.contains("found a string (\"a very long string that goes on and on and on and..."),
        "{long}"
    );
    assert!(msg(cfg.get::<String>("h").unwrap_err())
        .contains("expected a string, found a dict {\"k\": 1}"));
    assert!(msg(cfg.get::<BTreeMap<String, String>>("h").unwrap_err())
        .contains("expected a dict (string keys, each value a string)"));
    let path: PathBuf = cfg.get("g").unwrap().unwrap();
    assert!(path.to_string_lossy().starts_with("a very long string"));
    // get_or reports the error too instead of falling back to the default.
    assert!(cfg.get_or::<i64>("a", 5).is_err());
}

#[test]
fn none_means_unset_for_typed_getters() {
    let cfg = py("name_replace_char = None\nstatsd_port = None\n");
    assert_eq!(cfg.get::<String>("name_replace_char").unwrap(), None);
    assert_eq!(cfg.get_or("statsd_port", 8125u16).unwrap(), 8125);
    assert_eq!(
        cfg.get_nullable::<String>("name_replace_char").unwrap(),
        Some(None)
    );
    assert_eq!(cfg.get_nullable::<String>("absent").unwrap(), None);
    let cfg = py("name_replace_char = '-'\n");
    assert_eq!(
        cfg.get_nullable::<String>("name_replace_char").unwrap(),
        Some(Some("-".into()))
    );
    let cfg = py("name_replace_char = 5\n");
    assert!(cfg.get_nullable::<String>("name_replace_char").is_err());
    let cfg = py("x = [None, 'a']\n");
    assert_eq!(
        cfg.get::<Vec<Option<String>>>("x").unwrap(),
        Some(vec![None, Some("a".into())])
    );
}

#[test]
fn pick_prefers_flag_then_file_then_default() {
    let cfg = py("statsd_port = 8126\nbad = 'x'\n");
    assert_eq!(
        pick(Some(9000u16), &cfg, "statsd_port", 8125).unwrap(),
        9000
    );
    assert_eq!(pick(None, &cfg, "statsd_port", 8125u16).unwrap(), 8126);
    assert_eq!(pick(None, &cfg, "graphite_port", 2003u16).unwrap(), 2003);
    assert!(pick(None, &cfg, "bad", 1u16).is_err());
    assert_eq!(pick(Some(1u16), &cfg, "bad", 2).unwrap(), 1);
    assert_eq!(
        pick(None, &Config::empty(), "statsd_port", 8125u16).unwrap(),
        8125
    );
}

#[test]
fn unknown_keys_are_reported_in_file_order() {
    let cfg = py(concat!(
        "debug = False\n",
        "zzz_custom = 1\n",
        "statsd_port = 8125\n",
        "\n",
        "\n",
        "\n",
        "statsd_prot = 8126\n",
        "graphite_resend_window = 10\n",
    ));
    assert_eq!(cfg.unknown_keys(), ["zzz_custom", "statsd_prot"]);
    assert_eq!(
        cfg.unknown_key_warnings("bucky-carbon"),
        [
            "bucky-carbon: config /etc/bucky.conf: line 2: unknown key 'zzz_custom' (ignored)",
            "bucky-carbon: config /etc/bucky.conf: line 7: unknown key 'statsd_prot' (ignored) - \
             did you mean 'statsd_port'?",
        ]
    );
    // No logger is installed here; this only has to not fail.
    cfg.warn_unknown("bucky-carbon");
    assert!(Config::empty().unknown_keys().is_empty());
}

#[test]
fn value_display_is_python_like() {
    let cfg = py("x = [None, True, 1, 2.5, 'a', (1,), (), {'k': [1e-7]}]\n");
    assert_eq!(
        cfg.raw("x").unwrap().to_string(),
        "[None, True, 1, 2.5, \"a\", (1,), (), {\"k\": [1e-7]}]"
    );
}

#[test]
fn typo_suggestions_stay_close() {
    assert_eq!(nearest_known("statsd_prot"), Some("statsd_port"));
    assert_eq!(nearest_known("grahpite_ip"), Some("graphite_ip"));
    assert_eq!(nearest_known("my_own_thing"), None);
    assert_eq!(nearest_known("x"), None);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}

fn mutation() -> impl Strategy<Value = (prop::sample::Index, u8, char)> {
    let interesting = prop::sample::select(vec![
        '\'', '"', '(', ')', '[', ']', '{', '}', ',', ':', ';', '\\', '\n', '#', '=', '-', '+',
        '.', 'x', '0', 'e', 'j', '_', ' ', '\t', 'é',
    ]);
    (
        any::<prop::sample::Index>(),
        0u8..3,
        prop_oneof![any::<char>(), interesting],
    )
}

fn mutate(seed: &str, edits: &[(prop::sample::Index, u8, char)]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for (at, op, c) in edits {
        let i = at.index(chars.len() + 1);
        match op {
            0 => chars.insert(i, *c),
            1 if i < chars.len() => {
                chars.remove(i);
            }
            _ if i < chars.len() => chars[i] = *c,
            _ => chars.push(*c),
        }
    }
    chars.into_iter().collect()
}

fn exercise(cfg: &Config) {
    for k in cfg.keys() {
        let _ = cfg.get::<Value>(k);
        let _ = cfg
            .get::<Vec<(String, f64, Option<i64>)>>(k)
            .map_err(|e| e.to_string());
        let _ = cfg.raw(k).map(Value::describe);
    }
    let _ = cfg.unknown_key_warnings("t");
}

proptest! {
    #[test]
    fn mutated_seed_never_panics(edits in prop::collection::vec(mutation(), 1..8)) {
        let text = mutate(SEED, &edits);
        for r in [
            Config::parse_python(&text, "m"),
            Config::parse_toml(&text, "m"),
            Config::parse_auto(&text, "m"),
        ] {
            match r {
                Ok(cfg) => exercise(&cfg),
                Err(e) => {
                    let s = e.to_string();
                    prop_assert!(s.starts_with("m: "), "{}", s);
                    prop_assert!(!s.contains('\n'), "{}", s);
                }
            }
        }
    }

    #[test]
    fn random_text_never_panics(text in any::<String>()) {
        for cfg in [Config::parse_toml(&text, "r"), Config::parse_auto(&text, "r")]
            .into_iter()
            .flatten()
        {
            exercise(&cfg);
        }
    }
}

#[test]
fn deep_nesting_is_refused_by_both_readers() {
    let deep = format!("x = {}", "[".repeat(50_000));
    assert!(Config::parse_python(&deep, "d").is_err());
    assert!(Config::parse_toml(&deep, "d").is_err());
    assert!(Config::parse_auto(&deep, "d").is_err());
}
