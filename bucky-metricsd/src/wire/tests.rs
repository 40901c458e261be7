//! Table tests of the wire format: every command byte, every number type, every action, and
//! each way a datagram or record can be malformed.

use super::*;
use proptest::prelude::*;

/// `len:u16 BE, text, NUL`.
fn s(text: &str) -> Vec<u8> {
    let mut v = ((text.len() + 1) as u16).to_be_bytes().to_vec();
    v.extend_from_slice(text.as_bytes());
    v.push(0);
    v
}

fn datagram(host: &str, body: &[u8]) -> Vec<u8> {
    let mut v = vec![MAGIC];
    v.extend(s(host));
    v.extend_from_slice(body);
    v
}

fn records(d: &[u8]) -> Vec<Result<Record<'_>, RecordError>> {
    decode(d).unwrap().records().collect()
}

#[test]
fn header() {
    let d = datagram("web1.example.com", &[]);
    assert_eq!(
        d[..5],
        [0xAA, 0x00, 0x11, b'w', b'e'],
        "length 17 = 16 bytes of text + the NUL"
    );
    assert_eq!(*d.last().unwrap(), 0);
    let p = decode(&d).unwrap();
    assert_eq!(p.host, "web1.example.com");
    assert_eq!(p.records().count(), 0);
    // An empty host is allowed (len 1: just the NUL).
    assert_eq!(decode(&[0xAA, 0, 1, 0]).unwrap().host, "");
}

