//! Scalar functions: name resolution, result types and evaluation.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use crate::datum::Datum;
use crate::sql::error::SqlError;
use crate::sql::expr::{CmpOp, EvalCtx, as_text};
use crate::sql::sqltype::SqlType;
use crate::sql::types::PgType;
use crate::sql::value::{cast, compare};

/// A scalar function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// upper(text)
    Upper,
    /// lower(text)
    Lower,
    /// length(text) / char_length
    Length,
    /// substr(text, from [, count])
    Substr,
    /// coalesce(a, b, ...)
    Coalesce,
    /// nullif(a, b)
    NullIf,
    /// abs(x)
    Abs,
    /// round(x [, digits])
    Round,
    /// trunc(x [, digits])
    Trunc,
    /// floor(x)
    Floor,
    /// ceil(x)
    Ceil,
    /// now() / current_timestamp / localtimestamp
    Now,
    /// current_date
    CurrentDate,
    /// greatest(...)
    Greatest,
    /// least(...)
    Least,
    /// trim / btrim
    Trim,
    /// ltrim
    Ltrim,
    /// rtrim
    Rtrim,
    /// concat(...)
    Concat,
    /// mod(a, b)
    Mod,
    /// version()
    Version,
    /// current_database() / current_schema() / current_user
    Constant(&'static str),
    /// position(sub in s) / strpos(s, sub)
    Strpos,
    /// replace(s, from, to)
    Replace,
    /// s ~ pattern (POSIX regex), with (negated, case-insensitive)
    Regex(bool, bool),
    /// pg_table_is_visible(oid) and other catalog predicates that hold for our one schema
    True,
    /// obj_description(...) and other catalog lookups with nothing to report
    NullText,
    /// format_type(type oid, typmod)
    FormatType,
    /// array_to_string(array, separator)
    ArrayToString,
    /// array_upper(array, dimension)
    ArrayUpper,
    /// array[index] (one-based)
    ArrayElem,
    /// x op ANY (array), by comparison operator
    ArrayAny(CmpOp),
    /// a & b on integers
    BitAnd,
    /// A row value (record) with these field names, in its text form `(a,b)`.
    Record(&'static [&'static str]),
    /// A field of a record in text form, by position.
    RecordField(usize),
    /// pg_get_expr(expression, relation [, pretty]): the catalog keeps expressions (column
    /// defaults) as their SQL text, so this returns its first argument.
    GetExpr,
    /// power(a, b) / pow
    Power,
}

impl Func {
    /// Resolves a function name and argument count.
    pub fn lookup(name: &str, argc: usize) -> Option<Func> {
        Some(match (name, argc) {
            ("upper", 1) => Func::Upper,
            ("lower", 1) => Func::Lower,
            ("length" | "char_length" | "character_length", 1) => Func::Length,
            ("substr" | "substring", 2 | 3) => Func::Substr,
            ("coalesce", n) if n > 0 => Func::Coalesce,
            ("nullif", 2) => Func::NullIf,
            ("abs", 1) => Func::Abs,
            ("round", 1 | 2) => Func::Round,
            ("trunc", 1 | 2) => Func::Trunc,
            ("floor", 1) => Func::Floor,
            ("ceil" | "ceiling", 1) => Func::Ceil,
            (
                "now"
                | "current_timestamp"
                | "localtimestamp"
                | "transaction_timestamp"
                | "statement_timestamp"
                | "clock_timestamp",
                0,
            ) => Func::Now,
            ("current_date", 0) => Func::CurrentDate,
            ("greatest", n) if n > 0 => Func::Greatest,
            ("least", n) if n > 0 => Func::Least,
            ("btrim" | "trim", 1 | 2) => Func::Trim,
            ("ltrim", 1 | 2) => Func::Ltrim,
            ("rtrim", 1 | 2) => Func::Rtrim,
            ("concat", _) => Func::Concat,
            ("mod", 2) => Func::Mod,
            ("version", 0) => Func::Version,
            ("current_database" | "current_catalog", 0) => Func::Constant("shmdb"),
            ("current_schema", 0) => Func::Constant("public"),
            ("current_user" | "session_user" | "user", 0) => Func::Constant("shmdb"),
            ("strpos", 2) => Func::Strpos,
            ("replace", 3) => Func::Replace,
            (
                "pg_table_is_visible"
                | "pg_type_is_visible"
                | "has_table_privilege"
                | "has_schema_privilege",
                _,
            ) => Func::True,
            ("pg_get_userbyid", 1) => Func::Constant("shmdb"),
            // The one encoding (pg_database.encoding 6).
            ("pg_encoding_to_char", 1) => Func::Constant("UTF8"),
            ("obj_description" | "col_description" | "shobj_description", _) => Func::NullText,
            ("pg_get_expr", 2 | 3) => Func::GetExpr,
            ("array_to_string", 2) => Func::ArrayToString,
            ("array_upper", 2) => Func::ArrayUpper,
            ("pg_get_statisticsobjdef_columns", 1) => Func::NullText,
            ("pg_relation_is_publishable", 1) => Func::True,
            ("format_type", 2) => Func::FormatType,
            ("power" | "pow", 2) => Func::Power,
            _ => return None,
        })
    }

