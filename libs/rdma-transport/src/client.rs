//! [`RdmaTransport`]: the store client's [`Transport`] over RDMA queue pairs, one per
//! storage node, set up over gRPC and falling back to gRPC for nodes that serve no RDMA.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use prost::Message as _;
use shmdb_proto::rdma as rpb;
use shmdb_proto::rdma::rdma_connect_client::RdmaConnectClient;
use shmdb_store_client::proto as pb;
use shmdb_store_client::{GrpcConfig, GrpcTransport, Transport, TransportError};
use tokio::sync::oneshot;
use tonic::transport::Endpoint;

use crate::connection::{ConnSender, Connection, SendError, prepare_qp};
use crate::frame::{Kind, Message};
use crate::metrics::TransportMetrics;
use crate::verbs::{QpConfig, QpEndpoint, RdmaDevice};

/// Settings of [`RdmaTransport`].
#[derive(Debug, Clone)]
pub struct RdmaConfig {
    /// Registered buffer geometry of each queue pair.
    pub qp: QpConfig,
    /// Bound on one request's round trip; exceeding it is [`TransportError::Timeout`].
    pub request_timeout: Duration,
    /// Bound on the gRPC connection-setup call.
    pub connect_timeout: Duration,
    /// A request that has waited this long with nothing arriving on its connection sends a
    /// ping: RDMA tells a sender nothing about a dead peer until it sends, so without it a
    /// request to a crashed node would only ever time out instead of failing as lost.
    pub liveness_interval: Duration,
    /// An idle connection pings this often, so the node can tell a live client from a dead
    /// one (it closes connections silent for longer than its idle timeout) and a dead node
    /// is noticed before the next request.
    pub keepalive_interval: Duration,
    /// Largest message sent or accepted, as with gRPC.
    pub max_message: usize,
    /// Whether a node that serves no RDMA is reached over gRPC instead (`auto`), or is an
    /// error (`rdma`).
    pub fallback_to_tcp: bool,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig {
            qp: QpConfig::default(),
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            liveness_interval: Duration::from_millis(200),
            keepalive_interval: Duration::from_secs(10),
            max_message: 64 << 20,
            fallback_to_tcp: true,
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Message, TransportError>>>>>;

/// One queue pair to one node, with the requests waiting on it.
struct ClientConn {
    conn: Arc<Connection>,
    pending: Pending,
    next_id: AtomicU64,
    pinger: tokio::task::JoinHandle<()>,
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.pinger.abort();
        self.conn.close();
    }
}

#[derive(Clone)]
enum Route {
    Rdma(Arc<ClientConn>),
    /// The node serves no RDMA; use gRPC (only with `fallback_to_tcp`).
    Tcp,
}

#[derive(Default)]
struct Entry {
    route: Option<Route>,
    connecting: Arc<tokio::sync::Mutex<()>>,
}

/// [`Transport`] over RDMA: batch and scan requests travel over a reliable-connected queue
/// pair per storage node; partition-map fetches (rare, control plane) and nodes without RDMA
/// use the wrapped [`GrpcTransport`].
///
/// Failure classes follow [`TransportError`]: a failed setup is `Unreachable` (nothing was
/// sent); a connection that dies with the request outstanding is `Lost`; no answer within
/// the timeout is `Timeout`. A dead connection is replaced on the next request.
pub struct RdmaTransport {
    device: Arc<dyn RdmaDevice>,
    config: RdmaConfig,
    grpc: GrpcTransport,
    entries: Mutex<HashMap<String, Entry>>,
    metrics: TransportMetrics,
}

impl std::fmt::Debug for RdmaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaTransport")
            .field("device", &self.device.name())
            .field("config", &self.config)
            .finish()
    }
}

