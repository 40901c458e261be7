//! The built-in converters exactly as spec §4.5 (its examples are rows here), name
//! templates, Lua functions, and the priority rules of §4.6.

use super::*;

fn fields<'a>(plugin: &'a str, pi: &'a str, t: &'a str, ti: &'a str, vn: &'a str) -> Fields<'a> {
    Fields {
        host: "web1",
        plugin,
        plugin_instance: pi,
        type_: t,
        type_instance: ti,
        value_name: vn,
        value_kind: DsKind::Gauge,
        value: 1.5,
        time: 1795650000.25,
    }
}

fn name(c: &Converters, f: &Fields<'_>) -> Result<Option<String>, ConvertError> {
    let mut out = String::new();
    Ok(match c.name(f, &mut out)? {
        Named::Name => Some(out),
        Named::Dropped | Named::Empty => None,
    })
}

#[test]
fn builtin_table() {
    let c = Converters::builtin();
    type Row<'a> = (
        (&'a str, &'a str, &'a str, &'a str, &'a str),
        Option<&'a str>,
    );
    let rows: &[Row] = &[
        // The spec's examples.
        (("users", "", "users", "", "value"), Some("users.users")),
        (
            ("swap", "", "swap", "used", "value"),
            Some("swap.swap.used"),
        ),
        (
            ("df", "root", "df_complex", "free", "value"),
            Some("df.root.df_complex.free"),
        ),
        (
            ("load", "", "load", "", "shortterm"),
            Some("load.load.shortterm"),
        ),
        (
            ("test", "squares", "gauge", "", "value"),
            Some("test.squares.gauge"),
        ),
        (
            ("test", "counter-wraps", "counters", "", "a"),
            Some("test.counter-wraps.counters.a"),
        ),
        // cpu: both instances, empty ones give empty components.
        (("cpu", "0", "cpu", "idle", "value"), Some("cpu.0.idle")),
        (("cpu", "", "cpu", "idle", "value"), Some("cpu..idle")),
        // interface: empty components removed.
        (
            ("interface", "en0", "if_octets", "", "rx"),
            Some("interface.en0.if_octets.rx"),
        ),
        (
            ("interface", "", "if_errors", "", "tx"),
            Some("interface.if_errors.tx"),
        ),
        // memory: the type instance only.
        (
            ("memory", "", "memory", "used", "value"),
            Some("memory.used"),
        ),
        // _default: type "value" and value name "value" are left out; plugin_instance is
        // kept when non-empty, even if it strips to nothing.
        (("x", "", "value", "", "value"), Some("x")),
        (("x", " ", "t", "", "value"), Some("x..t")),
        (
            (" x ", " a b ", " t ", " ti ", " vn "),
            Some("x.a b.t.ti.vn"),
        ),
        (("", "", "", "", ""), None),
        (("  ", "", "value", " ", "value"), None),
    ];
    for ((p, pi, t, ti, vn), want) in rows {
        let got = name(&c, &fields(p, pi, t, ti, vn)).unwrap();
        assert_eq!(got.as_deref(), *want, "{p}/{pi}/{t}/{ti}/{vn}");
    }
}

#[test]
fn templates() {
    let cases: &[(&str, &str)] = &[
        ("{plugin}.{plugin_instance}.{type_instance}", "df.root.free"),
        ("{host}.{type}.{value_name}", "web1.df_complex.value"),
        (
            "fs.{plugin_instance}.{type_instance}.bytes",
            "fs.root.free.bytes",
        ),
        ("{plugin}..{type_instance}.", "df.free"),
        ("{plugin}-{type_instance}", "df-free"),
    ];
    for (template, want) in cases {
        let mut c = Converters::builtin();
        c.register(
            "df",
            Converter::Template(Template::parse(template).unwrap()),
            0,
        );
        let got = name(&c, &fields("df", "root", "df_complex", "free", "value")).unwrap();
        assert_eq!(got.as_deref(), Some(*want), "{template}");
    }
    for (bad, msg) in [
        ("{plugin", "'{' without '}'"),
        ("plugin}", "'}' without '{'"),
        ("{nope}", "unknown field {nope}: use host, plugin"),
    ] {
        let e = Template::parse(bad).unwrap_err();
        assert!(e.contains(msg), "{bad}: {e}");
    }
}

#[test]
fn priorities() {
    let mut c = Converters::builtin();
    // A config converter (priority 0) beats a built-in (-1)...
    assert!(c.register(
        "cpu",
        Converter::Template(Template::parse("a.{type_instance}").unwrap()),
        0
    ));
    // ...a tie keeps the first...
    assert!(!c.register("cpu", Converter::Template(Template::parse("b").unwrap()), 0));
    // ...and only a strictly higher priority replaces it.
    assert!(c.register(
        "cpu",
        Converter::Template(Template::parse("c.{type_instance}").unwrap()),
        5
    ));
    assert!(!c.register("cpu", Converter::Default, -1));
    assert_eq!(
        name(&c, &fields("cpu", "0", "cpu", "idle", "value"))
            .unwrap()
            .as_deref(),
        Some("c.idle")
    );
    // _default can be replaced too, and catches every plugin without its own.
    assert!(c.register(
        "_default",
        Converter::Template(Template::parse("other.{plugin}").unwrap()),
        0
    ));
    assert_eq!(
        name(&c, &fields("nginx", "", "connections", "", "value"))
            .unwrap()
            .as_deref(),
        Some("other.nginx")
    );
    assert_eq!(
        name(&c, &fields("memory", "", "memory", "free", "value"))
            .unwrap()
            .as_deref(),
        Some("memory.free")
    );
}

const SCRIPT: &str = r#"
function upper(s)
  return {s.plugin:upper(), s.type_instance, s.value_name}