    /// The static result type given the argument types.
    pub fn result_type(self, args: &[PgType]) -> PgType {
        let first = args.first().copied().unwrap_or(PgType::Unknown);
        match self {
            Func::Upper
            | Func::Lower
            | Func::Substr
            | Func::Trim
            | Func::Ltrim
            | Func::Rtrim
            | Func::Concat
            | Func::Version
            | Func::Constant(_)
            | Func::Replace => PgType::Text,
            Func::Length | Func::Strpos => PgType::Int4,
            Func::Coalesce | Func::Greatest | Func::Least => args
                .iter()
                .copied()
                .find(|t| *t != PgType::Unknown)
                .unwrap_or(PgType::Text),
            Func::NullIf | Func::Abs | Func::Mod => match first {
                PgType::Unknown => PgType::Numeric,
                t => t,
            },
            Func::Round | Func::Trunc | Func::Floor | Func::Ceil => match first {
                PgType::Float4 | PgType::Float8 => PgType::Float8,
                _ => PgType::Numeric,
            },
            Func::Now => PgType::Timestamp,
            Func::Regex(..) | Func::True | Func::ArrayAny(_) => PgType::Bool,
            Func::NullText | Func::FormatType | Func::GetExpr | Func::ArrayToString => PgType::Text,
            Func::ArrayUpper => PgType::Int4,
            Func::ArrayElem | Func::Record(_) | Func::RecordField(_) => PgType::Text,
            Func::BitAnd => PgType::Int8,
            Func::CurrentDate => PgType::Date,
            Func::Power => match first {
                PgType::Numeric => PgType::Numeric,
                _ => PgType::Float8,
            },
        }
    }
}

fn num(d: Datum) -> Result<Datum, SqlError> {
    match d {
        Datum::Text(s) => cast(Datum::Text(s), SqlType::Numeric(None)),
        Datum::Int(v) => Ok(Datum::Decimal(Decimal::from(v))),
        other => Ok(other),
    }
}

fn int_arg(d: &Datum) -> Result<i64, SqlError> {
    match cast(d.clone(), SqlType::Int8)? {
        Datum::Int(v) => Ok(v),
        _ => Ok(0),
    }
}

fn round_to(d: Datum, digits: i64, strategy: RoundingStrategy) -> Result<Datum, SqlError> {
    Ok(match num(d)? {
        Datum::Decimal(x) => {
            if digits >= 0 {
                let mut r = x.round_dp_with_strategy(digits.min(28) as u32, strategy);
                r.rescale(digits.min(28) as u32);
                Datum::Decimal(r)
            } else {
                let f = Decimal::from(10i64.pow((-digits).min(18) as u32));
                Datum::Decimal((x / f).round_dp_with_strategy(0, strategy) * f)
            }
        }
        Datum::Float(f) => {
            let p = 10f64.powi(digits as i32);
            Datum::Float(match strategy {
                RoundingStrategy::ToZero => (f * p).trunc() / p,
                _ => (f * p).round_ties_even() / p,
            })
        }
        other => other,
    })
}

