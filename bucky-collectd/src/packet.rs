//! The collectd binary network protocol: a pure decoder from the bytes of a (plain) packet to
//! value lists, checked against types.db. Signing and encryption are a layer in front of it
//! ([`crate::security`]).
//!
//! A packet is a run of parts, each `type:u16 length:u16 data[length-4]`, big-endian. The
//! string parts (host, plugin, plugin instance, type, type instance) and the time and
//! interval parts set the current state; each values part yields one value list with that
//! state. Nothing carries over between packets.
//!
//! Two kinds of errors:
//! * [`PacketError`]: the framing is broken (a truncated part, a length under 4, a string
//!   without its NUL, a time that is not 8 bytes, a values part whose length does not add
//!   up). The rest of the packet is skipped; the value lists before it were delivered.
//! * [`ValuesError`]: a well-framed values part that types.db refuses (unknown type, wrong
//!   number or kinds of values). Only that part is skipped: the state is intact, so the
//!   packet's other value lists are still good.
//!
//! Unknown part types are skipped (their length is known), as collectd does. Notification
//! parts (message, severity) and signature or encryption parts inside a payload are
//! ignored. No input can panic, loop or allocate beyond the packet's size.

use thiserror::Error;

use crate::types_db::{DataSet, DsKind, TypesDb};

/// Part type codes.
pub mod part {
    pub const HOST: u16 = 0x0000;
    pub const TIME: u16 = 0x0001;
    pub const PLUGIN: u16 = 0x0002;
    pub const PLUGIN_INSTANCE: u16 = 0x0003;
    pub const TYPE: u16 = 0x0004;
    pub const TYPE_INSTANCE: u16 = 0x0005;
    pub const VALUES: u16 = 0x0006;
    pub const INTERVAL: u16 = 0x0007;
    pub const TIME_HR: u16 = 0x0008;
    pub const INTERVAL_HR: u16 = 0x0009;
    pub const MESSAGE: u16 = 0x0100;
    pub const SEVERITY: u16 = 0x0101;
    pub const SIGNATURE: u16 = 0x0200;
    pub const ENCRYPTION: u16 = 0x0210;
}

/// collectd's high-resolution time: units of 2^-30 seconds.
pub type CdTime = u64;

/// Seconds in a [`CdTime`] unit's denominator.
pub const CDTIME_PER_SECOND: f64 = 1_073_741_824.0;

/// Converts whole seconds (the old time part) to [`CdTime`], saturating.
pub fn seconds_to_cdtime(secs: u64) -> CdTime {
    secs.saturating_mul(1 << 30)
}

/// A [`CdTime`] as Unix seconds, rounded to the microsecond: finer than any sender's clock,
/// and it prints short (`1795649978.185123`).
pub fn cdtime_to_seconds(t: CdTime) -> f64 {
    let secs = t >> 30;
    let frac = t & ((1 << 30) - 1);
    let micros = (frac * 1_000_000 + (1 << 29)) >> 30;
    secs as f64 + micros as f64 / 1e6
}

/// One value as it was on the wire, decoded by its types.db kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RawValue {
    Counter(u64),
    Gauge(f64),
    Derive(i64),
    Absolute(u64),
}

impl RawValue {
    pub fn kind(&self) -> DsKind {
        match self {
            RawValue::Counter(_) => DsKind::Counter,
            RawValue::Gauge(_) => DsKind::Gauge,
            RawValue::Derive(_) => DsKind::Derive,
            RawValue::Absolute(_) => DsKind::Absolute,
        }
    }

    /// The value as a float (the converters' `value`).
    pub fn as_f64(&self) -> f64 {
        match *self {
            RawValue::Counter(v) | RawValue::Absolute(v) => v as f64,
            RawValue::Gauge(v) => v,
            RawValue::Derive(v) => v as f64,
        }
    }
}

/// The packet's state when a values part is reached. A string part that never appeared is
/// empty, as collectd means it: its sender writes a part only when it changes, starting from
/// empty strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValueList<'a> {
    pub host: &'a str,
    pub plugin: &'a str,
    pub plugin_instance: &'a str,
    pub type_: &'a str,
    pub type_instance: &'a str,
    /// `None` when the packet had no time part yet (collectd then uses the arrival time).
    pub time: Option<CdTime>,
    pub interval: Option<CdTime>,
}

