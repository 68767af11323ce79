//! Writing: inserts, updates, deletes and locking reads, kept local until commit.
//!
//! Every write first reads the record (if the transaction has not yet) and checks it: a
//! record whose newest version is not in the snapshot was written by a concurrent
//! transaction, which is already a conflict — the transaction fails at once, without a round
//! trip to find out at commit. Unique indexes are versioned *claims*: records keyed by the
//! indexed values that hold the owning row's primary key, written in the same way as rows,
//! so two transactions claiming the same value conflict exactly like two writers of a row.

use std::ops::Bound;

use std::sync::Arc;

use bytes::Bytes;
use shmdb_placement::tables;
use shmdb_snapshot::Snapshot;

use crate::datum::Datum;
use crate::encoding::key::encode_key;
use crate::encoding::row::{decode_row, encode_row};
use crate::keys;
use crate::record::Record;
use crate::txn::error::TxnError;
use crate::txn::schema::{IndexDef, TableDef};
use crate::txn::transaction::{Pending, ReadRecord, StoreKey, Transaction};

/// What the record at a key looks like to a writer.
enum Existing {
    /// No visible row (absent, deleted, or deleted by us).
    None,
    /// A visible row (or claim) with these bytes.
    Row(Bytes),
}

impl Transaction {
    /// Reads a key for writing and classifies what is there; fails the transaction on a
    /// write-write conflict.
    async fn existing(&mut self, key: &StoreKey) -> Result<Existing, TxnError> {
        // Written again: the earlier update's result is built upon, so it is final.
        self.rebases.remove(key);
        if let Some(Pending::Write(row)) = self.writes.get(key) {
            return Ok(row.clone().map_or(Existing::None, Existing::Row));
        }
        self.fetch_all(std::slice::from_ref(key)).await?;
        let Some(read) = self.reads.get(key) else {
            return Err(TxnError::Corrupt(
                "fetched record missing from buffer".into(),
            ));
        };
        if self.overwrites_unseen(read) {
            return Err(self.fail(TxnError::SerializationFailure));
        }
        Ok(self.visible_at(key).map_or(Existing::None, Existing::Row))
    }

    pub(crate) fn row_key(table: &TableDef, pk: &[Datum]) -> StoreKey {
        (tables::ROWS, Bytes::from(keys::row_key(table.id, pk)))
    }

    fn claim_key(index: &IndexDef, values: &[Datum]) -> StoreKey {
        (
            tables::INDEXES,
            Bytes::from(keys::index_entry_key(index.id, values, &index.orders, &[])),
        )
    }

    fn check_row(table: &TableDef, row: &[Datum]) -> Result<(), TxnError> {
        if row.len() != table.columns {
            return Err(TxnError::Invalid(format!(
                "row has {} columns, table {} has {}",
                row.len(),
                table.id,
                table.columns
            )));
        }
        Ok(())
    }

    /// Inserts a row; fails with a unique violation if its primary key or a unique value is
    /// taken in the snapshot.
    pub async fn insert(&mut self, table: &TableDef, row: Vec<Datum>) -> Result<(), TxnError> {
        self.ensure_active()?;
        Self::check_row(table, &row)?;
        let pk = table.pk_of(&row);
        let key = Self::row_key(table, &pk);
        if let Existing::Row(_) = self.existing(&key).await? {
            return Err(TxnError::UniqueViolation {
                constraint: format!("{}_pkey", table.id),
            });
        }
        for index in &table.indexes {
            let values = index.values_of(&row);
            self.add_index_value(table, index, &values, &pk).await?;
        }
        self.writes
            .insert(key, Pending::Write(Some(Bytes::from(encode_row(&row)))));
        Ok(())
    }

    /// Inserts a row whose primary key was generated for it (a hidden row id from one of
    /// this node's blocks): no other transaction can hold that key, so it is not read first,
    /// which saves a store round trip per such insert. The commit still writes it only if
    /// absent, so a key that somehow exists fails the commit instead of being overwritten.
    pub async fn insert_new(&mut self, table: &TableDef, row: Vec<Datum>) -> Result<(), TxnError> {
        self.ensure_active()?;
        Self::check_row(table, &row)?;
        let key = Self::row_key(table, &table.pk_of(&row));
        if !self.writes.contains_key(&key) && !self.reads.contains_key(&key) {
            let unread = ReadRecord {
                record: Record::new(),
                stamp: None,
                snapshot: self.snapshot.clone(),
            };
            self.reads.insert(key, unread);
        }
        self.insert(table, row).await
    }

