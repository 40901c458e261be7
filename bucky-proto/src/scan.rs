//! Byte scans of short slices 16 bytes at a time, through `wide`'s portable SIMD: bitmaps of
//! where given bytes are, so that the hot per-line paths need no per-byte branches.

use wide::u8x16;

/// The longest slice [`bitmap`] maps (bit i of a `u128` stands for byte i).
pub const MAX: usize = 128;

/// The 16 bytes of `b` at `at` (the caller keeps `at + 16 <= b.len()`).
#[inline(always)]
pub fn load16(b: &[u8], at: usize) -> u8x16 {
    let mut w = [0u8; 16];
    w.copy_from_slice(&b[at..at + 16]);
    u8x16::new(w)
}

/// Bit i set where `b[i] == byte`, for slices of 16 to [`MAX`] bytes; `None` otherwise.
#[inline(always)]
pub fn bitmap(b: &[u8], byte: u8) -> Option<u128> {
    let len = b.len();
    if !(16..=MAX).contains(&len) {
        return None;
    }
    let needle = u8x16::splat(byte);
    let mask = |at| load16(b, at).cmp_eq(needle).move_mask() as u32;
    let mut bits = 0u128;
    let mut off = 0;
    while off + 16 <= len {
        bits |= u128::from(mask(off)) << off;
        off += 16;
    }
    if off < len {
        // The last 16 bytes, minus those already seen.
        bits |= u128::from(mask(len - 16) >> (off - (len - 16))) << off;
    }
    Some(bits)
}

/// [`bitmap`] of two bytes at once: `(where a is, where b is)`.
#[inline(always)]
pub fn bitmap2(bytes: &[u8], a: u8, b: u8) -> Option<(u128, u128)> {
    let len = bytes.len();
    if !(16..=MAX).contains(&len) {
        return None;
    }
    let (na, nb) = (u8x16::splat(a), u8x16::splat(b));
    let masks = |at| {
        let v = load16(bytes, at);
        (
            v.cmp_eq(na).move_mask() as u32,
            v.cmp_eq(nb).move_mask() as u32,
        )
    };
    let (mut bits_a, mut bits_b) = (0u128, 0u128);
    let mut off = 0;
    while off + 16 <= len {
        let (ma, mb) = masks(off);
        bits_a |= u128::from(ma) << off;
        bits_b |= u128::from(mb) << off;
        off += 16;
    }
    if off < len {
        let (ma, mb) = masks(len - 16);
        let seen = off - (len - 16);
        bits_a |= u128::from(ma >> seen) << off;
        bits_b |= u128::from(mb >> seen) << off;
    }
    Some((bits_a, bits_b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_marks_every_occurrence() {
        for len in 0..=MAX + 1 {
            let b: Vec<u8> = (0..len)
                .map(|i| if i % 3 == 0 { b'.' } else { b'a' })
                .collect();
            let want: u128 = (0..len.min(MAX))
                .filter(|i| i % 3 == 0)
                .map(|i| 1u128 << i)
                .sum();
            match bitmap(&b, b'.') {
                Some(bits) => {
                    assert!((16..=MAX).contains(&len));
                    assert_eq!(bits, want, "len {len}");
                }
                None => assert!(!(16..=MAX).contains(&len)),
            }
            let other: u128 = (0..len.min(MAX))
                .filter(|i| i % 3 != 0)
                .map(|i| 1u128 << i)
                .sum();
            if let Some(pair) = bitmap2(&b, b'a', b'.') {
                assert_eq!(pair, (other, want), "len {len}");
            }
        }
    }
}
