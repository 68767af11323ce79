//! The framed TCP data path: batches and scans to a storage node as length-prefixed
//! protobuf frames on a plain TCP connection, with no HTTP/2 in between.
//!
//! Why: with requests multiplexed over a gRPC stream, the HTTP/2 machinery (h2 framing,
//! hyper, tonic's body and codec layers, the task hops between them) was still about half of
//! the server CPU on the data path (BENCHMARKS.md, "Where a NewOrder's time goes"). Here a
//! request is its `StreamRequest` message behind a 4-byte length, an answer its
//! `StreamResponse` ([`codec`]); requests carry ids, many are in flight per connection and
//! answers come in any order ([`connection`]).
//!
//! Discovery and fallback: the partition map names each node by its gRPC address; the
//! client asks that address once (`FramedEndpoint`) for the port of the node's framed
//! listener and connects to it on the same host. A node that does not offer it (an older
//! node: `UNIMPLEMENTED`; a node run with `--transport grpc`: `FAILED_PRECONDITION`) is
//! served over gRPC, logged once, and asked again after a while; `get_map` always goes over
//! gRPC. A framed endpoint that refuses connections (the node restarted on another port) is
//! discovered anew at once.

pub mod codec;
mod connection;
pub mod metrics;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use shmdb_proto::storage as pb;
use shmdb_proto::storage::stream_request::Body as RequestBody;
use shmdb_proto::storage::stream_response::Body as ResponseBody;
use tokio::net::TcpStream;
use tokio::time::Instant;

use self::connection::{Connection, Sent};
use self::metrics::FramedMetrics;
use crate::grpc::{DataPath, GrpcConfig, GrpcTransport, handed_back, mismatched};
use crate::transport::{Transport, TransportError};

/// Settings of [`FramedTransport`].
#[derive(Debug, Clone)]
pub struct FramedConfig {
    /// Bound on opening a framed connection (and on the gRPC discovery call).
    pub connect_timeout: Duration,
    /// Bound on one request's round trip, connection set-up included; exceeding it is
    /// [`TransportError::Timeout`] (the request may have been applied).
    pub request_timeout: Duration,
    /// Largest frame sent or accepted (the prefix not counted); a bigger request is
    /// refused as `Rejected`, a bigger announced answer closes the connection.
    pub max_frame_bytes: usize,
    /// Connections per storage node, used round-robin.
    pub connections_per_node: usize,
    /// How long a node found without a framed endpoint is served over gRPC before it is
    /// asked again (it may have been upgraded or restarted with another transport).
    pub rediscover_after: Duration,
}

impl Default for FramedConfig {
    fn default() -> Self {
        FramedConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            max_frame_bytes: 64 << 20,
            connections_per_node: 1,
            rediscover_after: Duration::from_secs(30),
        }
    }
}

/// Where a node serves the data path, as far as this client knows.
#[derive(Debug, Clone)]
enum Endpoint {
    /// Not asked yet (or forgotten after its connections were refused).
    Unknown,
    /// `host:port` of the framed listener.
    Framed(String),
    /// The node offers no framed endpoint (as of `since`): use gRPC.
    Grpc { since: Instant },
}

/// What this client knows about one node.
struct NodeState {
    endpoint: Endpoint,
    /// `connections_per_node` slots, used round-robin; an empty or broken slot is (re)opened
    /// by the next request that picks it.
    slots: Vec<Option<Arc<Connection>>>,
    /// Serialises discovery and connecting, so a burst of first requests opens one
    /// connection per slot, not one per request.
    opening: Arc<tokio::sync::Mutex<()>>,
}

/// How one request travels.
enum Route {
    Framed(Arc<Connection>),
    Grpc,
}

/// [`Transport`] over framed TCP connections, with gRPC ([`GrpcTransport`], streams) for
/// `get_map`, discovery and nodes that offer no framed endpoint.
///
/// Failure classes are those of the gRPC transport: a connection that cannot be opened is
/// `Unreachable` (nothing was sent); a connection that breaks with requests in flight fails
/// them as `Lost`; no answer within the request timeout is `Timeout`; the next request
/// after a failure opens a new connection.
pub struct FramedTransport {
    config: FramedConfig,
    grpc: GrpcTransport,
    nodes: parking_lot::Mutex<HashMap<String, NodeState>>,
    next_slot: AtomicUsize,
    next_generation: AtomicU64,
    opened: AtomicU64,
    metrics: FramedMetrics,
}

