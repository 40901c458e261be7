//! collectd's types.db: the data sets (`if_octets rx:DERIVE:0:U, tx:DERIVE:0:U`) that say
//! how many values a values part holds, of which kinds, and the range a result must fall in.
//!
//! The reader accepts what collectd's own reader (`types_list.c`) accepts: fields separated
//! by any run of spaces or tabs, data sources with or without a trailing comma (Debian's
//! file has lines without), kinds in any case, `U` or a number for min and max, `#` comment
//! lines. A line collectd would refuse (a data source without four `:` fields, an unknown
//! kind) is skipped with a warning naming the file and the line, as collectd does; a file
//! that cannot be read is an error. A later definition of a type replaces an earlier one.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The kind of a data source, with its wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DsKind {
    Counter = 0,
    Gauge = 1,
    Derive = 2,
    Absolute = 3,
}

impl DsKind {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<DsKind> {
        Some(match code {
            0 => DsKind::Counter,
            1 => DsKind::Gauge,
            2 => DsKind::Derive,
            3 => DsKind::Absolute,
            _ => return None,
        })
    }

    fn parse(text: &str) -> Option<DsKind> {
        Some(match text.to_ascii_uppercase().as_str() {
            "COUNTER" => DsKind::Counter,
            "GAUGE" => DsKind::Gauge,
            "DERIVE" => DsKind::Derive,
            "ABSOLUTE" => DsKind::Absolute,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            DsKind::Counter => "COUNTER",
            DsKind::Gauge => "GAUGE",
            DsKind::Derive => "DERIVE",
            DsKind::Absolute => "ABSOLUTE",
        }
    }
}

/// One data source of a data set: `rx:DERIVE:0:U`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSource {
    pub name: String,
    pub kind: DsKind,
    /// Inclusive bounds of a result; `None` is unbounded (`U`).
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl DataSource {
    /// Whether `v` lies within the bounds (inclusive).
    pub fn in_range(&self, v: f64) -> bool {
        self.min.is_none_or_le(v) && self.max.is_none_or_ge(v)
    }
}

trait Bound {
    fn is_none_or_le(&self, v: f64) -> bool;
    fn is_none_or_ge(&self, v: f64) -> bool;
}

impl Bound for Option<f64> {
    fn is_none_or_le(&self, v: f64) -> bool {
        match self {
            Some(b) => *b <= v,
            None => true,
        }
    }
    fn is_none_or_ge(&self, v: f64) -> bool {
        match self {
            Some(b) => *b >= v,
            None => true,
        }
    }
}

/// A data set: a type name and its data sources, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSet {
    pub name: String,
    pub sources: Vec<DataSource>,
}

/// A line the reader skipped, as collectd would: the file, the line number, and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{origin}: line {line}: {reason} (line skipped)")]
pub struct SkippedLine {
    pub origin: String,
    pub line: usize,
    pub reason: String,
}

/// A types.db file that cannot be used at all.
#[derive(Debug, Error)]
pub enum TypesDbError {
    #[error("types.db {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("types.db {}: line {line}: the file is not UTF-8 text", .path.display())]
    NotText { path: PathBuf, line: usize },
}

/// Where collectd installs its types.db; loaded, in this order, when no file is configured.
pub const SYSTEM_FILES: &[&str] = &[
    "/usr/share/collectd/types.db",
    "/usr/local/share/collectd/types.db",
];

/// The types.db shipped with bucky-collectd, used when collectd is not installed. See the
/// header of the file for its origin.
pub const BUILTIN: &str = include_str!("../types.db");

/// The data sets by type name.
#[derive(Debug, Clone, Default)]
pub struct TypesDb {
    sets: HashMap<String, DataSet, RandomState>,
    /// Where the definitions came from, for messages.
    sources: Vec<String>,
}

impl TypesDb {
    pub fn new() -> TypesDb {
        TypesDb::default()
    }

    /// The data set of `type_name`.
    pub fn get(&self, type_name: &str) -> Option<&DataSet> {
        self.sets.get(type_name)
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The files (or "built-in") the definitions were read from, in order.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Adds the definitions of `text` (`origin` names it in warnings); returns the lines
    /// skipped. A later definition of a type replaces an earlier one.
    pub fn add_text(&mut self, text: &str, origin: &str) -> Vec<SkippedLine> {
        let mut skipped = Vec::new();
        for (i, line) in text.lines().enumerate() {
            match parse_line(line) {
                Ok(Some(set)) => {
                    self.sets.insert(set.name.clone(), set);
                }
                Ok(None) => {}
                Err(reason) => skipped.push(SkippedLine {
                    origin: origin.to_string(),
                    line: i + 1,
                    reason,
                }),
            }
        }
        self.sources.push(origin.to_string());
        skipped
    }

    /// Adds the definitions of the file at `path`.
    pub fn add_file(&mut self, path: &Path) -> Result<Vec<SkippedLine>, TypesDbError> {
        let bytes = std::fs::read(path).map_err(|source| TypesDbError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let good = e.utf8_error().valid_up_to();
            TypesDbError::NotText {
                path: path.to_path_buf(),
                line: e.as_bytes()[..good].iter().filter(|b| **b == b'\n').count() + 1,
            }
        })?;
        Ok(self.add_text(&text, &path.display().to_string()))
    }

