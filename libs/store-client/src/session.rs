//! Batches and scans to a storage node multiplexed over long-lived `Stream` RPCs: a fixed
//! number of sessions per node, each one HTTP/2 stream on the node's cached connection.
//!
//! Why: as unary calls every request pays for an HTTP/2 stream, header coding and a handler
//! task on both ends, which cost more CPU than the storage node spends on the operations.
//! On a session a request is one message each way: the caller registers a reply slot under
//! a fresh id, writes the message, and a reader task per session hands each answer to the
//! slot with its id. Failure rules follow the unary path exactly: an answer that does not
//! come within the request timeout is `Timeout` (the slot is dropped, the session lives on);
//! a session that breaks fails every request in flight on it as `Lost`, and the next request
//! opens a fresh one; a node that does not know the method (older than this client) is
//! served with unary calls for as long as its connection lasts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::channel::mpsc;
use prost::Message as _;
use shmdb_proto::storage as pb;
use shmdb_proto::storage::storage_client::StorageClient;
use shmdb_proto::storage::stream_request::Body as RequestBody;
use shmdb_proto::storage::stream_response::Body as ResponseBody;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::grpc::{classify, error_chain};
use crate::transport::TransportError;

type Reply = Result<Option<ResponseBody>, TransportError>;

/// What a request is answered by: a session, or unary calls (the node has no `Stream`).
pub(crate) enum Route {
    /// Send it on this session.
    Stream(Arc<Session>),
    /// Use the unary call.
    Unary,
}

/// The sessions of one node.
struct NodeSessions {
    /// `sessions_per_node` slots, used round-robin; an empty or broken slot is (re)opened by
    /// the next request that picks it.
    slots: Vec<Option<Arc<Session>>>,
    /// The connection generation on which the node answered `UNIMPLEMENTED`: unary calls
    /// until that connection is replaced (a restarted node may have been upgraded).
    unary_on: Option<u64>,
    /// Serialises opening sessions to this node, so a burst of first requests opens one
    /// session per slot, not one per request.
    opening: Arc<tokio::sync::Mutex<()>>,
}

/// Every session of one transport, by node address.
pub(crate) struct Sessions {
    per_node: usize,
    nodes: parking_lot::Mutex<HashMap<String, NodeSessions>>,
    next_slot: AtomicUsize,
    opened: AtomicU64,
}

impl Sessions {
    /// No sessions yet; each node gets `per_node` (at least one) as requests need them.
    pub(crate) fn new(per_node: usize) -> Sessions {
        Sessions {
            per_node: per_node.max(1),
            nodes: parking_lot::Mutex::new(HashMap::new()),
            next_slot: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
        }
    }

    /// Sessions opened so far, broken ones included (for tests: proof that requests went
    /// over streams).
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Open sessions that have not broken (for tests and status output).
    pub(crate) fn open_sessions(&self) -> usize {
        self.nodes
            .lock()
            .values()
            .flat_map(|n| n.slots.iter().flatten())
            .filter(|s| s.is_alive())
            .count()
    }

    /// The session to send the next request to `addr` on, opened with `client` (whose
    /// connection is `generation`) if the slot has none that works; `Unary` if the node has
    /// no `Stream` method.
    pub(crate) async fn route(
        &self,
        addr: &str,
        mut client: StorageClient<Channel>,
        generation: u64,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Route, OpenError> {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.per_node;
        let opening = match self.usable(addr, slot, generation)? {
            Ok(route) => return Ok(route),
            Err(opening) => opening,
        };
        let Ok(_guard) = tokio::time::timeout_at(deadline, opening.lock()).await else {
            return Err(OpenError::Failed(TransportError::Unreachable(format!(
                "{addr}: no stream could be opened within {timeout:?}"
            ))));
        };
        // Someone else may have opened the slot while we waited.
        if let Ok(route) = self.usable(addr, slot, generation)? {
            return Ok(route);
        }
        let (outbound, rx) = mpsc::unbounded();
        let inbound = match tokio::time::timeout_at(deadline, client.stream(rx)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(
                    addr,
                    "storage node has no Stream method; using unary calls to it"
                );
                if let Some(node) = self.nodes.lock().get_mut(addr) {
                    node.unary_on = Some(generation);
                }
                return Ok(Route::Unary);
            }
            // Nothing was sent yet: whatever went wrong, the request was not applied.
            Ok(Err(status)) => {
                return Err(OpenError::Broken(TransportError::Unreachable(format!(
                    "{}: opening a stream failed",
                    classify(addr, &status)
                ))));
            }
            Err(_) => {
                return Err(OpenError::Failed(TransportError::Unreachable(format!(
                    "{addr}: no stream could be opened within {timeout:?}"
                ))));
            }
        };
        let session = Arc::new(Session {
            generation,
            outbound,
            state: Arc::new(parking_lot::Mutex::new(State::default())),
            alive: Arc::new(AtomicBool::new(true)),
        });
        tokio::spawn(read(
            addr.to_owned(),
            inbound,
            session.state.clone(),
            session.alive.clone(),
        ));
        self.opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(addr, slot, "opened storage stream");
        if let Some(node) = self.nodes.lock().get_mut(addr)
            && let Some(entry) = node.slots.get_mut(slot)
        {
            *entry = Some(session.clone());
        }
        Ok(Route::Stream(session))
    }

