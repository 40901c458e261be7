//! Persistent gauges (spec §3.7): the original's JSON save file, read at start-up and written
//! at shutdown. Reads both the 2.2.x form `{"key": value}` and HEAD's `{"key": [value, meta]}`
//! (and the `[[key, meta, value], ...]` list some HEAD forks write); writes the 2.2.x form,
//! which every version reads back.

use std::io::Write;
use std::path::Path;

use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GaugesFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not JSON: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: expected a JSON object of gauges, found {found}")]
    Shape { path: String, found: &'static str },
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Gauges read from a file, and the keys of the entries skipped.
pub type Loaded = (Vec<(String, f64)>, Vec<String>);

/// The gauges in a save file's text; entries that hold no finite number are skipped, and
/// their keys returned as the second element.
pub fn parse(text: &str, path: &str) -> Result<Loaded, GaugesFileError> {
    let text = python_constants_to_null(text);
    let doc: Value = serde_json::from_str(&text).map_err(|source| GaugesFileError::Json {
        path: path.to_string(),
        source,
    })?;
    let mut gauges = Vec::new();
    let mut skipped = Vec::new();
    let finite = |v: &Value| v.as_f64().filter(|x| x.is_finite());
    match &doc {
        Value::Object(map) => {
            for (k, v) in map {
                // 2.2.x: a number; HEAD: [value, metadata].
                let value = match v {
                    Value::Array(items) => items.first().and_then(finite),
                    other => finite(other),
                };
                match value {
                    Some(x) => gauges.push((k.clone(), x)),
                    None => skipped.push(k.clone()),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), _meta, v]) => match finite(v) {
                        Some(x) => gauges.push((k.clone(), x)),
                        None => skipped.push(k.clone()),
                    },
                    _ => skipped.push(item.to_string()),
                }
            }
        }
        other => {
            return Err(GaugesFileError::Shape {
                path: path.to_string(),
                found: kind(other),
            })
        }
    }
    Ok((gauges, skipped))
}

/// Python's json module writes `NaN`, `Infinity` and `-Infinity` for non-finite floats, which
/// JSON does not have: read them as `null` (and so skip those gauges, not the whole file).
fn python_constants_to_null(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("NaN") && !text.contains("Infinity") {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = rest.chars().next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.into()
}

/// Reads a save file; `Ok(None)` when it does not exist.
pub fn load(path: &Path) -> Result<Option<Loaded>, GaugesFileError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(GaugesFileError::Io {
                path: shown,
                source,
            })
        }
    };
    parse(&text, &shown).map(Some)
}

/// The 2.2.x form, `{"key": value, ...}`, keys sorted.
pub fn render(gauges: &[(&str, f64)]) -> String {
    let mut sorted: Vec<&(&str, f64)> = gauges.iter().filter(|(_, v)| v.is_finite()).collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let map: serde_json::Map<String, Value> = sorted
        .into_iter()
        .filter_map(|(k, v)| {
            serde_json::Number::from_f64(*v).map(|n| (k.to_string(), Value::Number(n)))
        })
        .collect();
    Value::Object(map).to_string()
}

/// Writes the file whole or not at all: a temporary file beside it, then a rename.
pub fn save(path: &Path, gauges: &[(&str, f64)]) -> Result<(), GaugesFileError> {
    let shown = path.display().to_string();
    let io = |source| GaugesFileError::Io {
        path: shown.clone(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(render(gauges).as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_known_form() {
        let (g, s) = parse(
            r#"{"gorm": 5.0, "a.b": -2, "bad": "x", "inf": Infinity, "n\"aN": NaN}"#,
            "f",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut g = g;
        g.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(g, [("a.b".to_string(), -2.0), ("gorm".to_string(), 5.0)]);
        assert_eq!(s.len(), 3);
        let (g, _) = parse(r#"{"gorm": [5.5, null], "t;k=v": [1, {"k": "v"}]}"#, "f").unwrap();
        assert_eq!(g.len(), 2);
        assert!(g.contains(&("gorm".to_string(), 5.5)));
        let (g, _) = parse(r#"[["gorm", null, 7], ["x", [], 1.5]]"#, "f").unwrap();
        assert_eq!(g, [("gorm".to_string(), 7.0), ("x".to_string(), 1.5)]);
        assert!(matches!(
            parse("42", "f"),
            Err(GaugesFileError::Shape { .. })
        ));
        assert!(matches!(parse("{", "f"), Err(GaugesFileError::Json { .. })));
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gauges.save");
        assert!(load(&path).unwrap().is_none());
        save(&path, &[("b", 0.1), ("a", 42.0), ("c", f64::INFINITY)]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"{"a":42.0,"b":0.1}"#
        );
        let (g, s) = load(&path).unwrap().unwrap();
        assert_eq!(g, [("a".to_string(), 42.0), ("b".to_string(), 0.1)]);
        assert!(s.is_empty());
    }
}
