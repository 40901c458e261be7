//! Naming a value (spec §4.5, §4.6): a converter per plugin turns a value's fields into the
//! components of its metric name. Built in: `cpu`, `interface`, `memory` and the default;
//! from the config file: name templates and Lua functions (decisions.md §6), registered by
//! the original's priority rules.
//!
//! Registration order: the built-ins (priority −1); then `collectd_converters` from the config
//! file, in file order (priority 0 unless given); then, if `collectd_use_entry_points`, the
//! `converters` table of the Lua script (the place the original's entry points had), sorted
//! by plugin name. A name already registered is replaced only by a strictly higher priority,
//! so a config converter beats a built-in, and on a tie the first one stays. `_default`
//! names the fallback and can be replaced the same way.

use std::cell::Cell;
use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::path::Path;
use std::rc::Rc;

use thiserror::Error;

use bucky_proto::config::Value;

use crate::types_db::DsKind;

/// What a converter sees of one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fields<'a> {
    pub host: &'a str,
    pub plugin: &'a str,
    pub plugin_instance: &'a str,
    pub type_: &'a str,
    pub type_instance: &'a str,
    /// The data source's name from types.db (`value`, `rx`, ...).
    pub value_name: &'a str,
    pub value_kind: DsKind,
    /// The value as received (before any rate).
    pub value: f64,
    /// Unix seconds.
    pub time: f64,
}

/// The outcome of naming a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// The name is in the output buffer.
    Name,
    /// The converter dropped the value (a Lua function returned nothing).
    Dropped,
    /// The name came out empty or only whitespace: dropped.
    Empty,
}

/// A converter failed on a value (a Lua error): the value is dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("converter {converter} for plugin {plugin:?}: {message}")]
pub struct ConvertError {
    pub converter: String,
    pub plugin: String,
    pub message: String,
}

/// A field a name template can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    Plugin,
    PluginInstance,
    Type,
    TypeInstance,
    ValueName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// A name template: `{plugin}.{plugin_instance}.{type_instance}`. The fields are filled in,
/// the result is split at the dots and empty components are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

const FIELDS_HELP: &str = "host, plugin, plugin_instance, type, type_instance, value_name";

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("template {text:?}: '{{' without '}}'"))?;
            let field = match &after[..close] {
                "host" => Field::Host,
                "plugin" => Field::Plugin,
                "plugin_instance" => Field::PluginInstance,
                "type" => Field::Type,
                "type_instance" => Field::TypeInstance,
                "value_name" => Field::ValueName,
                other => {
                    return Err(format!(
                        "template {text:?}: unknown field {{{other}}}: use {FIELDS_HELP}"
                    ))
                }
            };
            pieces.push(Piece::Field(field));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("template {text:?}: '}}' without '{{'"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template {
            source: text.to_string(),
            pieces,
        })
    }

    fn render(&self, f: &Fields<'_>, out: &mut String) {
        let mut full = String::with_capacity(64);
        for p in &self.pieces {
            full.push_str(match p {
                Piece::Text(t) => t,
                Piece::Field(Field::Host) => f.host,
                Piece::Field(Field::Plugin) => f.plugin,
                Piece::Field(Field::PluginInstance) => f.plugin_instance,
                Piece::Field(Field::Type) => f.type_,
                Piece::Field(Field::TypeInstance) => f.type_instance,
                Piece::Field(Field::ValueName) => f.value_name,
            });
        }
        for c in full.split('.').filter(|c| !c.is_empty()) {
            push_component(out, c);
        }
    }
}

/// A converter: what turns a value's fields into its name.
pub enum Converter {
    /// `cpu.<plugin_instance>.<type_instance>`.
    Cpu,
    /// `interface.<plugin_instance>.<type_instance>.<type>.<value_name>`, empty ones left out.
    Interface,
    /// `memory.<type_instance>`.
    Memory,
    /// The original's `_default`.
    Default,
    Template(Template),
    /// A function of the Lua script, by its name.
    Lua(String, mlua::Function),
}

impl std::fmt::Debug for Converter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Converter {
    /// Whether the name depends only on the value list's identity and the data source (so
    /// it can be remembered): every converter but Lua functions, which see values and times.
    pub fn is_pure(&self) -> bool {
        !matches!(self, Converter::Lua(..))
    }