/// Calls a function on evaluated arguments.
pub fn call(f: Func, args: Vec<Datum>, ctx: &EvalCtx<'_>) -> Result<Datum, SqlError> {
    let strict = !matches!(
        f,
        Func::Coalesce
            | Func::Concat
            | Func::Greatest
            | Func::Least
            | Func::NullIf
            | Func::True
            | Func::NullText
    );
    if strict && args.iter().any(Datum::is_null) {
        return Ok(Datum::Null);
    }
    let mut it = args.into_iter();
    let mut next = || it.next().unwrap_or(Datum::Null);
    Ok(match f {
        Func::Upper => Datum::Text(as_text(next())?.to_uppercase()),
        Func::Lower => Datum::Text(as_text(next())?.to_lowercase()),
        Func::Length => Datum::Int(as_text(next())?.trim_end_matches(' ').chars().count() as i64),
        Func::Substr => {
            let s: Vec<char> = as_text(next())?.chars().collect();
            let from = int_arg(&next())?;
            let count = match next() {
                Datum::Null => None,
                c => Some(int_arg(&c)?),
            };
            if let Some(c) = count
                && c < 0
            {
                return Err(SqlError::new(
                    "22011",
                    "negative substring length not allowed",
                ));
            }
            let start = from.max(1);
            let end = match count {
                Some(c) => (from + c).max(start),
                None => i64::MAX,
            };
            let text: String = s
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    let pos = *i as i64 + 1;
                    pos >= start && pos < end
                })
                .map(|(_, c)| c)
                .collect();
            Datum::Text(text)
        }
        Func::Coalesce => {
            let mut out = Datum::Null;
            for a in it.by_ref() {
                if !a.is_null() {
                    out = a;
                    break;
                }
            }
            out
        }
        Func::NullIf => {
            let a = next();
            let b = next();
            if compare(&a, &b, false)? == Some(std::cmp::Ordering::Equal) {
                Datum::Null
            } else {
                a
            }
        }
        Func::Power => {
            let a = next();
            let b = next();
            power(a, b)?
        }
        Func::Abs => match num_keep_int(next())? {
            Datum::Int(v) => Datum::Int(
                v.checked_abs()
                    .ok_or_else(|| SqlError::new("22003", "integer out of range"))?,
            ),
            Datum::Decimal(x) => Datum::Decimal(x.abs()),
            Datum::Float(x) => Datum::Float(x.abs()),
            other => other,
        },
        Func::Round => {
            let x = next();
            let digits = match next() {
                Datum::Null => 0,
                d => int_arg(&d)?,
            };
            round_to(x, digits, RoundingStrategy::MidpointAwayFromZero)?
        }
        Func::Trunc => {
            let x = next();
            let digits = match next() {
                Datum::Null => 0,
                d => int_arg(&d)?,
            };
            round_to(x, digits, RoundingStrategy::ToZero)?
        }
        Func::Floor => match num(next())? {
            Datum::Decimal(x) => Datum::Decimal(x.floor()),
            Datum::Float(x) => Datum::Float(x.floor()),
            other => other,
        },
        Func::Ceil => match num(next())? {
            Datum::Decimal(x) => Datum::Decimal(x.ceil()),
            Datum::Float(x) => Datum::Float(x.ceil()),
            other => other,
        },
        Func::Now => Datum::Timestamp(ctx.now),
        Func::CurrentDate => Datum::Date(ctx.now.div_euclid(86_400_000_000) as i32),
        Func::Greatest | Func::Least => {
            let mut best = Datum::Null;
            for a in it.by_ref() {
                if a.is_null() {
                    continue;
                }
                let better = match compare(&a, &best, false)? {
                    None => true,
                    Some(o) => {
                        (f == Func::Greatest) == (o == std::cmp::Ordering::Greater)
                            && o != std::cmp::Ordering::Equal
                    }
                };
                if better {
                    best = a;
                }
            }
            best
        }
        Func::Trim | Func::Ltrim | Func::Rtrim => {
            let v = as_text(next())?;
            let chars: Vec<char> = match next() {
                Datum::Null => vec![' '],
                d => as_text(d)?.chars().collect(),
            };
            let strip = |c: char| chars.contains(&c);
            Datum::Text(match f {
                Func::Ltrim => v.trim_start_matches(strip).to_string(),
                Func::Rtrim => v.trim_end_matches(strip).to_string(),
                _ => v.trim_matches(strip).to_string(),
            })
        }
        Func::BitAnd => Datum::Int(int_arg(&next())? & int_arg(&next())?),
        Func::Record(_) => {
            let mut items = Vec::new();
            for d in it.by_ref() {
                items.push(d);
            }
            Datum::Text(format_record(&items)?)
        }
        Func::RecordField(k) => {
            let items = parse_record(&as_text(next())?)?;
            items
                .into_iter()
                .nth(k)
                .flatten()
                .map_or(Datum::Null, Datum::Text)
        }
        Func::Concat => {
            let mut s = String::new();
            for a in it.by_ref() {
                if !a.is_null() {
                    s.push_str(&as_text(a)?);
                }
            }
            Datum::Text(s)
        }
        Func::Mod => {
            let a = next();
            let b = next();
            crate::sql::value::arith(crate::sql::value::ArithOp::Mod, &a, &b, PgType::Int8)?
        }
        Func::Version => Datum::Text(format!(
            "PostgreSQL 15.0 (shmdb {}) on x86_64-pc-linux-gnu",
            env!("CARGO_PKG_VERSION")
        )),
        Func::Constant(s) => Datum::Text(s.to_string()),
        Func::Strpos => {
            let s = as_text(next())?;
            let sub = as_text(next())?;
            Datum::Int(match s.find(&sub) {
                Some(byte) => s[..byte].chars().count() as i64 + 1,
                None => 0,
            })
        }
        Func::Regex(negated, ci) => {
            let s = as_text(next())?;
            let p = as_text(next())?;
            let re = regex::RegexBuilder::new(&p)
                .case_insensitive(ci)
                .build()
                .map_err(|e| SqlError::new("2201B", format!("invalid regular expression: {e}")))?;
            Datum::Bool(re.is_match(&s) != negated)
        }
        Func::True => Datum::Bool(true),
        Func::NullText => Datum::Null,
        Func::FormatType => {
            let oid = int_arg(&next())?;
            let name = [
                PgType::Bool,
                PgType::Int2,
                PgType::Int4,
                PgType::Int8,
                PgType::Numeric,
                PgType::Float4,
                PgType::Float8,
                PgType::Bpchar,
                PgType::Varchar,
                PgType::Text,
                PgType::Date,
                PgType::Timestamp,
                PgType::Bytea,
            ]
            .into_iter()
            .find(|t| i64::from(t.oid()) == oid)
            .map(|t| with_typmod(t, typmod_arg(next())).display())
            .unwrap_or_else(|| "???".into());
            Datum::Text(name)
        }
        Func::ArrayToString => {
            let items = parse_array(&as_text(next())?)?;
            let sep = as_text(next())?;
            Datum::Text(items.into_iter().flatten().collect::<Vec<_>>().join(&sep))
        }
        Func::ArrayUpper => {
            let items = parse_array(&as_text(next())?)?;
            if int_arg(&next())? != 1 || items.is_empty() {
                Datum::Null
            } else {
                Datum::Int(items.len() as i64)
            }
        }
        Func::ArrayElem => {
            let text = as_text(next())?;
            let items = parse_array(&text)?;
            // Vectors count from 0, arrays from 1.
            let first = if is_vector(&text) { 0 } else { 1 };
            let k = int_arg(&next())?;
            usize::try_from(k - first)
                .ok()
                .and_then(|k| items.into_iter().nth(k).flatten())
                .map_or(Datum::Null, Datum::Text)
        }
        Func::ArrayAny(op) => {
            let x = next();
            let items = parse_array(&as_text(next())?)?;
            let mut saw_null = false;
            for item in items {
                let Some(item) = item else {
                    saw_null = true;
                    continue;
                };
                let y = match &x {
                    Datum::Text(_) => Datum::Text(item),
                    other => cast(Datum::Text(item), kind_type(other))?,
                };
                match compare(&x, &y, false)? {
                    Some(o) if op.holds(o) => return Ok(Datum::Bool(true)),
                    Some(_) => {}
                    None => saw_null = true,
                }
            }
            if saw_null {
                Datum::Null
            } else {
                Datum::Bool(false)
            }
        }
        Func::GetExpr => match next() {
            Datum::Null => Datum::Null,
            d => Datum::Text(as_text(d)?),
        },
        Func::Replace => {
            let s = as_text(next())?;
            let from = as_text(next())?;
            let to = as_text(next())?;
            Datum::Text(if from.is_empty() {
                s
            } else {
                s.replace(&from, &to)
            })
        }
    })
}

