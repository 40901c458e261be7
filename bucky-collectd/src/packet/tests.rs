//! One table row per part type and per error of the decoder, plus properties: no input
//! panics, and what the encoder writes decodes back.

use super::*;
use crate::encode::PacketBuilder;
use proptest::prelude::*;

/// What a sink saw, owned, for comparisons.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    List {
        host: String,
        plugin: String,
        plugin_instance: String,
        type_: String,
        type_instance: String,
        time: Option<CdTime>,
        interval: Option<CdTime>,
        values: Vec<RawValue>,
    },
    Skipped(ValuesError),
    Unknown(u16),
}

#[derive(Default)]
struct Collect(Vec<Seen>);

impl<'a> Sink<'a> for Collect {
    fn value_list(&mut self, vl: &ValueList<'a>, set: &DataSet, values: &[RawValue]) {
        assert_eq!(set.sources.len(), values.len());
        self.0.push(Seen::List {
            host: vl.host.into(),
            plugin: vl.plugin.into(),
            plugin_instance: vl.plugin_instance.into(),
            type_: vl.type_.into(),
            type_instance: vl.type_instance.into(),
            time: vl.time,
            interval: vl.interval,
            values: values.to_vec(),
        });
    }
    fn skipped(&mut self, _vl: &ValueList<'a>, error: ValuesError) {
        self.0.push(Seen::Skipped(error));
    }
    fn unknown_part(&mut self, kind: u16) {
        self.0.push(Seen::Unknown(kind));
    }
}

fn decode_with(packet: &[u8], counter_eq_derive: bool) -> (Vec<Seen>, Result<(), PacketError>) {
    let types = TypesDb::builtin();
    let mut sink = Collect::default();
    let r = Decoder::new(counter_eq_derive).decode(packet, &types, &mut sink);
    (sink.0, r)
}

fn decode(packet: &[u8]) -> (Vec<Seen>, Result<(), PacketError>) {
    decode_with(packet, false)
}

const T: CdTime = 1_795_650_000 << 30;

/// host h, plugin p, plugin instance pi, type gauge, type instance ti, time T.
fn prefix() -> PacketBuilder {
    let mut b = PacketBuilder::new();
    b.host("h")
        .time_hr(T)
        .interval_hr(10 << 30)
        .plugin("p")
        .plugin_instance("pi")
        .type_("gauge")
        .type_instance("ti");
    b
}

fn list(type_: &str, values: Vec<RawValue>) -> Seen {
    Seen::List {
        host: "h".into(),
        plugin: "p".into(),
        plugin_instance: "pi".into(),
        type_: type_.into(),
        type_instance: "ti".into(),
        time: Some(T),
        interval: Some(10 << 30),
        values,
    }
}

#[test]
fn every_part_type() {
    // host, time (hi-res), interval (hi-res), plugin, plugin instance, type, type
    // instance, values: one value list with all of them.
    let mut b = prefix();
    b.values(&[RawValue::Gauge(1.5)]);
    assert_eq!(
        decode(b.bytes()),
        (vec![list("gauge", vec![RawValue::Gauge(1.5)])], Ok(()))
    );

    // The old time and interval parts are whole seconds.
    let mut b = PacketBuilder::new();
    b.time(1_795_650_000)
        .interval(10)
        .type_("gauge")
        .values(&[RawValue::Gauge(2.0)]);
    let (seen, r) = decode(b.bytes());
    assert_eq!(r, Ok(()));
    let Seen::List {
        time,
        interval,
        host,
        plugin,
        ..
    } = &seen[0]
    else {
        panic!("{seen:?}")
    };
    assert_eq!(*time, Some(T));
    assert_eq!(*interval, Some(10 << 30));
    // Parts never sent are empty strings, as collectd means them.
    assert_eq!((host.as_str(), plugin.as_str()), ("", ""));

    // Message and severity parts (notifications), and signature/encryption parts inside a
    // payload, are ignored; unknown part types are skipped and reported.
    let mut b = prefix();
    b.string(part::MESSAGE, "disk full")
        .number(part::SEVERITY, 1)
        .raw_part(part::SIGNATURE, &[0; 40])
        .raw_part(part::ENCRYPTION, &[1, 2, 3])
        .raw_part(0x7777, b"future")
        .values(&[RawValue::Gauge(3.0)]);
    assert_eq!(
        decode(b.bytes()),
        (
            vec![
                Seen::Unknown(0x7777),
                list("gauge", vec![RawValue::Gauge(3.0)])
            ],
            Ok(())
        )
    );
}