/// The framing of the packet is broken: the rest of it is skipped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    #[error("truncated part header ({0} bytes left)")]
    TruncatedHeader(usize),
    #[error("part 0x{kind:04x} declares a length of {len}, less than its 4-byte header")]
    PartLength { kind: u16, len: usize },
    #[error("part 0x{kind:04x} declares {len} bytes but {left} are left")]
    TruncatedPart { kind: u16, len: usize, left: usize },
    #[error("{0} part holds an empty string (not even its NUL byte)")]
    EmptyString(&'static str),
    #[error("{0} part's string does not end with a NUL byte")]
    Unterminated(&'static str),
    #[error("{0} part's string is not UTF-8")]
    NotUtf8(&'static str),
    #[error("{part} part holds {len} bytes instead of 8")]
    NumberLength { part: &'static str, len: usize },
    #[error("values part of {0} bytes is too short for its count")]
    ValuesTooShort(usize),
    #[error("values part says {count} values but holds {len} bytes after the count (want {})", 9 * *count as usize)]
    ValuesLength { count: u16, len: usize },
}

impl PacketError {
    /// The counter this error is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            PacketError::TruncatedHeader(_) | PacketError::TruncatedPart { .. } => "truncated",
            PacketError::PartLength { .. } => "bad_part_length",
            PacketError::EmptyString(_)
            | PacketError::Unterminated(_)
            | PacketError::NotUtf8(_) => "bad_string",
            PacketError::NumberLength { .. } => "bad_time",
            PacketError::ValuesTooShort(_) | PacketError::ValuesLength { .. } => "bad_values",
        }
    }
}

/// A values part that types.db refuses: only that part is skipped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValuesError {
    #[error("type {0:?} is not in types.db")]
    UnknownType(String),
    #[error("type {type_name:?} has {expected} data source(s) but the values part holds {found}")]
    ValueCount {
        type_name: String,
        expected: usize,
        found: usize,
    },
    #[error("type {type_name:?} data source {source_name:?} is {} but the value is of kind {found}", .expected.name())]
    TypeMismatch {
        type_name: String,
        source_name: String,
        expected: DsKind,
        found: u8,
    },
}

impl ValuesError {
    /// The counter this error is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            ValuesError::UnknownType(_) => "unknown_type",
            ValuesError::ValueCount { .. } => "value_count",
            ValuesError::TypeMismatch { .. } => "type_mismatch",
        }
    }
}

/// Receives what a packet holds, in order.
pub trait Sink<'a> {
    /// One value list: its state, its data set, and one value per data source.
    fn value_list(&mut self, vl: &ValueList<'a>, set: &DataSet, values: &[RawValue]);

    /// A values part that was skipped.
    fn skipped(&mut self, _vl: &ValueList<'a>, _error: ValuesError) {}

    /// A part of a type this decoder does not know (skipped).
    fn unknown_part(&mut self, _kind: u16) {}
}

/// Decodes packets; keeps a scratch buffer so that decoding allocates nothing per packet.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    /// Accept a COUNTER value for a DERIVE data source and the reverse, decoding it as
    /// the types.db kind (bucky's `collectd_counter_eq_derive`).
    pub counter_eq_derive: bool,
    values: Vec<RawValue>,
}

impl Decoder {
    pub fn new(counter_eq_derive: bool) -> Decoder {
        Decoder {
            counter_eq_derive,
            values: Vec::new(),
        }
    }

    /// Decodes one plain packet, handing each value list to `sink` as it is reached.
    pub fn decode<'a, S: Sink<'a>>(
        &mut self,
        packet: &'a [u8],
        types: &TypesDb,
        sink: &mut S,
    ) -> Result<(), PacketError> {
        let mut vl = ValueList::default();
        let mut rest = packet;
        while !rest.is_empty() {
            let (kind, data, next) = split_part(rest)?;
            rest = next;
            match kind {
                part::HOST => vl.host = string(data, "host")?,
                part::PLUGIN => vl.plugin = string(data, "plugin")?,
                part::PLUGIN_INSTANCE => vl.plugin_instance = string(data, "plugin instance")?,
                part::TYPE => vl.type_ = string(data, "type")?,
                part::TYPE_INSTANCE => vl.type_instance = string(data, "type instance")?,
                part::TIME => vl.time = Some(seconds_to_cdtime(number(data, "time")?)),
                part::TIME_HR => vl.time = Some(number(data, "time")?),
                part::INTERVAL => vl.interval = Some(seconds_to_cdtime(number(data, "interval")?)),
                part::INTERVAL_HR => vl.interval = Some(number(data, "interval")?),
                part::VALUES => self.values_part(data, &vl, types, sink)?,
                part::MESSAGE | part::SEVERITY | part::SIGNATURE | part::ENCRYPTION => {}
                other => sink.unknown_part(other),
            }
        }
        Ok(())
    }

