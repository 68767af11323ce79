//! LEB128 variable-length integers and zigzag signs, for the compact (unordered) encodings.

use super::cursor::Cursor;
use crate::error::DecodeError;

/// Appends `v` in LEB128: seven bits per byte, low bits first, high bit = "more follows".
pub(crate) fn put_u64(buf: &mut Vec<u8>, v: u64) {
    put_u128(buf, u128::from(v));
}

/// Appends a 128-bit `v` in LEB128 (decimal mantissas need 96 bits).
pub(crate) fn put_u128(buf: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads a LEB128 value of at most 64 bits.
pub(crate) fn get_u64(cur: &mut Cursor<'_>) -> Result<u64, DecodeError> {
    let start = cur.pos();
    let v = get_u128(cur)?;
    u64::try_from(v).map_err(|_| cur.invalid(start, "varint exceeds 64 bits"))
}

/// Reads a LEB128 value of at most 128 bits.
pub(crate) fn get_u128(cur: &mut Cursor<'_>) -> Result<u128, DecodeError> {
    let start = cur.pos();
    let mut v: u128 = 0;
    let mut shift = 0u32;
    loop {
        let b = cur.byte()?;
        let bits = u128::from(b & 0x7f);
        if shift >= 128 || (shift > 121 && bits >> (128 - shift) != 0) {
            return Err(cur.invalid(start, "varint exceeds 128 bits"));
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
    }
}

/// Maps signed to unsigned so that small magnitudes of either sign stay short.
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_extremes() {
        for v in [0u128, 1, 127, 128, 300, u128::from(u64::MAX), u128::MAX] {
            let mut buf = Vec::new();
            put_u128(&mut buf, v);
            let mut cur = Cursor::new(&buf, "test");
            assert_eq!(get_u128(&mut cur), Ok(v));
            assert!(cur.is_empty());
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn rejects_overlong() {
        let buf = [0xffu8; 20];
        let mut cur = Cursor::new(&buf, "test");
        assert!(get_u128(&mut cur).is_err());
        let mut buf = Vec::new();
        put_u128(&mut buf, u128::from(u64::MAX) + 1);
        assert!(get_u64(&mut Cursor::new(&buf, "test")).is_err());
    }
}
