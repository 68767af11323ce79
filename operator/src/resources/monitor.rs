//! Prometheus Operator ServiceMonitor / PodMonitor, as dynamic objects: the operator does
//! not depend on their CRDs and creates them only where the cluster serves them.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::names::{Names, database_labels, meta};
use crate::crd::SharedMemDatabase;
use crate::resources::ClusterApis;

/// The group of the Prometheus Operator's CRDs.
pub const MONITORING_GROUP: &str = "monitoring.coreos.com";

/// API resource of ServiceMonitor.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(MONITORING_GROUP, "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// API resource of PodMonitor.
pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(MONITORING_GROUP, "v1", "PodMonitor"),
        "podmonitors",
    )
}

/// Selects the three tiers (every tier object has a component label; the client Service,
/// which has no metrics port, does not).
fn selector(names: &Names) -> serde_json::Value {
    json!({
        "matchLabels": {
            "app.kubernetes.io/name": "shmdb",
            "app.kubernetes.io/instance": names.database,
        },
        "matchExpressions": [
            {"key": "app.kubernetes.io/component", "operator": "Exists"}
        ]
    })
}

/// The monitors the spec asks for and the cluster can take.
pub fn monitors(db: &SharedMemDatabase, names: &Names, apis: &ClusterApis) -> Vec<DynamicObject> {
    let spec = &db.spec.monitoring;
    let mut out = Vec::new();
    let metadata = || meta(db, names, names.database.clone(), database_labels(names));
    if spec.service_monitor && apis.service_monitor {
        let mut obj = DynamicObject::new(&names.database, &service_monitor_resource());
        obj.metadata = metadata();
        obj.data = json!({
            "spec": {
                "selector": selector(names),
                "namespaceSelector": {"matchNames": [names.namespace]},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": spec.interval}],
            }
        });
        out.push(obj);
    }
    if spec.pod_monitor && apis.pod_monitor {
        let mut obj = DynamicObject::new(&names.database, &pod_monitor_resource());
        obj.metadata = metadata();
        obj.data = json!({
            "spec": {
                "selector": selector(names),
                "namespaceSelector": {"matchNames": [names.namespace]},
                "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": spec.interval}],
            }
        });
        out.push(obj);
    }
    out
}
