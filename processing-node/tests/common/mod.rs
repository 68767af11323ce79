//! Shared set-up of the transaction-core tests: storage nodes, a commit manager, and
//! processing-node engines sharing them, plus helpers that look at the store directly.

#![allow(dead_code)]

pub mod bank;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shmdb::cluster::{ClusterOptions, LocalCluster, StorageProcess};
use shmdb_commit_manager::{CommitClient, CommitClientConfig, ManagerConfig, RunningManager};
use shmdb_placement::tables;
use shmdb_processing_node::keys;
use shmdb_processing_node::record::Record;
use shmdb_processing_node::txn::log::{LogEntry, LogStatus};
use shmdb_processing_node::txn::recover::LogRecovery;
use shmdb_processing_node::txn::{Engine, EngineConfig, IndexDef, TableDef};
use shmdb_processing_node::{Datum, SortOrder};
use shmdb_store_client::{KeyRange, StoreClient, StoreClientConfig, Transport};

/// How long the commit manager waits for a silent processing node before recovering its
/// transactions.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// A storage cluster, one commit manager with log-based recovery, and a store client.
pub struct Cluster {
    pub storage: LocalCluster,
    pub store: StoreClient,
    pub manager: RunningManager,
}

impl Cluster {
    /// `nodes` in-process storage nodes at replication factor `rf`.
    pub async fn start(nodes: u32, rf: u32) -> anyhow::Result<Cluster> {
        Self::start_with(ClusterOptions::ephemeral(nodes, rf)).await
    }

    /// A cluster with custom storage options (e.g. `processes: true`).
    pub async fn start_with(options: ClusterOptions) -> anyhow::Result<Cluster> {
        let storage = LocalCluster::start(&options).await?;
        let store = StoreClient::connect(StoreClientConfig::with_seeds(storage.seeds())).await?;
        let mut cfg = ManagerConfig::local(1, storage.seeds());
        cfg.heartbeat_timeout = HEARTBEAT_TIMEOUT;
        let manager = shmdb_commit_manager::start_with_store(
            cfg,
            store.clone(),
            Arc::new(LogRecovery::new(store.clone())),
        )
        .await?;
        Ok(Cluster {
            storage,
            store,
            manager,
        })
    }

    /// A processing-node engine with id `node`.
    pub fn engine(&self, node: u64) -> anyhow::Result<Arc<Engine>> {
        self.engine_with(EngineConfig::new(node))
    }

    /// A processing-node engine with a custom configuration (its own commit client).
    pub fn engine_with(&self, config: EngineConfig) -> anyhow::Result<Arc<Engine>> {
        self.engine_on(config, self.store.clone())
    }

    /// An engine whose store requests go through `transport` (a fault injector, or a
    /// transport whose metrics a test reads), with its own commit client.
    pub async fn engine_through(
        &self,
        config: EngineConfig,
        transport: Arc<dyn Transport>,
    ) -> anyhow::Result<Arc<Engine>> {
        let store = StoreClient::with_transport(
            StoreClientConfig::with_seeds(self.storage.seeds()),
            transport,
        )
        .await?;
        self.engine_on(config, store)
    }

    fn engine_on(&self, config: EngineConfig, store: StoreClient) -> anyhow::Result<Arc<Engine>> {
        let mut cfg = CommitClientConfig::new([self.manager.addr.to_string()], config.node_id);
        cfg.heartbeat_interval = Some(Duration::from_millis(200));
        let commit = CommitClient::new(cfg)?;
        Ok(Engine::new(config, store, Arc::new(commit)))
    }

    /// The commit manager's current lav.
    pub fn lav(&self) -> u64 {
        self.manager.manager.status().lav
    }

    /// Bytes of record data held by the in-process storage nodes.
    pub fn memory_used(&self) -> u64 {
        self.storage
            .nodes
            .lock()
            .iter()
            .map(|n| match n {
                StorageProcess::InProcess(running) => running.node.memory_used(),
                StorageProcess::Child { .. } => 0,
            })
            .sum()
    }

    /// Stops the commit manager and the storage nodes.
    pub async fn shutdown(self) {
        self.manager.shutdown().await;
        self.storage.shutdown().await;
    }
}

/// `accounts(id int primary key, owner text, balance int)` with a non-unique index on owner.
pub fn accounts() -> TableDef {
    TableDef {
        id: 10,
        columns: 3,
        primary_key: vec![0],
        indexes: vec![IndexDef {
            id: 100,
            columns: vec![1],
            orders: vec![SortOrder::ASC],
            unique: false,
        }],
    }
}

/// `users(id int primary key, email text unique)`.
pub fn users() -> TableDef {
    TableDef {
        id: 11,
        columns: 2,
        primary_key: vec![0],
        indexes: vec![IndexDef {
            id: 110,
            columns: vec![1],
            orders: vec![SortOrder::ASC],
            unique: true,
        }],
    }
}

pub fn int(v: i64) -> Datum {
    Datum::Int(v)
}

pub fn text(v: &str) -> Datum {
    Datum::Text(v.to_string())
}

/// Polls `check` until it returns `Some`, failing after `timeout`. A condition wait, not a
/// sleep: the caller proceeds the moment the condition holds.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every stored record of a SQL table's rows, decoded: (storage key, versions' tids newest
/// first, the record).
pub async fn stored_rows(
    store: &StoreClient,
    table: &TableDef,
) -> anyhow::Result<Vec<(Bytes, Record)>> {
    let range = keys::table_rows_range(table.id);
    let range = KeyRange {
        start: Bytes::from(range.start),
        end: range.end.map(Bytes::from),
    };
    let mut out = Vec::new();
    for item in store.scan(tables::ROWS, range, usize::MAX).await? {
        out.push((item.key, Record::decode(&item.value)?));
    }
    Ok(out)
}

