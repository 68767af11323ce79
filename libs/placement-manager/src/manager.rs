//! Probing storage nodes, planning, and executing plans step by step.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use parking_lot::Mutex;
use shmdb_placement::{
    ClusterState, NodeId, PartitionMap, PlanError, PlannerConfig, RangeLoad, Step, apply, plan,
};
use shmdb_proto::storage::{self as pb, admin_client::AdminClient};
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::store::{MapStore, StoreError};

/// How the manager probes and acts.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Time allowed for one probe or admin call.
    pub rpc_timeout: Duration,
    /// Consecutive failed probes after which a node counts as lost.
    pub dead_after_failures: u32,
    /// The same for a node this manager has never heard from: a pod still starting (its
    /// image pulled, its process scheduled late on a busy machine) is not a lost node, and
    /// declaring it lost right after the map was bootstrapped onto it replaces copies that
    /// were never made.
    pub dead_after_failures_unseen: u32,
    /// How long a learner may take to catch up before its promotion is given up (retried
    /// next round).
    pub catch_up_timeout: Duration,
    /// Planner settings (split size, steps per round).
    pub planner: PlannerConfig,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            rpc_timeout: Duration::from_millis(500),
            dead_after_failures: 3,
            dead_after_failures_unseen: 60,
            catch_up_timeout: Duration::from_secs(30),
            planner: PlannerConfig {
                split_bytes: 64 << 20,
                max_steps: 64,
            },
        }
    }
}

/// Why a manager operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No map yet: bootstrap first.
    #[error("no partition map: the cluster is not bootstrapped")]
    NoMap,
    /// The map store failed or changed under us.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A step was not applicable to the map.
    #[error("plan step rejected: {0}")]
    Plan(#[from] PlanError),
    /// A node refused or failed an admin call.
    #[error("node {node}: {message}")]
    Node {
        /// The node.
        node: NodeId,
        /// What failed.
        message: String,
    },
    /// The request itself is invalid (unknown node, node still holding data, ...).
    #[error("{0}")]
    Invalid(String),
}

/// What one reconcile round did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconcileOutcome {
    /// Steps executed, in order.
    pub steps: Vec<Step>,
    /// Ranges with no live replica at all (their data is gone).
    pub lost: Vec<u64>,
    /// Nodes that answered the probe or are not yet declared lost.
    pub live: BTreeSet<NodeId>,
    /// Nodes that actually answered this round's probe: a node the map names but that has
    /// not answered may not hold what the map says yet (just bootstrapped, restarting), so
    /// the database is not known to be whole until every node is in here.
    pub answered: BTreeSet<NodeId>,
    /// Ranges below the replication factor after the round.
    pub under_replicated: usize,
}

