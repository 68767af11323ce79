//! `kubectl apply` of every example database: each child object exists and is owned by the
//! database, the conditions reach Ready, and `kubectl get smdb` prints the right columns.

mod common;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ObjectMeta;
use shmdb_operator::crd::{
    CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY, CONDITION_UNDER_REPLICATED,
    SharedMemDatabase,
};
use shmdb_operator::resources::{Names, Tier};

use common::cluster::Cluster;
use common::data_plane::StorageFollower;
use common::database::{self, READY_TIMEOUT, condition};

/// Problems with one object's owner references (empty when it is controlled by `db`).
fn ownership(kind: &str, meta: &ObjectMeta, db: &SharedMemDatabase) -> Option<String> {
    let name = meta.name.clone().unwrap_or_default();
    let uid = db.metadata.uid.clone().unwrap_or_default();
    let owners = meta.owner_references.clone().unwrap_or_default();
    let owned = owners.iter().any(|o| {
        o.uid == uid
            && o.kind == "SharedMemDatabase"
            && o.api_version == "shmdb.io/v1alpha1"
            && o.controller == Some(true)
    });
    (!owned).then(|| format!("{kind} {name} is not controlled by the database: {owners:?}"))
}

/// Every child object the database must have, checked for existence and ownership.
async fn check_children(cluster: &Cluster, db: &SharedMemDatabase) -> Result<Vec<String>> {
    let names = Names::of(db);
    let ns = names.namespace.clone();
    let client = &cluster.client;
    let mut problems = Vec::new();
    let mut expect = |kind: &str, name: String, meta: Option<ObjectMeta>| {
        problems.push(match meta {
            None => Some(format!("{kind} {name} missing")),
            Some(meta) => ownership(kind, &meta, db),
        })
    };
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    for tier in Tier::ALL {
        let set = names.stateful_set(tier);
        expect(
            "StatefulSet",
            set.clone(),
            sets.get_opt(&set).await?.map(|o| o.metadata),
        );
        let headless = names.headless(tier);
        let svc = services.get_opt(&headless).await?.map(|o| o.metadata);
        expect("Service", headless, svc);
        let pdb = names.pdb(tier);
        expect(
            "PodDisruptionBudget",
            pdb.clone(),
            pdbs.get_opt(&pdb).await?.map(|o| o.metadata),
        );
    }
    let client_svc = names.client_service();
    let svc = services.get_opt(&client_svc).await?.map(|o| o.metadata);
    expect("Service", client_svc, svc);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let hpa = names.hpa(Tier::Processing);
    let found = hpas.get_opt(&hpa).await?;
    let mut unexpected = None;
    if db.spec.processing.autoscaling.is_some() {
        expect("HorizontalPodAutoscaler", hpa, found.map(|o| o.metadata));
    } else if found.is_some() {
        unexpected = Some(format!(
            "HPA {hpa} exists but processing.autoscaling is off"
        ));
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let map = names.partition_map();
    expect(
        "ConfigMap",
        map.clone(),
        maps.get_opt(&map).await?.map(|o| o.metadata),
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let lease = names.placement_lease();
    expect(
        "Lease",
        lease.clone(),
        leases.get_opt(&lease).await?.map(|o| o.metadata),
    );
    problems.push(unexpected);
    Ok(problems.into_iter().flatten().collect())
}

/// The conditions of a Ready database, each with its expected status and reason.
fn check_conditions(db: &SharedMemDatabase) -> Vec<String> {
    let want = [
        (CONDITION_READY, "True", "AllTiersReady"),
        (CONDITION_PROGRESSING, "False", "Stable"),
        (CONDITION_DEGRADED, "False", "SpecValid"),
        (CONDITION_UNDER_REPLICATED, "False", "FullyReplicated"),
    ];
    want.iter()
        .filter_map(|(type_, status, reason)| match condition(db, type_) {
            Some(c) if c.status == *status && c.reason == *reason => (c.observed_generation
                != db.metadata.generation)
                .then(|| format!("{type_} is for generation {:?}", c.observed_generation)),
            Some(c) => Some(format!(
                "{type_}: want {status}/{reason}, got {}/{}: {}",
                c.status, c.reason, c.message
            )),
            None => Some(format!("{type_} missing")),
        })
        .collect()
}

/// The partition-map version in the database's status now.
async fn current_map_version(cluster: &Cluster, db: &SharedMemDatabase) -> Result<i64> {
    database::api(cluster, &db.namespace_or_default())
        .get(&db.name())
        .await?
        .status
        .and_then(|s| s.partition_map)
        .map(|m| m.version)
        .context("the partition map left the status")
}

/// `kubectl get smdb` (and `-o wide`) print the printer columns with the right values.
async fn check_columns(cluster: &Cluster, db: &SharedMemDatabase) -> Result<Vec<String>> {
    let ns = db.namespace_or_default();
    let name = db.name();
    let map_version = db
        .status
        .as_ref()
        .and_then(|s| s.partition_map.as_ref())
        .map(|m| m.version)
        .context("Ready database without a partition map in its status")?;
    let mut problems = Vec::new();
    for (args, header, row) in [
        (
            vec!["get", "smdb", &name, "-n", &ns],
            vec![
                "NAME",
                "READY",
                "PROCESSING",
                "STORAGE",
                "COMMITMGRS",
                "RF",
                "MAP",
                "AGE",
            ],
            vec![
                name.clone(),
                "True".to_string(),
                db.spec.processing.replicas.to_string(),
                db.spec.storage.replicas.to_string(),
                db.spec.commit_managers.replicas.to_string(),
                db.spec.replication_factor.to_string(),
            ],
        ),
        (
            vec!["get", "sharedmemdatabase", &name, "-n", &ns, "-o", "wide"],
            vec![
                "NAME",
                "READY",
                "PROCESSING",
                "STORAGE",
                "COMMITMGRS",
                "RF",
                "MAP",
                "UNDERREPLICATED",
                "ENDPOINT",
                "AGE",
            ],
            vec![
                name.clone(),
                "True".to_string(),
                db.spec.processing.replicas.to_string(),
                db.spec.storage.replicas.to_string(),
                db.spec.commit_managers.replicas.to_string(),
                db.spec.replication_factor.to_string(),
            ],
        ),
    ] {
        let out = cluster.kubectl_ok(&args, None).await?;
        let mut lines = out.lines();
        let got_header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let got_row: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        if got_header != header {
            problems.push(format!(
                "`kubectl {}` header {got_header:?}",
                args.join(" ")
            ));
        }
        // The map version may move on between the status read and kubectl's (placement
        // rebalances a Ready database), so MAP must lie between that read and one after.
        let map_after = current_map_version(cluster, db).await?;
        let map_ok = got_row
            .get(row.len())
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|v| (map_version..=map_after).contains(&v));
        // `-o wide` then has UNDERREPLICATED and ENDPOINT; AGE (last) changes.
        let wide_ok = header.len() == row.len() + 2
            || got_row.get(row.len() + 1..row.len() + 3)
                == Some(&["0", format!("{name}.{ns}.svc:5432").as_str()][..]);
        if got_row.len() != header.len() || got_row[..row.len()] != row[..] || !map_ok || !wide_ok {
            problems.push(format!(
                "`kubectl {}` row {got_row:?}, want {row:?}, MAP in {map_version}..={map_after}{} then AGE",
                args.join(" "),
                if header.len() > row.len() + 2 {
                    format!(", 0, {name}.{ns}.svc:5432")
                } else {
                    String::new()
                }
            ));
        }
    }
    Ok(problems)
}

#[tokio::test]
#[cfg_attr(
    not(e2e_cluster),
    ignore = "needs a cluster: SHMDB_E2E=1 (e2e/run.sh) or KUBECONFIG"
)]
async fn every_example_reaches_ready_with_owned_children_and_columns() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let mut failures = Vec::new();
    for (file, manifest) in database::examples()? {
        let ns = cluster.namespace("example").await?;
        let name = database::name_of(&manifest)?;
        let follower = StorageFollower::start(&cluster, &ns.name, &name).await?;
        let out = database::apply(&cluster, &ns.name, &manifest).await?;
        ensure!(
            out.ok,
            "{}: kubectl apply failed: {}",
            file.display(),
            out.stderr
        );
        let outcome = async {
            let db = database::wait_ready(&cluster, &ns.name, &name, READY_TIMEOUT).await?;
            let mut problems = check_conditions(&db);
            problems.extend(check_children(&cluster, &db).await?);
            problems.extend(check_columns(&cluster, &db).await?);
            anyhow::Ok(problems)
        }
        .await;
        follower.stop().await;
        match outcome {
            Ok(problems) if problems.is_empty() => ns.delete().await?,
            Ok(problems) => {
                failures.push(format!("{}:\n  {}", file.display(), problems.join("\n  ")))
            }
            Err(e) => failures.push(format!("{}: {e:#}", file.display())),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}
