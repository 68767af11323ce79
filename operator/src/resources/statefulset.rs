//! The three StatefulSets.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, ResourceRequirements, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;

use super::names::{
    COMMIT_PORT, METRICS_PORT, Names, SQL_PORT, STORAGE_PORT, Tier, labels, meta, selector_labels,
};
use super::pod::{PodParts, env, pod_name_env, template};
use crate::crd::SharedMemDatabase;
use crate::quantity;

/// Where the storage node keeps its log and checkpoints when persistence is on.
pub const DATA_DIR: &str = "/var/lib/shmdb";

fn stateful_set(
    db: &SharedMemDatabase,
    names: &Names,
    tier: Tier,
    replicas: Option<i32>,
    template: k8s_openapi::api::core::v1::PodTemplateSpec,
) -> StatefulSet {
    StatefulSet {
        metadata: meta(db, names, names.stateful_set(tier), labels(names, tier)),
        spec: Some(StatefulSetSpec {
            replicas,
            service_name: Some(names.headless(tier)),
            selector: LabelSelector {
                match_labels: Some(selector_labels(names, tier)),
                match_expressions: None,
            },
            // Every tier can start its pods together: storage nodes are filled by the
            // placement manager, not by start order.
            pod_management_policy: Some("Parallel".to_string()),
            template,
            ..Default::default()
        }),
        status: None,
    }
}

/// What every tier's container gets; `listen_var` is the tier binary's own name for its
/// listen address (each binary has one, so a variable meant for another is never misread).
fn common_env(
    names: &Names,
    listen_var: &str,
    listen_port: i32,
) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    vec![
        pod_name_env(),
        env(listen_var, format!("0.0.0.0:{listen_port}")),
        env("SHMDB_METRICS_LISTEN", format!("0.0.0.0:{METRICS_PORT}")),
        env("SHMDB_LOG_FORMAT", "json"),
        env("SHMDB_DATABASE", names.database.clone()),
    ]
}

/// Adds the user's variables from the spec: one with the name of an operator variable
/// replaces it (a name may appear once: server-side apply refuses a container whose `env`
/// repeats one).
fn merge_env(
    vars: &mut Vec<k8s_openapi::api::core::v1::EnvVar>,
    user: &[k8s_openapi::api::core::v1::EnvVar],
) {
    for var in user {
        match vars.iter_mut().find(|v| v.name == var.name) {
            Some(existing) => *existing = var.clone(),
            None => vars.push(var.clone()),
        }
    }
}

/// Runs the tier's binary with an id of the pod ordinal + 1 (`flag`), computed by the shell
/// from the pod's hostname because Kubernetes offers no arithmetic on the ordinal; `exec`
/// makes the binary the container's PID 1, so it gets the stop signal itself.
fn ordinal_id_command(tier: Tier, flag: &str, args: &[String]) -> Vec<String> {
    let mut command = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!(
            "exec {} {flag} $(( ${{HOSTNAME##*-}} + 1 )) \"$@\"",
            tier.binary()
        ),
        "--".to_string(),
    ];
    command.extend(args.iter().cloned());
    command
}

/// Processing nodes: replicas follow `spec.processing.replicas`, which the HPA writes through
/// the database's scale subresource, so the operator never fights the HPA.
pub fn processing(db: &SharedMemDatabase, names: &Names) -> StatefulSet {
    let spec = &db.spec.processing;
    let mut vars = common_env(names, "SHMDB_PG_LISTEN", SQL_PORT);
    vars.push(env(
        "SHMDB_STORE_SEEDS",
        names.storage_seeds(db.spec.storage.replicas),
    ));
    vars.push(env("SHMDB_COMMIT_MANAGERS", names.commit_managers()));
    merge_env(&mut vars, &spec.env);
    let parts = PodParts {
        tier: Tier::Processing,
        command: Some(ordinal_id_command(
            Tier::Processing,
            "--node-id",
            &spec.args,
        )),
        args: Vec::new(),
        env: vars,
        resources: spec.resources.clone(),
        overrides: &spec.pod,
        rdma: true,
    };
    stateful_set(
        db,
        names,
        Tier::Processing,
        Some(spec.replicas),
        template(db, names, parts),
    )
}

