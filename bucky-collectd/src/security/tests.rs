//! The result matrix of spec §4.8, the auth file rules, every refusal, and reloading.

use super::*;
use crate::encode::{encrypt, sign, PacketBuilder};
use crate::packet::RawValue;

fn payload() -> Vec<u8> {
    let mut b = PacketBuilder::new();
    b.host("h").type_("gauge").values(&[RawValue::Gauge(1.0)]);
    b.build()
}

const IV: [u8; 16] = *b"0123456789abcdef";

fn users(list: &[(&str, &str)]) -> Users {
    let mut u = Users::new();
    for (user, pw) in list {
        u.insert(user, pw);
    }
    u
}

/// "ok" (payload returned), "ok unverified", or the refusal's reason.
fn outcome(sec: &Security, packet: &[u8]) -> String {
    let mut scratch = Vec::new();
    match sec.open(packet, &mut scratch) {
        Ok(o) => {
            assert_eq!(o.payload, payload().as_slice());
            if o.verified || o.level == Level::None {
                "ok".into()
            } else {
                "ok unverified".into()
            }
        }
        Err(r) => r.reason().into(),
    }
}

#[test]
fn result_matrix_of_the_spec() {
    let plain = payload();
    let signed = sign(&plain, "alice", "123");
    let encrypted = encrypt(&plain, "alice", "123", IV);
    let none = users(&[]);
    let alice = users(&[("alice", "123")]);
    let bob = users(&[("bob", "456")]);
    let rows: &[(Level, &Users, [&str; 3])] = &[
        (Level::None, &none, ["ok", "ok unverified", "unknown_user"]),
        (Level::None, &alice, ["ok", "ok unverified", "ok"]),
        (
            Level::Sign,
            &bob,
            ["unsigned", "unknown_user", "unknown_user"],
        ),
        (Level::Sign, &alice, ["unsigned", "ok", "ok"]),
        (
            Level::Encrypt,
            &bob,
            ["unencrypted", "unencrypted", "unknown_user"],
        ),
        (Level::Encrypt, &alice, ["unencrypted", "unencrypted", "ok"]),
    ];
    for (level, users, want) in rows {
        let sec = Security::new(*level, (*users).clone());
        let got = [
            outcome(&sec, &plain),
            outcome(&sec, &signed),
            outcome(&sec, &encrypted),
        ];
        assert_eq!(got, *want, "level {level:?}, users {users:?}");
    }
}

#[test]
fn wrong_passwords_and_altered_packets() {
    let plain = payload();
    let sec = Security::new(Level::Sign, users(&[("alice", "123")]));
    assert_eq!(
        outcome(&sec, &sign(&plain, "alice", "wrong")),
        "bad_signature"
    );
    let mut altered = sign(&plain, "alice", "123");
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert_eq!(outcome(&sec, &altered), "bad_signature");
    assert_eq!(
        outcome(&sec, &encrypt(&plain, "alice", "wrong", IV)),
        "bad_checksum"
    );
    let mut altered = encrypt(&plain, "alice", "123", IV);
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert_eq!(outcome(&sec, &altered), "bad_checksum");
    // Level 0 never checks signatures (as collectd and the original).
    let sec0 = Security::new(Level::None, users(&[("alice", "123")]));
    assert_eq!(
        outcome(&sec0, &sign(&plain, "alice", "wrong")),
        "ok unverified"
    );
    // But it does decrypt, and a wrong password shows.
    assert_eq!(
        outcome(&sec0, &encrypt(&plain, "alice", "wrong", IV)),
        "bad_checksum"
    );
}

#[test]
fn malformed_security_parts() {
    let plain = payload();
    let sec = Security::new(Level::Sign, users(&[("alice", "123")]));
    let mut scratch = Vec::new();
    let refuse = |packet: &[u8], scratch: &mut Vec<u8>| sec.open(packet, scratch).unwrap_err();

    assert_eq!(refuse(&[], &mut scratch), Refusal::Truncated(0));
    assert_eq!(refuse(&[2, 0, 0], &mut scratch), Refusal::Truncated(3));
    // Signature part: length below 4, beyond the packet, no room for a user name.
    for len in [0u16, 3, 200] {
        let mut p = vec![0x02, 0x00];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0; 40]);
        assert!(
            matches!(refuse(&p, &mut scratch), Refusal::Malformed(_)),
            "len {len}"
        );
    }
    let mut p = vec![0x02, 0x00, 0, 36];
    p.extend_from_slice(&[0; 32]);
    p.extend_from_slice(&plain);
    assert!(matches!(refuse(&p, &mut scratch), Refusal::Malformed(_)));

    // Encryption part: not running to the end, too short, user name too long.
    let mut enc = encrypt(&plain, "alice", "123", IV);
    enc.push(0);
    assert!(matches!(refuse(&enc, &mut scratch), Refusal::Malformed(_)));
    let short = [
        0x02, 0x10, 0, 20, 0, 5, b'a', b'l', b'i', b'c', b'e', 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert!(matches!(
        refuse(&short, &mut scratch),
        Refusal::Malformed(_)
    ));
    let mut long_user = encrypt(&plain, "alice", "123", IV);
    long_user[4] = 0xff;
    assert!(matches!(
        refuse(&long_user, &mut scratch),
        Refusal::Malformed(_)
    ));
    // The smallest encrypted packet whose user name fits decodes to an empty payload.
    let empty = encrypt(&[], "alice", "123", IV);
    assert!(matches!(
        refuse(&empty, &mut scratch),
        Refusal::Malformed(_)
    ));
    let one = encrypt(&[0], "alice", "123", IV);
    let o = sec.open(&one, &mut scratch).unwrap();
    assert_eq!(o.payload, &[0]);
    // Signed or encrypted by a user not in the file.
    assert_eq!(
        sec.open(&sign(&plain, "mallory", "x"), &mut scratch)
            .unwrap_err(),
        Refusal::UnknownUser("mallory".into())
    );
}

