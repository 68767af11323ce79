//! Values at run time: casts between types, text input and output in PostgreSQL's formats,
//! comparison across numeric types, and checked arithmetic.
//!
//! The wire layer can reuse [`to_text`] and [`from_text`] for text-format parameters and
//! results, so the formats agree everywhere.

use std::cmp::Ordering;

use chrono::{Datelike, NaiveDate, NaiveDateTime};
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::datum::{Datum, float_cmp};
use crate::sql::error::SqlError;
use crate::sql::sqltype::SqlType;
use crate::sql::types::PgType;

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default()
}

/// 22P02: the text is not a valid value of the type.
pub fn invalid_text(ty: &str, text: &str) -> SqlError {
    SqlError::new(
        "22P02",
        format!("invalid input syntax for type {ty}: \"{text}\""),
    )
}

/// 22003: the value does not fit the type.
pub fn out_of_range(ty: &str) -> SqlError {
    SqlError::new("22003", format!("{ty} out of range"))
}

/// Days since 2000-01-01 → `YYYY-MM-DD`.
pub fn format_date(days: i32) -> String {
    match epoch().checked_add_signed(chrono::Duration::days(i64::from(days))) {
        Some(d) if d.year() > 0 => d.format("%Y-%m-%d").to_string(),
        Some(d) => format!("{:04}-{:02}-{:02} BC", 1 - d.year(), d.month(), d.day()),
        None if days < 0 => "-infinity".into(),
        None => "infinity".into(),
    }
}

