//! The Kubernetes objects a `SharedMemDatabase` becomes, built as pure functions of the spec.
//!
//! Nothing here talks to the API: [`desired`] returns every object the reconciler applies
//! (server-side, one field manager), so tests can inspect them and the controller stays a
//! thin loop of "build, apply, report".

mod hpa;
mod monitor;
mod names;
mod pdb;
mod pod;
mod service;
mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;

use crate::crd::SharedMemDatabase;

pub use hpa::TPS_METRIC;
pub use monitor::{MONITORING_GROUP, pod_monitor_resource, service_monitor_resource};
pub use names::{
    COMMIT_PORT, METRICS_PORT, Names, SQL_PORT, STORAGE_PORT, Tier, database_labels,
    owner_reference, selector_labels, storage_node_address, storage_node_id, storage_ordinal,
};

/// Optional APIs the cluster serves (found by discovery), which decide optional objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterApis {
    /// `monitoring.coreos.com/v1` ServiceMonitor.
    pub service_monitor: bool,
    /// `monitoring.coreos.com/v1` PodMonitor.
    pub pod_monitor: bool,
    /// `custom.metrics.k8s.io`, so the HPA can use the transactions/s Pods metric.
    pub custom_metrics: bool,
}

/// Facts the objects depend on besides the spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// Storage StatefulSet replicas (the autoscaler's decision, which waits for drains).
    pub storage_replicas: i32,
    /// Which optional APIs the cluster serves.
    pub apis: ClusterApis,
}

/// Everything the reconciler applies for one database.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// Headless Services of the three tiers, then the client (SQL) Service.
    pub services: Vec<Service>,
    /// Storage, commit-manager and processing StatefulSets (dependencies first).
    pub stateful_sets: Vec<StatefulSet>,
    /// One PodDisruptionBudget per tier.
    pub pdbs: Vec<PodDisruptionBudget>,
    /// HPAs wanted by the spec.
    pub hpas: Vec<HorizontalPodAutoscaler>,
    /// Names of HPAs the spec no longer wants (autoscaling switched off).
    pub unwanted_hpas: Vec<String>,
    /// ServiceMonitor / PodMonitor objects (only when their CRDs exist).
    pub monitors: Vec<DynamicObject>,
}

/// Builds every object for `db`. The spec must have passed [`crate::validate::problems`].
pub fn desired(db: &SharedMemDatabase, inputs: &Inputs) -> Desired {
    let names = Names::of(db);
    let mut out = Desired::default();
    for tier in Tier::ALL {
        out.services.push(service::headless(db, &names, tier));
    }
    out.services.push(service::client(db, &names));
    out.stateful_sets
        .push(statefulset::storage(db, &names, inputs.storage_replicas));
    out.stateful_sets
        .push(statefulset::commit_manager(db, &names));
    out.stateful_sets.push(statefulset::processing(db, &names));
    for tier in Tier::ALL {
        out.pdbs.push(pdb::budget(db, &names, tier));
    }
    match hpa::processing(db, &names, inputs.apis.custom_metrics) {
        Some(h) => out.hpas.push(h),
        None => out.unwanted_hpas.push(names.hpa(Tier::Processing)),
    }
    match hpa::commit_manager(db, &names) {
        Some(h) => out.hpas.push(h),
        None => out.unwanted_hpas.push(names.hpa(Tier::CommitManager)),
    }
    out.monitors = monitor::monitors(db, &names, &inputs.apis);
    out
}
