//! READ COMMITTED updates carried onto a newer version at commit.
//!
//! PostgreSQL serializes two READ COMMITTED writers of one row with the row lock: the second
//! waits for the first to commit, then applies its UPDATE to the row as the first left it.
//! Our writers hold no lock until commit (conditional writes detect the conflict there), so
//! two transactions that update the same hot row — every pgbench transaction updates its
//! branch — would otherwise end with a serialization failure for one of them.
//!
//! An UPDATE can instead be *re-applied* at commit when its outcome depends only on the row
//! it changes: its SET expressions and WHERE clause read nothing but that row, the statement
//! parameters and the transaction's timestamp, it returns nothing (no RETURNING), it does
//! not change the primary key or any indexed column, the row was not locked or written by
//! an earlier statement of the transaction, and no later statement read the table. Then
//! the commit that finds a newer committed version recomputes the row from it, re-checking
//! the WHERE clause, exactly as the waiting PostgreSQL writer would have done after the lock
//! was released: the UPDATE takes effect as if it had run at commit. Nothing the
//! transaction observed can tell the two apart — the only place the updated value was
//! visible is a later read, and a later read of the table cancels the re-apply.
//!
//! A newer version that is not committed yet is waited for, briefly ([`REBASE_WAIT`]) —
//! unless a commit manager confirmed that its writer, older than this transaction, has not
//! committed and this commit attempt already applied versions of its own: then the attempt
//! is undone and run again (wait-die), so two commits never wait for each other, each
//! holding a record the other needs. Versions are ordered by tid, so a newer version with
//! a larger tid than this transaction's also means the attempt is undone and run again
//! under a fresh tid ([`Transaction::restart_under_fresh_tid`]), a few times at most
//! ([`REBASE_RESTARTS`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use shmdb_snapshot::Snapshot;
use shmdb_store_client::Versioned;

use crate::datum::Datum;
use crate::encoding::row::{decode_row, encode_row};
use crate::record::Record;
use crate::txn::buffer::with_tid;
use crate::txn::error::TxnError;
use crate::txn::schema::TableDef;
use crate::txn::transaction::{Pending, ReadRecord, StoreKey, Transaction};

/// An UPDATE's change to one row, recomputable from another version of that row.
pub trait Rebase: Send + Sync {
    /// The row as the UPDATE would have left `newest`: `Ok(None)` when `newest` no longer
    /// satisfies the statement's WHERE clause (the commit then fails with a serialization
    /// failure: the statement already reported the row as updated).
    fn rebase(&self, newest: &[Datum]) -> Result<Option<Vec<Datum>>, TxnError>;
}

/// A registered re-apply: the table (a later read of it cancels the re-apply) and how.
#[derive(Clone)]
pub(crate) struct Rebasing {
    table: u32,
    rebase: Arc<dyn Rebase>,
}

/// Re-applies registered for the keys of the write set they belong to.
pub(crate) type Rebases = HashMap<StoreKey, Rebasing>;

/// How long a commit waits for the writer of a newer, uncommitted version before failing
/// with a serialization failure.
pub(crate) const REBASE_WAIT: Duration = Duration::from_millis(100);

/// How often such a wait looks at the record again when the node's snapshot does not move.
const REBASE_POLL: Duration = Duration::from_millis(2);

/// How often one commit may be undone and run again under a fresh tid.
pub(crate) const REBASE_RESTARTS: usize = 10;

/// What re-applying an update onto the record found in the store means for the commit.
pub(crate) enum Rebased {
    /// The write now builds on the newest version: write it, conditionally on this stamp.
    Write(Record, u64),
    /// Run the commit again under a fresh tid: the newest version has a larger tid than
    /// this transaction (the write set already holds the row recomputed from it), or an
    /// older transaction's version is not committed yet and this attempt holds versions.
    Restart,
}

impl Transaction {
    /// Replaces a row as [`Transaction::update`] does, and registers `rebase` so that a
    /// concurrent commit of the same row is built upon at commit instead of failing this
    /// transaction (see the module documentation for when the caller may offer it).
    /// The offer is dropped when the row was already written or locked by this
    /// transaction, or outside READ COMMITTED.
    pub async fn update_rebasable(
        &mut self,
        table: &TableDef,
        pk: &[Datum],
        row: Vec<Datum>,
        rebase: Arc<dyn Rebase>,
    ) -> Result<(), TxnError> {
        let key = Self::row_key(table, pk);
        let first_write = !self.writes.contains_key(&key);
        let same_key = table.pk_of(&row) == pk;
        self.update(table, pk, row).await?;
        if first_write && same_key && self.read_committed {
            self.rebases.insert(
                key,
                Rebasing {
                    table: table.id,
                    rebase,
                },
            );
        }
        Ok(())
    }

    /// A statement read `table`: what it saw of this transaction's updates is final, so
    /// none of them may be re-applied to a newer version any more.
    pub(crate) fn observed(&mut self, table: u32) {
        if !self.rebases.is_empty() {
            self.rebases.retain(|_, r| r.table != table);
        }
    }

