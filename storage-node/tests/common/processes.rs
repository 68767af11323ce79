//! Storage nodes as real child processes, driven by a placement manager inside the test.
//!
//! Every node is a `storage-node` process on a free 127.0.0.1 port; the test owns the
//! placement manager (in-memory map store) and runs its rounds in a task, so it can kill,
//! pause and resume processes, add and drain nodes, and then check through the admin
//! `Report` of every live node that the replicas of every range are identical. Children are
//! killed when their handle is dropped, so no process outlives its test, also on a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use shmdb_placement::{NodeId, PartitionMap};
use shmdb_placement_manager::{ManagerConfig, MemoryMapStore, PlacementManager};
use shmdb_proto::storage::{self as pb, admin_client::AdminClient};
use shmdb_store_client::{StoreClient, StoreClientConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the test's placement manager runs a round.
pub const ROUND: Duration = Duration::from_millis(50);

/// Logs of the test process (placement manager, client) go to stderr when `SHMDB_TEST_LOG`
/// holds a filter (e.g. `info`); node processes then log to stderr with the same filter.
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("SHMDB_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A manager configuration for tests: fast probes and a quick verdict on lost nodes.
pub fn fast_manager(rpc_timeout: Duration, dead_after_failures: u32) -> ManagerConfig {
    let mut config = ManagerConfig {
        rpc_timeout,
        dead_after_failures,
        // The tests start their nodes before the map names them.
        dead_after_failures_unseen: dead_after_failures,
        catch_up_timeout: Duration::from_secs(10),
        ..ManagerConfig::default()
    };
    config.planner.split_bytes = 0;
    config
}

/// The id of a table that lies inside bootstrap range `index` of `ranges` (range 0 holds
/// table 1), so a workload can put data into every range of a bootstrap map.
pub fn table_in_range(index: u32, ranges: u32) -> u64 {
    u64::from(index) * (u64::MAX / u64::from(ranges.max(1))) + 1
}

/// One `storage-node` child process.
pub struct NodeProcess {
    /// Its node id.
    pub id: NodeId,
    /// Its gRPC address.
    pub addr: SocketAddr,
    child: Child,
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
}

impl NodeProcess {
    /// Starts a node and waits until it has bound its port (it prints its address then). A
    /// port taken in the meantime by someone else makes the child exit: another is tried.
    pub async fn spawn(id: NodeId, extra_args: &[String]) -> NodeProcess {
        Self::spawn_at(id, None, extra_args).await
    }

    /// Like [`NodeProcess::spawn`], at a given address when `listen` is set (a node
    /// restarted where its predecessor ran; then the address is not changed on failure).
    pub async fn spawn_at(
        id: NodeId,
        listen: Option<SocketAddr>,
        extra_args: &[String],
    ) -> NodeProcess {
        let log = std::env::var("SHMDB_TEST_LOG").ok();
        for _ in 0..5 {
            let addr = listen.unwrap_or_else(free_addr);
            let mut command = Command::new(env!("CARGO_BIN_EXE_storage-node"));
            command
                .arg("--node-id")
                .arg(id.to_string())
                .arg("--listen")
                .arg(addr.to_string())
                .args(extra_args)
                .env("RUST_LOG", log.as_deref().unwrap_or("warn"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(if log.is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .kill_on_drop(true);
            // SAFETY: the closure runs in the forked child before exec and only calls
            // prctl(2), which is async-signal-safe. It makes the kernel SIGKILL the node if
            // the test process dies without running its destructors (e.g. killed on a
            // timeout), so no node outlives its test even then. (The signal follows the
            // spawning thread: the test's own thread or a runtime worker, both of which
            // live as long as the test.)
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
            let mut child = command.spawn().expect("spawn storage-node");
            let stdout = child.stdout.take().expect("child stdout");
            let mut lines = BufReader::new(stdout).lines();
            let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
            if let Ok(Ok(Some(line))) = first
                && line.contains("listening on")
            {
                // Keep reading so the child never writes into a closed pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return NodeProcess { id, addr, child };
            }
            let _ = child.kill().await;
        }
        panic!("storage node {id} did not start");
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id().expect("the node process is running");
        let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child, which
        // has not been reaped (we hold its handle), so the id cannot name another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// SIGKILL, and reap the process.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill storage node");
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing. Returns once every
    /// thread of it is stopped (the signal is delivered asynchronously; a test that acts
    /// right after `kill(2)` could otherwise race threads still running).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let Some(pid) = self.child.id() else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "process {pid} did not stop after SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }
}

impl Drop for NodeProcess {
    /// Kills the node (also a paused one) and reaps it, so it leaves no zombie behind.
    fn drop(&mut self) {
        if self.child.start_kill().is_err() {
            return; // already reaped
        }
        for _ in 0..400 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Whether every thread of process `pid` is in the stopped state (`T` in
/// `/proc/<pid>/task/<tid>/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows the parenthesised command name, which may contain spaces.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T" || state == "t")
        })
    })
}

/// How to start a [`ProcessCluster`].
#[derive(Clone)]
pub struct ClusterSpec {
    /// Storage-node processes (ids 1..=nodes).
    pub nodes: u64,
    /// Replication factor of the bootstrap map.
    pub rf: u32,
    /// Bootstrap ranges (each gets one table, see [`table_in_range`]).
    pub ranges: u32,
    /// The placement manager's settings.
    pub manager: ManagerConfig,
    /// Extra flags for every node process.
    pub node_args: Vec<String>,
}

/// Storage-node processes plus the placement manager that drives them.
pub struct ProcessCluster {
    /// Running (or paused) node processes by id; killed ones are removed.
    pub nodes: BTreeMap<NodeId, NodeProcess>,
    /// The placement manager (its rounds run in a task while `running`).
    pub manager: Arc<PlacementManager>,
    /// One table inside each bootstrap range.
    pub tables: Vec<u64>,
    /// Nodes currently stopped with SIGSTOP.
    pub paused: BTreeSet<NodeId>,
    spec: ClusterSpec,
    next_id: NodeId,
    rounds: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl ProcessCluster {
    /// Starts the nodes, bootstraps the map and starts the manager's rounds.
    pub async fn start(spec: ClusterSpec) -> ProcessCluster {
        init_tracing();
        let spawned = futures::future::join_all(
            (1..=spec.nodes).map(|id| NodeProcess::spawn(id, &spec.node_args)),
        )
        .await;
        let nodes: BTreeMap<NodeId, NodeProcess> = spawned.into_iter().map(|n| (n.id, n)).collect();
        let manager = Arc::new(PlacementManager::new(
            Arc::new(MemoryMapStore::default()),
            spec.manager.clone(),
        ));
        let tables: Vec<u64> = (0..spec.ranges)
            .map(|i| table_in_range(i, spec.ranges))
            .collect();
        let addresses = nodes.values().map(|n| (n.id, n.addr.to_string())).collect();
        let table_names = tables.iter().map(|t| (*t, format!("t{t}"))).collect();
        manager
            .bootstrap(addresses, spec.rf, spec.ranges, table_names)
            .await
            .expect("bootstrap the partition map");
        let mut cluster = ProcessCluster {
            nodes,
            manager,
            tables,
            paused: BTreeSet::new(),
            next_id: spec.nodes + 1,
            spec,
            rounds: None,
        };
        cluster.start_manager();
        cluster
    }

    /// Starts the manager's rounds (every [`ROUND`]) unless they run.
    pub fn start_manager(&mut self) {
        if self.rounds.is_some() {
            return;
        }
        let (stop, mut stop_rx) = watch::channel(false);
        let manager = self.manager.clone();
        let task = tokio::spawn(async move {
            manager
                .run(ROUND, async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await;
        });
        self.rounds = Some((stop, task));
    }

    /// Stops the manager's rounds (after the current one finishes).
    pub async fn stop_manager(&mut self) {
        if let Some((stop, task)) = self.rounds.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    /// The gRPC address of a node.
    pub fn addr(&self, id: NodeId) -> String {
        self.nodes[&id].addr.to_string()
    }

    /// A store client seeded with every node, with the given timeouts.
    pub async fn client(&self, request_timeout: Duration, deadline: Duration) -> StoreClient {
        let config = StoreClientConfig {
            request_timeout,
            deadline,
            connect_timeout: Duration::from_millis(500),
            ..StoreClientConfig::with_seeds(self.nodes.values().map(|n| n.addr.to_string()))
        };
        StoreClient::connect(config).await.expect("store client")
    }

    /// The map the manager has stored.
    pub async fn map(&self) -> PartitionMap {
        self.manager.map().await.expect("partition map")
    }

    /// Starts one more node process and registers it with the manager.
    pub async fn add_node(&mut self) -> NodeId {
        let id = self.next_id;
        self.next_id += 1;
        let node = NodeProcess::spawn(id, &self.spec.node_args).await;
        self.manager
            .add_node(id, node.addr.to_string())
            .await
            .expect("register the new node");
        self.nodes.insert(id, node);
        id
    }

    /// Starts a new, empty node under a fresh id at the address of a killed one (a pod
    /// rescheduled with the same address) and registers it with the manager.
    pub async fn restart_at(&mut self, addr: SocketAddr) -> NodeId {
        let id = self.next_id;
        self.next_id += 1;
        let node = NodeProcess::spawn_at(id, Some(addr), &self.spec.node_args).await;
        self.manager
            .add_node(id, node.addr.to_string())
            .await
            .expect("register the restarted node");
        self.nodes.insert(id, node);
        id
    }

    /// SIGKILLs a node; it is gone for the rest of the test.
    pub async fn kill(&mut self, id: NodeId) {
        let mut node = self.nodes.remove(&id).expect("known node");
        node.kill().await;
    }

    /// SIGSTOPs a node.
    pub fn pause(&mut self, id: NodeId) {
        self.nodes[&id].pause();
        self.paused.insert(id);
    }

    /// SIGCONTs a paused node.
    pub fn resume(&mut self, id: NodeId) {
        self.nodes[&id].resume();
        self.paused.remove(&id);
    }

    /// Nodes that run and are not paused.
    pub fn live(&self) -> BTreeSet<NodeId> {
        self.nodes
            .keys()
            .copied()
            .filter(|id| !self.paused.contains(id))
            .collect()
    }

    /// A node's report of the ranges it holds, `None` if it does not answer in time.
    pub async fn report(&self, id: NodeId) -> Option<pb::RangeReport> {
        let addr = format!("http://{}", self.nodes.get(&id)?.addr);
        let call = async {
            let mut admin = AdminClient::connect(addr).await.ok()?;
            admin
                .report(pb::RangeReportRequest {
                    with_split_keys: false,
                })
                .await
                .ok()
                .map(|r| r.into_inner())
        };
        tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .ok()
            .flatten()
    }

    /// Polls the stored map until `cond` holds; panics after `timeout`.
    pub async fn wait_for_map(
        &self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&PartitionMap) -> bool,
    ) -> PartitionMap {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let map = self.map().await;
            if cond(&map) {
                return map;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; map: {}",
                describe(&map)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until placement has settled and every range's replicas are identical: every
    /// range has `replicas` replicas, all on live nodes, and no learner; every live node runs
    /// the stored map, holds exactly the ranges it gives it, none fenced, in the role it
    /// gives it; and all replicas of a range report the same applied log position, key count
    /// and bytes. Returns the map and the primaries' stats.
    pub async fn wait_converged(
        &self,
        timeout: Duration,
        replicas: usize,
    ) -> (PartitionMap, Vec<pb::RangeStats>) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let map = self.map().await;
            let mut reports = BTreeMap::new();
            for id in self.live() {
                if let Some(report) = self.report(id).await {
                    reports.insert(id, report);
                }
            }
            match self.check_converged(&map, &reports, replicas) {
                Ok(stats) => return (map, stats),
                Err(why) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "replicas did not converge: {why}\nmap: {}",
                    describe(&map)
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn check_converged(
        &self,
        map: &PartitionMap,
        reports: &BTreeMap<NodeId, pb::RangeReport>,
        replicas: usize,
    ) -> Result<Vec<pb::RangeStats>, String> {
        let live = self.live();
        for id in &live {
            let report = reports.get(id).ok_or(format!("node {id} did not report"))?;
            if report.map_version != map.version {
                return Err(format!(
                    "node {id} runs map v{}, stored is v{}",
                    report.map_version, map.version
                ));
            }
            let held: BTreeSet<u64> = report.ranges.iter().map(|r| r.range_id).collect();
            let given: BTreeSet<u64> = map
                .ranges
                .iter()
                .filter(|r| r.involves(*id))
                .map(|r| r.id)
                .collect();
            if held != given {
                return Err(format!(
                    "node {id} holds ranges {held:?}, the map gives it {given:?}"
                ));
            }
        }
        let mut primaries = Vec::new();
        for range in &map.ranges {
            if !range.learners.is_empty() || range.replicas.len() != replicas {
                return Err(format!(
                    "range {} has replicas {:?} and learners {:?}, want {replicas} replicas",
                    range.id, range.replicas, range.learners
                ));
            }
            let mut seen: Option<(NodeId, u64, u64, u64)> = None;
            for (i, node) in range.replicas.iter().enumerate() {
                if !live.contains(node) {
                    return Err(format!(
                        "range {} is on node {node}, which is not live",
                        range.id
                    ));
                }
                let stats = reports[node]
                    .ranges
                    .iter()
                    .find(|s| s.range_id == range.id)
                    .ok_or(format!("node {node} does not report range {}", range.id))?;
                let role = if i == 0 {
                    pb::ReplicaRole::Primary
                } else {
                    pb::ReplicaRole::Backup
                };
                if stats.fenced || stats.role != role as i32 {
                    return Err(format!(
                        "range {} on node {node}: fenced {} role {}",
                        range.id, stats.fenced, stats.role
                    ));
                }
                let mine = (*node, stats.applied_lsn, stats.keys, stats.bytes);
                match seen {
                    None => {
                        seen = Some(mine);
                        primaries.push(stats.clone());
                    }
                    Some((first, lsn, keys, bytes))
                        if (lsn, keys, bytes) != (mine.1, mine.2, mine.3) =>
                    {
                        return Err(format!(
                            "range {}: node {first} has (applied_lsn, keys, bytes) = {:?}, node {node} has {:?}",
                            range.id,
                            (lsn, keys, bytes),
                            (mine.1, mine.2, mine.3)
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(primaries)
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.rounds.take() {
            let _ = stop.send(true);
            task.abort();
        }
        // The node processes are killed by their handles (kill_on_drop), paused ones too.
    }
}

/// One line per range, for failure messages.
pub fn describe(map: &PartitionMap) -> String {
    let mut out = format!("v{}", map.version);
    for r in &map.ranges {
        out.push_str(&format!(
            "\n  range {} epoch {} replicas {:?} learners {:?}",
            r.id, r.epoch, r.replicas, r.learners
        ));
    }
    out
}
