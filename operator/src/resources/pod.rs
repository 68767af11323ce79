//! Pod template pieces shared by the tiers: container, probes, scheduling, RDMA.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    LocalObjectReference, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SecurityContext, TopologySpreadConstraint, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::names::{METRICS_PORT, Names, Tier, labels, selector_labels};
use crate::crd::{PodOverrides, SharedMemDatabase};

/// What differs between the tiers' pods.
pub struct PodParts<'a> {
    /// The tier.
    pub tier: Tier,
    /// Command (None = the image's entrypoint with the tier binary).
    pub command: Option<Vec<String>>,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment (operator-set first, then the user's).
    pub env: Vec<EnvVar>,
    /// Container resources.
    pub resources: Option<ResourceRequirements>,
    /// The tier's scheduling overrides.
    pub overrides: &'a PodOverrides,
    /// Whether the tier uses the RDMA data path.
    pub rdma: bool,
}

/// An environment variable with a literal value.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The pod's own name, for advertise addresses (`$(POD_NAME)` expands in later variables).
pub fn pod_name_env() -> EnvVar {
    EnvVar {
        name: "POD_NAME".to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_string(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("metrics".to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

/// The pod template of a tier.
pub fn template(db: &SharedMemDatabase, names: &Names, parts: PodParts<'_>) -> PodTemplateSpec {
    let spec = &db.spec;
    let (port_name, port) = parts.tier.port();
    let mut resources = parts.resources.unwrap_or_default();
    let mut security = None;
    if parts.rdma && spec.rdma.enabled {
        // One RDMA device per pod, from the shmdb device plugin; registering memory regions
        // needs IPC_LOCK.
        let one = Quantity("1".to_string());
        resources
            .requests
            .get_or_insert_with(BTreeMap::new)
            .insert(spec.rdma.resource_name.clone(), one.clone());
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(spec.rdma.resource_name.clone(), one);
        security = Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(vec!["IPC_LOCK".to_string()]),
                drop: None,
            }),
            ..Default::default()
        });
    }
    let container = Container {
        name: parts.tier.component().to_string(),
        image: Some(spec.image.reference()),
        image_pull_policy: Some(spec.image.pull_policy.as_str().to_string()),
        command: parts.command,
        args: (!parts.args.is_empty()).then_some(parts.args),
        env: Some(parts.env),
        ports: Some(vec![
            ContainerPort {
                name: Some(port_name.to_string()),
                container_port: port,
                ..Default::default()
            },
            ContainerPort {
                name: Some("metrics".to_string()),
                container_port: METRICS_PORT,
                ..Default::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        resources: Some(resources),
        security_context: security,
        ..Default::default()
    };
    let mut annotations = parts.overrides.annotations.clone();
    annotations.insert(
        "kubectl.kubernetes.io/default-container".to_string(),
        parts.tier.component().to_string(),
    );
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(names, parts.tier)),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            affinity: Some(affinity(db, names, parts.tier, parts.overrides, parts.rdma)),
            topology_spread_constraints: Some(spread(names, parts.tier)),
            tolerations: (!parts.overrides.tolerations.is_empty())
                .then(|| parts.overrides.tolerations.clone()),
            node_selector: (!parts.overrides.node_selector.is_empty())
                .then(|| parts.overrides.node_selector.clone()),
            priority_class_name: parts.overrides.priority_class_name.clone(),
            image_pull_secrets: (!spec.image.pull_secrets.is_empty()).then(|| {
                spec.image
                    .pull_secrets
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect()
            }),
            termination_grace_period_seconds: Some(30),
            ..Default::default()
        }),
    }
}

/// Spread a tier over hosts and zones: two copies of a range on one host would die together.
fn spread(names: &Names, tier: Tier) -> Vec<TopologySpreadConstraint> {
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.to_string(),
            when_unsatisfiable: "ScheduleAnyway".to_string(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(names, tier)),
                match_expressions: None,
            }),
            ..Default::default()
        })
        .collect()
}

/// The user's affinity, or a preferred anti-affinity between pods of the tier; plus a
/// required node affinity to RDMA-labelled nodes when RDMA is on.
fn affinity(
    db: &SharedMemDatabase,
    names: &Names,
    tier: Tier,
    overrides: &PodOverrides,
    rdma: bool,
) -> Affinity {
    let mut affinity = overrides.affinity.clone().unwrap_or_else(|| Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        topology_key: "kubernetes.io/hostname".to_string(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector_labels(names, tier)),
                            match_expressions: None,
                        }),
                        ..Default::default()
                    },
                },
            ]),
            required_during_scheduling_ignored_during_execution: None,
        }),
        ..Default::default()
    });
    if rdma && db.spec.rdma.enabled {
        let requirement = NodeSelectorRequirement {
            key: db.spec.rdma.node_label.clone(),
            operator: "In".to_string(),
            values: Some(vec!["true".to_string()]),
        };
        let node = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        let required = node
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(|| NodeSelector {
                node_selector_terms: Vec::new(),
            });
        if required.node_selector_terms.is_empty() {
            required
                .node_selector_terms
                .push(NodeSelectorTerm::default());
        }
        // Terms are ORed, expressions within a term ANDed: the RDMA label joins every term.
        for term in &mut required.node_selector_terms {
            term.match_expressions
                .get_or_insert_with(Vec::new)
                .push(requirement.clone());
        }
    }
    affinity
}
