//! Config loading shared by every bucky tool: one file, TOML or an original bucky (Python)
//! config that assigns only literals, read into typed values with file-and-line errors.
//!
//! Every tool reads the same file and takes only its own keys, with the original's key names,
//! so an operator's existing `bucky.conf` keeps working. Flags beat the file ([`pick`]).
//!
//! The format follows the file name: `.toml` is TOML, `.py` is Python, anything else is tried
//! as Python first (the original's format), then as TOML. Python `None` means "unset": the typed
//! getters treat it like an absent key, and [`Config::get_nullable`] tells the two apart for
//! the keys where `None` means "skip this step" (`name_replace_char`, the StatsD prefixes).
//!
//! ```
//! use bucky_proto::config::{pick, Config};
//! let cfg = Config::parse_python("statsd_port = 8126\nname_host_trim = ['example.com']\n", "x.conf")?;
//! let port: u16 = pick(None, &cfg, "statsd_port", 8125)?;
//! assert_eq!(port, 8126);
//! let trim: Vec<String> = cfg.get_or("name_host_trim", Vec::new())?;
//! assert_eq!(trim, ["example.com"]);
//! # Ok::<(), bucky_proto::config::ConfigError>(())
//! ```

pub mod keys;
mod python;
mod toml_format;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use keys::{is_known, KNOWN_KEYS};

/// A config value. Python and TOML both map onto it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// In source order; a repeated key keeps its first place and its last value.
    Dict(Vec<(Value, Value)>),
}

/// Longest value quoted in an error message, in characters.
const QUOTE_MAX: usize = 50;

impl Value {
    /// What kind of value this is, with its article: "a string", "an integer", "None".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
        }
    }

    /// The kind and a (shortened) rendering, for error messages: `a string ("abc")`.
    pub fn describe(&self) -> String {
        let mut shown = self.to_string();
        if shown.chars().count() > QUOTE_MAX {
            shown = shown.chars().take(QUOTE_MAX).collect::<String>() + "...";
        }
        match self {
            Value::None => "None".into(),
            Value::List(_) | Value::Tuple(_) | Value::Dict(_) => format!("{} {shown}", self.kind()),
            _ => format!("{} ({shown})", self.kind()),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a list or a tuple.
    pub fn as_items(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(v) => Some(v),
            _ => None,
        }
    }
}

/// Python-like rendering (`None`, `True`, `[1, "a"]`, `(1,)`, `{"k": 2.5}`), strings quoted
/// as Rust does, so that the operator recognises what they wrote.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Value]) -> fmt::Result {
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{v}")?;
            }
            Ok(())
        }
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(v) => {
                f.write_str("[")?;
                seq(f, v)?;
                f.write_str("]")
            }
            Value::Tuple(v) => {
                f.write_str("(")?;
                seq(f, v)?;
                if v.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            Value::Dict(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Why a config could not be loaded or a value not used. Every message names the file and,
/// where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad syntax, or something bucky does not run (Python code beyond literal assignments).
    #[error("{origin}: {}{message}", at_line(*.line))]
    Invalid {
        origin: String,
        line: Option<usize>,
        message: String,
    },
    /// A file of no declared format that is neither valid Python nor valid TOML. The reading
    /// that got further comes first.
    #[error("{origin}: not a bucky config in either format: {first}; {second}")]
    Unrecognised {
        origin: String,
        first: String,
        second: String,
    },
    #[error("{origin}: line {line}: key '{key}': expected {expected}, found {found}")]
    WrongType {
        origin: String,
        line: usize,
        key: String,
        expected: String,
        found: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    match line {
        Some(n) => format!("line {n}: "),
        None => String::new(),
    }
}

impl ConfigError {
    /// The line the error is about, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => *line,
            ConfigError::WrongType { line, .. } => Some(*line),
            ConfigError::Read { .. } | ConfigError::Unrecognised { .. } => None,
        }
    }
}

/// One `key = value` of a file, in file order; both readers produce these.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assignment {
    pub key: String,
    pub value: Value,
    pub line: usize,
}

/// A value the typed getters can produce.
pub trait FromValue: Sized {
    /// What a wrong-type error says was expected, with its article: "an integer".
    const EXPECTED: &'static str;

    /// `None` when `v` is not of this type (or out of its range).
    fn from_value(v: &Value) -> Option<Self>;

    /// [`Self::EXPECTED`], with the item types spelled out for containers.
    fn expected() -> String {
        Self::EXPECTED.to_string()
    }
}

impl FromValue for bool {
    const EXPECTED: &'static str = "a boolean (True or False)";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl FromValue for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_value(v: &Value) -> Option<Self> {
        // Python's True is an int, but `statsd_port = True` is a mistake worth reporting.
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

macro_rules! int_from_value {
    ($t:ty, $expected:literal) => {
        impl FromValue for $t {
            const EXPECTED: &'static str = $expected;
            fn from_value(v: &Value) -> Option<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i).ok(),
                    _ => None,
                }
            }
        }
    };
}

