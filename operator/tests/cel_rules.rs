//! The CRD's CEL rules (`x-kubernetes-validations`), evaluated client-side by kube's CEL
//! validator against example specs: every rule is shown to accept a valid spec and to reject
//! the invalid one it exists for, with a message naming the field.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use shmdb_operator::crd::{PersistenceSpec, SharedMemDatabase};
use shmdb_operator::fixtures::example_database;

fn db() -> SharedMemDatabase {
    example_database("db", "ns")
}

/// Asserts that creation-time validation fails with a message containing `needle`.
fn rejected(db: &SharedMemDatabase, needle: &str) {
    match db.validate_cel() {
        Ok(()) => panic!("expected a CEL violation mentioning {needle:?}"),
        Err(errors) => {
            let all: Vec<String> = errors
                .as_slice()
                .iter()
                .map(|e| format!("{} ({})", e.message, e.field_path))
                .collect();
            assert!(
                all.iter().any(|m| m.contains(needle)),
                "no violation mentions {needle:?}: {all:?}"
            );
        }
    }
}

fn accepted(db: &SharedMemDatabase) {
    if let Err(errors) = db.validate_cel() {
        panic!("valid spec rejected: {errors:?}");
    }
}

#[test]
fn the_example_spec_is_valid() {
    accepted(&db());
}

#[test]
fn replication_factor_must_not_exceed_storage_replicas() {
    let mut ok = db();
    ok.spec.replication_factor = 3;
    ok.spec.storage.replicas = 3;
    accepted(&ok);
    let mut bad = db();
    bad.spec.replication_factor = 5;
    bad.spec.storage.autoscaling = None;
    rejected(&bad, "replicationFactor must not exceed storage.replicas");
}

#[test]
fn replication_factor_must_not_exceed_the_storage_minimum() {
    let mut bad = db();
    bad.spec.replication_factor = 4;
    bad.spec.storage.replicas = 4;
    rejected(&bad, "storage.autoscaling.minReplicas");
    let mut ok = db();
    ok.spec.replication_factor = 3;
    accepted(&ok);
}

#[test]
fn processing_replicas_must_lie_within_the_hpa_bounds() {
    let mut bad = db();
    bad.spec.processing.replicas = 9;
    rejected(&bad, "processing.replicas must lie within");
    let mut low = db();
    low.spec.processing.replicas = 1;
    rejected(&low, "processing.replicas must lie within");
    let mut fixed = db();
    fixed.spec.processing.autoscaling = None;
    fixed.spec.processing.replicas = 50;
    accepted(&fixed);
}

#[test]
fn autoscaling_min_must_not_exceed_max() {
    let mut bad = db();
    if let Some(a) = bad.spec.processing.autoscaling.as_mut() {
        a.min_replicas = 9;
    }
    rejected(&bad, "minReplicas must not exceed maxReplicas");
    let mut bad = db();
    if let Some(a) = bad.spec.commit_managers.autoscaling.as_mut() {
        a.min_replicas = 4;
    }
    rejected(&bad, "minReplicas must not exceed maxReplicas");
}

#[test]
fn storage_replicas_and_thresholds() {
    let mut bad = db();
    bad.spec.storage.replicas = 9;
    rejected(&bad, "storage.replicas must lie within");
    let mut bad = db();
    if let Some(a) = bad.spec.storage.autoscaling.as_mut() {
        a.scale_in_below_percent = 85;
    }
    rejected(
        &bad,
        "scaleInBelowPercent must be below scaleOutAbovePercent",
    );
    let mut ok = db();
    if let Some(a) = ok.spec.storage.autoscaling.as_mut() {
        a.scale_in_below_percent = 79;
    }
    accepted(&ok);
}

#[test]
fn commit_manager_replicas_within_bounds() {
    let mut bad = db();
    bad.spec.commit_managers.replicas = 5;
    rejected(&bad, "commitManagers.replicas must lie within");
}

#[test]
fn rdma_resource_name_is_checked_only_when_enabled() {
    let mut off = db();
    off.spec.rdma.resource_name = "rdma".into();
    accepted(&off);
    let mut bad = off.clone();
    bad.spec.rdma.enabled = true;
    rejected(&bad, "rdma.resourceName");
    let mut ok = db();
    ok.spec.rdma.enabled = true;
    accepted(&ok);
}

#[test]
fn replication_factor_is_immutable() {
    let old = db();
    let mut new = db();
    new.spec.processing.replicas = 3;
    assert!(
        new.validate_cel_update(&old).is_ok(),
        "other fields may change"
    );
    new.spec.replication_factor = 3;
    let errors = new
        .validate_cel_update(&old)
        .expect_err("changing the replication factor must be rejected");
    assert!(
        errors
            .as_slice()
            .iter()
            .any(|e| e.message.contains("replicationFactor is immutable")),
        "{errors:?}"
    );
}

#[test]
fn persistence_is_immutable_once_set() {
    let mut old = db();
    old.spec.storage.persistence = Some(PersistenceSpec {
        size: Quantity("10Gi".into()),
        storage_class_name: None,
    });
    let same = old.clone();
    assert!(same.validate_cel_update(&old).is_ok());
    let mut grown = old.clone();
    if let Some(p) = grown.spec.storage.persistence.as_mut() {
        p.size = Quantity("20Gi".into());
    }
    let errors = grown
        .validate_cel_update(&old)
        .expect_err("changing persistence must be rejected");
    assert!(
        errors
            .as_slice()
            .iter()
            .any(|e| e.message.contains("storage.persistence is immutable")),
        "{errors:?}"
    );
}