impl std::fmt::Debug for FramedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedTransport")
            .field("config", &self.config)
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

impl FramedTransport {
    /// A transport with no connections yet; `grpc` configures the gRPC side (its data path
    /// [`DataPath::Framed`] is served as `Stream`).
    pub fn new(config: FramedConfig, grpc: GrpcConfig, metrics: FramedMetrics) -> Self {
        FramedTransport {
            grpc: GrpcTransport::new(grpc_side(grpc)),
            nodes: parking_lot::Mutex::new(HashMap::new()),
            next_slot: AtomicUsize::new(0),
            next_generation: AtomicU64::new(1),
            opened: AtomicU64::new(0),
            metrics,
            config: FramedConfig {
                connections_per_node: config.connections_per_node.max(1),
                ..config
            },
        }
    }

    /// Framed connections opened so far, broken ones included (proof for tests and benches
    /// that requests travelled framed).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Framed connections open now.
    pub fn open_connections(&self) -> usize {
        self.nodes
            .lock()
            .values()
            .flat_map(|n| n.slots.iter().flatten())
            .filter(|c| c.is_alive())
            .count()
    }

    /// This transport's metrics.
    pub fn metrics(&self) -> &FramedMetrics {
        &self.metrics
    }

    /// The gRPC transport used for maps, discovery and fallback.
    pub fn grpc(&self) -> &GrpcTransport {
        &self.grpc
    }

    /// Sends one request over a framed connection, or hands it back for gRPC.
    async fn send(&self, addr: &str, mut body: RequestBody) -> Framed {
        let timeout = self.config.request_timeout;
        let deadline = Instant::now() + timeout;
        // A second round only when the connection picked had broken before our request
        // went out (nothing sent), on a fresh connection.
        for _ in 0..2 {
            let connection = match self.route(addr, deadline).await {
                Ok(Route::Framed(connection)) => connection,
                Ok(Route::Grpc) => {
                    self.metrics.grpc_fallbacks.inc();
                    return Framed::Grpc(body);
                }
                Err(e) => return Framed::Answer(Err(e)),
            };
            match connection.call(body, deadline, timeout).await {
                Sent::Done(result) => {
                    if let Err(TransportError::Lost(_) | TransportError::Unreachable(_)) = &result {
                        self.forget(addr, connection.generation);
                    }
                    return Framed::Answer(result.and_then(|answer| match answer {
                        ResponseBody::Error(e) => Err(crate::session::error_of(addr, e)),
                        answer => Ok(answer),
                    }));
                }
                Sent::NotSent(back) => {
                    self.forget(addr, connection.generation);
                    body = back;
                }
            }
        }
        Framed::Answer(Err(TransportError::Unreachable(format!(
            "{addr}: no working framed connection"
        ))))
    }

    /// The connection to send the next request to `addr` on, discovering the endpoint and
    /// connecting first if needed; `Grpc` when the node offers no framed endpoint.
    async fn route(&self, addr: &str, deadline: Instant) -> Result<Route, TransportError> {
        let slot =
            self.next_slot.fetch_add(1, Ordering::Relaxed) % self.config.connections_per_node;
        let opening = match self.usable(addr, slot) {
            Ok(route) => return Ok(route),
            Err(opening) => opening,
        };
        let Ok(_guard) = tokio::time::timeout_at(deadline, opening.lock()).await else {
            return Err(TransportError::Unreachable(format!(
                "{addr}: no framed connection could be opened within {:?}",
                self.config.request_timeout
            )));
        };
        // Someone else may have connected (or learned the node has no endpoint) meanwhile.
        if let Ok(route) = self.usable(addr, slot) {
            return Ok(route);
        }
        let mut discovered_now = false;
        loop {
            let known = self
                .nodes
                .lock()
                .get(addr)
                .map(|n| n.endpoint.clone())
                .unwrap_or(Endpoint::Unknown);
            let target = match known {
                Endpoint::Framed(target) => target,
                Endpoint::Unknown | Endpoint::Grpc { .. } => {
                    discovered_now = true;
                    match self.discover(addr, deadline).await? {
                        Some(target) => target,
                        None => return Ok(Route::Grpc),
                    }
                }
            };
            match self.connect(addr, &target, slot, deadline).await {
                Ok(connection) => return Ok(Route::Framed(connection)),
                Err(e) if discovered_now => return Err(e),
                Err(e) => {
                    // The node may have restarted on another port: ask it again, once.
                    tracing::debug!(addr, error = %e, "framed endpoint refused; asking the node again");
                    self.set_endpoint(addr, Endpoint::Unknown);
                }
            }
        }
    }

