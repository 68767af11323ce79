//! The engine: one per processing node; begins transactions and holds what they share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use parking_lot::RwLock;
use shmdb_commit_client::{CommitError, Refusal};
use shmdb_snapshot::Snapshot;
use shmdb_store_client::StoreClient;
use shmdb_telemetry::prometheus::IntCounter;
use shmdb_telemetry::{MetricsRegistry, TelemetryError};

use crate::keys::ProcessingNodeId;
use crate::txn::buffer::{BufferStrategy, SharedBuffer};
use crate::txn::error::TxnError;
use crate::txn::prune::PruneStats;
use crate::txn::transaction::Transaction;

/// A transaction as begun at a commit manager.
#[derive(Debug, Clone)]
pub struct Begun {
    /// The tid, also the version number of everything the transaction writes.
    pub tid: u64,
    /// Which committed tids the transaction sees.
    pub snapshot: Arc<Snapshot>,
    /// The lowest active version when it began.
    pub lav: u64,
}

/// The commit managers as the transaction core uses them. A trait so tests can count or
/// fail calls, and so the core does not depend on how managers are reached.
#[async_trait]
pub trait TxnManager: Send + Sync + 'static {
    /// Begins a transaction.
    async fn start(&self) -> Result<Begun, TxnError>;
    /// Reports a transaction committed (after its writes are all applied).
    async fn commit(&self, tid: u64) -> Result<(), TxnError>;
    /// Reports a transaction aborted (after every version it wrote was removed).
    async fn abort(&self, tid: u64) -> Result<(), TxnError>;
}

#[async_trait]
impl TxnManager for shmdb_commit_client::CommitClient {
    async fn start(&self) -> Result<Begun, TxnError> {
        let started = shmdb_commit_client::CommitClient::start(self)
            .await
            .map_err(|e| TxnError::Commit(e.to_string()))?;
        Ok(Begun {
            tid: started.tid,
            snapshot: started.snapshot,
            lav: started.lav,
        })
    }

    async fn commit(&self, tid: u64) -> Result<(), TxnError> {
        match shmdb_commit_client::CommitClient::commit(self, tid).await {
            Ok(()) => Ok(()),
            Err(shmdb_commit_client::CommitError::Ambiguous { reason, .. }) => {
                Err(TxnError::CommitAmbiguous(reason))
            }
            Err(e) => Err(TxnError::Commit(e.to_string())),
        }
    }

    async fn abort(&self, tid: u64) -> Result<(), TxnError> {
        match shmdb_commit_client::CommitClient::abort(self, tid).await {
            // Recovery got there first: the outcome the caller wants already holds.
            Ok(()) | Err(CommitError::Refused(Refusal::AlreadyAborted(_))) => Ok(()),
            Err(e) => Err(TxnError::Commit(e.to_string())),
        }
    }
}

/// How a processing node runs transactions.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This processing node's id (its transaction-log entries are keyed by it).
    pub node_id: ProcessingNodeId,
    /// How records are buffered between reads.
    pub buffer: BufferStrategy,
}

impl EngineConfig {
    /// Defaults (transaction buffer) for a node id.
    pub fn new(node_id: ProcessingNodeId) -> Self {
        EngineConfig {
            node_id,
            buffer: BufferStrategy::TransactionBuffer,
        }
    }
}

/// How long a READ COMMITTED statement waits for another session's start that is already
/// on its way before it asks for its own (see [`Engine::statement_snapshot`]).
const STATEMENT_SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// One processing node's transaction engine.
pub struct Engine {
    pub(crate) store: StoreClient,
    pub(crate) manager: Arc<dyn TxnManager>,
    pub(crate) config: EngineConfig,
    /// The newest lav seen: versions at or below it may be collected.
    pub(crate) lav: AtomicU64,
    /// The snapshot of the newest transaction begun here (the shared buffer's V_max).
    pub(crate) newest_snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Woken whenever `newest_snapshot` moves on: READ COMMITTED writers wait on it for the
    /// transaction that holds a row's newest version to commit.
    pub(crate) snapshot_moved: tokio::sync::Notify,
    /// Starts asked of a commit manager so far (each start takes the next number before it
    /// is sent), and the highest number answered: a READ COMMITTED statement needs the
    /// snapshot of a start sent after it began (see [`Engine::statement_snapshot`]).
    starts_sent: AtomicU64,
    starts_answered: AtomicU64,
    /// Woken whenever a start is answered.
    start_answered: tokio::sync::Notify,
    pub(crate) shared: Option<SharedBuffer>,
    /// How often READ COMMITTED updates were re-applied at commit (`txn::rebase`).
    pub(crate) reapply: ReapplyStats,
    /// Garbage records deleted by the reads that met them (`txn::prune`).
    pub(crate) prune: Arc<PruneStats>,
}

/// Counters of READ COMMITTED updates re-applied at commit instead of failing it: how often
/// the hot-row path is taken, and how often it cost a whole second commit attempt.
#[derive(Debug, Default)]
pub struct ReapplyStats {
    /// Updates recomputed onto a version committed since they were computed.
    pub reapplied: AtomicU64,
    /// Commit attempts undone and run again under a fresh tid for that.
    pub restarts: AtomicU64,
    /// The same counts on the node's `/metrics`, once [`ReapplyStats::export`]ed.
    exported: OnceLock<(IntCounter, IntCounter)>,
}