/// Storage nodes: replicas are the autoscaler's decision (it shrinks only after draining).
/// The node id is the pod ordinal + 1.
pub fn storage(db: &SharedMemDatabase, names: &Names, replicas: i32) -> StatefulSet {
    let spec = &db.spec.storage;
    let memory = quantity::to_bytes(&spec.memory_per_node).unwrap_or(0);
    let mut vars = common_env(names, "SHMDB_LISTEN", STORAGE_PORT);
    vars.push(env(
        "SHMDB_ADVERTISE",
        format!(
            "$(POD_NAME).{}.{}.svc:{STORAGE_PORT}",
            names.headless(Tier::Storage),
            names.namespace
        ),
    ));
    vars.push(env("SHMDB_MEMORY_LIMIT", memory.to_string()));
    if spec.persistence.is_some() {
        vars.push(env("SHMDB_DATA_DIR", DATA_DIR));
    }
    merge_env(&mut vars, &spec.env);
    // Record memory plus a quarter and 256Mi for indexes, buffers and the runtime, so the
    // node refuses writes (ResourceExhausted) long before the kernel kills it.
    let container_memory = quantity::from_bytes(memory + memory / 4 + (256 << 20));
    let resources = spec
        .resources
        .clone()
        .unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([(
                "memory".to_string(),
                container_memory.clone(),
            )])),
            limits: Some(BTreeMap::from([("memory".to_string(), container_memory)])),
            ..Default::default()
        });
    let parts = PodParts {
        tier: Tier::Storage,
        command: Some(ordinal_id_command(Tier::Storage, "--node-id", &spec.args)),
        args: Vec::new(),
        env: vars,
        resources: Some(resources),
        overrides: &spec.pod,
        rdma: true,
    };
    let mut set = stateful_set(
        db,
        names,
        Tier::Storage,
        Some(replicas),
        template(db, names, parts),
    );
    if let (Some(persistence), Some(set_spec)) = (&spec.persistence, set.spec.as_mut()) {
        set_spec.volume_claim_templates = Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".to_string()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_string()]),
                storage_class_name: persistence.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(persistence.size.0.clone()),
                    )])),
                    limits: None,
                }),
                ..Default::default()
            }),
            status: None,
        }]);
        // A drained, removed node's log is worthless; deleting the database deletes data.
        set_spec.persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Delete".to_string()),
                when_scaled: Some("Delete".to_string()),
            });
        if let Some(container) = set_spec
            .template
            .spec
            .as_mut()
            .and_then(|p| p.containers.first_mut())
        {
            container.volume_mounts = Some(vec![VolumeMount {
                name: "data".to_string(),
                mount_path: DATA_DIR.to_string(),
                ..Default::default()
            }]);
        }
    }
    set
}

/// Commit managers. With autoscaling the HPA owns `replicas`, so the operator leaves the
/// field out of its apply (server-side apply then never resets it).
pub fn commit_manager(db: &SharedMemDatabase, names: &Names) -> StatefulSet {
    let spec = &db.spec.commit_managers;
    let mut vars = common_env(names, "SHMDB_COMMIT_LISTEN", COMMIT_PORT);
    vars.push(env(
        "SHMDB_COMMIT_ADVERTISE",
        format!(
            "$(POD_NAME).{}.{}.svc:{COMMIT_PORT}",
            names.headless(Tier::CommitManager),
            names.namespace
        ),
    ));
    vars.push(env(
        "SHMDB_STORE_SEEDS",
        names.storage_seeds(db.spec.storage.replicas),
    ));
    merge_env(&mut vars, &spec.env);
    let parts = PodParts {
        tier: Tier::CommitManager,
        command: Some(ordinal_id_command(
            Tier::CommitManager,
            "--manager-id",
            &spec.args,
        )),
        args: Vec::new(),
        env: vars,
        resources: spec.resources.clone(),
        overrides: &spec.pod,
        rdma: false,
    };
    let replicas = spec.autoscaling.is_none().then_some(spec.replicas);
    stateful_set(
        db,
        names,
        Tier::CommitManager,
        replicas,
        template(db, names, parts),
    )
}
