//! Names, labels, ports and owner references shared by every object of a database.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

use crate::crd::SharedMemDatabase;

/// PostgreSQL wire protocol port of processing nodes.
pub const SQL_PORT: i32 = 5432;
/// gRPC port of storage nodes (data path, replication, admin).
pub const STORAGE_PORT: i32 = 7400;
/// gRPC port of commit managers.
pub const COMMIT_PORT: i32 = 7500;
/// `/metrics`, `/healthz`, `/readyz` of every component.
pub const METRICS_PORT: i32 = 9090;

/// The three tiers, each one StatefulSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// SQL processing nodes.
    Processing,
    /// In-memory storage nodes.
    Storage,
    /// Commit managers.
    CommitManager,
}

impl Tier {
    /// Every tier, in the order objects are applied.
    pub const ALL: [Tier; 3] = [Tier::Storage, Tier::CommitManager, Tier::Processing];

    /// The short name used in object names and the `app.kubernetes.io/component` label.
    pub fn component(self) -> &'static str {
        match self {
            Tier::Processing => "processing",
            Tier::Storage => "storage",
            Tier::CommitManager => "commit",
        }
    }

    /// The binary the tier's container runs.
    pub fn binary(self) -> &'static str {
        match self {
            Tier::Processing => "processing-node",
            Tier::Storage => "storage-node",
            Tier::CommitManager => "commit-manager",
        }
    }

    /// The tier's service port (name, number).
    pub fn port(self) -> (&'static str, i32) {
        match self {
            Tier::Processing => ("sql", SQL_PORT),
            Tier::Storage => ("grpc", STORAGE_PORT),
            Tier::CommitManager => ("grpc", COMMIT_PORT),
        }
    }
}

/// Object names derived from the database name, in one place so the reconciler, the
/// placement manager and the tests agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The database name.
    pub database: String,
    /// Its namespace.
    pub namespace: String,
}

impl Names {
    /// Names for `db`.
    pub fn of(db: &SharedMemDatabase) -> Self {
        Names {
            database: db.name(),
            namespace: db.namespace_or_default(),
        }
    }

    /// The tier's StatefulSet.
    pub fn stateful_set(&self, tier: Tier) -> String {
        format!("{}-{}", self.database, tier.component())
    }

    /// The tier's headless Service (stable pod DNS names).
    pub fn headless(&self, tier: Tier) -> String {
        format!("{}-{}-headless", self.database, tier.component())
    }

    /// The client Service for SQL: the database's own name.
    pub fn client_service(&self) -> String {
        self.database.clone()
    }

    /// The tier's PodDisruptionBudget.
    pub fn pdb(&self, tier: Tier) -> String {
        self.stateful_set(tier)
    }

    /// The tier's HorizontalPodAutoscaler.
    pub fn hpa(&self, tier: Tier) -> String {
        self.stateful_set(tier)
    }

    /// The ConfigMap holding the partition map.
    pub fn partition_map(&self) -> String {
        format!("{}-partition-map", self.database)
    }

    /// The Lease electing the placement manager.
    pub fn placement_lease(&self) -> String {
        format!("{}-placement", self.database)
    }

    /// `host:port` of the SQL service.
    pub fn endpoint(&self) -> String {
        format!(
            "{}.{}.svc:{SQL_PORT}",
            self.client_service(),
            self.namespace
        )
    }

    /// Comma-separated storage-node addresses of the first `replicas` pods (seeds for
    /// clients; any node serves the map).
    pub fn storage_seeds(&self, replicas: i32) -> String {
        (0..replicas.max(1))
            .map(|i| storage_node_address(self, i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The commit managers' headless Service address (resolves to every commit manager).
    pub fn commit_managers(&self) -> String {
        format!(
            "{}.{}.svc:{COMMIT_PORT}",
            self.headless(Tier::CommitManager),
            self.namespace
        )
    }
}

/// The gRPC address of storage pod `ordinal`: its stable DNS name under the headless
/// Service. The partition map records nodes by this address.
pub fn storage_node_address(names: &Names, ordinal: i32) -> String {
    format!(
        "{}-{ordinal}.{}.{}.svc:{STORAGE_PORT}",
        names.stateful_set(Tier::Storage),
        names.headless(Tier::Storage),
        names.namespace
    )
}

/// The storage node id of pod `ordinal`. Ids start at 1 because 0 reads as "no node" in
/// the partition map.
pub fn storage_node_id(ordinal: i32) -> u64 {
    u64::try_from(ordinal).unwrap_or(0) + 1
}

/// The pod ordinal of storage node `id` (inverse of [`storage_node_id`]).
pub fn storage_ordinal(id: u64) -> i32 {
    i32::try_from(id.saturating_sub(1)).unwrap_or(i32::MAX)
}

/// Labels that select one tier's pods (stable: StatefulSet selectors are immutable).
pub fn selector_labels(names: &Names, tier: Tier) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "shmdb".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            names.database.clone(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            tier.component().to_string(),
        ),
    ])
}

/// Labels on every object of a tier.
pub fn labels(names: &Names, tier: Tier) -> BTreeMap<String, String> {
    let mut labels = selector_labels(names, tier);
    labels.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "shmdb-operator".to_string(),
    );
    labels
}

/// Labels of database-wide objects (client Service, monitors, map ConfigMap, Lease).
pub fn database_labels(names: &Names) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "shmdb".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            names.database.clone(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "shmdb-operator".to_string(),
        ),
    ])
}

/// The controller owner reference every object carries, so deleting the database deletes
/// them (garbage collection) and their changes wake the reconciler.
pub fn owner_reference(db: &SharedMemDatabase) -> OwnerReference {
    db.controller_owner_ref(&())
        .unwrap_or_else(|| OwnerReference {
            api_version: "shmdb.io/v1alpha1".to_string(),
            kind: "SharedMemDatabase".to_string(),
            name: db.name(),
            uid: db.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        })
}

/// Object metadata for a tier object.
pub fn meta(
    db: &SharedMemDatabase,
    names: &Names,
    name: String,
    labels: BTreeMap<String, String>,
) -> kube::api::ObjectMeta {
    kube::api::ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![owner_reference(db)]),
        ..Default::default()
    }
}