impl RdmaTransport {
    /// A transport on `device`; connections are opened on first use of each node.
    pub fn new(
        device: Arc<dyn RdmaDevice>,
        config: RdmaConfig,
        metrics: TransportMetrics,
    ) -> RdmaTransport {
        let grpc = GrpcTransport::new(GrpcConfig {
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            max_message_size: config.max_message,
            ..GrpcConfig::default()
        });
        RdmaTransport {
            device,
            config,
            grpc,
            entries: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Open RDMA connections (for tests and status output).
    pub fn rdma_connections(&self) -> usize {
        self.entries
            .lock()
            .values()
            .filter(|e| matches!(&e.route, Some(Route::Rdma(c)) if c.conn.dead_reason().is_none()))
            .count()
    }

    /// The route to `addr`, connecting first if there is none or the last one died.
    async fn route(&self, addr: &str) -> Result<Route, TransportError> {
        let connecting = {
            let mut entries = self.entries.lock();
            let entry = entries.entry(addr.to_owned()).or_default();
            match &entry.route {
                Some(Route::Rdma(c)) if c.conn.dead_reason().is_none() => {
                    return Ok(Route::Rdma(c.clone()));
                }
                Some(Route::Tcp) => return Ok(Route::Tcp),
                _ => entry.connecting.clone(),
            }
        };
        let _guard = connecting.lock().await;
        if let Some(Entry {
            route: Some(route), ..
        }) = self.entries.lock().get(addr)
        {
            match route {
                Route::Rdma(c) if c.conn.dead_reason().is_none() => return Ok(route.clone()),
                Route::Tcp => return Ok(Route::Tcp),
                Route::Rdma(_) => {}
            }
        }
        let route = self.connect(addr).await?;
        self.entries
            .lock()
            .entry(addr.to_owned())
            .or_default()
            .route = Some(route.clone());
        Ok(route)
    }

    async fn connect(&self, addr: &str) -> Result<Route, TransportError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            TransportError::Unreachable(format!("{addr}: rdma {what}: {e}"))
        };
        let qp = prepare_qp(self.device.as_ref(), self.config.qp)
            .map_err(|e| unreachable("queue pair", &e))?;
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| unreachable("address", &e))?
            .tcp_nodelay(true)
            .connect_timeout(self.config.connect_timeout)
            .timeout(self.config.connect_timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable("setup channel", &e))?;
        let request = rpb::SetupRequest {
            client: Some(endpoint_to_proto(&qp.endpoint())),
        };
        let response = match RdmaConnectClient::new(channel).setup(request).await {
            Ok(response) => response.into_inner(),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::Unimplemented
                ) =>
            {
                qp.destroy();
                if self.config.fallback_to_tcp {
                    tracing::info!(
                        addr,
                        reason = status.message(),
                        "node serves no RDMA; using TCP"
                    );
                    return Ok(Route::Tcp);
                }
                return Err(TransportError::Rejected(format!(
                    "{addr} serves no RDMA: {}",
                    status.message()
                )));
            }
            Err(status) => return Err(unreachable("setup", &status.message())),
        };
        let remote = response
            .server
            .as_ref()
            .and_then(endpoint_from_proto)
            .ok_or_else(|| unreachable("setup", &"malformed queue-pair info"))?;
        qp.connect(&remote)
            .map_err(|e| unreachable("connect", &e))?;
        let pending: Pending = Arc::default();
        let on_message = {
            let pending = pending.clone();
            Box::new(move |message: Message, _: &ConnSender| {
                if let Some(tx) = pending.lock().remove(&message.request_id) {
                    let _ = tx.send(Ok(message));
                }
                // No waiter: the request timed out; its late answer is dropped.
            })
        };
        let on_dead = {
            let pending = pending.clone();
            let addr = addr.to_owned();
            Box::new(move |reason: &str| {
                let waiting: Vec<_> = pending.lock().drain().collect();
                for (_, tx) in waiting {
                    let _ = tx.send(Err(TransportError::Lost(format!(
                        "{addr}: rdma connection failed: {reason}"
                    ))));
                }
            })
        };
        let conn = Connection::start(
            qp,
            remote.slot_bytes,
            self.config.max_message,
            on_message,
            on_dead,
            self.metrics.clone(),
            &tokio::runtime::Handle::current(),
        )
        .map_err(|e| unreachable("start", &e))?;
        let pinger = tokio::spawn(liveness(
            Arc::downgrade(&conn),
            pending.clone(),
            self.config.liveness_interval,
            self.config.keepalive_interval,
        ));
        tracing::debug!(addr, qp = remote.qp_num, device = %remote.device, "rdma connection up");
        Ok(Route::Rdma(Arc::new(ClientConn {
            conn,
            pending,
            next_id: AtomicU64::new(1),
            pinger,
        })))
    }

    /// One request/response over RDMA; `expect` is the response kind that answers it.
    async fn call(
        &self,
        client: &ClientConn,
        addr: &str,
        kind: Kind,
        payload: Vec<u8>,
        expect: Kind,
    ) -> Result<Vec<u8>, TransportError> {
        let id = client.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        client.pending.lock().insert(id, tx);
        if let Err(e) = client.conn.sender().send(kind, id, payload) {
            client.pending.lock().remove(&id);
            return Err(match e {
                SendError::TooLarge { .. } => TransportError::Rejected(format!("{addr}: {e}")),
                SendError::Dead(_) => TransportError::Unreachable(format!("{addr}: {e}")),
            });
        }
        let timeout = self.config.request_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(message))) if message.kind == expect => Ok(message.payload),
            Ok(Ok(Ok(message))) if message.kind == Kind::Rejected => Err(TransportError::Rejected(
                format!("{addr}: {}", String::from_utf8_lossy(&message.payload)),
            )),
            Ok(Ok(Ok(message))) => {
                client.conn.close();
                Err(TransportError::Lost(format!(
                    "{addr}: answer of kind {:?} to a {kind:?}",
                    message.kind
                )))
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(TransportError::Lost(format!("{addr}: connection dropped"))),
            Err(_) => {
                client.pending.lock().remove(&id);
                Err(TransportError::Timeout(format!(
                    "{addr}: no answer within {timeout:?}"
                )))
            }
        }
    }
}