/// Microseconds since 2000-01-01 → `YYYY-MM-DD HH:MM:SS[.ffffff]`.
pub fn format_timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let Some(dt) = epoch()
        .and_hms_opt(0, 0, 0)
        .and_then(|e| e.checked_add_signed(chrono::Duration::seconds(secs)))
    else {
        return if micros < 0 {
            "-infinity".into()
        } else {
            "infinity".into()
        };
    };
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    if frac != 0 {
        let f = format!(".{frac:06}");
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

/// Parses a date (`YYYY-MM-DD`, also with a time part, which is dropped).
pub fn parse_date(text: &str) -> Result<i32, SqlError> {
    let t = text.trim();
    let head = t.get(..10).unwrap_or(t);
    let d = NaiveDate::parse_from_str(head, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(t, "%Y-%m-%d"))
        .map_err(|_| {
            SqlError::new(
                "22007",
                format!("invalid input syntax for type date: \"{text}\""),
            )
        })?;
    Ok((d - epoch()).num_days() as i32)
}

/// Parses a timestamp (`YYYY-MM-DD[ T]HH:MM[:SS[.f]]`, or a bare date); a trailing zone
/// offset (`+00`, `Z`) is accepted and ignored, since the session time zone is UTC.
pub fn parse_timestamp(text: &str) -> Result<i64, SqlError> {
    let t = text.trim();
    let bad = || {
        SqlError::new(
            "22007",
            format!("invalid input syntax for type timestamp: \"{text}\""),
        )
    };
    let mut body = t.trim_end_matches('Z');
    if let Some(pos) = body.rfind(['+', '-'])
        && pos > 10
    {
        body = &body[..pos];
    }
    let body = body.trim();
    let dt = [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(body, f).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(body, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
    .ok_or_else(bad)?;
    let base = epoch().and_hms_opt(0, 0, 0).ok_or_else(bad)?;
    (dt - base).num_microseconds().ok_or_else(bad)
}

/// The current time as a timestamp (µs since 2000-01-01, UTC).
pub fn now_timestamp() -> i64 {
    let now = chrono::Utc::now().naive_utc();
    let base = epoch().and_hms_opt(0, 0, 0).unwrap_or_default();
    (now - base).num_microseconds().unwrap_or(0)
}

/// The text form of a float, as PostgreSQL prints it.
pub fn format_float(f: f64, single: bool) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if single {
        format!("{}", f as f32)
    } else {
        format!("{f}")
    }
}

/// The text form of a value, as PostgreSQL prints it (booleans as `t`/`f`, as on the wire).
pub fn to_text(d: &Datum, ty: PgType) -> Option<String> {
    Some(match d {
        Datum::Null => return None,
        Datum::Bool(b) => if *b { "t" } else { "f" }.to_string(),
        Datum::Int(i) => i.to_string(),
        Datum::Decimal(x) => x.to_string(),
        Datum::Float(f) => format_float(*f, ty == PgType::Float4),
        Datum::Text(s) => s.clone(),
        Datum::Bytes(b) => {
            let mut s = String::from("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        Datum::Date(d) => format_date(*d),
        Datum::Timestamp(t) => format_timestamp(*t),
    })
}

/// Parses text as a value of a wire type (text-format parameters, COPY).
pub fn from_text(text: &str, ty: PgType) -> Result<Datum, SqlError> {
    cast(Datum::Text(text.to_string()), SqlType::from_pg(ty))
}

fn parse_int(s: &str, ty: &str) -> Result<i64, SqlError> {
    s.trim().parse::<i64>().map_err(|e| {
        if matches!(
            e.kind(),
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
        ) {
            out_of_range(&format!("value \"{s}\" is out of range for type {ty}"))
        } else {
            invalid_text(ty, s)
        }
    })
}

fn parse_decimal(s: &str) -> Result<Decimal, SqlError> {
    let t = s.trim();
    t.parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(t))
        .map_err(|_| invalid_text("numeric", s))
}

fn parse_float(s: &str) -> Result<f64, SqlError> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => Ok(f64::NAN),
        "infinity" | "inf" | "+infinity" => Ok(f64::INFINITY),
        "-infinity" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => t
            .parse::<f64>()
            .map_err(|_| invalid_text("double precision", s)),
    }
}

fn int_range(v: i64, ty: SqlType) -> Result<Datum, SqlError> {
    let ok = match ty {
        SqlType::Int2 => i16::try_from(v).is_ok(),
        SqlType::Int4 => i32::try_from(v).is_ok(),
        _ => true,
    };
    if ok {
        Ok(Datum::Int(v))
    } else {
        Err(out_of_range(match ty {
            SqlType::Int2 => "smallint",
            _ => "integer",
        }))
    }
}

fn round_float_to_int(f: f64, ty: SqlType) -> Result<Datum, SqlError> {
    let r = f.round_ties_even();
    if !r.is_finite() || r < i64::MIN as f64 || r >= i64::MAX as f64 {
        return Err(out_of_range("bigint"));
    }
    int_range(r as i64, ty)
}

/// Applies a numeric type's precision and scale (rounding half away from zero, as
/// PostgreSQL does), failing with 22003 when the integer part does not fit.
pub fn fit_numeric(x: Decimal, spec: Option<(u32, u32)>) -> Result<Decimal, SqlError> {
    let Some((p, s)) = spec else {
        return Ok(x);
    };
    let mut r = x.round_dp_with_strategy(s, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(s);
    let int_digits = r.trunc().abs().to_string().trim_start_matches('0').len() as u32;
    if int_digits > p - s {
        return Err(SqlError::new(
            "22003",
            format!(
                "numeric field overflow: a field with precision {p}, scale {s} must round to an absolute value less than 10^{}",
                p - s
            ),
        ));
    }
    Ok(r)
}

fn fit_text(s: String, ty: SqlType, explicit: bool) -> Result<Datum, SqlError> {
    match ty {
        SqlType::Varchar(Some(n)) => {
            let len = s.chars().count();
            if len > n as usize {
                let trimmed = s.trim_end_matches(' ');
                if explicit || trimmed.chars().count() <= n as usize {
                    return Ok(Datum::Text(s.chars().take(n as usize).collect()));
                }
                return Err(SqlError::new(
                    "22001",
                    format!("value too long for type character varying({n})"),
                ));
            }
            Ok(Datum::Text(s))
        }
        SqlType::Char(n) => {
            let len = s.chars().count();
            if len > n as usize {
                let trimmed = s.trim_end_matches(' ');
                if explicit || trimmed.chars().count() <= n as usize {
                    return Ok(Datum::Text(s.chars().take(n as usize).collect()));
                }
                return Err(SqlError::new(
                    "22001",
                    format!("value too long for type character({n})"),
                ));
            }
            let mut s = s;
            s.extend(std::iter::repeat_n(' ', n as usize - len));
            Ok(Datum::Text(s))
        }
        _ => Ok(Datum::Text(s)),
    }
}

/// Converts a value for storing into a column of type `ty` (assignment cast: length checks
/// fail instead of truncating).
pub fn assign(d: Datum, ty: SqlType) -> Result<Datum, SqlError> {
    cast_impl(d, ty, false)
}

/// An explicit cast (`CAST(x AS t)`, `x::t`): character types truncate.
pub fn cast(d: Datum, ty: SqlType) -> Result<Datum, SqlError> {
    cast_impl(d, ty, true)
}

fn cast_impl(d: Datum, ty: SqlType, explicit: bool) -> Result<Datum, SqlError> {
    if d.is_null() {
        return Ok(Datum::Null);
    }
    match ty {
        SqlType::Int2 | SqlType::Int4 | SqlType::Int8 => match d {
            Datum::Int(v) => int_range(v, ty),
            Datum::Decimal(x) => {
                let r = x.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
                int_range(r.to_i64().ok_or_else(|| out_of_range("bigint"))?, ty)
            }
            Datum::Float(f) => round_float_to_int(f, ty),
            Datum::Bool(b) => Ok(Datum::Int(i64::from(b))),
            Datum::Text(s) => {
                let name = match ty {
                    SqlType::Int2 => "smallint",
                    SqlType::Int4 => "integer",
                    _ => "bigint",
                };
                int_range(parse_int(&s, name)?, ty)
            }
            other => Err(cannot_cast(&other, ty)),
        },
        SqlType::Numeric(spec) => {
            let x = match d {
                Datum::Int(v) => Decimal::from(v),
                Datum::Decimal(x) => x,
                Datum::Float(f) => Decimal::from_f64(f).ok_or_else(|| out_of_range("numeric"))?,
                Datum::Text(s) => parse_decimal(&s)?,
                other => return Err(cannot_cast(&other, ty)),
            };
            Ok(Datum::Decimal(fit_numeric(x, spec)?))
        }
        SqlType::Float4 | SqlType::Float8 => {
            let f = match d {
                Datum::Int(v) => v as f64,
                Datum::Decimal(x) => x.to_f64().unwrap_or(f64::NAN),
                Datum::Float(f) => f,
                Datum::Text(s) => parse_float(&s)?,
                other => return Err(cannot_cast(&other, ty)),
            };
            if ty == SqlType::Float4 {
                if f.is_finite() && (f as f32).is_infinite() {
                    return Err(out_of_range("real"));
                }
                Ok(Datum::Float(f64::from(f as f32)))
            } else {
                Ok(Datum::Float(f))
            }
        }
        SqlType::Bool => match d {
            Datum::Bool(b) => Ok(Datum::Bool(b)),
            Datum::Int(v) => Ok(Datum::Bool(v != 0)),
            Datum::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "yes" | "y" | "on" | "1" => Ok(Datum::Bool(true)),
                "f" | "false" | "no" | "n" | "off" | "0" => Ok(Datum::Bool(false)),
                _ => Err(invalid_text("boolean", &s)),
            },
            other => Err(cannot_cast(&other, ty)),
        },
        SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) => {
            let s = match d {
                Datum::Text(s) => s,
                Datum::Bool(b) => if b { "true" } else { "false" }.to_string(),
                other => to_text(&other, PgType::Text).unwrap_or_default(),
            };
            fit_text(s, ty, explicit)
        }
        SqlType::Date => match d {
            Datum::Date(v) => Ok(Datum::Date(v)),
            Datum::Timestamp(t) => Ok(Datum::Date(t.div_euclid(86_400_000_000) as i32)),
            Datum::Text(s) => Ok(Datum::Date(parse_date(&s)?)),
            other => Err(cannot_cast(&other, ty)),
        },
        SqlType::Timestamp => match d {
            Datum::Timestamp(v) => Ok(Datum::Timestamp(v)),
            Datum::Date(v) => Ok(Datum::Timestamp(i64::from(v) * 86_400_000_000)),
            Datum::Text(s) => Ok(Datum::Timestamp(parse_timestamp(&s)?)),
            other => Err(cannot_cast(&other, ty)),
        },
        SqlType::Bytea => match d {
            Datum::Bytes(b) => Ok(Datum::Bytes(b)),
            Datum::Text(s) => Ok(Datum::Bytes(s.into_bytes())),
            other => Err(cannot_cast(&other, ty)),
        },
    }
}

