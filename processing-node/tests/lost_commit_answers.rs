//! A commit whose storage answer is lost after the node applied the write: each write of
//! the commit path (the log entry, the records, the commit flag) in turn. The store client
//! reports such a write as ambiguous; the transaction must then end aborted everywhere — its
//! log entry settled as aborted (a running entry of a live node is never recovered, so a
//! caller could never learn the outcome), no version of it left in a record, and the tid
//! finished at the commit manager so lav moves past it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use parking_lot::Mutex;
use shmdb_placement::tables;
use shmdb_processing_node::txn::EngineConfig;
use shmdb_processing_node::txn::log::LogStatus;
use shmdb_store_client::proto::{self as pb, op::Op as PbOp};
use shmdb_store_client::{GrpcConfig, GrpcTransport, Transport, TransportError};

/// Which request of the commit path loses its answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// The conditional put of the running log entry.
    LogEntry,
    /// The batch of conditional record writes.
    Records,
    /// The batch that carries the commit flag (an unconditional-looking `put_if` on the log
    /// with a stamp).
    CommitFlag,
}

impl Target {
    fn matches(self, req: &pb::BatchRequest) -> bool {
        req.ops.iter().any(|op| match (&op.op, self) {
            (Some(PbOp::PutIf(p)), Target::LogEntry) => {
                p.table == tables::TXLOG && is_absent(p.expect.as_ref())
            }
            (Some(PbOp::PutIf(p)), Target::CommitFlag) => {
                p.table == tables::TXLOG && !is_absent(p.expect.as_ref())
            }
            (Some(PbOp::PutIf(p)), Target::Records) => p.table == tables::ROWS,
            _ => false,
        })
    }
}

fn is_absent(expect: Option<&pb::Expect>) -> bool {
    matches!(
        expect.and_then(|e| e.kind.as_ref()),
        Some(pb::expect::Kind::Absent(true))
    )
}

/// Forwards everything to a real node; the first request matching the armed target is
/// applied there, but its answer is replaced by a lost connection.
struct LosingTransport {
    inner: GrpcTransport,
    armed: Mutex<Option<Target>>,
    lost: Mutex<usize>,
}

#[async_trait]
impl Transport for LosingTransport {
    async fn batch(
        &self,
        addr: &str,
        req: pb::BatchRequest,
    ) -> Result<pb::BatchResponse, TransportError> {
        let lose = {
            let mut armed = self.armed.lock();
            let hit = armed.is_some_and(|t| t.matches(&req));
            if hit {
                *armed = None;
            }
            hit
        };
        let answer = self.inner.batch(addr, req).await;
        if lose && answer.is_ok() {
            *self.lost.lock() += 1;
            return Err(TransportError::Lost(
                "injected: answer lost after apply".into(),
            ));
        }
        answer
    }

    async fn scan(
        &self,
        addr: &str,
        req: pb::ScanRequest,
    ) -> Result<pb::ScanResponse, TransportError> {
        self.inner.scan(addr, req).await
    }

    async fn get_map(&self, addr: &str) -> Result<pb::PartitionMap, TransportError> {
        self.inner.get_map(addr).await
    }
}

async fn lost_answer_aborts_cleanly(target: Target) -> anyhow::Result<()> {
    let cluster = Cluster::start(1, 1).await?;
    let transport = Arc::new(LosingTransport {
        inner: GrpcTransport::new(GrpcConfig::default()),
        armed: Mutex::new(None),
        lost: Mutex::new(0),
    });
    let plain = cluster.engine(1)?;
    let losing = cluster
        .engine_through(EngineConfig::new(2), transport.clone())
        .await?;
    let t = accounts();
    let mut tx = plain.begin().await?;
    tx.insert(&t, vec![int(1), text("ann"), int(100)]).await?;
    tx.commit().await?;

    let mut tx = losing.begin().await?;
    let tid = tx.tid();
    tx.update(&t, &[int(1)], vec![int(1), text("ann"), int(60)])
        .await?;
    tx.insert(&t, vec![int(2), text("bob"), int(40)]).await?;
    *transport.armed.lock() = Some(target);
    let outcome = tx.commit().await;
    assert_eq!(*transport.lost.lock(), 1, "{target:?}: no answer was lost");
    assert!(
        outcome.is_err(),
        "{target:?}: a commit with a lost answer reported success"
    );

    // The entry is settled as aborted (possibly by the background cleanup).
    let status = wait_for(
        &format!("{target:?}: the log entry of tid {tid} to settle"),
        Duration::from_secs(30),
        || async {
            match log_status(&cluster.store, 2, tid).await {
                Ok(Some(LogStatus::Running)) | Err(_) => None,
                Ok(status) => Some(status),
            }
        },
    )
    .await?;
    assert_eq!(status, Some(LogStatus::Aborted), "{target:?}");

    // Nothing of it is visible, and no version of it is left to block the next writer.
    let mut tx = plain.begin().await?;
    assert_eq!(
        tx.get(&t, &[int(1)]).await?,
        Some(vec![int(1), text("ann"), int(100)]),
        "{target:?}"
    );
    assert_eq!(tx.get(&t, &[int(2)]).await?, None, "{target:?}");
    tx.update(&t, &[int(1)], vec![int(1), text("ann"), int(99)])
        .await?;
    tx.commit().await?;
    // The tid is finished at the manager: lav passes it.
    wait_for(
        &format!("{target:?}: lav to pass tid {tid}"),
        Duration::from_secs(30),
        || async {
            let mut tx = plain.begin().await.ok()?;
            let _ = tx.get(&t, &[int(1)]).await;
            tx.commit().await.ok()?;
            (cluster.lav() > tid).then_some(())
        },
    )
    .await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answer_to_the_log_entry_settles_it_aborted() -> anyhow::Result<()> {
    lost_answer_aborts_cleanly(Target::LogEntry).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answer_to_the_record_writes_undoes_them() -> anyhow::Result<()> {
    lost_answer_aborts_cleanly(Target::Records).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answer_to_the_commit_flag_undoes_the_commit() -> anyhow::Result<()> {
    lost_answer_aborts_cleanly(Target::CommitFlag).await
}
