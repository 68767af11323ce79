//! Request batching: concurrent starts (and commits/aborts) to one manager become one
//! `StartBatch` (`FinishBatch`) RPC.
//!
//! A batcher keeps at most `max_in_flight` RPCs outstanding; calls that arrive while all are
//! in flight wait in the queue and form the next batch. Under light load every call goes out
//! at once (no added latency); under heavy load batches grow with the load, which is what
//! lets one manager serve hundreds of thousands of transactions per second.

use std::sync::Arc;
use std::time::Duration;

use shmdb_proto::commit as pb;
use shmdb_proto::commit::commit_manager_client::CommitManagerClient;
use shmdb_snapshot::Snapshot;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::transport::Channel;

/// Why a batched call failed.
#[derive(Debug, Clone)]
pub(crate) enum RpcError {
    /// The RPC failed or was refused as a whole.
    Status(tonic::Status),
    /// The answer broke the contract.
    Protocol(String),
}

/// One start, as handed to its caller.
#[derive(Debug, Clone)]
pub(crate) struct StartedRaw {
    pub(crate) tid: u64,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) lav: u64,
    pub(crate) manager_id: u64,
}

/// A caller waiting for a tid.
pub(crate) struct StartWaiter {
    pub(crate) reply: oneshot::Sender<Result<StartedRaw, RpcError>>,
}

/// A caller waiting for the outcome of a commit or abort.
pub(crate) struct FinishWaiter {
    pub(crate) tid: u64,
    pub(crate) commit: bool,
    /// The `FinishOutcome` value.
    pub(crate) reply: oneshot::Sender<Result<i32, RpcError>>,
}

/// Takes the first waiting item and everything queued behind it, up to `max`.
async fn next_batch<T>(rx: &mut mpsc::UnboundedReceiver<T>, max: usize) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn with_timeout<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {timeout:?}"
        ))),
    }
}

/// Serves start waiters with `StartBatch` RPCs until every sender is gone.
pub(crate) async fn run_starts(
    client: CommitManagerClient<Channel>,
    mut rx: mpsc::UnboundedReceiver<StartWaiter>,
    node: u64,
    max_batch: u32,
    max_in_flight: usize,
    timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(batch) = next_batch(&mut rx, max_batch as usize).await else {
            return;
        };
        let mut client = client.clone();
        tokio::spawn(async move {
            let request = pb::StartBatchRequest {
                processing_node_id: node,
                count: batch.len() as u32,
            };
            let answer = with_timeout(timeout, client.start_batch(request)).await;
            drop(slot);
            let result = match answer {
                Ok(response) if response.tids.len() == batch.len() => {
                    match Snapshot::decode(&response.snapshot) {
                        Ok(snapshot) => Ok((response, Arc::new(snapshot))),
                        Err(e) => Err(RpcError::Protocol(format!("bad snapshot: {e}"))),
                    }
                }
                Ok(response) => Err(RpcError::Protocol(format!(
                    "asked for {} tids, got {}",
                    batch.len(),
                    response.tids.len()
                ))),
                Err(status) => Err(RpcError::Status(status)),
            };
            match result {
                Ok((response, snapshot)) => {
                    for (waiter, tid) in batch.into_iter().zip(response.tids) {
                        let _ = waiter.reply.send(Ok(StartedRaw {
                            tid,
                            snapshot: snapshot.clone(),
                            lav: response.lav,
                            manager_id: response.manager_id,
                        }));
                    }
                }
                Err(err) => {
                    for waiter in batch {
                        let _ = waiter.reply.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}

/// Serves commit and abort waiters with `FinishBatch` RPCs until every sender is gone.
pub(crate) async fn run_finishes(
    client: CommitManagerClient<Channel>,
    mut rx: mpsc::UnboundedReceiver<FinishWaiter>,
    max_batch: u32,
    max_in_flight: usize,
    timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(batch) = next_batch(&mut rx, max_batch as usize).await else {
            return;
        };
        let mut client = client.clone();
        tokio::spawn(async move {
            let (commits, aborts): (Vec<&FinishWaiter>, Vec<&FinishWaiter>) =
                batch.iter().partition(|w| w.commit);
            let request = pb::FinishBatchRequest {
                commits: commits.iter().map(|w| w.tid).collect(),
                aborts: aborts.iter().map(|w| w.tid).collect(),
            };
            let answer = with_timeout(timeout, client.finish_batch(request)).await;
            drop(slot);
            match answer {
                Ok(response)
                    if response.commit_outcomes.len() == commits.len()
                        && response.abort_outcomes.len() == aborts.len() =>
                {
                    let mut commit_outcomes = response.commit_outcomes.into_iter();
                    let mut abort_outcomes = response.abort_outcomes.into_iter();
                    for waiter in batch {
                        let outcome = if waiter.commit {
                            commit_outcomes.next()
                        } else {
                            abort_outcomes.next()
                        };
                        let _ =
                            waiter.reply.send(outcome.ok_or_else(|| {
                                RpcError::Protocol("missing finish outcome".into())
                            }));
                    }
                }
                Ok(response) => {
                    let err = RpcError::Protocol(format!(
                        "{} commit and {} abort outcomes for {} commits and {} aborts",
                        response.commit_outcomes.len(),
                        response.abort_outcomes.len(),
                        commits.len(),
                        aborts.len()
                    ));
                    for waiter in batch {
                        let _ = waiter.reply.send(Err(err.clone()));
                    }
                }
                Err(status) => {
                    let err = RpcError::Status(status);
                    for waiter in batch {
                        let _ = waiter.reply.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}
