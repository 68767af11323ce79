//! The compact binary form of a snapshot descriptor, as sent in `start` answers and
//! published to the store.
//!
//! Layout: `[format = 1][varint base][varint n][n bitset bytes]`, the bitset little-endian
//! (byte j bit k ↔ tid base + 1 + 8j + k) with trailing zero bytes trimmed. Varints are
//! LEB128 (7 bits per byte, low bits first). The format byte lets a later encoding (e.g.
//! run-length for sparse sets) be introduced without breaking readers.

use crate::Snapshot;

/// The only format written today.
const FORMAT_BITSET: u8 = 1;

/// Why bytes could not be read as a snapshot descriptor. Input comes from the network or the
/// store, so every malformation is an error, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty snapshot encoding")]
    Empty,
    /// The format byte names no known format (written by a newer version?).
    #[error("unknown snapshot format {0}")]
    UnknownFormat(u8),
    /// The input ended inside a field.
    #[error("snapshot encoding truncated in {0}")]
    Truncated(&'static str),
    /// A varint is longer than 10 bytes or overflows 64 bits.
    #[error("malformed varint in {0}")]
    BadVarint(&'static str),
    /// Bytes follow the bitset.
    #[error("{0} unexpected bytes after the snapshot")]
    TrailingBytes(usize),
    /// The bitset names tids beyond `u64::MAX`.
    #[error("bitset of {bytes} bytes above base {base} overflows the tid space")]
    TidOverflow {
        /// The decoded base.
        base: u64,
        /// The bitset length.
        bytes: u64,
    },
}

impl Snapshot {
    /// Appends the encoding of this snapshot to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let bytes = self.bitset_len();
        out.reserve(1 + 20 + bytes);
        out.push(FORMAT_BITSET);
        put_varint(out, self.base());
        put_varint(out, bytes as u64);
        let words = self.words();
        if let Some((last, full)) = words.split_last() {
            for word in full {
                out.extend_from_slice(&word.to_le_bytes());
            }
            let tail = bytes - full.len() * 8;
            out.extend_from_slice(&last.to_le_bytes()[..tail]);
        }
    }

    /// The encoding as a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// The length of [`Snapshot::encode`]'s output, without encoding (for size metrics and
    /// the window check).
    pub fn encoded_len(&self) -> usize {
        let bytes = self.bitset_len();
        1 + varint_len(self.base()) + varint_len(bytes as u64) + bytes
    }

    /// Bitset bytes after trimming trailing zero bytes (the last word is non-zero).
    fn bitset_len(&self) -> usize {
        match self.words().last() {
            Some(&last) => {
                let used_bits = 64 - last.leading_zeros() as usize;
                (self.words().len() - 1) * 8 + used_bits.div_ceil(8)
            }
            None => 0,
        }
    }

    /// Reads a snapshot written by [`Snapshot::encode`]. The whole input must be one
    /// snapshot. Trailing zero bitset bytes are accepted (and dropped).
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
        let (snapshot, used) = Snapshot::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - used));
        }
        Ok(snapshot)
    }

    /// Reads one snapshot from the front of `bytes` and returns it with the number of bytes
    /// it took, for records that embed a snapshot among other fields.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Snapshot, usize), DecodeError> {
        let (&format, mut rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if format != FORMAT_BITSET {
            return Err(DecodeError::UnknownFormat(format));
        }
        let base = take_varint(&mut rest, "base")?;
        let len = take_varint(&mut rest, "bitset length")?;
        if len > rest.len() as u64 {
            return Err(DecodeError::Truncated("bitset"));
        }
        let len_usize = len as usize;
        let (bitset, rest) = rest.split_at(len_usize);
        // Highest set bit decides overflow; trailing zero bytes do not count.
        let used = bitset.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if used > 0 {
            let top_byte = bitset[used - 1];
            let top_bit = (used as u64 - 1) * 8 + u64::from(7 - top_byte.leading_zeros() as u8);
            if top_bit >= u64::MAX - base {
                return Err(DecodeError::TidOverflow { base, bytes: len });
            }
        }
        let mut words = Vec::with_capacity(used.div_ceil(8));
        for chunk in bitset[..used].chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            words.push(u64::from_le_bytes(word));
        }
        Ok((Snapshot::from_words(base, words), bytes.len() - rest.len()))
    }
}

