//! The storage tables every cluster is created with.
//!
//! The layers above keep everything in a few fixed storage tables and put their own
//! identifiers (SQL table ids, index ids, processing-node ids) into the keys, so creating a
//! SQL table or an index never changes the partition map. The placement manager creates
//! these tables at bootstrap; an operation on any other table fails with UNKNOWN_TABLE.

/// General-purpose key-value table (benchmarks, tools, tests).
pub const KV: u64 = 1;
/// Commit-manager state: the tid counter, published committed sets, manager registry.
pub const COMMIT: u64 = 2;
/// Transaction log of processing nodes, keyed by (processing node id, tid).
pub const TXLOG: u64 = 3;
/// Table rows: SQL table id + encoded primary key → all live versions.
pub const ROWS: u64 = 4;
/// Secondary-index entries: index id + encoded columns + primary key.
pub const INDEXES: u64 = 5;
/// The SQL catalog.
pub const CATALOG: u64 = 6;

/// Every bootstrap table with its name.
pub const BOOTSTRAP: &[(u64, &str)] = &[
    (KV, "kv"),
    (COMMIT, "commit"),
    (TXLOG, "txlog"),
    (ROWS, "rows"),
    (INDEXES, "indexes"),
    (CATALOG, "catalog"),
];