    /// The route if the slot has a live connection or the node is known to be gRPC-only;
    /// otherwise the lock to take before connecting.
    fn usable(&self, addr: &str, slot: usize) -> Result<Route, Arc<tokio::sync::Mutex<()>>> {
        let mut nodes = self.nodes.lock();
        let node = self.node(&mut nodes, addr);
        if let Endpoint::Grpc { since } = node.endpoint
            && since.elapsed() < self.config.rediscover_after
        {
            return Ok(Route::Grpc);
        }
        if let Some(Some(connection)) = node.slots.get(slot)
            && connection.is_alive()
        {
            return Ok(Route::Framed(connection.clone()));
        }
        Err(node.opening.clone())
    }

    fn node<'a>(&self, nodes: &'a mut HashMap<String, NodeState>, addr: &str) -> &'a mut NodeState {
        nodes.entry(addr.to_owned()).or_insert_with(|| NodeState {
            endpoint: Endpoint::Unknown,
            slots: vec![None; self.config.connections_per_node],
            opening: Arc::default(),
        })
    }

    fn set_endpoint(&self, addr: &str, endpoint: Endpoint) {
        let mut nodes = self.nodes.lock();
        self.node(&mut nodes, addr).endpoint = endpoint;
    }

    /// Asks the node at `addr` (over gRPC) for its framed endpoint and records the answer:
    /// `Some(host:port)`, or `None` when it offers none.
    async fn discover(
        &self,
        addr: &str,
        deadline: Instant,
    ) -> Result<Option<String>, TransportError> {
        let asked = tokio::time::timeout_at(deadline, self.grpc.framed_port(addr)).await;
        let port = match asked {
            Ok(Ok(port)) => port,
            // Whatever became of the question, the request itself was not sent.
            Ok(Err(e)) => {
                return Err(TransportError::Unreachable(format!(
                    "asking for the framed endpoint: {e}"
                )));
            }
            Err(_) => {
                return Err(TransportError::Unreachable(format!(
                    "{addr}: no framed endpoint learned within {:?}",
                    self.config.request_timeout
                )));
            }
        };
        match port {
            Ok(port) => {
                let target = format!("{}:{port}", host_of(addr));
                tracing::debug!(addr, target, "storage node serves framed TCP");
                self.set_endpoint(addr, Endpoint::Framed(target.clone()));
                Ok(Some(target))
            }
            Err(why) => {
                let was_grpc = matches!(
                    self.nodes.lock().get(addr).map(|n| &n.endpoint),
                    Some(Endpoint::Grpc { .. })
                );
                if !was_grpc {
                    tracing::info!(addr, reason = %why, "storage node offers no framed TCP; using gRPC to it");
                }
                self.set_endpoint(
                    addr,
                    Endpoint::Grpc {
                        since: Instant::now(),
                    },
                );
                Ok(None)
            }
        }
    }

    /// Opens a framed connection to `target` for `slot` of node `addr`.
    async fn connect(
        &self,
        addr: &str,
        target: &str,
        slot: usize,
        deadline: Instant,
    ) -> Result<Arc<Connection>, TransportError> {
        let bound = deadline.min(Instant::now() + self.config.connect_timeout);
        let socket = match tokio::time::timeout_at(bound, TcpStream::connect(target)).await {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => {
                self.metrics.connection_errors.inc();
                return Err(TransportError::Unreachable(format!(
                    "{addr}: framed endpoint {target}: {e}"
                )));
            }
            Err(_) => {
                self.metrics.connection_errors.inc();
                return Err(TransportError::Unreachable(format!(
                    "{addr}: framed endpoint {target}: no connection within {:?}",
                    self.config.connect_timeout
                )));
            }
        };
        // Small frames must not wait for delayed ACKs.
        if let Err(e) = socket.set_nodelay(true) {
            tracing::warn!(addr, error = %e, "framed connection: TCP_NODELAY not set");
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let connection = Connection::start(
            addr,
            socket,
            generation,
            self.config.max_frame_bytes,
            self.metrics.clone(),
        );
        self.opened.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(addr, target, slot, "opened framed connection");
        let mut nodes = self.nodes.lock();
        if let Some(entry) = self.node(&mut nodes, addr).slots.get_mut(slot) {
            *entry = Some(connection.clone());
        }
        Ok(connection)
    }

    /// Drops the connection `generation` of `addr` if it is still cached, so the next
    /// request opens a new one.
    fn forget(&self, addr: &str, generation: u64) {
        let dropped: Vec<Arc<Connection>> = {
            let mut nodes = self.nodes.lock();
            let Some(node) = nodes.get_mut(addr) else {
                return;
            };
            node.slots
                .iter_mut()
                .filter(|s| s.as_ref().is_some_and(|c| c.generation == generation))
                .filter_map(Option::take)
                .collect()
        };
        // Closed outside the lock (closing fails its waiters).
        for connection in dropped {
            connection.close();
        }
    }
}

