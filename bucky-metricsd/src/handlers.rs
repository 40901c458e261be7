//! Handlers: which flush interval a metric gets. `metricsd_handlers` entries are
//! `(regex, interval[, priority])`; a regex matches at the start of the metric name (Python's
//! `re.match`, as in the original); among the handlers that match, the largest priority wins
//! and ties go to the first in config order; `metricsd_default_interval` catches the rest.

use std::time::Duration;

use bucky_proto::config::{Config, Value};
use regex::RegexSet;
use thiserror::Error;

/// Priority of an entry given as `(regex, interval)`, as in the original.
pub const DEFAULT_PRIORITY: i64 = 100;

/// One configured handler.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerSpec {
    pub pattern: String,
    pub interval: Duration,
    pub priority: i64,
}

#[derive(Debug, Error)]
pub enum HandlerError {
    #[error("{origin}: line {line}: metricsd_handlers: {message}")]
    Config {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("metricsd_handlers: regex {pattern:?}: {source}")]
    Regex {
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("{key}: {value} is not a number of seconds > 0")]
    Interval { key: String, value: f64 },
}

/// A positive interval in seconds, or an error naming `key`.
pub fn interval(key: &str, secs: f64) -> Result<Duration, HandlerError> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(HandlerError::Interval {
            key: key.into(),
            value: secs,
        }),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// Reads `metricsd_handlers`: a list whose entries are `(regex, interval)` or
/// `(regex, interval, priority)` (tuples or lists), or tables/dicts with the keys `regex`,
/// `interval` and optionally `priority`.
pub fn from_config(cfg: &Config) -> Result<Vec<HandlerSpec>, HandlerError> {
    let Some(raw) = cfg.raw("metricsd_handlers") else {
        return Ok(Vec::new());
    };
    let line = cfg.line_of("metricsd_handlers").unwrap_or(0);
    let fail = |message: String| HandlerError::Config {
        origin: cfg.origin().to_string(),
        line,
        message,
    };
    if raw.is_none() {
        return Ok(Vec::new());
    }
    let items = raw
        .as_items()
        .ok_or_else(|| fail(format!("expected a list, found {}", raw.describe())))?;
    let mut specs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let bad = || {
            fail(format!(
                "entry {i}: expected (regex, interval) or (regex, interval, priority), found {}",
                item.describe()
            ))
        };
        let (pattern, secs, priority) = if let Some(dict) = item.as_dict() {
            let mut pattern = None;
            let mut secs = None;
            let mut priority = Some(Value::Int(DEFAULT_PRIORITY));
            for (k, v) in dict {
                match k.as_str() {
                    Some("regex") => pattern = Some(v),
                    Some("interval") => secs = Some(v),
                    Some("priority") => priority = Some(v.clone()),
                    _ => {
                        return Err(fail(format!(
                            "entry {i}: unknown key {k} (use regex, interval, priority)"
                        )))
                    }
                }
            }
            (pattern.ok_or_else(bad)?, secs.ok_or_else(bad)?, priority)
        } else {
            match item.as_items().ok_or_else(bad)? {
                [p, s] => (p, s, Some(Value::Int(DEFAULT_PRIORITY))),
                [p, s, pr] => (p, s, Some(pr.clone())),
                _ => return Err(bad()),
            }
        };
        let pattern = pattern.as_str().ok_or_else(bad)?.to_string();
        let secs = number(secs).ok_or_else(bad)?;
        let priority = match priority {
            Some(Value::Int(p)) => p,
            _ => return Err(bad()),
        };
        let interval =
            interval("metricsd_handlers", secs).map_err(|e| fail(format!("entry {i}: {e}")))?;
        specs.push(HandlerSpec {
            pattern,
            interval,
            priority,
        });
    }
    Ok(specs)
}

/// The handlers and the routing from a metric name to one of them. Handler `i <
/// specs.len()` is the configured one; the last index is the default catch-all.
#[derive(Debug, Clone)]
pub struct Router {
    specs: Vec<HandlerSpec>,
    set: RegexSet,
    default_interval: Duration,
}

impl Router {
    pub fn new(
        specs: Vec<HandlerSpec>,
        default_interval: Duration,
    ) -> Result<Router, HandlerError> {
        // Check each regex alone first, so the error names the one at fault.
        for s in &specs {
            regex::Regex::new(&s.pattern).map_err(|e| HandlerError::Regex {
                pattern: s.pattern.clone(),
                source: Box::new(e),
            })?;
        }
        let anchored = specs.iter().map(|s| format!("^(?:{})", s.pattern));
        let set = RegexSet::new(anchored).map_err(|e| HandlerError::Regex {
            pattern: specs
                .iter()
                .map(|s| s.pattern.as_str())
                .collect::<Vec<_>>()
                .join(" | "),
            source: Box::new(e),
        })?;
        Ok(Router {
            specs,
            set,
            default_interval,
        })
    }

