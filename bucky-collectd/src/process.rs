//! The whole path from a received datagram to sample lines, without a socket: security
//! check, decoding, naming, rates, range checks, and the counters of everything refused,
//! skipped or dropped. The receiver and the replay feed it; tests and benchmarks call it
//! directly.

use std::borrow::Cow;
use std::net::SocketAddr;

use bucky_proto::log::{suppressed_note, RateLimit};
use bucky_proto::sample::push_number;

use crate::naming::{Converter, Converters, Fields, Named};
use crate::packet::{
    cdtime_to_seconds, CdTime, Decoder, PacketError, RawValue, Sink, ValueList, ValuesError,
    CDTIME_PER_SECOND,
};
use crate::rates::{CachedName, Rate, SeriesCache};
use crate::security::{Refusal, Security, Users};
use crate::types_db::{DataSet, TypesDb};

/// Everything counted, emitted as `bucky.collectd.<name>` and logged at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams received, and their bytes.
    pub datagrams: u64,
    pub bytes: u64,
    /// Values decoded (accepted packets, known types).
    pub values: u64,
    /// Sample lines written.
    pub samples: u64,
    /// Packets refused by the security layer, by reason.
    pub refused_truncated: u64,
    pub refused_unsigned: u64,
    pub refused_unencrypted: u64,
    pub refused_malformed: u64,
    pub refused_unknown_user: u64,
    pub refused_bad_signature: u64,
    pub refused_bad_checksum: u64,
    /// Packets whose framing broke (the rest of the packet skipped), by reason.
    pub error_truncated: u64,
    pub error_bad_part_length: u64,
    pub error_bad_string: u64,
    pub error_bad_time: u64,
    pub error_bad_values: u64,
    /// Values parts refused by types.db (only the part skipped), by reason.
    pub skipped_unknown_type: u64,
    pub skipped_value_count: u64,
    pub skipped_type_mismatch: u64,
    /// Parts of an unknown type (skipped).
    pub unknown_parts: u64,
    /// Values decoded but not written, by reason.
    pub dropped_first: u64,
    pub dropped_not_later: u64,
    pub dropped_cache_full: u64,
    pub dropped_range: u64,
    pub dropped_nonfinite: u64,
    pub dropped_converter: u64,
    pub dropped_empty_name: u64,
    pub converter_errors: u64,
    /// Series (data sources of value lists) remembered now, and forgotten so far.
    pub series: u64,
    pub expired: u64,
    /// Datagrams the kernel dropped because the socket's buffer was full.
    pub kernel_drops: u64,
    /// Datagrams longer than the receive buffer (cut short, dropped).
    pub oversized: u64,
    /// Capture file write failures.
    pub capture_errors: u64,
}

impl Counters {
    /// The counters as (name, value), in a stable order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("datagrams", self.datagrams),
            ("bytes", self.bytes),
            ("values", self.values),
            ("samples", self.samples),
            ("refused_truncated", self.refused_truncated),
            ("refused_unsigned", self.refused_unsigned),
            ("refused_unencrypted", self.refused_unencrypted),
            ("refused_malformed", self.refused_malformed),
            ("refused_unknown_user", self.refused_unknown_user),
            ("refused_bad_signature", self.refused_bad_signature),
            ("refused_bad_checksum", self.refused_bad_checksum),
            ("error_truncated", self.error_truncated),
            ("error_bad_part_length", self.error_bad_part_length),
            ("error_bad_string", self.error_bad_string),
            ("error_bad_time", self.error_bad_time),
            ("error_bad_values", self.error_bad_values),
            ("skipped_unknown_type", self.skipped_unknown_type),
            ("skipped_value_count", self.skipped_value_count),
            ("skipped_type_mismatch", self.skipped_type_mismatch),
            ("unknown_parts", self.unknown_parts),
            ("dropped_first", self.dropped_first),
            ("dropped_not_later", self.dropped_not_later),
            ("dropped_cache_full", self.dropped_cache_full),
            ("dropped_range", self.dropped_range),
            ("dropped_nonfinite", self.dropped_nonfinite),
            ("dropped_converter", self.dropped_converter),
            ("dropped_empty_name", self.dropped_empty_name),
            ("converter_errors", self.converter_errors),
            ("series", self.series),
            ("expired", self.expired),
            ("kernel_drops", self.kernel_drops),
            ("oversized", self.oversized),
            ("capture_errors", self.capture_errors),
        ]
    }

    fn refused(&mut self, r: &Refusal) -> &mut u64 {
        match r.reason() {
            "truncated" => &mut self.refused_truncated,
            "unsigned" => &mut self.refused_unsigned,
            "unencrypted" => &mut self.refused_unencrypted,
            "unknown_user" => &mut self.refused_unknown_user,
            "bad_signature" => &mut self.refused_bad_signature,
            "bad_checksum" => &mut self.refused_bad_checksum,
            _ => &mut self.refused_malformed,
        }
    }

    fn error(&mut self, e: &PacketError) -> &mut u64 {
        match e.reason() {
            "truncated" => &mut self.error_truncated,
            "bad_part_length" => &mut self.error_bad_part_length,
            "bad_string" => &mut self.error_bad_string,
            "bad_time" => &mut self.error_bad_time,
            _ => &mut self.error_bad_values,
        }
    }

    fn skipped(&mut self, e: &ValuesError) -> &mut u64 {
        match e {
            ValuesError::UnknownType(_) => &mut self.skipped_unknown_type,
            ValuesError::ValueCount { .. } => &mut self.skipped_value_count,
            ValuesError::TypeMismatch { .. } => &mut self.skipped_type_mismatch,
        }
    }
}

