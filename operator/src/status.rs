//! The database's status after a reconcile: tier counts, partition-map health, conditions.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;

use crate::autoscale;
use crate::conditions;
use crate::crd::{
    CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY, CONDITION_UNDER_REPLICATED,
    PartitionMapStatus, SharedMemDatabase, SharedMemDatabaseStatus, StorageTierStatus, TierStatus,
};
use crate::placement::PlacementSnapshot;
use crate::resources::{Names, Tier, selector_labels};

/// (replicas, ready replicas) a StatefulSet reports.
pub fn ready(set: &StatefulSet) -> (i32, i32) {
    let status = set.status.as_ref();
    (
        status.map(|s| s.replicas).unwrap_or(0),
        status.and_then(|s| s.ready_replicas).unwrap_or(0),
    )
}

/// The label selector of a tier as the scale subresource wants it (`k=v,k=v`).
pub fn selector_string(names: &Names, tier: Tier) -> String {
    selector_labels(names, tier)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The status after an apply: tier counts from the applied StatefulSets, the storage
/// decision, the placement snapshot, and the four conditions.
pub fn build(
    db: &SharedMemDatabase,
    names: &Names,
    previous: &SharedMemDatabaseStatus,
    sets: &[StatefulSet],
    decision: &autoscale::StorageDecision,
    placement: Option<&PlacementSnapshot>,
    now: Timestamp,
) -> SharedMemDatabaseStatus {
    let find = |tier: Tier| {
        sets.iter()
            .find(|s| s.metadata.name.as_deref() == Some(names.stateful_set(tier).as_str()))
            .map(ready)
            .unwrap_or((0, 0))
    };
    let (pn, pn_ready) = find(Tier::Processing);
    let (sn, sn_ready) = find(Tier::Storage);
    let (cm, cm_ready) = find(Tier::CommitManager);
    let generation = db.metadata.generation;
    let mut conditions_list = previous.conditions.clone();
    let map = placement.and_then(|p| {
        p.map_version.map(|version| PartitionMapStatus {
            version: i64::try_from(version).unwrap_or(i64::MAX),
            ranges: i32::try_from(p.ranges).unwrap_or(i32::MAX),
            under_replicated_ranges: i32::try_from(p.under_replicated).unwrap_or(i32::MAX),
            lost_ranges: i32::try_from(p.lost).unwrap_or(i32::MAX),
            moves_in_flight: i32::try_from(p.moves).unwrap_or(i32::MAX),
        })
    });
    let under = map
        .as_ref()
        .map(|m| m.under_replicated_ranges + m.lost_ranges);
    let tiers_ready = pn_ready >= db.spec.processing.replicas
        && sn_ready >= decision.stateful_set_replicas
        && cm_ready >= cm.max(1);
    let silent = placement.map_or(0, |p| p.silent_nodes);
    let placement_ok = placement.is_none() || (under == Some(0) && silent == 0);
    let ready_now = tiers_ready && placement_ok;
    let moving =
        !decision.draining.is_empty() || map.as_ref().is_some_and(|m| m.moves_in_flight > 0);
    let set = |list: &mut Vec<_>, t: &str, s: bool, r: &str, m: String| {
        conditions::set(list, t, s, r, m, generation, now)
    };
    set(
        &mut conditions_list,
        CONDITION_DEGRADED,
        false,
        "SpecValid",
        "the spec is valid".into(),
    );
    set(
        &mut conditions_list,
        CONDITION_READY,
        ready_now,
        if ready_now {
            "AllTiersReady"
        } else {
            "TiersNotReady"
        },
        format!(
            "processing {pn_ready}/{}, storage {sn_ready}/{}, commit managers {cm_ready}/{}{}",
            db.spec.processing.replicas,
            decision.stateful_set_replicas,
            cm.max(1),
            if silent > 0 {
                format!("; {silent} storage nodes in the partition map not answering")
            } else {
                String::new()
            }
        ),
    );
    set(
        &mut conditions_list,
        CONDITION_PROGRESSING,
        !ready_now || moving,
        if moving {
            "PlacementMoving"
        } else if ready_now {
            "Stable"
        } else {
            "RollingOut"
        },
        if decision.draining.is_empty() {
            "".to_string()
        } else {
            format!("draining storage pods {:?}", decision.draining)
        },
    );
    match under {
        Some(n) => set(
            &mut conditions_list,
            CONDITION_UNDER_REPLICATED,
            n > 0,
            if n > 0 {
                "RangesBelowReplicationFactor"
            } else {
                "FullyReplicated"
            },
            format!(
                "{n} ranges below replication factor {}",
                db.spec.replication_factor
            ),
        ),
        None => set(
            &mut conditions_list,
            CONDITION_UNDER_REPLICATED,
            false,
            "NotObserved",
            "no partition map observed yet".into(),
        ),
    }
    SharedMemDatabaseStatus {
        observed_generation: generation,
        conditions: conditions_list,
        processing: Some(TierStatus {
            replicas: pn,
            ready_replicas: pn_ready,
            selector: Some(selector_string(names, Tier::Processing)),
        }),
        storage: Some(StorageTierStatus {
            replicas: sn,
            ready_replicas: sn_ready,
            target_replicas: decision.target,
            memory_utilization_percent: decision.utilization,
            draining: decision.draining.clone(),
            last_scale_time: decision.last_scale_time.clone(),
        }),
        commit_managers: Some(TierStatus {
            replicas: cm,
            ready_replicas: cm_ready,
            selector: Some(selector_string(names, Tier::CommitManager)),
        }),
        partition_map: map.or_else(|| previous.partition_map.clone()),
        endpoint: Some(names.endpoint()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
    use kube::api::ObjectMeta;

    use super::*;
    use crate::fixtures::example_database;

    fn set(name: String, replicas: i32) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some(name),
                ..Default::default()
            },
            status: Some(StatefulSetStatus {
                replicas,
                ready_replicas: Some(replicas),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ready_condition(placement: &PlacementSnapshot) -> (bool, String) {
        let db = example_database("db", "ns");
        let names = Names::of(&db);
        let sets: Vec<StatefulSet> = [
            (Tier::Processing, db.spec.processing.replicas),
            (Tier::Storage, db.spec.storage.replicas),
            (Tier::CommitManager, db.spec.commit_managers.replicas),
        ]
        .into_iter()
        .map(|(tier, n)| set(names.stateful_set(tier), n))
        .collect();
        let decision = autoscale::StorageDecision {
            target: db.spec.storage.replicas,
            stateful_set_replicas: db.spec.storage.replicas,
            draining: Vec::new(),
            scaled: None,
            utilization: None,
            last_scale_time: None,
        };
        let status = build(
            &db,
            &names,
            &SharedMemDatabaseStatus::default(),
            &sets,
            &decision,
            Some(placement),
            Timestamp::UNIX_EPOCH,
        );
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_READY)
            .map(|c| (c.status == "True", c.message.clone()));
        ready.unwrap_or((false, "no Ready condition".into()))
    }

    #[test]
    fn a_map_node_that_has_not_answered_keeps_the_database_not_ready() {
        let whole = PlacementSnapshot {
            leader: true,
            map_version: Some(1),
            ranges: 8,
            ..Default::default()
        };
        let (ready, message) = ready_condition(&whole);
        assert!(ready, "{message}");
        // Just bootstrapped: the map names every node with its copies, but two nodes have
        // not answered yet, so nothing confirms they hold them.
        let silent = PlacementSnapshot {
            silent_nodes: 2,
            ..whole.clone()
        };
        let (ready, message) = ready_condition(&silent);
        assert!(!ready, "Ready with silent nodes: {message}");
        assert!(message.contains("2 storage nodes"), "{message}");
        let under = PlacementSnapshot {
            under_replicated: 1,
            ..whole
        };
        assert!(!ready_condition(&under).0);
    }
}
