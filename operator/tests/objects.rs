//! Object details that the scenario tests do not spell out: RDMA requests and node affinity,
//! persistence, PDB budgets, and the transactions/s metric when custom metrics exist.

use shmdb_operator::crd::PersistenceSpec;
use shmdb_operator::fixtures::example_database;
use shmdb_operator::resources::{ClusterApis, Inputs, desired};

fn inputs(apis: ClusterApis) -> Inputs {
    Inputs {
        storage_replicas: 4,
        apis,
    }
}

#[test]
fn rdma_adds_device_requests_ipc_lock_and_required_node_affinity() {
    let mut db = example_database("db", "ns");
    db.spec.rdma.enabled = true;
    let objects = desired(&db, &inputs(ClusterApis::default()));
    for set in &objects.stateful_sets {
        let name = set.metadata.name.clone().unwrap_or_default();
        let pod = set
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        let container = &pod.containers[0];
        let limits = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let terms = pod
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| r.node_selector_terms.clone())
            .unwrap_or_default();
        if name == "db-commit" {
            assert!(
                !limits.contains_key("shmdb.io/rdma"),
                "commit managers are not on the data path"
            );
            continue;
        }
        assert_eq!(
            limits.get("shmdb.io/rdma").map(|q| q.0.as_str()),
            Some("1"),
            "{name}"
        );
        assert!(
            terms.iter().all(|t| t
                .match_expressions
                .iter()
                .flatten()
                .any(|e| e.key == "shmdb.io/rdma" && e.operator == "In")),
            "{name}: {terms:?}"
        );
        let caps = container
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.clone())
            .unwrap_or_default();
        assert!(caps.contains(&"IPC_LOCK".to_string()), "{name}");
    }
    db.spec.rdma.enabled = false;
    let objects = desired(&db, &inputs(ClusterApis::default()));
    let storage = &objects.stateful_sets[0];
    let pod = storage
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod");
    assert!(
        pod.affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .is_none()
    );
}

#[test]
fn persistence_adds_a_claim_template_deleted_with_the_pod() {
    let mut db = example_database("db", "ns");
    db.spec.storage.persistence = Some(PersistenceSpec {
        size: k8s_openapi::apimachinery::pkg::api::resource::Quantity("10Gi".into()),
        storage_class_name: Some("fast".into()),
    });
    let objects = desired(&db, &inputs(ClusterApis::default()));
    let spec = objects.stateful_sets[0].spec.as_ref().expect("spec");
    let claims = spec.volume_claim_templates.as_ref().expect("claims");
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let policy = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .expect("policy");
    assert_eq!(policy.when_scaled.as_deref(), Some("Delete"));
}

#[test]
fn storage_budget_follows_the_replication_factor() {
    let mut db = example_database("db", "ns");
    db.spec.replication_factor = 1;
    let objects = desired(&db, &inputs(ClusterApis::default()));
    let storage = objects
        .pdbs
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("db-storage"))
        .expect("storage pdb");
    let max = storage
        .spec
        .as_ref()
        .and_then(|s| s.max_unavailable.clone());
    assert_eq!(
        max,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0)),
        "with RF 1 no storage pod may be evicted"
    );
}