/// How a [`Processor`] works.
#[derive(Debug, Clone)]
pub struct Options {
    pub security: Security,
    pub counter_eq_derive: bool,
    /// Seconds without a value after which a series is forgotten.
    pub rate_expiry: f64,
    /// The most series (data sources of value lists) held at once.
    pub max_series: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            security: Security::default(),
            counter_eq_derive: false,
            rate_expiry: 600.0,
            max_series: 1_000_000,
        }
    }
}

/// Rate-limited logs, one limiter per kind of message.
#[derive(Debug, Default)]
struct Logs {
    refused: RateLimit,
    error: RateLimit,
    skipped: RateLimit,
    converter: RateLimit,
}

/// Datagrams in, sample lines out.
#[derive(Debug)]
pub struct Processor {
    types: TypesDb,
    converters: Converters,
    security: Security,
    decoder: Decoder,
    series: SeriesCache,
    counters: Counters,
    logs: Logs,
    scratch: Vec<u8>,
    name: String,
    tail: Vec<u8>,
}

impl Processor {
    pub fn new(types: TypesDb, converters: Converters, options: Options) -> Processor {
        Processor {
            types,
            converters,
            security: options.security,
            decoder: Decoder::new(options.counter_eq_derive),
            series: SeriesCache::new(options.rate_expiry, options.max_series),
            counters: Counters::default(),
            logs: Logs::default(),
            scratch: Vec::new(),
            name: String::new(),
            tail: Vec::new(),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// For the receiver's own counts (kernel drops, capture errors).
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Replaces the users (the auth file changed).
    pub fn set_users(&mut self, users: Users) {
        self.security.users = std::sync::Arc::new(users);
    }

    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Forgets idle series; call now and then with the current (arrival) time.
    pub fn tick(&mut self, now: f64) {
        self.series.sweep(now);
        self.counters.expired = self.series.expired();
        self.counters.series = self.series.len() as u64;
    }

    /// Handles one datagram that arrived at `arrival` (Unix seconds) from `source`: appends
    /// its sample lines to `out`.
    pub fn handle(&mut self, datagram: &[u8], source: SocketAddr, arrival: f64, out: &mut Vec<u8>) {
        self.counters.datagrams += 1;
        self.counters.bytes += datagram.len() as u64;
        let Processor {
            types,
            converters,
            security,
            decoder,
            series,
            counters,
            logs,
            scratch,
            name,
            tail,
        } = self;
        let opened = match security.open(datagram, scratch) {
            Ok(o) => o,
            Err(r) => {
                *counters.refused(&r) += 1;
                if let Some(n) = logs.refused.allow() {
                    log::error!("refused a packet from {source}: {r}{}", suppressed_note(n));
                }
                return;
            }
        };
        let mut emit = Emit {
            converters,
            series,
            counters,
            logs: &mut logs.skipped,
            converter_log: &mut logs.converter,
            name,
            tail,
            out,
            arrival,
            arrival_cdtime: (arrival.max(0.0) * CDTIME_PER_SECOND) as CdTime,
            source,
        };
        if let Err(e) = decoder.decode(opened.payload, types, &mut emit) {
            *counters.error(&e) += 1;
            if let Some(n) = logs.error.allow() {
                log::error!(
                    "protocol error in a packet from {source}: {e} (rest of the packet skipped){}",
                    suppressed_note(n)
                );
            }
        }
    }
}

struct Emit<'p> {
    converters: &'p Converters,
    series: &'p mut SeriesCache,
    counters: &'p mut Counters,
    logs: &'p mut RateLimit,
    converter_log: &'p mut RateLimit,
    name: &'p mut String,
    tail: &'p mut Vec<u8>,
    out: &'p mut Vec<u8>,
    arrival: f64,
    arrival_cdtime: CdTime,
    source: SocketAddr,
}

impl<'a> Sink<'a> for Emit<'_> {
    fn value_list(&mut self, vl: &ValueList<'a>, set: &DataSet, values: &[RawValue]) {
        let time = vl.time.unwrap_or(self.arrival_cdtime);
        let timestamp = cdtime_to_seconds(time);
        let host = sanitize(vl.host);
        // Looked up only when a name is not remembered yet.
        let mut converter: Option<Option<&Converter>> = None;
        // The end of every line of this value list: " TIMESTAMP[ HOST]\n".
        self.tail.clear();
        self.tail.push(b' ');
        push_number(self.tail, timestamp);
        if !host.is_empty() {
            self.tail.push(b' ');
            self.tail.extend_from_slice(host.as_bytes());
        }
        self.tail.push(b'\n');
        let mut series = self.series.get(vl, values.len(), self.arrival);
        for (i, (source, value)) in set.sources.iter().zip(values).enumerate() {
            self.counters.values += 1;
            let cached = match series.as_deref().map(|s| s.name(i)) {
                Some(CachedName::Name(n)) => {
                    self.name.clear();
                    self.name.push_str(n);
                    Some(true)
                }
                Some(CachedName::Drop) => Some(false),
                Some(CachedName::Unknown) | None => None,
            };
            match cached {
                Some(true) => {}
                Some(false) => {
                    self.counters.dropped_converter += 1;
                    continue;
                }
                None => {
                    let fields = Fields {
                        host: vl.host,
                        plugin: vl.plugin,
                        plugin_instance: vl.plugin_instance,
                        type_: vl.type_,
                        type_instance: vl.type_instance,
                        value_name: &source.name,
                        value_kind: source.kind,
                        value: value.as_f64(),
                        time: timestamp,
                    };
                    let converters = self.converters;
                    let conv =
                        *converter.get_or_insert_with(|| converters.get(vl.plugin).map(|(c, _)| c));
                    // A Lua converter sees values and times, so its names are not remembered.
                    let cacheable = conv.map_or(true, Converter::is_pure);
                    let named = converters.name_with(conv, &fields, self.name);
                    if let Ok(Named::Name) = named {
                        if let Cow::Owned(clean) = sanitize(self.name) {
                            *self.name = clean;
                        }
                    }
                    if cacheable {
                        if let Some(s) = series.as_deref_mut() {
                            match named {
                                Ok(Named::Name) => {
                                    s.set_name(i, CachedName::Name(self.name.as_str().into()))
                                }
                                Ok(Named::Dropped | Named::Empty) => {
                                    s.set_name(i, CachedName::Drop)
                                }
                                Err(_) => {}
                            }
                        }
                    }
                    match named {
                        Ok(Named::Name) => {}
                        Ok(Named::Dropped) => {
                            self.counters.dropped_converter += 1;
                            continue;
                        }
                        Ok(Named::Empty) => {
                            self.counters.dropped_empty_name += 1;
                            continue;
                        }
                        Err(e) => {
                            self.counters.converter_errors += 1;
                            if let Some(n) = self.converter_log.allow() {
                                log::error!("{e} (value dropped){}", suppressed_note(n));
                            }
                            continue;
                        }
                    }
                }
            }
            let rate = match series.as_deref_mut() {
                Some(s) => s.rate(i, *value, time),
                None => match value {
                    RawValue::Gauge(v) => Rate::Value(*v),
                    _ => Rate::CacheFull,
                },
            };
            let v = match rate {
                Rate::Value(v) => v,
                Rate::First => {
                    self.counters.dropped_first += 1;
                    continue;
                }
                Rate::NotLater => {
                    self.counters.dropped_not_later += 1;
                    continue;
                }
                Rate::CacheFull => {
                    self.counters.dropped_cache_full += 1;
                    continue;
                }
            };
            if !v.is_finite() {
                self.counters.dropped_nonfinite += 1;
                continue;
            }
            if !source.in_range(v) {
                self.counters.dropped_range += 1;
                continue;
            }
            // push_line's format, with the shared tail formatted once per value list.
            self.out.extend_from_slice(self.name.as_bytes());
            self.out.push(b' ');
            push_number(self.out, v);
            self.out.extend_from_slice(self.tail);
            self.counters.samples += 1;
        }
    }

    fn skipped(&mut self, vl: &ValueList<'a>, error: ValuesError) {
        *self.counters.skipped(&error) += 1;
        if let Some(n) = self.logs.allow() {
            log::warn!(
                "values of {}/{}/{} from {} skipped: {error}{}",
                vl.host,
                vl.plugin,
                vl.type_,
                self.source,
                suppressed_note(n)
            );
        }
    }

    fn unknown_part(&mut self, _kind: u16) {
        self.counters.unknown_parts += 1;
    }
}

/// Whitespace would split the sample line's fields: replace it with `_`.
fn sanitize(text: &str) -> Cow<'_, str> {
    if text.bytes().all(|b| b > b' ' && b < 0x7f) {
        Cow::Borrowed(text)
    } else {
        bucky_proto::sample::sanitize_whitespace(text)
    }
}

#[cfg(test)]
mod tests;