#[test]
fn refusals_read_well() {
    let r = Refusal::LowerLevel {
        packet: Level::None,
        required: Level::Sign,
    };
    assert_eq!(r.to_string(), "none packet refused at security level Sign");
    assert_eq!(r.reason(), "unsigned");
    let r = Refusal::LowerLevel {
        packet: Level::Sign,
        required: Level::Encrypt,
    };
    assert_eq!(
        r.to_string(),
        "sign packet refused at security level Encrypt"
    );
    assert_eq!(r.reason(), "unencrypted");
}

#[test]
fn levels() {
    for (text, level) in [
        ("0", Level::None),
        ("none", Level::None),
        ("1", Level::Sign),
        ("sign", Level::Sign),
        ("SIGN", Level::Sign),
        ("Sign", Level::Sign),
        ("2", Level::Encrypt),
        ("encrypt", Level::Encrypt),
        ("ENCRYPT", Level::Encrypt),
        (" Encrypt ", Level::Encrypt),
    ] {
        assert_eq!(Level::parse(text), Some(level), "{text}");
    }
    assert_eq!(Level::parse("encrypted"), None);
    assert_eq!(Level::parse("3"), None);
    assert_eq!(Level::from_value(&Value::Int(2)), Some(Level::Encrypt));
    assert_eq!(
        Level::from_value(&Value::Str("Sign".into())),
        Some(Level::Sign)
    );
    assert_eq!(Level::from_value(&Value::Bool(true)), None);
}

#[test]
fn auth_file_rules() {
    let (u, warnings) = Users::parse("alice: 123\nbob:456  \n\n  charlie  :  789", "f").unwrap();
    assert_eq!(u.len(), 3);
    assert!(warnings.is_empty());
    let sec = Security::new(Level::Sign, u);
    let p = payload();
    for (user, pw) in [("alice", "123"), ("bob", "456"), ("charlie", "789")] {
        assert_eq!(outcome(&sec, &sign(&p, user, pw)), "ok", "{user}");
    }
    // Passwords are split at the first colon only; comments and repeats.
    let (u, warnings) = Users::parse(
        "# users\n  #indented comment\nx: a:b\nx: c:d\n: nouser\nnopassword:\n",
        "auth.txt",
    )
    .unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(
        warnings,
        vec![
            "auth file auth.txt: line 4: user 'x' again (the last entry wins)",
            "auth file auth.txt: line 5: missing user (line skipped)",
            "auth file auth.txt: line 6: missing password (line skipped)",
        ]
    );
    let sec = Security::new(Level::Sign, u);
    assert_eq!(outcome(&sec, &sign(&p, "x", "c:d")), "ok");
    assert_eq!(outcome(&sec, &sign(&p, "x", "a:b")), "bad_signature");
    let e = Users::parse("alice 123\n", "auth.txt").unwrap_err();
    assert_eq!(
        e.to_string(),
        "auth file auth.txt: line 1: expected 'user: password', found no ':'"
    );
    // Passwords never show in debug output.
    assert!(!format!("{:?}", users(&[("alice", "s3cret")])).contains("s3cret"));
}

#[test]
fn the_auth_file_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth");
    std::fs::write(&path, "alice: 1\n").unwrap();
    let (mut file, users, _) = AuthFile::open(&path).unwrap();
    assert!(users.contains("alice"));
    file.set_period(Duration::ZERO);
    let t = Instant::now();
    assert!(file.poll(t).is_none(), "unchanged");
    // Same size, rewritten in place: the stamp (mtime/ctime in ns) still changes.
    std::fs::write(&path, "alice: 2\n").unwrap();
    match file.poll(t) {
        Some(Reload::Users(u, _)) => assert!(u.contains("alice")),
        other => panic!("{other:?}"),
    }
    // Replaced by a rename.
    let tmp = dir.path().join("auth.new");
    std::fs::write(&tmp, "bob: 3\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    match file.poll(t) {
        Some(Reload::Users(u, _)) => assert!(u.contains("bob") && !u.contains("alice")),
        other => panic!("{other:?}"),
    }
    // A broken file keeps the users in force (reported once).
    std::fs::write(&path, "no colon here\n").unwrap();
    assert!(matches!(file.poll(t), Some(Reload::Failed(m)) if m.contains("line 1")));
    assert!(file.poll(t).is_none());
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(file.poll(t), Some(Reload::Failed(_))));
    assert!(file.poll(t).is_none());
    std::fs::write(&path, "carol: 4\n").unwrap();
    assert!(matches!(file.poll(t), Some(Reload::Users(u, _)) if u.contains("carol")));
    // At most once per period.
    file.set_period(Duration::from_secs(3600));
    std::fs::write(&path, "dave: 5\n").unwrap();
    assert!(file.poll(Instant::now()).is_none());
}
