//! Compact encoding of a row's values (the payload of a record version); not ordered.
//!
//! # Format
//!
//! `count` (LEB128), then per value a one-byte type tag and its payload:
//!
//! | tag | value | payload |
//! |---|---|---|
//! | 0 | NULL | — |
//! | 1 / 2 | `false` / `true` | — |
//! | 3 | integer | zigzag LEB128 |
//! | 4 | float | 8 bytes, little-endian IEEE bits (exact: `-0.0` and NaN payloads survive) |
//! | 5 | decimal | one byte `sign << 7 \| scale`, then the mantissa's magnitude in LEB128 |
//! | 6 / 7 | text / bytes | length (LEB128), then the bytes |
//! | 8 | date | zigzag LEB128 |
//! | 9 | timestamp | zigzag LEB128 |
//!
//! Per-value tags instead of a NULL bitmap plus a schema: a row can be decoded without the
//! catalog (by recovery, garbage collection, debugging tools, and across `ALTER TABLE ADD
//! COLUMN`, where old rows are simply shorter), and the price — one byte per value, which is
//! also all a NULL costs — is small next to the key and version header of every record.
//! Unlike keys, rows keep values exactly as written (a decimal's scale, `-0.0`), because
//! PostgreSQL shows them that way.

use rust_decimal::Decimal;

use super::cursor::Cursor;
use super::varint::{get_u64, get_u128, put_u64, put_u128, unzigzag, zigzag};
use crate::datum::Datum;
use crate::error::DecodeError;

const WHAT: &str = "row";

// The tags live with the layout description that storage nodes read too (scan filters).
use shmdb_row_format::{
    TAG_BYTES, TAG_DATE, TAG_DECIMAL, TAG_FALSE, TAG_FLOAT, TAG_INT, TAG_NULL, TAG_TEXT,
    TAG_TIMESTAMP, TAG_TRUE,
};

const DECIMAL_NEGATIVE: u8 = 0x80;
const DECIMAL_SCALE: u8 = 0x1f;

/// Encodes a row's values.
pub fn encode_row(datums: &[Datum]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + datums.len() * 6);
    encode_row_into(&mut buf, datums);
    buf
}

/// Appends a row's encoding to `buf`, so that a record can be assembled in one buffer.
pub fn encode_row_into(buf: &mut Vec<u8>, datums: &[Datum]) {
    put_u64(buf, datums.len() as u64);
    for datum in datums {
        encode_value_into(buf, datum);
    }
}

/// One value as a row holds it (tag and payload): what a storage-side scan filter compares
/// a row's value with.
pub fn encode_value(datum: &Datum) -> Vec<u8> {
    let mut buf = Vec::with_capacity(8);
    encode_value_into(&mut buf, datum);
    buf
}

