//! Storage nodes for placement tests: real `storage-node` processes when the binary is
//! built (as `cargo test --workspace` does), else in-process nodes with the same gRPC API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The storage-node binary: `SHMDB_STORAGE_NODE_BIN`, or next to the test's target dir.
pub fn binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("SHMDB_STORAGE_NODE_BIN") {
        return Some(PathBuf::from(path));
    }
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("storage-node");
    candidate.exists().then_some(candidate)
}

enum Kind {
    Process(Child),
    InProcess(shmdb_storage_node::RunningNode),
}

/// One storage node.
pub struct Node {
    /// Its id.
    pub id: u64,
    /// Its gRPC address.
    pub addr: SocketAddr,
    kind: Option<Kind>,
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

impl Node {
    /// Starts node `id`.
    pub async fn start(id: u64) -> Node {
        match binary() {
            Some(bin) => Self::spawn(id, bin).await,
            None => {
                eprintln!("storage-node binary not built; running node {id} in-process");
                let config =
                    shmdb_storage_node::NodeConfig::local(id, "127.0.0.1:0".parse().expect("addr"));
                let running = shmdb_storage_node::start(config).await.expect("start node");
                Node {
                    id,
                    addr: running.addr,
                    kind: Some(Kind::InProcess(running)),
                }
            }
        }
    }

    async fn spawn(id: u64, bin: PathBuf) -> Node {
        for _ in 0..5 {
            let addr = free_addr();
            let mut child = Command::new(&bin)
                .arg("--node-id")
                .arg(id.to_string())
                .arg("--listen")
                .arg(addr.to_string())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn storage-node");
            let stdout = child.stdout.take().expect("stdout");
            let mut lines = BufReader::new(stdout).lines();
            let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
            if let Ok(Ok(Some(line))) = first
                && line.contains("listening on")
            {
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return Node {
                    id,
                    addr,
                    kind: Some(Kind::Process(child)),
                };
            }
            let _ = child.kill().await;
        }
        panic!("storage node {id} did not start");
    }

    /// Kills the node abruptly (SIGKILL for a process; aborting the server in-process).
    pub async fn kill(mut self) {
        match self.kind.take() {
            Some(Kind::Process(mut child)) => child.kill().await.expect("kill"),
            Some(Kind::InProcess(running)) => running.abort(),
            None => {}
        }
    }
}
