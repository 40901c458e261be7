//! The whole receive path of bucky-collectd on arbitrary input: security layer (with real
//! signatures and encryption around fuzzed payloads, so that the decoder behind the crypto
//! is reached), decoder, naming, rates and sample formatting. Every line written must be a
//! valid sample line.
//!
//! Input: byte 0 picks the mode (bits 0-1: raw packet, signed, encrypted, signed with a
//! wrong password), the security level (bits 2-3) and collectd_counter_eq_derive (bit 6);
//! the rest is the packet (raw) or the payload to sign or encrypt.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use bucky_collectd::encode::{encrypt, sign};
use bucky_collectd::naming::{Converter, Converters, Template};
use bucky_collectd::process::{Options, Processor};
use bucky_collectd::security::{Level, Security, Users};
use bucky_collectd::types_db::TypesDb;
use libfuzzer_sys::fuzz_target;

/// Built once: parsing types.db and deriving keys per input would dominate the run.
static SHARED: OnceLock<(TypesDb, Users)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let packet = match control & 3 {
        0 => rest.to_vec(),
        1 => sign(rest, "alice", "123"),
        2 => {
            let mut iv = [0u8; 16];
            for (i, b) in rest.iter().take(16).enumerate() {
                iv[i] = *b;
            }
            encrypt(rest, "alice", "123", iv)
        }
        _ => sign(rest, "alice", "wrong"),
    };
    let level = match (control >> 2) & 3 {
        0 | 3 => Level::None,
        1 => Level::Sign,
        _ => Level::Encrypt,
    };
    let (types, users) = SHARED.get_or_init(|| {
        let mut users = Users::new();
        users.insert("alice", "123");
        users.insert("bench", "benchpw");
        (TypesDb::builtin(), users)
    });
    let mut converters = Converters::builtin();
    if let Ok(t) = Template::parse("t.{host}.{plugin_instance}.{type_instance}.{value_name}") {
        converters.register("tpl", Converter::Template(t), 0);
    }
    let mut p = Processor::new(
        types.clone(),
        converters,
        Options {
            security: Security::new(level, users.clone()),
            counter_eq_derive: control & 0x40 != 0,
            rate_expiry: 1.0,
            max_series: 64,
        },
    );
    let source: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 40000));
    let mut out = Vec::new();
    // Twice, later the second time, so that rates are computed too.
    p.handle(&packet, source, 1_795_650_000.0, &mut out);
    p.handle(&packet, source, 1_795_650_001.0, &mut out);
    p.tick(1_795_650_010.0);
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Err(e) = bucky_proto::sample::parse_line(line) {
            panic!(
                "invalid sample line {:?}: {e}",
                String::from_utf8_lossy(line)
            );
        }
    }
});