    /// The configured files, in order; with none, collectd's installed files that exist
    /// ([`SYSTEM_FILES`]), and when there are none of those either, the [`BUILTIN`] one.
    pub fn load(files: &[PathBuf]) -> Result<(TypesDb, Vec<SkippedLine>), TypesDbError> {
        let mut db = TypesDb::new();
        let mut skipped = Vec::new();
        if files.is_empty() {
            for f in SYSTEM_FILES {
                let path = Path::new(f);
                if path.is_file() {
                    skipped.extend(db.add_file(path)?);
                }
            }
            if db.sources.is_empty() {
                skipped.extend(db.add_text(BUILTIN, "built-in types.db"));
            }
        } else {
            for f in files {
                skipped.extend(db.add_file(f)?);
            }
        }
        Ok((db, skipped))
    }

    /// The built-in types.db alone (tests, benchmarks, fuzzing).
    pub fn builtin() -> TypesDb {
        let mut db = TypesDb::new();
        db.add_text(BUILTIN, "built-in types.db");
        db
    }
}

/// One line: `Ok(None)` for a comment or a blank line, `Err(reason)` for a line collectd
/// would refuse.
pub fn parse_line(line: &str) -> Result<Option<DataSet>, String> {
    let mut fields = line
        .split([' ', '\t', '\r', '\n'])
        .filter(|f| !f.is_empty());
    let Some(name) = fields.next() else {
        return Ok(None);
    };
    if name.starts_with('#') {
        return Ok(None);
    }
    let specs: Vec<&str> = fields.collect();
    if specs.is_empty() {
        // collectd ignores a line with a single field; it is most likely a typo.
        return Err(format!("type '{name}' has no data sources"));
    }
    let mut sources = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let spec = spec.strip_suffix(',').unwrap_or(spec);
        sources.push(
            parse_source(spec)
                .map_err(|e| format!("type '{name}': data source #{} {spec:?}: {e}", i + 1))?,
        );
    }
    Ok(Some(DataSet {
        name: name.to_string(),
        sources,
    }))
}

fn parse_source(spec: &str) -> Result<DataSource, String> {
    // strtok semantics, as collectd: empty fields between colons do not count.
    let fields: Vec<&str> = spec.split(':').filter(|f| !f.is_empty()).collect();
    let [name, kind, min, max] = fields[..] else {
        return Err(format!(
            "expected name:KIND:min:max, found {} field(s)",
            fields.len()
        ));
    };
    let kind = DsKind::parse(kind)
        .ok_or_else(|| format!("kind {kind:?} is not one of COUNTER, GAUGE, DERIVE, ABSOLUTE"))?;
    Ok(DataSource {
        name: name.to_string(),
        kind,
        min: parse_bound(min),
        max: parse_bound(max),
    })
}

/// `U` is unbounded; anything else is read the way C's `atof` reads it (the longest
/// numeric prefix, 0 if there is none), which is what collectd does. A NaN bound is
/// unbounded, as in collectd.
fn parse_bound(text: &str) -> Option<f64> {
    if text.eq_ignore_ascii_case("u") {
        return None;
    }
    let v = atof(text);
    (!v.is_nan()).then_some(v)
}