fn cannot_cast(d: &Datum, ty: SqlType) -> SqlError {
    SqlError::new(
        "42846",
        format!("cannot cast type {:?} to {}", d.kind(), ty.display()),
    )
}

/// SQL comparison with numeric promotion and text coercion; `None` when either is NULL.
/// `bpchar` compares character values without trailing blanks, as `character(n)` does.
pub fn compare(a: &Datum, b: &Datum, bpchar: bool) -> Result<Option<Ordering>, SqlError> {
    Ok(Some(match (a, b) {
        (Datum::Null, _) | (_, Datum::Null) => return Ok(None),
        (Datum::Int(x), Datum::Decimal(y)) => Decimal::from(*x).cmp(y),
        (Datum::Decimal(x), Datum::Int(y)) => x.cmp(&Decimal::from(*y)),
        (Datum::Int(x), Datum::Float(y)) => float_cmp(*x as f64, *y),
        (Datum::Float(x), Datum::Int(y)) => float_cmp(*x, *y as f64),
        (Datum::Decimal(x), Datum::Float(y)) => float_cmp(x.to_f64().unwrap_or(f64::NAN), *y),
        (Datum::Float(x), Datum::Decimal(y)) => float_cmp(*x, y.to_f64().unwrap_or(f64::NAN)),
        (Datum::Text(x), Datum::Text(y)) => {
            if bpchar {
                x.trim_end_matches(' ').cmp(y.trim_end_matches(' '))
            } else {
                x.as_bytes().cmp(y.as_bytes())
            }
        }
        (Datum::Date(x), Datum::Timestamp(y)) => (i64::from(*x) * 86_400_000_000).cmp(y),
        (Datum::Timestamp(x), Datum::Date(y)) => x.cmp(&(i64::from(*y) * 86_400_000_000)),
        (Datum::Text(s), other) => {
            let coerced = coerce_text_like(s, other)?;
            return compare(&coerced, other, bpchar);
        }
        (other, Datum::Text(s)) => {
            let coerced = coerce_text_like(s, other)?;
            return compare(other, &coerced, bpchar);
        }
        (x, y) if x.kind() == y.kind() => x.cmp(y),
        (x, y) => {
            return Err(SqlError::new(
                "42883",
                format!("operator does not exist: {:?} = {:?}", x.kind(), y.kind()),
            ));
        }
    }))
}