/// The host part of a `host:port` (or `http://host:port`) address.
fn host_of(addr: &str) -> &str {
    let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let addr = addr.trim_end_matches('/');
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// What [`FramedTransport::send`] did with a request.
enum Framed {
    /// Sent framed: its answer (an error answer already turned into its error).
    Answer(Result<ResponseBody, TransportError>),
    /// The node offers no framed endpoint: send this over gRPC.
    Grpc(RequestBody),
}

#[async_trait]
impl Transport for FramedTransport {
    async fn batch(
        &self,
        addr: &str,
        req: pb::BatchRequest,
    ) -> Result<pb::BatchResponse, TransportError> {
        match self.send(addr, RequestBody::Batch(req)).await {
            Framed::Answer(Ok(ResponseBody::Batch(response))) => Ok(response),
            Framed::Answer(Ok(other)) => Err(mismatched(addr, "batch", &other)),
            Framed::Answer(Err(e)) => Err(e),
            Framed::Grpc(RequestBody::Batch(req)) => self.grpc.batch(addr, req).await,
            Framed::Grpc(_) => Err(handed_back(addr, "batch")),
        }
    }

    async fn scan(
        &self,
        addr: &str,
        req: pb::ScanRequest,
    ) -> Result<pb::ScanResponse, TransportError> {
        match self.send(addr, RequestBody::Scan(req)).await {
            Framed::Answer(Ok(ResponseBody::Scan(response))) => Ok(response),
            Framed::Answer(Ok(other)) => Err(mismatched(addr, "scan", &other)),
            Framed::Answer(Err(e)) => Err(e),
            Framed::Grpc(RequestBody::Scan(req)) => self.grpc.scan(addr, req).await,
            Framed::Grpc(_) => Err(handed_back(addr, "scan")),
        }
    }

    async fn get_map(&self, addr: &str) -> Result<pb::PartitionMap, TransportError> {
        self.grpc.get_map(addr).await
    }
}

/// The TCP transport for `data_path`: a [`FramedTransport`] (gRPC streams for nodes without
/// a framed endpoint) for [`DataPath::Framed`], a [`GrpcTransport`] otherwise. The one place
/// every component turns the data-path choice into a transport.
pub fn tcp_transport(
    data_path: DataPath,
    grpc: GrpcConfig,
    framed: FramedConfig,
    metrics: FramedMetrics,
) -> Arc<dyn Transport> {
    match data_path {
        DataPath::Framed => Arc::new(FramedTransport::new(framed, grpc, metrics)),
        path => Arc::new(GrpcTransport::new(GrpcConfig {
            data_path: path,
            ..grpc
        })),
    }
}

/// The gRPC settings a framed transport uses for everything but framed requests: streams
/// where the node has them.
pub(crate) fn grpc_side(grpc: GrpcConfig) -> GrpcConfig {
    let data_path = match grpc.data_path {
        DataPath::Framed => DataPath::Stream,
        other => other,
    };
    GrpcConfig { data_path, ..grpc }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framed_host_is_the_host_of_the_grpc_address() {
        assert_eq!(host_of("127.0.0.1:7401"), "127.0.0.1");
        assert_eq!(host_of("http://sn-0.sn.db.svc:7400"), "sn-0.sn.db.svc");
        assert_eq!(host_of("[::1]:7400"), "[::1]");
        assert_eq!(host_of("node"), "node");
    }
}