#[test]
fn the_four_value_kinds_and_their_byte_orders() {
    let mut types = TypesDb::new();
    types.add_text(
        "four c:COUNTER:U:U, g:GAUGE:U:U, d:DERIVE:U:U, a:ABSOLUTE:U:U\n",
        "test",
    );
    let mut data = vec![0, 4, 0, 1, 2, 3];
    data.extend_from_slice(&0x0102030405060708u64.to_be_bytes());
    data.extend_from_slice(&(-2.5f64).to_le_bytes());
    data.extend_from_slice(&(-7i64).to_be_bytes());
    data.extend_from_slice(&u64::MAX.to_be_bytes());
    let mut b = PacketBuilder::new();
    b.type_("four").raw_part(part::VALUES, &data);
    let mut sink = Collect::default();
    Decoder::default()
        .decode(b.bytes(), &types, &mut sink)
        .unwrap();
    let Seen::List { values, .. } = &sink.0[0] else {
        panic!()
    };
    assert_eq!(
        values,
        &vec![
            RawValue::Counter(0x0102030405060708),
            RawValue::Gauge(-2.5),
            RawValue::Derive(-7),
            RawValue::Absolute(u64::MAX),
        ]
    );
    // The encoder writes the same bytes.
    let mut b2 = PacketBuilder::new();
    b2.type_("four").values(values);
    assert_eq!(b.bytes(), b2.bytes());
}

