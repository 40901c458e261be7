//! The metric table: applies decoded records to the metrics of each (host, name), routes each
//! metric to its handler once, and renders a handler's metrics as sample lines at its flush.
//!
//! Bounded: at most `max_metrics` metrics; a record that would create one more is dropped and
//! counted, while the existing metrics keep working.

use std::collections::HashMap;

use bucky_proto::sample::{push_line, sanitize_whitespace, Sample};

use crate::handlers::Router;
use crate::metrics::Metric;
use crate::wire::{Action, MetricType, Packet, Record, RecordError};

#[derive(Debug)]
struct Entry {
    handler: usize,
    metric: Metric,
}

/// What one record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Updated,
    Cleared,
    Deleted,
    /// A clear or delete of a metric that does not exist: nothing to do.
    Absent,
    /// The (host, name) holds a metric of another type; the record was ignored.
    TypeConflict {
        stored: MetricType,
    },
    /// The table is full; the new metric was not created.
    Full,
}

/// What one datagram did, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketSummary {
    /// Records applied (created, updated, cleared, deleted or absent).
    pub records: u64,
    pub bad_records: u64,
    pub type_conflicts: u64,
    /// Records dropped because the table was full.
    pub dropped: u64,
}

/// What one flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushSummary {
    pub samples: u64,
    /// Values that came out non-finite (a sum past f64's range); not written.
    pub non_finite: u64,
}

/// Every metric, by host and name.
#[derive(Debug)]
pub struct Store {
    router: Router,
    hosts: HashMap<Box<str>, HashMap<Box<str>, Entry>>,
    len: usize,
    max_metrics: usize,
    rng: fastrand::Rng,
    scratch: Vec<f64>,
    name_buf: String,
}

impl Store {
    pub fn new(router: Router, max_metrics: usize) -> Store {
        Store::with_rng(router, max_metrics, fastrand::Rng::new())
    }

