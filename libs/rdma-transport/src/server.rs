//! The storage node's side: the `RdmaConnect` gRPC service that sets up a queue pair per
//! client, and the dispatch of requests arriving on those queue pairs to the node.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use prost::Message as _;
use shmdb_proto::rdma as rpb;
use shmdb_proto::rdma::rdma_connect_server::{RdmaConnect, RdmaConnectServer};
use shmdb_store_client::proto as pb;
use tonic::{Request, Response, Status};

use crate::client::{endpoint_from_proto, endpoint_to_proto};
use crate::connection::{ConnSender, Connection, prepare_qp};
use crate::frame::{Kind, Message};
use crate::metrics::TransportMetrics;
use crate::verbs::{QpConfig, RdmaDevice};

/// What serves the requests that arrive over RDMA: the storage node implements it with the
/// same code its gRPC service calls, so both transports answer identically.
#[async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Serves a batch of independent operations.
    async fn batch(&self, req: pb::BatchRequest) -> pb::BatchResponse;
    /// Serves a scan of one range.
    async fn scan(&self, req: pb::ScanRequest) -> pb::ScanResponse;
}

/// The RDMA side of a storage node. Without a device it still answers `Connect`, with
/// FAILED_PRECONDITION, so `auto` clients fall back to TCP for this node.
pub struct RdmaServer {
    device: Option<Arc<dyn RdmaDevice>>,
    why_not: String,
    handler: Arc<dyn RequestHandler>,
    qp: QpConfig,
    max_message: usize,
    metrics: TransportMetrics,
    runtime: tokio::runtime::Handle,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    next_id: AtomicU64,
    reaper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How long a client connection may stay silent before the node closes it: clients ping
/// every 10 s (`RdmaConfig::keepalive_interval`), and RDMA tells a receiver nothing when its
/// peer dies, so without this a crashed client's queue pair would be held forever.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl std::fmt::Debug for RdmaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaServer")
            .field("device", &self.device.as_ref().map(|d| d.name().to_owned()))
            .field("connections", &self.connections.lock().len())
            .finish()
    }
}

impl RdmaServer {
    /// A server on `device` (or none, for `why_not`), dispatching to `handler` on the
    /// current tokio runtime. Must be called inside a runtime.
    pub fn new(
        device: Option<Arc<dyn RdmaDevice>>,
        why_not: impl Into<String>,
        handler: Arc<dyn RequestHandler>,
        qp: QpConfig,
        max_message: usize,
        metrics: TransportMetrics,
    ) -> Result<Arc<RdmaServer>, tokio::runtime::TryCurrentError> {
        Self::with_idle_timeout(
            device,
            why_not,
            handler,
            qp,
            max_message,
            metrics,
            DEFAULT_IDLE_TIMEOUT,
        )
    }

    /// Like [`RdmaServer::new`], closing client connections silent for `idle_timeout`.
    pub fn with_idle_timeout(
        device: Option<Arc<dyn RdmaDevice>>,
        why_not: impl Into<String>,
        handler: Arc<dyn RequestHandler>,
        qp: QpConfig,
        max_message: usize,
        metrics: TransportMetrics,
        idle_timeout: Duration,
    ) -> Result<Arc<RdmaServer>, tokio::runtime::TryCurrentError> {
        let server = Arc::new(RdmaServer {
            device,
            why_not: why_not.into(),
            handler,
            qp,
            max_message,
            metrics,
            runtime: tokio::runtime::Handle::try_current()?,
            connections: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            reaper: Mutex::new(None),
        });
        if server.device.is_some() {
            let task = server
                .runtime
                .spawn(reap_idle(Arc::downgrade(&server), idle_timeout));
            *server.reaper.lock() = Some(task);
        }
        Ok(server)
    }

    /// The gRPC service to add to the node's server.
    pub fn service(self: &Arc<Self>) -> RdmaConnectServer<ConnectService> {
        RdmaConnectServer::new(ConnectService(self.clone()))
    }

    /// Whether this server accepts RDMA connections.
    pub fn serves_rdma(&self) -> bool {
        self.device.is_some()
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.connections
            .lock()
            .values()
            .filter(|c| c.dead_reason().is_none())
            .count()
    }

    /// Closes every connection (orderly stop).
    pub fn shutdown(&self) {
        if let Some(task) = self.reaper.lock().take() {
            task.abort();
        }
        let conns: Vec<_> = self.connections.lock().drain().map(|(_, c)| c).collect();
        for conn in conns {
            conn.close();
        }
    }

    /// Destroys every queue pair at once, as a crash would: clients notice at their next
    /// send.
    pub fn abort(&self) {
        if let Some(task) = self.reaper.lock().take() {
            task.abort();
        }
        let conns: Vec<_> = self.connections.lock().drain().map(|(_, c)| c).collect();
        for conn in conns {
            conn.crash();
        }
    }

