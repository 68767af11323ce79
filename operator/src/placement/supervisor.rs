//! One placement task per database: leadership, bootstrap, node registration, drains,
//! placement rounds, and a snapshot of the outcome for the reconciler's status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use parking_lot::Mutex;
use shmdb_placement::PartitionMap;
use shmdb_placement_manager::{ManagerConfig, ManagerError, PlacementManager};
use shmdb_proto::storage::{self as pb, admin_client::AdminClient};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{ConfigMapMapStore, LeaseLock};
use crate::autoscale::MemoryUsage;
use crate::crd::SharedMemDatabase;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::resources::{
    Names, database_labels, owner_reference, storage_node_address, storage_node_id,
};

/// What the reconciler wants of the storage tier (from the autoscaler's decision).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageTarget {
    /// Pods the storage StatefulSet runs (every one is registered in the map).
    pub stateful_set_replicas: i32,
    /// Ordinals to drain before the StatefulSet shrinks.
    pub draining: Vec<i32>,
}

/// The last round's outcome, as the reconciler reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacementSnapshot {
    /// Whether this operator holds the database's placement Lease.
    pub leader: bool,
    /// Partition-map version, once a map exists.
    pub map_version: Option<u64>,
    /// Ranges in the map.
    pub ranges: usize,
    /// Ranges below the replication factor.
    pub under_replicated: usize,
    /// Ranges with no live replica.
    pub lost: usize,
    /// Map nodes that did not answer the last probe: until they do, the map's claim that
    /// every range has its copies is unconfirmed, so the database is not Ready.
    pub silent_nodes: usize,
    /// Steps executed in the last round.
    pub moves: usize,
    /// Record memory of the storage tier.
    pub memory: Option<MemoryUsage>,
    /// Ordinals drained and removed from the map (their pods may go).
    pub removable: BTreeSet<i32>,
    /// The last round's error, if it failed.
    pub last_error: Option<String>,
}

/// Fixed facts of one database's placement.
#[derive(Debug, Clone)]
struct Params {
    key: String,
    names: Names,
    replication_factor: u32,
    ranges: u32,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
}

struct Shared {
    target: StorageTarget,
    snapshot: PlacementSnapshot,
}

struct Task {
    shared: Arc<Mutex<Shared>>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Maps a storage pod ordinal to the address the partition map records for it.
pub type AddressFn = Arc<dyn Fn(&Names, i32) -> String + Send + Sync>;

/// Runs the placement tasks of every database this operator reconciles.
pub struct PlacementSupervisor {
    address: AddressFn,
    client: Client,
    holder: String,
    config: ManagerConfig,
    interval: Duration,
    lease_seconds: i32,
    metrics: Option<Metrics>,
    tasks: Mutex<HashMap<String, Task>>,
}

impl std::fmt::Debug for PlacementSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacementSupervisor")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl PlacementSupervisor {
    /// A supervisor whose tasks take Leases as `holder` (the operator pod's name) and run a
    /// placement round every `interval`.
    pub fn new(
        client: Client,
        holder: impl Into<String>,
        config: ManagerConfig,
        interval: Duration,
        metrics: Option<Metrics>,
    ) -> Self {
        PlacementSupervisor {
            address: Arc::new(storage_node_address),
            client,
            holder: holder.into(),
            config,
            interval,
            lease_seconds: 15,
            metrics,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces how pod ordinals become node addresses (the pods' DNS names by default), so
    /// tests can run the supervisor against storage nodes on 127.0.0.1.
    pub fn with_addresses(mut self, address: AddressFn) -> Self {
        self.address = address;
        self
    }

    /// Replaces the Lease duration (15 s by default).
    pub fn with_lease_seconds(mut self, seconds: i32) -> Self {
        self.lease_seconds = seconds.max(3);
        self
    }

    fn key(db: &SharedMemDatabase) -> String {
        format!("{}/{}", db.namespace_or_default(), db.name())
    }

    /// The database's latest placement snapshot (default until its task has run a round).
    pub fn snapshot(&self, db: &SharedMemDatabase) -> PlacementSnapshot {
        self.tasks
            .lock()
            .get(&Self::key(db))
            .map(|task| task.shared.lock().snapshot.clone())
            .unwrap_or_default()
    }

    /// Hands the database's task the storage target, starting the task if needed.
    pub fn set_target(&self, db: &SharedMemDatabase, target: StorageTarget) {
        let key = Self::key(db);
        let mut tasks = self.tasks.lock();
        if let Some(task) = tasks.get(&key)
            && !task.handle.is_finished()
        {
            task.shared.lock().target = target;
            return;
        }
        let params = Params {
            key: key.clone(),
            names: Names::of(db),
            replication_factor: u32::try_from(db.spec.replication_factor).unwrap_or(1),
            ranges: u32::try_from(db.spec.ranges.initial).unwrap_or(1),
            owner: owner_reference(db),
        };
        let mut config = self.config.clone();
        config.planner.split_bytes = u64::try_from(db.spec.ranges.split_bytes).unwrap_or(0);
        let shared = Arc::new(Mutex::new(Shared {
            target,
            snapshot: PlacementSnapshot::default(),
        }));
        let (stop, stop_rx) = watch::channel(false);
        let runner = Runner {
            address: self.address.clone(),
            client: self.client.clone(),
            holder: self.holder.clone(),
            config,
            interval: self.interval,
            lease_seconds: self.lease_seconds,
            metrics: self.metrics.clone(),
            params,
            shared: shared.clone(),
            admin: HashMap::new(),
        };
        let span = info_span!("placement", database = %key);
        let handle = tokio::spawn(runner.run(stop_rx).instrument(span));
        tasks.insert(
            key,
            Task {
                shared,
                stop,
                handle,
            },
        );
    }

    /// Stops the tasks of the databases `keep(namespace, name)` refuses (each releases its
    /// Lease, so another operator can lead at once) and says how many stopped. For databases
    /// that leave this operator without a deletion, e.g. relabelled out of its selector.
    pub async fn retain(&self, keep: impl Fn(&str, &str) -> bool) -> usize {
        let gone: Vec<Task> = {
            let mut tasks = self.tasks.lock();
            let keys: Vec<String> = tasks
                .keys()
                .filter(|key| {
                    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
                    !keep(namespace, name)
                })
                .cloned()
                .collect();
            keys.iter().filter_map(|key| tasks.remove(key)).collect()
        };
        let stopped = gone.len();
        for task in gone {
            let _ = task.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), task.handle).await;
        }
        stopped
    }

    /// Stops the database's task (it releases its Lease) — on deletion.
    pub async fn forget(&self, db: &SharedMemDatabase) {
        let task = self.tasks.lock().remove(&Self::key(db));
        if let Some(task) = task {
            let _ = task.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), task.handle).await;
        }
    }
}

