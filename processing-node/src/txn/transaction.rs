//! A transaction: its tid and snapshot, what it read, and what it will write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use shmdb_snapshot::Snapshot;

use crate::record::Record;
use crate::txn::engine::{Begun, Engine};
use crate::txn::error::TxnError;
use crate::txn::rebase::Rebases;

/// A storage key: storage table and key bytes.
pub type StoreKey = (u64, Bytes);

/// A record as this transaction read it: all versions, the stamp (`None` = absent), and the
/// snapshot it was read under. A write based on it conflicts with any version that snapshot
/// does not see; under READ COMMITTED that is the snapshot of the statement that read it,
/// not the transaction's first one, so the check must travel with the record.
#[derive(Debug, Clone)]
pub(crate) struct ReadRecord {
    pub record: Record,
    pub stamp: Option<u64>,
    pub snapshot: Arc<Snapshot>,
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

impl ReadRecord {
    /// What a get found (`None`: no record), read under `snapshot`.
    pub(crate) fn found(
        found: Option<&shmdb_store_client::Versioned>,
        snapshot: Arc<Snapshot>,
    ) -> Result<ReadRecord, crate::error::DecodeError> {
        Ok(match found {
            Some(v) => ReadRecord {
                record: Record::decode(&v.value)?,
                stamp: Some(v.stamp),
                snapshot,
            },
            None => ReadRecord {
                record: Record::new(),
                stamp: None,
                snapshot,
            },
        })
    }
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
    /// READ COMMITTED: a snapshot per statement, and writers wait for a row's newest
    /// version to commit and then work on it (see [`Transaction::newest_for_write`]).
    pub(crate) read_committed: bool,
    /// READ COMMITTED updates that may be re-applied onto a newer version at commit.
    pub(crate) rebases: Rebases,
    /// A record to fetch along with the next batch of reads (see
    /// [`Transaction::read_with_next_fetch`]).
    pub(crate) ride_along: Option<StoreKey>,
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
            read_committed: false,
            rebases: Rebases::new(),
            ride_along: None,
        }
    }

    /// Fetches `key` together with the next records this transaction fetches, instead of in
    /// a round trip of its own (a later read of it is then served from the buffer). The
    /// SQL layer uses it for the catalog version, which every transaction must read but
    /// which rarely changes.
    pub fn read_with_next_fetch(&mut self, table: u64, key: Bytes) {
        self.ride_along = Some((table, key));
    }

    /// The tid (also the version number of everything this transaction writes).
    pub fn tid(&self) -> u64 {
        self.tid
    }

    /// The snapshot this transaction reads.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Whether the transaction runs at READ COMMITTED (it has begun a statement as such).
    pub fn is_read_committed(&self) -> bool {
        self.read_committed
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

    /// Whether writing over `read` would overwrite a change this transaction did not see:
    /// the record's newest version is not in the snapshot the record was read under (first
    /// committer wins). The tid order (a version may only be written over older ones) is
    /// checked with the tid the transaction commits under, at commit.
    pub(crate) fn overwrites_unseen(&self, read: &ReadRecord) -> bool {
        read.record
            .newest_tid()
            .is_some_and(|newest| newest != self.tid && !read.snapshot.is_visible(newest))
    }

    /// READ COMMITTED: the statement about to run reads a snapshot taken when it began,
    /// as PostgreSQL takes a snapshot per statement: every commit acknowledged before it
    /// began, through any processing node, is in it. The transaction's first statement
    /// reads the snapshot of its begin (taken as that statement began); each later one
    /// makes sure a commit manager was asked after it began (`Engine::statement_snapshot`)
    /// and reads the node's newest snapshot. Records read by earlier statements and not
    /// written are dropped from the buffer so they are read again: even under the same
    /// snapshot the store may hold newer versions, which a writer must find to wait for or
    /// build on. Written ones stay (they hold what the pending writes are based on, and
    /// each remembers the snapshot it was read under for the conflict check at commit). A
    /// snapshot that does not contain the current one (another manager's view) is not
    /// taken: a statement never sees less than the one before it.
    pub async fn begin_statement(&mut self) -> Result<(), TxnError> {
        self.ensure_active()?;
        let first = !self.read_committed;
        self.read_committed = true;
        if first {
            return Ok(());
        }
        self.engine.statement_snapshot().await?;
        let writes = &self.writes;
        self.reads.retain(|key, _| writes.contains_key(key));
        let Some(newest) = self.engine.newest_snapshot.read().clone() else {
            return Ok(());
        };
        if !Arc::ptr_eq(&newest, &self.snapshot) && self.snapshot.is_subset_of(&newest) {
            self.snapshot = newest;
        }
        Ok(())
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