/// power(a, b): double precision, or numeric when the base is numeric (as PostgreSQL
/// resolves it); 2201F for 0 to a negative power, 2201F for a negative base to a
/// fractional power.
fn power(a: Datum, b: Datum) -> Result<Datum, SqlError> {
    let numeric = matches!(a, Datum::Decimal(_));
    let (Some(x), Some(y)) = (to_f64(&num_keep_int(a)?), to_f64(&num_keep_int(b)?)) else {
        return Err(SqlError::new(
            "42883",
            "function power requires numeric arguments",
        ));
    };
    if x == 0.0 && y < 0.0 {
        return Err(SqlError::new(
            "2201F",
            "zero raised to a negative power is undefined",
        ));
    }
    if x < 0.0 && y.fract() != 0.0 {
        return Err(SqlError::new(
            "2201F",
            "a negative number raised to a non-integer power yields a complex result",
        ));
    }
    let v = x.powf(y);
    if !v.is_finite() {
        return Err(SqlError::new("22003", "value out of range: overflow"));
    }
    Ok(if numeric {
        Datum::Decimal(
            Decimal::try_from(v).map_err(|_| SqlError::new("22003", "value out of range"))?,
        )
    } else {
        Datum::Float(v)
    })
}

fn num_keep_int(d: Datum) -> Result<Datum, SqlError> {
    match d {
        Datum::Text(s) => cast(Datum::Text(s), SqlType::Numeric(None)),
        other => Ok(other),
    }
}

