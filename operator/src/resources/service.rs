//! Headless Services (stable pod DNS names) and the client Service for SQL.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{
    METRICS_PORT, Names, SQL_PORT, Tier, database_labels, labels, meta, selector_labels,
};
use crate::crd::SharedMemDatabase;

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: number,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

/// A tier's headless Service. Not-ready pods are published too: the placement manager must
/// reach a storage node before it holds any range (and so before it is ready).
pub fn headless(db: &SharedMemDatabase, names: &Names, tier: Tier) -> Service {
    let (name, number) = tier.port();
    Service {
        metadata: meta(db, names, names.headless(tier), labels(names, tier)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(names, tier)),
            ports: Some(vec![port(name, number), port("metrics", METRICS_PORT)]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The SQL endpoint clients connect to (`psql -h NAME.NAMESPACE.svc -p 5432`).
pub fn client(db: &SharedMemDatabase, names: &Names) -> Service {
    Service {
        metadata: meta(db, names, names.client_service(), database_labels(names)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(names, Tier::Processing)),
            ports: Some(vec![port("sql", SQL_PORT)]),
            ..Default::default()
        }),
        status: None,
    }
}
