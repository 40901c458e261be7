//! Writing collectd packets, as collectd's network plugin does: for tests, benchmarks, the
//! fuzz target and the load generator. Parts, whole value lists written the way collectd
//! writes them (only the fields that changed, packets of at most 1452 bytes), and the Sign
//! and Encrypt wrappings.

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::packet::{part, CdTime, RawValue};

/// collectd's default network buffer size: packets are at most this long.
pub const COLLECTD_PACKET_SIZE: usize = 1452;

/// The payload room collectd leaves in a packet of `packet_size` bytes signed by `user`:
/// the signature part (4-byte header, 32-byte HMAC, the user name) comes off.
pub fn signed_payload_size(packet_size: usize, user: &str) -> usize {
    packet_size.saturating_sub(36 + user.len())
}

/// The payload room in a packet of `packet_size` bytes encrypted for `user`: the part
/// header, the user name and its length, the IV and the SHA-1 come off.
pub fn encrypted_payload_size(packet_size: usize, user: &str) -> usize {
    packet_size.saturating_sub(4 + 2 + user.len() + 16 + 20)
}

/// A packet under construction, part by part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketBuilder {
    buf: Vec<u8>,
}

impl PacketBuilder {
    pub fn new() -> PacketBuilder {
        PacketBuilder::default()
    }

    /// Appends a part with any type and data (no checks: for malformed test packets too).
    pub fn raw_part(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = (data.len() + 4).min(usize::from(u16::MAX)) as u16;
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(data);
        self
    }

    /// A string part: the bytes and a NUL.
    pub fn string(&mut self, kind: u16, s: &str) -> &mut Self {
        let len = (s.len() + 5).min(usize::from(u16::MAX)) as u16;
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        self
    }

    pub fn number(&mut self, kind: u16, v: u64) -> &mut Self {
        self.raw_part(kind, &v.to_be_bytes())
    }

    pub fn host(&mut self, s: &str) -> &mut Self {
        self.string(part::HOST, s)
    }
    pub fn plugin(&mut self, s: &str) -> &mut Self {
        self.string(part::PLUGIN, s)
    }
    pub fn plugin_instance(&mut self, s: &str) -> &mut Self {
        self.string(part::PLUGIN_INSTANCE, s)
    }
    pub fn type_(&mut self, s: &str) -> &mut Self {
        self.string(part::TYPE, s)
    }
    pub fn type_instance(&mut self, s: &str) -> &mut Self {
        self.string(part::TYPE_INSTANCE, s)
    }
    /// The old whole-seconds time part.
    pub fn time(&mut self, secs: u64) -> &mut Self {
        self.number(part::TIME, secs)
    }
    pub fn time_hr(&mut self, t: CdTime) -> &mut Self {
        self.number(part::TIME_HR, t)
    }
    pub fn interval(&mut self, secs: u64) -> &mut Self {
        self.number(part::INTERVAL, secs)
    }
    pub fn interval_hr(&mut self, t: CdTime) -> &mut Self {
        self.number(part::INTERVAL_HR, t)
    }

