//! Values on the wire: text and binary formats of every [`PgType`], to and from [`Datum`].
//!
//! Text formats follow PostgreSQL's output with DateStyle=ISO and extra_float_digits=1
//! (shortest round-trip floats), because drivers and golden-file tests compare strings.
//! Binary formats are PostgreSQL's `send`/`recv` layouts (big-endian integers, IEEE floats,
//! base-10000 numerics, dates and timestamps counted from 2000-01-01 — the same epoch as
//! [`Datum`], so no conversion is needed there).

use bytes::{BufMut, BytesMut};

use crate::datum::{Datum, Decimal};
use crate::sql::{PgType, SqlError};

/// A value format code of the extended protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 0: text.
    Text,
    /// 1: binary.
    Binary,
}

impl Format {
    /// The wire code.
    pub fn code(self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
        }
    }
}

/// Expands Bind's format codes for `n` values: no code = all text, one code = all of that
/// format, else exactly one per value.
pub fn formats_for(codes: &[i16], n: usize) -> Result<Vec<Format>, SqlError> {
    let one = |c: i16| match c {
        0 => Ok(Format::Text),
        1 => Ok(Format::Binary),
        other => Err(SqlError::new(
            "22023",
            format!("unsupported format code: {other}"),
        )),
    };
    match codes.len() {
        0 => Ok(vec![Format::Text; n]),
        1 => Ok(vec![one(codes[0])?; n]),
        len if len == n => codes.iter().map(|&c| one(c)).collect(),
        len => Err(SqlError::new(
            "08P01",
            format!("bind message has {len} format codes but {n} values"),
        )),
    }
}

/// Days from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_DAYS: i64 = 10_957;
const USECS_PER_DAY: i64 = 86_400_000_000;

/// Civil date → days since 1970-01-01 (proleptic Gregorian; year 0 = 1 BC).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 → civil date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn format_date(days: i32) -> String {
    match days {
        i32::MAX => "infinity".into(),
        i32::MIN => "-infinity".into(),
        _ => {
            let (y, m, d) = civil_from_days(i64::from(days) + PG_EPOCH_DAYS);
            if y <= 0 {
                format!("{:04}-{m:02}-{d:02} BC", 1 - y)
            } else {
                format!("{y:04}-{m:02}-{d:02}")
            }
        }
    }
}

fn format_timestamp(us: i64) -> String {
    match us {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        _ => {
            let days = us.div_euclid(USECS_PER_DAY);
            let rem = us.rem_euclid(USECS_PER_DAY);
            let (y, m, d) = civil_from_days(days + PG_EPOCH_DAYS);
            let secs = rem / 1_000_000;
            let frac = rem % 1_000_000;
            let mut out = format!(
                "{:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
                if y <= 0 { 1 - y } else { y },
                secs / 3600,
                (secs / 60) % 60,
                secs % 60
            );
            if frac != 0 {
                let f = format!("{frac:06}");
                out.push('.');
                out.push_str(f.trim_end_matches('0'));
            }
            if y <= 0 {
                out.push_str(" BC");
            }
            out
        }
    }
}

