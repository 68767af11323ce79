//! Writing: inserts, updates, deletes and locking reads, kept local until commit.
//!
//! Every write first reads the record (if the transaction has not yet) and checks it: a
//! record whose newest version is not in the snapshot was written by a concurrent
//! transaction, which is already a conflict — the transaction fails at once, without a round
//! trip to find out at commit. Unique indexes are versioned *claims*: records keyed by the
//! indexed values that hold the owning row's primary key, written in the same way as rows,
//! so two transactions claiming the same value conflict exactly like two writers of a row.

use std::ops::Bound;

use bytes::Bytes;
use shmdb_placement::tables;

use crate::datum::Datum;
use crate::encoding::key::encode_key;
use crate::encoding::row::{decode_row, encode_row};
use crate::keys;
use crate::txn::error::TxnError;
use crate::txn::schema::{IndexDef, TableDef};
use crate::txn::transaction::{Pending, StoreKey, Transaction};

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
        if let Some(Pending::Write(row)) = self.writes.get(key) {
            return Ok(row.clone().map_or(Existing::None, Existing::Row));
        }
        self.fetch_all(std::slice::from_ref(key)).await?;
        let Some(read) = self.reads.get(key) else {
            return Err(TxnError::Corrupt(
                "fetched record missing from buffer".into(),
            ));
        };
        if read.record.write_conflict(self.tid, |t| self.sees(t)) {
            return Err(self.fail(TxnError::SerializationFailure));
        }
        Ok(self.visible_at(key).map_or(Existing::None, Existing::Row))
    }

    fn row_key(table: &TableDef, pk: &[Datum]) -> StoreKey {
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
    /// set, so that a concurrent writer of it conflicts with this transaction.
    pub async fn get_for_update(
        &mut self,
        table: &TableDef,
        pk: &[Datum],
    ) -> Result<Option<Vec<Datum>>, TxnError> {
        self.ensure_active()?;
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
}
