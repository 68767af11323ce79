//! Order-preserving, self-describing encoding of composite keys (primary keys, index entries).
//!
//! # Format
//!
//! A key is the concatenation of its columns; each column is a type tag followed by a payload
//! that delimits itself, so a key can be decoded (and split) from its bytes alone. For an
//! ascending column:
//!
//! | value | tag | payload |
//! |---|---|---|
//! | NULL, `NULLS FIRST` | `0x01` (the low tag) | — |
//! | `false` / `true` | `0x10` / `0x11` | — |
//! | integer `v` | `0x20 + n` for `v > 0`, `0x20 - n` for `v < 0`, `0x20` for 0 | the `n` significant bytes of `v` (positive) or of the one's complement of `-v` (negative), big-endian |
//! | float | `0x30` | 8 bytes: IEEE bits with the sign bit flipped (positive) or all bits flipped (negative); `-0` is written as `0`, every NaN as one NaN that sorts above `+inf` |
//! | decimal | `0x38` negative, `0x39` zero, `0x3a` positive | exponent `E` (i16, sign-flipped, big-endian) and the significant digits `d1 d2 …` of `0.d1d2… × 10^E` packed two per byte as `2·(10·d_i + d_i+1) + 1`, the last pair as `2·(…)` without the `+1`; for negatives the payload is inverted |
//! | date | `0x40` | i32 days, sign-flipped, big-endian |
//! | timestamp | `0x48` | i64 microseconds, sign-flipped, big-endian |
//! | text / bytes | `0x50` / `0x58` | the bytes with `0x00` escaped as `0x00 0xff`, then `0x00 0x01` |
//! | NULL, `NULLS LAST` | `0x7f` (the high tag) | — |
//!
//! A descending column is the ascending encoding with every byte inverted (`b ↦ 0xff - b`),
//! tag included; so a descending `NULLS FIRST` column uses the high NULL tag, which inversion
//! turns into the lowest descending tag (and `NULLS LAST` the low one). Ascending tags lie in `0x01..=0x7f`, so descending ones lie in `0x80..=0xfe`:
//! the tag tells the decoder the direction, and `0x00` and `0xff` are never tags.
//!
//! # Why it orders correctly
//!
//! Every column encoding is *prefix-free* (no encoding of one value is a proper prefix of the
//! encoding of another value of the same column), and within a column byte order equals value
//! order. Then byte order of concatenations is column-by-column order, which is SQL tuple
//! order; a key that is a prefix of another (a shorter tuple) sorts first, as a prefix should
//! in range scans. Inverting the bytes of a prefix-free encoding keeps it prefix-free and
//! reverses its order, which is all a descending column needs.
//!
//! The escape makes strings prefix-free and order prefixes first: `"ab"` is `ab 00 01`,
//! `"abc"` is `ab c …`, and `0x01 < 'c'`; an embedded zero (`00 ff`) sorts after the end of the
//! string (`00 01`), just as `"ab\0" > "ab"`. Decimals are normalised (no trailing zeros), so
//! `1.5` and `1.50` have the same key, as PostgreSQL's `numeric` equality requires for unique
//! keys; a row keeps the written scale separately (see [`super::row`]).
//!
//! NULL ordering follows PostgreSQL's defaults: `ASC` is `NULLS LAST`, `DESC` is
//! `NULLS FIRST`; [`SortOrder`] also expresses the two non-default combinations.

use std::cmp::Ordering;

use rust_decimal::Decimal;

use super::cursor::Cursor;
use crate::datum::Datum;
use crate::error::DecodeError;

const WHAT: &str = "key";

const TAG_NULL_FIRST: u8 = 0x01;
const TAG_FALSE: u8 = 0x10;
const TAG_TRUE: u8 = 0x11;
const TAG_INT_ZERO: u8 = 0x20;
const TAG_FLOAT: u8 = 0x30;
const TAG_DECIMAL_NEG: u8 = 0x38;
const TAG_DECIMAL_ZERO: u8 = 0x39;
const TAG_DECIMAL_POS: u8 = 0x3a;
const TAG_DATE: u8 = 0x40;
const TAG_TIMESTAMP: u8 = 0x48;
const TAG_TEXT: u8 = 0x50;
const TAG_BYTES: u8 = 0x58;
const TAG_NULL_LAST: u8 = 0x7f;

