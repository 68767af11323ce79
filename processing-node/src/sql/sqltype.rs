//! Column types as the catalog stores them (with length, precision and scale), and their
//! mapping to wire types and from the parser's data types.

use serde::{Deserialize, Serialize};
use sqlparser::ast::{CharacterLength, DataType, ExactNumberInfo};

use crate::sql::error::SqlError;
use crate::sql::types::PgType;

/// A column's declared type. Kept apart from [`PgType`] because the catalog must remember
/// modifiers (`varchar(16)`, `numeric(12,2)`) that assignment checks and rounding need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    /// boolean
    Bool,
    /// smallint
    Int2,
    /// integer
    Int4,
    /// bigint
    Int8,
    /// numeric(precision, scale); `None` = unconstrained
    Numeric(Option<(u32, u32)>),
    /// real
    Float4,
    /// double precision
    Float8,
    /// char(n)
    Char(u32),
    /// varchar(n); `None` = unlimited
    Varchar(Option<u32>),
    /// text
    Text,
    /// date
    Date,
    /// timestamp without time zone
    Timestamp,
    /// bytea
    Bytea,
}

impl SqlType {
    /// The wire type of the column.
    pub fn pg(self) -> PgType {
        match self {
            SqlType::Bool => PgType::Bool,
            SqlType::Int2 => PgType::Int2,
            SqlType::Int4 => PgType::Int4,
            SqlType::Int8 => PgType::Int8,
            SqlType::Numeric(_) => PgType::Numeric,
            SqlType::Float4 => PgType::Float4,
            SqlType::Float8 => PgType::Float8,
            SqlType::Char(_) => PgType::Bpchar,
            SqlType::Varchar(_) => PgType::Varchar,
            SqlType::Text => PgType::Text,
            SqlType::Date => PgType::Date,
            SqlType::Timestamp => PgType::Timestamp,
            SqlType::Bytea => PgType::Bytea,
        }
    }

    /// The unconstrained type for a wire type (casts to a bare wire type).
    pub fn from_pg(t: PgType) -> SqlType {
        match t {
            PgType::Bool => SqlType::Bool,
            PgType::Int2 => SqlType::Int2,
            PgType::Int4 => SqlType::Int4,
            PgType::Int8 => SqlType::Int8,
            PgType::Numeric => SqlType::Numeric(None),
            PgType::Float4 => SqlType::Float4,
            PgType::Float8 => SqlType::Float8,
            PgType::Bpchar => SqlType::Text,
            PgType::Varchar => SqlType::Varchar(None),
            PgType::Text | PgType::Unknown => SqlType::Text,
            PgType::Date => SqlType::Date,
            PgType::Timestamp => SqlType::Timestamp,
            PgType::Bytea => SqlType::Bytea,
        }
    }

    /// The type PostgreSQL's `format_type` prints (for `\d` and information_schema).
    pub fn display(self) -> String {
        match self {
            SqlType::Bool => "boolean".into(),
            SqlType::Int2 => "smallint".into(),
            SqlType::Int4 => "integer".into(),
            SqlType::Int8 => "bigint".into(),
            SqlType::Numeric(None) => "numeric".into(),
            SqlType::Numeric(Some((p, s))) => format!("numeric({p},{s})"),
            SqlType::Float4 => "real".into(),
            SqlType::Float8 => "double precision".into(),
            SqlType::Char(n) => format!("character({n})"),
            SqlType::Varchar(None) => "character varying".into(),
            SqlType::Varchar(Some(n)) => format!("character varying({n})"),
            SqlType::Text => "text".into(),
            SqlType::Date => "date".into(),
            SqlType::Timestamp => "timestamp without time zone".into(),
            SqlType::Bytea => "bytea".into(),
        }
    }

    /// The declared length of character types (information_schema.character_maximum_length).
    pub fn char_length(self) -> Option<u32> {
        match self {
            SqlType::Char(n) | SqlType::Varchar(Some(n)) => Some(n),
            _ => None,
        }
    }