/// A float's value as a decimal where one is needed (SUM/AVG of mixed input).
pub fn to_f64(d: &Datum) -> Option<f64> {
    match d {
        Datum::Int(v) => Some(*v as f64),
        Datum::Decimal(x) => x.to_f64(),
        Datum::Float(f) => Some(*f),
        _ => None,
    }
}

/// A typmod argument (`format_type`): NULL or negative means none.
fn typmod_arg(d: Datum) -> Option<i64> {
    match d {
        Datum::Int(v) if v >= 4 => Some(v),
        _ => None,
    }
}

/// The declared type a wire type and a typmod stand for (`varchar` + 44 = varchar(40),
/// `numeric` + (12 << 16 | 2) + 4 = numeric(12,2)).
fn with_typmod(t: PgType, typmod: Option<i64>) -> SqlType {
    let Some(m) = typmod.and_then(|m| u32::try_from(m - 4).ok()) else {
        return match t {
            PgType::Bpchar => SqlType::Char(1),
            other => SqlType::from_pg(other),
        };
    };
    match t {
        PgType::Bpchar => SqlType::Char(m),
        PgType::Varchar => SqlType::Varchar(Some(m)),
        PgType::Numeric => SqlType::Numeric(Some((m >> 16, m & 0xffff))),
        other => SqlType::from_pg(other),
    }
}

