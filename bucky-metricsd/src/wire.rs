//! The MetricsD wire format (bucky 2.2.1 §5.1 with the string framing of decisions.md §5):
//! a pure decoder over the bytes of one datagram, and the encoder clients (and our tests and
//! benchmark) use to build datagrams.
//!
//! ```text
//! datagram = 0xAA host record*
//! host     = string                      ; may be empty: samples then carry no HOST
//! record   = command name [ number ]     ; the number is present for the update action only
//! command  = u8: high nibble = metric type (0x00 counter, 0x10 gauge, 0x20 histogram,
//!                0x30 meter, 0x40 timer); low nibble = action (0 update, 1 clear, 2 delete)
//! name     = string                      ; not empty
//! string   = len:u16 BE, (len - 1) bytes of UTF-8 text, 0x00   ; len counts the NUL
//! number   = type:u8 value               ; value big-endian, as below
//!     0x00 u8   0x01 i8   0x10 u16  0x11 i16  0x20 u32  0x21 i32
//!     0x30 u64  0x31 i64  0x40 f32  0x41 f64
//! ```
//!
//! A record that is malformed but whose extent is known (unknown metric type, a name that is
//! not UTF-8 or is empty, a non-finite value) is reported and skipped, and decoding goes on
//! with the next record. A record whose extent cannot be known (unknown action or number type,
//! a string whose terminating NUL is not where its length says, data cut short) ends the
//! datagram: everything after it is unreadable.

use thiserror::Error;

/// The first byte of every datagram.
pub const MAGIC: u8 = 0xAA;

/// Longest text a string can carry: the length field (u16) also counts the NUL.
pub const MAX_STRING: usize = u16::MAX as usize - 1;

/// Largest UDP payload over IPv4; receivers read datagrams up to this size.
pub const MAX_DATAGRAM: usize = 65_507;

/// What a record's metric is (the high nibble of the command byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Meter,
    Timer,
}

impl MetricType {
    pub const ALL: [MetricType; 5] = [
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Histogram,
        MetricType::Meter,
        MetricType::Timer,
    ];

    /// The command byte's high nibble for this type.
    pub fn code(self) -> u8 {
        match self {
            MetricType::Counter => 0x00,
            MetricType::Gauge => 0x10,
            MetricType::Histogram => 0x20,
            MetricType::Meter => 0x30,
            MetricType::Timer => 0x40,
        }
    }

    fn from_nibble(n: u8) -> Option<MetricType> {
        MetricType::ALL.get(usize::from(n)).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Meter => "meter",
            MetricType::Timer => "timer",
        }
    }
}

/// A number as it travels: its wire type and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
}

impl Number {
    /// The type byte.
    pub fn code(self) -> u8 {
        match self {
            Number::U8(_) => 0x00,
            Number::I8(_) => 0x01,
            Number::U16(_) => 0x10,
            Number::I16(_) => 0x11,
            Number::U32(_) => 0x20,
            Number::I32(_) => 0x21,
            Number::U64(_) => 0x30,
            Number::I64(_) => 0x31,
            Number::F32(_) => 0x40,
            Number::F64(_) => 0x41,
        }
    }

    /// Bytes of value after a type byte, or `None` for an unknown type.
    pub fn width(code: u8) -> Option<usize> {
        Some(match code {
            0x00 | 0x01 => 1,
            0x10 | 0x11 => 2,
            0x20 | 0x21 | 0x40 => 4,
            0x30 | 0x31 | 0x41 => 8,
            _ => return None,
        })
    }

    /// The value as a float (u64 and i64 beyond 2^53 round to the nearest float).
    pub fn to_f64(self) -> f64 {
        match self {
            Number::U8(v) => f64::from(v),
            Number::I8(v) => f64::from(v),
            Number::U16(v) => f64::from(v),
            Number::I16(v) => f64::from(v),
            Number::U32(v) => f64::from(v),
            Number::I32(v) => f64::from(v),
            Number::U64(v) => v as f64,
            Number::I64(v) => v as f64,
            Number::F32(v) => f64::from(v),
            Number::F64(v) => v,
        }
    }

