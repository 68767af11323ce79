//! SQL types as the wire protocol names them (PostgreSQL type OIDs).

/// A column or parameter type, with its PostgreSQL OID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PgType {
    /// boolean
    Bool,
    /// smallint
    Int2,
    /// integer
    Int4,
    /// bigint
    Int8,
    /// numeric / decimal
    Numeric,
    /// real
    Float4,
    /// double precision
    Float8,
    /// char(n)
    Bpchar,
    /// varchar(n)
    Varchar,
    /// text
    Text,
    /// date
    Date,
    /// timestamp without time zone
    Timestamp,
    /// bytea
    Bytea,
    /// Not known yet (an untyped parameter or literal).
    Unknown,
}

impl PgType {
    /// The PostgreSQL type OID drivers expect.
    pub fn oid(self) -> u32 {
        match self {
            PgType::Bool => 16,
            PgType::Int2 => 21,
            PgType::Int4 => 23,
            PgType::Int8 => 20,
            PgType::Numeric => 1700,
            PgType::Float4 => 700,
            PgType::Float8 => 701,
            PgType::Bpchar => 1042,
            PgType::Varchar => 1043,
            PgType::Text => 25,
            PgType::Date => 1082,
            PgType::Timestamp => 1114,
            PgType::Bytea => 17,
            PgType::Unknown => 705,
        }
    }

    /// The type for an OID a client sent, if we know it.
    pub fn from_oid(oid: u32) -> Option<PgType> {
        [
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
            PgType::Unknown,
        ]
        .into_iter()
        .find(|t| t.oid() == oid)
    }
}

/// A result column: name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column name as the client sees it.
    pub name: String,
    /// Its type.
    pub pg_type: PgType,
}
