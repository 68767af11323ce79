//! Where the processing node's data lives in the fixed storage tables: key layouts and scans.
//!
//! The store has a handful of fixed tables (`shmdb_placement::tables`); SQL tables, indexes,
//! processing nodes and catalog objects are told apart by a prefix inside the key, so creating
//! a SQL table or an index never touches the partition map. Every prefix is a fixed-width
//! big-endian integer, so one SQL table (or index, or node) is one contiguous key range that
//! ranges split and move like any other data:
//!
//! | storage table | key | value |
//! |---|---|---|
//! | `ROWS` | SQL table id (u32 BE) + primary key ([`crate::encoding::key`], ascending) | [`crate::record::Record`] |
//! | `INDEXES` | index id (u32 BE) + indexed columns (with their orders) + primary key | (empty; version-unaware) |
//! | `TXLOG` | processing node id (u64 BE) + tid (u64 BE) | the transaction's log entry |
//! | `CATALOG` | catalog space (u8) + key columns ([`crate::encoding::key`]) | catalog record |
//!
//! Index entries end with the primary key so that entries of a non-unique index are distinct
//! per row, and so that an entry names its row without a value. Scan bounds are always in the
//! store's form: start inclusive, end exclusive, `None` for "to the end of the storage table".

use std::ops::Bound;

use crate::datum::Datum;
use crate::encoding::key::{
    SortOrder, decode_column, decode_key, encode_key_into, encode_key_ordered, prefix_successor,
};
use crate::error::DecodeError;

/// A SQL table's id, the prefix of its rows in `ROWS` (PostgreSQL's oids are 32-bit too).
pub type SqlTableId = u32;
/// A secondary index's id, the prefix of its entries in `INDEXES`.
pub type IndexId = u32;
/// A processing node's id, the prefix of its entries in `TXLOG`.
pub type ProcessingNodeId = u64;

/// A key interval to scan in one storage table: `start` inclusive, `end` exclusive, `end ==
/// None` running to the end of the storage table. The store client's scan range has the same
/// shape, so conversion is field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRange {
    /// First key included.
    pub start: Vec<u8>,
    /// First key excluded; `None` for no upper limit.
    pub end: Option<Vec<u8>>,
}

impl ScanRange {
    /// Whether `key` lies in the interval (for tests and for filtering buffered writes).
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// Whether no key can lie in the interval, so the scan can be skipped.
    pub fn is_empty(&self) -> bool {
        self.end
            .as_deref()
            .is_some_and(|end| end <= self.start.as_slice())
    }
}

// ---- ROWS -------------------------------------------------------------------------------

/// The `ROWS` key of the row of `table` with primary key `pk`.
pub fn row_key(table: SqlTableId, pk: &[Datum]) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + pk.len() * 10);
    key.extend_from_slice(&table.to_be_bytes());
    encode_key_into(&mut key, pk);
    key
}

/// The `ROWS` key for an already encoded primary key (e.g. the tail of an index entry).
pub fn row_key_from_encoded(table: SqlTableId, encoded_pk: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + encoded_pk.len());
    key.extend_from_slice(&table.to_be_bytes());
    key.extend_from_slice(encoded_pk);
    key
}

/// Splits a `ROWS` key into its table and primary key values.
pub fn decode_row_key(key: &[u8]) -> Result<(SqlTableId, Vec<Datum>), DecodeError> {
    let (table, pk) = split_id::<4>(key, "row key")?;
    Ok((u32::from_be_bytes(table), decode_key(pk)?))
}

/// Every row of `table`: a full table scan, or dropping the table.
pub fn table_rows_range(table: SqlTableId) -> ScanRange {
    prefix_range(table.to_be_bytes().to_vec())
}

/// The rows of `table` whose primary key lies between `lower` and `upper`.
///
/// Bounds are *prefixes* of the primary key, compared as tuples: `Included([5])` as a lower
/// bound starts at the first key whose first column is 5; `Excluded([5])` skips every key
/// starting with 5 (`a > 5`); `Included([5])` as an upper bound takes every key starting with
/// 5 (`a <= 5`); `Excluded([5])` stops before them (`a < 5`). NULLs sort last in primary keys,
/// so an unbounded upper end includes them; primary keys cannot be NULL in SQL anyway.
pub fn pk_range(table: SqlTableId, lower: Bound<&[Datum]>, upper: Bound<&[Datum]>) -> ScanRange {
    bounded_range(&table.to_be_bytes(), &[], lower, upper)
}

