//! One framed TCP connection from a client to a storage node: a writer task that coalesces
//! queued requests into one socket write, a reader task that hands each answer to the
//! request with its id, and the failure rules of the gRPC stream session.
//!
//! A request registers a reply slot under a fresh id and is queued for the writer; answers
//! may come in any order. An answer that does not come by the deadline is `Timeout` (the
//! slot is dropped, the connection lives on). When the connection breaks (reset, end of
//! stream, a frame that is not a valid answer) every request waiting on it fails as `Lost`
//! (it may have been applied), both tasks end, the socket is closed and the transport opens
//! a new connection for the next request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message as _;
use shmdb_proto::storage as pb;
use shmdb_proto::storage::stream_request::Body as RequestBody;
use shmdb_proto::storage::stream_response::Body as ResponseBody;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::codec::{self, FrameReader};
use super::metrics::{Direction, FramedMetrics};
use crate::transport::TransportError;

type Reply = Result<Option<ResponseBody>, TransportError>;

/// Requests sent on a connection and not answered yet.
#[derive(Default)]
struct State {
    next_id: u64,
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once when the connection breaks; every later request is refused with it.
    failed: Option<TransportError>,
    /// The reader and writer tasks, aborted together when either ends.
    tasks: Vec<AbortHandle>,
}

/// What the tasks of one connection share with its users.
struct Shared {
    addr: String,
    state: parking_lot::Mutex<State>,
    alive: AtomicBool,
    metrics: FramedMetrics,
}

impl Shared {
    /// Marks the connection broken (once), fails every waiter with `failure` and stops both
    /// tasks, which closes the socket.
    fn fail(&self, failure: TransportError) {
        let (waiting, tasks) = {
            let mut state = self.state.lock();
            if state.failed.is_some() {
                return;
            }
            self.alive.store(false, Ordering::Release);
            state.failed = Some(failure.clone());
            (
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.tasks),
            )
        };
        self.metrics.connections.dec();
        for (_, waiter) in waiting {
            let _ = waiter.send(Err(failure.clone()));
        }
        for task in tasks {
            task.abort();
        }
    }
}

/// One open framed connection.
pub(crate) struct Connection {
    /// Tells a connection that was replaced from the one that replaced it.
    pub(crate) generation: u64,
    outbound: mpsc::UnboundedSender<pb::StreamRequest>,
    shared: Arc<Shared>,
    max_frame: usize,
}

/// The outcome of one request on a connection.
pub(crate) enum Sent {
    /// The answer, or why there is none.
    Done(Result<ResponseBody, TransportError>),
    /// The connection had already broken: nothing was sent, another one may take it.
    NotSent(RequestBody),
}

impl Connection {
    /// Starts the tasks of a connected socket to the node known to the map as `addr`.
    pub(crate) fn start(
        addr: &str,
        socket: TcpStream,
        generation: u64,
        max_frame: usize,
        metrics: FramedMetrics,
    ) -> Arc<Connection> {
        let (read, write) = socket.into_split();
        let (outbound, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            state: parking_lot::Mutex::default(),
            alive: AtomicBool::new(true),
            metrics: metrics.clone(),
        });
        metrics.connections.inc();
        let writer = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let result = codec::write_frames(write, queue, max_frame, metrics).await;
                let failure = match result {
                    Ok(()) => TransportError::Lost(format!(
                        "{}: framed connection closed by this client",
                        shared.addr
                    )),
                    Err(e) => {
                        shared.metrics.connection_errors.inc();
                        tracing::debug!(addr = %shared.addr, error = %e, "framed connection: write failed");
                        TransportError::Lost(format!("{}: framed connection: {e}", shared.addr))
                    }
                };
                shared.fail(failure);
            })
        };
        let reader = tokio::spawn(read_answers(
            FrameReader::new(read, max_frame),
            shared.clone(),
        ));
        {
            let mut state = shared.state.lock();
            if state.failed.is_none() {
                state.tasks = vec![writer.abort_handle(), reader.abort_handle()];
            } else {
                writer.abort();
                reader.abort();
            }
        }
        Arc::new(Connection {
            generation,
            outbound,
            shared,
            max_frame,
        })
    }

    /// Whether the connection has not broken.
    pub(crate) fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    /// Sends one request and waits for its answer until `deadline`.
    pub(crate) async fn call(
        &self,
        body: RequestBody,
        deadline: Instant,
        timeout: Duration,
    ) -> Sent {
        let addr = &self.shared.addr;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut state = self.shared.state.lock();
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
            shared: &self.shared,
            id,
        };
        let request = pb::StreamRequest {
            id,
            body: Some(body),
        };
        let len = request.encoded_len();
        if len > self.max_frame {
            return Sent::Done(Err(TransportError::Rejected(format!(
                "{addr}: request of {len} bytes exceeds the frame limit of {} bytes",
                self.max_frame
            ))));
        }
        if let Err(e) = self.outbound.send(request) {
            return match e.0.body {
                Some(body) => Sent::NotSent(body),
                None => Sent::Done(Err(TransportError::Unreachable(format!(
                    "{addr}: framed connection closed before the request was sent"
                )))),
            };
        }
        Sent::Done(match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(Some(body)))) => Ok(body),
            Ok(Ok(Ok(None))) => Err(TransportError::Lost(format!(
                "{addr}: empty answer to framed request {id}"
            ))),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(TransportError::Lost(format!(
                "{addr}: framed connection ended without answering"
            ))),
            Err(_) => Err(TransportError::Timeout(format!(
                "{addr}: no answer within {timeout:?}"
            ))),
        })
    }

    /// Closes the connection (requests in flight fail as `Lost`).
    pub(crate) fn close(&self) {
        self.shared.fail(TransportError::Lost(format!(
            "{}: framed connection closed by this client",
            self.shared.addr
        )));
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The last user is gone: nobody can wait on it any more.
        self.close();
    }
}

struct SlotGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.shared.state.lock().pending.remove(&self.id);
    }
}

/// Hands every answer to its request until the connection ends; a frame that is not a
/// valid answer closes the connection (logged), never the process.
async fn read_answers(
    mut frames: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    shared: Arc<Shared>,
) {
    let addr = shared.addr.clone();
    let failure = loop {
        match frames.next::<pb::StreamResponse>().await {
            Ok(Some((response, wire))) => {
                shared.metrics.count(Direction::Received, 1, wire);
                let waiter = shared.state.lock().pending.remove(&response.id);
                // No waiter: the request timed out or its caller went away.
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Ok(response.body));
                }
            }
            Ok(None) => {
                // Nodes close connections only when they stop: a failure for this client.
                shared.metrics.connection_errors.inc();
                tracing::debug!(addr, "the node closed the framed connection");
                break TransportError::Lost(format!(
                    "{addr}: the node closed the framed connection"
                ));
            }
            Err(e @ codec::FrameError::Io(_)) => {
                shared.metrics.connection_errors.inc();
                tracing::debug!(addr, error = %e, "framed connection broke");
                break TransportError::Lost(format!("{addr}: framed connection: {e}"));
            }
            Err(e) => {
                shared.metrics.connection_errors.inc();
                tracing::error!(addr, error = %e, "storage node sent a bad frame; closing the connection");
                break TransportError::Lost(format!("{addr}: bad frame from the node: {e}"));
            }
        }
    };
    shared.fail(failure);
}
