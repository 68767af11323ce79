//! Starting and stopping a commit manager's servers (gRPC and metrics) in the current
//! runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shmdb_proto::commit::commit_manager_server::CommitManagerServer;
use shmdb_store_client::{StoreClient, StoreClientConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::ManagerConfig;
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::metrics::ManagerMetrics;
use crate::service::CommitService;
use shmdb_commit_client::Recovery;

/// Largest gRPC message: a start answer carries a snapshot of up to window/8 bytes.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A commit manager serving on its sockets; `shutdown` stops it.
#[derive(Debug)]
pub struct RunningManager {
    /// The manager (for in-process callers and tests).
    pub manager: Arc<Manager>,
    /// The bound gRPC address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound metrics address, if serving metrics.
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
}

/// Connects to the store named by `config.store_seeds` and starts serving.
pub async fn start(
    config: ManagerConfig,
    recovery: Arc<dyn Recovery>,
) -> Result<RunningManager, ManagerError> {
    config.validate().map_err(ManagerError::Config)?;
    let store =
        StoreClient::connect(StoreClientConfig::with_seeds(config.store_seeds.clone())).await?;
    start_with_store(config, store, recovery).await
}

/// Starts serving with an existing store client (tests share one).
pub async fn start_with_store(
    config: ManagerConfig,
    store: StoreClient,
    recovery: Arc<dyn Recovery>,
) -> Result<RunningManager, ManagerError> {
    config.validate().map_err(ManagerError::Config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ManagerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ManagerError::Bind {
        addr: config.listen,
        source,
    })?;
    let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    let metrics = ManagerMetrics::new(config.manager_id)
        .map_err(|e| ManagerError::Telemetry(e.to_string()))?;
    let health = shmdb_telemetry::Health::new();
    let mut background = Vec::new();
    let mut metrics_addr = None;
    if let Some(listen) = config.metrics_listen {
        let (bound, handle) =
            shmdb_telemetry::serve(listen, metrics.registry.clone(), health.clone())
                .await
                .map_err(|e| ManagerError::Telemetry(e.to_string()))?;
        metrics_addr = Some(bound);
        background.push(handle);
    }
    let manager = Manager::open(config, advertise, store, recovery, metrics, health).await?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let service = CommitManagerServer::new(CommitService::new(manager.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming(listener), async {
            let _ = stop_rx.await;
        });
    let server = tokio::spawn(server);
    tracing::info!(manager = manager.id(), %addr, "commit manager serving");
    Ok(RunningManager {
        manager,
        addr,
        metrics_addr,
        stop: Some(stop_tx),
        server,
        background,
    })
}

/// Accepted connections with Nagle's algorithm off. `Server::tcp_nodelay` applies only to
/// listeners tonic binds itself, and without it small answers wait for delayed ACKs (tens
/// of ms per round trip under load).
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not disable Nagle on a connection");
            }
        })
    })
}

impl RunningManager {
    /// Stops the background work and the servers, and waits for the gRPC server to end.
    pub async fn shutdown(mut self) {
        self.manager.stop();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in &self.background {
            task.abort();
        }
        let _ = (&mut self.server).await;
    }

    /// Stops at once, as a crash would: in-flight requests are dropped and pending commits
    /// are never acknowledged.
    pub fn abort(self) {
        self.manager.stop();
        self.server.abort();
        for task in &self.background {
            task.abort();
        }
    }

    /// Waits until the gRPC server stops (only on `shutdown` or an error).
    pub async fn wait(mut self) -> Result<(), String> {
        match (&mut self.server).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}