// ---- INDEXES ----------------------------------------------------------------------------

/// The `INDEXES` key of the entry of index `index` for a row with indexed values `columns`
/// (in the index's `orders`) and primary key `pk`.
pub fn index_entry_key(
    index: IndexId,
    columns: &[Datum],
    orders: &[SortOrder],
    pk: &[Datum],
) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + (columns.len() + pk.len()) * 10);
    key.extend_from_slice(&index.to_be_bytes());
    encode_key_ordered(&mut key, columns, orders);
    encode_key_into(&mut key, pk);
    key
}

/// Splits an `INDEXES` key into index id, the first `column_count` values (the indexed
/// columns) and the rest (the primary key).
pub fn decode_index_key(
    key: &[u8],
    column_count: usize,
) -> Result<(IndexId, Vec<Datum>, Vec<Datum>), DecodeError> {
    let (index, rest) = split_id::<4>(key, "index key")?;
    let mut columns = decode_key(rest)?;
    if columns.len() < column_count {
        return Err(DecodeError::Invalid {
            what: "index key",
            offset: 4,
            reason: "fewer columns than the index has",
        });
    }
    let pk = columns.split_off(column_count);
    Ok((u32::from_be_bytes(index), columns, pk))
}

/// The encoded primary key inside an `INDEXES` key (everything after the first
/// `column_count` columns), ready for [`row_key_from_encoded`] without decoding any value.
pub fn index_key_pk(key: &[u8], column_count: usize) -> Result<&[u8], DecodeError> {
    let (_, mut rest) = split_id::<4>(key, "index key")?;
    for _ in 0..column_count {
        let (_, len) = decode_column(rest)?;
        rest = rest.get(len..).unwrap_or_default();
    }
    Ok(rest)
}

/// Every entry of `index`: the lazy sweep, or dropping the index.
pub fn index_entries_range(index: IndexId) -> ScanRange {
    prefix_range(index.to_be_bytes().to_vec())
}

/// The entries of `index` whose indexed columns lie between `lower` and `upper`.
///
/// Bounds are prefixes of the indexed columns with the semantics of [`pk_range`], compared in
/// the index's `orders` (for a `DESC` column "lower" means larger values). NULLs sort where
/// the column's order puts them, and an unbounded end includes them: to exclude NULLs (as SQL
/// comparisons do), bound that end by `[.., Datum::Null]` with the matching inclusivity.
pub fn index_range(
    index: IndexId,
    orders: &[SortOrder],
    lower: Bound<&[Datum]>,
    upper: Bound<&[Datum]>,
) -> ScanRange {
    bounded_range(&index.to_be_bytes(), orders, lower, upper)
}

// ---- TXLOG ------------------------------------------------------------------------------

/// The `TXLOG` key of transaction `tid` run by processing node `node`.
pub fn txlog_key(node: ProcessingNodeId, tid: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&node.to_be_bytes());
    key.extend_from_slice(&tid.to_be_bytes());
    key
}

/// Splits a `TXLOG` key into processing node id and tid.
pub fn decode_txlog_key(key: &[u8]) -> Result<(ProcessingNodeId, u64), DecodeError> {
    let (node, rest) = split_id::<8>(key, "txlog key")?;
    let (tid, rest) = split_id::<8>(rest, "txlog key")?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            what: "txlog key",
            len: rest.len(),
        });
    }
    Ok((u64::from_be_bytes(node), u64::from_be_bytes(tid)))
}

