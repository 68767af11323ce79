//! The typed SQL value (`Datum`) that keys and rows are made of, and its sort order.

use std::cmp::Ordering;

pub use rust_decimal::Decimal;

/// One SQL value, as the processing node stores and compares it.
///
/// This is the vocabulary shared by the key encoding (order-preserving, for primary keys and
/// index entries), the row encoding (compact, for the values of records) and, later, the SQL
/// executor. The variants follow PostgreSQL's storage of the corresponding types, so that
/// values round-trip through the wire protocol without conversion loss:
///
/// - `Int` is `bigint` (smaller integer types widen to it);
/// - `Decimal` is `numeric`, exact, with the scale kept as written (`1.50` stays `1.50` in a
///   row) but compared by value (`1.5 = 1.50`, as in PostgreSQL);
/// - `Float` is `double precision`, compared with PostgreSQL's total order: `-0 = 0`, and NaN
///   equals NaN and sorts above every other value, including infinity;
/// - `Text` compares byte-wise on its UTF-8 bytes, which is code-point order, i.e.
///   PostgreSQL's `C` collation;
/// - `Date` counts days and `Timestamp` microseconds since 2000-01-01, PostgreSQL's epoch;
///   their extreme values can stand for `-infinity` / `infinity` as in PostgreSQL.
#[derive(Debug, Clone)]
pub enum Datum {
    /// SQL NULL.
    Null,
    /// `boolean`.
    Bool(bool),
    /// `bigint` (and the narrower integer types).
    Int(i64),
    /// `numeric`: exact decimal, up to 28 fractional digits and 96 bits of mantissa.
    Decimal(Decimal),
    /// `double precision` (and `real`).
    Float(f64),
    /// `text` / `varchar`, always valid UTF-8.
    Text(String),
    /// `bytea`.
    Bytes(Vec<u8>),
    /// `date`: days since 2000-01-01.
    Date(i32),
    /// `timestamp`: microseconds since 2000-01-01 00:00:00.
    Timestamp(i64),
}

/// The type of a [`Datum`], in the order the key encoding ranks different types.
///
/// A key column holds one SQL type, so values of different kinds meet only through mistakes
/// or schema changes; ranking them still gives a total, deterministic order (the same one the
/// encoded keys have), instead of an undefined one. NULL is listed last because ascending
/// keys put NULLs last, as PostgreSQL does by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DatumKind {
    /// [`Datum::Bool`].
    Bool,
    /// [`Datum::Int`].
    Int,
    /// [`Datum::Float`].
    Float,
    /// [`Datum::Decimal`].
    Decimal,
    /// [`Datum::Date`].
    Date,
    /// [`Datum::Timestamp`].
    Timestamp,
    /// [`Datum::Text`].
    Text,
    /// [`Datum::Bytes`].
    Bytes,
    /// [`Datum::Null`].
    Null,
}

impl Datum {
    /// The kind of this value, for error messages and cross-type ranking.
    pub fn kind(&self) -> DatumKind {
        match self {
            Datum::Null => DatumKind::Null,
            Datum::Bool(_) => DatumKind::Bool,
            Datum::Int(_) => DatumKind::Int,
            Datum::Decimal(_) => DatumKind::Decimal,
            Datum::Float(_) => DatumKind::Float,
            Datum::Text(_) => DatumKind::Text,
            Datum::Bytes(_) => DatumKind::Bytes,
            Datum::Date(_) => DatumKind::Date,
            Datum::Timestamp(_) => DatumKind::Timestamp,
        }
    }

    /// Whether this is SQL NULL; spelled out because NULL handling differs everywhere.
    pub fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }
}

/// PostgreSQL's total order of `double precision`: `-0 = 0`, NaN = NaN, NaN above +infinity.
///
/// Public because sorting, grouping and joins in the executor must agree with the keys.
pub fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => {
            if a < b {
                Ordering::Less
            } else if a > b {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        }
    }
}

/// The sort order of ascending keys: SQL order within a type, NULLS LAST, NULL equal to NULL.
///
/// This is the order of a B-tree (PostgreSQL's default operator class), not SQL's
/// three-valued `=`: here NULL equals NULL so that sorting and key comparison are total.
/// The key encoding's byte order is exactly this order (checked by property tests), so a
/// processing node can compare decoded values and encoded keys interchangeably.
impl Ord for Datum {
    fn cmp(&self, other: &Datum) -> Ordering {
        match (self, other) {
            (Datum::Null, Datum::Null) => Ordering::Equal,
            (Datum::Null, _) => Ordering::Greater,
            (_, Datum::Null) => Ordering::Less,
            (Datum::Bool(a), Datum::Bool(b)) => a.cmp(b),
            (Datum::Int(a), Datum::Int(b)) => a.cmp(b),
            (Datum::Decimal(a), Datum::Decimal(b)) => a.cmp(b),
            (Datum::Float(a), Datum::Float(b)) => float_cmp(*a, *b),
            (Datum::Text(a), Datum::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Datum::Bytes(a), Datum::Bytes(b)) => a.cmp(b),
            (Datum::Date(a), Datum::Date(b)) => a.cmp(b),
            (Datum::Timestamp(a), Datum::Timestamp(b)) => a.cmp(b),
            _ => self.kind().cmp(&other.kind()),
        }
    }
}

impl PartialOrd for Datum {
    fn partial_cmp(&self, other: &Datum) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Equality by the sort order: `1.5 == 1.50`, `-0.0 == 0.0`, NaN == NaN, NULL == NULL.
///
/// Consistent with [`Ord`], which is what keyed collections and deduplication need.
impl PartialEq for Datum {
    fn eq(&self, other: &Datum) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Datum {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_follow_postgres() {
        assert_eq!(float_cmp(-0.0, 0.0), Ordering::Equal);
        assert_eq!(float_cmp(f64::NAN, f64::INFINITY), Ordering::Greater);
        assert_eq!(float_cmp(f64::NAN, -f64::NAN), Ordering::Equal);
        assert_eq!(float_cmp(f64::NEG_INFINITY, f64::MIN), Ordering::Less);
    }

    #[test]
    fn nulls_sort_last_and_equal_each_other() {
        assert!(Datum::Null > Datum::Int(i64::MAX));
        assert!(Datum::Null > Datum::Bytes(vec![0xff; 4]));
        assert_eq!(Datum::Null, Datum::Null);
    }

    #[test]
    fn decimals_compare_by_value() {
        assert_eq!(
            Datum::Decimal(Decimal::new(150, 2)),
            Datum::Decimal(Decimal::new(15, 1))
        );
        assert!(Datum::Decimal(Decimal::new(-1, 0)) < Datum::Decimal(Decimal::new(-9, 1)));
    }

    #[test]
    fn text_is_code_point_order() {
        assert!(Datum::Text("Z".into()) < Datum::Text("a".into()));
        assert!(Datum::Text("ab".into()) < Datum::Text("abc".into()));
        assert!(Datum::Text("\u{7f}".into()) < Datum::Text("\u{e9}".into()));
    }
}