/// Executes placement against a set of storage nodes; one per cluster (leader-elected in
/// Kubernetes).
pub struct PlacementManager {
    store: Arc<dyn MapStore>,
    config: ManagerConfig,
    clients: Mutex<HashMap<String, AdminClient<Channel>>>,
    failures: Mutex<HashMap<NodeId, u32>>,
    incarnations: Mutex<HashMap<NodeId, u64>>,
    draining: Mutex<BTreeSet<NodeId>>,
    /// Serializes rounds and explicit changes (one writer of the map at a time here; the
    /// store's compare-and-swap protects against other managers).
    round: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for PlacementManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacementManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PlacementManager {
    /// A manager over `store`.
    pub fn new(store: Arc<dyn MapStore>, config: ManagerConfig) -> Self {
        PlacementManager {
            store,
            config,
            clients: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            incarnations: Mutex::new(HashMap::new()),
            draining: Mutex::new(BTreeSet::new()),
            round: tokio::sync::Mutex::new(()),
        }
    }

    /// The stored map.
    pub async fn map(&self) -> Result<PartitionMap, ManagerError> {
        self.store.load().await?.ok_or(ManagerError::NoMap)
    }

    /// Creates the first map (unless one is stored) and pushes it to every node. Returns the
    /// map in force.
    pub async fn bootstrap(
        &self,
        nodes: BTreeMap<NodeId, String>,
        replication_factor: u32,
        ranges: u32,
        tables: BTreeMap<u64, String>,
    ) -> Result<PartitionMap, ManagerError> {
        let _round = self.round.lock().await;
        let map = match self.store.load().await? {
            Some(map) => map,
            None => {
                let mut map = PartitionMap::bootstrap(nodes, replication_factor, ranges);
                map.tables = tables;
                self.store.compare_and_swap(None, &map).await?;
                info!(version = map.version, "bootstrapped partition map");
                map
            }
        };
        self.push(&map, None, None).await;
        Ok(map)
    }

    /// Adds (or re-addresses) a storage node; the next rounds move ranges onto it.
    pub async fn add_node(
        &self,
        id: NodeId,
        address: String,
    ) -> Result<PartitionMap, ManagerError> {
        self.change(|map| {
            map.nodes.insert(id, address.clone());
            Ok(())
        })
        .await
    }

    /// Declares a table (storage tables are few and fixed by the layers above).
    pub async fn create_table(&self, id: u64, name: &str) -> Result<PartitionMap, ManagerError> {
        self.change(|map| {
            map.tables.insert(id, name.to_string());
            Ok(())
        })
        .await
    }

    /// Marks a node for removal: the next rounds move every replica off it.
    pub fn drain(&self, id: NodeId) {
        self.draining.lock().insert(id);
    }

    /// Whether a node holds nothing any more (drained or never used).
    pub async fn is_empty(&self, id: NodeId) -> Result<bool, ManagerError> {
        Ok(!self.map().await?.ranges.iter().any(|r| r.involves(id)))
    }

    /// Forgets a node that holds nothing (after a drain).
    pub async fn remove_node(&self, id: NodeId) -> Result<PartitionMap, ManagerError> {
        let map = self
            .change(|map| {
                if map.ranges.iter().any(|r| r.involves(id)) {
                    return Err(ManagerError::Invalid(format!(
                        "node {id} still holds ranges; drain it first"
                    )));
                }
                map.nodes.remove(&id);
                Ok(())
            })
            .await?;
        self.draining.lock().remove(&id);
        self.failures.lock().remove(&id);
        Ok(map)
    }

    async fn change(
        &self,
        edit: impl Fn(&mut PartitionMap) -> Result<(), ManagerError>,
    ) -> Result<PartitionMap, ManagerError> {
        let _round = self.round.lock().await;
        let current = self.map().await?;
        let mut next = current.clone();
        edit(&mut next)?;
        if next == current {
            return Ok(current);
        }
        next.version = current.version + 1;
        next.validate()
            .map_err(|e| ManagerError::Invalid(e.to_string()))?;
        self.store
            .compare_and_swap(Some(current.version), &next)
            .await?;
        self.push(&next, None, None).await;
        Ok(next)
    }

    fn client(&self, address: &str) -> Option<AdminClient<Channel>> {
        let mut clients = self.clients.lock();
        if let Some(client) = clients.get(address) {
            return Some(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .ok()?
            .tcp_nodelay(true)
            .connect_timeout(self.config.rpc_timeout)
            .timeout(self.config.rpc_timeout * 4);
        let client = AdminClient::new(endpoint.connect_lazy());
        clients.insert(address.to_string(), client.clone());
        Some(client)
    }

    async fn report(&self, address: &str, with_split_keys: bool) -> Option<pb::RangeReport> {
        let mut client = self.client(address)?;
        let call = client.report(pb::RangeReportRequest { with_split_keys });
        match tokio::time::timeout(self.config.rpc_timeout, call).await {
            Ok(Ok(resp)) => Some(resp.into_inner()),
            _ => None,
        }
    }

    /// Probes every node of the map: who is alive, what each holds.
    pub async fn probe(
        &self,
        map: &PartitionMap,
    ) -> (BTreeSet<NodeId>, BTreeMap<NodeId, pb::RangeReport>) {
        let with_split_keys = self.config.planner.split_bytes > 0;
        let probes = map
            .nodes
            .iter()
            .map(|(id, address)| async move { (*id, self.report(address, with_split_keys).await) });
        let results = join_all(probes).await;
        let mut live = BTreeSet::new();
        let mut reports = BTreeMap::new();
        let mut failures = self.failures.lock();
        let mut incarnations = self.incarnations.lock();
        for (id, report) in results {
            // A different node answering at a lost node's address does not revive it.
            match report.filter(|r| r.node_id == id) {
                Some(report) => {
                    failures.remove(&id);
                    let previous = incarnations.insert(id, report.incarnation);
                    if previous.is_some_and(|p| p != report.incarnation) {
                        // Restarted empty under the same id: for this round it is a lost
                        // node, so its old copies are replaced; from the next round on it is
                        // a fresh, empty node.
                        warn!(node = id, "storage node restarted; replacing its copies");
                        continue;
                    }
                    live.insert(id);
                    reports.insert(id, report);
                }
                None => {
                    let limit = if incarnations.contains_key(&id) {
                        self.config.dead_after_failures
                    } else {
                        self.config
                            .dead_after_failures_unseen
                            .max(self.config.dead_after_failures)
                    };
                    let count = failures.entry(id).or_insert(0);
                    *count += 1;
                    if *count < limit {
                        live.insert(id); // not yet declared lost
                    } else if *count == limit {
                        warn!(node = id, "storage node lost");
                    }
                }
            }
        }
        (live, reports)
    }

    /// One round: probe, bring lagging nodes up to the current map, plan, execute.
    pub async fn reconcile_once(&self) -> Result<ReconcileOutcome, ManagerError> {
        let _round = self.round.lock().await;
        let mut map = self.map().await?;
        let (live, reports) = self.probe(&map).await;
        // Nodes that answered but run an older map (restarted, or missed a push).
        for (id, report) in &reports {
            if report.map_version < map.version {
                self.install(*id, &map).await.ok();
            }
        }
        let reachable: BTreeSet<NodeId> = reports.keys().copied().collect();
        let mut loads: BTreeMap<u64, RangeLoad> = BTreeMap::new();
        for (node, report) in &reports {
            for stats in &report.ranges {
                loads
                    .entry(stats.range_id)
                    .or_default()
                    .record(*node, stats);
            }
        }
        let draining = self.draining.lock().clone();
        let state = ClusterState {
            map: map.clone(),
            live: live.clone(),
            draining,
            loads,
        };
        let planned = plan(&state, &self.config.planner);
        if !planned.lost.is_empty() {
            warn!(ranges = ?planned.lost, "ranges have no live replica");
        }
        let mut done = Vec::new();
        for step in planned.steps {
            match self.execute(&map, &step, &reachable).await {
                Ok(next) => {
                    map = next;
                    done.push(step);
                }
                Err(e) => {
                    warn!(%step, error = %e, "step failed; re-planning next round");
                    break;
                }
            }
        }
        Ok(ReconcileOutcome {
            steps: done,
            lost: planned.lost,
            under_replicated: map.under_replicated(),
            live,
            answered: reachable,
        })
    }

    /// Runs rounds until `stop` resolves.
    pub async fn run(&self, interval: Duration, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    match self.reconcile_once().await {
                        Ok(outcome) if !outcome.steps.is_empty() => {
                            info!(steps = outcome.steps.len(), "placement round done");
                        }
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "placement round failed"),
                    }
                }
            }
        }
    }

    /// Executes one step: node-side action, then the new map (stored, then pushed).
    async fn execute(
        &self,
        map: &PartitionMap,
        step: &Step,
        reachable: &BTreeSet<NodeId>,
    ) -> Result<PartitionMap, ManagerError> {
        info!(%step, "executing placement step");
        let range = map
            .range(step.range())
            .ok_or_else(|| ManagerError::Invalid(format!("no range {}", step.range())))?;
        let primary = range.primary().unwrap_or_default();
        let mut first = None;
        match step {
            Step::Split {
                range: id,
                at,
                left,
                right,
            } => {
                let address = map.nodes.get(&primary).cloned().unwrap_or_default();
                let mut client = self.client(&address).ok_or(ManagerError::Node {
                    node: primary,
                    message: "no address".into(),
                })?;
                client
                    .split_range(pb::SplitRangeRequest {
                        range_id: *id,
                        split_key: at.clone().into(),
                        left_id: *left,
                        right_id: *right,
                    })
                    .await
                    .map_err(|s| ManagerError::Node {
                        node: primary,
                        message: s.message().to_string(),
                    })?;
            }
            Step::PromoteLearner { range: id, node } => {
                self.wait_caught_up(map, *id, primary, *node).await?;
            }
            Step::TransferPrimary { .. } => {
                // The old primary first: it stops taking writes and lets its followers
                // catch up before anyone else learns of the change.
                first = Some(primary);
            }
            Step::PromoteBackup { .. } | Step::RemoveReplica { .. } | Step::AddLearner { .. } => {}
        }
        let next = apply(map, step)?;
        self.store
            .compare_and_swap(Some(map.version), &next)
            .await?;
        self.push(&next, first, Some(reachable)).await;
        Ok(next)
    }

    /// Waits until the primary reports the learner caught up. Gives up early when the
    /// primary or the learner stops answering (`dead_after_failures` probes in a row, a
    /// different node answering at its address included): the round then ends and the next
    /// one re-plans, so a node that dies meanwhile is replaced at once instead of after the
    /// whole catch-up timeout, during which no other range would be repaired.
    async fn wait_caught_up(
        &self,
        map: &PartitionMap,
        range: u64,
        primary: NodeId,
        learner: NodeId,
    ) -> Result<(), ManagerError> {
        let address = map.nodes.get(&primary).cloned().unwrap_or_default();
        let learner_address = map.nodes.get(&learner).cloned().unwrap_or_default();
        let deadline = Instant::now() + self.config.catch_up_timeout;
        let mut silent = 0;
        loop {
            let (from_primary, from_learner) = futures::join!(
                self.report(&address, false),
                self.report(&learner_address, false)
            );
            // Another node answering at a lost node's address does not count (as in `probe`).
            let from_primary = from_primary.filter(|r| r.node_id == primary);
            let from_learner = from_learner.filter(|r| r.node_id == learner);
            if let Some(report) = &from_primary {
                let caught_up = report
                    .ranges
                    .iter()
                    .filter(|r| r.range_id == range)
                    .flat_map(|r| &r.followers)
                    .any(|f| f.node == learner && f.caught_up);
                if caught_up {
                    return Ok(());
                }
            }
            silent = if from_primary.is_some() && from_learner.is_some() {
                0
            } else {
                silent + 1
            };
            if silent >= self.config.dead_after_failures.max(1) {
                let node = if from_primary.is_none() {
                    primary
                } else {
                    learner
                };
                return Err(ManagerError::Node {
                    node,
                    message: format!(
                        "stopped answering while the learner of range {range} caught up"
                    ),
                });
            }
            if Instant::now() > deadline {
                return Err(ManagerError::Node {
                    node: learner,
                    message: format!("learner of range {range} did not catch up in time"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn install(&self, node: NodeId, map: &PartitionMap) -> Result<(), ManagerError> {
        let address = map.nodes.get(&node).cloned().unwrap_or_default();
        let mut client = self.client(&address).ok_or(ManagerError::Node {
            node,
            message: "no address".into(),
        })?;
        match tokio::time::timeout(
            self.config.rpc_timeout * 20,
            client.install_map(map.to_proto()),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(ManagerError::Node {
                node,
                message: status.message().to_string(),
            }),
            Err(_) => Err(ManagerError::Node {
                node,
                message: "install timed out".into(),
            }),
        }
    }

    /// Pushes a map to the nodes (to `first` before the others), skipping unreachable ones;
    /// nodes that miss it are brought up to date by the next round.
    async fn push(
        &self,
        map: &PartitionMap,
        first: Option<NodeId>,
        reachable: Option<&BTreeSet<NodeId>>,
    ) {
        let targets: Vec<NodeId> = map
            .nodes
            .keys()
            .copied()
            .filter(|n| reachable.is_none_or(|r| r.contains(n)))
            .collect();
        if let Some(first) = first
            && targets.contains(&first)
            && let Err(e) = self.install(first, map).await
        {
            debug!(node = first, error = %e, "map push failed");
        }
        let rest = targets
            .into_iter()
            .filter(|n| Some(*n) != first)
            .map(|n| async move { (n, self.install(n, map).await) });
        for (node, result) in join_all(rest).await {
            if let Err(e) = result {
                debug!(node, error = %e, "map push failed");
            }
        }
    }
}