impl ReapplyStats {
    /// Exposes the counters on `registry` (the node's `/metrics`) from now on.
    pub fn export(&self, registry: &MetricsRegistry) -> Result<(), TelemetryError> {
        let reapplied = registry.register_int_counter(
            "shmdb_txn_updates_reapplied_total",
            "READ COMMITTED updates re-applied at commit onto a version committed since",
        )?;
        let restarts = registry.register_int_counter(
            "shmdb_txn_commit_restarts_total",
            "Commit attempts undone and run again under a fresh tid for a re-applied update",
        )?;
        reapplied.inc_by(self.reapplied.load(Ordering::Relaxed));
        restarts.inc_by(self.restarts.load(Ordering::Relaxed));
        // A second export keeps the first registry's counters.
        let _ = self.exported.set((reapplied, restarts));
        Ok(())
    }

    pub(crate) fn count_reapplied(&self) {
        self.reapplied.fetch_add(1, Ordering::Relaxed);
        if let Some((reapplied, _)) = self.exported.get() {
            reapplied.inc();
        }
    }

    pub(crate) fn count_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        if let Some((_, restarts)) = self.exported.get() {
            restarts.inc();
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over a store and commit managers.
    pub fn new(
        config: EngineConfig,
        store: StoreClient,
        manager: Arc<dyn TxnManager>,
    ) -> Arc<Self> {
        let shared = SharedBuffer::for_strategy(&config.buffer);
        Arc::new(Engine {
            store,
            manager,
            config,
            lav: AtomicU64::new(0),
            newest_snapshot: RwLock::new(None),
            snapshot_moved: tokio::sync::Notify::new(),
            starts_sent: AtomicU64::new(0),
            starts_answered: AtomicU64::new(0),
            start_answered: tokio::sync::Notify::new(),
            shared,
            reapply: ReapplyStats::default(),
            prune: Arc::default(),
        })
    }

    /// Begins a transaction.
    pub async fn begin(self: &Arc<Self>) -> Result<Transaction, TxnError> {
        let begun = self.start().await?;
        Ok(Transaction::new(self.clone(), begun))
    }

    /// A start asked of a commit manager, numbered and recorded as answered.
    pub(crate) async fn start(&self) -> Result<Begun, TxnError> {
        let number = self.starts_sent.fetch_add(1, Ordering::SeqCst) + 1;
        let begun = self.manager.start().await?;
        self.note_begun(&begun);
        self.starts_answered.fetch_max(number, Ordering::SeqCst);
        self.start_answered.notify_waiters();
        Ok(begun)
    }

    /// Makes the node's newest snapshot include every commit acknowledged before this call:
    /// a READ COMMITTED statement must see them all, also those of other processing nodes,
    /// which this node learns of only from a commit manager. Any start sent after the call
    /// began will do, so under load the statement waits for one already on its way (other
    /// sessions' begins) instead of asking for its own; when none is, it asks for one.
    pub(crate) async fn statement_snapshot(&self) -> Result<(), TxnError> {
        let needed = self.starts_sent.load(Ordering::SeqCst) + 1;
        let mut waited = false;
        loop {
            let answered = self.start_answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            if self.starts_answered.load(Ordering::SeqCst) >= needed {
                return Ok(());
            }
            // One wait for a start already sent; if it fails or is slow, ask ourselves.
            if !waited && self.starts_sent.load(Ordering::SeqCst) >= needed {
                waited = true;
                let _ = tokio::time::timeout(STATEMENT_SNAPSHOT_WAIT, answered).await;
                continue;
            }
            return self.refresh_snapshot().await;
        }
    }

    /// A start answered: its lav and snapshot are the newest this node knows.
    fn note_begun(&self, begun: &Begun) {
        self.lav.fetch_max(begun.lav, Ordering::Relaxed);
        let mut newest = self.newest_snapshot.write();
        if newest
            .as_ref()
            .is_none_or(|s| s.newest_visible_tid() <= begun.snapshot.newest_visible_tid())
        {
            *newest = Some(begun.snapshot.clone());
            self.snapshot_moved.notify_waiters();
        }
    }

    /// Asks a commit manager for a fresh snapshot (a transaction begun and aborted at once):
    /// a READ COMMITTED writer waiting on a row whose newest version another processing node
    /// wrote learns this way when it committed, without waiting for the next transaction
    /// to begin here.
    pub(crate) async fn refresh_snapshot(&self) -> Result<(), TxnError> {
        let begun = self.start().await?;
        self.manager.abort(begun.tid).await
    }

    /// A transaction of this node committed: the node's newest snapshot includes it from
    /// now on, so a READ COMMITTED statement begun after the acknowledgement sees it (as do
    /// shared-buffer entries stored after it, whose writes are in the store by now).
    pub(crate) fn note_commit(&self, tid: u64) {
        let mut newest = self.newest_snapshot.write();
        if let Some(current) = newest.as_ref()
            && !current.is_visible(tid)
        {
            *newest = Some(Arc::new(crate::txn::buffer::with_tid(current, tid)));
            self.snapshot_moved.notify_waiters();
        }
    }

    /// The store client (for tools and the SQL layer's catalog).
    pub fn store(&self) -> &StoreClient {
        &self.store
    }

    /// The newest lav this node has seen.
    pub fn lav(&self) -> u64 {
        self.lav.load(Ordering::Relaxed)
    }

    /// This node's id.
    pub fn node_id(&self) -> ProcessingNodeId {
        self.config.node_id
    }

    /// How often READ COMMITTED updates were re-applied at commit.
    pub fn reapply_stats(&self) -> &ReapplyStats {
        &self.reapply
    }

    /// How many garbage records readers deleted.
    pub fn prune_stats(&self) -> &PruneStats {
        &self.prune
    }

    /// Hit/miss counters of the record buffer.
    pub fn buffer_stats(&self) -> crate::txn::buffer::BufferStats {
        self.shared
            .as_ref()
            .map(SharedBuffer::stats)
            .unwrap_or_default()
    }
}