    /// How messages name this converter.
    pub fn describe(&self) -> String {
        match self {
            Converter::Cpu => "built-in cpu".into(),
            Converter::Interface => "built-in interface".into(),
            Converter::Memory => "built-in memory".into(),
            Converter::Default => "built-in _default".into(),
            Converter::Template(t) => format!("template {:?}", t.source),
            Converter::Lua(name, _) => format!("lua:{name}"),
        }
    }
}

fn push_component(out: &mut String, c: &str) {
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(c);
}

/// Appends the default name of spec §4.5 to `out`.
pub fn default_name(f: &Fields<'_>, out: &mut String) {
    push_component(out, f.plugin.trim());
    if !f.plugin_instance.is_empty() {
        push_component(out, f.plugin_instance.trim());
    }
    let t = f.type_.trim();
    if !t.is_empty() && t != "value" {
        push_component(out, t);
    }
    let ti = f.type_instance.trim();
    if !ti.is_empty() {
        push_component(out, ti);
    }
    let vn = f.value_name.trim();
    if !vn.is_empty() && vn != "value" {
        push_component(out, vn);
    }
}

/// The Lua runtime of the converters: one state, one reused argument table, and limits so
/// that a runaway function cannot hang or bloat the receiver.
pub struct LuaConverters {
    lua: mlua::Lua,
    sample: mlua::Table,
    budget: Rc<Cell<u32>>,
    script: String,
}

impl std::fmt::Debug for LuaConverters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaConverters")
            .field("script", &self.script)
            .finish()
    }
}

/// Instructions a converter call may run, in thousands, before it is stopped.
const LUA_BUDGET_THOUSANDS: u32 = 10_000;
/// Memory the Lua state may use.
const LUA_MEMORY: usize = 256 << 20;

impl LuaConverters {
    /// Runs the script at `path` (it defines the functions the config names with `lua:`).
    pub fn load(path: &Path) -> Result<LuaConverters, String> {
        let code = std::fs::read_to_string(path)
            .map_err(|e| format!("collectd_lua {}: {e}", path.display()))?;
        Self::from_source(&code, &path.display().to_string())
    }

    /// Runs `code`; `name` names it in messages.
    pub fn from_source(code: &str, name: &str) -> Result<LuaConverters, String> {
        let lua = mlua::Lua::new();
        let _ = lua.set_memory_limit(LUA_MEMORY);
        let budget = Rc::new(Cell::new(0u32));
        let b = budget.clone();
        lua.set_hook(
            mlua::HookTriggers::new().every_nth_instruction(1000),
            move |_, _| {
                let used = b.get() + 1;
                b.set(used);
                if used > LUA_BUDGET_THOUSANDS {
                    Err(mlua::Error::runtime(
                        "the converter ran for more than 10 million instructions",
                    ))
                } else {
                    Ok(mlua::VmState::Continue)
                }
            },
        );
        lua.load(code)
            .set_name(format!("@{name}"))
            .exec()
            .map_err(|e| format!("collectd_lua {name}: {e}"))?;
        let sample = lua
            .create_table()
            .map_err(|e| format!("collectd_lua {name}: {e}"))?;
        Ok(LuaConverters {
            lua,
            sample,
            budget,
            script: name.to_string(),
        })
    }

    /// The global function `name`.
    pub fn function(&self, name: &str) -> Result<mlua::Function, String> {
        match self.lua.globals().get::<mlua::Value>(name) {
            Ok(mlua::Value::Function(f)) => Ok(f),
            Ok(mlua::Value::Nil) => Err(format!(
                "collectd_lua {}: no function named {name:?}",
                self.script
            )),
            Ok(other) => Err(format!(
                "collectd_lua {}: {name:?} is a {}, not a function",
                self.script,
                other.type_name()
            )),
            Err(e) => Err(format!("collectd_lua {}: {e}", self.script)),
        }
    }