/// Pings while requests wait and nothing arrives, so a dead peer turns into a failed send,
/// and every `keepalive` regardless, so the node sees this client is alive.
async fn liveness(
    conn: std::sync::Weak<Connection>,
    pending: Pending,
    interval: Duration,
    keepalive: Duration,
) {
    let mut tick = tokio::time::interval(interval.min(keepalive));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(conn) = conn.upgrade() else { return };
        if conn.dead_reason().is_some() {
            return;
        }
        let waiting = !pending.lock().is_empty() && conn.since_last_received() >= interval;
        if waiting || last_ping.elapsed() >= keepalive {
            last_ping = tokio::time::Instant::now();
            let _ = conn.sender().send(Kind::Ping, 0, Vec::new());
        }
    }
}

fn decode<M: prost::Message + Default>(addr: &str, bytes: &[u8]) -> Result<M, TransportError> {
    // The request was served; an undecodable answer leaves its effect unknown.
    M::decode(bytes).map_err(|e| TransportError::Lost(format!("{addr}: malformed answer: {e}")))
}

#[async_trait]
impl Transport for RdmaTransport {
    async fn batch(
        &self,
        addr: &str,
        req: pb::BatchRequest,
    ) -> Result<pb::BatchResponse, TransportError> {
        match self.route(addr).await? {
            Route::Tcp => self.grpc.batch(addr, req).await,
            Route::Rdma(client) => {
                let bytes = self
                    .call(
                        &client,
                        addr,
                        Kind::BatchRequest,
                        req.encode_to_vec(),
                        Kind::BatchResponse,
                    )
                    .await?;
                decode(addr, &bytes)
            }
        }
    }

    async fn scan(
        &self,
        addr: &str,
        req: pb::ScanRequest,
    ) -> Result<pb::ScanResponse, TransportError> {
        match self.route(addr).await? {
            Route::Tcp => self.grpc.scan(addr, req).await,
            Route::Rdma(client) => {
                let bytes = self
                    .call(
                        &client,
                        addr,
                        Kind::ScanRequest,
                        req.encode_to_vec(),
                        Kind::ScanResponse,
                    )
                    .await?;
                decode(addr, &bytes)
            }
        }
    }

    async fn get_map(&self, addr: &str) -> Result<pb::PartitionMap, TransportError> {
        self.grpc.get_map(addr).await
    }
}

/// The wire form of a queue-pair endpoint.
pub fn endpoint_to_proto(e: &QpEndpoint) -> rpb::QueuePairInfo {
    rpb::QueuePairInfo {
        qp_num: e.qp_num,
        lid: u32::from(e.lid),
        gid: e.gid.to_vec().into(),
        psn: e.psn,
        slot_bytes: e.slot_bytes,
        recv_slots: e.recv_slots,
        device: e.device.clone(),
    }
}

/// A queue-pair endpoint from its wire form; `None` when a field is out of range.
pub fn endpoint_from_proto(p: &rpb::QueuePairInfo) -> Option<QpEndpoint> {
    Some(QpEndpoint {
        qp_num: p.qp_num,
        lid: u16::try_from(p.lid).ok()?,
        gid: p.gid.as_ref().try_into().ok()?,
        psn: p.psn,
        slot_bytes: p.slot_bytes,
        recv_slots: p.recv_slots,
        device: p.device.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_survive_the_wire_and_bad_ones_are_refused() {
        let e = QpEndpoint {
            qp_num: 77,
            lid: 3,
            gid: [9; 16],
            psn: 12345,
            slot_bytes: 4096,
            recv_slots: 32,
            device: "mlx5_0".into(),
        };
        assert_eq!(endpoint_from_proto(&endpoint_to_proto(&e)), Some(e.clone()));
        let mut bad = endpoint_to_proto(&e);
        bad.gid = vec![1, 2, 3].into();
        assert_eq!(endpoint_from_proto(&bad), None);
        let mut bad = endpoint_to_proto(&e);
        bad.lid = 70_000;
        assert_eq!(endpoint_from_proto(&bad), None);
    }
}