#[test]
fn header_errors() {
    let cases: &[(&[u8], PacketError)] = &[
        (b"", PacketError::Empty),
        (b"\xAB\x00\x01\x00", PacketError::Magic(0xAB)),
        (b"EXIT", PacketError::Magic(b'E')),
        (b"\xAA", PacketError::Host(StringError::NoLength)),
        (b"\xAA\x00", PacketError::Host(StringError::NoLength)),
        (b"\xAA\x00\x00", PacketError::Host(StringError::ZeroLength)),
        (
            b"\xAA\x00\x05ab\x00",
            PacketError::Host(StringError::Truncated { len: 5, left: 3 }),
        ),
        // A client that does not count the NUL: the last text byte sits where the NUL should.
        (
            b"\xAA\x00\x02ab",
            PacketError::Host(StringError::NoNul(b'b')),
        ),
        (
            b"\xAA\x00\x03\xff\xfe\x00",
            PacketError::Host(StringError::Utf8),
        ),
        (
            b"\xAA\x00\x03a\x00\x00",
            PacketError::Host(StringError::InnerNul),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(decode(bytes).err(), Some(*want), "{bytes:02x?}");
    }
}

#[test]
fn every_command_byte() {
    // Every metric type × action, the command byte spelled out.
    let cases: &[(u8, MetricType, Option<Action>)] = &[
        (0x00, MetricType::Counter, None),
        (0x01, MetricType::Counter, Some(Action::Clear)),
        (0x02, MetricType::Counter, Some(Action::Delete)),
        (0x10, MetricType::Gauge, None),
        (0x11, MetricType::Gauge, Some(Action::Clear)),
        (0x12, MetricType::Gauge, Some(Action::Delete)),
        (0x20, MetricType::Histogram, None),
        (0x21, MetricType::Histogram, Some(Action::Clear)),
        (0x22, MetricType::Histogram, Some(Action::Delete)),
        (0x30, MetricType::Meter, None),
        (0x31, MetricType::Meter, Some(Action::Clear)),
        (0x32, MetricType::Meter, Some(Action::Delete)),
        (0x40, MetricType::Timer, None),
        (0x41, MetricType::Timer, Some(Action::Clear)),
        (0x42, MetricType::Timer, Some(Action::Delete)),
    ];
    for &(cmd, metric, action) in cases {
        let mut body = vec![cmd];
        body.extend(s("m.x"));
        let action = match action {
            Some(a) => a,
            None => {
                body.extend_from_slice(&[0x00, 7]);
                Action::Update(Number::U8(7))
            }
        };
        let d = datagram("h", &body);
        assert_eq!(
            records(&d),
            vec![Ok(Record {
                metric,
                name: "m.x",
                action
            })],
            "command 0x{cmd:02x}"
        );
        // And the encoder writes exactly these bytes.
        let mut e = Encoder::new("h").unwrap();
        e.push(metric, "m.x", action).unwrap();
        assert_eq!(e.as_bytes(), &d[..], "command 0x{cmd:02x}");
    }
}

#[test]
fn every_number_type() {
    let cases: &[(&[u8], Number, f64)] = &[
        (&[0x00, 0xFF], Number::U8(255), 255.0),
        (&[0x01, 0xFF], Number::I8(-1), -1.0),
        (&[0x01, 0x80], Number::I8(-128), -128.0),
        (&[0x10, 0x01, 0x02], Number::U16(258), 258.0),
        (&[0x11, 0xFF, 0xFE], Number::I16(-2), -2.0),
        (
            &[0x20, 0xDE, 0xAD, 0xBE, 0xEF],
            Number::U32(0xDEADBEEF),
            3735928559.0,
        ),
        (&[0x21, 0x80, 0, 0, 0], Number::I32(i32::MIN), -2147483648.0),
        (
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            Number::U64(u64::MAX),
            18446744073709551615.0,
        ),
        (
            &[0x31, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFD],
            Number::I64(-3),
            -3.0,
        ),
        (&[0x40, 0x3F, 0xC0, 0, 0], Number::F32(1.5), 1.5),
        (
            &[0x41, 0x40, 0x29, 0x00, 0, 0, 0, 0, 0],
            Number::F64(12.5),
            12.5,
        ),
        (&[0x41, 0x80, 0, 0, 0, 0, 0, 0, 0], Number::F64(-0.0), -0.0),
    ];
    for &(num, want, as_f64) in cases {
        let mut body = vec![0x10];
        body.extend(s("g"));
        body.extend_from_slice(num);
        let d = datagram("h", &body);
        let got = records(&d);
        assert_eq!(
            got,
            vec![Ok(Record {
                metric: MetricType::Gauge,
                name: "g",
                action: Action::Update(want)
            })],
            "{num:02x?}"
        );
        assert_eq!(want.to_f64().to_bits(), as_f64.to_bits());
        assert_eq!(want.code(), num[0]);
        assert_eq!(Number::width(num[0]), Some(num.len() - 1));
        let mut e = Encoder::new("h").unwrap();
        e.update(MetricType::Gauge, "g", want).unwrap();
        assert_eq!(e.as_bytes(), &d[..]);
    }
}

#[test]
fn several_records_in_order() {
    let mut e = Encoder::new("db1").unwrap();
    e.update(MetricType::Counter, "a", Number::I32(-5)).unwrap();
    e.clear(MetricType::Histogram, "b").unwrap();
    e.update(MetricType::Timer, "c", Number::F32(0.25)).unwrap();
    e.delete(MetricType::Meter, "d").unwrap();
    let d = e.into_bytes();
    let got: Vec<_> = records(&d).into_iter().map(Result::unwrap).collect();
    let names: Vec<_> = got.iter().map(|r| r.name).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(got[2].action, Action::Update(Number::F32(0.25)));
}

/// A good record after the bad one, to see whether decoding goes on.
fn good() -> Vec<u8> {
    let mut v = vec![0x00];
    v.extend(s("ok"));
    v.extend_from_slice(&[0x00, 1]);
    v
}

fn good_record() -> Record<'static> {
    Record {
        metric: MetricType::Counter,
        name: "ok",
        action: Action::Update(Number::U8(1)),
    }
}

