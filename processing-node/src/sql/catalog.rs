//! The catalog: table, column and index definitions, kept in the store under the same
//! transactions as the data.
//!
//! Definitions are rows of a reserved system table ([`SYSTEM_TABLE`], in `ROWS`), written and
//! read through [`Transaction`]: a catalog change is a versioned record like any other, so a
//! transaction reads the catalog of its snapshot, DDL commits or rolls back with the rest of
//! the transaction, and two concurrent DDL statements conflict (first committer wins). Row 0
//! holds the catalog *version*, a number drawn from a store counter that every DDL statement
//! replaces; a processing node caches the catalog per version, so a statement costs one
//! point read of row 0 per transaction instead of a catalog scan. Ids of tables and indexes
//! come from a counter in the store's `CATALOG` table (`increment` is atomic and never hands
//! out a number twice; an aborted DDL statement only wastes one).

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use shmdb_placement::tables;

use crate::datum::Datum;
use crate::encoding::key::SortOrder;
use crate::keys::{self, CatalogSpace};
use crate::sql::error::SqlError;
use crate::sql::sqltype::SqlType;
use crate::sql::txn_error;
use crate::txn::{Engine, IndexDef, TableDef, Transaction};

/// The SQL table id of the system table that holds the catalog (user tables start at
/// [`FIRST_USER_ID`]).
pub const SYSTEM_TABLE: u32 = 1;
/// The first id handed out to user tables and indexes.
pub const FIRST_USER_ID: i64 = 1000;

/// The system table as the transaction core sees it: `(id bigint primary key, body text)`.
pub fn system_def() -> TableDef {
    TableDef {
        id: SYSTEM_TABLE,
        columns: 2,
        primary_key: vec![0],
        indexes: Vec::new(),
    }
}

/// A column definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnMeta {
    /// Name (lower-cased unless quoted).
    pub name: String,
    /// Declared type.
    pub ty: SqlType,
    /// NOT NULL (primary-key columns are always NOT NULL).
    pub not_null: bool,
    /// The DEFAULT expression as SQL text, parsed again when used.
    pub default: Option<String>,
    /// The hidden row id of a table without a declared primary key (not in `SELECT *`).
    #[serde(default)]
    pub hidden: bool,
}

/// A secondary index (or the index behind a UNIQUE constraint).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Index id (prefix of its entries in `INDEXES`).
    pub id: u32,
    /// Name.
    pub name: String,
    /// Positions of the indexed columns.
    pub columns: Vec<usize>,
    /// Whether values must be unique.
    pub unique: bool,
}

/// A table definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableMeta {
    /// Stable object id (the catalog row's key; PostgreSQL's oid).
    pub oid: u32,
    /// Storage id: the prefix of the rows in `ROWS`. TRUNCATE gives the table a new one.
    pub store_id: u32,
    /// Name.
    pub name: String,
    /// Columns (a hidden row id, if any, keeps its position; ADD COLUMN appends after it).
    pub columns: Vec<ColumnMeta>,
    /// Positions of the primary-key columns (the hidden row id when none was declared).
    pub primary_key: Vec<usize>,
    /// Name of the primary-key constraint, if one was declared.
    pub pk_name: Option<String>,
    /// Secondary indexes.
    pub indexes: Vec<IndexMeta>,
}

impl TableMeta {
    /// The definition the transaction core works with.
    pub fn def(&self) -> TableDef {
        TableDef {
            id: self.store_id,
            columns: self.columns.len(),
            primary_key: self.primary_key.clone(),
            indexes: self
                .indexes
                .iter()
                .map(|i| IndexDef {
                    id: i.id,
                    columns: i.columns.clone(),
                    orders: vec![SortOrder::ASC; i.columns.len()],
                    unique: i.unique,
                })
                .collect(),
        }
    }

    /// Whether the table has a hidden row id instead of a declared primary key.
    pub fn has_rowid(&self) -> bool {
        self.columns.iter().any(|c| c.hidden)
    }

    /// Position of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name && !c.hidden)
    }

    /// The columns a user sees (`SELECT *`), in order.
    pub fn visible(&self) -> impl Iterator<Item = (usize, &ColumnMeta)> {
        self.columns.iter().enumerate().filter(|(_, c)| !c.hidden)
    }
}

/// One version of the whole catalog.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    /// The version (row 0 of the system table); 0 before the first DDL.
    pub version: i64,
    /// Tables by name.
    pub tables: HashMap<String, Arc<TableMeta>>,
}

impl Catalog {
    /// A table by name, or 42P01.
    pub fn table(&self, name: &str) -> Result<Arc<TableMeta>, SqlError> {
        self.tables
            .get(name)
            .cloned()
            .ok_or_else(|| SqlError::new("42P01", format!("relation \"{name}\" does not exist")))
    }

