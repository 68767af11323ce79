//! Bad requests over the raw gRPC contract: clear status codes and no state change.

mod common;

use std::sync::Arc;
use std::time::Duration;

use shmdb_commit_manager::NoWritesRecovery;
use shmdb_proto::commit as pb;
use shmdb_proto::commit::commit_manager_client::CommitManagerClient;
use tonic::Code;
use tonic::transport::Channel;

/// The parts of the status that a refused request must leave alone.
fn fingerprint(s: &pb::StatusResponse) -> (u64, u64, u64, u64, u64, u64) {
    (s.next_tid, s.base, s.running, s.starts, s.commits, s.aborts)
}

async fn status(client: &mut CommitManagerClient<Channel>) -> anyhow::Result<pb::StatusResponse> {
    Ok(client.status(pb::StatusRequest {}).await?.into_inner())
}

async fn start(client: &mut CommitManagerClient<Channel>) -> anyhow::Result<u64> {
    Ok(client
        .start(pb::StartRequest {
            processing_node_id: 1,
        })
        .await?
        .into_inner()
        .tid)
}

fn expect_error<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(needle),
                "message {:?} should mention {needle:?}",
                status.message()
            );
        }
        Ok(value) => panic!("expected {code:?}, got {value:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_finished_tids_are_refused_without_state_change() -> anyhow::Result<()> {
    let store = common::store().await?;
    let mut cfg = common::manager_config(1, &store);
    cfg.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let running = common::start_manager(cfg, &store, Arc::new(NoWritesRecovery)).await?;
    let mut client = CommitManagerClient::connect(format!("http://{}", running.addr)).await?;

    let committed = start(&mut client).await?;
    client.commit(pb::FinishRequest { tid: committed }).await?;
    let aborted = start(&mut client).await?;
    client.abort(pb::FinishRequest { tid: aborted }).await?;
    let open = start(&mut client).await?;
    let before = status(&mut client).await?;

    let unknown = 987_654_321;
    expect_error(
        client.commit(pb::FinishRequest { tid: unknown }).await,
        Code::NotFound,
        "987654321",
    );
    expect_error(
        client.abort(pb::FinishRequest { tid: unknown }).await,
        Code::NotFound,
        "not running",
    );
    expect_error(
        client.commit(pb::FinishRequest { tid: 0 }).await,
        Code::NotFound,
        "tid 0",
    );
    expect_error(
        client.commit(pb::FinishRequest { tid: committed }).await,
        Code::FailedPrecondition,
        "already committed",
    );
    expect_error(
        client.abort(pb::FinishRequest { tid: committed }).await,
        Code::FailedPrecondition,
        "already committed",
    );
    expect_error(
        client.commit(pb::FinishRequest { tid: aborted }).await,
        Code::FailedPrecondition,
        "already aborted",
    );
    expect_error(
        client.abort(pb::FinishRequest { tid: aborted }).await,
        Code::FailedPrecondition,
        "already aborted",
    );
    expect_error(
        client
            .start_batch(pb::StartBatchRequest {
                processing_node_id: 1,
                count: 0,
            })
            .await,
        Code::InvalidArgument,
        "count 0",
    );
    expect_error(
        client
            .start_batch(pb::StartBatchRequest {
                processing_node_id: 1,
                count: 1_000_000,
            })
            .await,
        Code::InvalidArgument,
        "1000000",
    );
    // A batch: each bad tid gets its own outcome; nothing else changes.
    let outcomes = client
        .finish_batch(pb::FinishBatchRequest {
            commits: vec![unknown, committed, aborted],
            aborts: vec![committed, unknown],
        })
        .await?
        .into_inner();
    use pb::FinishOutcome as O;
    assert_eq!(
        outcomes.commit_outcomes,
        vec![
            O::UnknownTid as i32,
            O::AlreadyCommitted as i32,
            O::AlreadyAborted as i32
        ]
    );
    assert_eq!(
        outcomes.abort_outcomes,
        vec![O::Duplicate as i32, O::Duplicate as i32]
    );

    let after = status(&mut client).await?;
    assert_eq!(
        fingerprint(&before),
        fingerprint(&after),
        "{before:?} vs {after:?}"
    );
    // /metrics serves the counters (mirrored from the core every merge round).
    let metrics_addr = running
        .metrics_addr
        .ok_or_else(|| anyhow::anyhow!("metrics endpoint not started"))?;
    let text = common::wait_for(
        "/metrics to show the starts",
        Duration::from_secs(5),
        || async {
            let text = common::http_get(metrics_addr, "/metrics").await.ok()?;
            text.contains(r#"shmdb_commit_starts_total{manager="1"} 3"#)
                .then_some(text)
        },
    )
    .await?;
    for metric in [
        r#"shmdb_commit_commits_total{manager="1"} 1"#,
        r#"shmdb_commit_aborts_total{by="client",manager="1"} 1"#,
        r#"shmdb_commit_running{manager="1"} 1"#,
        "shmdb_commit_lav_lag",
        "shmdb_commit_snapshot_bytes",
        "shmdb_commit_finish_refusals_total",
    ] {
        assert!(text.contains(metric), "missing {metric} in\n{text}");
    }

    // The open transaction is untouched and still commits; a duplicate in one batch is
    // refused the second time only.
    let outcomes = client
        .finish_batch(pb::FinishBatchRequest {
            commits: vec![open, open],
            aborts: vec![],
        })
        .await?
        .into_inner();
    assert_eq!(
        outcomes.commit_outcomes,
        vec![O::Ok as i32, O::Duplicate as i32]
    );
    running.shutdown().await;
    store.cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_transaction_holding_the_window_makes_start_fail_clearly() -> anyhow::Result<()> {
    let store = common::store().await?;
    let mut cfg = common::manager_config(1, &store);
    cfg.window = 150;
    let running = common::start_manager(cfg, &store, Arc::new(NoWritesRecovery)).await?;
    let mut client = CommitManagerClient::connect(format!("http://{}", running.addr)).await?;
    let old = start(&mut client).await?;
    let mut refused = None;
    for _ in 0..200 {
        match client
            .start(pb::StartRequest {
                processing_node_id: 2,
            })
            .await
        {
            Ok(r) => {
                let tid = r.into_inner().tid;
                client.commit(pb::FinishRequest { tid }).await?;
            }
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.ok_or_else(|| anyhow::anyhow!("the window never filled"))?;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(&format!("transaction {old}"))
            && status.message().contains("window of 150"),
        "{}",
        status.message()
    );
    let held = running.manager.status();
    assert!(
        held.issued - held.base <= 150,
        "the snapshot did not grow past the window"
    );
    // Finishing the old transaction frees the window.
    client.abort(pb::FinishRequest { tid: old }).await?;
    start(&mut client).await?;
    running.shutdown().await;
    store.cluster.shutdown().await;
    Ok(())
}
