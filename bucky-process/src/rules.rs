//! The declarative rules of `processor_rules` (decisions.md §6): read from the config file
//! (a TOML array of tables, or the same as a Python list of dicts) and compiled once.
//!
//! ```toml
//! [[processor_rules]]          # the original README's `timediff` processor
//! action = "time_window"
//! future = 120
//! past = 300
//!
//! [[processor_rules]]
//! action = "rename"
//! name = '^servers\.([^.]+)\.'
//! to = 'hosts.$1.'
//! ```
//!
//! | action | keys | effect |
//! |---|---|---|
//! | `drop` | `name`, `host` (at least one) | drops the samples every given regex matches |
//! | `keep` | `name`, `host` (at least one) | drops the samples not matched by every given regex |
//! | `rename` | `name` or `host` (the regex), `to`, optional `field` | replaces the first match in the name (or, with `field = "host"`, the host) by `to`, where `$1`, `${1}` and `${name}` are capture groups and `$$` is `$` |
//! | `time_window` | `future`, `past` (seconds, at least one) | drops samples stamped more than `future` seconds ahead of now or more than `past` seconds behind it |
//! | `drop_non_finite` | | drops samples whose value is `nan`, `inf` or `-inf` |
//! | `lua` | | runs the Lua function here (`processor_lua`); without this rule it runs after all the others |
//!
//! Regexes are searched anywhere in the text (anchor them with `^` and `$`); a sample without
//! a host is matched as if its host were empty.

use bucky_proto::config::{Config, Value};
use regex::bytes::Regex;
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::Look;
use thiserror::Error;

/// A compiled regex and the literal text every match must start or end the haystack with,
/// when it is anchored (`^servers\.`, `\.example\.com$`): most samples a rule does not apply
/// to are turned away by one comparison, without entering the regex engine.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub regex: Regex,
    prefix: Option<Box<[u8]>>,
    suffix: Option<Box<[u8]>>,
    /// The regex is nothing but its anchored prefix or suffix literal, without groups: a
    /// match is found (and located) by comparing bytes alone.
    whole: Option<Anchor>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Start,
    End,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        let regex = Regex::new(source)?;
        // The same syntax the bytes regex accepts; a failure here only loses the shortcut.
        let hir = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(source)
            .ok();
        let literal = |kind: ExtractKind, anchor: Look| -> Option<(Box<[u8]>, bool)> {
            let hir = hir.as_ref()?;
            let props = hir.properties();
            let anchored = match kind {
                ExtractKind::Prefix => props.look_set_prefix().contains(anchor),
                _ => props.look_set_suffix().contains(anchor),
            };
            if !anchored {
                return None;
            }
            let seq = Extractor::new().kind(kind).extract(hir);
            match seq.literals()? {
                [one] if !one.as_bytes().is_empty() => {
                    Some((one.as_bytes().into(), one.is_exact()))
                }
                _ => None,
            }
        };
        let prefix = literal(ExtractKind::Prefix, Look::Start);
        let suffix = literal(ExtractKind::Suffix, Look::End);
        let no_groups = regex.captures_len() == 1;
        let whole = match (&prefix, &suffix) {
            (Some((_, true)), _) if no_groups => Some(Anchor::Start),
            (_, Some((_, true))) if no_groups => Some(Anchor::End),
            _ => None,
        };
        Ok(Pattern {
            prefix: prefix.map(|(l, _)| l),
            suffix: suffix.map(|(l, _)| l),
            whole,
            regex,
        })
    }

    /// Where the regex matches, when the regex is only an anchored literal; `None` means
    /// "ask the regex".
    #[inline]
    pub fn literal_match(&self, text: &[u8]) -> Option<Option<(usize, usize)>> {
        match self.whole? {
            Anchor::Start => {
                let p = self.prefix.as_deref()?;
                Some(text.starts_with(p).then_some((0, p.len())))
            }
            Anchor::End => {
                let s = self.suffix.as_deref()?;
                Some(
                    text.ends_with(s)
                        .then_some((text.len() - s.len(), text.len())),
                )
            }
        }
    }

    /// Whether a match is found by comparing bytes alone, without the regex.
    pub fn is_literal(&self) -> bool {
        self.whole.is_some()
    }

    /// False when `text` cannot match (a quick test); true when it may.
    #[inline]
    pub fn may_match(&self, text: &[u8]) -> bool {
        self.prefix.as_ref().map_or(true, |p| text.starts_with(p))
            && self.suffix.as_ref().map_or(true, |s| text.ends_with(s))
    }

    #[inline]
    pub fn is_match(&self, text: &[u8]) -> bool {
        self.may_match(text) && self.regex.is_match(text)
    }
}