    /// Whether the write at `key` may be re-applied at commit.
    pub(crate) fn is_rebasable(&self, key: &StoreKey) -> bool {
        self.rebases.contains_key(key)
    }

    /// The commit found `key` changed by a version this transaction did not see (the
    /// record is `found`, read after the node's snapshot was `seen`): waits until that
    /// version is committed, recomputes the row from it and makes it the base of the
    /// pending write. Fails with a serialization failure when the row was deleted, no
    /// longer qualifies, or its writer did not finish within [`REBASE_WAIT`].
    ///
    /// `holds_writes`: this commit attempt has applied versions of its own (see the wait-die
    /// rule below). The snapshot must be taken before the record is read, never after: a
    /// writer that aborts removes its versions before its tid is reported finished, and a
    /// snapshot taken after the read may already count that tid as finished (tids below a
    /// snapshot's base are visible) while the read still holds its version.
    pub(crate) async fn rebase_onto(
        &mut self,
        key: &StoreKey,
        mut found: Option<Versioned>,
        mut seen: Option<Arc<Snapshot>>,
        holds_writes: bool,
    ) -> Result<Rebased, TxnError> {
        let Some(rebasing) = self.rebases.get(key).cloned() else {
            return Err(TxnError::SerializationFailure);
        };
        let deadline = tokio::time::Instant::now() + REBASE_WAIT;
        let engine = self.engine.clone();
        let mut asked_manager = false;
        let (record, stamp, newest) = loop {
            let Some(current) = found.as_ref() else {
                // The row is gone altogether: the statement's row was deleted.
                return Err(TxnError::SerializationFailure);
            };
            let record = Record::decode(&current.value)?;
            let moved = engine.snapshot_moved.notified();
            let head = record.newest_tid();
            if let Some(newest) = seen.filter(|n| head.is_none_or(|h| n.is_visible(h))) {
                break (record, current.stamp, newest);
            }
            // Wait-die: a commit that holds versions of its own never waits for an older
            // transaction's version that a commit manager confirmed is not committed — it
            // undoes them and runs again. Wait-for edges then only go from older to younger
            // transactions, so two commits never wait for each other, each holding what the
            // other needs.
            if asked_manager && holds_writes && head.is_some_and(|h| h < self.tid) {
                return Ok(Rebased::Restart);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(TxnError::SerializationFailure);
            }
            // Not committed as far as this node knows: wait for the node's snapshot to
            // move, else ask a manager (the writer may be on another node), then look again
            // (the writer may abort and take its version back).
            if tokio::time::timeout(REBASE_POLL, moved).await.is_err() {
                engine.refresh_snapshot().await?;
                asked_manager = true;
            }
            seen = engine.newest_snapshot.read().clone();
            found = engine.store.get(key.0, key.1.clone()).await?;
        };
        // What the recomputed row builds on, and so what later conflict checks of this
        // record compare with: the snapshot it was read under plus every committed version
        // the record holds now — nothing that is not in the record.
        let mut under = self
            .reads
            .get(key)
            .map_or_else(|| self.snapshot.clone(), |r| r.snapshot.clone());
        for version in record.versions() {
            if newest.is_visible(version.tid) && !under.is_visible(version.tid) {
                under = Arc::new(with_tid(&under, version.tid));
            }
        }
        let Some(base) = record.visible_row(|t| under.is_visible(t)) else {
            return Err(TxnError::SerializationFailure);
        };
        let Some(row) = rebasing.rebase.rebase(&decode_row(base)?)? else {
            return Err(TxnError::SerializationFailure);
        };
        let head = record.newest_tid();
        self.writes.insert(
            key.clone(),
            Pending::Write(Some(Bytes::from(encode_row(&row)))),
        );
        self.reads.insert(
            key.clone(),
            ReadRecord {
                record: record.clone(),
                stamp: Some(stamp),
                snapshot: under,
            },
        );
        self.engine.reapply.count_reapplied();
        if head.is_some_and(|h| h >= self.tid) {
            return Ok(Rebased::Restart);
        }
        Ok(Rebased::Write(record, stamp))
    }

    /// Undoes this commit attempt (applied versions removed, the log entry aborted, the
    /// tid aborted at its manager) and moves the transaction to a tid started now, above
    /// the versions its re-applied updates build on.
    pub(crate) async fn restart_under_fresh_tid(
        &mut self,
        applied: Vec<StoreKey>,
    ) -> Result<(), TxnError> {
        self.undo_attempt(applied).await?;
        self.engine.reapply.count_restart();
        // Through the engine: the node's snapshot learns what committed meanwhile.
        let begun = self.engine.start().await?;
        self.engine.lav.fetch_max(begun.lav, Ordering::Relaxed);
        self.lav = self.lav.max(begun.lav);
        self.tid = begun.tid;
        Ok(())
    }
}