#[test]
fn state_carries_within_a_packet_not_across() {
    let mut b = prefix();
    b.values(&[RawValue::Gauge(1.0)])
        .type_instance("other")
        .values(&[RawValue::Gauge(2.0)])
        .plugin_instance("")
        .values(&[RawValue::Gauge(3.0)]);
    let (seen, r) = decode(b.bytes());
    assert_eq!(r, Ok(()));
    let instances: Vec<(String, String)> = seen
        .iter()
        .map(|s| match s {
            Seen::List {
                plugin_instance,
                type_instance,
                ..
            } => (plugin_instance.clone(), type_instance.clone()),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        instances,
        vec![
            ("pi".to_string(), "ti".to_string()),
            ("pi".to_string(), "other".to_string()),
            ("".to_string(), "other".to_string())
        ]
    );
    // A second packet starts from nothing.
    let mut b = PacketBuilder::new();
    b.type_("gauge").values(&[RawValue::Gauge(1.0)]);
    let (seen, _) = decode(b.bytes());
    let Seen::List { host, time, .. } = &seen[0] else {
        panic!()
    };
    assert_eq!((host.as_str(), *time), ("", None));
}

#[test]
fn framing_errors_stop_the_packet_after_what_came_before() {
    let good = {
        let mut b = prefix();
        b.values(&[RawValue::Gauge(1.0)]);
        b.build()
    };
    let with = |tail: &[u8]| {
        let mut p = good.clone();
        p.extend_from_slice(tail);
        p
    };
    let s = |kind: u16, data: &[u8]| {
        let mut b = PacketBuilder::new();
        b.raw_part(kind, data);
        b.build()
    };
    let cases: Vec<(&str, Vec<u8>, PacketError)> = vec![
        (
            "1 trailing byte",
            with(&[0]),
            PacketError::TruncatedHeader(1),
        ),
        (
            "3 trailing bytes",
            with(&[0, 6, 0]),
            PacketError::TruncatedHeader(3),
        ),
        (
            "length 0",
            with(&[0, 0, 0, 0]),
            PacketError::PartLength { kind: 0, len: 0 },
        ),
        (
            "length 3",
            with(&[0, 6, 0, 3, 9, 9]),
            PacketError::PartLength { kind: 6, len: 3 },
        ),
        (
            "length past the end",
            with(&[0, 2, 0, 9, b'x', 0]),
            PacketError::TruncatedPart {
                kind: 2,
                len: 9,
                left: 6,
            },
        ),
        (
            "zero-length host",
            with(&s(part::HOST, b"")),
            PacketError::EmptyString("host"),
        ),
        (
            "zero-length plugin",
            with(&s(part::PLUGIN, b"")),
            PacketError::EmptyString("plugin"),
        ),
        (
            "zero-length type instance",
            with(&s(part::TYPE_INSTANCE, b"")),
            PacketError::EmptyString("type instance"),
        ),
        (
            "string without NUL",
            with(&s(part::PLUGIN_INSTANCE, b"abc")),
            PacketError::Unterminated("plugin instance"),
        ),
        (
            "string not UTF-8",
            with(&s(part::TYPE, b"\xff\xfe\0")),
            PacketError::NotUtf8("type"),
        ),
        (
            "time of 4 bytes",
            with(&s(part::TIME, &[0; 4])),
            PacketError::NumberLength {
                part: "time",
                len: 4,
            },
        ),
        (
            "hi-res time of 9 bytes",
            with(&s(part::TIME_HR, &[0; 9])),
            PacketError::NumberLength {
                part: "time",
                len: 9,
            },
        ),
        (
            "interval of 0 bytes",
            with(&s(part::INTERVAL_HR, &[])),
            PacketError::NumberLength {
                part: "interval",
                len: 0,
            },
        ),
        (
            "values part of 0 bytes",
            with(&s(part::VALUES, &[])),
            PacketError::ValuesTooShort(0),
        ),
        (
            "values part of 1 byte",
            with(&s(part::VALUES, &[1])),
            PacketError::ValuesTooShort(1),
        ),
        (
            "values count too big",
            with(&s(part::VALUES, &[0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0])),
            PacketError::ValuesLength { count: 2, len: 9 },
        ),
        (
            "values count too small",
            with(&s(part::VALUES, &[0, 0, 1])),
            PacketError::ValuesLength { count: 0, len: 1 },
        ),
    ];
    for (what, packet, want) in cases {
        let (seen, r) = decode(&packet);
        assert_eq!(r, Err(want.clone()), "{what}");
        assert_eq!(
            seen,
            vec![list("gauge", vec![RawValue::Gauge(1.0)])],
            "{what}: lists before the error"
        );
        assert!(!want.to_string().is_empty());
        // An error at the very start yields nothing.
        let tail = &packet[good.len()..];
        let (seen, r) = decode(tail);
        assert!(seen.is_empty(), "{what}");
        assert!(r.is_err(), "{what}");
    }
}

#[test]
fn types_db_checks_skip_only_their_part() {
    let after = |b: &mut PacketBuilder| {
        b.type_("gauge").values(&[RawValue::Gauge(9.0)]);
    };
    type Build = Box<dyn Fn(&mut PacketBuilder)>;
    let cases: Vec<(&str, Build, ValuesError)> = vec![
        (
            "unknown type",
            Box::new(|b: &mut PacketBuilder| {
                b.type_("no_such_type").values(&[RawValue::Gauge(1.0)]);
            }),
            ValuesError::UnknownType("no_such_type".into()),
        ),
        (
            "values without a type",
            Box::new(|b: &mut PacketBuilder| {
                b.values(&[RawValue::Gauge(1.0)]);
            }),
            ValuesError::UnknownType("".into()),
        ),
        (
            "too few values",
            Box::new(|b: &mut PacketBuilder| {
                b.type_("if_octets").values(&[RawValue::Derive(1)]);
            }),
            ValuesError::ValueCount {
                type_name: "if_octets".into(),
                expected: 2,
                found: 1,
            },
        ),
        (
            "too many values",
            Box::new(|b: &mut PacketBuilder| {
                b.type_("gauge")
                    .values(&[RawValue::Gauge(1.0), RawValue::Gauge(2.0)]);
            }),
            ValuesError::ValueCount {
                type_name: "gauge".into(),
                expected: 1,
                found: 2,
            },
        ),
        (
            "no values at all",
            Box::new(|b: &mut PacketBuilder| {
                b.type_("gauge").values(&[]);
            }),
            ValuesError::ValueCount {
                type_name: "gauge".into(),
                expected: 1,
                found: 0,
            },
        ),
        (
            "kind mismatch",
            Box::new(|b: &mut PacketBuilder| {
                b.type_("if_octets")
                    .values(&[RawValue::Derive(1), RawValue::Gauge(2.0)]);
            }),
            ValuesError::TypeMismatch {
                type_name: "if_octets".into(),
                source_name: "tx".into(),
                expected: DsKind::Derive,
                found: 1,
            },
        ),
        (
            "counter for derive",
            Box::new(|b: &mut PacketBuilder| {
                b.type_("derive").values(&[RawValue::Counter(1)]);
            }),
            ValuesError::TypeMismatch {
                type_name: "derive".into(),
                source_name: "value".into(),
                expected: DsKind::Derive,
                found: 0,
            },
        ),
        (
            "kind code 9",
            Box::new(|b: &mut PacketBuilder| {
                b.type_("gauge")
                    .raw_part(part::VALUES, &[0, 1, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
            }),
            ValuesError::TypeMismatch {
                type_name: "gauge".into(),
                source_name: "value".into(),
                expected: DsKind::Gauge,
                found: 9,
            },
        ),
    ];
    for (what, build, want) in cases {
        let mut b = PacketBuilder::new();
        b.host("h").time_hr(T);
        build(&mut b);
        after(&mut b);
        let (seen, r) = decode(b.bytes());
        assert_eq!(r, Ok(()), "{what}");
        assert_eq!(seen.len(), 2, "{what}: {seen:?}");
        assert_eq!(seen[0], Seen::Skipped(want.clone()), "{what}");
        assert!(
            matches!(&seen[1], Seen::List { values, .. } if values == &[RawValue::Gauge(9.0)]),
            "{what}"
        );
        assert!(!want.reason().is_empty());
    }
}

#[test]
fn counter_eq_derive_decodes_as_the_types_db_kind() {
    let mut b = PacketBuilder::new();
    b.type_("derive").values(&[RawValue::Counter(5)]);
    b.type_("counter").values(&[RawValue::Derive(-1)]);
    let (seen, r) = decode_with(b.bytes(), true);
    assert_eq!(r, Ok(()));
    let values: Vec<Vec<RawValue>> = seen
        .iter()
        .map(|s| match s {
            Seen::List { values, .. } => values.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        values,
        vec![vec![RawValue::Derive(5)], vec![RawValue::Counter(u64::MAX)]]
    );
    // Gauges are never taken for counters.
    let mut b = PacketBuilder::new();
    b.type_("derive").values(&[RawValue::Gauge(5.0)]);
    assert!(matches!(
        decode_with(b.bytes(), true).0[0],
        Seen::Skipped(_)
    ));
}

#[test]
fn strings_end_at_the_first_nul() {
    let mut b = PacketBuilder::new();
    b.raw_part(part::HOST, b"web1\0junk\0")
        .type_("gauge")
        .values(&[RawValue::Gauge(1.0)]);
    let (seen, _) = decode(b.bytes());
    assert!(matches!(&seen[0], Seen::List { host, .. } if host == "web1"));
    // "\0" alone is an empty string, which is allowed (collectd sends it to clear a field).
    let mut b = PacketBuilder::new();
    b.plugin_instance("")
        .type_("gauge")
        .values(&[RawValue::Gauge(1.0)]);
    assert_eq!(decode(b.bytes()).1, Ok(()));
}

#[test]
fn time_conversions() {
    assert_eq!(cdtime_to_seconds(T), 1_795_650_000.0);
    assert_eq!(cdtime_to_seconds(T + (1 << 29)), 1_795_650_000.5);
    // 0.185 s in 2^-30 units, as collectd would send it, prints as 0.185.
    let t = T + (0.185 * CDTIME_PER_SECOND) as u64;
    assert_eq!(
        bucky_proto::sample::Number(cdtime_to_seconds(t)).to_string(),
        "1795650000.185"
    );
    assert_eq!(seconds_to_cdtime(u64::MAX), u64::MAX);
    assert!(cdtime_to_seconds(u64::MAX).is_finite());
}

#[test]
fn sixty_four_kib_of_garbage() {
    // A deterministic pseudo-random 64 KiB: decoding ends without panicking.
    let mut x = 0x9e3779b97f4a7c15u64;
    let garbage: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _ = decode(&garbage);
    // And a packet of 7000 maximal values parts of an unknown type.
    let mut b = PacketBuilder::new();
    while b.len() < 65000 {
        b.type_("x").values(&[RawValue::Gauge(0.0)]);
    }
    let (seen, r) = decode(b.bytes());
    assert_eq!(r, Ok(()));
    assert!(seen.len() > 2000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode(&bytes);
        let _ = decode_with(&bytes, true);
    }

    /// Random well-formed parts with random lengths mixed in.
    #[test]
    fn arbitrary_parts_never_panic(parts in proptest::collection::vec((0u16..12, proptest::collection::vec(any::<u8>(), 0..40)), 0..20)) {
        let mut b = PacketBuilder::new();
        for (kind, data) in &parts {
            let kind = if *kind >= 10 { 0x100 + kind } else { *kind };
            b.raw_part(kind, data);
        }
        let _ = decode(b.bytes());
    }

    #[test]
    fn what_the_encoder_writes_decodes_back(g in any::<f64>(), d in any::<i64>(), c in any::<u64>(), host in "[a-z0-9.-]{0,20}", t in any::<u64>()) {
        let mut b = PacketBuilder::new();
        b.host(&host).time_hr(t).type_("gauge").values(&[RawValue::Gauge(g)]);
        b.type_("derive").values(&[RawValue::Derive(d)]);
        b.type_("counter").values(&[RawValue::Counter(c)]);
        let (seen, r) = decode(b.bytes());
        prop_assert_eq!(r, Ok(()));
        let got: Vec<RawValue> = seen.iter().filter_map(|s| match s { Seen::List { values, .. } => Some(values[0]), _ => None }).collect();
        prop_assert_eq!(got.len(), 3);
        match got[0] { RawValue::Gauge(x) => prop_assert_eq!(x.to_bits(), g.to_bits()), _ => prop_assert!(false) }
        prop_assert_eq!(got[1], RawValue::Derive(d));
        prop_assert_eq!(got[2], RawValue::Counter(c));
    }
}