    /// Maps a parsed data type; unknown types are 42704 as in PostgreSQL.
    pub fn from_ast(t: &DataType) -> Result<SqlType, SqlError> {
        let len = |l: &Option<CharacterLength>| -> Option<u32> {
            match l {
                Some(CharacterLength::IntegerLength { length, .. }) => Some(*length as u32),
                _ => None,
            }
        };
        let numeric = |info: &ExactNumberInfo| -> Result<SqlType, SqlError> {
            match info {
                ExactNumberInfo::None => Ok(SqlType::Numeric(None)),
                ExactNumberInfo::Precision(p) => Ok(SqlType::Numeric(Some((*p as u32, 0)))),
                ExactNumberInfo::PrecisionAndScale(p, s) => {
                    if *p == 0 || *p > 28 || *s < 0 || *s as u64 > *p {
                        return Err(SqlError::new(
                            "22023",
                            format!(
                                "NUMERIC precision {p} / scale {s} is not supported (precision 1..28)"
                            ),
                        ));
                    }
                    Ok(SqlType::Numeric(Some((*p as u32, *s as u32))))
                }
            }
        };
        Ok(match t {
            DataType::Bool | DataType::Boolean => SqlType::Bool,
            DataType::SmallInt(_) | DataType::Int2(_) => SqlType::Int2,
            DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => SqlType::Int4,
            DataType::BigInt(_) | DataType::Int8(_) => SqlType::Int8,
            DataType::Numeric(i) | DataType::Decimal(i) | DataType::Dec(i) => numeric(i)?,
            DataType::Real | DataType::Float4 => SqlType::Float4,
            DataType::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => SqlType::Float4,
            DataType::Float(_)
            | DataType::Float8
            | DataType::DoublePrecision
            | DataType::Double(_) => SqlType::Float8,
            DataType::Char(l) | DataType::Character(l) => SqlType::Char(len(l).unwrap_or(1)),
            DataType::Varchar(l) | DataType::CharacterVarying(l) | DataType::CharVarying(l) => {
                SqlType::Varchar(len(l))
            }
            DataType::Text | DataType::String(_) => SqlType::Text,
            DataType::Date => SqlType::Date,
            DataType::Timestamp(_, _) | DataType::Datetime(_) => SqlType::Timestamp,
            DataType::Bytea => SqlType::Bytea,
            DataType::Custom(name, _) => {
                let n = name.to_string().to_lowercase();
                // Catalog queries name types by schema (`::pg_catalog.text`); there is one
                // set of built-in types, so the `pg_catalog.` qualifier changes nothing.
                let bare = n.strip_prefix("pg_catalog.").unwrap_or(&n);
                match bare {
                    "bool" | "boolean" => SqlType::Bool,
                    "int2" | "smallint" => SqlType::Int2,
                    "int4" | "int" | "integer" | "serial" => SqlType::Int4,
                    "int8" | "bigint" | "bigserial" => SqlType::Int8,
                    "numeric" | "decimal" => SqlType::Numeric(None),
                    "float4" | "real" => SqlType::Float4,
                    "float8" => SqlType::Float8,
                    "bpchar" => SqlType::Char(1),
                    "varchar" => SqlType::Varchar(None),
                    "text" | "name" | "regclass" | "regtype" | "regproc" | "regnamespace"
                    | "oid" | "char" => SqlType::Text,
                    "date" => SqlType::Date,
                    "timestamp" => SqlType::Timestamp,
                    "bytea" => SqlType::Bytea,
                    _ => {
                        return Err(SqlError::new(
                            "42704",
                            format!("type \"{n}\" does not exist"),
                        ));
                    }
                }
            }
            DataType::Regclass => SqlType::Text,
            // Arrays travel in their text form ({1,2,3}).
            DataType::Array(_) => SqlType::Text,
            other => {
                return Err(SqlError::new(
                    "42704",
                    format!("type \"{other}\" is not supported"),
                ));
            }
        })
    }
}
