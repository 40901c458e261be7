//! The TOML reader: the same keys as the Python format, as top-level TOML keys.

use std::collections::BTreeMap;

use super::{Assignment, Value};

/// Where and why the text is not valid TOML.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TomlError {
    pub line: Option<usize>,
    pub message: String,
}

pub(crate) fn parse(text: &str) -> Result<Vec<Assignment>, TomlError> {
    // Spanned keys give each top-level key its line; the values need none.
    let table: BTreeMap<toml::Spanned<String>, toml::Value> =
        toml::from_str(text).map_err(|e| TomlError {
            line: e.span().map(|s| line_at(text, s.start)),
            // The crate's message may span lines; errors here are one line.
            message: e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        })?;
    let mut out = Vec::with_capacity(table.len());
    for (key, value) in table {
        let line = line_at(text, key.span().start);
        let key = key.into_inner();
        let value = convert(&value, &key).map_err(|path| TomlError {
            line: Some(line),
            message: format!(
                "key '{path}': TOML dates and times are not supported: use a string or a number"
            ),
        })?;
        out.push(Assignment { key, value, line });
    }
    out.sort_by_key(|a| a.line);
    Ok(out)
}

fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The value, or the dotted path of the first date or time in it.
fn convert(v: &toml::Value, path: &str) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::Str(s.clone()),
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::Float(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(_) => return Err(path.to_string()),
        toml::Value::Array(items) => Value::List(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| convert(x, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => Value::Dict(
            t.iter()
                .map(|(k, x)| Ok((Value::Str(k.clone()), convert(x, &format!("{path}.{k}"))?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}