struct Runner {
    address: AddressFn,
    client: Client,
    holder: String,
    config: ManagerConfig,
    interval: Duration,
    lease_seconds: i32,
    metrics: Option<Metrics>,
    params: Params,
    shared: Arc<Mutex<Shared>>,
    admin: HashMap<String, AdminClient<Channel>>,
}

impl Runner {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let ns = self.params.names.namespace.clone();
        let lock = LeaseLock::new(
            Api::namespaced(self.client.clone(), &ns),
            self.params.names.placement_lease(),
            self.holder.clone(),
            self.lease_seconds,
            Some(self.params.owner.clone()),
        );
        let store = Arc::new(ConfigMapMapStore::new(
            Api::namespaced(self.client.clone(), &ns),
            self.params.names.partition_map(),
            Some(self.params.owner.clone()),
            database_labels(&self.params.names),
        ));
        let mut manager: Option<PlacementManager> = None;
        let mut drains_sent: BTreeSet<u64> = BTreeSet::new();
        let mut renewed: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
            // Renew at a third of the lease duration, not every round: two API calls per
            // renewal and database add up.
            let renew_every =
                Duration::from_secs(u64::try_from(self.lease_seconds / 3).unwrap_or(1));
            let fresh = manager.is_some()
                && renewed.is_some_and(|at: std::time::Instant| at.elapsed() < renew_every);
            let leader = if fresh {
                true
            } else {
                match lock.try_acquire(Timestamp::now()).await {
                    Ok(leader) => {
                        renewed = leader.then(std::time::Instant::now);
                        leader
                    }
                    Err(e) => {
                        warn!(error = %e, "placement lease");
                        false
                    }
                }
            };
            if !leader {
                if manager.take().is_some() {
                    info!("lost the placement lease");
                }
                self.shared.lock().snapshot.leader = false;
                continue;
            }
            let target = self.shared.lock().target.clone();
            let wanted: BTreeSet<u64> = target
                .draining
                .iter()
                .map(|o| storage_node_id(*o))
                .collect();
            // A cancelled drain: the executor keeps its drain set until a node is removed,
            // so start over with a fresh executor (it re-learns everything from the map).
            if !drains_sent.is_subset(&wanted) {
                manager = None;
                drains_sent.clear();
            }
            let manager = manager.get_or_insert_with(|| {
                info!("leading placement");
                PlacementManager::new(store.clone(), self.config.clone())
            });
            let result = self.round(manager, &target, &mut drains_sent).await;
            let mut shared = self.shared.lock();
            shared.snapshot.leader = true;
            match result {
                Ok(snapshot) => {
                    if let Some(metrics) = &self.metrics {
                        let db = [self.params.key.as_str()];
                        let version = snapshot.map_version.unwrap_or(0);
                        metrics
                            .map_version
                            .with_label_values(&db)
                            .set(i64::try_from(version).unwrap_or(i64::MAX));
                        metrics
                            .under_replicated
                            .with_label_values(&db)
                            .set(snapshot.under_replicated as i64);
                        metrics
                            .moves_in_flight
                            .with_label_values(&db)
                            .set(snapshot.moves as i64);
                    }
                    shared.snapshot = snapshot;
                }
                Err(e) => {
                    warn!(error = %e, "placement round failed");
                    shared.snapshot.last_error = Some(e.to_string());
                }
            }
        }
        if let Err(e) = lock.release().await {
            debug!(error = %e, "releasing the placement lease");
        }
    }

    async fn round(
        &mut self,
        manager: &PlacementManager,
        target: &StorageTarget,
        drains_sent: &mut BTreeSet<u64>,
    ) -> Result<PlacementSnapshot> {
        let names = &self.params.names;
        let map = match manager.map().await {
            Ok(map) => map,
            Err(ManagerError::NoMap) => {
                let nodes: BTreeMap<u64, String> = (0..target.stateful_set_replicas.max(1))
                    .map(|o| (storage_node_id(o), (self.address)(names, o)))
                    .collect();
                let tables = shmdb_placement::tables::BOOTSTRAP
                    .iter()
                    .map(|(id, name)| (*id, name.to_string()))
                    .collect();
                info!(nodes = nodes.len(), "bootstrapping the partition map");
                manager
                    .bootstrap(
                        nodes,
                        self.params.replication_factor,
                        self.params.ranges,
                        tables,
                    )
                    .await?
            }
            Err(e) => return Err(Error::Placement(e)),
        };
        for ordinal in 0..target.stateful_set_replicas {
            let id = storage_node_id(ordinal);
            if !map.nodes.contains_key(&id) {
                info!(node = id, "registering storage node");
                manager.add_node(id, (self.address)(names, ordinal)).await?;
            }
        }
        let mut removable: BTreeSet<i32> = BTreeSet::new();
        for ordinal in &target.draining {
            let id = storage_node_id(*ordinal);
            if !manager.map().await?.nodes.contains_key(&id) {
                removable.insert(*ordinal);
                continue;
            }
            manager.drain(id);
            drains_sent.insert(id);
            if manager.is_empty(id).await? {
                info!(node = id, "storage node drained; removing it from the map");
                manager.remove_node(id).await?;
                drains_sent.remove(&id);
                removable.insert(*ordinal);
            }
        }
        let outcome = manager.reconcile_once().await?;
        if !outcome.lost.is_empty() {
            warn!(ranges = ?outcome.lost, "ranges have no live replica");
        }
        let map = manager.map().await?;
        let memory = self.memory(&map).await;
        Ok(PlacementSnapshot {
            leader: true,
            map_version: Some(map.version),
            ranges: map.ranges.len(),
            under_replicated: outcome.under_replicated,
            lost: outcome.lost.len(),
            silent_nodes: map
                .nodes
                .keys()
                .filter(|id| !outcome.answered.contains(id))
                .count(),
            moves: outcome.steps.len(),
            memory,
            removable,
            last_error: None,
        })
    }

    /// Record memory over the map's nodes, from their admin reports.
    async fn memory(&mut self, map: &PartitionMap) -> Option<MemoryUsage> {
        let mut usage = MemoryUsage::default();
        for address in map.nodes.values() {
            let client = match self.admin.get(address) {
                Some(c) => c.clone(),
                None => {
                    let endpoint = Endpoint::from_shared(format!("http://{address}"))
                        .ok()?
                        .connect_timeout(self.config.rpc_timeout);
                    let c = AdminClient::new(endpoint.connect_lazy());
                    self.admin.insert(address.clone(), c.clone());
                    c
                }
            };
            let mut client = client;
            let call = client.report(pb::RangeReportRequest {
                with_split_keys: false,
            });
            if let Ok(Ok(report)) = tokio::time::timeout(self.config.rpc_timeout, call).await {
                let report = report.into_inner();
                usage.used += report.memory_used;
                usage.limit += report.memory_limit;
                usage.nodes += 1;
            }
        }
        (usage.nodes > 0).then_some(usage)
    }
}