/// Interprets an untyped text value as the type of `like` (PostgreSQL resolves an
/// `unknown` literal to the other operand's type).
pub fn coerce_text_like(s: &str, like: &Datum) -> Result<Datum, SqlError> {
    let ty = match like {
        Datum::Int(_) => SqlType::Int8,
        Datum::Decimal(_) => SqlType::Numeric(None),
        Datum::Float(_) => SqlType::Float8,
        Datum::Bool(_) => SqlType::Bool,
        Datum::Date(_) => SqlType::Date,
        Datum::Timestamp(_) => SqlType::Timestamp,
        Datum::Bytes(_) => SqlType::Bytea,
        Datum::Text(_) | Datum::Null => return Ok(Datum::Text(s.to_string())),
    };
    if matches!(like, Datum::Int(_)) && s.contains(['.', 'e', 'E']) {
        return cast(Datum::Text(s.to_string()), SqlType::Numeric(None));
    }
    cast(Datum::Text(s.to_string()), ty)
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// +
    Add,
    /// -
    Sub,
    /// *
    Mul,
    /// /
    Div,
    /// %
    Mod,
}

fn to_decimal(d: &Datum) -> Option<Decimal> {
    match d {
        Datum::Int(v) => Some(Decimal::from(*v)),
        Datum::Decimal(x) => Some(*x),
        _ => None,
    }
}

fn to_float(d: &Datum) -> Option<f64> {
    match d {
        Datum::Int(v) => Some(*v as f64),
        Datum::Decimal(x) => x.to_f64(),
        Datum::Float(f) => Some(*f),
        _ => None,
    }
}

fn div_zero() -> SqlError {
    SqlError::new("22012", "division by zero")
}