/// PostgreSQL's float output: shortest round-trip digits, exponent form for very large or
/// small magnitudes (`1e+20`, `1.5e-05`), and its spellings of the special values.
fn format_float(v: f64, single: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let (plain, exp) = if single {
        let f = v as f32;
        (format!("{f}"), format!("{f:e}"))
    } else {
        (format!("{v}"), format!("{v:e}"))
    };
    let abs = v.abs();
    let limit = if single { 1e6 } else { 1e15 };
    if abs != 0.0 && (abs >= limit || abs < 1e-4) {
        // Rust writes "1.5e-5"; PostgreSQL writes "1.5e-05".
        match exp.split_once('e') {
            Some((mantissa, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                format!("{mantissa}e{sign}{digits:0>2}")
            }
            None => exp,
        }
    } else {
        plain
    }
}

fn format_bytea(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The text format of a value (`None` for NULL). The datum decides the spelling; the type
/// only refines it where PostgreSQL does (`real` prints with single precision).
pub fn to_text(value: &Datum, ty: PgType) -> Option<String> {
    Some(match value {
        Datum::Null => return None,
        Datum::Bool(b) => if *b { "t" } else { "f" }.into(),
        Datum::Int(i) => i.to_string(),
        Datum::Decimal(d) => d.to_string(),
        Datum::Float(f) => format_float(*f, ty == PgType::Float4),
        Datum::Text(s) => s.clone(),
        Datum::Bytes(b) => format_bytea(b),
        Datum::Date(d) => format_date(*d),
        Datum::Timestamp(t) => format_timestamp(*t),
    })
}

fn mismatch(value: &Datum, ty: PgType) -> SqlError {
    SqlError::internal(format!(
        "cannot send a {:?} value as type {ty:?}",
        value.kind()
    ))
}

fn int_in_range(v: i64, ty: PgType) -> Result<i64, SqlError> {
    let ok = match ty {
        PgType::Int2 => i16::try_from(v).is_ok(),
        PgType::Int4 => i32::try_from(v).is_ok(),
        _ => true,
    };
    if ok {
        Ok(v)
    } else {
        Err(SqlError::new(
            "22003",
            format!("value {v} is out of range for type {}", type_name(ty)),
        ))
    }
}

/// Appends a numeric in PostgreSQL's binary layout.
fn put_numeric(out: &mut Vec<u8>, d: &Decimal) {
    let scale = d.scale() as usize;
    let digits = d.mantissa().unsigned_abs().to_string();
    let (int_part, frac_part) = if digits.len() > scale {
        digits.split_at(digits.len() - scale)
    } else {
        ("", digits.as_str())
    };
    let frac_owned = format!("{frac_part:0>scale$}");
    // Base-10000 groups: the integer part grouped from the right, the fraction from the left.
    let int_padded = format!("{:0>w$}", int_part, w = int_part.len().div_ceil(4) * 4);
    let frac_padded = format!("{:0<w$}", frac_owned, w = frac_owned.len().div_ceil(4) * 4);
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0i16, |acc, b| acc * 10 + i16::from(b - b'0')))
            .collect()
    };
    let int_groups = group(&int_padded);
    let frac_groups = group(&frac_padded);
    let mut weight = int_groups.len() as i16 - 1;
    let mut all: Vec<i16> = int_groups.into_iter().chain(frac_groups).collect();
    while all.first() == Some(&0) {
        all.remove(0);
        weight -= 1;
    }
    while all.last() == Some(&0) {
        all.pop();
    }
    if all.is_empty() {
        weight = 0;
    }
    let sign: u16 = if d.is_sign_negative() && !all.is_empty() {
        0x4000
    } else {
        0
    };
    out.extend_from_slice(&(all.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for g in all {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

/// The binary format of a value of type `ty` (`None` for NULL).
pub fn to_binary(value: &Datum, ty: PgType) -> Result<Option<Vec<u8>>, SqlError> {
    if value.is_null() {
        return Ok(None);
    }
    let mut out = Vec::new();
    match (ty, value) {
        (PgType::Bool, Datum::Bool(b)) => out.push(u8::from(*b)),
        (PgType::Int2, Datum::Int(i)) => {
            out.extend_from_slice(&(int_in_range(*i, ty)? as i16).to_be_bytes())
        }
        (PgType::Int4, Datum::Int(i)) => {
            out.extend_from_slice(&(int_in_range(*i, ty)? as i32).to_be_bytes())
        }
        (PgType::Int8, Datum::Int(i)) => out.extend_from_slice(&i.to_be_bytes()),
        (PgType::Numeric, Datum::Decimal(d)) => put_numeric(&mut out, d),
        (PgType::Numeric, Datum::Int(i)) => put_numeric(&mut out, &Decimal::from(*i)),
        (PgType::Float4, Datum::Float(f)) => out.extend_from_slice(&(*f as f32).to_be_bytes()),
        (PgType::Float4, Datum::Int(i)) => out.extend_from_slice(&(*i as f32).to_be_bytes()),
        (PgType::Float8, Datum::Float(f)) => out.extend_from_slice(&f.to_be_bytes()),
        (PgType::Float8, Datum::Int(i)) => out.extend_from_slice(&(*i as f64).to_be_bytes()),
        (PgType::Date, Datum::Date(d)) => out.extend_from_slice(&d.to_be_bytes()),
        (PgType::Timestamp, Datum::Timestamp(t)) => out.extend_from_slice(&t.to_be_bytes()),
        (PgType::Timestamp, Datum::Date(d)) => {
            out.extend_from_slice(&(i64::from(*d) * USECS_PER_DAY).to_be_bytes())
        }
        (PgType::Bytea, Datum::Bytes(b)) => out.extend_from_slice(b),
        (PgType::Text | PgType::Varchar | PgType::Bpchar | PgType::Unknown, v) => {
            out.extend_from_slice(to_text(v, ty).unwrap_or_default().as_bytes())
        }
        (ty, v) => return Err(mismatch(v, ty)),
    }
    Ok(Some(out))
}

/// Appends one DataRow field: length (-1 for NULL) and value in `format`.
pub fn put_field(
    out: &mut BytesMut,
    value: &Datum,
    ty: PgType,
    format: Format,
) -> Result<(), SqlError> {
    let bytes = match format {
        Format::Text => to_text(value, ty).map(String::into_bytes),
        Format::Binary => to_binary(value, ty)?,
    };
    match bytes {
        None => out.put_i32(-1),
        Some(b) => {
            out.put_i32(b.len() as i32);
            out.put_slice(&b);
        }
    }
    Ok(())
}

/// PostgreSQL's name of a type, for error messages.
pub fn type_name(ty: PgType) -> &'static str {
    match ty {
        PgType::Bool => "boolean",
        PgType::Int2 => "smallint",
        PgType::Int4 => "integer",
        PgType::Int8 => "bigint",
        PgType::Numeric => "numeric",
        PgType::Float4 => "real",
        PgType::Float8 => "double precision",
        PgType::Bpchar => "character",
        PgType::Varchar => "character varying",
        PgType::Text => "text",
        PgType::Date => "date",
        PgType::Timestamp => "timestamp without time zone",
        PgType::Bytea => "bytea",
        PgType::Unknown => "unknown",
    }
}

fn invalid(ty: PgType, text: &str) -> SqlError {
    SqlError::new(
        "22P02",
        format!(
            "invalid input syntax for type {}: \"{text}\"",
            type_name(ty)
        ),
    )
}

fn parse_date_part(s: &str, ty: PgType, original: &str) -> Result<i64, SqlError> {
    parse_date_bc(s, false, ty, original)
}

/// `YYYY-MM-DD` (year as written; `bc` turns year y into the astronomical year 1 - y).
fn parse_date_bc(s: &str, bc: bool, ty: PgType, original: &str) -> Result<i64, SqlError> {
    let mut it = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (it.next(), it.next(), it.next()) else {
        return Err(invalid(ty, original));
    };
    let y: i64 = y.parse().map_err(|_| invalid(ty, original))?;
    let m: u32 = m.parse().map_err(|_| invalid(ty, original))?;
    let d: u32 = d.parse().map_err(|_| invalid(ty, original))?;
    if bc && y < 1 {
        return Err(invalid(ty, original));
    }
    let y = if bc { 1 - y } else { y };
    if !(1..=12).contains(&m)
        || d == 0
        || d > days_in_month(y, m)
        || !(-4713..=5_874_897).contains(&y)
    {
        return Err(SqlError::new(
            "22008",
            format!("date/time field value out of range: \"{original}\""),
        ));
    }
    Ok(days_from_civil(y, m, d) - PG_EPOCH_DAYS)
}

/// Parses PostgreSQL's ISO date (`2024-02-29`, `0044-03-15 BC`, `infinity`) into days
/// since 2000-01-01.
pub fn parse_date(text: &str) -> Result<i32, SqlError> {
    let s = text.trim();
    match s.to_ascii_lowercase().as_str() {
        "infinity" => return Ok(i32::MAX),
        "-infinity" => return Ok(i32::MIN),
        _ => {}
    }
    let (s, bc) = match s.strip_suffix(" BC").or_else(|| s.strip_suffix(" bc")) {
        Some(rest) => (rest.trim(), true),
        None => (s, false),
    };
    let days = parse_date_bc(s, bc, PgType::Date, text)?;
    i32::try_from(days).map_err(|_| invalid(PgType::Date, text))
}

/// Parses an ISO timestamp (`2024-02-29 13:45:00.25`, `T` separator allowed, a trailing
/// time-zone offset ignored as PostgreSQL does for `timestamp`) into µs since 2000-01-01.
pub fn parse_timestamp(text: &str) -> Result<i64, SqlError> {
    let s = text.trim();
    match s.to_ascii_lowercase().as_str() {
        "infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let ty = PgType::Timestamp;
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, t.trim()),
        None => (s, ""),
    };
    let days = parse_date_part(date, ty, text)?;
    // Drop a zone suffix: Z, +hh, -hh[:mm].
    let time = time.trim_end_matches('Z');
    let time = match time.rfind(['+', '-']) {
        Some(i) if i > 0 => &time[..i],
        _ => time,
    };
    let mut us: i64 = 0;
    if !time.is_empty() {
        let mut parts = time.split(':');
        let h: i64 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| invalid(ty, text))?;
        let m: i64 = parts
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| invalid(ty, text))?;
        let (sec, frac) = match parts.next() {
            Some(sec) => match sec.split_once('.') {
                Some((s, f)) => (s, f),
                None => (sec, ""),
            },
            None => ("0", ""),
        };
        if parts.next().is_some() {
            return Err(invalid(ty, text));
        }
        let sec: i64 = sec.parse().map_err(|_| invalid(ty, text))?;
        if !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid(ty, text));
        }
        // Round to microseconds, as PostgreSQL does.
        let mut frac_us: i64 = format!("{:0<6}", &frac[..frac.len().min(6)])
            .parse()
            .map_err(|_| invalid(ty, text))?;
        if frac.len() > 6 && frac.as_bytes()[6] >= b'5' {
            frac_us += 1;
        }
        if !(0..=24).contains(&h) || !(0..60).contains(&m) || !(0..=60).contains(&sec) {
            return Err(SqlError::new(
                "22008",
                format!("date/time field value out of range: \"{text}\""),
            ));
        }
        us = ((h * 60 + m) * 60 + sec) * 1_000_000 + frac_us;
    }
    days.checked_mul(USECS_PER_DAY)
        .and_then(|d| d.checked_add(us))
        .ok_or_else(|| invalid(ty, text))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn parse_bytea(s: &str) -> Option<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        let hex: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !hex.len().is_multiple_of(2) {
            return None;
        }
        return hex
            .chunks(2)
            .map(|c| {
                let hi = (c[0] as char).to_digit(16)?;
                let lo = (c[1] as char).to_digit(16)?;
                Some((hi * 16 + lo) as u8)
            })
            .collect();
    }
    // Escape format: `\\` and `\ooo`.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = b.get(i + 1..i + 4)?;
            if !oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                return None;
            }
            let v = oct
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).ok()?);
            i += 4;
        }
    }
    Some(out)
}