    /// Replaces the row with primary key `pk` by `row` (which may carry a new primary key).
    /// Fails with `NotFound` if no such row is visible.
    pub async fn update(
        &mut self,
        table: &TableDef,
        pk: &[Datum],
        row: Vec<Datum>,
    ) -> Result<(), TxnError> {
        self.ensure_active()?;
        Self::check_row(table, &row)?;
        let key = Self::row_key(table, pk);
        let Existing::Row(old) = self.existing(&key).await? else {
            return Err(TxnError::NotFound);
        };
        let old = decode_row(&old)?;
        let new_pk = table.pk_of(&row);
        if new_pk != pk {
            let new_key = Self::row_key(table, &new_pk);
            if let Existing::Row(_) = self.existing(&new_key).await? {
                return Err(TxnError::UniqueViolation {
                    constraint: format!("{}_pkey", table.id),
                });
            }
            self.writes.insert(key, Pending::Write(None));
            for index in &table.indexes {
                let old_values = index.values_of(&old);
                self.drop_index_value(index, &old_values).await?;
                let values = index.values_of(&row);
                self.add_index_value(table, index, &values, &new_pk).await?;
            }
            self.writes
                .insert(new_key, Pending::Write(Some(Bytes::from(encode_row(&row)))));
            return Ok(());
        }
        for index in &table.indexes {
            let old_values = index.values_of(&old);
            let values = index.values_of(&row);
            if old_values != values {
                self.drop_index_value(index, &old_values).await?;
                self.add_index_value(table, index, &values, pk).await?;
            }
        }
        self.writes
            .insert(key, Pending::Write(Some(Bytes::from(encode_row(&row)))));
        Ok(())
    }

    /// Deletes the row with primary key `pk`; `Ok(false)` if no such row is visible.
    pub async fn delete(&mut self, table: &TableDef, pk: &[Datum]) -> Result<bool, TxnError> {
        self.ensure_active()?;
        let key = Self::row_key(table, pk);
        let Existing::Row(old) = self.existing(&key).await? else {
            return Ok(false);
        };
        let old = decode_row(&old)?;
        for index in &table.indexes {
            let values = index.values_of(&old);
            self.drop_index_value(index, &values).await?;
        }
        self.writes.insert(key, Pending::Write(None));
        Ok(true)
    }

    /// A locking read (SELECT … FOR UPDATE): returns the row and makes it part of the write
    /// set, so that a concurrent writer of it conflicts with this transaction. Under READ
    /// COMMITTED the row is its newest committed version (see
    /// [`Transaction::newest_for_write`]); the caller re-checks its predicate on it.
    pub async fn get_for_update(
        &mut self,
        table: &TableDef,
        pk: &[Datum],
    ) -> Result<Option<Vec<Datum>>, TxnError> {
        self.ensure_active()?;
        self.observed(table.id);
        if self.read_committed {
            self.newest_for_write(table, pk).await?;
        }
        let key = Self::row_key(table, pk);
        let existing = self.existing(&key).await?;
        self.writes.entry(key).or_insert(Pending::Lock);
        match existing {
            Existing::Row(row) => Ok(Some(decode_row(&row)?)),
            Existing::None => Ok(None),
        }
    }

    /// Locks every row of a scan result (SELECT … FOR UPDATE over a range).
    pub async fn scan_for_update(
        &mut self,
        table: &TableDef,
        lower: Bound<&[Datum]>,
        upper: Bound<&[Datum]>,
        limit: usize,
    ) -> Result<Vec<Vec<Datum>>, TxnError> {
        let rows = self.scan(table, lower, upper, limit).await?;
        for row in &rows {
            self.get_for_update(table, &table.pk_of(row)).await?;
        }
        Ok(rows)
    }

    /// Adds a row's value to an index: a claim for unique indexes, an entry otherwise.
    async fn add_index_value(
        &mut self,
        table: &TableDef,
        index: &IndexDef,
        values: &[Datum],
        pk: &[Datum],
    ) -> Result<(), TxnError> {
        if index.claims(values) {
            let key = Self::claim_key(index, values);
            if let Existing::Row(_) = self.existing(&key).await? {
                return Err(TxnError::UniqueViolation {
                    constraint: format!("{}_idx{}", table.id, index.id),
                });
            }
            self.writes
                .insert(key, Pending::Write(Some(Bytes::from(encode_key(pk)))));
        } else {
            self.index_entries.push(Bytes::from(keys::index_entry_key(
                index.id,
                values,
                &index.orders,
                pk,
            )));
        }
        Ok(())
    }

