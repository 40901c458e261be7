//! Values per second through bucky-collectd on one core, from a replayed capture of
//! realistic collectd traffic (plain, signed and encrypted): the decoder alone, and the
//! whole path (security, decoding, naming, rates, sample lines).
//!
//!   cargo bench -p bucky-collectd --bench decode

// Benchmark set-up: a failure is a broken benchmark, reported by panicking.
#![allow(clippy::expect_used)]

use std::net::SocketAddr;

use bucky_collectd::encode::{
    encrypt, encrypted_payload_size, pack, sign, signed_payload_size, synthetic_traffic,
    COLLECTD_PACKET_SIZE,
};
use bucky_collectd::naming::Converters;
use bucky_collectd::packet::{Decoder, RawValue, Sink, ValueList};
use bucky_collectd::process::{Options, Processor};
use bucky_collectd::security::{Level, Security, Users};
use bucky_collectd::types_db::{DataSet, TypesDb};
use bucky_proto::capture::{CaptureWriter, Datagram, DatagramReader};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const START: u64 = 1_795_650_000 << 30;

/// Writes the packets to a capture file and reads them back: the benchmark runs on what a
/// replay hands out.
fn replayed(packets: &[Vec<u8>]) -> Vec<Datagram> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.cap");
    let source: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let mut w = CaptureWriter::create(&path).expect("create capture");
    for (i, p) in packets.iter().enumerate() {
        w.write_parts(1_795_650_000.0 + i as f64 * 1e-4, source, p)
            .expect("write");
    }
    w.flush().expect("flush");
    DatagramReader::open(&path, None)
        .expect("open capture")
        .map(|d| d.expect("read capture"))
        .collect()
}

struct Count(u64);
impl<'a> Sink<'a> for Count {
    fn value_list(&mut self, _: &ValueList<'a>, _: &DataSet, values: &[RawValue]) {
        self.0 += values.len() as u64;
    }
}

fn users() -> Users {
    let mut u = Users::new();
    u.insert("bench", "benchpw");
    u
}

fn bench(c: &mut Criterion) {
    // 100 hosts × 60 intervals: 6000 host-intervals of 70 values each.
    let lists = synthetic_traffic(100, 60, START, 10);
    let values: u64 = lists.iter().map(|l| l.values.len() as u64).sum();
    let plain = pack(&lists, COLLECTD_PACKET_SIZE);
    // As collectd does, leave room for the signature or encryption in each packet.
    let signed: Vec<Vec<u8>> = pack(&lists, signed_payload_size(COLLECTD_PACKET_SIZE, "bench"))
        .iter()
        .map(|p| sign(p, "bench", "benchpw"))
        .collect();
    let encrypted: Vec<Vec<u8>> = pack(
        &lists,
        encrypted_payload_size(COLLECTD_PACKET_SIZE, "bench"),
    )
    .iter()
    .enumerate()
    .map(|(i, p)| {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&(i as u64).to_le_bytes());
        encrypt(p, "bench", "benchpw", iv)
    })
    .collect();
    let cases = [
        ("plain", replayed(&plain), Level::None),
        ("signed", replayed(&signed), Level::Sign),
        ("encrypted", replayed(&encrypted), Level::Encrypt),
    ];
    let types = TypesDb::builtin();

    let mut g = c.benchmark_group("collectd");
    g.throughput(Throughput::Elements(values));
    g.sample_size(20);
    g.bench_function("decode/plain", |b| {
        let mut decoder = Decoder::default();
        b.iter(|| {
            let mut n = Count(0);
            for d in &cases[0].1 {
                let _ = decoder.decode(&d.bytes, &types, &mut n);
            }
            assert_eq!(n.0, values);
        })
    });
    for (name, datagrams, level) in &cases {
        g.bench_function(format!("process/{name}"), |b| {
            let mut out = Vec::with_capacity(64 << 20);
            b.iter_batched_ref(
                || {
                    Processor::new(
                        types.clone(),
                        Converters::builtin(),
                        Options {
                            security: Security::new(*level, users()),
                            ..Options::default()
                        },
                    )
                },
                |p| {
                    out.clear();
                    for d in datagrams {
                        p.handle(&d.bytes, d.source, d.time, &mut out);
                    }
                    assert_eq!(p.counters().values, values);
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