int_from_value!(u16, "an integer from 0 to 65535");
int_from_value!(u32, "an integer from 0 to 4294967295");
int_from_value!(u64, "a non-negative integer");
int_from_value!(usize, "a non-negative integer");

impl FromValue for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Float(x) => Some(*x),
            // Python code mixes 10 and 10.0 freely (statsd_flush_time = 10).
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    const EXPECTED: &'static str = "a string";
    fn from_value(v: &Value) -> Option<Self> {
        v.as_str().map(str::to_string)
    }
}

impl FromValue for PathBuf {
    const EXPECTED: &'static str = "a path (a string)";
    fn from_value(v: &Value) -> Option<Self> {
        v.as_str().map(PathBuf::from)
    }
}

impl FromValue for Value {
    const EXPECTED: &'static str = "any value";
    fn from_value(v: &Value) -> Option<Self> {
        Some(v.clone())
    }
}

impl<T: FromValue> FromValue for Vec<T> {
    const EXPECTED: &'static str = "a list";
    fn from_value(v: &Value) -> Option<Self> {
        v.as_items()?.iter().map(T::from_value).collect()
    }
    fn expected() -> String {
        format!("a list (each item {})", T::expected())
    }
}

impl<A: FromValue, B: FromValue> FromValue for (A, B) {
    const EXPECTED: &'static str = "a pair";
    fn from_value(v: &Value) -> Option<Self> {
        match v.as_items()? {
            [a, b] => Some((A::from_value(a)?, B::from_value(b)?)),
            _ => None,
        }
    }
    fn expected() -> String {
        format!("a pair ({}, {})", A::expected(), B::expected())
    }
}

impl<A: FromValue, B: FromValue, C: FromValue> FromValue for (A, B, C) {
    const EXPECTED: &'static str = "a triple";
    fn from_value(v: &Value) -> Option<Self> {
        match v.as_items()? {
            [a, b, c] => Some((A::from_value(a)?, B::from_value(b)?, C::from_value(c)?)),
            _ => None,
        }
    }
    fn expected() -> String {
        format!(
            "a triple ({}, {}, {})",
            A::expected(),
            B::expected(),
            C::expected()
        )
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::None => Some(None),
            _ => T::from_value(v).map(Some),
        }
    }
    fn expected() -> String {
        format!("{} or None", T::expected())
    }
}

impl<V: FromValue> FromValue for BTreeMap<String, V> {
    const EXPECTED: &'static str = "a dict";
    fn from_value(v: &Value) -> Option<Self> {
        v.as_dict()?
            .iter()
            .map(|(k, v)| Some((k.as_str()?.to_string(), V::from_value(v)?)))
            .collect()
    }
    fn expected() -> String {
        format!("a dict (string keys, each value {})", V::expected())
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    value: Value,
    line: usize,
}

/// A loaded config file: each key's value and the line that set it.
#[derive(Debug, Clone)]
pub struct Config {
    path: Option<PathBuf>,
    /// How errors name the source: the path, or what the caller called the text.
    origin: String,
    entries: BTreeMap<String, Entry>,
}

impl Config {
    /// No file: every key is absent.
    pub fn empty() -> Config {
        Config {
            path: None,
            origin: "(no config file)".into(),
            entries: BTreeMap::new(),
        }
    }

    fn from_assignments(origin: &str, assignments: Vec<Assignment>) -> Config {
        let mut entries = BTreeMap::new();
        for a in assignments {
            // Python semantics: the last assignment wins.
            entries.insert(
                a.key,
                Entry {
                    value: a.value,
                    line: a.line,
                },
            );
        }
        Config {
            path: None,
            origin: origin.to_string(),
            entries,
        }
    }

