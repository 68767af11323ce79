//! The `Session` stream: batched starts, commits and aborts of one processing node over one
//! long-lived HTTP/2 stream.
//!
//! Why: at hundreds of thousands of transactions per second the unary `StartBatch` /
//! `FinishBatch` calls cost more in HTTP/2 stream setup, header coding and per-call tasks
//! than the manager spends on the transactions. On a session a batch is one message each
//! way, starts are answered at once and commits as soon as the publish holding them is
//! durable, and a client never has to hold a batch back because too many calls are open.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use shmdb_proto::commit as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Status, Streaming};

use crate::manager::Manager;
use crate::service::{finish_outcome, finish_status, start_status};

/// The answers of one session, as tonic sends them.
pub type SessionStream = UnboundedReceiverStream<Result<pb::SessionResponse, Status>>;

type Answer = Pin<Box<dyn Future<Output = pb::SessionResponse> + Send>>;

/// Serves one session: reads requests until the client closes its side, answers each part
/// when it is ready. Outstanding commits are still answered after the client closed its
/// side (they are registered and will be published either way).
pub fn serve(manager: Arc<Manager>, inbound: Streaming<pb::SessionRequest>) -> SessionStream {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(manager, inbound, tx));
    UnboundedReceiverStream::new(rx)
}

async fn run(
    manager: Arc<Manager>,
    mut inbound: Streaming<pb::SessionRequest>,
    tx: mpsc::UnboundedSender<Result<pb::SessionResponse, Status>>,
) {
    let _open = OpenSession::new(manager.metrics().sessions.clone());
    let mut answers: FuturesUnordered<Answer> = FuturesUnordered::new();
    let mut reading = true;
    let watcher = manager.clone();
    let stopped = async move { watcher.stopped().await };
    tokio::pin!(stopped);
    while reading || !answers.is_empty() {
        tokio::select! {
            () = &mut stopped => {
                let _ = tx.send(Err(Status::unavailable("commit manager stopped")));
                return;
            }
            message = inbound.message(), if reading => match message {
                Ok(Some(request)) => accept(&manager, request, &mut answers),
                Ok(None) => reading = false,
                Err(status) => {
                    tracing::debug!(error = %status, "commit session ended by its client");
                    return;
                }
            },
            Some(answer) = answers.next(), if !answers.is_empty() => {
                if tx.send(Ok(answer)).is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts the parts of one request. The commits and aborts are registered with the core on
/// the answers' first poll, which the loop does before reading the next request.
fn accept(
    manager: &Arc<Manager>,
    request: pb::SessionRequest,
    answers: &mut FuturesUnordered<Answer>,
) {
    let id = request.id;
    if request.start_count > 0 {
        let manager = manager.clone();
        let node = request.processing_node_id;
        let count = request.start_count;
        answers.push(Box::pin(async move {
            let answer = match manager.start_batch(node, count).await {
                Ok(grant) => pb::session_response::Answer::Started(pb::StartBatchResponse {
                    tids: grant.tids,
                    snapshot: grant.snapshot.encoded(),
                    lav: grant.lav,
                    manager_id: manager.id(),
                }),
                Err(e) => pb::session_response::Answer::StartError(error(&start_status(&e))),
            };
            pb::SessionResponse {
                id,
                answer: Some(answer),
            }
        }));
    }
    if !request.commits.is_empty() || !request.aborts.is_empty() {
        let manager = manager.clone();
        answers.push(Box::pin(async move {
            let answer = match manager
                .finish_batch(&request.commits, &request.aborts)
                .await
            {
                Ok((commits, aborts)) => {
                    pb::session_response::Answer::Finished(pb::FinishBatchResponse {
                        commit_outcomes: commits.iter().map(finish_outcome).collect(),
                        abort_outcomes: aborts.iter().map(finish_outcome).collect(),
                    })
                }
                Err(e) => pb::session_response::Answer::FinishError(error(&finish_status(&e))),
            };
            pb::SessionResponse {
                id,
                answer: Some(answer),
            }
        }));
    }
}

/// Counts a session in the open-sessions gauge for as long as it lives.
struct OpenSession(prometheus::IntGauge);

impl OpenSession {
    fn new(gauge: prometheus::IntGauge) -> OpenSession {
        gauge.inc();
        OpenSession(gauge)
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn error(status: &Status) -> pb::SessionError {
    pb::SessionError {
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}