#[test]
fn transactions_per_second_metric_only_with_custom_metrics() {
    let mut db = example_database("db", "ns");
    if let Some(a) = db.spec.processing.autoscaling.as_mut() {
        a.target_transactions_per_second = Some(500);
    }
    let metric_types = |apis| {
        let objects = desired(&db, &inputs(apis));
        objects.hpas[0]
            .spec
            .as_ref()
            .and_then(|s| s.metrics.clone())
            .unwrap_or_default()
            .iter()
            .map(|m| m.type_.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(metric_types(ClusterApis::default()), vec!["Resource"]);
    let with = ClusterApis {
        custom_metrics: true,
        ..Default::default()
    };
    assert_eq!(metric_types(with), vec!["Resource", "Pods"]);
}

#[test]
fn switching_autoscaling_off_marks_the_hpa_for_deletion() {
    let mut db = example_database("db", "ns");
    db.spec.commit_managers.autoscaling = None;
    let objects = desired(&db, &inputs(ClusterApis::default()));
    assert_eq!(objects.unwanted_hpas, vec!["db-commit".to_string()]);
    let commit = objects
        .stateful_sets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("db-commit"))
        .expect("commit set");
    assert_eq!(
        commit.spec.as_ref().and_then(|s| s.replicas),
        Some(2),
        "fixed replicas without HPA"
    );
}

/// Every `SHMDB_*` variable the operator gives a tier's container is one that tier's binary
/// reads (checked against the binary's own `--help`), and the command passes the id flag
/// the binary requires: a misnamed variable is silently ignored, and the binary then falls
/// back to a default such as a loopback listen address that no Service can reach.
#[test]
fn every_tier_gets_the_variables_and_flags_its_binary_reads() {
    use shmdb_operator::resources::Tier;
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().and_then(|d| d.parent()).map(|d| d.to_path_buf()))
    else {
        panic!("test binary has no target dir");
    };
    let db = example_database("db", "ns");
    let objects = desired(&db, &inputs(ClusterApis::default()));
    // Informational only (logs and dashboards), read by no binary.
    let informational = ["SHMDB_DATABASE"];
    for tier in Tier::ALL {
        let bin = dir.join(tier.binary());
        if !bin.exists() {
            eprintln!(
                "SKIPPED for {}: {} not built (cargo build -p the tier's crate)",
                tier.binary(),
                bin.display()
            );
            continue;
        }
        let help = std::process::Command::new(&bin)
            .arg("--help")
            .output()
            .expect("run --help");
        let help = String::from_utf8_lossy(&help.stdout);
        let set = objects
            .stateful_sets
            .iter()
            .find(|s| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .is_some_and(|p| {
                        p.containers[0]
                            .command
                            .as_ref()
                            .is_some_and(|c| c.iter().any(|w| w.contains(tier.binary())))
                    })
            })
            .unwrap_or_else(|| panic!("no StatefulSet runs {}", tier.binary()));
        let container = &set
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod")
            .containers[0];
        for var in container.env.iter().flatten() {
            if !var.name.starts_with("SHMDB_") || informational.contains(&var.name.as_str()) {
                continue;
            }
            assert!(
                help.contains(&format!("env: {}", var.name)),
                "{} does not read {} (its --help lists no such variable)",
                tier.binary(),
                var.name
            );
        }
        let command = container.command.clone().unwrap_or_default().join(" ");
        let id_flag = match tier {
            Tier::CommitManager => "--manager-id",
            _ => "--node-id",
        };
        assert!(
            command.contains(id_flag) && help.contains(id_flag),
            "{}: command {command:?} lacks {id_flag}",
            tier.binary()
        );
    }
}

/// A variable from the spec with the name of one the operator sets replaces it rather than
/// repeating the name (server-side apply refuses a container whose `env` repeats one).
#[test]
fn a_spec_variable_replaces_the_operators_of_the_same_name() {
    use k8s_openapi::api::core::v1::EnvVar;
    let mut db = example_database("db", "ns");
    db.spec.processing.env = vec![
        EnvVar {
            name: "SHMDB_PG_LISTEN".into(),
            value: Some("0.0.0.0:6543".into()),
            value_from: None,
        },
        EnvVar {
            name: "RUST_LOG".into(),
            value: Some("debug".into()),
            value_from: None,
        },
    ];
    let objects = desired(&db, &inputs(ClusterApis::default()));
    let set = objects
        .stateful_sets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("db-processing"))
        .expect("processing StatefulSet");
    let env = set
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers[0].env.clone())
        .unwrap_or_default();
    let listens: Vec<_> = env.iter().filter(|v| v.name == "SHMDB_PG_LISTEN").collect();
    assert_eq!(listens.len(), 1, "{env:?}");
    assert_eq!(listens[0].value.as_deref(), Some("0.0.0.0:6543"));
    assert!(env.iter().any(|v| v.name == "RUST_LOG"));
    let mut names: Vec<_> = env.iter().map(|v| v.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), env.len(), "a name repeats: {env:?}");
}