    /// Number of handlers, the default included.
    pub fn len(&self) -> usize {
        self.specs.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The default handler's index.
    pub fn default_index(&self) -> usize {
        self.specs.len()
    }

    pub fn interval(&self, handler: usize) -> Duration {
        self.specs
            .get(handler)
            .map_or(self.default_interval, |s| s.interval)
    }

    /// A name for messages: the regex, or "default".
    pub fn describe(&self, handler: usize) -> &str {
        self.specs
            .get(handler)
            .map_or("default", |s| s.pattern.as_str())
    }

    /// The handler for metric `name`.
    pub fn route(&self, name: &str) -> usize {
        if self.specs.is_empty() {
            return self.default_index();
        }
        let mut best: Option<usize> = None;
        for i in self.set.matches(name).iter() {
            // matches() yields indexes in increasing (config) order: only a strictly larger
            // priority replaces the current best.
            if best.map_or(true, |b| self.specs[i].priority > self.specs[b].priority) {
                best = Some(i);
            }
        }
        best.unwrap_or(self.default_index())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(p: &str, secs: u64, priority: i64) -> HandlerSpec {
        HandlerSpec {
            pattern: p.into(),
            interval: Duration::from_secs(secs),
            priority,
        }
    }

    #[test]
    fn largest_priority_wins_ties_go_to_config_order() {
        let r = Router::new(
            vec![
                spec("app\\.", 1, 100),
                spec("app\\.db\\.", 2, 200),
                spec("app\\.db\\.slow", 3, 50),
                spec("app\\.web", 4, 100),
                spec("app\\.w", 5, 100),
            ],
            Duration::from_secs(10),
        )
        .unwrap();
        let cases = [
            ("app.x", 0),
            ("app.db.slow.q", 1), // 200 beats 100 and 50
            ("app.web.hits", 0),  // 100 ties: first in config order
            ("other.app.x", 5),   // match at the start only: the default
            ("xapp.", 5),
        ];
        for (name, want) in cases {
            assert_eq!(r.route(name), want, "{name}");
        }
        assert_eq!(r.interval(1), Duration::from_secs(2));
        assert_eq!(r.interval(5), Duration::from_secs(10));
        assert_eq!(r.describe(5), "default");
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn no_handlers_means_the_default() {
        let r = Router::new(Vec::new(), Duration::from_millis(2500)).unwrap();
        assert_eq!(r.route("anything"), 0);
        assert_eq!(r.interval(0), Duration::from_millis(2500));
    }

    #[test]
    fn alternation_is_anchored_as_a_whole() {
        let r = Router::new(vec![spec("a|b", 1, 1)], Duration::from_secs(10)).unwrap();
        assert_eq!(r.route("b.x"), 0);
        assert_eq!(r.route("xb"), 1);
    }

    #[test]
    fn config_forms() {
        let py = Config::parse_python(
            "metricsd_handlers = [('^app', 1.5), ['db', 60, 200], ('x', 2, -1)]\n",
            "t.conf",
        )
        .unwrap();
        let specs = from_config(&py).unwrap();
        assert_eq!(
            specs,
            vec![
                HandlerSpec {
                    pattern: "^app".into(),
                    interval: Duration::from_millis(1500),
                    priority: 100
                },
                spec("db", 60, 200),
                spec("x", 2, -1),
            ]
        );
        let toml = Config::parse_toml(
            "metricsd_handlers = [['^app', 1.5], { regex = 'db', interval = 60, priority = 200 }, { regex = 'x', interval = 2, priority = -1 }]\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(from_config(&toml).unwrap(), specs);
        assert!(from_config(&Config::empty()).unwrap().is_empty());
    }

    #[test]
    fn config_errors_name_the_entry() {
        let cases = [
            (
                "metricsd_handlers = 'x'\n",
                "expected a list, found a string",
            ),
            (
                "metricsd_handlers = [('x',)]\n",
                "entry 0: expected (regex, interval)",
            ),
            ("metricsd_handlers = [('x', 'y')]\n", "entry 0: expected"),
            ("metricsd_handlers = [('x', 1, 2.5)]\n", "entry 0: expected"),
            (
                "metricsd_handlers = [('a', 1), ('x', -1)]\n",
                "entry 1: metricsd_handlers: -1 is not a number of seconds > 0",
            ),
            (
                "metricsd_handlers = [('x', 0)]\n",
                "0 is not a number of seconds > 0",
            ),
            (
                "metricsd_handlers = [{'regex': 'x', 'interval': 1, 'prio': 2}]\n",
                "unknown key \"prio\"",
            ),
        ];
        for (text, want) in cases {
            let cfg = Config::parse_python(text, "t.conf").unwrap();
            let e = from_config(&cfg).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.starts_with("t.conf: line 1: metricsd_handlers: "), "{e}");
        }
        let e = Router::new(vec![spec("(", 1, 1)], Duration::from_secs(1)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("metricsd_handlers: regex \"(\": "),
            "{e}"
        );
    }
}
