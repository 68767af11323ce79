//! A transaction: its tid and snapshot, what it read, and what it will write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use shmdb_snapshot::Snapshot;

use crate::record::Record;
use crate::txn::engine::{Begun, Engine};
use crate::txn::error::TxnError;

/// A storage key: storage table and key bytes.
pub type StoreKey = (u64, Bytes);

/// A record as this transaction read it: all versions and the stamp (`None` = absent).
#[derive(Debug, Clone)]
pub(crate) struct ReadRecord {
    pub record: Record,
    pub stamp: Option<u64>,
}

/// A change the transaction will make at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    /// A new version: the encoded row (or, for a unique-index claim, the encoded primary
    /// key), or `None` for a tombstone.
    Write(Option<Bytes>),
    /// A locking read (SELECT … FOR UPDATE): the record is rewritten unchanged at commit, so
    /// that its stamp changes and any concurrent writer conflicts.
    Lock,
}

/// Where the transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Active,
    /// An operation failed in a way that dooms the transaction (a conflict found at write
    /// time): only rollback is possible.
    Failed,
    Committed,
    Aborted,
}

/// One transaction of distributed snapshot isolation. Reads see the snapshot plus the
/// transaction's own writes; writes stay local until [`Transaction::commit`].
pub struct Transaction {
    pub(crate) engine: Arc<Engine>,
    pub(crate) tid: u64,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) lav: u64,
    pub(crate) state: State,
    /// The transaction buffer: every record read, by storage key.
    pub(crate) reads: HashMap<StoreKey, ReadRecord>,
    /// The write set, ordered so scans can merge it.
    pub(crate) writes: BTreeMap<StoreKey, Pending>,
    /// Version-unaware index entries to add at commit.
    pub(crate) index_entries: Vec<Bytes>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("tid", &self.tid)
            .field("state", &self.state)
            .field("writes", &self.writes.len())
            .finish_non_exhaustive()
    }
}

impl Transaction {
    pub(crate) fn new(engine: Arc<Engine>, begun: Begun) -> Self {
        Transaction {
            engine,
            tid: begun.tid,
            snapshot: begun.snapshot,
            lav: begun.lav,
            state: State::Active,
            reads: HashMap::new(),
            writes: BTreeMap::new(),
            index_entries: Vec::new(),
        }
    }

    /// The tid (also the version number of everything this transaction writes).
    pub fn tid(&self) -> u64 {
        self.tid
    }

    /// The snapshot this transaction reads.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Whether the transaction has changes to apply at commit.
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty()
    }

    pub(crate) fn ensure_active(&self) -> Result<(), TxnError> {
        match self.state {
            State::Active => Ok(()),
            State::Failed => Err(TxnError::Finished("aborted; roll it back")),
            State::Committed => Err(TxnError::Finished("committed")),
            State::Aborted => Err(TxnError::Finished("rolled back")),
        }
    }

    /// Marks the transaction doomed by a conflict and returns the error to report.
    pub(crate) fn fail(&mut self, error: TxnError) -> TxnError {
        if error.is_retryable() {
            self.state = State::Failed;
        }
        error
    }

    /// Whether a version written by `tid` is visible to this transaction.
    pub(crate) fn sees(&self, tid: u64) -> bool {
        tid == self.tid || self.snapshot.is_visible(tid)
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // Nothing was written to the store before commit, so abandoning an active
        // transaction only needs the manager told, or lav would stall until the heartbeat
        // timeout.
        if matches!(self.state, State::Active | State::Failed)
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let manager = self.engine.manager.clone();
            let tid = self.tid;
            handle.spawn(async move {
                let _ = manager.abort(tid).await;
            });
        }
    }
}