/// Why `processor_rules` cannot be used. The text names the file, the line and the rule.
#[derive(Debug, Error)]
#[error("{origin}: line {line}: processor_rules: rule {index}: {message}")]
pub struct RuleError {
    pub origin: String,
    pub line: usize,
    /// The rule's position in the list, from 0.
    pub index: usize,
    pub message: String,
}

/// A condition of a drop or keep rule: every regex given must match.
#[derive(Debug, Clone)]
pub struct Cond {
    pub name: Option<Pattern>,
    pub host: Option<Pattern>,
}

impl Cond {
    #[inline]
    pub fn matches(&self, name: &[u8], host: &[u8]) -> bool {
        absent_or_matches(self.name.as_ref(), name) && absent_or_matches(self.host.as_ref(), host)
    }
}

#[inline]
fn absent_or_matches(re: Option<&Pattern>, text: &[u8]) -> bool {
    match re {
        None => true,
        Some(r) => r.is_match(text),
    }
}

/// A piece of a rename template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(Vec<u8>),
    Group(usize),
}

/// Which field a rename rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Host,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub enum Rule {
    Drop(Cond),
    Keep(Cond),
    Rename {
        field: Field,
        pattern: Pattern,
        template: Vec<Piece>,
    },
    TimeWindow {
        future: Option<f64>,
        past: Option<f64>,
    },
    DropNonFinite,
    Lua,
}

impl Rule {
    /// The action name, as written in the config (also names the drop counters).
    pub fn action(&self) -> &'static str {
        match self {
            Rule::Drop(_) => "drop",
            Rule::Keep(_) => "keep",
            Rule::Rename { .. } => "rename",
            Rule::TimeWindow { .. } => "time_window",
            Rule::DropNonFinite => "drop_non_finite",
            Rule::Lua => "lua",
        }
    }
}

/// Parses a rename template in the regex crate's syntax (`$1`, `$name`, `${name}`, `$$`),
/// resolving group names against `pattern`. An unknown group is an error rather than the
/// empty text the regex crate would silently put there.
pub fn parse_template(to: &str, pattern: &Regex) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = Vec::new();
    let b = to.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            lit.push(b[i]);
            i += 1;
            continue;
        }
        let rest = &to[i + 1..];
        if rest.starts_with('$') {
            lit.push(b'$');
            i += 2;
            continue;
        }
        let (group, used) = if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("'to' {to:?}: unclosed '${{'"))?;
            (&r[..end], end + 2)
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], end)
        };
        if group.is_empty() {
            return Err(format!(
                "'to' {to:?}: '$' must be followed by a group number or name (write $$ for a '$')"
            ));
        }
        let index = match group.parse::<usize>() {
            Ok(n) if n < pattern.captures_len() => n,
            Ok(n) => {
                return Err(format!(
                    "'to' {to:?}: group {n} does not exist (the regex has {} group(s))",
                    pattern.captures_len() - 1
                ))
            }
            Err(_) => pattern
                .capture_names()
                .position(|n| n == Some(group))
                .ok_or_else(|| {
                    format!(
                        "'to' {to:?}: the regex has no group named {group:?} (write ${{1}}x, not $1x, before letters)"
                    )
                })?,
        };
        if !lit.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut lit)));
        }
        pieces.push(Piece::Group(index));
        i += 1 + used;
    }
    if !lit.is_empty() {
        pieces.push(Piece::Literal(lit));
    }
    Ok(pieces)
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) if f.is_finite() => Some(*f),
        _ => None,
    }
}

