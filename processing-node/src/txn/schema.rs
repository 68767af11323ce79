//! What the transaction core needs to know about a table: its id, primary key and indexes.

use crate::datum::Datum;
use crate::encoding::key::SortOrder;
use crate::keys::{IndexId, SqlTableId};

/// A secondary index of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// Index id (unique across the database; keys of its entries start with it).
    pub id: IndexId,
    /// Positions of the indexed columns in the row.
    pub columns: Vec<usize>,
    /// Sort order per indexed column.
    pub orders: Vec<SortOrder>,
    /// Whether two live rows may not share a value (NULLs excepted, as in PostgreSQL).
    pub unique: bool,
}

/// A table as the transaction core sees it. The SQL catalog owns these; the core only needs
/// enough to build keys and maintain indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// Table id.
    pub id: SqlTableId,
    /// Number of columns in a row.
    pub columns: usize,
    /// Positions of the primary-key columns in the row.
    pub primary_key: Vec<usize>,
    /// Secondary indexes.
    pub indexes: Vec<IndexDef>,
}

impl TableDef {
    /// The primary-key values of a row.
    pub fn pk_of(&self, row: &[Datum]) -> Vec<Datum> {
        self.primary_key
            .iter()
            .map(|i| row.get(*i).cloned().unwrap_or(Datum::Null))
            .collect()
    }
}

impl IndexDef {
    /// The indexed values of a row.
    pub fn values_of(&self, row: &[Datum]) -> Vec<Datum> {
        self.columns
            .iter()
            .map(|i| row.get(*i).cloned().unwrap_or(Datum::Null))
            .collect()
    }

    /// Whether this row takes part in uniqueness (PostgreSQL: a NULL in any indexed column
    /// makes the row exempt).
    pub fn claims(&self, values: &[Datum]) -> bool {
        self.unique && !values.iter().any(Datum::is_null)
    }
}