    /// A store whose histograms draw from `rng` (tests use a seeded one).
    pub fn with_rng(router: Router, max_metrics: usize, rng: fastrand::Rng) -> Store {
        Store {
            router,
            hosts: HashMap::new(),
            len: 0,
            max_metrics,
            rng,
            scratch: Vec::new(),
            name_buf: String::new(),
        }
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Metrics held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Applies every record of `packet`; `on_error` sees each malformed record.
    pub fn apply_packet(
        &mut self,
        packet: &Packet<'_>,
        now: f64,
        on_error: &mut dyn FnMut(&RecordError),
    ) -> PacketSummary {
        let host = sanitize_whitespace(packet.host);
        let mut s = PacketSummary::default();
        for r in packet.records() {
            match r {
                Ok(r) => match self.apply(&host, &r, now) {
                    Applied::TypeConflict { .. } => s.type_conflicts += 1,
                    Applied::Full => s.dropped += 1,
                    _ => s.records += 1,
                },
                Err(e) => {
                    s.bad_records += 1;
                    on_error(&e);
                }
            }
        }
        s
    }

    /// Applies one record from `host` (whitespace already replaced).
    pub fn apply(&mut self, host: &str, r: &Record<'_>, now: f64) -> Applied {
        let name = sanitize_whitespace(r.name);
        let name: &str = &name;
        let existing = self.hosts.get_mut(host).and_then(|m| m.get_mut(name));
        if let Some(entry) = existing {
            let stored = entry.metric.kind();
            if stored != r.metric {
                return Applied::TypeConflict { stored };
            }
            return match r.action {
                Action::Update(n) => {
                    entry.metric.update(n.to_f64(), now);
                    Applied::Updated
                }
                Action::Clear => {
                    entry.metric.clear(now);
                    Applied::Cleared
                }
                Action::Delete => {
                    self.remove(host, name);
                    Applied::Deleted
                }
            };
        }
        let Action::Update(n) = r.action else {
            return Applied::Absent;
        };
        if self.len >= self.max_metrics {
            return Applied::Full;
        }
        let mut metric = Metric::new(r.metric, now, &mut self.rng);
        metric.update(n.to_f64(), now);
        let handler = self.router.route(name);
        self.hosts
            .entry(host.into())
            .or_default()
            .insert(name.into(), Entry { handler, metric });
        self.len += 1;
        Applied::Created
    }

    fn remove(&mut self, host: &str, name: &str) {
        if let Some(names) = self.hosts.get_mut(host) {
            if names.remove(name).is_some() {
                self.len -= 1;
            }
            if names.is_empty() {
                self.hosts.remove(host);
            }
        }
    }

    /// Appends the sample lines of every metric of `handler` to `out`, stamped `timestamp`
    /// (Unix seconds); `now` is the metrics' monotonic clock.
    pub fn flush(
        &mut self,
        handler: usize,
        now: f64,
        timestamp: f64,
        out: &mut Vec<u8>,
    ) -> FlushSummary {
        let Store {
            hosts,
            scratch,
            name_buf,
            ..
        } = self;
        let mut s = FlushSummary::default();
        for (host, names) in hosts.iter_mut() {
            let host = (!host.is_empty()).then_some(&**host);
            for (name, entry) in names.iter_mut() {
                if entry.handler != handler {
                    continue;
                }
                entry.metric.flush(now, scratch, &mut |group, stat, value| {
                    if !value.is_finite() {
                        s.non_finite += 1;
                        return;
                    }
                    name_buf.clear();
                    name_buf.push_str(name);
                    name_buf.push_str(group);
                    name_buf.push_str(stat);
                    push_line(
                        out,
                        &Sample {
                            name: name_buf,
                            value,
                            timestamp,
                            host,
                        },
                    );
                    s.samples += 1;
                });
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::handlers::HandlerSpec;
    use crate::wire::{decode, Encoder, Number};

    fn store(max: usize) -> Store {
        let router = Router::new(
            vec![HandlerSpec {
                pattern: "fast\\.".into(),
                interval: Duration::from_secs(1),
                priority: 100,
            }],
            Duration::from_secs(10),
        )
        .unwrap();
        Store::with_rng(router, max, fastrand::Rng::with_seed(9))
    }

    fn lines(s: &mut Store, handler: usize) -> Vec<String> {
        let mut out = Vec::new();
        s.flush(handler, 10.0, 1795650000.0, &mut out);
        let mut l: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        l.sort();
        l
    }

    #[test]
    fn records_update_route_and_flush_with_the_host() {
        let mut s = store(100);
        let mut e = Encoder::new("web 1").unwrap();
        e.update(MetricType::Counter, "fast.hits", Number::U8(2))
            .unwrap();
        e.update(MetricType::Counter, "fast.hits", Number::I8(-1))
            .unwrap();
        e.update(MetricType::Gauge, "slow load", Number::F64(0.5))
            .unwrap();
        let bytes = e.into_bytes();
        let p = decode(&bytes).unwrap();
        let sum = s.apply_packet(&p, 1.0, &mut |e| panic!("{e}"));
        assert_eq!(sum.records, 3);
        assert_eq!(s.len(), 2);
        assert_eq!(lines(&mut s, 0), ["fast.hits 1 1795650000 web_1"]);
        assert_eq!(lines(&mut s, 1), ["slow_load 0.5 1795650000 web_1"]);
    }

    #[test]
    fn actions_conflicts_and_the_cap() {
        let mut s = store(2);
        let c = |name: &'static str, action| Record {
            metric: MetricType::Counter,
            name,
            action,
        };
        let up = Action::Update(Number::U8(5));
        assert_eq!(s.apply("", &c("a", Action::Clear), 0.0), Applied::Absent);
        assert_eq!(s.apply("", &c("a", Action::Delete), 0.0), Applied::Absent);
        assert_eq!(s.apply("", &c("a", up), 0.0), Applied::Created);
        assert_eq!(s.apply("", &c("a", up), 0.0), Applied::Updated);
        assert_eq!(lines(&mut s, 1), ["a 10 1795650000"], "no host field");
        let g = Record {
            metric: MetricType::Gauge,
            name: "a",
            action: up,
        };
        assert_eq!(
            s.apply("", &g, 0.0),
            Applied::TypeConflict {
                stored: MetricType::Counter
            }
        );
        // Another host is another metric.
        assert_eq!(s.apply("h2", &g, 0.0), Applied::Created);
        assert_eq!(s.apply("h3", &g, 0.0), Applied::Full);
        assert_eq!(s.len(), 2);
        assert_eq!(s.apply("", &c("a", Action::Clear), 0.0), Applied::Cleared);
        assert_eq!(lines(&mut s, 1), ["a 0 1795650000", "a 5 1795650000 h2"]);
        assert_eq!(s.apply("", &c("a", Action::Delete), 0.0), Applied::Deleted);
        assert_eq!(s.len(), 1);
        assert_eq!(s.apply("h3", &g, 0.0), Applied::Created, "room again");
    }

    #[test]
    fn bad_records_are_counted_and_the_rest_kept() {
        let mut s = store(100);
        let mut bytes = Encoder::new("h").unwrap().into_bytes();
        // Unknown type 7, action 2 (delete: no number follows), so its extent is known.
        bytes.extend_from_slice(&[0x72, 0x00, 0x02, b'x', 0x00]);
        let mut e = Encoder::new("h").unwrap();
        e.update(MetricType::Gauge, "g", Number::U8(1)).unwrap();
        let tail = &e.as_bytes()[1 + 4..];
        bytes.extend_from_slice(tail);
        let p = decode(&bytes).unwrap();
        let mut errors = Vec::new();
        let sum = s.apply_packet(&p, 0.0, &mut |e| errors.push(e.to_string()));
        assert_eq!(sum.bad_records, 1, "{errors:?}");
        assert_eq!(sum.records, 1);
        assert_eq!(
            errors,
            ["record at byte 5: unknown metric type in command byte 0x72"]
        );
    }

    #[test]
    fn non_finite_results_are_not_written() {
        let mut s = store(100);
        let r = Record {
            metric: MetricType::Counter,
            name: "big",
            action: Action::Update(Number::F64(f64::MAX)),
        };
        s.apply("", &r, 0.0);
        s.apply("", &r, 0.0);
        let mut out = Vec::new();
        let sum = s.flush(1, 0.0, 1.0, &mut out);
        assert_eq!(
            sum,
            FlushSummary {
                samples: 0,
                non_finite: 1
            }
        );
        assert!(out.is_empty());
    }
}
