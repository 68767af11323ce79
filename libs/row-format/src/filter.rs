//! Scan pre-filters: whether a stored record may hold a row whose columns equal given values.
//!
//! A filter narrows what a storage node sends back; it never decides what a query returns.
//! The processing node still checks visibility and evaluates the whole SQL condition on what
//! arrives, so the one rule here is: never drop a record that could hold a matching row.
//! A record passes when *any* of its versions matches (the node does not know the reader's
//! snapshot), and anything the walk cannot read (another layout, damage, a row shorter than a
//! filtered column) passes too.

use crate::{
    MAX_VARINT_BYTES, RECORD_FORMAT_V1, TAG_BYTES, TAG_DATE, TAG_DECIMAL, TAG_FALSE, TAG_FLOAT,
    TAG_INT, TAG_NULL, TAG_TEXT, TAG_TIMESTAMP, TAG_TRUE,
};

/// One condition: the value at position `column` of the row, tag byte included, is exactly
/// `value`. Exact bytes stand for SQL equality only where the encoding is canonical (integers,
/// text under byte-wise collation); choosing such columns is the processing node's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnEquals<'a> {
    /// The column's position in the row.
    pub column: usize,
    /// The value's encoding: its tag byte and payload.
    pub value: &'a [u8],
}

/// Whether some live version of `record` has every condition hold, or the record cannot be
/// read as this layout (then it must be shipped and judged by the reader). No conditions:
/// every record passes.
pub fn may_match(record: &[u8], conditions: &[ColumnEquals<'_>]) -> bool {
    if conditions.is_empty() {
        return true;
    }
    any_version_matches(record, conditions).unwrap_or(true)
}

/// Whether `record` may hold versions a garbage collector could reclaim: more than one
/// version, a tombstone, no version at all, or bytes this layout cannot read. A record with
/// a single live version holds nothing to reclaim whatever the collector's horizon, and an
/// empty value is not a record (the version-unaware index entries). The only rule, as for
/// [`may_match`]: never answer `false` for a record that has something to reclaim.
pub fn may_hold_garbage(record: &[u8]) -> bool {
    if record.is_empty() {
        return false;
    }
    single_live_version(record).is_none_or(|single| !single)
}

/// `None` when the record's header is not readable as the layout.
fn single_live_version(record: &[u8]) -> Option<bool> {
    let mut reader = Reader { bytes: record };
    if reader.byte()? != RECORD_FORMAT_V1 {
        return None;
    }
    if reader.varint()? != 1 {
        return Some(false);
    }
    reader.varint()?; // tid
    Some(reader.varint()? != 0)
}

/// `None` when the record is not readable as the layout.
fn any_version_matches(record: &[u8], conditions: &[ColumnEquals<'_>]) -> Option<bool> {
    let mut reader = Reader { bytes: record };
    if reader.byte()? != RECORD_FORMAT_V1 {
        return None;
    }
    let versions = reader.varint()?;
    for _ in 0..versions {
        reader.varint()?; // tid, or its difference to the newer version's
        let body = reader.varint()?;
        if body == 0 {
            continue; // a tombstone holds no row
        }
        let row = reader.take(usize::try_from(body - 1).ok()?)?;
        if row_matches(row, conditions)? {
            return Some(true);
        }
    }
    Some(false)
}

/// `None` when the row is not readable; a row too short to hold a filtered column matches
/// (its missing values are the reader's to interpret).
fn row_matches(row: &[u8], conditions: &[ColumnEquals<'_>]) -> Option<bool> {
    let mut reader = Reader { bytes: row };
    let count = reader.varint()?;
    let last = conditions.iter().map(|c| c.column).max()?;
    if (last as u64) >= count {
        return Some(true);
    }
    for column in 0..=last {
        let value = reader.value()?;
        for condition in conditions.iter().filter(|c| c.column == column) {
            if condition.value != value {
                return Some(false);
            }
        }
    }
    Some(true)
}

/// A cursor over a byte slice that answers `None` at the first byte it cannot read.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.bytes.len() {
            return None;
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Some(taken)
    }

    /// The length of the LEB128 value at the front, at most [`MAX_VARINT_BYTES`].
    fn varint_len(&self) -> Option<usize> {
        let end = self
            .bytes
            .iter()
            .take(MAX_VARINT_BYTES)
            .position(|b| b & 0x80 == 0)?;
        Some(end + 1)
    }

    /// A LEB128 value of at most 64 bits.
    fn varint(&mut self) -> Option<u64> {
        let len = self.varint_len()?;
        if len > 10 {
            return None;
        }
        let mut value: u64 = 0;
        for (i, b) in self.take(len)?.iter().enumerate() {
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return None;
            }
            value |= bits << (7 * i);
        }
        Some(value)
    }

    /// The next value of a row, tag byte included.
    fn value(&mut self) -> Option<&'a [u8]> {
        let start = self.bytes;
        let tag = *start.first()?;
        let payload = {
            let rest = Reader { bytes: &start[1..] };
            match tag {
                TAG_NULL | TAG_FALSE | TAG_TRUE => 0,
                TAG_INT | TAG_DATE | TAG_TIMESTAMP => rest.varint_len()?,
                TAG_FLOAT => 8,
                TAG_DECIMAL => {
                    1 + Reader {
                        bytes: rest.bytes.get(1..)?,
                    }
                    .varint_len()?
                }
                TAG_TEXT | TAG_BYTES => {
                    let mut len = Reader { bytes: rest.bytes };
                    let header = len.varint_len()?;
                    let body = usize::try_from(len.varint()?).ok()?;
                    header.checked_add(body)?
                }
                _ => return None,
            }
        };
        self.take(1 + payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, v: impl Into<u128>) {
        let mut v: u128 = v.into();
        while v >= 0x80 {
            out.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn text(s: &str) -> Vec<u8> {
        let mut out = vec![TAG_TEXT];
        varint(&mut out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
        out
    }

    fn int(v: i64) -> Vec<u8> {
        let mut out = vec![TAG_INT];
        varint(&mut out, ((v << 1) ^ (v >> 63)) as u64);
        out
    }

    fn row(values: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, values.len() as u64);
        for v in values {
            out.extend_from_slice(v);
        }
        out
    }

    /// Versions newest first as (tid, row or tombstone).
    fn record(versions: &[(u64, Option<Vec<u8>>)]) -> Vec<u8> {
        let mut out = vec![RECORD_FORMAT_V1];
        varint(&mut out, versions.len() as u64);
        let mut previous = None;
        for (tid, body) in versions {
            varint(&mut out, previous.map_or(*tid, |p: u64| p - tid));
            previous = Some(*tid);
            match body {
                None => varint(&mut out, 0u64),
                Some(body) => {
                    varint(&mut out, body.len() as u64 + 1);
                    out.extend_from_slice(body);
                }
            }
        }
        out
    }

    fn eq(column: usize, value: &[u8]) -> ColumnEquals<'_> {
        ColumnEquals { column, value }
    }

    #[test]
    fn finds_a_value_behind_every_kind_of_value() {
        let mut decimal = vec![TAG_DECIMAL, 0x82];
        varint(&mut decimal, 1u128 << 70);
        let values = vec![
            vec![TAG_NULL],
            vec![TAG_TRUE],
            int(-300),
            [&[TAG_FLOAT][..], &1.5f64.to_bits().to_le_bytes()].concat(),
            decimal,
            text("BARBARBAR"),
            [vec![TAG_BYTES, 2], vec![0xff, 0x80]].concat(),
            [vec![TAG_DATE], vec![0x81, 0x01]].concat(),
            [vec![TAG_TIMESTAMP], vec![0x00]].concat(),
            text("last"),
        ];
        let rec = record(&[(7, Some(row(&values)))]);
        for (i, v) in values.iter().enumerate() {
            assert!(may_match(&rec, &[eq(i, v)]), "column {i}");
        }
        assert!(!may_match(&rec, &[eq(9, &text("lasT"))]));
        assert!(!may_match(&rec, &[eq(2, &int(300))]));
        assert!(may_match(&rec, &[eq(2, &int(-300)), eq(9, &text("last"))]));
        assert!(!may_match(
            &rec,
            &[eq(2, &int(-300)), eq(9, &text("other"))]
        ));
    }

    #[test]
    fn any_live_version_may_match_but_not_a_tombstone() {
        let old = row(&[int(1), text("OUGHT")]);
        let new = row(&[int(1), text("ABLE")]);
        let rec = record(&[(9, Some(new)), (5, None), (3, Some(old))]);
        assert!(may_match(&rec, &[eq(1, &text("ABLE"))]));
        assert!(may_match(&rec, &[eq(1, &text("OUGHT"))]));
        assert!(!may_match(&rec, &[eq(1, &text("PRES"))]));
        let deleted = record(&[(4, None)]);
        assert!(!may_match(&deleted, &[eq(0, &int(1))]));
    }

    #[test]
    fn unreadable_or_short_records_pass() {
        let cond = [eq(1, &[TAG_INT, 2][..])];
        assert!(may_match(b"", &cond));
        assert!(may_match(b"\x02\x01", &cond), "another layout");
        assert!(
            may_match(&record(&[(1, Some(row(&[int(1)])))]), &cond),
            "short row"
        );
        let mut truncated = record(&[(1, Some(row(&[int(1), text("abc")])))]);
        truncated.truncate(truncated.len() - 2);
        assert!(may_match(&truncated, &cond));
        assert!(
            may_match(&record(&[(1, Some(vec![1, 0xee]))]), &cond),
            "unknown tag"
        );
        assert!(
            may_match(&[RECORD_FORMAT_V1, 0xff, 0xff, 0xff], &cond),
            "bad count"
        );
        assert!(
            may_match(&record(&[(1, Some(row(&[int(5)])))]), &[]),
            "no conditions"
        );
    }

    #[test]
    fn only_records_with_something_to_reclaim_may_hold_garbage() {
        let live = row(&[int(1), text("ABLE")]);
        assert!(!may_hold_garbage(&record(&[(7, Some(live.clone()))])));
        assert!(may_hold_garbage(&record(&[(7, None)])), "a tombstone");
        assert!(
            may_hold_garbage(&record(&[(9, Some(live.clone())), (7, Some(live))])),
            "two versions"
        );
        assert!(may_hold_garbage(&record(&[])), "no version");
        assert!(!may_hold_garbage(b""), "an index entry, not a record");
        assert!(may_hold_garbage(b"\x02\x01"), "another layout");
        assert!(may_hold_garbage(&[RECORD_FORMAT_V1, 1, 0xff]), "truncated");
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic, and a condition list never passes less than the
        /// same list with one condition removed (conditions only narrow).
        #[test]
        fn arbitrary_bytes_are_safe(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                                    a in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..4),
                                    b in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..4)) {
            let both = may_match(&bytes, &[eq(0, &a), eq(1, &b)]);
            let first = may_match(&bytes, &[eq(0, &a)]);
            proptest::prop_assert!(!both || first);
        }
    }
}