    /// The route if the slot has a working session (or the node is unary-only); otherwise
    /// the lock to take before opening one. A broken session on the current connection
    /// yields `OpenError::Broken` once, so the caller drops the connection first.
    #[allow(clippy::type_complexity)]
    fn usable(
        &self,
        addr: &str,
        slot: usize,
        generation: u64,
    ) -> Result<Result<Route, Arc<tokio::sync::Mutex<()>>>, OpenError> {
        let mut nodes = self.nodes.lock();
        let node = nodes
            .entry(addr.to_owned())
            .or_insert_with(|| NodeSessions {
                slots: vec![None; self.per_node],
                unary_on: None,
                opening: Arc::default(),
            });
        if node.unary_on == Some(generation) {
            return Ok(Ok(Route::Unary));
        }
        if let Some(Some(session)) = node.slots.get(slot) {
            if session.generation == generation {
                if session.is_alive() {
                    return Ok(Ok(Route::Stream(session.clone())));
                }
                // Broken on this very connection: drop both and reconnect.
                let broken = session.failure();
                if let Some(entry) = node.slots.get_mut(slot) {
                    *entry = None;
                }
                return Err(OpenError::Broken(broken));
            }
            if let Some(entry) = node.slots.get_mut(slot) {
                *entry = None;
            }
        }
        Ok(Err(node.opening.clone()))
    }
}

/// Why no session could be had.
pub(crate) enum OpenError {
    /// The connection looks broken: drop it, then retry once on a fresh one.
    Broken(TransportError),
    /// Give up with this error.
    Failed(TransportError),
}

/// Requests sent on a session and not answered yet.
#[derive(Default)]
struct State {
    next_id: u64,
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once when the session breaks; every later request is refused with it.
    failed: Option<TransportError>,
}

/// One open `Stream` RPC to a node.
pub(crate) struct Session {
    /// The connection generation it runs on.
    generation: u64,
    outbound: mpsc::UnboundedSender<pb::StreamRequest>,
    state: Arc<parking_lot::Mutex<State>>,
    alive: Arc<AtomicBool>,
}

/// The outcome of one request on a session.
pub(crate) enum Sent {
    /// The answer, or why there is none.
    Done(Result<ResponseBody, TransportError>),
    /// The session had already broken: nothing was sent, another session may take it.
    NotSent(RequestBody),
}

impl Session {
    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn failure(&self) -> TransportError {
        self.state
            .lock()
            .failed
            .clone()
            .unwrap_or_else(|| TransportError::Lost("storage stream broke".into()))
    }

    /// Sends one request and waits for its answer until `deadline`.
    pub(crate) async fn call(
        &self,
        addr: &str,
        body: RequestBody,
        max_message: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Sent {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut state = self.state.lock();
            if state.failed.is_some() {
                return Sent::NotSent(body);
            }
            state.next_id += 1;
            let id = state.next_id;
            state.pending.insert(id, tx);
            id
        };
        // Removes the reply slot however this call ends (answer, timeout, caller gone), so a
        // late answer is dropped and the map does not grow.
        let _slot = SlotGuard {
            state: &self.state,
            id,
        };
        let request = pb::StreamRequest {
            id,
            body: Some(body),
        };
        // Tonic would fail the whole stream (and every request on it) on an oversized
        // message; refuse just this one, as the unary call would.
        let len = request.encoded_len();
        if len > max_message {
            return Sent::Done(Err(TransportError::Rejected(format!(
                "{addr}: request of {len} bytes exceeds the message limit of {max_message} bytes"
            ))));
        }
        if let Err(e) = self.outbound.unbounded_send(request) {
            return match e.into_inner().body {
                Some(body) => Sent::NotSent(body),
                None => Sent::Done(Err(TransportError::Unreachable(format!(
                    "{addr}: storage stream closed before the request was sent"
                )))),
            };
        }
        Sent::Done(match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(Some(body)))) => Ok(body),
            Ok(Ok(Ok(None))) => Err(TransportError::Lost(format!(
                "{addr}: empty answer to stream request {id}"
            ))),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(TransportError::Lost(format!(
                "{addr}: storage stream ended without answering"
            ))),
            Err(_) => Err(TransportError::Timeout(format!(
                "{addr}: no answer within {timeout:?}"
            ))),
        })
    }
}

struct SlotGuard<'a> {
    state: &'a parking_lot::Mutex<State>,
    id: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.state.lock().pending.remove(&self.id);
    }
}

/// Hands every answer of one session to its request; when the stream breaks or ends, fails
/// every request still waiting on it (they may have been applied: `Lost`).
async fn read(
    addr: String,
    mut inbound: Streaming<pb::StreamResponse>,
    state: Arc<parking_lot::Mutex<State>>,
    alive: Arc<AtomicBool>,
) {
    let failure = loop {
        match inbound.message().await {
            Ok(Some(response)) => {
                let waiter = state.lock().pending.remove(&response.id);
                // No waiter: the request timed out or its caller went away.
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Ok(response.body));
                }
            }
            Ok(None) => {
                break TransportError::Lost(format!("{addr}: the node closed the stream"));
            }
            Err(status) => {
                break TransportError::Lost(format!("{addr}: {}", error_chain(&status)));
            }
        }
    };
    tracing::debug!(addr, error = %failure, "storage stream ended");
    let waiting = {
        let mut state = state.lock();
        alive.store(false, Ordering::Release);
        state.failed = Some(failure.clone());
        std::mem::take(&mut state.pending)
    };
    for (_, waiter) in waiting {
        let _ = waiter.send(Err(failure.clone()));
    }
}

/// The answer body turned into what the caller asked for, with error answers classified
/// exactly like the unary call's status.
pub(crate) fn error_of(addr: &str, error: pb::StreamError) -> TransportError {
    classify(
        addr,
        &tonic::Status::new(tonic::Code::from(error.code), error.message),
    )
}