/// Decodes a text-format value sent for a parameter of type `ty`.
pub fn from_text(bytes: &[u8], ty: PgType) -> Result<Datum, SqlError> {
    let s = std::str::from_utf8(bytes)
        .map_err(|_| SqlError::new("22021", "invalid byte sequence for encoding \"UTF8\""))?;
    Ok(match ty {
        PgType::Bool => Datum::Bool(parse_bool(s).ok_or_else(|| invalid(ty, s))?),
        PgType::Int2 | PgType::Int4 | PgType::Int8 => {
            let v: i64 = s.trim().parse().map_err(|e: std::num::ParseIntError| {
                use std::num::IntErrorKind::*;
                match e.kind() {
                    PosOverflow | NegOverflow => SqlError::new(
                        "22003",
                        format!("value \"{s}\" is out of range for type {}", type_name(ty)),
                    ),
                    _ => invalid(ty, s),
                }
            })?;
            Datum::Int(int_in_range(v, ty)?)
        }
        PgType::Numeric => {
            let t = s.trim();
            let d = Decimal::from_str_exact(t)
                .or_else(|_| Decimal::from_scientific(t))
                .map_err(|_| invalid(ty, s))?;
            Datum::Decimal(d)
        }
        PgType::Float4 | PgType::Float8 => {
            let v: f64 = s.trim().parse().map_err(|_| invalid(ty, s))?;
            Datum::Float(if ty == PgType::Float4 {
                f64::from(v as f32)
            } else {
                v
            })
        }
        PgType::Date => Datum::Date(parse_date(s)?),
        PgType::Timestamp => Datum::Timestamp(parse_timestamp(s)?),
        PgType::Bytea => Datum::Bytes(parse_bytea(s).ok_or_else(|| invalid(ty, s))?),
        PgType::Text | PgType::Varchar | PgType::Bpchar | PgType::Unknown => {
            Datum::Text(s.to_owned())
        }
    })
}