    fn accept(self: &Arc<Self>, client: &rpb::QueuePairInfo) -> Result<rpb::QueuePairInfo, Status> {
        let Some(device) = &self.device else {
            return Err(Status::failed_precondition(format!(
                "this storage node serves no RDMA: {}",
                self.why_not
            )));
        };
        let remote = endpoint_from_proto(client)
            .ok_or_else(|| Status::invalid_argument("malformed queue-pair info"))?;
        let qp = prepare_qp(device.as_ref(), self.qp)
            .map_err(|e| Status::resource_exhausted(format!("queue pair: {e}")))?;
        qp.connect(&remote).map_err(|e| {
            Status::invalid_argument(format!("cannot connect to the client's queue pair: {e}"))
        })?;
        let local = qp.endpoint();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handler = self.handler.clone();
        let runtime = self.runtime.clone();
        let on_message = Box::new(move |message: Message, sender: &ConnSender| {
            let handler = handler.clone();
            let sender = sender.clone();
            runtime.spawn(async move {
                let (kind, payload) = serve(handler.as_ref(), message.kind, &message.payload).await;
                if let Err(e) = sender.send(kind, message.request_id, payload) {
                    match e {
                        crate::connection::SendError::TooLarge { .. } => {
                            let _ = sender.send(
                                Kind::Rejected,
                                message.request_id,
                                format!("response too large: {e}").into_bytes(),
                            );
                        }
                        crate::connection::SendError::Dead(_) => {
                            tracing::debug!(error = %e, "answer dropped: client connection gone")
                        }
                    }
                }
            });
        });
        let weak = Arc::downgrade(self);
        let on_dead = Box::new(move |reason: &str| {
            tracing::debug!(reason, "rdma client connection closed");
            if let Some(server) = weak.upgrade() {
                server.connections.lock().remove(&id);
            }
        });
        let conn = Connection::start(
            qp,
            remote.slot_bytes,
            self.max_message,
            on_message,
            on_dead,
            self.metrics.clone(),
            &self.runtime,
        )
        .map_err(|e| Status::internal(format!("starting the connection: {e}")))?;
        self.connections.lock().insert(id, conn);
        tracing::debug!(client_qp = remote.qp_num, device = %remote.device, "rdma client connected");
        Ok(endpoint_to_proto(&local))
    }
}

/// Closes client connections that have been silent for `idle_timeout`.
async fn reap_idle(server: std::sync::Weak<RdmaServer>, idle_timeout: Duration) {
    let mut tick = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        let Some(server) = server.upgrade() else {
            return;
        };
        let idle: Vec<_> = server
            .connections
            .lock()
            .iter()
            .filter(|(_, c)| c.since_last_received() > idle_timeout)
            .map(|(id, c)| (*id, c.clone()))
            .collect();
        for (id, conn) in idle {
            tracing::info!(idle = ?idle_timeout, "closing a silent rdma client connection");
            server.connections.lock().remove(&id);
            conn.close();
        }
    }
}

/// Decodes a request, serves it and encodes the answer (or a rejection).
async fn serve(handler: &dyn RequestHandler, kind: Kind, payload: &[u8]) -> (Kind, Vec<u8>) {
    let rejected = |what: String| (Kind::Rejected, what.into_bytes());
    match kind {
        Kind::BatchRequest => match pb::BatchRequest::decode(payload) {
            Ok(req) => (
                Kind::BatchResponse,
                handler.batch(req).await.encode_to_vec(),
            ),
            Err(e) => rejected(format!("malformed batch request: {e}")),
        },
        Kind::ScanRequest => match pb::ScanRequest::decode(payload) {
            Ok(req) => (Kind::ScanResponse, handler.scan(req).await.encode_to_vec()),
            Err(e) => rejected(format!("malformed scan request: {e}")),
        },
        other => rejected(format!("{other:?} is not a request")),
    }
}

/// The tonic service wrapper (kept separate so the server itself stays `Arc`-shared).
#[derive(Debug, Clone)]
pub struct ConnectService(Arc<RdmaServer>);

#[async_trait]
impl RdmaConnect for ConnectService {
    async fn setup(
        &self,
        request: Request<rpb::SetupRequest>,
    ) -> Result<Response<rpb::SetupResponse>, Status> {
        let request = request.into_inner();
        let client = request
            .client
            .ok_or_else(|| Status::invalid_argument("missing client queue-pair info"))?;
        let server = self.0.accept(&client)?;
        Ok(Response::new(rpb::SetupResponse {
            server: Some(server),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    #[async_trait]
    impl RequestHandler for Echo {
        async fn batch(&self, req: pb::BatchRequest) -> pb::BatchResponse {
            pb::BatchResponse {
                results: Vec::new(),
                map_version: req.map_version + 1,
            }
        }
        async fn scan(&self, req: pb::ScanRequest) -> pb::ScanResponse {
            pb::ScanResponse {
                map_version: u64::from(req.limit),
                ..Default::default()
            }
        }
    }

    #[tokio::test]
    async fn requests_are_served_and_garbage_is_rejected_not_fatal() {
        let req = pb::BatchRequest {
            map_version: 41,
            ops: Vec::new(),
        };
        let (kind, bytes) = serve(&Echo, Kind::BatchRequest, &req.encode_to_vec()).await;
        assert_eq!(kind, Kind::BatchResponse);
        assert_eq!(
            pb::BatchResponse::decode(bytes.as_slice()).map(|r| r.map_version),
            Ok(42)
        );
        let (kind, bytes) = serve(&Echo, Kind::ScanRequest, &[0xff, 0xff, 0xff]).await;
        assert_eq!(kind, Kind::Rejected);
        assert!(String::from_utf8_lossy(&bytes).contains("malformed scan request"));
        let (kind, _) = serve(&Echo, Kind::BatchResponse, &[]).await;
        assert_eq!(kind, Kind::Rejected);
    }

    #[tokio::test]
    async fn a_node_without_a_device_refuses_connections_with_failed_precondition() {
        let server = RdmaServer::new(
            None,
            "no RDMA device",
            Arc::new(Echo),
            QpConfig::default(),
            1 << 20,
            TransportMetrics::new().expect("metrics"),
        )
        .expect("runtime");
        let status = server
            .accept(&rpb::QueuePairInfo::default())
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("no RDMA device"));
        assert!(!server.serves_rdma());
    }
}
