//! Database-wide options: image, ranges, RDMA, monitoring, persistence, pod overrides.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the one image with every shmdb binary comes from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository.
    #[serde(default = "default_repository")]
    pub repository: String,
    /// Image tag; defaults to the operator's own version so tiers and operator match.
    #[serde(default = "default_tag")]
    pub tag: String,
    /// Kubernetes image pull policy.
    #[serde(default)]
    pub pull_policy: ImagePullPolicy,
    /// Names of image pull secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            repository: default_repository(),
            tag: default_tag(),
            pull_policy: ImagePullPolicy::default(),
            pull_secrets: Vec::new(),
        }
    }
}

impl ImageSpec {
    /// `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

fn default_repository() -> String {
    "ghcr.io/shmdb/shmdb".to_string()
}
fn default_tag() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Kubernetes image pull policy (an enum so a typo is rejected by the schema).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ImagePullPolicy {
    /// Always pull.
    Always,
    /// Pull when missing.
    #[default]
    IfNotPresent,
    /// Never pull.
    Never,
}

impl ImagePullPolicy {
    /// The string Kubernetes expects.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// Range partitioning: how many ranges the map starts with and when ranges split.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RangeSpec {
    /// Ranges of the bootstrap map (more ranges spread load earlier).
    #[serde(default = "default_initial_ranges")]
    #[schemars(range(min = 1, max = 4096))]
    pub initial: i32,
    /// A range larger than this many bytes is split (0 = never).
    #[serde(default = "default_split_bytes")]
    #[schemars(range(min = 0))]
    pub split_bytes: i64,
}

impl Default for RangeSpec {
    fn default() -> Self {
        RangeSpec {
            initial: default_initial_ranges(),
            split_bytes: default_split_bytes(),
        }
    }
}

fn default_initial_ranges() -> i32 {
    16
}
fn default_split_bytes() -> i64 {
    64 << 20
}

/// RDMA between processing and storage nodes: an extended resource served by the shmdb
/// device plugin, and nodes labelled as having RDMA hardware.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!self.enabled || self.resourceName.contains('/')")
        .message("rdma.resourceName must be an extended resource name such as shmdb.io/rdma")
        .field_path(".resourceName"),
)]
#[serde(rename_all = "camelCase")]
pub struct RdmaSpec {
    /// Whether pods request RDMA devices.
    #[serde(default)]
    pub enabled: bool,
    /// The extended resource the device plugin advertises.
    #[serde(default = "default_rdma_resource")]
    pub resource_name: String,
    /// Node label that marks RDMA-capable nodes (required node affinity when enabled).
    #[serde(default = "default_rdma_label")]
    pub node_label: String,
}

impl Default for RdmaSpec {
    fn default() -> Self {
        RdmaSpec {
            enabled: false,
            resource_name: default_rdma_resource(),
            node_label: default_rdma_label(),
        }
    }
}

fn default_rdma_resource() -> String {
    "shmdb.io/rdma".to_string()
}
fn default_rdma_label() -> String {
    "shmdb.io/rdma".to_string()
}

/// Prometheus Operator integration; objects are only created when its CRDs exist.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a ServiceMonitor for the three tiers.
    #[serde(default = "yes")]
    pub service_monitor: bool,
    /// Create a PodMonitor instead of (or besides) the ServiceMonitor.
    #[serde(default)]
    pub pod_monitor: bool,
    /// Scrape interval, e.g. `30s`.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Label the chart's Grafana dashboards look for (informational; the chart ships them).
    #[serde(default = "yes")]
    pub dashboards: bool,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        MonitoringSpec {
            service_monitor: true,
            pod_monitor: false,
            interval: default_interval(),
            dashboards: true,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_interval() -> String {
    "30s".to_string()
}

/// Optional write-ahead log and checkpoints of the storage tier.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Volume size per storage node.
    pub size: Quantity,
    /// Storage class; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// Scheduling overrides of one tier's pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Replaces the operator's default anti-affinity (RDMA node affinity is still added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}
