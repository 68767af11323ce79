//! The operator replica leading a database's placement is killed mid-reconcile (as soon as
//! it takes the Lease, while the partition map is being bootstrapped): the other replica
//! takes the Lease once it expires and the database converges to Ready.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use shmdb_operator::crd::CONDITION_READY;
use shmdb_operator::resources::Names;

use common::cluster::Cluster;
use common::data_plane::StorageFollower;
use common::database::{self, READY_TIMEOUT, condition, example};
use common::{operator, wait};

#[tokio::test]
#[cfg_attr(
    not(e2e_cluster),
    ignore = "needs a cluster: SHMDB_E2E=1 (e2e/run.sh) or KUBECONFIG"
)]
async fn killed_placement_leader_is_replaced_and_the_database_converges() -> Result<()> {
    let cluster = Cluster::connect().await?;
    let ns = cluster.namespace("failover").await?;
    let manifest = example("replicated")?;
    let name = database::name_of(&manifest)?;
    let follower = StorageFollower::start(&cluster, &ns.name, &name).await?;
    let out = database::apply(&cluster, &ns.name, &manifest).await?;
    ensure!(out.ok, "kubectl apply failed: {}", out.stderr);
    let lease = Names {
        database: name.clone(),
        namespace: ns.name.clone(),
    }
    .placement_lease();

    let (first, transitions) =
        wait::until("a placement leader", Duration::from_secs(60), || async {
            Ok(operator::lease_holder(&cluster, &ns.name, &lease)
                .await?
                .ok_or_else(|| "no holder yet".to_string()))
        })
        .await?;
    let db = database::api(&cluster, &ns.name).get(&name).await?;
    let ready_at_kill = condition(&db, CONDITION_READY).is_some_and(|c| c.status == "True");
    operator::kill(&cluster, &first).await?;

    let (second, after) = wait::until(
        "another replica to take the Lease",
        Duration::from_secs(90),
        || async {
            Ok(
                match operator::lease_holder(&cluster, &ns.name, &lease).await? {
                    Some((holder, t)) if holder != first => Ok((holder, t)),
                    other => Err(format!("holder {other:?}")),
                },
            )
        },
    )
    .await?;
    ensure!(
        after > transitions,
        "leaseTransitions {after} after the takeover by {second}, was {transitions}"
    );
    let db = database::wait_ready(&cluster, &ns.name, &name, READY_TIMEOUT).await?;
    let map = db.status.as_ref().and_then(|s| s.partition_map.clone());
    ensure!(
        map.as_ref()
            .is_some_and(|m| m.ranges > 0 && m.under_replicated_ranges == 0 && m.lost_ranges == 0),
        "Ready without a healthy partition map: {map:?}"
    );
    // The new leader keeps the Lease (the killed replica restarts as a follower).
    let holder = operator::lease_holder(&cluster, &ns.name, &lease).await?;
    ensure!(
        holder.as_ref().is_some_and(|(h, _)| *h == second),
        "Lease moved again after convergence: {holder:?}"
    );
    eprintln!("killed {first} (database Ready at the kill: {ready_at_kill}); {second} took over");
    follower.stop().await;
    ns.delete().await
}