    /// Decodes the value of type `code` from exactly `Number::width(code)` bytes.
    fn read(code: u8, b: &[u8]) -> Option<Number> {
        Some(match code {
            0x00 => Number::U8(b[0]),
            0x01 => Number::I8(i8::from_be_bytes([b[0]])),
            0x10 => Number::U16(u16::from_be_bytes(b.try_into().ok()?)),
            0x11 => Number::I16(i16::from_be_bytes(b.try_into().ok()?)),
            0x20 => Number::U32(u32::from_be_bytes(b.try_into().ok()?)),
            0x21 => Number::I32(i32::from_be_bytes(b.try_into().ok()?)),
            0x30 => Number::U64(u64::from_be_bytes(b.try_into().ok()?)),
            0x31 => Number::I64(i64::from_be_bytes(b.try_into().ok()?)),
            0x40 => Number::F32(f32::from_be_bytes(b.try_into().ok()?)),
            0x41 => Number::F64(f64::from_be_bytes(b.try_into().ok()?)),
            _ => return None,
        })
    }

    fn write(self, out: &mut Vec<u8>) {
        out.push(self.code());
        match self {
            Number::U8(v) => out.push(v),
            Number::I8(v) => out.extend_from_slice(&v.to_be_bytes()),
            Number::U16(v) => out.extend_from_slice(&v.to_be_bytes()),
            Number::I16(v) => out.extend_from_slice(&v.to_be_bytes()),
            Number::U32(v) => out.extend_from_slice(&v.to_be_bytes()),
            Number::I32(v) => out.extend_from_slice(&v.to_be_bytes()),
            Number::U64(v) => out.extend_from_slice(&v.to_be_bytes()),
            Number::I64(v) => out.extend_from_slice(&v.to_be_bytes()),
            Number::F32(v) => out.extend_from_slice(&v.to_be_bytes()),
            Number::F64(v) => out.extend_from_slice(&v.to_be_bytes()),
        }
    }
}

/// What a record asks for (the low nibble of the command byte).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Code 0: feed a value to the metric (creating it if needed).
    Update(Number),
    /// Code 1: reset the metric's state (what that means depends on its type).
    Clear,
    /// Code 2: forget the metric.
    Delete,
}

impl Action {
    pub fn code(&self) -> u8 {
        match self {
            Action::Update(_) => 0,
            Action::Clear => 1,
            Action::Delete => 2,
        }
    }
}

/// One decoded record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record<'a> {
    pub metric: MetricType,
    pub name: &'a str,
    pub action: Action,
}

/// Why a string field could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StringError {
    #[error("the length field is cut short")]
    NoLength,
    #[error("length 0 (the length counts the terminating NUL, so it is at least 1)")]
    ZeroLength,
    #[error("length {len} runs past the end of the datagram ({left} bytes left)")]
    Truncated { len: usize, left: usize },
    #[error("byte 0x{0:02x} where the length puts the terminating NUL")]
    NoNul(u8),
    #[error("the text is not UTF-8")]
    Utf8,
    #[error("the text holds a NUL byte")]
    InnerNul,
}

impl StringError {
    /// Whether the string's extent is unknown (as opposed to a bad text in a known extent).
    pub fn loses_framing(self) -> bool {
        !matches!(self, StringError::Utf8 | StringError::InnerNul)
    }
}

/// Why a whole datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PacketError {
    #[error("empty datagram")]
    Empty,
    #[error("magic byte 0x{0:02x}, expected 0xaa")]
    Magic(u8),
    #[error("host: {0}")]
    Host(StringError),
}

/// What is wrong with one record.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum RecordErrorKind {
    #[error("unknown metric type in command byte 0x{0:02x}")]
    MetricType(u8),
    #[error("unknown action in command byte 0x{0:02x}")]
    Action(u8),
    #[error("name: {0}")]
    Name(StringError),
    #[error("empty name")]
    EmptyName,
    #[error("the number's type byte is missing")]
    NoNumber,
    #[error("unknown number type 0x{0:02x}")]
    NumberType(u8),
    #[error("number of type 0x{code:02x} needs {need} bytes, {left} left")]
    NumberTruncated { code: u8, need: usize, left: usize },
    #[error("value {0} is not finite")]
    NotFinite(f64),
}

/// A malformed record and where it starts in the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[error("record at byte {offset}: {kind}")]
pub struct RecordError {
    pub offset: usize,
    pub kind: RecordErrorKind,
}

