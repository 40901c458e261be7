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

/// Joins per-chunk masks into one bitmap of a slice of `len` bytes (16 to [`MAX`]):
/// `chunk(at)` gives the 16-bit mask of the 16 bytes at `at`. Full chunks sit at constant
/// offsets, so only the tail (the last 16 bytes, minus those already seen) needs a variable
/// shift.
#[inline(always)]
pub fn gather(len: usize, mut chunk: impl FnMut(usize) -> u32) -> u128 {
    let full = len / 16;
    let (mut lo, mut hi) = (0u64, 0u64);
    if full >= 1 {
        lo |= u64::from(chunk(0));
    }
    if full >= 2 {
        lo |= u64::from(chunk(16)) << 16;
    }
    if full >= 3 {
        lo |= u64::from(chunk(32)) << 32;
    }
    if full >= 4 {
        lo |= u64::from(chunk(48)) << 48;
    }
    if full >= 5 {
        hi |= u64::from(chunk(64));
    }
    if full >= 6 {
        hi |= u64::from(chunk(80)) << 16;
    }
    if full >= 7 {
        hi |= u64::from(chunk(96)) << 32;
    }
    if full >= 8 {
        hi |= u64::from(chunk(112)) << 48;
    }
    let mut bits = u128::from(lo) | (u128::from(hi) << 64);
    let off = full * 16;
    if off < len && len >= 16 {
        bits |= u128::from(chunk(len - 16) >> (off - (len - 16))) << off;
    }
    bits
}

/// Bit i set where `b[i] == byte`, for slices of 16 to [`MAX`] bytes; `None` otherwise.
#[inline(always)]
pub fn bitmap(b: &[u8], byte: u8) -> Option<u128> {
    if !(16..=MAX).contains(&b.len()) {
        return None;
    }
    let needle = u8x16::splat(byte);
    Some(gather(b.len(), |at| {
        load16(b, at).cmp_eq(needle).move_mask() as u32
    }))
}

/// [`bitmap`] of two bytes, one scan each: `(where a is, where b is)`.
#[inline(always)]
pub fn bitmap2(bytes: &[u8], a: u8, b: u8) -> Option<(u128, u128)> {
    Some((bitmap(bytes, a)?, bitmap(bytes, b)?))
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