/// Checked arithmetic; `result` is the static result type (its integer width is checked).
pub fn arith(op: ArithOp, a: &Datum, b: &Datum, result: PgType) -> Result<Datum, SqlError> {
    if a.is_null() || b.is_null() {
        return Ok(Datum::Null);
    }
    // Untyped text meets a number: read it as a number first.
    if let Datum::Text(s) = a {
        let x = coerce_text_like(s, b)?;
        return arith(op, &x, b, result);
    }
    if let Datum::Text(s) = b {
        let y = coerce_text_like(s, a)?;
        return arith(op, a, &y, result);
    }
    let v = match (a, b) {
        (Datum::Int(x), Datum::Int(y)) => {
            let r = match op {
                ArithOp::Add => x.checked_add(*y),
                ArithOp::Sub => x.checked_sub(*y),
                ArithOp::Mul => x.checked_mul(*y),
                ArithOp::Div => {
                    if *y == 0 {
                        return Err(div_zero());
                    }
                    x.checked_div(*y)
                }
                ArithOp::Mod => {
                    if *y == 0 {
                        return Err(div_zero());
                    }
                    x.checked_rem(*y)
                }
            };
            let r = r.ok_or_else(|| out_of_range(int_name(result)))?;
            return int_range(
                r,
                match result {
                    PgType::Int2 => SqlType::Int2,
                    PgType::Int4 => SqlType::Int4,
                    _ => SqlType::Int8,
                },
            )
            .map_err(|_| out_of_range(int_name(result)));
        }
        (Datum::Date(d), Datum::Int(n)) if matches!(op, ArithOp::Add | ArithOp::Sub) => {
            let n = i32::try_from(*n).map_err(|_| out_of_range("date"))?;
            let r = if op == ArithOp::Add {
                d.checked_add(n)
            } else {
                d.checked_sub(n)
            };
            return r.map(Datum::Date).ok_or_else(|| out_of_range("date"));
        }
        (Datum::Int(n), Datum::Date(d)) if op == ArithOp::Add => {
            let n = i32::try_from(*n).map_err(|_| out_of_range("date"))?;
            return d
                .checked_add(n)
                .map(Datum::Date)
                .ok_or_else(|| out_of_range("date"));
        }
        (Datum::Date(x), Datum::Date(y)) if op == ArithOp::Sub => {
            return Ok(Datum::Int(i64::from(*x) - i64::from(*y)));
        }
        (Datum::Float(_), _) | (_, Datum::Float(_)) => {
            let (Some(x), Some(y)) = (to_float(a), to_float(b)) else {
                return Err(no_operator(a, b));
            };
            let r = match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div => {
                    if y == 0.0 {
                        return Err(div_zero());
                    }
                    x / y
                }
                ArithOp::Mod => {
                    if y == 0.0 {
                        return Err(div_zero());
                    }
                    x % y
                }
            };
            if r.is_infinite() && x.is_finite() && y.is_finite() {
                return Err(out_of_range("double precision"));
            }
            Datum::Float(r)
        }
        _ => {
            let (Some(x), Some(y)) = (to_decimal(a), to_decimal(b)) else {
                return Err(no_operator(a, b));
            };
            let r = match op {
                ArithOp::Add => x.checked_add(y),
                ArithOp::Sub => x.checked_sub(y),
                ArithOp::Mul => x.checked_mul(y),
                ArithOp::Div => {
                    if y.is_zero() {
                        return Err(div_zero());
                    }
                    x.checked_div(y).map(|q| {
                        // PostgreSQL's result scale: 16 significant digits counted in
                        // base-10000 groups from the quotient's weight, at least the
                        // inputs' scales.
                        let f = q.abs().to_f64().unwrap_or(0.0);
                        let weight = if f > 0.0 {
                            f.log10().div_euclid(4.0) as i64
                        } else {
                            0
                        };
                        let scale = (16 - 4 * weight)
                            .max(i64::from(x.scale().max(y.scale())))
                            .clamp(0, 28) as u32;
                        q.round_dp(scale).normalize_to(scale)
                    })
                }
                ArithOp::Mod => {
                    if y.is_zero() {
                        return Err(div_zero());
                    }
                    x.checked_rem(y)
                }
            };
            Datum::Decimal(r.ok_or_else(|| out_of_range("numeric"))?)
        }
    };
    Ok(v)
}

trait NormalizeTo {
    fn normalize_to(self, scale: u32) -> Decimal;
}

impl NormalizeTo for Decimal {
    fn normalize_to(self, scale: u32) -> Decimal {
        let mut d = self;
        if d.scale() < scale {
            d.rescale(scale);
        }
        d
    }
}

fn int_name(t: PgType) -> &'static str {
    match t {
        PgType::Int2 => "smallint",
        PgType::Int4 => "integer",
        _ => "bigint",
    }
}

fn no_operator(a: &Datum, b: &Datum) -> SqlError {
    SqlError::new(
        "42883",
        format!("operator does not exist: {:?} and {:?}", a.kind(), b.kind()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() -> Result<(), SqlError> {
        assert_eq!(parse_date("2000-01-01")?, 0);
        assert_eq!(format_date(parse_date("2024-02-29")?), "2024-02-29");
        let t = parse_timestamp("2021-03-04 05:06:07.25")?;
        assert_eq!(format_timestamp(t), "2021-03-04 05:06:07.25");
        Ok(())
    }

    #[test]
    fn numeric_fits() -> Result<(), SqlError> {
        let x = fit_numeric("12.345".parse().unwrap_or_default(), Some((5, 2)))?;
        assert_eq!(x.to_string(), "12.35");
        assert!(fit_numeric(Decimal::from(1000), Some((4, 2))).is_err());
        Ok(())
    }

    #[test]
    fn int_arith_checks_width() {
        assert!(
            arith(
                ArithOp::Add,
                &Datum::Int(i32::MAX as i64),
                &Datum::Int(1),
                PgType::Int4
            )
            .is_err()
        );
        assert!(matches!(
            arith(ArithOp::Div, &Datum::Int(1), &Datum::Int(0), PgType::Int4),
            Err(SqlError { code: "22012", .. })
        ));
    }
}