impl RecordError {
    /// Whether decoding had to stop here: the rest of the datagram cannot be framed.
    pub fn loses_framing(&self) -> bool {
        match self.kind {
            RecordErrorKind::MetricType(_)
            | RecordErrorKind::EmptyName
            | RecordErrorKind::NotFinite(_) => false,
            RecordErrorKind::Name(e) => e.loses_framing(),
            RecordErrorKind::Action(_)
            | RecordErrorKind::NoNumber
            | RecordErrorKind::NumberType(_)
            | RecordErrorKind::NumberTruncated { .. } => true,
        }
    }
}

/// Reads a string at `pos`: its text (or why it is bad) and the offset after it. A framing
/// error returns `Err`; a bad text in a known extent returns `Ok((Err(..), next))`.
#[allow(clippy::type_complexity)]
fn read_string(buf: &[u8], pos: usize) -> Result<(Result<&str, StringError>, usize), StringError> {
    let Some(len_bytes) = buf.get(pos..pos + 2) else {
        return Err(StringError::NoLength);
    };
    let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
    if len == 0 {
        return Err(StringError::ZeroLength);
    }
    let start = pos + 2;
    let left = buf.len() - start;
    if len > left {
        return Err(StringError::Truncated { len, left });
    }
    let nul = start + len - 1;
    if buf[nul] != 0 {
        return Err(StringError::NoNul(buf[nul]));
    }
    let bytes = &buf[start..nul];
    let text = if memchr::memchr(0, bytes).is_some() {
        Err(StringError::InnerNul)
    } else {
        std::str::from_utf8(bytes).map_err(|_| StringError::Utf8)
    };
    Ok((text, nul + 1))
}

/// One datagram: the sender's host and its records, decoded lazily.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub host: &'a str,
    records: Records<'a>,
}

impl<'a> Packet<'a> {
    /// The records, in order. Malformed ones come as `Err`; after one that loses the framing
    /// the iterator ends.
    pub fn records(&self) -> Records<'a> {
        self.records
    }
}

/// Decodes a datagram's header. The records are decoded as [`Packet::records`] is iterated.
pub fn decode(datagram: &[u8]) -> Result<Packet<'_>, PacketError> {
    let first = *datagram.first().ok_or(PacketError::Empty)?;
    if first != MAGIC {
        return Err(PacketError::Magic(first));
    }
    let (host, pos) = read_string(datagram, 1).map_err(PacketError::Host)?;
    let host = host.map_err(PacketError::Host)?;
    Ok(Packet {
        host,
        records: Records {
            buf: datagram,
            pos,
            done: false,
        },
    })
}

/// The records of a datagram; see [`Packet::records`].
#[derive(Debug, Clone, Copy)]
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Records<'a> {
    fn next_record(&mut self) -> Result<Record<'a>, RecordError> {
        let offset = self.pos;
        let err = |kind| RecordError { offset, kind };
        let cmd = self.buf[offset];
        let action_code = cmd & 0x0F;
        if action_code > 2 {
            return Err(err(RecordErrorKind::Action(cmd)));
        }
        let metric = MetricType::from_nibble(cmd >> 4);
        let (name, mut pos) =
            read_string(self.buf, offset + 1).map_err(|e| err(RecordErrorKind::Name(e)))?;
        let action = if action_code == 0 {
            let code = *self
                .buf
                .get(pos)
                .ok_or_else(|| err(RecordErrorKind::NoNumber))?;
            let need = Number::width(code).ok_or_else(|| err(RecordErrorKind::NumberType(code)))?;
            let left = self.buf.len() - pos - 1;
            let bytes = self
                .buf
                .get(pos + 1..pos + 1 + need)
                .ok_or_else(|| err(RecordErrorKind::NumberTruncated { code, need, left }))?;
            pos += 1 + need;
            let n =
                Number::read(code, bytes).ok_or_else(|| err(RecordErrorKind::NumberType(code)))?;
            Action::Update(n)
        } else if action_code == 1 {
            Action::Clear
        } else {
            Action::Delete
        };
        // The extent is known from here on: the next record starts at `pos` whatever is wrong.
        self.pos = pos;
        let metric = metric.ok_or_else(|| err(RecordErrorKind::MetricType(cmd)))?;
        let name = name.map_err(|e| err(RecordErrorKind::Name(e)))?;
        if name.is_empty() {
            return Err(err(RecordErrorKind::EmptyName));
        }
        if let Action::Update(n) = action {
            let v = n.to_f64();
            if !v.is_finite() {
                return Err(err(RecordErrorKind::NotFinite(v)));
            }
        }
        Ok(Record {
            metric,
            name,
            action,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let r = self.next_record();
        if let Err(e) = &r {
            if e.loses_framing() {
                self.done = true;
            }
        }
        Some(r)
    }
}

