//! Batching over one `Session` stream per manager: concurrent starts, commits and aborts
//! become one message; answers come back on the same stream as soon as each part is ready.
//!
//! Why a stream: a unary batch costs an HTTP/2 stream, header coding and a handler task on
//! both ends, and a commit batch holds its call open until the publish is durable — so a
//! client that limits open calls (to make batches grow) ends up holding commits back while
//! the manager waits for them. On a session nothing is held back: whatever queued while the
//! previous message was being written goes out as the next message, which is how batches
//! grow with the load here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use shmdb_proto::commit as pb;
use shmdb_proto::commit::commit_manager_client::CommitManagerClient;
use shmdb_snapshot::Snapshot;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use super::batcher::{FinishWaiter, RpcError, StartWaiter, StartedRaw};

/// Messages written ahead of the HTTP/2 stream; while they wait, calls queue and form the
/// next, larger message.
const OUTBOUND_DEPTH: usize = 2;

/// The open stream to a manager.
struct Open {
    outbound: mpsc::Sender<pb::SessionRequest>,
    inbound: Streaming<pb::SessionResponse>,
}

/// One request sent and not fully answered.
#[derive(Default)]
struct Pending {
    starts: Vec<StartWaiter>,
    finishes: Vec<FinishWaiter>,
}

/// Serves start and finish waiters for one manager over a session until every sender is
/// gone and every sent request is answered.
pub(crate) async fn run(
    mut client: CommitManagerClient<Channel>,
    mut starts: mpsc::UnboundedReceiver<StartWaiter>,
    mut finishes: mpsc::UnboundedReceiver<FinishWaiter>,
    node: u64,
    max_batch: u32,
    timeout: Duration,
) {
    let max_batch = max_batch as usize;
    let mut open: Option<Open> = None;
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut deadlines: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut next_id = 0u64;
    let mut queued_starts: Vec<StartWaiter> = Vec::new();
    let mut queued_finishes: Vec<FinishWaiter> = Vec::new();
    let (mut starts_open, mut finishes_open) = (true, true);
    // One timer for all deadlines, checked a few times per timeout: a timer per message
    // (or per loop turn) costs more than the rest of the loop.
    let mut sweep = tokio::time::interval((timeout / 4).max(Duration::from_millis(1)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        gather(&mut starts, &mut queued_starts, max_batch);
        gather(&mut finishes, &mut queued_finishes, max_batch);
        let has_work = !queued_starts.is_empty() || !queued_finishes.is_empty();
        if !has_work && !starts_open && !finishes_open && pending.is_empty() {
            return;
        }
        if has_work && open.is_none() {
            match connect(&mut client, timeout).await {
                Ok(session) => open = Some(session),
                Err(status) => {
                    let err = RpcError::Status(status);
                    fail_starts(queued_starts.drain(..), &err);
                    fail_finishes(queued_finishes.drain(..), &err);
                    continue;
                }
            }
        }
        let is_open = open.is_some();
        let mut broken = false;
        let (outbound, inbound) = match open.as_mut() {
            Some(o) => (Some(&o.outbound), Some(&mut o.inbound)),
            None => (None, None),
        };
        tokio::select! {
            biased;
            message = async { inbound?.message().await.transpose() }, if is_open => {
                match message {
                    Some(Ok(response)) => answer(&mut pending, response),
                    Some(Err(status)) => {
                        tracing::debug!(error = %status, "commit session failed");
                        fail_all(&mut pending, &RpcError::Status(status));
                        broken = true;
                    }
                    None => {
                        fail_all(
                            &mut pending,
                            &RpcError::Status(tonic::Status::unavailable("commit session closed")),
                        );
                        broken = true;
                    }
                }
            }
            permit = async { outbound?.reserve().await.ok() }, if has_work && is_open => {
                match permit {
                    Some(permit) => {
                        next_id += 1;
                        let request = take(&mut queued_starts, &mut queued_finishes, max_batch);
                        permit.send(request.message(next_id, node));
                        pending.insert(next_id, request);
                        deadlines.push_back((Instant::now() + timeout, next_id));
                    }
                    None => {
                        fail_all(
                            &mut pending,
                            &RpcError::Status(tonic::Status::unavailable("commit session closed")),
                        );
                        broken = true;
                    }
                }
            }
            waiter = starts.recv(), if starts_open => match waiter {
                Some(waiter) => queued_starts.push(waiter),
                None => starts_open = false,
            },
            waiter = finishes.recv(), if finishes_open => match waiter {
                Some(waiter) => queued_finishes.push(waiter),
                None => finishes_open = false,
            },
            now = sweep.tick(), if !deadlines.is_empty() => expire(&mut pending, &mut deadlines, now, timeout),
        }
        if broken {
            open = None;
        }
    }
}

/// Takes up to `max_batch` queued starts and finishes into one request.
fn take(
    starts: &mut Vec<StartWaiter>,
    finishes: &mut Vec<FinishWaiter>,
    max_batch: usize,
) -> Pending {
    let start_count = starts.len().min(max_batch);
    let finish_count = finishes.len().min(max_batch);
    Pending {
        starts: starts.drain(..start_count).collect(),
        finishes: finishes.drain(..finish_count).collect(),
    }
}

/// Fails the requests whose deadline passed (their waiters see DEADLINE_EXCEEDED; a late
/// answer is then dropped) and forgets the deadlines of requests already answered.
fn expire(
    pending: &mut HashMap<u64, Pending>,
    deadlines: &mut VecDeque<(Instant, u64)>,
    now: Instant,
    timeout: Duration,
) {
    while let Some(&(deadline, id)) = deadlines.front() {
        if !pending.contains_key(&id) {
            deadlines.pop_front();
        } else if deadline <= now {
            deadlines.pop_front();
            if let Some(request) = pending.remove(&id) {
                request.fail(&RpcError::Status(tonic::Status::deadline_exceeded(
                    format!("no answer within {timeout:?}"),
                )));
            }
        } else {
            break;
        }
    }
}

/// Opens a session (the connection is opened too if needed).
async fn connect(
    client: &mut CommitManagerClient<Channel>,
    timeout: Duration,
) -> Result<Open, tonic::Status> {
    let (outbound, rx) = mpsc::channel(OUTBOUND_DEPTH);
    let call = client.session(ReceiverStream::new(rx));
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(Open {
            outbound,
            inbound: response.into_inner(),
        }),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "opening a commit session took longer than {timeout:?}"
        ))),
    }
}

