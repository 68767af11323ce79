//! Rollback and abort: remove every version the transaction applied, write the abort flag,
//! then tell the commit manager — in that order (the abort invariant, DESIGN.md).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shmdb_placement::tables;
use shmdb_store_client::{CondOutcome, Expect, StoreClient};
use tracing::{error, info, warn};

use crate::record::Record;
use crate::txn::commit::log_key;
use crate::txn::engine::Engine;
use crate::txn::error::TxnError;
use crate::txn::log::{LogEntry, LogStatus};
use crate::txn::transaction::{State, StoreKey, Transaction};

/// Attempts at a failed commit's cleanup before giving up (~2 minutes with the backoff).
const CLEANUP_ATTEMPTS: u32 = 64;

/// Attempts at removing one version before giving up (each failure means someone rewrote
/// the record in between, which only garbage collection can do while our version is the
/// newest).
const UNDO_ATTEMPTS: usize = 64;

impl Transaction {
    /// Rolls back: nothing was written to the store before commit, so only the commit
    /// manager needs telling.
    pub async fn rollback(mut self) -> Result<(), TxnError> {
        match self.state {
            State::Committed => return Err(TxnError::Finished("committed")),
            State::Aborted => return Ok(()),
            State::Active | State::Failed => {}
        }
        self.state = State::Aborted;
        self.engine.manager.abort(self.tid).await
    }

    /// The failure path of commit: undo what was applied, flag the log, abort, report.
    ///
    /// `relog` says the commit flag may already be in the log (the failure came after the
    /// batch that writes it): the entry is then first set back to running, so that if this
    /// node dies halfway through the undo, recovery reverts the rest instead of reporting
    /// the tid committed.
    ///
    /// If the store or the commit manager fails during the cleanup, it is retried in the
    /// background until it succeeds: the tid cannot be reported aborted before its versions
    /// are gone (the abort invariant), and it must not stay running either, or its versions
    /// would block every writer of those records and lav would never pass it. The caller
    /// gets `error` back either way: the transaction did not commit.
    pub(crate) async fn abort_after(
        &mut self,
        applied: Vec<StoreKey>,
        relog: bool,
        error: TxnError,
    ) -> TxnError {
        self.state = State::Aborted;
        let cleanup = Cleanup {
            engine: self.engine.clone(),
            tid: self.tid,
            applied,
            write_set: self.writes.keys().cloned().collect(),
            relog,
        };
        if let Err(failure) = cleanup.run().await {
            warn!(tid = self.tid, error = %failure, "undoing an aborted commit failed; retrying in the background");
            tokio::spawn(cleanup.retry());
        }
        error
    }

    /// Undoes one commit attempt that is to be run again (under another tid): the applied
    /// versions removed, the log entry aborted, the tid aborted at its manager. If that
    /// fails it goes on in the background, as for [`Transaction::abort_after`], and the
    /// caller fails the transaction.
    pub(crate) async fn undo_attempt(&mut self, applied: Vec<StoreKey>) -> Result<(), TxnError> {
        if let Some(shared) = &self.engine.shared {
            for key in self.writes.keys() {
                shared.invalidate(key);
            }
        }
        let cleanup = Cleanup {
            engine: self.engine.clone(),
            tid: self.tid,
            applied,
            write_set: self.writes.keys().cloned().collect(),
            relog: false,
        };
        if let Err(failure) = cleanup.run().await {
            warn!(tid = self.tid, error = %failure, "undoing a commit attempt failed; retrying in the background");
            tokio::spawn(cleanup.retry());
            return Err(failure);
        }
        Ok(())
    }
}

/// The undo of a failed try-commit, in the order the abort invariant requires.
struct Cleanup {
    engine: Arc<Engine>,
    tid: u64,
    applied: Vec<StoreKey>,
    write_set: Vec<StoreKey>,
    relog: bool,
}

impl Cleanup {
    /// One attempt; every step is idempotent, so a failed attempt is simply run again.
    async fn run(&self) -> Result<(), TxnError> {
        let store = &self.engine.store;
        let key = log_key(self.engine.config.node_id, self.tid);
        // The entry as commit wrote it (the split is deterministic; its chunks are stored).
        let (entry, _) = LogEntry::split(LogStatus::Running, &self.write_set);
        if self.relog {
            store
                .put(tables::TXLOG, key.clone(), Bytes::from(entry.encode()))
                .await?;
        }
        for key in &self.applied {
            remove_version(store, key, self.tid).await?;
        }
        let flag = entry.with_status(LogStatus::Aborted);
        store
            .put(tables::TXLOG, key, Bytes::from(flag.encode()))
            .await?;
        self.engine.manager.abort(self.tid).await
    }

    /// Runs the cleanup until it succeeds, backing off between attempts, for a few minutes
    /// at most (a refusal by the commit manager, e.g. because recovery already aborted the
    /// tid, never goes away; everything else is an outage worth waiting out).
    async fn retry(self) {
        let mut backoff = Duration::from_millis(50);
        for attempt in 2..=CLEANUP_ATTEMPTS {
            tokio::time::sleep(backoff).await;
            match self.run().await {
                Ok(()) => {
                    info!(tid = self.tid, attempt, "aborted commit undone");
                    return;
                }
                Err(e) => {
                    warn!(tid = self.tid, attempt, error = %e, "undoing an aborted commit failed again");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        error!(
            tid = self.tid,
            "giving up undoing an aborted commit: the tid stays running at its commit manager \
             until this node stops heartbeating and recovery reverts it"
        );
    }
}

/// Removes the version written by `tid` from the record at `key`, conditionally on the
/// stamp, retrying when the record changed in between. Doing it twice is harmless.
pub(crate) async fn remove_version(
    store: &StoreClient,
    key: &StoreKey,
    tid: u64,
) -> Result<(), TxnError> {
    for _ in 0..UNDO_ATTEMPTS {
        let Some(current) = store.get(key.0, key.1.clone()).await? else {
            return Ok(());
        };
        let mut record = Record::decode(&current.value)?;
        if record.remove(tid).is_none() {
            return Ok(());
        }
        let outcome = if record.is_empty() {
            store
                .delete_if(key.0, key.1.clone(), Expect::Stamp(current.stamp))
                .await
        } else {
            store
                .put_if(
                    key.0,
                    key.1.clone(),
                    Bytes::from(record.encode()),
                    Expect::Stamp(current.stamp),
                )
                .await
        };
        match outcome {
            Ok(CondOutcome::Written { .. } | CondOutcome::Checked) => return Ok(()),
            Ok(CondOutcome::Conflict { .. }) => continue,
            // The next attempt re-reads and finds out whether it was applied.
            Err(e) if e.is_ambiguous() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(TxnError::Commit(format!(
        "could not remove version {tid} at key {:?} after {UNDO_ATTEMPTS} attempts",
        key.1
    )))
}