/// Why a datagram could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("{what} is {len} bytes long; a string carries at most {MAX_STRING}")]
    TooLong { what: &'static str, len: usize },
    #[error("{what} {text:?} holds a NUL byte")]
    Nul { what: &'static str, text: String },
    #[error("a metric name cannot be empty")]
    EmptyName,
}

fn push_string(out: &mut Vec<u8>, what: &'static str, text: &str) -> Result<(), EncodeError> {
    if text.len() > MAX_STRING {
        return Err(EncodeError::TooLong {
            what,
            len: text.len(),
        });
    }
    if text.as_bytes().contains(&0) {
        return Err(EncodeError::Nul {
            what,
            text: text.into(),
        });
    }
    // Fits: text.len() + 1 <= u16::MAX.
    let len = (text.len() + 1) as u16;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    Ok(())
}

/// Builds one datagram: the header first, then records in order.
///
/// ```
/// use bucky_metricsd::wire::{decode, Encoder, MetricType, Number};
/// let mut e = Encoder::new("web1.example.com")?;
/// e.update(MetricType::Counter, "requests", Number::U8(1))?;
/// e.update(MetricType::Timer, "latency", Number::F64(12.5))?;
/// let packet = decode(e.as_bytes()).unwrap();
/// assert_eq!(packet.host, "web1.example.com");
/// assert_eq!(packet.records().count(), 2);
/// # Ok::<(), bucky_metricsd::wire::EncodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Encoder {
    buf: Vec<u8>,
    header: usize,
}

impl Encoder {
    /// A datagram from `host` (empty: the samples carry no host).
    pub fn new(host: &str) -> Result<Encoder, EncodeError> {
        let mut buf = Vec::with_capacity(512);
        buf.push(MAGIC);
        push_string(&mut buf, "host", host)?;
        let header = buf.len();
        Ok(Encoder { buf, header })
    }

    /// Appends a record.
    pub fn push(
        &mut self,
        metric: MetricType,
        name: &str,
        action: Action,
    ) -> Result<(), EncodeError> {
        if name.is_empty() {
            return Err(EncodeError::EmptyName);
        }
        let mark = self.buf.len();
        self.buf.push(metric.code() | action.code());
        if let Err(e) = push_string(&mut self.buf, "name", name) {
            self.buf.truncate(mark);
            return Err(e);
        }
        if let Action::Update(n) = action {
            n.write(&mut self.buf);
        }
        Ok(())
    }

    pub fn update(
        &mut self,
        metric: MetricType,
        name: &str,
        value: Number,
    ) -> Result<(), EncodeError> {
        self.push(metric, name, Action::Update(value))
    }

    pub fn clear(&mut self, metric: MetricType, name: &str) -> Result<(), EncodeError> {
        self.push(metric, name, Action::Clear)
    }

    pub fn delete(&mut self, metric: MetricType, name: &str) -> Result<(), EncodeError> {
        self.push(metric, name, Action::Delete)
    }

    /// Appends a record of any shape.
    pub fn push_record(&mut self, r: &Record<'_>) -> Result<(), EncodeError> {
        self.push(r.metric, r.name, r.action)
    }

    /// The datagram so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record has been added yet.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == self.header
    }

    /// Drops the records, keeping the header, to build the next datagram of the same host.
    pub fn reset(&mut self) {
        self.buf.truncate(self.header);
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// One datagram holding `records` from `host`.
pub fn encode(host: &str, records: &[Record<'_>]) -> Result<Vec<u8>, EncodeError> {
    let mut e = Encoder::new(host)?;
    for r in records {
        e.push_record(r)?;
    }
    Ok(e.into_bytes())
}

#[cfg(test)]
mod tests;