    /// Reads a config file; its name decides the format (see the module docs).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let good = e.utf8_error().valid_up_to();
                let line = e.as_bytes()[..good].iter().filter(|b| **b == b'\n').count() + 1;
                return Err(ConfigError::Invalid {
                    origin,
                    line: Some(line),
                    message: "the file is not UTF-8 text".into(),
                });
            }
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let mut cfg = match ext.as_deref() {
            Some("toml") => Config::parse_toml(text, &origin)?,
            Some("py") => Config::parse_python(text, &origin)?,
            _ => Config::parse_auto(text, &origin)?,
        };
        cfg.path = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// [`Config::load`] when a file is given, [`Config::empty`] when not.
    pub fn load_optional(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Config::load(p),
            None => Ok(Config::empty()),
        }
    }

    /// Reads an original bucky config: Python literal assignments only.
    pub fn parse_python(text: &str, origin: &str) -> Result<Config, ConfigError> {
        match python::parse(text) {
            Ok(a) => Ok(Config::from_assignments(origin, a)),
            Err(e) => Err(ConfigError::Invalid {
                origin: origin.to_string(),
                line: Some(e.line),
                message: e.message,
            }),
        }
    }

    /// Reads a TOML config. Keys are the top-level keys; a table is a dict value.
    pub fn parse_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        match toml_format::parse(text) {
            Ok(a) => Ok(Config::from_assignments(origin, a)),
            Err(e) => Err(ConfigError::Invalid {
                origin: origin.to_string(),
                line: e.line,
                message: e.message,
            }),
        }
    }

    /// Reads text of unknown format: Python first (the original's format), then TOML.
    pub fn parse_auto(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let py = match python::parse(text) {
            Ok(a) => return Ok(Config::from_assignments(origin, a)),
            Err(e) => e,
        };
        let tm = match toml_format::parse(text) {
            Ok(a) => return Ok(Config::from_assignments(origin, a)),
            Err(e) => e,
        };
        let py_text = format!("as Python: line {}: {}", py.line, py.message);
        let tm_text = format!("as TOML: {}{}", at_line(tm.line), tm.message);
        let (first, second) = if tm.line.unwrap_or(0) > py.line {
            (tm_text, py_text)
        } else {
            (py_text, tm_text)
        };
        Err(ConfigError::Unrecognised {
            origin: origin.to_string(),
            first,
            second,
        })
    }

    /// The file this config was loaded from (`None` for [`Config::empty`] and parsed text).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// How messages name this config: the path, or the origin given when parsing.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The keys set, in file order.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<(&str, usize)> = self
            .entries
            .iter()
            .map(|(k, e)| (k.as_str(), e.line))
            .collect();
        keys.sort_by_key(|(k, line)| (*line, *k));
        keys.into_iter().map(|(k, _)| k).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value as written, `None` when the key is absent (but `Some(Value::None)` when the
    /// file says `None`).
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.entries.get(key).map(|e| &e.value)
    }

    /// The line that set the key (the last one, when it is set more than once).
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.entries.get(key).map(|e| e.line)
    }

    /// The keys no bucky tool reads, in file order: most likely typing mistakes.
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.keys().into_iter().filter(|k| !is_known(k)).collect()
    }

    /// The warnings [`Config::warn_unknown`] logs, one per unknown key.
    pub fn unknown_key_warnings(&self, tool: &str) -> Vec<String> {
        self.unknown_keys()
            .into_iter()
            .map(|k| {
                let line = self.line_of(k).unwrap_or(0);
                let mut msg = format!(
                    "{tool}: config {}: line {line}: unknown key '{k}' (ignored)",
                    self.origin
                );
                if let Some(near) = nearest_known(k) {
                    msg.push_str(&format!(" - did you mean '{near}'?"));
                }
                msg
            })
            .collect()
    }

    /// Logs one warning per unknown key, naming it, the file and the line.
    pub fn warn_unknown(&self, tool: &str) {
        for msg in self.unknown_key_warnings(tool) {
            log::warn!("{msg}");
        }
    }

    /// The key's value as `T`; `None` when the key is absent or set to `None`. A value of the
    /// wrong type is an error naming the file, the line, the key and the expected type.
    pub fn get<T: FromValue>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        let Some(entry) = self.entries.get(key) else {
            return Ok(None);
        };
        if entry.value.is_none() {
            return Ok(None);
        }
        match T::from_value(&entry.value) {
            Some(v) => Ok(Some(v)),
            None => Err(self.wrong_type(key, entry, T::expected())),
        }
    }

    /// [`Config::get`], with `default` for an absent or `None` key.
    pub fn get_or<T: FromValue>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// For keys where `None` means something (`name_replace_char = None` turns replacing
    /// off): `None` when absent, `Some(None)` when set to `None`, `Some(Some(v))` otherwise.
    pub fn get_nullable<T: FromValue>(&self, key: &str) -> Result<Option<Option<T>>, ConfigError> {
        match self.entries.get(key) {
            None => Ok(None),
            Some(e) if e.value.is_none() => Ok(Some(None)),
            Some(_) => Ok(self.get(key)?.map(Some)),
        }
    }

    fn wrong_type(&self, key: &str, entry: &Entry, expected: String) -> ConfigError {
        ConfigError::WrongType {
            origin: self.origin.clone(),
            line: entry.line,
            key: key.to_string(),
            expected,
            found: entry.value.describe(),
        }
    }
}

/// Flags beat the file: the flag when given, else the file's value, else `default`.
pub fn pick<T: FromValue>(
    flag: Option<T>,
    cfg: &Config,
    key: &str,
    default: T,
) -> Result<T, ConfigError> {
    match flag {
        Some(v) => Ok(v),
        None => cfg.get_or(key, default),
    }
}

/// The known key closest to a misspelt one, if it is close enough to be a likely typo.
fn nearest_known(key: &str) -> Option<&'static str> {
    let limit = (key.chars().count() / 4).clamp(1, 3);
    KNOWN_KEYS
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
