//! Real collectd 5.12 packets (tests/fixtures/collectd512-*.bin, plain, signed and
//! encrypted) decode to the independent listings beside them, through the security layer,
//! and give the expected rates for the exactly injected series.

// Test code: panicking on a broken expectation is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use bucky_collectd::naming::Converters;
use bucky_collectd::packet::{cdtime_to_seconds, CdTime, Decoder, RawValue, Sink, ValueList};
use bucky_collectd::process::{Options, Processor};
use bucky_collectd::security::{Level, Security, Users};
use bucky_collectd::types_db::{DataSet, TypesDb};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// The datagrams of a `.bin`: 4-byte big-endian length, then the datagram.
fn datagrams(name: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(rest[4..4 + len].to_vec());
        rest = &rest[4 + len..];
    }
    out
}

/// One value list as the listing shows it.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    id: String,
    time: f64,
    interval: f64,
    values: Vec<(String, f64)>,
}

fn kind_name(v: &RawValue) -> &'static str {
    match v {
        RawValue::Counter(_) => "counter",
        RawValue::Gauge(_) => "gauge",
        RawValue::Derive(_) => "derive",
        RawValue::Absolute(_) => "absolute",
    }
}

#[derive(Default)]
struct Collect {
    lists: Vec<Listed>,
    raw: Vec<(String, CdTime, Vec<RawValue>)>,
}

impl<'a> Sink<'a> for Collect {
    fn value_list(&mut self, vl: &ValueList<'a>, _set: &DataSet, values: &[RawValue]) {
        let with = |a: &str, b: &str| {
            if b.is_empty() {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        };
        let id = format!(
            "{}/{}/{}",
            vl.host,
            with(vl.plugin, vl.plugin_instance),
            with(vl.type_, vl.type_instance)
        );
        let time = vl.time.unwrap();
        self.lists.push(Listed {
            id: id.clone(),
            time: cdtime_to_seconds(time),
            interval: cdtime_to_seconds(vl.interval.unwrap()),
            values: values
                .iter()
                .map(|v| (kind_name(v).to_string(), v.as_f64()))
                .collect(),
        });
        self.raw.push((id, time, values.to_vec()));
    }
    fn skipped(&mut self, vl: &ValueList<'a>, e: bucky_collectd::packet::ValuesError) {
        panic!("skipped {vl:?}: {e}");
    }
}

/// A packet header of the listing: size, number of value lists, payload size if wrapped.
#[derive(Debug, Default, PartialEq)]
struct Header {
    size: usize,
    lists: usize,
    check: Option<String>,
}

fn listing(name: &str) -> Vec<(Header, Vec<Listed>)> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let mut out: Vec<(Header, Vec<Listed>)> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# packet ") {
            // "0: 1315 bytes, 32 value lists"
            let f: Vec<&str> = h.split_whitespace().collect();
            out.push((
                Header {
                    size: f[1].parse().unwrap(),
                    lists: f[3].parse().unwrap(),
                    check: None,
                },
                Vec::new(),
            ));
        } else if let Some(c) = line.strip_prefix("# ") {
            out.last_mut().unwrap().0.check = Some(c.to_string());
        } else {
            let f: Vec<&str> = line.split_whitespace().collect();
            let values = f[3..]
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_string(), v.parse::<f64>().unwrap())
                })
                .collect();
            out.last_mut().unwrap().1.push(Listed {
                id: f[0].to_string(),
                time: f[1].parse().unwrap(),
                interval: f[2].parse().unwrap(),
                values,
            });
        }
    }
    out
}

fn security(level: Level) -> Security {
    let mut users = Users::new();
    users.insert("bench", "benchpw");
    Security::new(level, users)
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 5e-6 * a.abs().max(b.abs())
}

fn check_fixture(stem: &str, level: Level) -> Vec<(String, CdTime, Vec<RawValue>)> {
    let packets = datagrams(&format!("{stem}.bin"));
    let listed = listing(&format!("{stem}.txt"));
    assert_eq!(packets.len(), listed.len(), "{stem}: packets");
    let types = TypesDb::builtin();
    let sec = security(level);
    let mut decoder = Decoder::default();
    let mut all = Vec::new();
    for (i, (packet, (header, lists))) in packets.iter().zip(&listed).enumerate() {
        assert_eq!(packet.len(), header.size, "{stem} packet {i}: size");
        let mut scratch = Vec::new();
        let opened = sec.open(packet, &mut scratch).unwrap();
        match &header.check {
            Some(c) if c.starts_with("encrypted") => {
                assert!(opened.verified);
                assert!(
                    c.contains(&format!("{} payload bytes", opened.payload.len())),
                    "{c}"
                );
            }
            Some(c) if c.starts_with("signed") => assert!(opened.verified, "{c}"),
            Some(c) => panic!("unexpected listing note {c}"),
            None => assert_eq!(level, Level::None),
        }
        let mut sink = Collect::default();
        decoder.decode(opened.payload, &types, &mut sink).unwrap();
        assert_eq!(
            sink.lists.len(),
            header.lists,
            "{stem} packet {i}: value lists"
        );
        for (got, want) in sink.lists.iter().zip(lists) {
            assert_eq!(got.id, want.id, "{stem} packet {i}");
            assert!(
                (got.time - want.time).abs() <= 0.0005,
                "{stem} {}: time {} vs {}",
                got.id,
                got.time,
                want.time
            );
            assert_eq!(got.interval, want.interval, "{stem} {}", got.id);
            assert_eq!(got.values.len(), want.values.len(), "{stem} {}", got.id);
            for ((gk, gv), (wk, wv)) in got.values.iter().zip(&want.values) {
                assert_eq!(gk, wk, "{stem} {}", got.id);
                assert!(close(*gv, *wv), "{stem} {}: {gv} vs {wv}", got.id);
            }
        }
        all.extend(sink.raw);
    }
    all
}

