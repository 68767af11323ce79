//! Starting and stopping a storage node's servers (gRPC and metrics) in the current runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shmdb_proto::storage::{admin_server, replication_server, storage_server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::config::NodeConfig;
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
    stop: Option<oneshot::Sender<()>>,
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
    let node = Node::new(config, metrics.clone());
    let service = NodeService::new(node.clone());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let max = crate::MAX_MESSAGE_BYTES;
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
    tracing::info!(node = node.id(), %addr, "storage node serving");
    Ok(RunningNode {
        node,
        addr,
        metrics_addr,
        stop: Some(stop_tx),
        server,
        background,
    })
}

impl RunningNode {
    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in &self.background {
            task.abort();
        }
        let _ = (&mut self.server).await;
    }

    /// Stops at once, as a crash would (in-flight requests are dropped).
    pub fn abort(self) {
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