/// Appends `value` as a LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The number of bytes [`put_varint`] writes for `value`.
fn varint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Reads a LEB128 varint from the front of `input`, advancing it.
fn take_varint(input: &mut &[u8], field: &'static str) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = input.split_first().ok_or(DecodeError::Truncated(field))?;
        *input = rest;
        let low = u64::from(byte & 0x7f);
        if i == 9 && low > 1 {
            return Err(DecodeError::BadVarint(field));
        }
        value |= low << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::BadVarint(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_snapshot_is_three_bytes() {
        let s = Snapshot::new(0);
        assert_eq!(s.to_bytes(), vec![1, 0, 0]);
        assert_eq!(s.encoded_len(), 3);
        assert_eq!(Snapshot::decode(&s.to_bytes()), Ok(s));
    }

    #[test]
    fn bitset_is_trimmed_to_the_last_nonzero_byte() {
        let s = Snapshot::from_committed(1000, [1001, 1010]);
        // base 1000 = 2 varint bytes; bits 0 and 9 → 2 bitset bytes.
        assert_eq!(s.to_bytes(), vec![1, 0xe8, 0x07, 2, 0b1, 0b10]);
        assert_eq!(s.encoded_len(), 6);
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX - 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut input = out.as_slice();
            assert_eq!(take_varint(&mut input, "t"), Ok(v));
            assert!(input.is_empty());
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(Snapshot::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            Snapshot::decode(&[9, 0, 0]),
            Err(DecodeError::UnknownFormat(9))
        );
        assert_eq!(Snapshot::decode(&[1]), Err(DecodeError::Truncated("base")));
        assert_eq!(
            Snapshot::decode(&[1, 0x80]),
            Err(DecodeError::Truncated("base"))
        );
        assert_eq!(
            Snapshot::decode(&[1, 0, 5, 1]),
            Err(DecodeError::Truncated("bitset"))
        );
        assert_eq!(
            Snapshot::decode(&[1, 0, 0, 7]),
            Err(DecodeError::TrailingBytes(1))
        );
        let mut eleven = vec![1];
        eleven.extend([0xff; 10]);
        eleven.push(0);
        assert_eq!(
            Snapshot::decode(&eleven),
            Err(DecodeError::BadVarint("base"))
        );
        let mut overflow = vec![1];
        put_varint(&mut overflow, u64::MAX - 2);
        overflow.extend([1, 0b100]); // bit 2 ↔ tid MAX+1
        assert!(matches!(
            Snapshot::decode(&overflow),
            Err(DecodeError::TidOverflow { .. })
        ));
        // Huge declared length with few bytes must not allocate or panic.
        let mut huge = vec![1, 0];
        put_varint(&mut huge, u64::MAX);
        assert_eq!(
            Snapshot::decode(&huge),
            Err(DecodeError::Truncated("bitset"))
        );
    }

    #[test]
    fn trailing_zero_bitset_bytes_are_accepted_and_dropped() {
        let s = Snapshot::decode(&[1, 4, 3, 0b1, 0, 0]).expect("valid");
        assert_eq!(s, Snapshot::from_committed(4, [5]));
        assert_eq!(s.to_bytes(), vec![1, 4, 1, 1]);
    }

    #[test]
    fn decode_prefix_reports_the_bytes_used() {
        let s = Snapshot::from_committed(3, [5, 70]);
        let mut bytes = s.to_bytes();
        let len = bytes.len();
        bytes.extend([42, 43]);
        assert_eq!(Snapshot::decode_prefix(&bytes), Ok((s, len)));
    }
}
