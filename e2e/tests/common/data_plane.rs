//! Storage-node processes standing in for storage pods on simulated (kwok) nodes.
//!
//! With `SHMDB_E2E_DATA_PLANE=host` (the harness sets it) nothing runs inside the pods, so
//! [`StorageFollower`] plays the kubelet for one database's storage tier: for every live
//! storage pod it runs a `storage-node` process on its own loopback address, and it maps
//! the pod's DNS name (the address the partition map records) to that address in
//! `/etc/hosts`. A pod that is deleted and recreated gets a fresh, empty process, as a real
//! pod would. On a cluster with real pods the follower does nothing.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use parking_lot::Mutex;
use shmdb_operator::resources::{
    Names, STORAGE_PORT, Tier, selector_labels, storage_node_address, storage_node_id,
};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::cluster::Cluster;

const HOSTS: &str = "/etc/hosts";
/// Serializes this process's edits of `/etc/hosts` (test binaries run one at a time).
static HOSTS_LOCK: Mutex<()> = Mutex::new(());

/// Whether storage pods need host processes (simulated nodes).
pub fn host_mode() -> bool {
    std::env::var("SHMDB_E2E_DATA_PLANE").is_ok_and(|v| v == "host")
}

fn storage_node_bin() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SHMDB_E2E_BIN_DIR") {
        return Ok(PathBuf::from(dir).join("storage-node"));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .context("test binary has no target dir")?;
    let bin = dir.join("storage-node");
    if !bin.exists() {
        bail!(
            "{} not built: cargo build -p shmdb-storage-node (or set SHMDB_E2E_BIN_DIR)",
            bin.display()
        );
    }
    Ok(bin)
}

struct Process {
    uid: String,
    /// `None` once the test killed it ([`StorageFollower::crash`]): a crashed container
    /// stays down until its pod is replaced.
    child: Option<Child>,
}

/// Runs one database's storage nodes as host processes while its storage pods exist.
pub struct StorageFollower {
    inner: Option<Inner>,
}

struct Inner {
    namespace: String,
    processes: Arc<Mutex<BTreeMap<String, Process>>>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl StorageFollower {
    /// Starts following `database`'s storage pods (no-op unless [`host_mode`]).
    pub async fn start(cluster: &Cluster, namespace: &str, database: &str) -> Result<Self> {
        if !host_mode() {
            return Ok(StorageFollower { inner: None });
        }
        let bin = storage_node_bin()?;
        let names = Names {
            database: database.to_string(),
            namespace: namespace.to_string(),
        };
        let processes = Arc::new(Mutex::new(BTreeMap::new()));
        let (stop, stop_rx) = watch::channel(false);
        let follower = Follower {
            pods: Api::namespaced(cluster.client.clone(), namespace),
            names,
            bin,
            processes: processes.clone(),
        };
        let handle = tokio::spawn(follower.run(stop_rx));
        Ok(StorageFollower {
            inner: Some(Inner {
                namespace: namespace.to_string(),
                processes,
                stop,
                handle,
            }),
        })
    }

    /// Kills the storage node of pod `ordinal` as a crash would, leaving the pod in place.
    /// Returns false when there is no such process (or pods are real).
    pub fn crash(&self, database: &str, ordinal: i32) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let pod = format!("{database}-storage-{ordinal}");
        let mut processes = inner.processes.lock();
        match processes.get_mut(&pod).and_then(|p| p.child.take()) {
            Some(mut child) => child.start_kill().is_ok(),
            None => false,
        }
    }

    /// Pods that have a running process.
    pub fn running(&self) -> Vec<String> {
        self.inner.as_ref().map_or_else(Vec::new, |inner| {
            inner
                .processes
                .lock()
                .iter()
                .filter(|(_, p)| p.child.is_some())
                .map(|(name, _)| name.clone())
                .collect()
        })
    }

    /// Stops every process and removes the namespace's `/etc/hosts` lines.
    pub async fn stop(self) {
        if let Some(inner) = self.inner {
            let _ = inner.stop.send(true);
            let _ = inner.handle.await;
            inner.processes.lock().clear();
            let _ = remove_hosts(&inner.namespace);
        }
    }
}

