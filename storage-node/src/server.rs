//! Starting and stopping a storage node's servers (gRPC, framed TCP, metrics).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shmdb_proto::storage::{self as pb, admin_server, replication_server, storage_server};
use shmdb_rdma_transport::select::Selected;
use shmdb_rdma_transport::verbs::QpConfig;
use shmdb_rdma_transport::{
    RdmaServer, RequestHandler, SelectError, TransportKind, TransportMetrics,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::config::NodeConfig;
use crate::framed::FramedServer;
use crate::metrics::NodeMetrics;
use crate::node::Node;
use crate::service::NodeService;

/// A storage node serving on its sockets; dropping it does not stop it, `shutdown` does.
#[derive(Debug)]
pub struct RunningNode {
    /// The node's state (for in-process inspection by the embedded cluster and tests).
    pub node: Arc<Node>,
    /// The bound gRPC address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound metrics address, if serving metrics.
    pub metrics_addr: Option<SocketAddr>,
    /// The data-path transport chosen at start (`tcp` or `rdma`).
    pub transport: &'static str,
    /// The RDMA side of the node (refuses connections when the transport is `tcp`).
    pub rdma: Arc<RdmaServer>,
    /// The `shmdb_transport_*` metrics of this node.
    pub transport_metrics: TransportMetrics,
    /// The framed TCP data path (`None` with `--transport grpc`).
    pub framed: Option<FramedServer>,
    stop: Option<oneshot::Sender<()>>,
    /// Tells open `Stream`s to end (see [`NodeService`]).
    stopping: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The metrics endpoint could not start.
    #[error("metrics endpoint: {0}")]
    Telemetry(String),
    /// The requested transport cannot be used (`--transport rdma` without a device).
    #[error(transparent)]
    Transport(#[from] SelectError),
    /// The RDMA server needs a tokio runtime.
    #[error("rdma server: {0}")]
    Runtime(#[from] tokio::runtime::TryCurrentError),
}

/// Serves requests that arrive over RDMA with the same node code (and the same latency
/// metric) as the gRPC service.
struct NodeHandler(Arc<Node>);

#[async_trait::async_trait]
impl RequestHandler for NodeHandler {
    async fn batch(&self, req: pb::BatchRequest) -> pb::BatchResponse {
        let started = std::time::Instant::now();
        let response = self.0.batch(req).await;
        self.0
            .metrics
            .request_seconds
            .with_label_values(&["batch"])
            .observe(started.elapsed().as_secs_f64());
        response
    }

    async fn scan(&self, req: pb::ScanRequest) -> pb::ScanResponse {
        let started = std::time::Instant::now();
        let response = self.0.scan(req).await;
        self.0
            .metrics
            .request_seconds
            .with_label_values(&["scan"])
            .observe(started.elapsed().as_secs_f64());
        response
    }
}

/// Decides the data-path transport: a device handed in by the caller (tests) wins unless
/// TCP was asked for; otherwise discovery decides (and logs) per `--transport`.
fn choose_transport(config: &NodeConfig) -> Result<Selected, SelectError> {
    match (&config.rdma_device, config.transport) {
        (Some(device), TransportKind::Auto | TransportKind::Rdma) => {
            tracing::info!(
                node = config.node_id,
                transport = "rdma",
                "storage transport: rdma (device {}, provided)",
                device.name()
            );
            Ok(Selected::Rdma {
                device: device.clone(),
            })
        }
        _ => shmdb_rdma_transport::select::select(config.transport),
    }
}

/// Binds the node's sockets and starts serving.
pub async fn start(config: NodeConfig) -> Result<RunningNode, StartError> {
    let metrics = NodeMetrics::new(config.node_id)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let metrics_listen = config.metrics_listen;
    let selected = choose_transport(&config)?;
    let framed_listener = match (&selected, config.framed_listen) {
        (Selected::Grpc { .. }, _) => None,
        (_, listen) => {
            let listen = listen.unwrap_or(SocketAddr::new(config.listen.ip(), 0));
            let listener = TcpListener::bind(listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: listen,
                    source,
                })?;
            Some((listen, listener))
        }
    };
    let transport_metrics = TransportMetrics::register(metrics.registry.registry())?;
    transport_metrics.set_in_use(selected.name());
    let transport = selected.name();
    let (device, why_not) = match selected {
        Selected::Rdma { device } => (Some(device), String::new()),
        Selected::Tcp { reason } | Selected::Grpc { reason } => (None, reason),
    };
    let node = Node::new(config, metrics.clone());
    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let max = crate::MAX_MESSAGE_BYTES;
    let framed = match framed_listener {
        Some((listen, listener)) => Some(
            FramedServer::start(
                listener,
                node.clone(),
                max,
                transport_metrics.framed.clone(),
                stopping_rx.clone(),
            )
            .map_err(|source| StartError::Bind {
                addr: listen,
                source,
            })?,
        ),
        None => None,
    };
    let service = NodeService::new(node.clone(), stopping_rx)
        .with_framed_port(framed.as_ref().map(|f| f.addr.port()));
    let rdma = RdmaServer::new(
        device,
        why_not,
        Arc::new(NodeHandler(node.clone())),
        QpConfig::default(),
        max,
        transport_metrics.clone(),
    )?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(
            storage_server::StorageServer::new(service.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            replication_server::ReplicationServer::new(service.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(rdma.service())
        .add_service(
            admin_server::AdminServer::new(service)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        // Accepted sockets need TCP_NODELAY too, or small responses wait for delayed ACKs.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop_rx.await;
            },
        );
    let server = tokio::spawn(server);
    let mut background = vec![tokio::spawn(refresh_gauges(node.clone()))];
    let mut metrics_addr = None;
    if let Some(listen) = metrics_listen {
        let health = shmdb_telemetry::Health::new();
        health.set_ready();
        let (bound, handle) = shmdb_telemetry::serve(listen, metrics.registry.clone(), health)
            .await
            .map_err(|e| StartError::Telemetry(e.to_string()))?;
        metrics_addr = Some(bound);
        background.push(handle);
    }
    let framed_addr = framed.as_ref().map(|f| f.addr.to_string());
    tracing::info!(
        node = node.id(),
        %addr,
        transport,
        framed = framed_addr.as_deref().unwrap_or("off"),
        "storage node serving"
    );
    Ok(RunningNode {
        node,
        addr,
        metrics_addr,
        transport,
        rdma,
        transport_metrics,
        framed,
        stop: Some(stop_tx),
        stopping,
        server,
        background,
    })
}

impl RunningNode {
    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) {
        self.stopping.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.rdma.shutdown();
        if let Some(framed) = &self.framed {
            framed.stop_accepting();
        }
        for task in &self.background {
            task.abort();
        }
        let _ = (&mut self.server).await;
    }

    /// Stops at once, as a crash would (in-flight requests are dropped).
    pub fn abort(self) {
        self.stopping.send_replace(true);
        self.rdma.abort();
        if let Some(framed) = &self.framed {
            framed.abort();
        }
        self.server.abort();
        for task in &self.background {
            task.abort();
        }
    }

    /// Waits until the server stops (it only stops on `shutdown` or an error).
    pub async fn wait(mut self) -> anyhow_free::Result {
        match (&mut self.server).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Result alias that keeps the library free of anyhow.
pub mod anyhow_free {
    /// A server outcome with the error rendered as text.
    pub type Result = std::result::Result<(), String>;
}

/// Keeps the gauges (memory, per-range sizes, roles) current for scrapes.
async fn refresh_gauges(node: Arc<Node>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        node.refresh_gauges();
    }
}
