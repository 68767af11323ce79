//! [`CommitClient`]: how a processing node talks to the commit managers — batching
//! concurrent calls into few RPCs, failing over between managers, and heartbeating its
//! running transactions.
//!
//! Every processing node knows every manager. Starts go to the node's current manager and
//! move to the next one when it is unreachable; a commit or abort goes to the manager that
//! issued the tid (only it knows the transaction) and is retried there until the call's
//! deadline — a transaction of a manager that died is finished when that manager is back
//! (restarted under the same id), or times out and is recovered by it.

mod batcher;
mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use shmdb_proto::commit as pb;
use shmdb_proto::commit::commit_manager_client::CommitManagerClient;
use shmdb_snapshot::Snapshot;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::refusal::Refusal;
use batcher::{FinishWaiter, RpcError, StartWaiter};

/// How a [`CommitClient`] finds the managers and how hard it tries.
#[derive(Debug, Clone)]
pub struct CommitClientConfig {
    /// Every commit manager's address (`host:port`).
    pub managers: Vec<String>,
    /// This processing node's id (recovery finds its log by it).
    pub processing_node_id: u64,
    /// Index into `managers` of the manager tried first (spreads nodes over managers).
    pub preferred: usize,
    /// Bound on one RPC.
    pub request_timeout: Duration,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
    /// Bound on a whole call, failovers and retries included.
    pub deadline: Duration,
    /// Most calls coalesced into one batched RPC.
    pub max_batch: u32,
    /// Batched RPCs of one kind in flight per manager; calls arriving meanwhile queue up and
    /// form the next batch.
    pub max_in_flight: usize,
    /// Send batches over one `Session` stream per manager (the default) rather than as
    /// unary `StartBatch` / `FinishBatch` calls limited by `max_in_flight` (kept for
    /// comparison and for managers that predate sessions).
    pub sessions: bool,
    /// How often running tids are listed to their managers; `None` sends no heartbeats (the
    /// manager then recovers and aborts them after its timeout).
    pub heartbeat_interval: Option<Duration>,
}

impl CommitClientConfig {
    /// Defaults for a node with this id talking to these managers.
    pub fn new<S: Into<String>>(
        managers: impl IntoIterator<Item = S>,
        processing_node_id: u64,
    ) -> CommitClientConfig {
        CommitClientConfig {
            managers: managers.into_iter().map(Into::into).collect(),
            processing_node_id,
            preferred: 0,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            deadline: Duration::from_secs(10),
            max_batch: 1024,
            max_in_flight: 2,
            sessions: true,
            heartbeat_interval: Some(Duration::from_millis(500)),
        }
    }
}

/// A transaction as begun by [`CommitClient::start`].
#[derive(Debug, Clone)]
pub struct Started {
    /// Its tid (also the version number of everything it writes).
    pub tid: u64,
    /// Its snapshot descriptor, shared with the other starts of the same batch.
    pub snapshot: Arc<Snapshot>,
    /// The lowest active version when it started.
    pub lav: u64,
    /// The manager that issued it.
    pub manager_id: u64,
    /// Index into the configured manager list of that manager.
    pub manager_index: usize,
}