struct Follower {
    pods: Api<Pod>,
    names: Names,
    bin: PathBuf,
    processes: Arc<Mutex<BTreeMap<String, Process>>>,
}

impl Follower {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let selector = selector_labels(&self.names, Tier::Storage)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        loop {
            if let Ok(list) = self
                .pods
                .list(&ListParams::default().labels(&selector))
                .await
            {
                self.sync(&list.items);
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    fn sync(&self, pods: &[Pod]) {
        let live: BTreeMap<String, String> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| Some((p.metadata.name.clone()?, p.metadata.uid.clone()?)))
            .collect();
        let mut processes = self.processes.lock();
        processes.retain(|name, p| live.get(name) == Some(&p.uid));
        for (name, uid) in live {
            if processes.contains_key(&name) {
                continue;
            }
            let Some(ordinal) = name.rsplit('-').next().and_then(|o| o.parse::<i32>().ok()) else {
                continue;
            };
            match self.spawn(&name, ordinal) {
                Ok(child) => {
                    processes.insert(
                        name,
                        Process {
                            uid,
                            child: Some(child),
                        },
                    );
                }
                Err(e) => eprintln!("starting storage node for {name}: {e:#}"),
            }
        }
    }

    fn spawn(&self, pod: &str, ordinal: i32) -> Result<Child> {
        let address = storage_node_address(&self.names, ordinal);
        let host = address
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| address.clone());
        let ip = loopback_ip(&self.names, ordinal);
        add_host(&ip, &host, &self.names.namespace)?;
        let log: Stdio = match std::env::var_os("SHMDB_E2E_LOGS") {
            Some(dir) => File::create(
                PathBuf::from(dir).join(format!("{}-{pod}.log", self.names.namespace)),
            )?
            .into(),
            None => Stdio::null(),
        };
        let child = Command::new(&self.bin)
            .arg("--node-id")
            .arg(storage_node_id(ordinal).to_string())
            .env("SHMDB_LISTEN", format!("{ip}:{STORAGE_PORT}"))
            .env("SHMDB_ADVERTISE", &address)
            .env("SHMDB_METRICS_LISTEN", format!("{ip}:0"))
            .env("SHMDB_MEMORY_LIMIT", (64u64 << 20).to_string())
            .env("SHMDB_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        Ok(child)
    }
}

/// `127.77.<database slot>.<ordinal + 1>`: one address per pod, stable across restarts.
fn loopback_ip(names: &Names, ordinal: i32) -> String {
    let slot = names
        .namespace
        .bytes()
        .chain(names.database.bytes())
        .fold(2166136261u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(16777619)
        })
        % 250
        + 1;
    format!("127.77.{slot}.{}", ordinal + 1)
}

fn marker(namespace: &str) -> String {
    format!("# shmdb-e2e {namespace}")
}

/// Maps `host` to `ip` in `/etc/hosts` (replacing any other line for `host`), tagged with
/// `namespace` so [`remove_hosts`] finds it.
pub fn add_host(ip: &str, host: &str, namespace: &str) -> Result<()> {
    let _guard = HOSTS_LOCK.lock();
    let text = std::fs::read_to_string(HOSTS)?;
    let line = format!("{ip} {host} {}", marker(namespace));
    if text.lines().any(|l| l == line) {
        return Ok(());
    }
    let mut kept: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_none_or(|h| h != host))
        .collect();
    kept.push(&line);
    // In place (not rename): /etc/hosts is often a bind mount.
    std::fs::write(HOSTS, kept.join("\n") + "\n")
        .with_context(|| format!("writing {HOSTS} (the host data plane needs root)"))
}

/// Removes every `/etc/hosts` line [`add_host`] wrote for `namespace`.
pub fn remove_hosts(namespace: &str) -> Result<()> {
    let _guard = HOSTS_LOCK.lock();
    let text = std::fs::read_to_string(HOSTS)?;
    let tag = marker(namespace);
    let kept: Vec<&str> = text.lines().filter(|l| !l.ends_with(&tag)).collect();
    std::fs::write(HOSTS, kept.join("\n") + "\n")?;
    Ok(())
}