/// Reads and compiles `processor_rules` (absent or `None`: no rules).
pub fn from_config(cfg: &Config) -> Result<Vec<Rule>, RuleError> {
    let Some(raw) = cfg.raw("processor_rules") else {
        return Ok(Vec::new());
    };
    if raw.is_none() {
        return Ok(Vec::new());
    }
    let line = cfg.line_of("processor_rules").unwrap_or(0);
    let err = |index: usize, message: String| RuleError {
        origin: cfg.origin().to_string(),
        line,
        index,
        message,
    };
    let items = raw.as_items().ok_or_else(|| {
        err(
            0,
            format!(
                "expected a list of tables (dicts), found {}",
                raw.describe()
            ),
        )
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_rule(item).map_err(|m| err(i, m)))
        .collect()
}

/// One rule from its table.
pub fn parse_rule(item: &Value) -> Result<Rule, String> {
    let dict = item
        .as_dict()
        .ok_or_else(|| format!("expected a table (dict), found {}", item.describe()))?;
    let mut keys: Vec<(&str, &Value)> = Vec::with_capacity(dict.len());
    for (k, v) in dict {
        let k = k
            .as_str()
            .ok_or_else(|| format!("keys must be strings, found {}", k.describe()))?;
        keys.push((k, v));
    }
    let get = |k: &str| keys.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let action = match get("action") {
        Some(Value::Str(s)) => s.as_str(),
        Some(v) => return Err(format!("'action' must be a string, found {}", v.describe())),
        None => {
            return Err(
                "no 'action' (drop, keep, rename, time_window, drop_non_finite or lua)".into(),
            )
        }
    };
    let allowed: &[&str] = match action {
        "drop" | "keep" => &["name", "host"],
        "rename" => &["name", "host", "to", "field"],
        "time_window" => &["future", "past"],
        "drop_non_finite" | "lua" => &[],
        other => {
            return Err(format!(
                "unknown action {other:?} (use drop, keep, rename, time_window, drop_non_finite or lua)"
            ))
        }
    };
    for (k, _) in &keys {
        if *k != "action" && !allowed.contains(k) {
            let expected = if allowed.is_empty() {
                "it takes no other key".to_string()
            } else {
                format!("it takes {}", allowed.join(", "))
            };
            return Err(format!("{action}: unknown key {k:?} ({expected})"));
        }
    }
    let regex = |k: &str| -> Result<Option<Pattern>, String> {
        match get(k) {
            None | Some(Value::None) => Ok(None),
            Some(Value::Str(s)) => Pattern::new(s)
                .map(Some)
                .map_err(|e| format!("{action}: {k} regex {s:?}: {}", one_line(&e.to_string()))),
            Some(v) => Err(format!(
                "{action}: {k} must be a regex (a string), found {}",
                v.describe()
            )),
        }
    };
    Ok(match action {
        "drop" | "keep" => {
            let cond = Cond {
                name: regex("name")?,
                host: regex("host")?,
            };
            if cond.name.is_none() && cond.host.is_none() {
                return Err(format!(
                    "{action}: give a 'name' regex, a 'host' regex, or both"
                ));
            }
            if action == "drop" {
                Rule::Drop(cond)
            } else {
                Rule::Keep(cond)
            }
        }
        "rename" => {
            let field = match get("field") {
                None | Some(Value::None) => None,
                Some(Value::Str(s)) if s == "name" => Some(Field::Name),
                Some(Value::Str(s)) if s == "host" => Some(Field::Host),
                Some(v) => {
                    return Err(format!(
                        "rename: field must be \"name\" or \"host\", found {}",
                        v.describe()
                    ))
                }
            };
            let (name, host) = (regex("name")?, regex("host")?);
            let (field, pattern) = match (field, name, host) {
                (Some(Field::Name) | None, Some(p), None) => (Field::Name, p),
                (Some(Field::Host) | None, None, Some(p)) => (Field::Host, p),
                (_, Some(_), Some(_)) => {
                    return Err("rename: give the regex as 'name' or as 'host', not both".into())
                }
                (Some(f), _, _) => {
                    let k = if f == Field::Name { "name" } else { "host" };
                    return Err(format!("rename: field = {k:?} needs a '{k}' regex"));
                }
                (None, None, None) => {
                    return Err("rename: give the regex to replace as 'name' (or 'host')".into())
                }
            };
            let to = match get("to") {
                Some(Value::Str(s)) => s.as_str(),
                Some(v) => {
                    return Err(format!(
                        "rename: 'to' must be a string, found {}",
                        v.describe()
                    ))
                }
                None => return Err("rename: no 'to' (the replacement)".into()),
            };
            if to.chars().any(char::is_whitespace) {
                return Err(format!(
                    "rename: 'to' {to:?} holds whitespace, which a sample field cannot"
                ));
            }
            let template =
                parse_template(to, &pattern.regex).map_err(|m| format!("rename: {m}"))?;
            Rule::Rename {
                field,
                pattern,
                template,
            }
        }
        "time_window" => {
            let secs = |k: &str| -> Result<Option<f64>, String> {
                match get(k) {
                    None | Some(Value::None) => Ok(None),
                    Some(v) => match num(v) {
                        Some(s) if s >= 0.0 => Ok(Some(s)),
                        _ => Err(format!(
                            "time_window: {k} must be a number of seconds >= 0, found {}",
                            v.describe()
                        )),
                    },
                }
            };
            let (future, past) = (secs("future")?, secs("past")?);
            if future.is_none() && past.is_none() {
                return Err("time_window: give 'future', 'past', or both (seconds)".into());
            }
            Rule::TimeWindow { future, past }
        }
        "drop_non_finite" => Rule::DropNonFinite,
        _ => Rule::Lua,
    })
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_toml(text: &str) -> Result<Vec<Rule>, RuleError> {
        from_config(&Config::parse_toml(text, "t.toml").unwrap())
    }

    #[test]
    fn the_seed_readme_timediff_in_four_lines() {
        let rules =
            rules_toml("[[processor_rules]]\naction = \"time_window\"\nfuture = 120\npast = 300\n")
                .unwrap();
        assert!(matches!(
            rules[..],
            [Rule::TimeWindow {
                future: Some(f),
                past: Some(p)
            }] if f == 120.0 && p == 300.0
        ));
        // The same in an original (Python) config.
        let cfg = Config::parse_python(
            "processor_rules = [{'action': 'time_window', 'future': 120, 'past': 300}]\n",
            "t.conf",
        )
        .unwrap();
        assert!(matches!(
            from_config(&cfg).unwrap()[..],
            [Rule::TimeWindow { .. }]
        ));
    }

    #[test]
    fn every_action() {
        let rules = rules_toml(
            r#"processor_rules = [
                { action = "drop", name = '^debug\.' },
                { action = "keep", host = '^web', name = 'x' },
                { action = "rename", name = '^a\.(?P<b>\w+)', to = 'z.${b}.$1.$$' },
                { action = "rename", field = "host", host = '\.example\.com$', to = '' },
                { action = "time_window", past = 60.5 },
                { action = "drop_non_finite" },
                { action = "lua" },
            ]"#,
        )
        .unwrap();
        let actions: Vec<&str> = rules.iter().map(Rule::action).collect();
        assert_eq!(
            actions,
            [
                "drop",
                "keep",
                "rename",
                "rename",
                "time_window",
                "drop_non_finite",
                "lua"
            ]
        );
        match &rules[2] {
            Rule::Rename {
                field, template, ..
            } => {
                assert_eq!(*field, Field::Name);
                assert_eq!(
                    template,
                    &[
                        Piece::Literal(b"z.".to_vec()),
                        Piece::Group(1),
                        Piece::Literal(b".".to_vec()),
                        Piece::Group(1),
                        Piece::Literal(b".$".to_vec()),
                    ]
                );
            }
            r => panic!("{r:?}"),
        }
        assert!(
            matches!(&rules[3], Rule::Rename { field: Field::Host, template, .. } if template.is_empty())
        );
    }

    #[test]
    fn errors_name_the_rule_and_the_key() {
        let cases = [
            (
                r#"processor_rules = "x""#,
                "rule 0: expected a list of tables (dicts), found a string",
            ),
            (
                r#"processor_rules = [1]"#,
                "rule 0: expected a table (dict), found an integer",
            ),
            (
                r#"processor_rules = [{ name = "x" }]"#,
                "rule 0: no 'action'",
            ),
            (
                r#"processor_rules = [{ action = "dorp" }]"#,
                "unknown action \"dorp\"",
            ),
            (
                r#"processor_rules = [{ action = "drop" }, { action = "drop", nmae = "x" }]"#,
                "rule 0: drop: give a 'name' regex",
            ),
            (
                r#"processor_rules = [{ action = "drop", nmae = "x" }]"#,
                "rule 0: drop: unknown key \"nmae\" (it takes name, host)",
            ),
            (
                r#"processor_rules = [{ action = "keep", name = "(" }]"#,
                "keep: name regex \"(\"",
            ),
            (
                r#"processor_rules = [{ action = "keep", host = 3 }]"#,
                "keep: host must be a regex (a string), found an integer",
            ),
            (
                r#"processor_rules = [{ action = "rename", name = "a", to = "$2" }]"#,
                "group 2 does not exist (the regex has 0 group(s))",
            ),
            (
                r#"processor_rules = [{ action = "rename", name = "(a)", to = "$1x" }]"#,
                "no group named \"1x\"",
            ),
            (
                r#"processor_rules = [{ action = "rename", name = "a", to = "x y" }]"#,
                "holds whitespace",
            ),
            (
                r#"processor_rules = [{ action = "rename", name = "a", to = "${1" }]"#,
                "unclosed",
            ),
            (
                r#"processor_rules = [{ action = "rename", name = "a", to = "$" }]"#,
                "write $$ for a '$'",
            ),
            (
                r#"processor_rules = [{ action = "rename", name = "a" }]"#,
                "no 'to'",
            ),
            (
                r#"processor_rules = [{ action = "rename", to = "a" }]"#,
                "give the regex to replace",
            ),
            (
                r#"processor_rules = [{ action = "rename", name = "a", host = "b", to = "a" }]"#,
                "not both",
            ),
            (
                r#"processor_rules = [{ action = "rename", field = "host", name = "a", to = "a" }]"#,
                "field = \"host\" needs a 'host' regex",
            ),
            (
                r#"processor_rules = [{ action = "time_window" }]"#,
                "give 'future', 'past', or both",
            ),
            (
                r#"processor_rules = [{ action = "time_window", past = -1 }]"#,
                "past must be a number of seconds >= 0, found an integer (-1)",
            ),
            (
                r#"processor_rules = [{ action = "lua", name = "x" }]"#,
                "lua: unknown key \"name\" (it takes no other key)",
            ),
        ];
        for (text, want) in cases {
            let e = rules_toml(text).unwrap_err().to_string();
            assert!(
                e.starts_with("t.toml: line 1: processor_rules: rule "),
                "{e}"
            );
            assert!(e.contains(want), "{text}\n  got: {e}\n want: {want}");
        }
    }

    #[test]
    fn anchored_literals_are_quick_tests() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            (r"^servers\.", Some("servers."), None),
            (r"^stats\.timers\.([^.]+)\.", Some("stats.timers."), None),
            (r"\.example\.com$", None, Some(".example.com")),
            (r"^a\.b$", Some("a.b"), Some("a.b")),
            (r"servers\.", None, None),
            (r"^(a|b)x", None, None),
            (r"(?i)^abc", None, None),
            (r"^a|b", None, None),
            (r"(?m)^a", None, None),
        ];
        for (re, prefix, suffix) in cases {
            let p = Pattern::new(re).unwrap();
            assert_eq!(p.prefix.as_deref(), prefix.map(str::as_bytes), "{re}");
            assert_eq!(p.suffix.as_deref(), suffix.map(str::as_bytes), "{re}");
        }
        // Only a literal with no groups is located without the regex.
        let whole: Vec<bool> = [
            r"\.example\.com$",
            r"^servers\.",
            r"^(servers)\.",
            r"^servers\.\w",
        ]
        .iter()
        .map(|re| Pattern::new(re).unwrap().whole.is_some())
        .collect();
        assert_eq!(whole, [true, true, false, false]);
        // The quick test never turns away a text the regex matches.
        let texts = [
            "servers.x",
            "stats.timers.a.b",
            "h.example.com",
            "a.b",
            "bx",
            "ABC",
            "xa\na",
        ];
        for (re, _, _) in cases {
            let p = Pattern::new(re).unwrap();
            for t in texts {
                assert_eq!(
                    p.is_match(t.as_bytes()),
                    p.regex.is_match(t.as_bytes()),
                    "{re} on {t:?}"
                );
            }
        }
    }

    #[test]
    fn absent_or_none_means_no_rules() {
        assert!(from_config(&Config::empty()).unwrap().is_empty());
        let cfg = Config::parse_python("processor_rules = None\n", "t.conf").unwrap();
        assert!(from_config(&cfg).unwrap().is_empty());
    }
}