    /// A values part: count, kind codes, then the values (gauges little-endian, the
    /// integers big-endian).
    pub fn values(&mut self, values: &[RawValue]) -> &mut Self {
        let mut data = Vec::with_capacity(2 + 9 * values.len());
        data.extend_from_slice(&(values.len() as u16).to_be_bytes());
        data.extend(values.iter().map(|v| v.kind().code()));
        for v in values {
            data.extend_from_slice(&encode_value(v));
        }
        self.raw_part(part::VALUES, &data)
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn build(&self) -> Vec<u8> {
        self.buf.clone()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// The 8 bytes of a value on the wire.
pub fn encode_value(v: &RawValue) -> [u8; 8] {
    match *v {
        RawValue::Counter(x) | RawValue::Absolute(x) => x.to_be_bytes(),
        RawValue::Gauge(x) => x.to_le_bytes(),
        RawValue::Derive(x) => x.to_be_bytes(),
    }
}

/// One value list, owned, as [`PacketWriter`] takes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueListSpec {
    pub host: String,
    pub plugin: String,
    pub plugin_instance: String,
    pub type_: String,
    pub type_instance: String,
    pub time: CdTime,
    pub interval: CdTime,
    pub values: Vec<RawValue>,
}

/// Packs value lists into packets the way collectd's network plugin does: each field is
/// written only when it differs from the previous value list of the same packet (starting
/// from empty strings and zero times), and a packet is sent when the next value list would
/// not fit in `limit` bytes.
#[derive(Debug, Clone)]
pub struct PacketWriter {
    limit: usize,
    current: PacketBuilder,
    last: ValueListSpec,
    done: Vec<Vec<u8>>,
}

impl PacketWriter {
    pub fn new(limit: usize) -> PacketWriter {
        PacketWriter {
            limit,
            current: PacketBuilder::new(),
            last: ValueListSpec::default(),
            done: Vec::new(),
        }
    }

    /// Adds a value list; a packet that is full moves to the finished ones.
    pub fn push(&mut self, vl: &ValueListSpec) {
        let mut parts = PacketBuilder::new();
        write_changes(&mut parts, &self.last, vl);
        if !self.current.is_empty() && self.current.len() + parts.len() > self.limit {
            self.done.push(self.current.build());
            self.current.clear();
            parts.clear();
            write_changes(&mut parts, &ValueListSpec::default(), vl);
        }
        self.current.buf.extend_from_slice(parts.bytes());
        self.last = ValueListSpec {
            values: Vec::new(),
            ..vl.clone()
        };
    }

    /// Ends the current packet (if it holds anything).
    pub fn flush(&mut self) {
        if !self.current.is_empty() {
            self.done.push(self.current.build());
            self.current.clear();
            self.last = ValueListSpec::default();
        }
    }

    /// The finished packets, taken.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.done)
    }
}

fn write_changes(out: &mut PacketBuilder, last: &ValueListSpec, vl: &ValueListSpec) {
    if vl.host != last.host {
        out.host(&vl.host);
    }
    if vl.time != last.time {
        out.time_hr(vl.time);
    }
    if vl.interval != last.interval {
        out.interval_hr(vl.interval);
    }
    if vl.plugin != last.plugin {
        out.plugin(&vl.plugin);
    }
    if vl.plugin_instance != last.plugin_instance {
        out.plugin_instance(&vl.plugin_instance);
    }
    if vl.type_ != last.type_ {
        out.type_(&vl.type_);
    }
    if vl.type_instance != last.type_instance {
        out.type_instance(&vl.type_instance);
    }
    out.values(&vl.values);
}

/// A signed packet, as collectd's `SecurityLevel Sign` sends it: a 0x0200 part holding
/// HMAC-SHA256(key = password, username ‖ payload) and the username, then the payload.
pub fn sign(payload: &[u8], user: &str, password: &str) -> Vec<u8> {
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(password.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return payload.to_vec(),
    };
    mac.update(user.as_bytes());
    mac.update(payload);
    let tag = mac.finalize().into_bytes();
    let mut out = Vec::with_capacity(36 + user.len() + payload.len());
    out.extend_from_slice(&part::SIGNATURE.to_be_bytes());
    out.extend_from_slice(&((36 + user.len()) as u16).to_be_bytes());
    out.extend_from_slice(&tag);
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// An encrypted packet, as collectd's `SecurityLevel Encrypt` sends it: one 0x0210 part
/// holding the username, the IV and AES-256-OFB(key = SHA-256(password)) of
/// SHA-1(payload) ‖ payload.
pub fn encrypt(payload: &[u8], user: &str, password: &str, iv: [u8; 16]) -> Vec<u8> {
    let key = Sha256::digest(password.as_bytes());
    let mut plain = Vec::with_capacity(20 + payload.len());
    plain.extend_from_slice(&Sha1::digest(payload));
    plain.extend_from_slice(payload);
    let mut cipher = ofb::Ofb::<aes::Aes256>::new(&key, &iv.into());
    cipher.apply_keystream(&mut plain);
    let len = 4 + 2 + user.len() + 16 + plain.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&part::ENCRYPTION.to_be_bytes());
    out.extend_from_slice(&(len.min(usize::from(u16::MAX)) as u16).to_be_bytes());
    out.extend_from_slice(&(user.len() as u16).to_be_bytes());
    out.extend_from_slice(user.as_bytes());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&plain);
    out
}

