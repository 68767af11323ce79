//! What the operator reports: conditions, per-tier counts, partition-map health, endpoint.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every tier and the placement are where the spec wants them.
pub const CONDITION_READY: &str = "Ready";
/// Objects or ranges are still moving (rollout, scale, drain).
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// The spec cannot be realized (the message names the field); nothing was changed.
pub const CONDITION_DEGRADED: &str = "Degraded";
/// Some ranges have fewer copies than the replication factor.
pub const CONDITION_UNDER_REPLICATED: &str = "UnderReplicated";

/// Status subresource of a `SharedMemDatabase`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SharedMemDatabaseStatus {
    /// The generation the rest of the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded, UnderReplicated (Kubernetes condition format).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Processing nodes; `replicas` and `selector` back the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<TierStatus>,
    /// Storage nodes and the autoscaler's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageTierStatus>,
    /// Commit managers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_managers: Option<TierStatus>,
    /// The partition map kept by the placement manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_map: Option<PartitionMapStatus>,
    /// `host:port` of the SQL service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Replica counts of one tier.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Pods the StatefulSet runs.
    pub replicas: i32,
    /// Pods that pass their readiness probe.
    pub ready_replicas: i32,
    /// Label selector of the tier's pods (for the scale subresource and the HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// Storage tier: counts plus what the operator's autoscaler decided.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StorageTierStatus {
    /// Pods the StatefulSet runs.
    pub replicas: i32,
    /// Pods that pass their readiness probe.
    pub ready_replicas: i32,
    /// Storage nodes the operator wants (the StatefulSet follows once drains finish).
    pub target_replicas: i32,
    /// Average record-memory utilization in percent, from the nodes' reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_utilization_percent: Option<i32>,
    /// Pod ordinals being drained before the StatefulSet shrinks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draining: Vec<i32>,
    /// RFC 3339 time of the last scaling decision (for the cool-down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
}

/// Health of the partition map.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PartitionMapStatus {
    /// The map version (grows on every change).
    pub version: i64,
    /// Ranges in the map.
    pub ranges: i32,
    /// Ranges with fewer replicas than the replication factor.
    pub under_replicated_ranges: i32,
    /// Ranges with no live replica at all.
    #[serde(default)]
    pub lost_ranges: i32,
    /// Placement steps executed in the last round (moves in flight).
    #[serde(default)]
    pub moves_in_flight: i32,
}
