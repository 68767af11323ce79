//! The processing node's core: how SQL data is laid out in the shared store.
//!
//! Processing nodes are the stateless tier of shmdb (DESIGN.md, "Processing node"): any node
//! runs any transaction against data that lives in the storage nodes, and conflicts between
//! nodes are caught by the store's conditional writes. This crate will hold the transaction
//! core (distributed snapshot isolation, indexes, garbage collection, recovery, buffering)
//! that the SQL layer calls. Its first, pure part is here: the typed value ([`Datum`]), the
//! order-preserving key encoding and the compact row encoding ([`encoding`]), the record of
//! all live versions of a row with its visibility and eager-GC rules ([`record`]), and the
//! layout of rows, index entries, log entries and catalog entries in the fixed storage tables
//! ([`keys`]). None of it does I/O, so every rule the transaction protocol relies on can be
//! checked by property tests.

pub mod datum;
pub mod encoding;
pub mod error;
pub mod keys;
pub mod node;
pub mod pg;
pub mod record;
pub mod sql;
pub mod sweeper;
pub mod txn;

pub use datum::{Datum, DatumKind, Decimal, float_cmp};
pub use encoding::key::{
    SortOrder, compare_keys, decode_column, decode_key, encode_column, encode_key, encode_key_into,
    encode_key_ordered, prefix_successor,
};
pub use encoding::row::{decode_row, encode_row, encode_row_into};
pub use error::{DecodeError, RecordError};
pub use keys::{CatalogSpace, IndexId, ProcessingNodeId, ScanRange, SqlTableId};
pub use record::{Record, Version};
