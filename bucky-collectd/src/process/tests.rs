//! Datagrams in, sample lines out: names, rates, ranges, refusals, and the counters.

use super::*;
use crate::encode::{encrypt, sign, PacketBuilder};
use crate::packet::part;

const S: CdTime = 1 << 30;
const T0: u64 = 1_795_650_000;

fn src() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn processor(options: Options) -> Processor {
    Processor::new(TypesDb::builtin(), Converters::builtin(), options)
}

fn lines(p: &mut Processor, packet: &[u8], arrival: f64) -> Vec<String> {
    let mut out = Vec::new();
    p.handle(packet, src(), arrival, &mut out);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn packet(t: CdTime, f: impl FnOnce(&mut PacketBuilder)) -> Vec<u8> {
    let mut b = PacketBuilder::new();
    b.host("web1.example.com").time_hr(t).interval_hr(10 * S);
    f(&mut b);
    b.build()
}

#[test]
fn gauges_names_hosts_and_times() {
    let mut p = processor(Options::default());
    let t = T0 * S + S / 4;
    let pkt = packet(t, |b| {
        b.plugin("memory")
            .type_("memory")
            .type_instance("used")
            .values(&[RawValue::Gauge(1024.5)]);
        b.plugin("load").type_("load").type_instance("").values(&[
            RawValue::Gauge(0.5),
            RawValue::Gauge(0.25),
            RawValue::Gauge(0.125),
        ]);
    });
    assert_eq!(
        lines(&mut p, &pkt, 0.0),
        vec![
            "memory.used 1024.5 1795650000.25 web1.example.com",
            "load.load.shortterm 0.5 1795650000.25 web1.example.com",
            "load.load.midterm 0.25 1795650000.25 web1.example.com",
            "load.load.longterm 0.125 1795650000.25 web1.example.com",
        ]
    );
    assert_eq!(p.counters().samples, 4);
    assert_eq!(p.counters().values, 4);
}

#[test]
fn rates_from_high_resolution_times() {
    let mut p = processor(Options::default());
    let send = |p: &mut Processor, t: CdTime, c: u64, d: i64, a: u64, rx: i64| {
        lines(
            p,
            &packet(t, |b| {
                b.plugin("test").plugin_instance("x");
                b.type_("counter").values(&[RawValue::Counter(c)]);
                b.type_("derive").values(&[RawValue::Derive(d)]);
                b.type_("absolute").values(&[RawValue::Absolute(a)]);
                b.plugin("interface")
                    .plugin_instance("eth0")
                    .type_("if_octets");
                b.values(&[RawValue::Derive(rx), RawValue::Derive(rx * 2)]);
            }),
            0.0,
        )
    };
    assert!(
        send(&mut p, T0 * S, 100, 10, 0, 1000).is_empty(),
        "first values are stored"
    );
    assert_eq!(p.counters().dropped_first, 5);
    // Half a second later: sub-second rates (the original dropped these).
    assert_eq!(
        send(&mut p, T0 * S + S / 2, 150, 15, 5, 1500),
        vec![
            "test.x.counter 100 1795650000.5 web1.example.com",
            "test.x.derive 10 1795650000.5 web1.example.com",
            "test.x.absolute 10 1795650000.5 web1.example.com",
            "interface.eth0.if_octets.rx 1000 1795650000.5 web1.example.com",
            "interface.eth0.if_octets.tx 2000 1795650000.5 web1.example.com",
        ]
    );
    // A counter wrap at 2^32; a derive going back is negative, below types.db's min 0:
    // dropped; same time again: nothing.
    let wrapped = send(&mut p, T0 * S + S + S / 2, 50, 5, 5, 2500);
    assert_eq!(
        wrapped[0],
        format!(
            "test.x.counter {} 1795650001.5 web1.example.com",
            (1u64 << 32) - 100
        )
    );
    assert_eq!(wrapped.len(), 4, "{wrapped:?}");
    assert_eq!(p.counters().dropped_range, 1);
    assert!(send(&mut p, T0 * S + S + S / 2, 60, 6, 6, 2600).is_empty());
    assert_eq!(p.counters().dropped_not_later, 5);
}

#[test]
fn ranges_and_non_finite_values() {
    let mut p = processor(Options::default());
    let pkt = packet(T0 * S, |b| {
        b.plugin("p").type_("percent");
        b.values(&[RawValue::Gauge(100.1)]);
        b.values(&[RawValue::Gauge(100.2)]);
        b.values(&[RawValue::Gauge(-0.0)]);
        b.values(&[RawValue::Gauge(f64::NAN)]);
        b.values(&[RawValue::Gauge(f64::INFINITY)]);
    });
    assert_eq!(
        lines(&mut p, &pkt, 0.0),
        vec![
            "p.percent 100.1 1795650000 web1.example.com",
            "p.percent -0 1795650000 web1.example.com"
        ]
    );
    assert_eq!(p.counters().dropped_range, 1);
    assert_eq!(p.counters().dropped_nonfinite, 2);
}

#[test]
fn whitespace_missing_parts_and_arrival_time() {
    let mut p = processor(Options::default());
    // No host, no time: the host field is left out, the arrival time is used.
    let mut b = PacketBuilder::new();
    b.plugin("my plugin")
        .type_("gauge")
        .type_instance("a\tb")
        .values(&[RawValue::Gauge(1.0)]);
    assert_eq!(
        lines(&mut p, b.bytes(), 1795650000.5),
        vec!["my_plugin.gauge.a_b 1 1795650000.5"]
    );
    let mut b = PacketBuilder::new();
    b.host("bad host")
        .plugin("x")
        .type_("gauge")
        .values(&[RawValue::Gauge(1.0)]);
    assert_eq!(lines(&mut p, b.bytes(), 7.0), vec!["x.gauge 1 7 bad_host"]);
    // A name that comes out empty or only whitespace is dropped.
    let mut converters = Converters::builtin();
    let template = crate::naming::Template::parse("{plugin_instance}").unwrap();
    converters.register("blank", crate::naming::Converter::Template(template), 0);
    let mut p = Processor::new(TypesDb::builtin(), converters, Options::default());
    let mut b = PacketBuilder::new();
    b.plugin("blank")
        .plugin_instance(" ")
        .type_("gauge")
        .values(&[RawValue::Gauge(1.0)]);
    b.plugin("").type_("gauge").values(&[RawValue::Gauge(1.0)]);
    assert_eq!(lines(&mut p, b.bytes(), 7.0), vec!["gauge 1 7"]);
    assert_eq!(p.counters().dropped_empty_name, 1);
}

#[test]
fn refusals_and_errors_are_counted_and_never_stop_anything() {
    let mut users = Users::new();
    users.insert("alice", "123");
    let mut p = processor(Options {
        security: Security::new(crate::security::Level::Sign, users),
        ..Options::default()
    });
    let plain = packet(T0 * S, |b| {
        b.plugin("x").type_("gauge").values(&[RawValue::Gauge(1.0)]);
    });
    assert!(lines(&mut p, &plain, 0.0).is_empty());
    assert!(lines(&mut p, &sign(&plain, "alice", "bad"), 0.0).is_empty());
    assert!(lines(&mut p, &sign(&plain, "bob", "123"), 0.0).is_empty());
    assert!(lines(&mut p, &encrypt(&plain, "alice", "bad", [7; 16]), 0.0).is_empty());
    assert!(lines(&mut p, &[1, 2], 0.0).is_empty());
    assert_eq!(lines(&mut p, &sign(&plain, "alice", "123"), 0.0).len(), 1);
    assert_eq!(
        lines(&mut p, &encrypt(&plain, "alice", "123", [7; 16]), 0.0).len(),
        1
    );
    // A broken packet after a good value list: the list is kept, the error counted.
    let mut broken = plain.clone();
    broken.extend_from_slice(&[0, 2, 0, 9]);
    assert_eq!(lines(&mut p, &sign(&broken, "alice", "123"), 0.0).len(), 1);
    // A values part of an unknown type is skipped alone.
    let mixed = packet(T0 * S, |b| {
        b.plugin("x").type_("nope").values(&[RawValue::Gauge(1.0)]);
        b.type_("gauge").values(&[RawValue::Gauge(2.0)]);
        b.raw_part(0x4242, b"?");
    });
    assert_eq!(lines(&mut p, &sign(&mixed, "alice", "123"), 0.0).len(), 1);
    let c = p.counters();
    assert_eq!(
        (
            c.refused_unsigned,
            c.refused_bad_signature,
            c.refused_unknown_user,
            c.refused_bad_checksum,
            c.refused_truncated
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(
        (c.error_truncated, c.skipped_unknown_type, c.unknown_parts),
        (1, 1, 1)
    );
    assert_eq!(c.datagrams, 9);
    assert_eq!(c.samples, 4);
    // Every counter has a name, and they are unique.
    let names: std::collections::BTreeSet<&str> = c.snapshot().iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), c.snapshot().len());
}

#[test]
fn users_can_change_while_running() {
    let mut p = processor(Options {
        security: Security::new(crate::security::Level::Encrypt, Users::new()),
        ..Options::default()
    });
    let plain = packet(T0 * S, |b| {
        b.plugin("x").type_("gauge").values(&[RawValue::Gauge(1.0)]);
    });
    let enc = encrypt(&plain, "carol", "pw", [1; 16]);
    assert!(lines(&mut p, &enc, 0.0).is_empty());
    let mut u = Users::new();
    u.insert("carol", "pw");
    p.set_users(u);
    assert_eq!(lines(&mut p, &enc, 0.0).len(), 1);
}

#[test]
fn idle_series_are_forgotten() {
    let mut p = processor(Options {
        rate_expiry: 60.0,
        max_series: 2,
        ..Options::default()
    });
    let d = |i: &str, v: i64, t: CdTime| {
        packet(t, |b| {
            b.plugin("x")
                .plugin_instance(i)
                .type_("derive")
                .values(&[RawValue::Derive(v)]);
        })
    };
    assert!(lines(&mut p, &d("a", 1, S), 100.0).is_empty());
    assert!(lines(&mut p, &d("b", 1, S), 100.0).is_empty());
    assert!(lines(&mut p, &d("c", 1, S), 100.0).is_empty());
    assert_eq!(p.counters().dropped_cache_full, 1);
    assert_eq!(lines(&mut p, &d("a", 2, 2 * S), 150.0).len(), 1);
    p.tick(170.0);
    assert_eq!((p.counters().series, p.counters().expired), (1, 1));
    assert!(lines(&mut p, &d("c", 1, 2 * S), 171.0).is_empty());
    assert_eq!(
        lines(&mut p, &d("c", 3, 3 * S), 172.0),
        vec!["x.c.derive 2 3 web1.example.com"]
    );
    let _ = part::HOST;
}

/// Issue 4, point 5: nothing a datagram holds stops, hangs or grows the receiver.
#[test]
fn no_datagram_can_stop_it() {
    let mut users = Users::new();
    users.insert("alice", "123");
    for level in [
        crate::security::Level::None,
        crate::security::Level::Sign,
        crate::security::Level::Encrypt,
    ] {
        let mut p = processor(Options {
            security: Security::new(level, users.clone()),
            max_series: 100,
            ..Options::default()
        });
        let mut x = 0x2545f4914f6cdd1du64;
        let mut garbage = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let good = packet(T0 * S, |b| {
            b.plugin("x").type_("gauge").values(&[RawValue::Gauge(1.0)]);
        });
        // A signature part nested inside an encrypted payload, and an encryption part
        // inside a signed one: ignored, the rest decodes.
        let mut nested = sign(&good, "alice", "123");
        nested.extend_from_slice(&good);
        let inner = encrypt(&nested, "alice", "123", [3; 16]);
        let mut signed_inner = PacketBuilder::new();
        signed_inner.raw_part(part::ENCRYPTION, &[0; 60]);
        let mut signed_inner = signed_inner.build();
        signed_inner.extend_from_slice(&good);
        let signed_inner = sign(&signed_inner, "alice", "123");
        let mut datagrams: Vec<Vec<u8>> = vec![
            garbage(65507),
            garbage(65535),
            vec![],
            vec![0],
            vec![0x02, 0x00, 0xff, 0xff],
            vec![0x02, 0x10, 0x00, 0x04],
            vec![0x00, 0x06, 0x00, 0x04],
            [0x00, 0x00, 0x00, 0x04].repeat(16000),
        ];
        for n in [4, 7, 100, 1452, 9000] {
            let mut g = garbage(n);
            datagrams.push(g.clone());
            g[..4].copy_from_slice(&[0x02, 0x10, (n >> 8) as u8, n as u8]);
            datagrams.push(g.clone());
            g[..4].copy_from_slice(&[0x02, 0x00, 0x00, 40]);
            datagrams.push(g);
        }
        for (i, d) in datagrams.iter().enumerate() {
            let mut out = Vec::new();
            p.handle(d, src(), i as f64, &mut out);
            assert!(out.len() < 1 << 20);
        }
        // Still working afterwards, with nested security parts ignored.
        assert_eq!(lines(&mut p, &inner, 100.0).len(), 2, "{level:?}");
        if level < crate::security::Level::Encrypt {
            assert_eq!(lines(&mut p, &signed_inner, 100.0).len(), 1, "{level:?}");
        }
        if level == crate::security::Level::None {
            assert_eq!(lines(&mut p, &good, 100.0).len(), 1);
        }
        assert!(p.counters().datagrams >= datagrams.len() as u64);
    }
}