/// In text and bytes: the byte after `0x00` that marks an escaped zero.
const ESCAPED_ZERO: u8 = 0xff;
/// In text and bytes: the byte after `0x00` that marks the end of the string.
const STRING_END: u8 = 0x01;

/// The one NaN that every NaN is written as, so that all NaNs share one key.
const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

/// Most significant digits a decimal can have (`Decimal::MAX` has 29).
const MAX_DECIMAL_DIGITS: usize = 29;

/// Direction and NULL placement of one key column, as in `CREATE INDEX … (c DESC NULLS LAST)`.
///
/// Only needed where an index declares non-default orders: primary keys and plain index
/// columns use [`SortOrder::ASC`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SortOrder {
    /// Larger values first.
    pub descending: bool,
    /// NULLs before every value (otherwise after).
    pub nulls_first: bool,
}

impl SortOrder {
    /// `ASC` (PostgreSQL's default: `NULLS LAST`).
    pub const ASC: SortOrder = SortOrder {
        descending: false,
        nulls_first: false,
    };
    /// `DESC` (PostgreSQL's default: `NULLS FIRST`).
    pub const DESC: SortOrder = SortOrder {
        descending: true,
        nulls_first: true,
    };

    /// Compares two values of one column in this order: the reference that encoded keys of
    /// this column match byte for byte, usable by the executor for ORDER BY.
    pub fn compare(self, a: &Datum, b: &Datum) -> Ordering {
        let nulls = if self.nulls_first {
            Ordering::Less
        } else {
            Ordering::Greater
        };
        match (a.is_null(), b.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => nulls,
            (false, true) => nulls.reverse(),
            (false, false) if self.descending => b.cmp(a),
            (false, false) => a.cmp(b),
        }
    }

    /// The byte every encoded byte of the column is XORed with.
    fn mask(self) -> u8 {
        if self.descending { 0xff } else { 0x00 }
    }
}

impl Default for SortOrder {
    fn default() -> SortOrder {
        SortOrder::ASC
    }
}

/// Compares two tuples column by column, `orders[i]` giving the order of column `i` (columns
/// beyond `orders` are ascending); a tuple that is a prefix of the other sorts first.
///
/// This is the order of the keys produced by [`encode_key_ordered`] with the same orders.
pub fn compare_keys(a: &[Datum], b: &[Datum], orders: &[SortOrder]) -> Ordering {
    let orders = orders
        .iter()
        .copied()
        .chain(std::iter::repeat(SortOrder::ASC));
    for ((x, y), order) in a.iter().zip(b).zip(orders) {
        match order.compare(x, y) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
    }
    a.len().cmp(&b.len())
}

/// Encodes a key whose columns are all ascending (a primary key).
pub fn encode_key(datums: &[Datum]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(datums.len() * 10);
    encode_key_into(&mut buf, datums);
    buf
}

/// Appends the ascending encoding of `datums` to `buf`, so that a storage key can be built
/// behind its prefix without copying.
pub fn encode_key_into(buf: &mut Vec<u8>, datums: &[Datum]) {
    for datum in datums {
        encode_column(buf, datum, SortOrder::ASC);
    }
}

/// Appends the encoding of `datums` with per-column orders (columns beyond `orders` are
/// ascending), for indexes with `DESC` or non-default `NULLS` columns.
pub fn encode_key_ordered(buf: &mut Vec<u8>, datums: &[Datum], orders: &[SortOrder]) {
    let orders = orders
        .iter()
        .copied()
        .chain(std::iter::repeat(SortOrder::ASC));
    for (datum, order) in datums.iter().zip(orders) {
        encode_column(buf, datum, order);
    }
}