#[test]
fn malformed_records_skipped_or_ending_the_datagram() {
    use RecordErrorKind as K;
    // (bad record bytes, the error, whether the good record after it is still read)
    let mut cases: Vec<(Vec<u8>, RecordErrorKind, bool)> = Vec::new();
    // Unknown metric type, update: extent known (name + number), skipped.
    let mut r = vec![0x50];
    r.extend(s("x"));
    r.extend_from_slice(&[0x00, 1]);
    cases.push((r, K::MetricType(0x50), true));
    // Unknown metric type, delete: no number, skipped.
    let mut r = vec![0xF2];
    r.extend(s("x"));
    cases.push((r, K::MetricType(0xF2), true));
    // Unknown action: whether a number follows is unknown, so the datagram ends.
    let mut r = vec![0x03];
    r.extend(s("x"));
    cases.push((r, K::Action(0x03), false));
    cases.push((vec![0x1F], K::Action(0x1F), false));
    // Empty name: skipped.
    let mut r = vec![0x10];
    r.extend(s(""));
    r.extend_from_slice(&[0x00, 1]);
    cases.push((r, K::EmptyName, true));
    // Name not UTF-8: skipped (the number is stepped over too).
    let mut r = vec![0x10, 0x00, 0x03, 0xC3, 0x28, 0x00, 0x00, 9];
    cases.push((r.clone(), K::Name(StringError::Utf8), true));
    // Name with an inner NUL: skipped.
    r = vec![0x11, 0x00, 0x03, b'a', 0x00, 0x00];
    cases.push((r, K::Name(StringError::InnerNul), true));
    // Name whose NUL is not where its length says: the framing is lost.
    cases.push((
        vec![0x11, 0x00, 0x02, b'a', b'b'],
        K::Name(StringError::NoNul(b'b')),
        false,
    ));
    cases.push((
        vec![0x11, 0x00, 0x00],
        K::Name(StringError::ZeroLength),
        false,
    ));
    // Unknown number type: its width is unknown.
    let mut r = vec![0x10];
    r.extend(s("x"));
    r.extend_from_slice(&[0x42, 0, 0, 0, 0]);
    cases.push((r, K::NumberType(0x42), false));
    // Non-finite floats: skipped.
    for (bytes, v) in [
        (f64::NAN.to_be_bytes(), f64::NAN),
        (f64::INFINITY.to_be_bytes(), f64::INFINITY),
    ] {
        let mut r = vec![0x20];
        r.extend(s("x"));
        r.push(0x41);
        r.extend_from_slice(&bytes);
        cases.push((r, K::NotFinite(v), true));
    }
    let mut r = vec![0x20];
    r.extend(s("x"));
    r.push(0x40);
    r.extend_from_slice(&f32::NEG_INFINITY.to_be_bytes());
    cases.push((r, K::NotFinite(f64::NEG_INFINITY), true));

    for (bad, kind, keeps_rest) in cases {
        let mut body = good();
        let offset = 1 + s("h").len() + body.len();
        body.extend_from_slice(&bad);
        body.extend(good());
        let d = datagram("h", &body);
        let got = records(&d);
        assert_eq!(got[0], Ok(good_record()), "{bad:02x?}");
        match got[1] {
            Err(e) => {
                assert_eq!(e.offset, offset, "{bad:02x?}");
                // NaN != NaN: compare the rendering.
                assert_eq!(format!("{:?}", e.kind), format!("{kind:?}"), "{bad:02x?}");
                assert_eq!(e.loses_framing(), !keeps_rest, "{bad:02x?}");
            }
            Ok(r) => panic!("{bad:02x?} decoded as {r:?}"),
        }
        if keeps_rest {
            assert_eq!(got.len(), 3, "{bad:02x?}: {got:?}");
            assert_eq!(got[2], Ok(good_record()), "{bad:02x?}");
        } else {
            assert_eq!(got.len(), 2, "{bad:02x?}: {got:?}");
        }
    }
}

#[test]
fn truncated_records_end_the_datagram() {
    use RecordErrorKind as K;
    let mut full = vec![0x30];
    full.extend(s("meter"));
    full.extend_from_slice(&[0x20, 0, 0, 0, 7]);
    let name_end = 1 + s("meter").len();
    for cut in 1..full.len() {
        let d = datagram("h", &full[..cut]);
        let got = records(&d);
        assert_eq!(got.len(), 1, "cut at {cut}");
        let e = got[0].unwrap_err();
        assert!(e.loses_framing(), "cut at {cut}");
        let want = if cut < 3 {
            K::Name(StringError::NoLength)
        } else if cut < name_end {
            K::Name(StringError::Truncated {
                len: 6,
                left: cut - 3,
            })
        } else if cut == name_end {
            K::NoNumber
        } else {
            K::NumberTruncated {
                code: 0x20,
                need: 4,
                left: cut - name_end - 1,
            }
        };
        assert_eq!(e.kind, want, "cut at {cut}");
    }
}