    /// The script's `converters` table: plugin name → function, or → `{function, priority =
    /// N}`; sorted by plugin name.
    pub fn entry_points(&self) -> Result<Vec<(String, Converter, i64)>, String> {
        let table = match self.lua.globals().get::<mlua::Value>("converters") {
            Ok(mlua::Value::Nil) => return Ok(Vec::new()),
            Ok(mlua::Value::Table(t)) => t,
            Ok(other) => {
                return Err(format!(
                    "collectd_lua {}: 'converters' is a {}, not a table",
                    self.script,
                    other.type_name()
                ))
            }
            Err(e) => return Err(format!("collectd_lua {}: {e}", self.script)),
        };
        let mut out = Vec::new();
        for pair in table.pairs::<String, mlua::Value>() {
            let (plugin, v) = pair.map_err(|e| {
                format!(
                    "collectd_lua {}: converters: keys must be plugin names: {e}",
                    self.script
                )
            })?;
            let bad = || {
                format!(
                    "collectd_lua {}: converters[{plugin:?}] must be a function or {{function, priority = N}}",
                    self.script
                )
            };
            let (f, priority) = match v {
                mlua::Value::Function(f) => (f, 0),
                mlua::Value::Table(t) => {
                    let f: mlua::Function = t.get(1).map_err(|_| bad())?;
                    let p: Option<i64> = t.get("priority").map_err(|_| bad())?;
                    (f, p.unwrap_or(0))
                }
                _ => return Err(bad()),
            };
            out.push((
                plugin.clone(),
                Converter::Lua(format!("converters.{plugin}"), f),
                priority,
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn call(
        &self,
        function: &mlua::Function,
        f: &Fields<'_>,
        out: &mut String,
    ) -> Result<bool, String> {
        let t = &self.sample;
        let set = || -> mlua::Result<()> {
            t.raw_set("host", f.host)?;
            t.raw_set("plugin", f.plugin)?;
            t.raw_set("plugin_instance", f.plugin_instance)?;
            t.raw_set("type", f.type_)?;
            t.raw_set("type_instance", f.type_instance)?;
            t.raw_set("value_name", f.value_name)?;
            t.raw_set("value_type", i64::from(f.value_kind.code()))?;
            t.raw_set("value", f.value)?;
            t.raw_set("time", f.time)?;
            Ok(())
        };
        set().map_err(|e| e.to_string())?;
        self.budget.set(0);
        let result: mlua::Value = function
            .call(t.clone())
            .map_err(|e| first_line(&e.to_string()))?;
        match result {
            mlua::Value::Nil | mlua::Value::Boolean(false) => Ok(false),
            mlua::Value::String(s) => {
                out.push_str(
                    &s.to_str()
                        .map_err(|_| "returned a name that is not UTF-8")?,
                );
                Ok(true)
            }
            mlua::Value::Table(parts) => {
                for item in parts.sequence_values::<mlua::Value>() {
                    let item = item.map_err(|e| e.to_string())?;
                    let text = match &item {
                        mlua::Value::String(s) => s
                            .to_str()
                            .map_err(|_| "returned a component that is not UTF-8")?
                            .to_string(),
                        mlua::Value::Integer(i) => i.to_string(),
                        mlua::Value::Number(n) => n.to_string(),
                        other => {
                            return Err(format!(
                                "returned a list holding a {} (strings only)",
                                other.type_name()
                            ))
                        }
                    };
                    push_component(out, &text);
                }
                Ok(true)
            }
            other => Err(format!(
                "returned a {} (a list of strings, a string or nil expected)",
                other.type_name()
            )),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

struct Entry {
    converter: Converter,
    priority: i64,
}

/// The converters by plugin name, with the fallback under `_default`.
pub struct Converters {
    table: HashMap<String, Entry, RandomState>,
    lua: Option<LuaConverters>,
}

impl std::fmt::Debug for Converters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.table
                    .iter()
                    .map(|(k, e)| (k, (&e.converter, e.priority))),
            )
            .finish()
    }
}

impl Default for Converters {
    fn default() -> Self {
        Converters::builtin()
    }
}

impl Converters {
    /// The four built-ins, priority −1.
    pub fn builtin() -> Converters {
        let mut c = Converters {
            table: HashMap::default(),
            lua: None,
        };
        for (name, conv) in [
            ("cpu", Converter::Cpu),
            ("interface", Converter::Interface),
            ("memory", Converter::Memory),
            ("_default", Converter::Default),
        ] {
            c.register(name, conv, -1);
        }
        c
    }

    /// Registers `converter` for `plugin` by the priority rule; returns whether it took the
    /// place.
    pub fn register(&mut self, plugin: &str, converter: Converter, priority: i64) -> bool {
        match self.table.get(plugin) {
            Some(e) if priority <= e.priority => false,
            _ => {
                self.table.insert(
                    plugin.to_string(),
                    Entry {
                        converter,
                        priority,
                    },
                );
                true
            }
        }
    }

    /// The converter of `plugin` (or the fallback) and its priority.
    pub fn get(&self, plugin: &str) -> Option<(&Converter, i64)> {
        self.table
            .get(plugin)
            .or_else(|| self.table.get("_default"))
            .map(|e| (&e.converter, e.priority))
    }

    /// Sets up the converters of the config file: `collectd_converters` (a dict of plugin →
    /// template, `"lua:FUNCTION"`, or `[either, priority]`), the Lua script (`lua`) and its
    /// `converters` table when `entry_points`.
    pub fn from_config(
        converters: Option<&Value>,
        lua: Option<LuaConverters>,
        entry_points: bool,
    ) -> Result<Converters, String> {
        let mut c = Converters::builtin();
        let entries: &[(Value, Value)] = match converters {
            None | Some(Value::None) => &[],
            Some(Value::Dict(d)) => d,
            // The original's default was an empty list.
            Some(Value::List(l)) | Some(Value::Tuple(l)) if l.is_empty() => &[],
            Some(other) => {
                return Err(format!(
                    "collectd_converters: expected a dict of plugin name to converter, found {}",
                    other.describe()
                ))
            }
        };
        for (k, v) in entries {
            let Some(plugin) = k.as_str() else {
                return Err(format!(
                    "collectd_converters: keys must be plugin names (strings), found {}",
                    k.describe()
                ));
            };
            let (spec, priority) = match v {
                Value::Str(s) => (s.as_str(), 0),
                Value::List(items) | Value::Tuple(items) => match &items[..] {
                    [Value::Str(s), Value::Int(p)] => (s.as_str(), *p),
                    _ => {
                        return Err(format!(
                            "collectd_converters[{plugin:?}]: expected a template, \"lua:FUNCTION\" or [either, priority], found {}",
                            v.describe()
                        ))
                    }
                },
                _ => {
                    return Err(format!(
                        "collectd_converters[{plugin:?}]: expected a template, \"lua:FUNCTION\" or [either, priority], found {}",
                        v.describe()
                    ))
                }
            };
            let converter = if let Some(function) = spec.strip_prefix("lua:") {
                let Some(lua) = &lua else {
                    return Err(format!(
                        "collectd_converters[{plugin:?}]: {spec:?} needs a Lua script (collectd_lua)"
                    ));
                };
                Converter::Lua(function.to_string(), lua.function(function)?)
            } else {
                Converter::Template(
                    Template::parse(spec)
                        .map_err(|e| format!("collectd_converters[{plugin:?}]: {e}"))?,
                )
            };
            c.register(plugin, converter, priority);
        }
        if let Some(lua) = &lua {
            if entry_points {
                for (plugin, converter, priority) in lua.entry_points()? {
                    c.register(&plugin, converter, priority);
                }
            }
        }
        c.lua = lua;
        Ok(c)
    }

    /// Writes the name of a value into `out` (cleared first).
    pub fn name(&self, f: &Fields<'_>, out: &mut String) -> Result<Named, ConvertError> {
        self.name_with(self.get(f.plugin).map(|(c, _)| c), f, out)
    }

    /// [`name`](Self::name) with the converter already looked up by [`get`](Self::get)
    /// (once per value list, not per value).
    pub fn name_with(
        &self,
        converter: Option<&Converter>,
        f: &Fields<'_>,
        out: &mut String,
    ) -> Result<Named, ConvertError> {
        out.clear();
        let Some(converter) = converter else {
            default_name(f, out);
            return Ok(check(out));
        };
        match converter {
            Converter::Cpu => {
                out.push_str("cpu.");
                out.push_str(f.plugin_instance);
                out.push('.');
                out.push_str(f.type_instance);
            }
            Converter::Interface => {
                out.push_str("interface");
                for c in [f.plugin_instance, f.type_instance, f.type_, f.value_name] {
                    if !c.is_empty() {
                        push_component(out, c);
                    }
                }
            }
            Converter::Memory => {
                out.push_str("memory.");
                out.push_str(f.type_instance);
            }
            Converter::Default => default_name(f, out),
            Converter::Template(t) => t.render(f, out),
            Converter::Lua(name, function) => {
                let Some(lua) = &self.lua else {
                    return Ok(Named::Dropped);
                };
                match lua.call(function, f, out) {
                    Ok(true) => {}
                    Ok(false) => return Ok(Named::Dropped),
                    Err(message) => {
                        return Err(ConvertError {
                            converter: format!("lua:{name}"),
                            plugin: f.plugin.to_string(),
                            message,
                        })
                    }
                }
            }
        }
        Ok(check(out))
    }
}

fn check(out: &str) -> Named {
    if out.trim().is_empty() {
        Named::Empty
    } else {
        Named::Name
    }
}

#[cfg(test)]
mod tests;