end
function as_string(s) return "str." .. s.host .. "." .. s.value_type .. "." .. s.value end
function drop(s) return nil end
function boom(s) error("no luck") end
function spin(s) while true do end end
function bad_shape(s) return 42 end
function hog(s) local t = {} for i = 1, 1e9 do t[i] = i end return t end
converters = {
  nginx = function(s) return {"web", s.type} end,
  cpu = { function(s) return {"lua-cpu", s.type_instance} end, priority = -5 },
  memory = { function(s) return {"lua-mem", s.type_instance} end, priority = 1 },
}
"#;

fn lua_converters(entry_points: bool, config: Option<&Value>) -> Result<Converters, String> {
    let lua = LuaConverters::from_source(SCRIPT, "test.lua")?;
    Converters::from_config(config, Some(lua), entry_points)
}

#[test]
fn lua_functions_from_the_config() {
    let config = Value::Dict(vec![
        (Value::Str("df".into()), Value::Str("lua:upper".into())),
        (
            Value::Str("load".into()),
            Value::Str("lua:as_string".into()),
        ),
        (Value::Str("swap".into()), Value::Str("lua:drop".into())),
        (Value::Str("users".into()), Value::Str("lua:boom".into())),
        (Value::Str("irq".into()), Value::Str("lua:spin".into())),
        (
            Value::Str("uptime".into()),
            Value::Str("lua:bad_shape".into()),
        ),
        (Value::Str("entropy".into()), Value::Str("lua:hog".into())),
        (
            Value::Str("cpu".into()),
            Value::List(vec![
                Value::Str("{plugin}.{type_instance}".into()),
                Value::Int(3),
            ]),
        ),
    ]);
    let c = lua_converters(true, Some(&config)).unwrap();
    let f = fields("df", "root", "df_complex", "free", "value");
    assert_eq!(name(&c, &f).unwrap().as_deref(), Some("DF.free.value"));
    let mut f = fields("load", "", "load", "", "shortterm");
    f.value = 0.25;
    assert_eq!(name(&c, &f).unwrap().as_deref(), Some("str.web1.1.0.25"));
    assert_eq!(
        name(&c, &fields("swap", "", "swap", "used", "value")).unwrap(),
        None
    );
    let e = name(&c, &fields("users", "", "users", "", "value")).unwrap_err();
    assert!(
        e.to_string().contains("lua:boom") && e.message.contains("no luck"),
        "{e}"
    );
    // A runaway function is stopped, and the next call works again.
    let e = name(&c, &fields("irq", "", "irq", "", "value")).unwrap_err();
    assert!(e.message.contains("10 million instructions"), "{e}");
    let e = name(&c, &fields("uptime", "", "uptime", "", "value")).unwrap_err();
    assert!(e.message.contains("returned a integer"), "{e}");
    let e = name(&c, &fields("entropy", "", "entropy", "", "value")).unwrap_err();
    assert!(!e.message.is_empty());
    assert_eq!(
        name(&c, &fields("df", "root", "df_complex", "used", "value"))
            .unwrap()
            .as_deref(),
        Some("DF.used.value")
    );
    // Entry points: nginx is new; cpu's -5 does not beat the config's 3; memory's 1
    // beats the built-in.
    assert_eq!(
        name(&c, &fields("nginx", "", "connections", "", "value"))
            .unwrap()
            .as_deref(),
        Some("web.connections")
    );
    assert_eq!(
        name(&c, &fields("cpu", "0", "cpu", "idle", "value"))
            .unwrap()
            .as_deref(),
        Some("cpu.idle")
    );
    assert_eq!(
        name(&c, &fields("memory", "", "memory", "free", "value"))
            .unwrap()
            .as_deref(),
        Some("lua-mem.free")
    );

    // Without entry points the script's table is not registered.
    let c = lua_converters(false, None).unwrap();
    assert_eq!(
        name(&c, &fields("memory", "", "memory", "free", "value"))
            .unwrap()
            .as_deref(),
        Some("memory.free")
    );
    assert_eq!(
        name(&c, &fields("nginx", "", "connections", "", "value"))
            .unwrap()
            .as_deref(),
        Some("nginx.connections")
    );
}

#[test]
fn config_errors_name_what_is_wrong() {
    let one = |k: &str, v: Value| Value::Dict(vec![(Value::Str(k.into()), v)]);
    let cases: Vec<(Value, &str)> = vec![
        (
            one("df", Value::Str("lua:nothere".into())),
            "no function named \"nothere\"",
        ),
        (
            one("df", Value::Int(3)),
            "collectd_converters[\"df\"]: expected a template",
        ),
        (
            one("df", Value::Str("{bad}".into())),
            "collectd_converters[\"df\"]: template \"{bad}\": unknown field",
        ),
        (
            Value::Str("x".into()),
            "expected a dict of plugin name to converter",
        ),
    ];
    for (v, msg) in cases {
        let e = lua_converters(true, Some(&v)).unwrap_err();
        assert!(e.contains(msg), "{e}");
    }
    let e = Converters::from_config(Some(&one("df", Value::Str("lua:f".into()))), None, true)
        .unwrap_err();
    assert!(e.contains("needs a Lua script (collectd_lua)"), "{e}");
    // The original's default (an empty list) is fine.
    assert!(Converters::from_config(Some(&Value::List(vec![])), None, true).is_ok());
    let e = LuaConverters::from_source("this is not lua", "x.lua").unwrap_err();
    assert!(e.starts_with("collectd_lua x.lua:"), "{e}");
    let e = LuaConverters::from_source("converters = 5", "x.lua")
        .unwrap()
        .entry_points()
        .unwrap_err();
    assert!(e.contains("'converters' is a integer"), "{e}");
}
