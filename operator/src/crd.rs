//! The `SharedMemDatabase` custom resource (group `shmdb.io`, version `v1alpha1`).
//!
//! These Rust types are the single source of the CRD: `crdgen` prints the YAML in `crds/`
//! from them, the CEL rules (`x-kubernetes-validations`) the API server enforces are declared
//! on them, and the operator evaluates the very same rules client-side
//! ([`SharedMemDatabase::validate_cel`]) so a spec that slipped past an older API server
//! still ends in a Degraded condition instead of half-applied objects.

mod options;
mod status;
mod tiers;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use options::{
    ImagePullPolicy, ImageSpec, MonitoringSpec, PersistenceSpec, PodOverrides, RangeSpec, RdmaSpec,
};
pub use status::{
    CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY, CONDITION_UNDER_REPLICATED,
    PartitionMapStatus, SharedMemDatabaseStatus, StorageTierStatus, TierStatus,
};
pub use tiers::{
    CommitManagerAutoscaling, CommitManagerSpec, ProcessingAutoscaling, ProcessingSpec,
    StorageAutoscaling, StorageSpec,
};

/// The API group of every shmdb resource.
pub const GROUP: &str = "shmdb.io";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// What a user asks for: the three tiers, replication, ranges, RDMA and monitoring.
///
/// Cross-field invariants live here as CEL rules so that `kubectl apply` rejects a database
/// that could never be healthy (e.g. more copies per range than storage nodes) before the
/// operator ever sees it.
// Each `printcolumn(...)` repeats `type_ = ...`; clippy reads them as one duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "shmdb.io",
    version = "v1alpha1",
    kind = "SharedMemDatabase",
    plural = "sharedmemdatabases",
    shortname = "smdb",
    category = "shmdb",
    namespaced,
    status = "SharedMemDatabaseStatus",
    derive = "PartialEq",
    cel,
    doc = "An elastic, in-memory, transactional SQL database (processing nodes, storage nodes, commit managers).",
    scale(
        spec_replicas_path = ".spec.processing.replicas",
        status_replicas_path = ".status.processing.replicas",
        label_selector_path = ".status.processing.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Processing",
        type_ = "integer",
        json_path = ".status.processing.readyReplicas",
        description = "ready processing nodes"
    ),
    printcolumn(
        name = "Storage",
        type_ = "integer",
        json_path = ".status.storage.readyReplicas",
        description = "ready storage nodes"
    ),
    printcolumn(
        name = "CommitMgrs",
        type_ = "integer",
        json_path = ".status.commitManagers.readyReplicas",
        description = "ready commit managers"
    ),
    printcolumn(
        name = "RF",
        type_ = "integer",
        json_path = ".spec.replicationFactor",
        description = "replication factor"
    ),
    printcolumn(
        name = "Map",
        type_ = "integer",
        json_path = ".status.partitionMap.version",
        description = "partition-map version"
    ),
    printcolumn(
        name = "UnderReplicated",
        type_ = "integer",
        json_path = ".status.partitionMap.underReplicatedRanges",
        priority = 1
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.replicationFactor <= self.storage.replicas")
        .message("replicationFactor must not exceed storage.replicas")
        .field_path(".replicationFactor"),
    validation = Rule::new("!has(self.storage.autoscaling) || self.replicationFactor <= self.storage.autoscaling.minReplicas")
        .message("replicationFactor must not exceed storage.autoscaling.minReplicas: a scale-in would leave ranges under-replicated")
        .field_path(".storage.autoscaling.minReplicas"),
)]
#[serde(rename_all = "camelCase")]
pub struct SharedMemDatabaseSpec {
    /// The container image that holds every shmdb binary.
    #[serde(default)]
    pub image: ImageSpec,
    /// Copies of every range (write-all synchronous replication). Fixed at creation: the
    /// partition map is bootstrapped with it.
    #[x_kube(validation = Rule::new("self == oldSelf").message("replicationFactor is immutable"))]
    #[schemars(range(min = 1, max = 7))]
    pub replication_factor: i32,
    /// The stateless SQL tier (PostgreSQL wire protocol), scaled by an HPA.
    pub processing: ProcessingSpec,
    /// The in-memory storage tier, scaled by the operator (it drains before it shrinks).
    pub storage: StorageSpec,
    /// The commit managers (tids and snapshots).
    #[serde(default)]
    pub commit_managers: CommitManagerSpec,
    /// Range partitioning of the storage tier.
    #[serde(default)]
    pub ranges: RangeSpec,
    /// RDMA data path between processing and storage nodes.
    #[serde(default)]
    pub rdma: RdmaSpec,
    /// Prometheus Operator integration and dashboards.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
}

impl SharedMemDatabase {
    /// The namespace, which every namespaced object read from the API has.
    pub fn namespace_or_default(&self) -> String {
        self.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string())
    }

    /// The name, which every object read from the API has.
    pub fn name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }
}