fn exact<const N: usize>(bytes: &[u8], ty: PgType) -> Result<[u8; N], SqlError> {
    bytes.try_into().map_err(|_| {
        SqlError::new(
            "22P03",
            format!(
                "incorrect binary data format: {} bytes for type {}",
                bytes.len(),
                type_name(ty)
            ),
        )
    })
}

fn numeric_from_binary(bytes: &[u8]) -> Result<Decimal, SqlError> {
    let bad = || SqlError::new("22P03", "invalid binary numeric");
    if bytes.len() < 8 {
        return Err(bad());
    }
    let word = |i: usize| i16::from_be_bytes([bytes[i], bytes[i + 1]]);
    let ndigits = word(0);
    let weight = i64::from(word(2));
    let sign = word(4) as u16;
    let dscale = word(6) as u16 as usize;
    if ndigits < 0 || bytes.len() != 8 + 2 * ndigits as usize {
        return Err(bad());
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 | 0xD000 | 0xF000 => {
            return Err(SqlError::new(
                "22003",
                "NaN and infinity are not supported for numeric",
            ));
        }
        _ => return Err(bad()),
    }
    let digits: Vec<i16> = (0..ndigits as usize).map(|i| word(8 + 2 * i)).collect();
    if digits.iter().any(|d| !(0..10_000).contains(d)) || weight.abs() > 1000 || dscale > 1000 {
        return Err(bad());
    }
    let digit = |i: i64| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut int_part = String::new();
    for k in 0..=weight.max(-1) {
        if k == 0 {
            int_part.push_str(&digit(k).to_string());
        } else {
            int_part.push_str(&format!("{:04}", digit(k)));
        }
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let mut frac = String::new();
    let frac_groups = (ndigits as i64 - 1 - weight).max(0);
    for j in 1..=frac_groups {
        frac.push_str(&format!("{:04}", digit(weight + j)));
    }
    if frac.len() < dscale {
        frac.push_str(&"0".repeat(dscale - frac.len()));
    }
    frac.truncate(dscale);
    let text = format!(
        "{}{}{}{}",
        if sign == 0x4000 { "-" } else { "" },
        int_part,
        if frac.is_empty() { "" } else { "." },
        frac
    );
    Decimal::from_str_exact(&text).map_err(|_| {
        SqlError::new(
            "22003",
            format!("numeric value {text} is out of the supported range"),
        )
    })
}

/// Decodes a binary-format value sent for a parameter of type `ty`.
pub fn from_binary(bytes: &[u8], ty: PgType) -> Result<Datum, SqlError> {
    Ok(match ty {
        PgType::Bool => Datum::Bool(exact::<1>(bytes, ty)?[0] != 0),
        PgType::Int2 => Datum::Int(i64::from(i16::from_be_bytes(exact(bytes, ty)?))),
        PgType::Int4 => Datum::Int(i64::from(i32::from_be_bytes(exact(bytes, ty)?))),
        PgType::Int8 => Datum::Int(i64::from_be_bytes(exact(bytes, ty)?)),
        PgType::Float4 => Datum::Float(f64::from(f32::from_be_bytes(exact(bytes, ty)?))),
        PgType::Float8 => Datum::Float(f64::from_be_bytes(exact(bytes, ty)?)),
        PgType::Numeric => Datum::Decimal(numeric_from_binary(bytes)?),
        PgType::Date => Datum::Date(i32::from_be_bytes(exact(bytes, ty)?)),
        PgType::Timestamp => Datum::Timestamp(i64::from_be_bytes(exact(bytes, ty)?)),
        PgType::Bytea => Datum::Bytes(bytes.to_vec()),
        PgType::Text | PgType::Varchar | PgType::Bpchar | PgType::Unknown => from_text(bytes, ty)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_roundtrip(ty: PgType, s: &str) {
        let d = from_text(s.as_bytes(), ty).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(to_text(&d, ty).as_deref(), Some(s), "{ty:?}");
    }

    fn binary_roundtrip(ty: PgType, d: Datum) {
        let b = to_binary(&d, ty)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(from_binary(&b, ty).ok(), Some(d), "{ty:?}");
    }

    #[test]
    fn text_formats() {
        text_roundtrip(PgType::Bool, "t");
        text_roundtrip(PgType::Int4, "-42");
        text_roundtrip(PgType::Numeric, "1.50");
        text_roundtrip(PgType::Numeric, "-0.001");
        text_roundtrip(PgType::Float8, "1.5");
        text_roundtrip(PgType::Float8, "1e+20");
        text_roundtrip(PgType::Float8, "1.5e-05");
        text_roundtrip(PgType::Float8, "NaN");
        text_roundtrip(PgType::Float8, "-Infinity");
        text_roundtrip(PgType::Float4, "0.1");
        text_roundtrip(PgType::Date, "2000-01-01");
        text_roundtrip(PgType::Date, "2024-02-29");
        text_roundtrip(PgType::Date, "1999-12-31");
        text_roundtrip(PgType::Date, "0044-03-15 BC");
        text_roundtrip(PgType::Timestamp, "2024-02-29 13:45:00.25");
        text_roundtrip(PgType::Timestamp, "1970-01-01 00:00:00");
        text_roundtrip(PgType::Bytea, "\\x00ff10");
        text_roundtrip(PgType::Text, "héllo");
        assert_eq!(
            from_text(b"1999-12-31", PgType::Date).ok(),
            Some(Datum::Date(-1))
        );
        assert_eq!(
            from_text(b"2000-01-02 00:00:01", PgType::Timestamp).ok(),
            Some(Datum::Timestamp(USECS_PER_DAY + 1_000_000))
        );
    }

    #[test]
    fn text_errors_carry_sqlstates() {
        assert_eq!(
            from_text(b"abc", PgType::Int4).err().map(|e| e.code),
            Some("22P02")
        );
        assert_eq!(
            from_text(b"70000", PgType::Int2).err().map(|e| e.code),
            Some("22003")
        );
        assert_eq!(
            from_text(b"99999999999999999999", PgType::Int8)
                .err()
                .map(|e| e.code),
            Some("22003")
        );
        assert_eq!(
            from_text(b"2023-02-29", PgType::Date).err().map(|e| e.code),
            Some("22008")
        );
        assert_eq!(
            from_text(b"\xff", PgType::Text).err().map(|e| e.code),
            Some("22021")
        );
    }

    #[test]
    fn binary_formats() {
        binary_roundtrip(PgType::Bool, Datum::Bool(true));
        binary_roundtrip(PgType::Int2, Datum::Int(-7));
        binary_roundtrip(PgType::Int4, Datum::Int(1 << 30));
        binary_roundtrip(PgType::Int8, Datum::Int(i64::MIN));
        binary_roundtrip(PgType::Float4, Datum::Float(0.5));
        binary_roundtrip(PgType::Float8, Datum::Float(-1e300));
        binary_roundtrip(PgType::Date, Datum::Date(-730));
        binary_roundtrip(PgType::Timestamp, Datum::Timestamp(123_456_789));
        binary_roundtrip(PgType::Bytea, Datum::Bytes(vec![0, 1, 255]));
        binary_roundtrip(PgType::Text, Datum::Text("x".into()));
        for s in [
            "0",
            "0.00",
            "1",
            "-1",
            "10000",
            "12345.6789",
            "0.0001",
            "-0.5",
            "99999999.99",
            "123456789012345678.1234567891",
        ] {
            let d = Decimal::from_str_exact(s).unwrap_or_default();
            let b = to_binary(&Datum::Decimal(d), PgType::Numeric)
                .ok()
                .flatten()
                .unwrap_or_default();
            let back = from_binary(&b, PgType::Numeric).ok();
            assert_eq!(back, Some(Datum::Decimal(d)), "{s}");
            // Scale is kept too (1.50 stays 1.50).
            if let Some(Datum::Decimal(back)) = back {
                assert_eq!(back.to_string(), d.to_string());
            }
        }
        // PostgreSQL's own encoding of 12345.678 (ndigits 3, weight 1, dscale 3).
        let pg = [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c];
        assert_eq!(
            from_binary(&pg, PgType::Numeric).ok(),
            Some(Datum::Decimal(Decimal::new(12_345_678, 3)))
        );
        assert_eq!(
            to_binary(
                &Datum::Decimal(Decimal::new(12_345_678, 3)),
                PgType::Numeric
            )
            .ok()
            .flatten(),
            Some(pg.to_vec())
        );
        assert!(from_binary(&[1, 2, 3], PgType::Int4).is_err());
        assert!(from_binary(&[0, 1], PgType::Numeric).is_err());
        assert!(to_binary(&Datum::Int(1 << 40), PgType::Int4).is_err());
    }

    #[test]
    fn format_code_expansion() {
        assert_eq!(formats_for(&[], 2).ok(), Some(vec![Format::Text; 2]));
        assert_eq!(formats_for(&[1], 3).ok(), Some(vec![Format::Binary; 3]));
        assert!(formats_for(&[0, 1], 3).is_err());
        assert!(formats_for(&[2], 1).is_err());
    }
}