/// The stored record of one row, if any.
pub async fn stored_row(
    store: &StoreClient,
    table: &TableDef,
    pk: &[Datum],
) -> anyhow::Result<Option<Record>> {
    let key = Bytes::from(keys::row_key(table.id, pk));
    match store.get(tables::ROWS, key).await? {
        Some(found) => Ok(Some(Record::decode(&found.value)?)),
        None => Ok(None),
    }
}

/// The version-unaware entries of an index in the store (unique claims excluded).
pub async fn index_entry_count(store: &StoreClient, index: &IndexDef) -> anyhow::Result<usize> {
    let range = keys::index_entries_range(index.id);
    let range = KeyRange {
        start: Bytes::from(range.start),
        end: range.end.map(Bytes::from),
    };
    Ok(store
        .scan(tables::INDEXES, range, usize::MAX)
        .await?
        .iter()
        .filter(|item| item.value.is_empty())
        .count())
}

/// The status of a transaction's log entry (`None` = the transaction logged nothing).
pub async fn log_status(
    store: &StoreClient,
    node: u64,
    tid: u64,
) -> anyhow::Result<Option<LogStatus>> {
    let key = Bytes::from(keys::txlog_key(node, tid));
    match store.get(tables::TXLOG, key).await? {
        Some(found) => Ok(Some(LogEntry::decode(&found.value)?.status)),
        None => Ok(None),
    }
}

/// Every log entry of a processing node: (tid, entry), oldest first (spilled chunks of
/// large write sets left out).
pub async fn log_entries(store: &StoreClient, node: u64) -> anyhow::Result<Vec<(u64, LogEntry)>> {
    let range = keys::txlog_node_range(node);
    let range = KeyRange {
        start: Bytes::from(range.start),
        end: range.end.map(Bytes::from),
    };
    let mut out = Vec::new();
    for item in store.scan(tables::TXLOG, range, usize::MAX).await? {
        let Ok((_, tid)) = keys::decode_txlog_key(&item.key) else {
            continue; // a spilled chunk of a large write set, not an entry
        };
        out.push((tid, LogEntry::decode(&item.value)?));
    }
    Ok(out)
}

/// The bank's verdict after a run: every snapshot summed to the total, and the final
/// balances are exactly the starting balances plus every committed transfer — those
/// acknowledged to a worker, those whose outcome the worker could not know but whose log
/// entry carries the commit flag, and `extra` (committed transfers known otherwise).
pub async fn verify_bank(
    store: &StoreClient,
    engine: &Arc<Engine>,
    run: &bank::Run,
    extra: &[bank::Transfer],
) -> anyhow::Result<()> {
    assert!(run.readers.snapshots > 0, "no snapshot was read");
    assert!(
        run.readers.bad.is_empty(),
        "{} of {} snapshots did not sum to {}: {:?}",
        run.readers.bad.len(),
        run.readers.snapshots,
        bank::total(),
        &run.readers.bad[..run.readers.bad.len().min(5)]
    );
    let mut committed: Vec<bank::Transfer> = extra.to_vec();
    for (node, ledger) in &run.ledgers {
        committed.extend(ledger.committed.iter().copied());
        for (transfer, message) in &ledger.unknown {
            if resolve(store, *node, transfer.tid).await? {
                committed.push(*transfer);
            } else {
                eprintln!("tid {} did not commit ({message})", transfer.tid);
            }
        }
    }
    let balances = bank::balances(engine).await?;
    assert_eq!(balances.len(), bank::ACCOUNTS as usize, "accounts lost");
    assert_eq!(
        balances.iter().sum::<i64>(),
        bank::total(),
        "the total changed"
    );
    let expected = bank::expected_balances(&committed);
    let wrong: Vec<_> = (0..balances.len())
        .filter(|&i| balances[i] != expected[i])
        .map(|i| (i, balances[i], expected[i]))
        .collect();
    assert!(
        wrong.is_empty(),
        "balances differ from the replayed {} committed transfers (account, found, expected): {wrong:?}",
        committed.len()
    );
    Ok(())
}

/// Whether a transaction whose commit outcome its caller could not know committed: its log
/// entry carries the commit flag once recovery (or the transaction itself) settled it.
pub async fn resolve(store: &StoreClient, node: u64, tid: u64) -> anyhow::Result<bool> {
    let status = wait_for(
        &format!("the log entry of tid {tid} to settle"),
        Duration::from_secs(30),
        || async {
            match log_status(store, node, tid).await {
                Ok(Some(LogStatus::Running)) | Err(_) => None,
                Ok(status) => Some(status),
            }
        },
    )
    .await?;
    Ok(status == Some(LogStatus::Committed))
}

/// An example program of this package, built by `cargo test` next to the test binaries
/// (`target/<profile>/examples/<name>`; tests run from `target/<profile>/deps`). With a
/// target filter (`--test x`) cargo does not rebuild examples: build them first then.
pub fn example_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary location {}", exe.display()))?;
    let path = profile_dir.join("examples").join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: examples are built by `cargo test -p shmdb-processing-node` without \
         target filters, or by `cargo build -p shmdb-processing-node --examples`",
        path.display()
    );
    Ok(path)
}
