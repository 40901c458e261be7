//! An independent encoder of carbon's pickle protocol, for sending points to carbon-cache
//! ourselves (harness self-tests, reference senders).
//!
//! A frame is a 4-byte big-endian length and a pickle (protocol 2) of
//! `[(name, (timestamp, value)), ...]`, names as `str`.

/// Encodes one pickle frame (length prefix included) of `points`.
pub fn frame(points: &[(&str, i64, f64)]) -> Vec<u8> {
    let mut body = vec![0x80, 2]; // PROTO 2
    body.push(b']'); // EMPTY_LIST
    body.push(b'('); // MARK
    for &(name, ts, value) in points {
        body.push(b'X'); // BINUNICODE
        body.extend_from_slice(&(name.len() as u32).to_le_bytes());
        body.extend_from_slice(name.as_bytes());
        push_int(&mut body, ts);
        body.push(b'G'); // BINFLOAT
        body.extend_from_slice(&value.to_be_bytes());
        body.push(0x86); // TUPLE2 (ts, value)
        body.push(0x86); // TUPLE2 (name, (ts, value))
    }
    body.push(b'e'); // APPENDS
    body.push(b'.'); // STOP
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn push_int(out: &mut Vec<u8>, v: i64) {
    if let Ok(small) = i32::try_from(v) {
        out.push(b'J'); // BININT
        out.extend_from_slice(&small.to_le_bytes());
    } else {
        out.push(0x8a); // LONG1: little-endian two's complement
        out.push(8);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn frame_layout() {
        let f = super::frame(&[("a.b", 1, 0.5)]);
        let len = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(len, f.len() - 4);
        assert_eq!(&f[4..8], &[0x80, 2, b']', b'(']);
        assert_eq!(*f.last().unwrap(), b'.');
    }
}