    fn values_part<'a, S: Sink<'a>>(
        &mut self,
        data: &[u8],
        vl: &ValueList<'a>,
        types: &TypesDb,
        sink: &mut S,
    ) -> Result<(), PacketError> {
        let [c0, c1, body @ ..] = data else {
            return Err(PacketError::ValuesTooShort(data.len()));
        };
        let count = u16::from_be_bytes([*c0, *c1]);
        let n = usize::from(count);
        if body.len() != 9 * n {
            return Err(PacketError::ValuesLength {
                count,
                len: body.len(),
            });
        }
        let Some(set) = types.get(vl.type_) else {
            sink.skipped(vl, ValuesError::UnknownType(vl.type_.to_string()));
            return Ok(());
        };
        if set.sources.len() != n {
            sink.skipped(
                vl,
                ValuesError::ValueCount {
                    type_name: set.name.clone(),
                    expected: set.sources.len(),
                    found: n,
                },
            );
            return Ok(());
        }
        let (codes, raw) = body.split_at(n);
        self.values.clear();
        for ((code, bytes), source) in codes.iter().zip(raw.chunks_exact(8)).zip(&set.sources) {
            let wire = DsKind::from_code(*code);
            let kind = match wire {
                Some(k) if k == source.kind => k,
                Some(DsKind::Counter | DsKind::Derive)
                    if self.counter_eq_derive
                        && matches!(source.kind, DsKind::Counter | DsKind::Derive) =>
                {
                    source.kind
                }
                _ => {
                    sink.skipped(
                        vl,
                        ValuesError::TypeMismatch {
                            type_name: set.name.clone(),
                            source_name: source.name.clone(),
                            expected: source.kind,
                            found: *code,
                        },
                    );
                    return Ok(());
                }
            };
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            self.values.push(match kind {
                DsKind::Counter => RawValue::Counter(u64::from_be_bytes(b)),
                DsKind::Gauge => RawValue::Gauge(f64::from_le_bytes(b)),
                DsKind::Derive => RawValue::Derive(i64::from_be_bytes(b)),
                DsKind::Absolute => RawValue::Absolute(u64::from_be_bytes(b)),
            });
        }
        sink.value_list(vl, set, &self.values);
        Ok(())
    }
}

/// Splits the first part off `bytes`: (type, data, the rest).
pub fn split_part(bytes: &[u8]) -> Result<(u16, &[u8], &[u8]), PacketError> {
    let [k0, k1, l0, l1, ..] = bytes else {
        return Err(PacketError::TruncatedHeader(bytes.len()));
    };
    let kind = u16::from_be_bytes([*k0, *k1]);
    let len = usize::from(u16::from_be_bytes([*l0, *l1]));
    if len < 4 {
        return Err(PacketError::PartLength { kind, len });
    }
    if len > bytes.len() {
        return Err(PacketError::TruncatedPart {
            kind,
            len,
            left: bytes.len(),
        });
    }
    Ok((kind, &bytes[4..len], &bytes[len..]))
}

/// A NUL-terminated string part. Like collectd, the string ends at the first NUL.
fn string<'a>(data: &'a [u8], part: &'static str) -> Result<&'a str, PacketError> {
    match data.last() {
        None => Err(PacketError::EmptyString(part)),
        Some(0) => {
            let end = data.iter().position(|b| *b == 0).unwrap_or(data.len() - 1);
            std::str::from_utf8(&data[..end]).map_err(|_| PacketError::NotUtf8(part))
        }
        Some(_) => Err(PacketError::Unterminated(part)),
    }
}

fn number(data: &[u8], part: &'static str) -> Result<u64, PacketError> {
    let b: [u8; 8] = data.try_into().map_err(|_| PacketError::NumberLength {
        part,
        len: data.len(),
    })?;
    Ok(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests;
