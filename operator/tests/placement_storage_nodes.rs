//! The placement manager (the shared executor) against real storage nodes, with its
//! partition map in the operator's ConfigMap store (served by a fake API server): a killed
//! node's ranges regain their replication factor under write load without losing an
//! acknowledged write; a new node receives ranges; a drained node ends empty and removable;
//! the map survives a manager restart and concurrent managers never lose a map update.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::fake_api::FakeApi;
use common::nodes::Node;
use common::workload::Writers;
use kube::Api;
use shmdb_operator::placement::ConfigMapMapStore;
use shmdb_placement::PartitionMap;
use shmdb_placement_manager::{ManagerConfig, ManagerError, PlacementManager, StoreError};
use shmdb_store_client::{StoreClient, StoreClientConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const MAP_PATH: &str = "/api/v1/namespaces/ns/configmaps/db-partition-map";

fn store(api: &FakeApi) -> Arc<ConfigMapMapStore> {
    Arc::new(ConfigMapMapStore::new(
        Api::namespaced(api.client(), "ns"),
        "db-partition-map",
        None,
        BTreeMap::new(),
    ))
}

fn config() -> ManagerConfig {
    let mut config = ManagerConfig {
        rpc_timeout: Duration::from_millis(300),
        dead_after_failures: 3,
        catch_up_timeout: Duration::from_secs(10),
        ..ManagerConfig::default()
    };
    config.planner.split_bytes = 0;
    config
}

struct Cluster {
    api: FakeApi,
    nodes: BTreeMap<u64, Node>,
    manager: Arc<PlacementManager>,
    tables: Vec<u64>,
    rounds: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Cluster {
    async fn start(nodes: u64, rf: u32, ranges: u32) -> Cluster {
        let api = FakeApi::default();
        let mut started = BTreeMap::new();
        for id in 1..=nodes {
            started.insert(id, Node::start(id).await);
        }
        let manager = Arc::new(PlacementManager::new(store(&api), config()));
        let tables: Vec<u64> = (0..ranges)
            .map(|i| u64::from(i) * (u64::MAX / u64::from(ranges)) + 1)
            .collect();
        let addresses = started
            .values()
            .map(|n| (n.id, n.addr.to_string()))
            .collect();
        let names = tables.iter().map(|t| (*t, format!("t{t}"))).collect();
        manager
            .bootstrap(addresses, rf, ranges, names)
            .await
            .expect("bootstrap");
        let mut cluster = Cluster {
            api,
            nodes: started,
            manager,
            tables,
            rounds: None,
        };
        cluster.run_rounds();
        cluster
    }

    fn run_rounds(&mut self) {
        let (stop, mut rx) = watch::channel(false);
        let manager = self.manager.clone();
        let task = tokio::spawn(async move {
            manager
                .run(Duration::from_millis(50), async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        });
        self.rounds = Some((stop, task));
    }

    async fn stop_rounds(&mut self) {
        if let Some((stop, task)) = self.rounds.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }

    async fn client(&self) -> StoreClient {
        let config = StoreClientConfig {
            request_timeout: Duration::from_millis(500),
            deadline: Duration::from_secs(20),
            connect_timeout: Duration::from_millis(500),
            ..StoreClientConfig::with_seeds(self.nodes.values().map(|n| n.addr.to_string()))
        };
        StoreClient::connect(config).await.expect("store client")
    }

    async fn wait_for(
        &self,
        what: &str,
        mut cond: impl FnMut(&PartitionMap) -> bool,
    ) -> PartitionMap {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let map = self.manager.map().await.expect("map");
            if cond(&map) {
                return map;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {map:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn fully_replicated(map: &PartitionMap, rf: usize, avoid: Option<u64>) -> bool {
    map.ranges.iter().all(|r| {
        r.replicas.len() == rf && r.learners.is_empty() && avoid.is_none_or(|n| !r.involves(n))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_under_write_load_rf_restored_and_no_acknowledged_write_lost() {
    let mut cluster = Cluster::start(4, 2, 4).await;
    let client = cluster.client().await;
    let writers = Writers::start(&client, &cluster.tables, 4, 6);
    writers.progress(200, Duration::from_secs(30)).await;
    let victim = cluster.nodes.remove(&1).expect("node 1");
    victim.kill().await;
    writers.progress(200, Duration::from_secs(60)).await;
    let map = cluster
        .wait_for("RF 2 restored without node 1", |m| {
            fully_replicated(m, 2, Some(1))
        })
        .await;
    assert_eq!(map.under_replicated(), 0);
    writers.progress(50, Duration::from_secs(30)).await;
    let reader = cluster.client().await;
    let acked = writers.stop_and_verify(&reader).await;
    assert!(acked >= 450, "{acked} increments acknowledged");
    assert!(
        cluster.api.objects.lock().contains_key(MAP_PATH),
        "map lives in the ConfigMap"
    );
    cluster.stop_rounds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_node_receives_ranges() {
    let mut cluster = Cluster::start(3, 2, 6).await;
    let client = cluster.client().await;
    let writers = Writers::start(&client, &cluster.tables, 2, 4);
    writers.progress(50, Duration::from_secs(30)).await;
    let node = Node::start(4).await;
    cluster
        .manager
        .add_node(4, node.addr.to_string())
        .await
        .expect("add node 4");
    cluster.nodes.insert(4, node);
    let map = cluster
        .wait_for("ranges moved onto node 4", |m| {
            fully_replicated(m, 2, None)
                && m.ranges.iter().filter(|r| r.replicas.contains(&4)).count() >= 2
        })
        .await;
    assert!(map.nodes.contains_key(&4));
    let reader = cluster.client().await;
    writers.stop_and_verify(&reader).await;
    cluster.stop_rounds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_node_ends_empty_and_removable() {
    let mut cluster = Cluster::start(4, 2, 4).await;
    let client = cluster.client().await;
    let writers = Writers::start(&client, &cluster.tables, 2, 6);
    writers.progress(100, Duration::from_secs(30)).await;
    assert!(
        matches!(
            cluster.manager.remove_node(4).await,
            Err(ManagerError::Invalid(_))
        ),
        "a node holding ranges cannot be removed"
    );
    cluster.manager.drain(4);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cluster.manager.is_empty(4).await.expect("is_empty") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 4 was not drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster
        .wait_for("RF 2 without node 4", |m| fully_replicated(m, 2, Some(4)))
        .await;
    cluster
        .manager
        .remove_node(4)
        .await
        .expect("remove the drained node");
    // Its pod can go now: nothing is lost.
    cluster.nodes.remove(&4).expect("node 4").kill().await;
    writers.progress(50, Duration::from_secs(30)).await;
    let reader = cluster.client().await;
    writers.stop_and_verify(&reader).await;
    assert!(
        !cluster
            .manager
            .map()
            .await
            .expect("map")
            .nodes
            .contains_key(&4)
    );
    cluster.stop_rounds().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_survives_a_manager_restart_and_concurrent_managers_lose_no_update() {
    let mut cluster = Cluster::start(3, 2, 4).await;
    cluster
        .wait_for("bootstrap settled", |m| fully_replicated(m, 2, None))
        .await;
    cluster.stop_rounds().await;
    let before = cluster.manager.map().await.expect("map");
    // A restarted manager (new process: new store, new API client) finds the same map.
    let restarted = Arc::new(PlacementManager::new(store(&cluster.api), config()));
    assert_eq!(restarted.map().await.expect("map after restart"), before);
    // The old and the new manager race to register different nodes; compare-and-swap makes
    // the loser retry on the fresh map, so both registrations land.
    let spare_a = Node::start(10).await;
    let spare_b = Node::start(11).await;
    let register = |manager: Arc<PlacementManager>, id: u64, addr: String| async move {
        let mut conflicts = 0;
        loop {
            match manager.add_node(id, addr.clone()).await {
                Ok(_) => return conflicts,
                Err(ManagerError::Store(StoreError::Conflict { .. })) => conflicts += 1,
                Err(e) => panic!("add_node {id}: {e}"),
            }
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(register(
            cluster.manager.clone(),
            10,
            spare_a.addr.to_string()
        )),
        tokio::spawn(register(restarted.clone(), 11, spare_b.addr.to_string())),
    );
    a.expect("old manager");
    b.expect("new manager");
    let after = restarted.map().await.expect("map");
    assert!(
        after.nodes.contains_key(&10) && after.nodes.contains_key(&11),
        "{after:?}"
    );
    assert_eq!(
        after.version,
        before.version + 2,
        "exactly two updates, none lost"
    );
    // A stale writer holding the old version is refused outright.
    let mut stale = before.clone();
    stale.version += 1;
    assert!(matches!(
        shmdb_placement_manager::MapStore::compare_and_swap(
            &*store(&cluster.api),
            Some(before.version),
            &stale
        )
        .await,
        Err(StoreError::Conflict { .. })
    ));
    cluster.nodes.insert(10, spare_a);
    cluster.nodes.insert(11, spare_b);
}

/// A node the map was bootstrapped onto but that has not answered yet (its pod still
/// starting) is not declared lost after the few failed probes that end a node which did
/// answer before; it is only after the longer limit for nodes never heard from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_not_started_yet_gets_the_longer_grace() {
    let api = FakeApi::default();
    let node = Node::start(1).await;
    // An address nobody listens on: node 2's pod has not started.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut config = config();
    config.rpc_timeout = Duration::from_millis(100);
    config.dead_after_failures_unseen = 8;
    let manager = PlacementManager::new(store(&api), config);
    let addresses = BTreeMap::from([(1, node.addr.to_string()), (2, silent.to_string())]);
    manager
        .bootstrap(addresses, 2, 2, BTreeMap::new())
        .await
        .expect("bootstrap");
    for round in 1..8 {
        let outcome = manager.reconcile_once().await.expect("round");
        assert!(
            outcome.live.contains(&2),
            "round {round}: a node never heard from was declared lost after {round} probes"
        );
        assert!(!outcome.answered.contains(&2));
        assert!(outcome.answered.contains(&1));
    }
    let outcome = manager.reconcile_once().await.expect("round 8");
    assert!(
        !outcome.live.contains(&2),
        "still live after the unseen limit"
    );
}