/// Moves every waiter already queued in `rx` to `queue`, up to `max` in the queue.
fn gather<T>(rx: &mut mpsc::UnboundedReceiver<T>, queue: &mut Vec<T>, max: usize) {
    while queue.len() < max {
        match rx.try_recv() {
            Ok(item) => queue.push(item),
            Err(_) => break,
        }
    }
}

/// Hands one answer to the waiters of its request.
fn answer(pending: &mut HashMap<u64, Pending>, response: pb::SessionResponse) {
    use pb::session_response::Answer;
    // An answer to a request that timed out (its waiters were already failed) is dropped.
    let Some(request) = pending.get_mut(&response.id) else {
        return;
    };
    match response.answer {
        Some(Answer::Started(started)) => {
            let waiters = std::mem::take(&mut request.starts);
            deliver_starts(waiters, started);
        }
        Some(Answer::StartError(error)) => {
            fail_starts(request.starts.drain(..), &RpcError::Status(status(error)));
        }
        Some(Answer::Finished(finished)) => {
            let waiters = std::mem::take(&mut request.finishes);
            deliver_finishes(waiters, finished);
        }
        Some(Answer::FinishError(error)) => {
            fail_finishes(request.finishes.drain(..), &RpcError::Status(status(error)));
        }
        None => {
            let err = RpcError::Protocol(format!("empty answer to request {}", response.id));
            fail_starts(request.starts.drain(..), &err);
            fail_finishes(request.finishes.drain(..), &err);
        }
    }
    if request.starts.is_empty() && request.finishes.is_empty() {
        pending.remove(&response.id);
    }
}

fn status(error: pb::SessionError) -> tonic::Status {
    tonic::Status::new(tonic::Code::from(error.code), error.message)
}

fn deliver_starts(waiters: Vec<StartWaiter>, started: pb::StartBatchResponse) {
    if started.tids.len() != waiters.len() {
        let err = RpcError::Protocol(format!(
            "asked for {} tids, got {}",
            waiters.len(),
            started.tids.len()
        ));
        return fail_starts(waiters.into_iter(), &err);
    }
    let snapshot = match Snapshot::decode(&started.snapshot) {
        Ok(snapshot) => Arc::new(snapshot),
        Err(e) => {
            let err = RpcError::Protocol(format!("bad snapshot: {e}"));
            return fail_starts(waiters.into_iter(), &err);
        }
    };
    for (waiter, tid) in waiters.into_iter().zip(started.tids) {
        let _ = waiter.reply.send(Ok(StartedRaw {
            tid,
            snapshot: snapshot.clone(),
            lav: started.lav,
            manager_id: started.manager_id,
        }));
    }
}

fn deliver_finishes(waiters: Vec<FinishWaiter>, finished: pb::FinishBatchResponse) {
    let commits = waiters.iter().filter(|w| w.commit).count();
    let aborts = waiters.len() - commits;
    if finished.commit_outcomes.len() != commits || finished.abort_outcomes.len() != aborts {
        let err = RpcError::Protocol(format!(
            "{} commit and {} abort outcomes for {commits} commits and {aborts} aborts",
            finished.commit_outcomes.len(),
            finished.abort_outcomes.len(),
        ));
        return fail_finishes(waiters.into_iter(), &err);
    }
    let mut commit_outcomes = finished.commit_outcomes.into_iter();
    let mut abort_outcomes = finished.abort_outcomes.into_iter();
    for waiter in waiters {
        let outcome = if waiter.commit {
            commit_outcomes.next()
        } else {
            abort_outcomes.next()
        };
        let _ = waiter
            .reply
            .send(outcome.ok_or_else(|| RpcError::Protocol("missing finish outcome".into())));
    }
}

impl Pending {
    /// The request message for these waiters.
    fn message(&self, id: u64, node: u64) -> pb::SessionRequest {
        pb::SessionRequest {
            id,
            processing_node_id: node,
            start_count: self.starts.len() as u32,
            commits: self
                .finishes
                .iter()
                .filter(|w| w.commit)
                .map(|w| w.tid)
                .collect(),
            aborts: self
                .finishes
                .iter()
                .filter(|w| !w.commit)
                .map(|w| w.tid)
                .collect(),
        }
    }

    fn fail(self, err: &RpcError) {
        fail_starts(self.starts.into_iter(), err);
        fail_finishes(self.finishes.into_iter(), err);
    }
}

fn fail_all(pending: &mut HashMap<u64, Pending>, err: &RpcError) {
    for (_, request) in pending.drain() {
        request.fail(err);
    }
}

fn fail_starts(waiters: impl Iterator<Item = StartWaiter>, err: &RpcError) {
    for waiter in waiters {
        let _ = waiter.reply.send(Err(err.clone()));
    }
}

fn fail_finishes(waiters: impl Iterator<Item = FinishWaiter>, err: &RpcError) {
    for waiter in waiters {
        let _ = waiter.reply.send(Err(err.clone()));
    }
}
