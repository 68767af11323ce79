//! A commit or abort that cannot reach its manager before the deadline is reported as such
//! and the tid is no longer heartbeated: when the manager is back it resolves the tid from
//! the node's transaction log (committed where the log holds the commit flag, aborted
//! otherwise) instead of keeping it running, with the base held below it, for as long as
//! the node lives.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use shmdb_commit_manager::{CommitClient, CommitClientConfig, CommitError, Refusal};
use shmdb_placement::tables;
use shmdb_processing_node::keys;
use shmdb_processing_node::txn::log::{LogEntry, LogStatus, now_micros};
use shmdb_processing_node::txn::recover::LogRecovery;

const NODE: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_finishes_are_resolved_by_recovery() -> anyhow::Result<()> {
    let store = common::store().await?;
    let mut cfg = common::manager_config(1, &store);
    cfg.listen = common::free_addr()?;
    let recovery = || Arc::new(LogRecovery::new(store.client.clone()));
    let manager = common::start_manager(cfg.clone(), &store, recovery()).await?;

    let mut client_cfg = CommitClientConfig::new([cfg.listen.to_string()], NODE);
    client_cfg.heartbeat_interval = Some(Duration::from_millis(100));
    client_cfg.deadline = Duration::from_millis(500);
    let client = CommitClient::new(client_cfg)?;
    let flagged = client.start().await?.tid; // its commit flag is in the log
    let unlogged = client.start().await?.tid; // wrote nothing
    let entry = LogEntry {
        status: LogStatus::Committed,
        time_micros: now_micros(),
        keys: Vec::new(),
        spill: 0,
    };
    store
        .client
        .put(
            tables::TXLOG,
            Bytes::from(keys::txlog_key(NODE, flagged)),
            Bytes::from(entry.encode()),
        )
        .await?;

    manager.shutdown().await;
    let commit = client.commit(flagged).await;
    assert!(
        matches!(commit, Err(CommitError::Ambiguous { tid, .. }) if tid == flagged),
        "{commit:?}"
    );
    let abort = client.abort(unlogged).await;
    assert!(
        matches!(abort, Err(CommitError::Unavailable { .. })),
        "{abort:?}"
    );
    let running = client.running();
    assert!(
        !running.contains(&flagged) && !running.contains(&unlogged),
        "unresolved tids are still heartbeated: {running:?}"
    );

    // The manager comes back under the same id and address, while the client keeps
    // heartbeating (nothing): both tids end, each with the outcome the log gives it.
    let manager = common::start_manager(cfg, &store, recovery()).await?;
    common::wait_for("both tids to be resolved", Duration::from_secs(30), || {
        let m = manager.manager.clone();
        async move { (!m.is_running(flagged) && !m.is_running(unlogged)).then_some(()) }
    })
    .await?;
    let again = client.abort(flagged).await;
    assert!(
        matches!(again, Err(CommitError::Refused(Refusal::AlreadyCommitted(t))) if t == flagged),
        "the flagged tid did not end committed: {again:?}"
    );
    let again = client.commit(unlogged).await;
    assert!(
        matches!(again, Err(CommitError::Refused(Refusal::AlreadyAborted(t))) if t == unlogged),
        "the unlogged tid did not end aborted: {again:?}"
    );
    manager.shutdown().await;
    Ok(())
}