/// Appends the encoding of one column: the building block of every key.
pub fn encode_column(buf: &mut Vec<u8>, datum: &Datum, order: SortOrder) {
    let mut out = Sink {
        buf,
        mask: order.mask(),
    };
    match datum {
        // The tag is inverted in descending columns: the low tag ends up high there.
        Datum::Null if order.nulls_first != order.descending => out.push(TAG_NULL_FIRST),
        Datum::Null => out.push(TAG_NULL_LAST),
        Datum::Bool(false) => out.push(TAG_FALSE),
        Datum::Bool(true) => out.push(TAG_TRUE),
        Datum::Int(v) => encode_int(&mut out, *v),
        Datum::Float(f) => {
            out.push(TAG_FLOAT);
            out.extend(&float_to_ordered(*f).to_be_bytes());
        }
        Datum::Decimal(d) => encode_decimal(&mut out, d),
        Datum::Date(days) => {
            out.push(TAG_DATE);
            out.extend(&((*days as u32) ^ (1 << 31)).to_be_bytes());
        }
        Datum::Timestamp(micros) => {
            out.push(TAG_TIMESTAMP);
            out.extend(&((*micros as u64) ^ (1 << 63)).to_be_bytes());
        }
        Datum::Text(s) => {
            out.push(TAG_TEXT);
            encode_string(&mut out, s.as_bytes());
        }
        Datum::Bytes(b) => {
            out.push(TAG_BYTES);
            encode_string(&mut out, b);
        }
    }
}

/// Decodes a whole key back into its values, from its bytes alone.
///
/// Decimals come back normalised (`1.50` as `1.5`: equal by value), `-0.0` as `0.0` and every
/// NaN as one NaN; everything else exactly.
pub fn decode_key(key: &[u8]) -> Result<Vec<Datum>, DecodeError> {
    let mut cur = Cursor::new(key, WHAT);
    let mut datums = Vec::new();
    while !cur.is_empty() {
        datums.push(decode_one(&mut cur)?);
    }
    Ok(datums)
}