#[test]
fn plain_packets_decode_to_their_listing() {
    let raw = check_fixture("collectd512-plain", Level::None);
    injected_series_are_exact(&raw);
}

#[test]
fn signed_packets_decode_to_their_listing() {
    let raw = check_fixture("collectd512-sign", Level::Sign);
    injected_series_are_exact(&raw);
}

#[test]
fn encrypted_packets_decode_to_their_listing() {
    let raw = check_fixture("collectd512-encrypt", Level::Encrypt);
    injected_series_are_exact(&raw);
}

/// `gauge-g1 = i`, `derive-d1 = 10*i`, `counter-c1 = 100*i`, `absolute-a1 = 1`,
/// `if_octets-x1 = (i, 2*i)` for i = 1, 2, 3...
fn injected_series_are_exact(raw: &[(String, CdTime, Vec<RawValue>)]) {
    let mut series: BTreeMap<&str, Vec<&Vec<RawValue>>> = BTreeMap::new();
    for (id, _, values) in raw {
        if let Some(rest) = id.strip_prefix("bench/fixture/") {
            series.entry(rest).or_default().push(values);
        }
    }
    assert_eq!(series.len(), 5, "{series:?}");
    for (name, values) in &series {
        assert!(values.len() >= 5, "{name}");
        for (i, v) in values.iter().enumerate() {
            let i = i as u64 + 1;
            let want = match *name {
                "gauge-g1" => vec![RawValue::Gauge(i as f64)],
                "derive-d1" => vec![RawValue::Derive(10 * i as i64)],
                "counter-c1" => vec![RawValue::Counter(100 * i)],
                "absolute-a1" => vec![RawValue::Absolute(1)],
                "if_octets-x1" => vec![RawValue::Derive(i as i64), RawValue::Derive(2 * i as i64)],
                other => panic!("unexpected series {other}"),
            };
            assert_eq!(**v, want, "{name} #{i}");
        }
    }
}

/// Through the whole path: names, and rates from the high-resolution times.
#[test]
fn samples_and_rates_from_real_packets() {
    for (stem, level) in [
        ("collectd512-plain", Level::None),
        ("collectd512-sign", Level::Sign),
        ("collectd512-encrypt", Level::Encrypt),
    ] {
        let raw = check_fixture(stem, level);
        let mut p = Processor::new(
            TypesDb::builtin(),
            Converters::builtin(),
            Options {
                security: security(level),
                ..Options::default()
            },
        );
        let mut out = Vec::new();
        for (i, packet) in datagrams(&format!("{stem}.bin")).iter().enumerate() {
            p.handle(
                packet,
                "127.0.0.1:1".parse().unwrap(),
                1_795_650_000.0 + i as f64,
                &mut out,
            );
        }
        let text = String::from_utf8(out).unwrap();
        let samples: Vec<(&str, f64, f64, &str)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 4, "{l}");
                (f[0], f[1].parse().unwrap(), f[2].parse().unwrap(), f[3])
            })
            .collect();
        assert!(samples.iter().all(|s| s.3 == "bench"));
        // Expected rates, exactly: the delta over the difference of the packet times.
        let times: Vec<CdTime> = raw
            .iter()
            .filter(|(id, ..)| id == "bench/fixture/derive-d1")
            .map(|(_, t, _)| *t)
            .collect();
        let rates: Vec<f64> = samples
            .iter()
            .filter(|s| s.0 == "fixture.derive.d1")
            .map(|s| s.1)
            .collect();
        assert_eq!(
            rates.len(),
            times.len() - 1,
            "{stem}: first value stored, not emitted"
        );
        for (r, w) in rates.iter().zip(times.windows(2)) {
            let dt = (w[1] - w[0]) as f64 / 1_073_741_824.0;
            assert_eq!(*r, 10.0 / dt, "{stem}");
            assert!((9.0..11.0).contains(r), "{stem}: {r}");
        }
        for (name, lo, hi) in [
            ("fixture.counter.c1", 90.0, 110.0),
            ("fixture.absolute.a1", 0.9, 1.1),
            ("fixture.if_octets.x1.rx", 0.9, 1.1),
            ("fixture.if_octets.x1.tx", 1.8, 2.2),
            ("fixture.gauge.g1", 1.0, 7.0),
            ("memory.used", 1e6, 1e12),
            ("load.load.shortterm", 0.0, 100.0),
        ] {
            let got: Vec<f64> = samples
                .iter()
                .filter(|s| s.0 == name)
                .map(|s| s.1)
                .collect();
            assert!(!got.is_empty(), "{stem}: no {name}");
            assert!(
                got.iter().all(|v| (lo..=hi).contains(v)),
                "{stem}: {name} {got:?}"
            );
        }
        // cpu values are DERIVE: rates named by the cpu converter.
        assert!(samples.iter().any(|s| s.0 == "cpu.0.idle"), "{stem}");
        assert!(samples.iter().all(|s| s.2 > 1.7e9));
        assert_eq!(
            p.counters().refused_unknown_user + p.counters().error_truncated,
            0
        );
    }
}