/// The key of spilled chunk `index` of the write set of `tid` (see `txn::log`): the entry's
/// key with the index appended, so the chunks sort right after their entry.
pub fn txlog_spill_key(node: ProcessingNodeId, tid: u64, index: u32) -> Vec<u8> {
    let mut key = txlog_key(node, tid);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The processing node and tid of a `TXLOG` key, entry or spilled chunk alike (the sweep
/// removes both).
pub fn decode_txlog_owner(key: &[u8]) -> Result<(ProcessingNodeId, u64), DecodeError> {
    match key.len() {
        16 => decode_txlog_key(key),
        20 => decode_txlog_key(&key[..16]),
        len => Err(DecodeError::Truncated {
            what: "txlog key",
            offset: len.min(16),
        }),
    }
}

/// Every log entry of `node`, oldest tid first.
pub fn txlog_node_range(node: ProcessingNodeId) -> ScanRange {
    prefix_range(node.to_be_bytes().to_vec())
}

/// The log entries of `node` with tid ≥ `min_tid`: recovery scans from `lav` on, since
/// nothing below it can still be unfinished.
pub fn txlog_node_range_from(node: ProcessingNodeId, min_tid: u64) -> ScanRange {
    ScanRange {
        start: txlog_key(node, min_tid),
        end: prefix_successor(&node.to_be_bytes()),
    }
}

// ---- CATALOG ----------------------------------------------------------------------------

/// A namespace inside `CATALOG`, so that different kinds of catalog objects (and the id
/// counters that name them) never collide and each kind can be listed with one scan.
///
/// The byte values are stored in keys and must never change; the SQL layer may add spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CatalogSpace(pub u8);

impl CatalogSpace {
    /// Cluster-wide settings and counters (e.g. the next table / index id).
    pub const META: CatalogSpace = CatalogSpace(0);
    /// Schemas (namespaces), by name.
    pub const SCHEMAS: CatalogSpace = CatalogSpace(1);
    /// Tables, by (schema, name).
    pub const TABLES: CatalogSpace = CatalogSpace(2);
    /// Indexes, by (table id, index name).
    pub const INDEXES: CatalogSpace = CatalogSpace(3);
    /// Sequences, by (schema, name).
    pub const SEQUENCES: CatalogSpace = CatalogSpace(4);
}

/// The `CATALOG` key of an object of `space` named by the values `parts`.
pub fn catalog_key(space: CatalogSpace, parts: &[Datum]) -> Vec<u8> {
    let mut key = vec![space.0];
    encode_key_into(&mut key, parts);
    key
}

/// Splits a `CATALOG` key into its space and the values that name the object.
pub fn decode_catalog_key(key: &[u8]) -> Result<(CatalogSpace, Vec<Datum>), DecodeError> {
    let (space, parts) = split_id::<1>(key, "catalog key")?;
    Ok((CatalogSpace(space[0]), decode_key(parts)?))
}

/// Every catalog object of `space` whose name starts with `prefix` (e.g. all tables of one
/// schema: `catalog_range(TABLES, &[Text(schema)])`).
pub fn catalog_range(space: CatalogSpace, prefix: &[Datum]) -> ScanRange {
    prefix_range(catalog_key(space, prefix))
}

// ---- helpers ----------------------------------------------------------------------------

fn split_id<'k, const N: usize>(
    key: &'k [u8],
    what: &'static str,
) -> Result<([u8; N], &'k [u8]), DecodeError> {
    let (id, rest) = key.split_first_chunk::<N>().ok_or(DecodeError::Truncated {
        what,
        offset: key.len(),
    })?;
    Ok((*id, rest))
}

fn prefix_range(prefix: Vec<u8>) -> ScanRange {
    let end = prefix_successor(&prefix);
    ScanRange { start: prefix, end }
}

/// `id` followed by bounds on the encoded columns, with prefix semantics on both ends.
fn bounded_range(
    id: &[u8],
    orders: &[SortOrder],
    lower: Bound<&[Datum]>,
    upper: Bound<&[Datum]>,
) -> ScanRange {
    let bound_key = |datums: &[Datum]| {
        let mut key = id.to_vec();
        encode_key_ordered(&mut key, datums, orders);
        key
    };
    let past = |datums: &[Datum]| prefix_successor(&bound_key(datums));
    let start = match lower {
        Bound::Unbounded => Some(id.to_vec()),
        Bound::Included(datums) => Some(bound_key(datums)),
        Bound::Excluded(datums) => past(datums),
    };
    let end = match upper {
        Bound::Unbounded => prefix_successor(id),
        Bound::Included(datums) => past(datums),
        Bound::Excluded(datums) => Some(bound_key(datums)),
    };
    match start {
        Some(start) => ScanRange { start, end },
        // Nothing can follow the lower bound: an empty range.
        None => ScanRange {
            start: vec![0xff; id.len()],
            end: Some(vec![0xff; id.len()]),
        },
    }
}

#[cfg(test)]
mod tests;