fn encode_value_into(buf: &mut Vec<u8>, datum: &Datum) {
    match datum {
        Datum::Null => buf.push(TAG_NULL),
        Datum::Bool(false) => buf.push(TAG_FALSE),
        Datum::Bool(true) => buf.push(TAG_TRUE),
        Datum::Int(v) => {
            buf.push(TAG_INT);
            put_u64(buf, zigzag(*v));
        }
        Datum::Float(f) => {
            buf.push(TAG_FLOAT);
            buf.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Datum::Decimal(d) => {
            buf.push(TAG_DECIMAL);
            let sign = if d.is_sign_negative() {
                DECIMAL_NEGATIVE
            } else {
                0
            };
            // The scale of a Decimal is at most 28, so it fits the low five bits.
            buf.push(sign | (d.scale() as u8 & DECIMAL_SCALE));
            put_u128(buf, d.mantissa().unsigned_abs());
        }
        Datum::Text(s) => {
            buf.push(TAG_TEXT);
            put_u64(buf, s.len() as u64);
            buf.extend_from_slice(s.as_bytes());
        }
        Datum::Bytes(b) => {
            buf.push(TAG_BYTES);
            put_u64(buf, b.len() as u64);
            buf.extend_from_slice(b);
        }
        Datum::Date(days) => {
            buf.push(TAG_DATE);
            put_u64(buf, zigzag(i64::from(*days)));
        }
        Datum::Timestamp(micros) => {
            buf.push(TAG_TIMESTAMP);
            put_u64(buf, zigzag(*micros));
        }
    }
}

/// Decodes a row's values; the bytes must hold exactly one row.
pub fn decode_row(bytes: &[u8]) -> Result<Vec<Datum>, DecodeError> {
    let mut cur = Cursor::new(bytes, WHAT);
    let count = get_u64(&mut cur)?;
    // Every value takes at least one byte: a larger count is damage, not a reason to allocate.
    if count > cur.rest().len() as u64 {
        return Err(cur.invalid(0, "value count exceeds the row's length"));
    }
    let mut datums = Vec::with_capacity(count as usize);
    for _ in 0..count {
        datums.push(decode_value(&mut cur)?);
    }
    cur.finish()?;
    Ok(datums)
}

fn decode_value(cur: &mut Cursor<'_>) -> Result<Datum, DecodeError> {
    let start = cur.pos();
    let tag = cur.byte()?;
    let datum = match tag {
        TAG_NULL => Datum::Null,
        TAG_FALSE => Datum::Bool(false),
        TAG_TRUE => Datum::Bool(true),
        TAG_INT => Datum::Int(unzigzag(get_u64(cur)?)),
        TAG_FLOAT => Datum::Float(f64::from_bits(u64::from_le_bytes(cur.array::<8>()?))),
        TAG_DECIMAL => {
            let flags = cur.byte()?;
            let magnitude = get_u128(cur)?;
            let magnitude = i128::try_from(magnitude)
                .map_err(|_| cur.invalid(start, "decimal mantissa too large"))?;
            let scale = u32::from(flags & DECIMAL_SCALE);
            let mut d = Decimal::try_from_i128_with_scale(magnitude, scale)
                .map_err(|_| cur.invalid(start, "decimal outside the supported range"))?;
            d.set_sign_negative(flags & DECIMAL_NEGATIVE != 0);
            Datum::Decimal(d)
        }
        TAG_TEXT => {
            let bytes = length_prefixed(cur)?;
            let text =
                std::str::from_utf8(bytes).map_err(|_| cur.invalid(start, "text is not UTF-8"))?;
            Datum::Text(text.to_owned())
        }
        TAG_BYTES => Datum::Bytes(length_prefixed(cur)?.to_vec()),
        TAG_DATE => {
            let days = unzigzag(get_u64(cur)?);
            let days = i32::try_from(days).map_err(|_| cur.invalid(start, "date out of range"))?;
            Datum::Date(days)
        }
        TAG_TIMESTAMP => Datum::Timestamp(unzigzag(get_u64(cur)?)),
        _ => return Err(cur.unknown_tag(tag, start)),
    };
    Ok(datum)
}

fn length_prefixed<'a>(cur: &mut Cursor<'a>) -> Result<&'a [u8], DecodeError> {
    let len = get_u64(cur)?;
    let len = usize::try_from(len).map_err(|_| cur.truncated())?;
    cur.take(len)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Exact equality: same variant and same representation (scale, float bits).
    fn identical(a: &Datum, b: &Datum) -> bool {
        match (a, b) {
            (Datum::Float(x), Datum::Float(y)) => x.to_bits() == y.to_bits(),
            (Datum::Decimal(x), Datum::Decimal(y)) => x.serialize() == y.serialize(),
            _ => a.kind() == b.kind() && a == b,
        }
    }

    fn any_datum() -> impl Strategy<Value = Datum> {
        prop_oneof![
            Just(Datum::Null),
            any::<bool>().prop_map(Datum::Bool),
            any::<i64>().prop_map(Datum::Int),
            any::<f64>().prop_map(Datum::Float),
            (any::<i64>(), 0u32..=28, any::<bool>()).prop_map(|(m, s, neg)| {
                let mut d = Decimal::new(m, s);
                d.set_sign_negative(neg);
                Datum::Decimal(d)
            }),
            ".*".prop_map(Datum::Text),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Datum::Bytes),
            any::<i32>().prop_map(Datum::Date),
            any::<i64>().prop_map(Datum::Timestamp),
        ]
    }

    proptest! {
        #[test]
        fn round_trips_exactly(row in proptest::collection::vec(any_datum(), 0..12)) {
            let bytes = encode_row(&row);
            let back = decode_row(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.len(), row.len());
            for (a, b) in row.iter().zip(&back) {
                prop_assert!(identical(a, b), "{:?} came back as {:?}", a, b);
            }
        }

        /// The storage nodes' scan filter walks rows this encoder wrote: every value is
        /// found at its position, in any version of a record, and another value is not.
        #[test]
        fn storage_filters_find_every_value(
            rows in proptest::collection::vec(proptest::collection::vec(any_datum(), 1..10), 1..4),
            pick in any::<proptest::sample::Index>(),
        ) {
            use shmdb_row_format::filter::{ColumnEquals, may_match};
            let versions = rows
                .iter()
                .enumerate()
                .map(|(i, row)| crate::record::Version::live(100 - i as u64, encode_row(row)))
                .collect();
            let record = crate::record::Record::from_versions(versions)
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .encode();
            for row in &rows {
                let column = pick.index(row.len());
                let value = encode_value(&row[column]);
                let found = may_match(&record, &[ColumnEquals { column, value: &value }]);
                prop_assert!(found, "column {} of {:?}", column, row);
            }
            // Another value matches only where it is stored, or where a row is too short
            // to say (those pass).
            let absent = encode_value(&Datum::Text("\u{0}never stored".into()));
            let column = pick.index(rows[0].len());
            let expected = rows
                .iter()
                .any(|row| column >= row.len() || encode_value(&row[column]) == absent);
            let found = may_match(&record, &[ColumnEquals { column, value: &absent }]);
            prop_assert_eq!(found, expected);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_row(&bytes);
        }

        #[test]
        fn truncation_is_an_error(row in proptest::collection::vec(any_datum(), 1..6), cut in 1usize..8) {
            let bytes = encode_row(&row);
            let cut = cut.min(bytes.len());
            prop_assert!(decode_row(&bytes[..bytes.len() - cut]).is_err());
        }
    }

    #[test]
    fn keeps_scale_and_negative_zero() {
        let row = vec![
            Datum::Decimal(Decimal::new(150, 2)),
            Datum::Float(-0.0),
            Datum::Decimal(Decimal::MAX),
            Datum::Decimal(Decimal::MIN),
        ];
        let back = decode_row(&encode_row(&row)).expect("decodes");
        assert!(row.iter().zip(&back).all(|(a, b)| identical(a, b)));
        assert_eq!(back[0], Datum::Decimal(Decimal::new(150, 2)));
        assert_eq!(format!("{:?}", back[0]), "Decimal(1.50)");
    }

    #[test]
    fn is_compact() {
        // count + (tag + 1-byte varint) × 3 + NULL tag
        let row = vec![
            Datum::Int(1),
            Datum::Null,
            Datum::Int(-3),
            Datum::Bool(true),
        ];
        assert_eq!(encode_row(&row).len(), 1 + 2 + 1 + 2 + 1);
    }

    #[test]
    fn rejects_trailing_bytes_and_unknown_tags() {
        let mut bytes = encode_row(&[Datum::Int(7)]);
        bytes.push(0);
        assert!(matches!(
            decode_row(&bytes),
            Err(DecodeError::TrailingBytes { .. })
        ));
        assert!(matches!(
            decode_row(&[1, 42]),
            Err(DecodeError::UnknownTag { tag: 42, .. })
        ));
    }
}
