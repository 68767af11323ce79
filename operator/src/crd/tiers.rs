//! Per-tier settings: processing nodes, storage nodes, commit managers.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::options::{PersistenceSpec, PodOverrides};

/// The SQL tier. `replicas` is the scale subresource's spec path, so an HPA (or `kubectl
/// scale smdb/NAME`) writes it and the operator only follows it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.autoscaling) || (self.autoscaling.minReplicas <= self.replicas && self.replicas <= self.autoscaling.maxReplicas)")
        .message("processing.replicas must lie within autoscaling.minReplicas..maxReplicas")
        .field_path(".replicas"),
)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingSpec {
    /// Processing nodes to run (written by the HPA when autoscaling is on).
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// HPA bounds and targets; absent = fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<ProcessingAutoscaling>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra command-line flags for `processing-node`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables (flags of the binaries are also environment variables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Scheduling overrides.
    #[serde(default)]
    pub pod: PodOverrides,
}

/// HPA settings of the processing tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas").field_path(".minReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct ProcessingAutoscaling {
    /// Lower bound.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Upper bound.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilization (percent of requests) the HPA keeps.
    #[serde(default = "default_cpu", rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// Transactions per second per processing node (Pods metric
    /// `shmdb_transactions_per_second`); used only when a custom-metrics API serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_transactions_per_second: Option<i64>,
}

/// The storage tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.autoscaling) || (self.autoscaling.minReplicas <= self.replicas && self.replicas <= self.autoscaling.maxReplicas)")
        .message("storage.replicas must lie within autoscaling.minReplicas..maxReplicas")
        .field_path(".replicas"),
)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Storage nodes to start with (the operator's autoscaler moves within min..max).
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// Record memory per storage node (`SHMDB_MEMORY_LIMIT`); writes beyond fail cleanly.
    pub memory_per_node: Quantity,
    /// Operator-driven scaling on memory utilization; absent = fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<StorageAutoscaling>,
    /// Container resources; by default memory is `memoryPerNode` plus headroom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// A volume per storage node, mounted at `/var/lib/shmdb` (`SHMDB_DATA_DIR`), reserved
    /// for a write-ahead log and checkpoints. Storage nodes do not write to it yet: data
    /// survives as long as one replica of every range does, not the loss of all at once.
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage.persistence is immutable (StatefulSet volume claims cannot change)"))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceSpec>,
    /// Extra command-line flags for `storage-node`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Scheduling overrides.
    #[serde(default)]
    pub pod: PodOverrides,
}

/// How the operator scales storage (an HPA cannot: nodes must be drained before removal).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas").field_path(".minReplicas"),
    validation = Rule::new("self.scaleInBelowPercent < self.scaleOutAbovePercent").message("scaleInBelowPercent must be below scaleOutAbovePercent").field_path(".scaleInBelowPercent"),
)]
#[serde(rename_all = "camelCase")]
pub struct StorageAutoscaling {
    /// Lower bound (at least the replication factor).
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Upper bound.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Add a node when average memory utilization exceeds this percentage.
    #[serde(default = "default_scale_out")]
    #[schemars(range(min = 1, max = 100))]
    pub scale_out_above_percent: i32,
    /// Drain and remove a node when utilization would stay below this after removal.
    #[serde(default = "default_scale_in")]
    #[schemars(range(min = 0, max = 99))]
    pub scale_in_below_percent: i32,
    /// Minimum seconds between two scaling decisions.
    #[serde(default = "default_cooldown")]
    #[schemars(range(min = 0))]
    pub cooldown_seconds: i64,
}

/// The commit-manager tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.autoscaling) || (self.autoscaling.minReplicas <= self.replicas && self.replicas <= self.autoscaling.maxReplicas)")
        .message("commitManagers.replicas must lie within autoscaling.minReplicas..maxReplicas")
        .field_path(".replicas"),
)]
#[serde(rename_all = "camelCase")]
pub struct CommitManagerSpec {
    /// Commit managers to run; with autoscaling this is only the initial count (the HPA
    /// owns the StatefulSet's replicas).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// HPA on CPU within min..max; absent = fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<CommitManagerAutoscaling>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Extra command-line flags for `commit-manager`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Scheduling overrides.
    #[serde(default)]
    pub pod: PodOverrides,
}

impl Default for CommitManagerSpec {
    fn default() -> Self {
        CommitManagerSpec {
            replicas: 1,
            autoscaling: None,
            resources: None,
            args: Vec::new(),
            env: Vec::new(),
            pod: PodOverrides::default(),
        }
    }
}

/// HPA settings of the commit-manager tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas").field_path(".minReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct CommitManagerAutoscaling {
    /// Lower bound.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Upper bound.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilization (percent of requests) the HPA keeps.
    #[serde(default = "default_cpu", rename = "targetCPUUtilizationPercentage")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn one() -> i32 {
    1
}
fn default_cpu() -> i32 {
    70
}
fn default_scale_out() -> i32 {
    80
}
fn default_scale_in() -> i32 {
    40
}
fn default_cooldown() -> i64 {
    300
}
