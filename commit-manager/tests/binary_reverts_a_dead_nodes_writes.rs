//! The `commit-manager` binary (what the operator's StatefulSet runs) recovers a silent
//! processing node with the transaction log: the dead node's half-written transaction
//! loses its versions and its log entry gets the abort flag before the manager reports the
//! tid aborted. A manager without log recovery would abort the tid and leave the version
//! behind, to become visible once the base passes it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use shmdb_commit_manager::{CommitClient, CommitClientConfig, CommitError, Refusal};
use shmdb_placement::tables;
use shmdb_processing_node::record::{Record, Version};
use shmdb_processing_node::txn::log::{LogEntry, LogStatus, now_micros};
use shmdb_processing_node::{Datum, encode_row, keys};
use shmdb_store_client::{CondOutcome, Expect};

const DEAD: u64 = 7;
const TABLE: u32 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reverts_a_dead_nodes_writes() -> anyhow::Result<()> {
    let store = common::store().await?;
    let addr = common::free_addr()?;
    let _manager = common::spawn_manager(1, addr, &store.cluster.seeds()).await?;

    // A node that starts a transaction and dies mid-commit: no heartbeats, its write set
    // logged, one version applied.
    let mut cfg = CommitClientConfig::new([addr.to_string()], DEAD);
    cfg.heartbeat_interval = None;
    let dead = CommitClient::new(cfg)?;
    let tid = dead.start().await?.tid;
    let row = (
        tables::ROWS,
        Bytes::from(keys::row_key(TABLE, &[Datum::Int(1)])),
    );
    let log_key = Bytes::from(keys::txlog_key(DEAD, tid));
    let entry = LogEntry {
        status: LogStatus::Running,
        time_micros: now_micros(),
        keys: vec![row.clone()],
        spill: 0,
    };
    store
        .client
        .put(tables::TXLOG, log_key.clone(), Bytes::from(entry.encode()))
        .await?;
    let mut record = Record::new();
    record.push(Version::live(
        tid,
        encode_row(&[Datum::Int(1), Datum::Int(100)]),
    ))?;
    let written = store
        .client
        .put_if(
            row.0,
            row.1.clone(),
            Bytes::from(record.encode()),
            Expect::Absent,
        )
        .await?;
    assert!(
        matches!(written, CondOutcome::Written { .. }),
        "{written:?}"
    );

    // After the heartbeat timeout the binary recovers it: the version is gone, the log
    // entry flagged.
    common::wait_for(
        "the dead node's writes to be reverted",
        Duration::from_secs(30),
        || {
            let client = store.client.clone();
            let (row, log_key) = (row.clone(), log_key.clone());
            async move {
                let gone = client.get(row.0, row.1).await.ok()?.is_none();
                let flagged = match client.get(tables::TXLOG, log_key).await.ok()? {
                    Some(found) => {
                        LogEntry::decode(&found.value).ok()?.status == LogStatus::Aborted
                    }
                    None => false,
                };
                (gone && flagged).then_some(())
            }
        },
    )
    .await?;
    // And the manager took it for aborted: a late commit is refused.
    common::wait_for(
        "the manager to report the tid aborted",
        Duration::from_secs(10),
        || {
            let dead = &dead;
            async move {
                match dead.commit(tid).await {
                    Err(CommitError::Refused(Refusal::AlreadyAborted(t))) if t == tid => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await?;
    Ok(())
}