/// Parses an array in PostgreSQL's text form (`{1,2,"a b",NULL}`): arrays travel as that
/// text here, as they do on the wire.
pub fn parse_array(s: &str) -> Result<Vec<Option<String>>, SqlError> {
    let bad = || SqlError::new("22P02", format!("malformed array literal: \"{s}\""));
    if is_vector(s) {
        // int2vector / oidvector (pg_index.indkey): numbers separated by spaces.
        return Ok(s.split_whitespace().map(|v| Some(v.to_string())).collect());
    }
    let inner = s
        .trim()
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(bad)?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => item.push(chars.next().ok_or_else(bad)?),
                    Some(c) => item.push(c),
                    None => return Err(bad()),
                }
            }
        }
        while let Some(&c) = chars.peek() {
            if c == ',' {
                break;
            }
            if !quoted {
                item.push(c);
            }
            chars.next();
        }
        let item = if quoted {
            Some(item)
        } else {
            let v = item.trim();
            (!v.eq_ignore_ascii_case("null")).then(|| v.to_string())
        };
        out.push(item);
        if chars.next().is_none() {
            return Ok(out);
        }
    }
}

/// Formats values as an array in PostgreSQL's text form.
pub fn format_array(items: &[Datum]) -> Result<String, SqlError> {
    let mut parts = Vec::with_capacity(items.len());
    for d in items {
        if d.is_null() {
            parts.push("NULL".to_string());
            continue;
        }
        let v = as_text(d.clone())?;
        let plain = !v.is_empty()
            && !v.eq_ignore_ascii_case("null")
            && !v
                .chars()
                .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_whitespace());
        parts.push(if plain {
            v
        } else {
            format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
        });
    }
    Ok(format!("{{{}}}", parts.join(",")))
}

/// The type to read an array element as when comparing it with `d`.
fn kind_type(d: &Datum) -> SqlType {
    match d {
        Datum::Bool(_) => SqlType::Bool,
        Datum::Int(_) => SqlType::Int8,
        Datum::Decimal(_) => SqlType::Numeric(None),
        Datum::Float(_) => SqlType::Float8,
        Datum::Date(_) => SqlType::Date,
        Datum::Timestamp(_) => SqlType::Timestamp,
        Datum::Bytes(_) => SqlType::Bytea,
        Datum::Null | Datum::Text(_) => SqlType::Text,
    }
}

/// Whether an array's text is a vector type's (`1 2 3`, subscripts from 0) rather than an
/// array's (`{1,2,3}`, subscripts from 1).
fn is_vector(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_digit() || c == '-' || c == ' ')
}

/// Formats a record in PostgreSQL's text form: `(1,"a b",)` (an empty field is NULL).
pub fn format_record(items: &[Datum]) -> Result<String, SqlError> {
    let mut parts = Vec::with_capacity(items.len());
    for d in items {
        if d.is_null() {
            parts.push(String::new());
            continue;
        }
        let v = as_text(d.clone())?;
        let plain = !v.is_empty()
            && !v
                .chars()
                .any(|c| matches!(c, '(' | ')' | ',' | '"' | '\\') || c.is_whitespace());
        parts.push(if plain {
            v
        } else {
            format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
        });
    }
    Ok(format!("({})", parts.join(",")))
}

/// Parses a record's text form; an empty unquoted field is NULL.
pub fn parse_record(s: &str) -> Result<Vec<Option<String>>, SqlError> {
    let bad = || SqlError::new("22P02", format!("malformed record literal: \"{s}\""));
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(bad)?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        let mut quoted = false;
        let mut more = false;
        while let Some(c) = chars.next() {
            match c {
                ',' => {
                    more = true;
                    break;
                }
                '"' => {
                    quoted = true;
                    loop {
                        match chars.next() {
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                item.push('"');
                            }
                            Some('"') => break,
                            Some('\\') => item.push(chars.next().ok_or_else(bad)?),
                            Some(c) => item.push(c),
                            None => return Err(bad()),
                        }
                    }
                }
                c => item.push(c),
            }
        }
        out.push((quoted || !item.is_empty()).then_some(item));
        if !more {
            return Ok(out);
        }
    }
}