#[test]
fn error_texts_name_the_value() {
    let e = RecordError {
        offset: 9,
        kind: RecordErrorKind::Action(0x07),
    };
    assert_eq!(
        e.to_string(),
        "record at byte 9: unknown action in command byte 0x07"
    );
    assert_eq!(
        PacketError::Magic(0x45).to_string(),
        "magic byte 0x45, expected 0xaa"
    );
}

#[test]
fn encoder_refuses_what_cannot_be_framed() {
    assert!(matches!(
        Encoder::new(&"h".repeat(MAX_STRING + 1)),
        Err(EncodeError::TooLong { what: "host", .. })
    ));
    assert!(Encoder::new(&"h".repeat(MAX_STRING)).is_ok());
    let mut e = Encoder::new("h").unwrap();
    let before = e.len();
    assert!(matches!(
        e.update(MetricType::Gauge, "a\0b", Number::U8(1)),
        Err(EncodeError::Nul { what: "name", .. })
    ));
    assert_eq!(
        e.update(MetricType::Gauge, "", Number::U8(1)),
        Err(EncodeError::EmptyName)
    );
    assert_eq!(e.len(), before, "a refused record leaves nothing behind");
    assert!(e.is_empty());
    e.update(MetricType::Gauge, "a", Number::U8(1)).unwrap();
    assert!(!e.is_empty());
    e.reset();
    assert!(e.is_empty());
    assert_eq!(decode(e.as_bytes()).unwrap().host, "h");
}

fn any_number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<u8>().prop_map(Number::U8),
        any::<i8>().prop_map(Number::I8),
        any::<u16>().prop_map(Number::U16),
        any::<i16>().prop_map(Number::I16),
        any::<u32>().prop_map(Number::U32),
        any::<i32>().prop_map(Number::I32),
        any::<u64>().prop_map(Number::U64),
        any::<i64>().prop_map(Number::I64),
        any::<f32>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(Number::F32),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(Number::F64),
    ]
}

fn any_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        any_number().prop_map(Action::Update),
        Just(Action::Clear),
        Just(Action::Delete),
    ]
}

fn any_type() -> impl Strategy<Value = MetricType> {
    (0usize..5).prop_map(|i| MetricType::ALL[i])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip(
        host in "[a-zA-Z0-9.\\-é]{0,20}",
        recs in proptest::collection::vec((any_type(), "[a-z.;=é ]{1,30}", any_action()), 0..20)
    ) {
        let records: Vec<Record> = recs
            .iter()
            .map(|(metric, name, action)| Record { metric: *metric, name, action: *action })
            .collect();
        let bytes = encode(&host, &records).unwrap();
        let p = decode(&bytes).unwrap();
        prop_assert_eq!(p.host, host.as_str());
        let back: Vec<Record> = p.records().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(back.len(), records.len());
        for (a, b) in back.iter().zip(&records) {
            prop_assert_eq!(a.metric, b.metric);
            prop_assert_eq!(a.name, b.name);
            match (a.action, b.action) {
                (Action::Update(x), Action::Update(y)) => {
                    prop_assert_eq!(x.code(), y.code());
                    prop_assert_eq!(x.to_f64().to_bits(), y.to_f64().to_bits());
                }
                (x, y) => prop_assert_eq!(x, y),
            }
        }
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(p) = decode(&bytes) {
            for _ in p.records() {}
        }
        let mut with_magic = vec![MAGIC, 0, 1, 0];
        with_magic.extend_from_slice(&bytes);
        if let Ok(p) = decode(&with_magic) {
            // Every record consumes at least one byte, so this ends.
            prop_assert!(p.records().count() <= bytes.len());
        }
    }
}

/// The example datagram of the README, byte for byte.
#[test]
fn the_readme_example() {
    let hex = "aa 00 05 77 65 62 31 00 \
               00 00 05 68 69 74 73 00 00 01 \
               40 00 09 64 62 2e 71 75 65 72 79 00 41 40 29 00 00 00 00 00 00 \
               21 00 06 73 69 7a 65 73 00";
    let bytes: Vec<u8> = hex
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let mut e = Encoder::new("web1").unwrap();
    e.update(MetricType::Counter, "hits", Number::U8(1))
        .unwrap();
    e.update(MetricType::Timer, "db.query", Number::F64(12.5))
        .unwrap();
    e.clear(MetricType::Histogram, "sizes").unwrap();
    assert_eq!(e.as_bytes(), &bytes[..]);
}