/// Decodes the first column of `key`, returning it and the number of bytes it took, so that
/// callers can split composite keys (index columns, then primary key) without decoding all.
pub fn decode_column(key: &[u8]) -> Result<(Datum, usize), DecodeError> {
    let mut cur = Cursor::new(key, WHAT);
    let datum = decode_one(&mut cur)?;
    Ok((datum, cur.pos()))
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None`
/// if there is none (`prefix` is empty or all `0xff`), meaning "to the end of the table".
///
/// This is the exclusive end of a prefix scan: every key of a table, of an index, or with a
/// given leading primary-key column.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let keep = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut next = prefix[..=keep].to_vec();
    next[keep] += 1;
    Some(next)
}

/// Writes bytes XORed with a mask: the mask is `0xff` in descending columns (and inside
/// negative decimals), which turns the ascending encoding into its exact reverse.
struct Sink<'a> {
    buf: &'a mut Vec<u8>,
    mask: u8,
}

impl Sink<'_> {
    fn push(&mut self, b: u8) {
        self.buf.push(b ^ self.mask);
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.mask == 0 {
            self.buf.extend_from_slice(bytes);
        } else {
            let mask = self.mask;
            self.buf.extend(bytes.iter().map(|b| b ^ mask));
        }
    }
}

fn encode_int(out: &mut Sink<'_>, v: i64) {
    let magnitude = v.unsigned_abs();
    let len = 8 - (magnitude.leading_zeros() / 8) as usize;
    if v == 0 {
        out.push(TAG_INT_ZERO);
    } else if v > 0 {
        out.push(TAG_INT_ZERO + len as u8);
        out.extend(&magnitude.to_be_bytes()[8 - len..]);
    } else {
        out.push(TAG_INT_ZERO - len as u8);
        out.extend(&(!magnitude).to_be_bytes()[8 - len..]);
    }
}

/// Maps a float to a u64 whose unsigned order is [`crate::datum::float_cmp`]'s order.
fn float_to_ordered(f: f64) -> u64 {
    let bits = if f.is_nan() {
        CANONICAL_NAN
    } else if f == 0.0 {
        0
    } else {
        f.to_bits()
    };
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn float_from_ordered(bits: u64) -> f64 {
    if bits >> 63 == 1 {
        f64::from_bits(bits & !(1 << 63))
    } else {
        f64::from_bits(!bits)
    }
}

fn encode_decimal(out: &mut Sink<'_>, d: &Decimal) {
    if d.is_zero() {
        out.push(TAG_DECIMAL_ZERO);
        return;
    }
    let negative = d.is_sign_negative();
    out.push(if negative {
        TAG_DECIMAL_NEG
    } else {
        TAG_DECIMAL_POS
    });
    // |d| = mantissa × 10^-scale = 0.d1d2…dn × 10^(n - scale), n = digits of the mantissa.
    let mut mantissa = d.mantissa().unsigned_abs();
    let mut digits = [0u8; 40];
    let mut count = 0;
    while mantissa > 0 {
        digits[count] = (mantissa % 10) as u8;
        mantissa /= 10;
        count += 1;
    }
    let exponent = count as i32 - d.scale() as i32;
    // Least significant first: drop trailing zeros so equal values encode equally.
    let zeros = digits[..count].iter().take_while(|&&d| d == 0).count();
    let significant = &mut digits[zeros..count];
    significant.reverse();

    let mut inner = Sink {
        buf: &mut *out.buf,
        mask: out.mask ^ if negative { 0xff } else { 0 },
    };
    inner.extend(&((exponent as i16 as u16) ^ (1 << 15)).to_be_bytes());
    let pairs = significant.chunks(2);
    let last = pairs.len() - 1;
    for (i, pair) in pairs.enumerate() {
        let value = pair[0] * 10 + pair.get(1).copied().unwrap_or(0);
        inner.push(2 * value + u8::from(i != last));
    }
}

fn encode_string(out: &mut Sink<'_>, mut bytes: &[u8]) {
    while let Some(zero) = bytes.iter().position(|&b| b == 0) {
        out.extend(&bytes[..zero]);
        out.push(0x00);
        out.push(ESCAPED_ZERO);
        bytes = &bytes[zero + 1..];
    }
    out.extend(bytes);
    out.push(0x00);
    out.push(STRING_END);
}

fn decode_one(cur: &mut Cursor<'_>) -> Result<Datum, DecodeError> {
    let start = cur.pos();
    let raw = cur.byte()?;
    let mask = if raw >= 0x80 { 0xff } else { 0x00 };
    let tag = raw ^ mask;
    let datum = match tag {
        TAG_NULL_FIRST | TAG_NULL_LAST => Datum::Null,
        TAG_FALSE => Datum::Bool(false),
        TAG_TRUE => Datum::Bool(true),
        0x18..=0x28 => Datum::Int(decode_int(cur, tag, mask, start)?),
        TAG_FLOAT => {
            let bits = u64::from_be_bytes(cur.array::<8>()?) ^ u64::from_ne_bytes([mask; 8]);
            Datum::Float(float_from_ordered(bits))
        }
        TAG_DECIMAL_ZERO => Datum::Decimal(Decimal::ZERO),
        TAG_DECIMAL_NEG | TAG_DECIMAL_POS => {
            let negative = tag == TAG_DECIMAL_NEG;
            Datum::Decimal(decode_decimal(cur, negative, mask, start)?)
        }
        TAG_DATE => {
            let bits = u32::from_be_bytes(cur.array::<4>()?) ^ u32::from_ne_bytes([mask; 4]);
            Datum::Date((bits ^ (1 << 31)) as i32)
        }
        TAG_TIMESTAMP => {
            let bits = u64::from_be_bytes(cur.array::<8>()?) ^ u64::from_ne_bytes([mask; 8]);
            Datum::Timestamp((bits ^ (1 << 63)) as i64)
        }
        TAG_TEXT => {
            let bytes = decode_string(cur, mask, start)?;
            let text =
                String::from_utf8(bytes).map_err(|_| cur.invalid(start, "text is not UTF-8"))?;
            Datum::Text(text)
        }
        TAG_BYTES => Datum::Bytes(decode_string(cur, mask, start)?),
        _ => return Err(cur.unknown_tag(raw, start)),
    };
    Ok(datum)
}

fn decode_int(cur: &mut Cursor<'_>, tag: u8, mask: u8, start: usize) -> Result<i64, DecodeError> {
    if tag == TAG_INT_ZERO {
        return Ok(0);
    }
    let negative = tag < TAG_INT_ZERO;
    let len = usize::from(tag.abs_diff(TAG_INT_ZERO));
    let mut payload = [0u8; 8];
    for (dst, src) in payload[8 - len..].iter_mut().zip(cur.take(len)?) {
        *dst = src ^ mask;
    }
    let raw = u64::from_be_bytes(payload);
    let magnitude = if negative {
        let width_mask = if len == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * len)) - 1
        };
        !raw & width_mask
    } else {
        raw
    };
    if magnitude >> (8 * (len - 1)) == 0 {
        return Err(cur.invalid(start, "integer is not minimally encoded"));
    }
    if negative {
        if magnitude > 1 << 63 {
            return Err(cur.invalid(start, "integer below i64::MIN"));
        }
        Ok((magnitude as i64).wrapping_neg())
    } else {
        i64::try_from(magnitude).map_err(|_| cur.invalid(start, "integer above i64::MAX"))
    }
}

fn decode_decimal(
    cur: &mut Cursor<'_>,
    negative: bool,
    mask: u8,
    start: usize,
) -> Result<Decimal, DecodeError> {
    let mask = mask ^ if negative { 0xff } else { 0 };
    let exponent = u16::from_be_bytes(cur.array::<2>()?) ^ u16::from_ne_bytes([mask; 2]);
    let exponent = i32::from((exponent ^ (1 << 15)) as i16);

    let mut digits = [0u8; MAX_DECIMAL_DIGITS + 1];
    let mut count = 0;
    loop {
        let b = cur.byte()? ^ mask;
        if b >= 200 {
            return Err(cur.invalid(start, "decimal digit pair out of range"));
        }
        if count + 2 > digits.len() {
            return Err(cur.invalid(start, "decimal has more than 29 digits"));
        }
        let pair = b / 2;
        digits[count] = pair / 10;
        digits[count + 1] = pair % 10;
        count += 2;
        // The low bit is set on every pair but the last.
        if b & 1 == 0 {
            break;
        }
    }
    // An odd number of digits leaves a padding zero in the last pair.
    if digits[count - 1] == 0 {
        count -= 1;
    }
    let digits = &digits[..count];
    if digits.first() == Some(&0) || digits.last() == Some(&0) {
        return Err(cur.invalid(start, "decimal is not normalised"));
    }
    if digits.len() > MAX_DECIMAL_DIGITS {
        return Err(cur.invalid(start, "decimal has more than 29 digits"));
    }
    let mut mantissa = digits.iter().fold(0u128, |m, &d| m * 10 + u128::from(d));
    let mut scale = digits.len() as i32 - exponent;
    if scale < 0 {
        let factor = 10u128
            .checked_pow(scale.unsigned_abs())
            .ok_or_else(|| cur.invalid(start, "decimal too large"))?;
        mantissa = mantissa
            .checked_mul(factor)
            .ok_or_else(|| cur.invalid(start, "decimal too large"))?;
        scale = 0;
    }
    let signed = i128::try_from(mantissa).map_err(|_| cur.invalid(start, "decimal too large"))?;
    let signed = if negative { -signed } else { signed };
    Decimal::try_from_i128_with_scale(signed, scale as u32)
        .map_err(|_| cur.invalid(start, "decimal outside the supported range"))
}

fn decode_string(cur: &mut Cursor<'_>, mask: u8, start: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    loop {
        let rest = cur.rest();
        // In the stored bytes, the escape byte 0x00 appears as the mask itself.
        let zero = rest
            .iter()
            .position(|&b| b == mask)
            .ok_or_else(|| cur.truncated())?;
        out.extend(rest[..zero].iter().map(|b| b ^ mask));
        cur.take(zero + 1)?;
        match cur.byte()? ^ mask {
            ESCAPED_ZERO => out.push(0),
            STRING_END => return Ok(out),
            _ => return Err(cur.invalid(start, "bad escape in string")),
        }
    }
}

#[cfg(test)]
mod tests;