    /// Tables in name order (for listings).
    pub fn sorted(&self) -> Vec<Arc<TableMeta>> {
        let mut v: Vec<_> = self.tables.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The table and index owning an index name.
    pub fn index_by_name(&self, name: &str) -> Option<(Arc<TableMeta>, usize)> {
        self.tables.values().find_map(|t| {
            t.indexes
                .iter()
                .position(|i| i.name == name)
                .map(|p| (t.clone(), p))
        })
    }
}

/// The per-node catalog cache, keyed by version.
#[derive(Debug, Default)]
pub struct CatalogCache {
    current: Mutex<Option<Arc<Catalog>>>,
    /// Row-id blocks per table oid: (next, end).
    rowids: Mutex<HashMap<u32, (i64, i64)>>,
}

const ROWID_BLOCK: i64 = 128;

impl CatalogCache {
    /// The catalog as `tx` sees it: one point read of the version, and a full load only when
    /// this node has not cached that version yet.
    pub async fn load(&self, tx: &mut Transaction) -> Result<Arc<Catalog>, SqlError> {
        let def = system_def();
        let version = match tx.get(&def, &[Datum::Int(0)]).await.map_err(txn_error)? {
            Some(row) => match row.get(1) {
                Some(Datum::Text(v)) => v.parse().unwrap_or(0),
                _ => 0,
            },
            None => 0,
        };
        if let Some(c) = self.current.lock().as_ref()
            && c.version == version
        {
            return Ok(c.clone());
        }
        let catalog = Arc::new(read_all(tx, version).await?);
        *self.current.lock() = Some(catalog.clone());
        Ok(catalog)
    }

    /// Asks `tx` to read the catalog version along with its next records, so that
    /// [`CatalogCache::load`] finds it in the transaction buffer instead of reading it in a
    /// round trip of its own.
    pub fn read_version_with_next_fetch(tx: &mut Transaction) {
        let key = keys::row_key(SYSTEM_TABLE, &[Datum::Int(0)]);
        tx.read_with_next_fetch(tables::ROWS, key.into());
    }

    /// The newest catalog this node has loaded (for describing statements outside a
    /// transaction; execution always checks the version).
    pub fn current(&self) -> Option<Arc<Catalog>> {
        self.current.lock().clone()
    }

    /// A new row id for a table without a primary key (blocks from a store counter).
    pub async fn next_rowid(&self, engine: &Engine, oid: u32) -> Result<i64, SqlError> {
        {
            let mut ids = self.rowids.lock();
            if let Some((next, end)) = ids.get_mut(&oid)
                && *next < *end
            {
                *next += 1;
                return Ok(*next - 1);
            }
        }
        let key = keys::catalog_key(
            CatalogSpace::META,
            &[Datum::Text("rowid".into()), Datum::Int(i64::from(oid))],
        );
        let (end, _) = engine
            .store()
            .increment(tables::CATALOG, Bytes::from(key), ROWID_BLOCK)
            .await
            .map_err(|e| SqlError::internal(format!("row id counter: {e}")))?;
        let start = end - ROWID_BLOCK + 1;
        self.rowids.lock().insert(oid, (start + 1, end + 1));
        Ok(start)
    }
}

/// Reads every catalog row in the transaction's snapshot (own writes included).
pub async fn read_all(tx: &mut Transaction, version: i64) -> Result<Catalog, SqlError> {
    let rows = tx
        .scan(
            &system_def(),
            Bound::Excluded(&[Datum::Int(0)]),
            Bound::Unbounded,
            0,
        )
        .await
        .map_err(txn_error)?;
    let mut catalog = Catalog {
        version,
        tables: HashMap::new(),
    };
    for row in rows {
        let Some(Datum::Text(body)) = row.get(1) else {
            continue;
        };
        let meta: TableMeta = serde_json::from_str(body)
            .map_err(|e| SqlError::internal(format!("corrupt catalog entry: {e}")))?;
        catalog.tables.insert(meta.name.clone(), Arc::new(meta));
    }
    Ok(catalog)
}

/// A new id for a table, index or catalog version (never reused).
pub async fn new_id(engine: &Engine) -> Result<i64, SqlError> {
    let key = keys::catalog_key(CatalogSpace::META, &[Datum::Text("next_id".into())]);
    let (v, _) = engine
        .store()
        .increment(tables::CATALOG, Bytes::from(key), 1)
        .await
        .map_err(|e| SqlError::internal(format!("id counter: {e}")))?;
    Ok(v + FIRST_USER_ID)
}

/// Writes (or replaces) a table's definition and bumps the catalog version, in `tx`.
pub async fn put_table(
    engine: &Engine,
    tx: &mut Transaction,
    meta: &TableMeta,
) -> Result<(), SqlError> {
    let body = serde_json::to_string(meta).map_err(|e| SqlError::internal(e.to_string()))?;
    let def = system_def();
    let key = [Datum::Int(i64::from(meta.oid))];
    let row = vec![Datum::Int(i64::from(meta.oid)), Datum::Text(body)];
    let exists = tx.get(&def, &key).await.map_err(txn_error)?.is_some();
    if exists {
        tx.update(&def, &key, row).await.map_err(txn_error)?;
    } else {
        tx.insert(&def, row).await.map_err(txn_error)?;
    }
    bump_version(engine, tx).await
}

/// Removes a table's definition and bumps the catalog version, in `tx`.
pub async fn delete_table(engine: &Engine, tx: &mut Transaction, oid: u32) -> Result<(), SqlError> {
    tx.delete(&system_def(), &[Datum::Int(i64::from(oid))])
        .await
        .map_err(txn_error)?;
    bump_version(engine, tx).await
}

/// Gives the catalog a new version: the write makes concurrent DDL conflict, and the fresh
/// number makes every node reload.
async fn bump_version(engine: &Engine, tx: &mut Transaction) -> Result<(), SqlError> {
    let def = system_def();
    let version = new_id(engine).await?;
    // Row 0: key 0, the version as text in the body column.
    let key = [Datum::Int(0)];
    let existing = tx.get(&def, &key).await.map_err(txn_error)?;
    let row = vec![Datum::Int(0), Datum::Text(version.to_string())];
    if existing.is_some() {
        tx.update(&def, &key, row).await.map_err(txn_error)?;
    } else {
        tx.insert(&def, row).await.map_err(txn_error)?;
    }
    Ok(())
}