/// Why a call of a [`CommitClient`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// No manager answered a start within the deadline.
    #[error("no commit manager answered within {deadline:?}; last error: {last}")]
    Unavailable {
        /// The call's deadline.
        deadline: Duration,
        /// The last failure seen.
        last: String,
    },
    /// A commit may or may not have happened: its manager stopped answering after the
    /// request may have reached it. Retrying the commit later resolves it.
    #[error("outcome of the commit of tid {tid} is unknown: {reason}")]
    Ambiguous {
        /// The tid.
        tid: u64,
        /// What happened.
        reason: String,
    },
    /// The manager refused the commit or abort; nothing changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The window of outstanding tids is full (an old transaction holds the base).
    #[error("{0}")]
    WindowFull(String),
    /// The manager rejected the request for another reason.
    #[error("commit manager rejected the request ({code:?}): {message}")]
    Rejected {
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The manager answered something the contract does not allow.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

/// One manager as the client sees it.
struct ManagerHandle {
    addr: String,
    client: CommitManagerClient<Channel>,
    starts: mpsc::UnboundedSender<StartWaiter>,
    finishes: mpsc::UnboundedSender<FinishWaiter>,
}

struct Inner {
    cfg: CommitClientConfig,
    managers: Vec<ManagerHandle>,
    current: AtomicUsize,
    /// Started and not yet finished: tid → index of the issuing manager.
    running: Mutex<HashMap<u64, usize>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

/// The processing node's handle on the commit managers. Cheap to clone; clones share the
/// batches, the failover state and the running-tid list that heartbeats report.
#[derive(Clone)]
pub struct CommitClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CommitClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitClient")
            .field("managers", &self.inner.cfg.managers)
            .field("current", &self.inner.current.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Whether a failed RPC means the manager is unreachable (try another / retry) rather than a
/// definite answer.
fn is_unreachable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Aborted
            | tonic::Code::Internal
    )
}

impl CommitClient {
    /// A client for the configured managers. Connections are opened lazily, so this
    /// succeeds while managers are still starting; it must be called inside a Tokio runtime
    /// (it spawns the batching and heartbeat tasks).
    pub fn new(cfg: CommitClientConfig) -> Result<CommitClient, CommitError> {
        if cfg.managers.is_empty() {
            return Err(CommitError::Config("no commit manager addresses".into()));
        }
        if cfg.max_batch == 0 || cfg.max_in_flight == 0 {
            return Err(CommitError::Config(
                "max_batch and max_in_flight must be positive".into(),
            ));
        }
        let mut managers = Vec::with_capacity(cfg.managers.len());
        let mut tasks = Vec::new();
        for addr in &cfg.managers {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| CommitError::Config(format!("manager address {addr}: {e}")))?
                .connect_timeout(cfg.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10));
            let client = CommitManagerClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let (starts, start_rx) = mpsc::unbounded_channel();
            let (finishes, finish_rx) = mpsc::unbounded_channel();
            if cfg.sessions {
                tasks.push(tokio::spawn(session::run(
                    client.clone(),
                    start_rx,
                    finish_rx,
                    cfg.processing_node_id,
                    cfg.max_batch,
                    cfg.request_timeout,
                )));
            } else {
                tasks.push(tokio::spawn(batcher::run_starts(
                    client.clone(),
                    start_rx,
                    cfg.processing_node_id,
                    cfg.max_batch,
                    cfg.max_in_flight,
                    cfg.request_timeout,
                )));
                tasks.push(tokio::spawn(batcher::run_finishes(
                    client.clone(),
                    finish_rx,
                    cfg.max_batch,
                    cfg.max_in_flight,
                    cfg.request_timeout,
                )));
            }
            managers.push(ManagerHandle {
                addr: addr.clone(),
                client,
                starts,
                finishes,
            });
        }
        let current = AtomicUsize::new(cfg.preferred % managers.len());
        let heartbeat = cfg.heartbeat_interval;
        let inner = Arc::new(Inner {
            cfg,
            managers,
            current,
            running: Mutex::new(HashMap::new()),
            tasks: Mutex::new(tasks),
        });
        if let Some(interval) = heartbeat {
            let weak = Arc::downgrade(&inner);
            let task = tokio::spawn(heartbeats(weak, interval));
            inner.tasks.lock().push(task);
        }
        Ok(CommitClient { inner })
    }

    /// The index of the manager starts currently go to.
    pub fn current_manager(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed)
    }

    /// The tids started through this client and not finished yet.
    pub fn running(&self) -> Vec<u64> {
        let mut tids: Vec<u64> = self.inner.running.lock().keys().copied().collect();
        tids.sort_unstable();
        tids
    }

    /// Begins a transaction at the current manager, failing over to the next one while
    /// managers are unreachable, until the deadline. Concurrent calls share RPCs.
    pub async fn start(&self) -> Result<Started, CommitError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.cfg.deadline;
        let count = inner.managers.len();
        let mut failures = 0usize;
        let mut backoff = Duration::from_millis(5);
        loop {
            let index = inner.current.load(Ordering::Relaxed);
            let (reply, answer) = oneshot::channel();
            let sent = inner.managers[index].starts.send(StartWaiter { reply });
            let result = match sent {
                Ok(()) => answer.await.unwrap_or_else(|_| {
                    Err(RpcError::Status(tonic::Status::cancelled(
                        "batcher stopped",
                    )))
                }),
                Err(_) => Err(RpcError::Status(tonic::Status::cancelled(
                    "batcher stopped",
                ))),
            };
            let last = match result {
                Ok(started) => {
                    inner.running.lock().insert(started.tid, index);
                    return Ok(Started {
                        tid: started.tid,
                        snapshot: started.snapshot,
                        lav: started.lav,
                        manager_id: started.manager_id,
                        manager_index: index,
                    });
                }
                Err(RpcError::Protocol(message)) => return Err(CommitError::Protocol(message)),
                Err(RpcError::Status(status)) if is_unreachable(status.code()) => {
                    format!("{}: {}", inner.managers[index].addr, status.message())
                }
                Err(RpcError::Status(status)) => {
                    return Err(match status.code() {
                        tonic::Code::ResourceExhausted => {
                            CommitError::WindowFull(status.message().to_owned())
                        }
                        code => CommitError::Rejected {
                            code,
                            message: status.message().to_owned(),
                        },
                    });
                }
            };
            tracing::debug!(manager = index, error = %last, "commit manager unreachable; failing over");
            let _ = inner.current.compare_exchange(
                index,
                (index + 1) % count,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            failures += 1;
            if Instant::now() >= deadline {
                return Err(CommitError::Unavailable {
                    deadline: inner.cfg.deadline,
                    last,
                });
            }
            if failures.is_multiple_of(count) {
                // Every manager failed once: wait before the next round.
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    }

    /// Commits `tid` at the manager that issued it; returns once the commit is durable.
    /// While that manager is unreachable the commit is retried until the deadline, then
    /// reported [`CommitError::Ambiguous`] (it may have been applied before the answer was
    /// lost) and no longer heartbeated, so the manager resolves it by recovery from the
    /// log. A retry that finds the tid already committed counts as success.
    pub async fn commit(&self, tid: u64) -> Result<(), CommitError> {
        self.finish(tid, true).await
    }

    /// Aborts `tid` at the manager that issued it. The caller must already have undone the
    /// transaction's writes (the abort invariant). While the manager is unreachable the abort
    /// is retried until the deadline; if it never gets through, the manager recovers and
    /// aborts the tid itself after the heartbeat timeout.
    pub async fn abort(&self, tid: u64) -> Result<(), CommitError> {
        self.finish(tid, false).await
    }

    async fn finish(&self, tid: u64, commit: bool) -> Result<(), CommitError> {
        let inner = &self.inner;
        let index = inner
            .running
            .lock()
            .get(&tid)
            .copied()
            .unwrap_or_else(|| inner.current.load(Ordering::Relaxed));
        let deadline = Instant::now() + inner.cfg.deadline;
        let mut backoff = Duration::from_millis(5);
        let mut retried = false;
        loop {
            let (reply, answer) = oneshot::channel();
            let sent = inner.managers[index]
                .finishes
                .send(FinishWaiter { tid, commit, reply });
            let result = match sent {
                Ok(()) => answer.await.unwrap_or_else(|_| {
                    Err(RpcError::Status(tonic::Status::cancelled(
                        "batcher stopped",
                    )))
                }),
                Err(_) => Err(RpcError::Status(tonic::Status::cancelled(
                    "batcher stopped",
                ))),
            };
            let reason = match result {
                Ok(outcome) => {
                    let refusal = match pb::FinishOutcome::try_from(outcome) {
                        Ok(pb::FinishOutcome::Ok) => None,
                        Ok(pb::FinishOutcome::AlreadyCommitted) if commit && retried => None,
                        Ok(pb::FinishOutcome::AlreadyAborted) if !commit && retried => None,
                        Ok(pb::FinishOutcome::AlreadyCommitted) => {
                            Some(Refusal::AlreadyCommitted(tid))
                        }
                        Ok(pb::FinishOutcome::AlreadyAborted) => Some(Refusal::AlreadyAborted(tid)),
                        // A retried abort that finds the tid finished: it was never
                        // committed (we never asked), so it aborted.
                        Ok(pb::FinishOutcome::Finished) if !commit && retried => None,
                        // A retried commit that finds the tid finished long ago: the first
                        // attempt may or may not have committed it.
                        Ok(pb::FinishOutcome::Finished) if commit && retried => {
                            inner.running.lock().remove(&tid);
                            return Err(CommitError::Ambiguous {
                                tid,
                                reason: "the manager no longer keeps the outcome of this tid"
                                    .into(),
                            });
                        }
                        Ok(pb::FinishOutcome::Finished) => Some(Refusal::Finished(tid)),
                        Ok(pb::FinishOutcome::UnknownTid) => Some(Refusal::UnknownTid(tid)),
                        Ok(pb::FinishOutcome::Recovering) => Some(Refusal::Recovering(tid)),
                        Ok(pb::FinishOutcome::Duplicate) => Some(Refusal::Duplicate(tid)),
                        Ok(pb::FinishOutcome::Unspecified) | Err(_) => {
                            return Err(CommitError::Protocol(format!(
                                "unknown finish outcome {outcome} for tid {tid}"
                            )));
                        }
                    };
                    if !matches!(
                        refusal,
                        Some(Refusal::Recovering(_) | Refusal::Duplicate(_))
                    ) {
                        inner.running.lock().remove(&tid);
                    }
                    return match refusal {
                        None => Ok(()),
                        Some(refusal) => Err(CommitError::Refused(refusal)),
                    };
                }
                Err(RpcError::Protocol(message)) => return Err(CommitError::Protocol(message)),
                Err(RpcError::Status(status)) if is_unreachable(status.code()) => {
                    format!("{}: {}", inner.managers[index].addr, status.message())
                }
                Err(RpcError::Status(status)) => {
                    return Err(CommitError::Rejected {
                        code: status.code(),
                        message: status.message().to_owned(),
                    });
                }
            };
            retried = true;
            if Instant::now() >= deadline {
                // Stop heartbeating the tid: once the manager is back it recovers the tid
                // from this node's log after the heartbeat timeout — committed if the log
                // holds the commit flag, aborted otherwise — instead of keeping it running
                // (and the base below it) for as long as this node lives.
                inner.running.lock().remove(&tid);
                return Err(if commit {
                    CommitError::Ambiguous { tid, reason }
                } else {
                    CommitError::Unavailable {
                        deadline: inner.cfg.deadline,
                        last: reason,
                    }
                });
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Sends one heartbeat to every manager that issued a running tid of this client now
    /// (the background task does this every interval).
    pub async fn heartbeat_now(&self) {
        send_heartbeats(&self.inner).await;
    }

    /// A manager's status (for tools and tests).
    pub async fn status(&self, manager_index: usize) -> Result<pb::StatusResponse, CommitError> {
        let handle = self
            .inner
            .managers
            .get(manager_index)
            .ok_or_else(|| CommitError::Config(format!("no manager #{manager_index}")))?;
        let mut client = handle.client.clone();
        tokio::time::timeout(
            self.inner.cfg.request_timeout,
            client.status(pb::StatusRequest {}),
        )
        .await
        .map_err(|_| CommitError::Unavailable {
            deadline: self.inner.cfg.request_timeout,
            last: format!("{}: status timed out", handle.addr),
        })?
        .map(|r| r.into_inner())
        .map_err(|s| CommitError::Rejected {
            code: s.code(),
            message: s.message().to_owned(),
        })
    }
}

/// Lists each manager's running tids of this node to it, every interval, until the client
/// is dropped.
async fn heartbeats(inner: Weak<Inner>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        send_heartbeats(&inner).await;
    }
}

async fn send_heartbeats(inner: &Inner) {
    let mut by_manager: HashMap<usize, Vec<u64>> = HashMap::new();
    for (&tid, &index) in inner.running.lock().iter() {
        by_manager.entry(index).or_default().push(tid);
    }
    let sends = by_manager.into_iter().map(|(index, running)| {
        let mut client = inner.managers[index].client.clone();
        let request = pb::HeartbeatRequest {
            processing_node_id: inner.cfg.processing_node_id,
            running,
        };
        let timeout = inner.cfg.request_timeout;
        async move {
            match tokio::time::timeout(timeout, client.heartbeat(request)).await {
                Ok(Ok(response)) => {
                    let gone = response.into_inner().not_running;
                    if !gone.is_empty() {
                        tracing::debug!(manager = index, tids = ?gone, "manager no longer runs these tids");
                    }
                }
                Ok(Err(status)) => {
                    tracing::debug!(manager = index, error = %status, "heartbeat failed");
                }
                Err(_) => tracing::debug!(manager = index, "heartbeat timed out"),
            }
        }
    });
    futures::future::join_all(sends).await;
}