/// Realistic collectd traffic for benchmarks and load tests: every `interval` seconds from
/// `start`, each of `hosts` hosts reports what a typical collectd host does (cpu for 4 cores,
/// memory, load, 2 interfaces, 3 file systems, 2 disks: 70 values in 58 value lists), with
/// values that grow like real counters.
pub fn synthetic_traffic(
    hosts: usize,
    steps: usize,
    start: CdTime,
    interval: u64,
) -> Vec<ValueListSpec> {
    let mut out = Vec::with_capacity(hosts * steps * 58);
    let iv = interval << 30;
    for step in 0..steps {
        let time = start + step as u64 * iv;
        let s = step as u64;
        for h in 0..hosts {
            let host = format!("host{h:04}.example.com");
            let k = h as u64 + 1;
            let mut vl = |plugin: &str, pi: &str, type_: &str, ti: &str, values: Vec<RawValue>| {
                out.push(ValueListSpec {
                    host: host.clone(),
                    plugin: plugin.into(),
                    plugin_instance: pi.into(),
                    type_: type_.into(),
                    type_instance: ti.into(),
                    time,
                    interval: iv,
                    values,
                });
            };
            for cpu in 0..4u64 {
                for (i, state) in [
                    "user",
                    "system",
                    "wait",
                    "nice",
                    "interrupt",
                    "softirq",
                    "steal",
                    "idle",
                ]
                .iter()
                .enumerate()
                {
                    let v = (s * (i as u64 * 7 + cpu + k)) as i64;
                    vl(
                        "cpu",
                        &cpu.to_string(),
                        "cpu",
                        state,
                        vec![RawValue::Derive(v)],
                    );
                }
            }
            for (i, ti) in [
                "used",
                "buffered",
                "cached",
                "free",
                "slab_recl",
                "slab_unrecl",
            ]
            .iter()
            .enumerate()
            {
                vl(
                    "memory",
                    "",
                    "memory",
                    ti,
                    vec![RawValue::Gauge(((s * 4096 + i as u64) * k) as f64)],
                );
            }
            vl(
                "load",
                "",
                "load",
                "",
                vec![
                    RawValue::Gauge(0.25),
                    RawValue::Gauge(0.5 + s as f64 / 100.0),
                    RawValue::Gauge(0.125),
                ],
            );
            for ifname in ["eth0", "lo"] {
                for (j, t) in ["if_octets", "if_packets", "if_errors"].iter().enumerate() {
                    let v = (s * 1000 * (j as u64 + 1) * k) as i64;
                    vl(
                        "interface",
                        ifname,
                        t,
                        "",
                        vec![RawValue::Derive(v), RawValue::Derive(v / 2)],
                    );
                }
            }
            for fs in ["root", "boot", "var"] {
                for (j, ti) in ["used", "free", "reserved"].iter().enumerate() {
                    vl(
                        "df",
                        fs,
                        "df_complex",
                        ti,
                        vec![RawValue::Gauge(
                            (1u64 << 30) as f64 * (j + 1) as f64 + s as f64,
                        )],
                    );
                }
            }
            for disk in ["sda", "sdb"] {
                let v = (s * 512 * k) as i64;
                vl(
                    "disk",
                    disk,
                    "disk_octets",
                    "",
                    vec![RawValue::Derive(v), RawValue::Derive(2 * v)],
                );
                vl(
                    "disk",
                    disk,
                    "disk_ops",
                    "",
                    vec![RawValue::Derive(v / 512), RawValue::Derive(v / 256)],
                );
            }
        }
    }
    out
}

/// Packs value lists into collectd-sized packets (see [`PacketWriter`]).
pub fn pack(lists: &[ValueListSpec], limit: usize) -> Vec<Vec<u8>> {
    let mut w = PacketWriter::new(limit);
    for vl in lists {
        w.push(vl);
    }
    w.flush();
    w.take()
}
