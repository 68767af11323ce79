//! HorizontalPodAutoscalers (autoscaling/v2) of the processing and commit-manager tiers.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::names::{Names, Tier, labels, meta};
use crate::crd::{GROUP, SharedMemDatabase, VERSION};

/// The Pods metric processing nodes export for transactions per second (served through a
/// custom-metrics adapter such as prometheus-adapter).
pub const TPS_METRIC: &str = "shmdb_transactions_per_second";

fn cpu(target: i32) -> MetricSpec {
    MetricSpec {
        type_: "Resource".to_string(),
        resource: Some(ResourceMetricSource {
            name: "cpu".to_string(),
            target: MetricTarget {
                type_: "Utilization".to_string(),
                average_utilization: Some(target),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

/// The processing tier's HPA. It targets the SharedMemDatabase itself (scale subresource →
/// `spec.processing.replicas`), so the HPA and the operator agree on one source of truth.
pub fn processing(
    db: &SharedMemDatabase,
    names: &Names,
    custom_metrics: bool,
) -> Option<HorizontalPodAutoscaler> {
    let auto = db.spec.processing.autoscaling.as_ref()?;
    let mut metrics = vec![cpu(auto.target_cpu_utilization_percentage)];
    if let (Some(tps), true) = (auto.target_transactions_per_second, custom_metrics) {
        metrics.push(MetricSpec {
            type_: "Pods".to_string(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: TPS_METRIC.to_string(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".to_string(),
                    average_value: Some(Quantity(tps.to_string())),
                    ..Default::default()
                },
            }),
            ..Default::default()
        });
    }
    Some(HorizontalPodAutoscaler {
        metadata: meta(
            db,
            names,
            names.hpa(Tier::Processing),
            labels(names, Tier::Processing),
        ),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(format!("{GROUP}/{VERSION}")),
                kind: "SharedMemDatabase".to_string(),
                name: names.database.clone(),
            },
            min_replicas: Some(auto.min_replicas),
            max_replicas: auto.max_replicas,
            metrics: Some(metrics),
            behavior: None,
        }),
        status: None,
    })
}

/// The commit-manager tier's HPA, targeting its StatefulSet directly.
pub fn commit_manager(db: &SharedMemDatabase, names: &Names) -> Option<HorizontalPodAutoscaler> {
    let auto = db.spec.commit_managers.autoscaling.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: meta(
            db,
            names,
            names.hpa(Tier::CommitManager),
            labels(names, Tier::CommitManager),
        ),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_string()),
                kind: "StatefulSet".to_string(),
                name: names.stateful_set(Tier::CommitManager),
            },
            min_replicas: Some(auto.min_replicas),
            max_replicas: auto.max_replicas,
            metrics: Some(vec![cpu(auto.target_cpu_utilization_percentage)]),
            behavior: None,
        }),
        status: None,
    })
}
