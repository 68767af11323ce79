//! Example databases for tests and documentation: one valid spec to start from, so each
//! test states only what it changes.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use crate::crd::{
    CommitManagerAutoscaling, CommitManagerSpec, ProcessingAutoscaling, ProcessingSpec,
    SharedMemDatabase, SharedMemDatabaseSpec, StorageAutoscaling, StorageSpec,
};

/// A valid spec: 2 processing nodes (HPA 2..8), 4 storage nodes (autoscaled 3..8), RF 2,
/// 2 commit managers (HPA 1..3).
pub fn example_spec() -> SharedMemDatabaseSpec {
    SharedMemDatabaseSpec {
        image: Default::default(),
        replication_factor: 2,
        processing: ProcessingSpec {
            replicas: 2,
            autoscaling: Some(ProcessingAutoscaling {
                min_replicas: 2,
                max_replicas: 8,
                target_cpu_utilization_percentage: 70,
                target_transactions_per_second: None,
            }),
            resources: None,
            args: Vec::new(),
            env: Vec::new(),
            pod: Default::default(),
        },
        storage: StorageSpec {
            replicas: 4,
            memory_per_node: Quantity("1Gi".to_string()),
            autoscaling: Some(StorageAutoscaling {
                min_replicas: 3,
                max_replicas: 8,
                scale_out_above_percent: 80,
                scale_in_below_percent: 40,
                cooldown_seconds: 300,
            }),
            resources: None,
            persistence: None,
            args: Vec::new(),
            env: Vec::new(),
            pod: Default::default(),
        },
        commit_managers: CommitManagerSpec {
            replicas: 2,
            autoscaling: Some(CommitManagerAutoscaling {
                min_replicas: 1,
                max_replicas: 3,
                target_cpu_utilization_percentage: 70,
            }),
            ..Default::default()
        },
        ranges: Default::default(),
        rdma: Default::default(),
        monitoring: Default::default(),
    }
}

/// `example_spec` as an object read from the API (name, namespace, uid, generation).
pub fn example_database(name: &str, namespace: &str) -> SharedMemDatabase {
    let mut db = SharedMemDatabase::new(name, example_spec());
    db.metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        resource_version: Some("100".to_string()),
        ..Default::default()
    };
    db
}