fn atof(text: &str) -> f64 {
    let t = text.trim_start();
    for end in (1..=t.len()).rev() {
        if let Some(prefix) = t.get(..end) {
            if let Ok(v) = prefix.parse::<f64>() {
                return v;
            }
        }
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(name: &str, kind: DsKind, min: Option<f64>, max: Option<f64>) -> DataSource {
        DataSource {
            name: name.into(),
            kind,
            min,
            max,
        }
    }

    #[test]
    fn line_table() {
        use DsKind::*;
        let ok: &[(&str, &str, Vec<DataSource>)] = &[
            (
                "absolute\t\tvalue:ABSOLUTE:0:U",
                "absolute",
                vec![ds("value", Absolute, Some(0.0), None)],
            ),
            (
                "if_octets\t\trx:DERIVE:0:U, tx:DERIVE:0:U",
                "if_octets",
                vec![
                    ds("rx", Derive, Some(0.0), None),
                    ds("tx", Derive, Some(0.0), None),
                ],
            ),
            // Debian's ib_octets: no comma between the data sources.
            (
                "ib_octets               rx:DERIVE:0:U tx:DERIVE:0:U",
                "ib_octets",
                vec![
                    ds("rx", Derive, Some(0.0), None),
                    ds("tx", Derive, Some(0.0), None),
                ],
            ),
            (
                "delay value:gauge:-1000000:1000000",
                "delay",
                vec![ds("value", Gauge, Some(-1e6), Some(1e6))],
            ),
            (
                "percent value:GAUGE:0:100.1",
                "percent",
                vec![ds("value", Gauge, Some(0.0), Some(100.1))],
            ),
            (
                "c value:COUNTER:u:u  ",
                "c",
                vec![ds("value", Counter, None, None)],
            ),
            (
                "  x  value::GAUGE:0:1",
                "x",
                vec![ds("value", Gauge, Some(0.0), Some(1.0))],
            ),
            (
                "y value:GAUGE:1e3x:nan",
                "y",
                vec![ds("value", Gauge, Some(1000.0), None)],
            ),
            (
                "z value:GAUGE:abc:-",
                "z",
                vec![ds("value", Gauge, Some(0.0), Some(0.0))],
            ),
        ];
        for (line, name, sources) in ok {
            let set = parse_line(line)
                .unwrap()
                .unwrap_or_else(|| panic!("{line}"));
            assert_eq!(&set.name, name, "{line}");
            assert_eq!(&set.sources, sources, "{line}");
        }
        for skip in [
            "",
            "   ",
            "# comment",
            "   # indented comment",
            "#x value:GAUGE:0:1",
        ] {
            assert_eq!(parse_line(skip), Ok(None), "{skip:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("lonely", "type 'lonely' has no data sources"),
            (
                "t value:GAUGE:0",
                "data source #1 \"value:GAUGE:0\": expected name:KIND:min:max, found 3 field(s)",
            ),
            ("t value:GAUGE:0:1:2", "found 5 field(s)"),
            (
                "t value:FLOAT:0:1",
                "kind \"FLOAT\" is not one of COUNTER, GAUGE, DERIVE, ABSOLUTE",
            ),
            ("t a:GAUGE:0:1, b:GAUGE", "data source #2"),
            // Without a space after the comma it is one field to collectd too.
            ("load a:GAUGE:0:5000,b:GAUGE:0:5000", "found 7 field(s)"),
        ];
        for (line, msg) in bad {
            let e = parse_line(line).unwrap_err();
            assert!(e.contains(msg), "{line}: {e}");
        }
    }

    #[test]
    fn files_name_their_lines_and_later_definitions_win() {
        let mut db = TypesDb::new();
        let skipped = db.add_text(
            "gauge value:GAUGE:U:U\n\nbroken value:GAUGE\ngauge value:GAUGE:0:10\n",
            "my.db",
        );
        assert_eq!(
            skipped
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["my.db: line 3: type 'broken': data source #1 \"value:GAUGE\": expected name:KIND:min:max, found 2 field(s) (line skipped)"]
        );
        assert_eq!(db.get("gauge").unwrap().sources[0].max, Some(10.0));
        assert!(db.get("broken").is_none());
        assert_eq!(db.len(), 1);
    }

    #[test]
    fn files_load_in_order_and_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        std::fs::write(&a, "t1 value:GAUGE:0:1\nt2 value:GAUGE:0:1\n").unwrap();
        std::fs::write(&b, "t2 value:DERIVE:0:U\n").unwrap();
        let (db, skipped) = TypesDb::load(&[a.clone(), b.clone()]).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(db.get("t2").unwrap().sources[0].kind, DsKind::Derive);
        assert_eq!(db.sources().len(), 2);
        let e = TypesDb::load(&[dir.path().join("none.db")]).unwrap_err();
        assert!(e.to_string().contains("none.db"), "{e}");
        std::fs::write(&b, b"ok value:GAUGE:0:1\n\xff\n").unwrap();
        let e = TypesDb::load(&[b]).unwrap_err().to_string();
        assert!(
            e.ends_with("b.db: line 2: the file is not UTF-8 text"),
            "{e}"
        );
    }

    #[test]
    fn builtin_loads_cleanly() {
        let mut db = TypesDb::new();
        let skipped = db.add_text(BUILTIN, "built-in");
        assert!(skipped.is_empty(), "{skipped:?}");
        for t in [
            "cpu",
            "memory",
            "load",
            "if_octets",
            "df_complex",
            "gauge",
            "derive",
        ] {
            assert!(db.get(t).is_some(), "{t}");
        }
    }

    /// Every type of the built-in file is defined exactly as in the installed collectd's
    /// file, when one is installed (bucky's file must not disagree with the senders').
    #[test]
    fn builtin_agrees_with_installed_collectd() {
        let path = Path::new(SYSTEM_FILES[0]);
        if !path.is_file() {
            eprintln!("{} not installed: comparison skipped", path.display());
            return;
        }
        let mut system = TypesDb::new();
        let skipped = system.add_file(path).unwrap();
        assert!(skipped.is_empty(), "collectd's own file: {skipped:?}");
        let ours = TypesDb::builtin();
        let mut compared = 0;
        for (name, set) in &ours.sets {
            if let Some(theirs) = system.get(name) {
                assert_eq!(set, theirs, "type {name}");
                compared += 1;
            }
        }
        assert!(compared > 50, "only {compared} types compared");
    }

    #[test]
    fn ranges_are_inclusive() {
        let d = ds("v", DsKind::Gauge, Some(0.0), Some(10.0));
        assert!(d.in_range(0.0) && d.in_range(10.0) && d.in_range(5.0));
        assert!(!d.in_range(-0.1) && !d.in_range(10.1));
        assert!(ds("v", DsKind::Gauge, None, None).in_range(-1e300));
    }
}
