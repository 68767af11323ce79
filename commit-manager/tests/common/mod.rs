//! Shared set-up of the commit-manager tests: an in-process storage cluster, managers on it,
//! clients, and waiting on conditions.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use shmdb_proto::commit as pb;
use shmdb_proto::commit::commit_manager_client::CommitManagerClient;
use tokio::process::{Child, Command};

use shmdb::cluster::{ClusterOptions, LocalCluster};
use shmdb_commit_manager::{
    CommitClient, CommitClientConfig, ManagerConfig, Recovery, RunningManager,
};
use shmdb_store_client::{StoreClient, StoreClientConfig};

/// A one-node in-process storage cluster and a client of it.
pub struct Store {
    pub cluster: LocalCluster,
    pub client: StoreClient,
}

pub async fn store() -> anyhow::Result<Store> {
    let cluster = LocalCluster::start(&ClusterOptions::ephemeral(1, 1)).await?;
    let client = StoreClient::connect(StoreClientConfig::with_seeds(cluster.seeds())).await?;
    Ok(Store { cluster, client })
}

/// A manager configuration for tests: small tid blocks (several leases per test), the default
/// 5 ms publish interval, a short heartbeat timeout.
pub fn manager_config(id: u64, store: &Store) -> ManagerConfig {
    let mut cfg = ManagerConfig::local(id, store.cluster.seeds());
    cfg.tid_block = 100;
    cfg.heartbeat_timeout = Duration::from_secs(2);
    cfg
}

pub async fn start_manager(
    cfg: ManagerConfig,
    store: &Store,
    recovery: Arc<dyn Recovery>,
) -> anyhow::Result<RunningManager> {
    Ok(shmdb_commit_manager::start_with_store(cfg, store.client.clone(), recovery).await?)
}

/// A client of the given managers for processing node `node`.
pub fn client(managers: &[String], node: u64, preferred: usize) -> anyhow::Result<CommitClient> {
    client_with(managers, node, preferred, true)
}

/// A client as [`client`] makes, sending batches over sessions or as unary calls.
pub fn client_with(
    managers: &[String],
    node: u64,
    preferred: usize,
    sessions: bool,
) -> anyhow::Result<CommitClient> {
    let mut cfg = CommitClientConfig::new(managers.iter().cloned(), node);
    cfg.preferred = preferred;
    cfg.heartbeat_interval = Some(Duration::from_millis(200));
    // Generous: a commit to a killed manager waits for its restart, on a loaded machine.
    cfg.deadline = Duration::from_secs(30);
    cfg.sessions = sessions;
    Ok(CommitClient::new(cfg)?)
}

/// Polls `check` until it returns `Some`, failing after `timeout`. Condition waits, not
/// sleeps: the test proceeds the moment the condition holds.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A free 127.0.0.1 address (bound, then released for a child to take).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?)
}

/// A minimal HTTP/1.1 GET returning the body (for /metrics).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8(raw)?;
    Ok(raw
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// The value of the first sample of `metric` in a Prometheus text exposition.
pub fn metric_value(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Starts the `commit-manager` binary (small tid blocks, 1.5 s heartbeat timeout) and waits
/// until it answers. Killed when the handle is dropped.
pub async fn spawn_manager(id: u64, addr: SocketAddr, seeds: &[String]) -> anyhow::Result<Child> {
    spawn_manager_with(id, addr, seeds, &[]).await
}

/// As [`spawn_manager`], with extra command-line arguments.
pub async fn spawn_manager_with(
    id: u64,
    addr: SocketAddr,
    seeds: &[String],
    extra: &[&str],
) -> anyhow::Result<Child> {
    let child = Command::new(env!("CARGO_BIN_EXE_commit-manager"))
        .args(["--manager-id", &id.to_string()])
        .args(["--listen", &addr.to_string()])
        .args(["--store-seeds", &seeds.join(",")])
        .args(["--tid-block", "100"])
        .args(["--heartbeat-timeout-ms", "1500"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let child = Arc::new(Mutex::new(child));
    wait_for(
        &format!("manager {id} at {addr}"),
        Duration::from_secs(20),
        || async {
            if let Ok(Some(status)) = child.lock().try_wait() {
                panic!("manager {id} exited during start-up: {status}");
            }
            let mut client = CommitManagerClient::connect(format!("http://{addr}"))
                .await
                .ok()?;
            client.status(pb::StatusRequest {}).await.ok().map(|_| ())
        },
    )
    .await?;
    Arc::try_unwrap(child)
        .map(Mutex::into_inner)
        .map_err(|_| anyhow::anyhow!("child handle still shared"))
}