    /// Removes a row's value from an index: a tombstone on the claim of a unique index. A
    /// version-unaware entry stays (older snapshots may still need it); garbage collection
    /// removes it once no version of the row holds the value.
    async fn drop_index_value(
        &mut self,
        index: &IndexDef,
        values: &[Datum],
    ) -> Result<(), TxnError> {
        if index.claims(values) {
            let key = Self::claim_key(index, values);
            self.existing(&key).await?;
            self.writes.insert(key, Pending::Write(None));
        }
        Ok(())
    }

    /// READ COMMITTED's row re-check (what PostgreSQL calls EvalPlanQual): before a
    /// statement writes or locks a row it found under its snapshot, the row's newest
    /// version must be one the statement may build on. If a transaction committed a newer
    /// version since, the record is read again under the node's newest snapshot and the
    /// new row returned, for the caller to re-check its predicate and recompute its change
    /// (`None` in it: the row was deleted). If the newest version is not committed yet, this
    /// waits — as PostgreSQL waits for the row lock — until it commits or is removed, up
    /// to [`ROW_WAIT`]; then the write fails with a serialization failure.
    pub async fn newest_for_write(
        &mut self,
        table: &TableDef,
        pk: &[Datum],
    ) -> Result<Newest, TxnError> {
        self.ensure_active()?;
        let key = Self::row_key(table, pk);
        if self.writes.contains_key(&key) {
            // Already written or locked by this transaction: its own version is the base.
            return Ok(Newest::Unchanged);
        }
        self.fetch_all(std::slice::from_ref(&key)).await?;
        let deadline = tokio::time::Instant::now() + ROW_WAIT;
        let engine = self.engine.clone();
        let mut changed = false;
        loop {
            let Some(read) = self.reads.get(&key) else {
                return Err(TxnError::Corrupt(
                    "fetched record missing from buffer".into(),
                ));
            };
            let Some(head) = read.record.newest_tid() else {
                break;
            };
            if head == self.tid || read.snapshot.is_visible(head) {
                break;
            }
            let moved = engine.snapshot_moved.notified();
            let newest = engine.newest_snapshot.read().clone();
            let usable = newest.filter(|n| self.snapshot.is_subset_of(n));
            if let Some(newest) = usable.filter(|n| n.is_visible(head)) {
                // Committed since the statement began: read the record again under a
                // snapshot that has it (newer versions may have come since).
                self.refetch(&key, newest).await?;
                changed = true;
                continue;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.fail(TxnError::SerializationFailure));
            }
            // Not committed as far as this node knows: wait for the node's snapshot to move
            // on, else ask a manager (the writer may be on another node), and look at the
            // record again (the writer may abort and take its version back).
            if tokio::time::timeout(ROW_POLL, moved).await.is_err() {
                engine.refresh_snapshot().await?;
            }
            let snapshot = read_snapshot(&self.reads, &key, &self.snapshot);
            self.refetch(&key, snapshot).await?;
        }
        if !changed {
            return Ok(Newest::Unchanged);
        }
        let row = self
            .visible_at(&key)
            .map(|row| decode_row(&row))
            .transpose()?;
        Ok(Newest::Changed(row))
    }

    /// Reads one record again from the store, under `snapshot`.
    async fn refetch(&mut self, key: &StoreKey, snapshot: Arc<Snapshot>) -> Result<(), TxnError> {
        if let Some(shared) = &self.engine.shared {
            shared.invalidate(key);
        }
        let found = self.engine.store.get(key.0, key.1.clone()).await?;
        let read = ReadRecord::found(found.as_ref(), snapshot)?;
        self.reads.insert(key.clone(), read);
        Ok(())
    }
}

/// The snapshot a buffered record was read under (the statement's, if it is not buffered).
fn read_snapshot(
    reads: &std::collections::HashMap<StoreKey, ReadRecord>,
    key: &StoreKey,
    statement: &Arc<Snapshot>,
) -> Arc<Snapshot> {
    reads
        .get(key)
        .map_or_else(|| statement.clone(), |r| r.snapshot.clone())
}

/// What [`Transaction::newest_for_write`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Newest {
    /// The row as the statement read it is the newest committed one.
    Unchanged,
    /// A newer committed version: the row now (`None` = deleted).
    Changed(Option<Vec<Datum>>),
}

/// How long a READ COMMITTED writer waits for the holder of a row's newest version to
/// commit or abort before failing with a serialization failure.
pub const ROW_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often such a waiter looks at the record again when the node's snapshot does not
/// move (an aborting writer takes its version back without committing anything).
const ROW_POLL: std::time::Duration = std::time::Duration::from_millis(5);
