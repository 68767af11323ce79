//! The `Stream` RPC: batches and scans of one client multiplexed over one long-lived HTTP/2
//! stream.
//!
//! Why: a transaction makes a dozen or more small storage requests, and as unary calls each
//! one pays for an HTTP/2 stream, header coding and a handler task on both ends — more CPU
//! than the node spends on the operations. On a stream a request is one message each way.
//! Requests on a stream are independent (the client orders what must be ordered), so they
//! run concurrently and each is answered as soon as it finishes, tagged with its id. A bad
//! frame gets an error answer for its id; it never ends the stream.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use prost::Message as _;
use shmdb_proto::storage as pb;
use shmdb_proto::storage::stream_request::Body as RequestBody;
use shmdb_proto::storage::stream_response::Body as ResponseBody;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::node::Node;

/// The answers of one stream, as tonic sends them.
pub type ResponseStream = UnboundedReceiverStream<Result<pb::StreamResponse, Status>>;

/// Serves one stream: reads requests until the client closes its side (or `stopping` turns
/// true: the node shuts down) and answers each one when it is done; requests still running
/// then are answered too (the client may be waiting for them) before the stream ends. Answers larger than `max_message` bytes are replaced by
/// a `RESOURCE_EXHAUSTED` error for that request, because tonic would otherwise fail the
/// whole stream and every request in flight on it.
pub fn serve(
    node: Arc<Node>,
    inbound: Streaming<pb::StreamRequest>,
    max_message: usize,
    stopping: watch::Receiver<bool>,
) -> ResponseStream {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(node, inbound, tx, max_message, stopping));
    UnboundedReceiverStream::new(rx)
}

async fn run(
    node: Arc<Node>,
    mut inbound: Streaming<pb::StreamRequest>,
    tx: mpsc::UnboundedSender<Result<pb::StreamResponse, Status>>,
    max_message: usize,
    mut stopping: watch::Receiver<bool>,
) {
    let _open = OpenStream::new(node.metrics.streams.clone());
    let mut answers = FuturesUnordered::new();
    let mut reading = true;
    // False once the node's stop signal is gone (a node dropped without shutdown keeps
    // serving), so the arm below does not fire again and again.
    let mut watching = true;
    while reading || !answers.is_empty() {
        tokio::select! {
            stop = stopping.wait_for(|stop| *stop), if reading && watching => {
                if stop.is_ok() {
                    tracing::debug!("node stopping: ending a storage stream");
                    reading = false;
                } else {
                    watching = false;
                }
            }
            message = inbound.message(), if reading => match message {
                Ok(Some(request)) => answers.push(answer(node.clone(), request, max_message)),
                Ok(None) => reading = false,
                Err(status) => {
                    // The client went away (or sent something undecodable as a whole):
                    // nobody is left to read the answers still running.
                    tracing::debug!(error = %status, "storage stream ended by its client");
                    return;
                }
            },
            Some(response) = answers.next(), if !answers.is_empty() => {
                if tx.send(Ok(response)).is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs one request and builds its answer; counted in the same latency metric as the
/// unary calls. The framed TCP data path ([`crate::framed`]) answers with it too.
pub(crate) async fn answer(
    node: Arc<Node>,
    request: pb::StreamRequest,
    max_message: usize,
) -> pb::StreamResponse {
    let id = request.id;
    let started = Instant::now();
    let (rpc, body) = match request.body {
        Some(RequestBody::Batch(batch)) => ("batch", ResponseBody::Batch(node.batch(batch).await)),
        Some(RequestBody::Scan(scan)) => ("scan", ResponseBody::Scan(node.scan(scan).await)),
        None => {
            return error(
                id,
                Code::InvalidArgument,
                format!("stream request {id} carries neither a batch nor a scan"),
            );
        }
    };
    node.metrics
        .request_seconds
        .with_label_values(&[rpc])
        .observe(started.elapsed().as_secs_f64());
    let response = pb::StreamResponse {
        id,
        body: Some(body),
    };
    let len = response.encoded_len();
    if len > max_message {
        return error(
            id,
            Code::ResourceExhausted,
            format!("answer of {len} bytes exceeds the message limit of {max_message} bytes"),
        );
    }
    response
}

/// An error answer carrying the status the unary call would have ended with.
fn error(id: u64, code: Code, message: String) -> pb::StreamResponse {
    pb::StreamResponse {
        id,
        body: Some(ResponseBody::Error(pb::StreamError {
            code: code as i32,
            message,
        })),
    }
}

/// Counts a stream in an open-streams gauge for as long as it is served.
pub(crate) struct OpenStream(prometheus::IntGauge);

impl OpenStream {
    /// Counts one more open stream until dropped.
    pub(crate) fn new(gauge: prometheus::IntGauge) -> OpenStream {
        gauge.inc();
        OpenStream(gauge)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
