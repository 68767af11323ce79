//! The storage autoscaler: memory-utilization driven, drain before scale-in.
//!
//! An HPA cannot scale storage nodes: removing a pod that still holds ranges would drop
//! copies (or the last copy). So the operator decides the storage tier's size itself. It
//! adds a node when average record-memory utilization exceeds the high-water mark; it removes
//! one only when the remaining nodes would stay below the low-water mark, and then first
//! asks the placement manager to drain the highest ordinals (the pods a StatefulSet removes),
//! shrinking the StatefulSet only once those nodes hold nothing. A cool-down separates
//! decisions. This module is the pure decision; the placement task carries out the drain.

use std::collections::BTreeSet;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{SharedMemDatabase, StorageTierStatus};

/// Record memory of the storage tier, summed over the nodes that reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryUsage {
    /// Bytes of records held (all replicas).
    pub used: u64,
    /// Sum of the nodes' memory limits.
    pub limit: u64,
    /// Nodes that reported.
    pub nodes: u32,
}

impl MemoryUsage {
    /// Utilization in percent (0 when nothing reported).
    pub fn percent(&self) -> f64 {
        if self.limit == 0 {
            0.0
        } else {
            self.used as f64 * 100.0 / self.limit as f64
        }
    }
}

/// What the placement side knows, as far as the autoscaler cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageObservation {
    /// Current memory use, when the nodes reported.
    pub memory: Option<MemoryUsage>,
    /// Ordinals the placement manager has drained and removed from the partition map (or
    /// that were never in it): their pods can go.
    pub removable: BTreeSet<i32>,
}

/// The autoscaler's decision for this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageDecision {
    /// Storage nodes wanted.
    pub target: i32,
    /// Replicas to apply to the StatefulSet now (stays above `target` while draining).
    pub stateful_set_replicas: i32,
    /// Ordinals to drain before the StatefulSet shrinks.
    pub draining: Vec<i32>,
    /// A scaling decision taken now: (Event reason, note).
    pub scaled: Option<(&'static str, String)>,
    /// Utilization seen, for the status.
    pub utilization: Option<i32>,
    /// When the last decision was taken (RFC 3339), for the cool-down.
    pub last_scale_time: Option<String>,
}

/// Decides the storage tier's size from the spec, the previous status and observations.
pub fn decide(
    db: &SharedMemDatabase,
    previous: Option<&StorageTierStatus>,
    observed: &StorageObservation,
    now: Timestamp,
) -> StorageDecision {
    let spec = &db.spec.storage;
    let previous_target = previous
        .map(|p| p.target_replicas)
        .filter(|t| *t > 0)
        .unwrap_or(spec.replicas);
    // What the StatefulSet runs now: the old target, or more while a drain is under way.
    let running = previous
        .and_then(|p| p.draining.iter().max().map(|m| m + 1))
        .unwrap_or(previous_target)
        .max(previous_target);
    let last = previous.and_then(|p| p.last_scale_time.clone());
    let utilization = observed.memory.map(|m| m.percent().round() as i32);
    let mut target = match &spec.autoscaling {
        None => spec.replicas,
        Some(auto) => previous_target.clamp(auto.min_replicas, auto.max_replicas),
    };
    let mut scaled = None;
    let mut last_scale_time = last.clone();
    if let (Some(auto), Some(memory)) = (&spec.autoscaling, observed.memory) {
        let cooled = last
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .is_none_or(|t| {
                now.duration_since(t) >= SignedDuration::from_secs(auto.cooldown_seconds)
            });
        let draining = previous.is_some_and(|p| !p.draining.is_empty());
        let percent = memory.percent();
        if cooled && !draining && memory.nodes > 0 {
            let per_node = memory.limit / u64::from(memory.nodes);
            if percent > f64::from(auto.scale_out_above_percent) && target < auto.max_replicas {
                target += 1;
                scaled = Some((
                    "StorageScaleOut",
                    format!(
                        "memory utilization {percent:.0}% above {}%: adding storage node {target}",
                        auto.scale_out_above_percent
                    ),
                ));
            } else if target > auto.min_replicas && target > db.spec.replication_factor {
                let remaining = per_node * u64::try_from(target - 1).unwrap_or(0);
                let after = if remaining == 0 {
                    f64::INFINITY
                } else {
                    memory.used as f64 * 100.0 / remaining as f64
                };
                if after < f64::from(auto.scale_in_below_percent) {
                    target -= 1;
                    scaled = Some((
                        "StorageScaleIn",
                        format!(
                            "memory utilization would be {after:.0}% on {target} nodes (below {}%): draining storage node {}",
                            auto.scale_in_below_percent,
                            target + 1
                        ),
                    ));
                }
            }
            if scaled.is_some() {
                last_scale_time = Some(now.to_string());
            }
        }
    }
    target = target.max(db.spec.replication_factor).max(1);
    let (stateful_set_replicas, draining) = if target >= running {
        (target, Vec::new())
    } else {
        let going: Vec<i32> = (target..running).collect();
        if going.iter().all(|o| observed.removable.contains(o)) {
            (target, Vec::new())
        } else {
            (running, going)
        }
    };
    StorageDecision {
        target,
        stateful_set_replicas,
        draining,
        scaled,
        utilization,
        last_scale_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::example_database;

    fn usage(percent: u64, nodes: u32) -> StorageObservation {
        let limit = u64::from(nodes) * 1000;
        StorageObservation {
            memory: Some(MemoryUsage {
                used: limit * percent / 100,
                limit,
                nodes,
            }),
            removable: BTreeSet::new(),
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn scales_out_above_the_high_water_mark() {
        let db = example_database("db", "ns");
        let d = decide(&db, None, &usage(90, 4), now());
        assert_eq!((d.target, d.stateful_set_replicas), (5, 5));
        assert_eq!(d.scaled.map(|s| s.0), Some("StorageScaleOut"));
        assert!(d.draining.is_empty());
    }

    #[test]
    fn scale_in_drains_first_and_shrinks_only_when_removable() {
        let db = example_database("db", "ns");
        let d = decide(&db, None, &usage(10, 4), now());
        assert_eq!(d.target, 3);
        assert_eq!(d.stateful_set_replicas, 4, "pod 3 still holds ranges");
        assert_eq!(d.draining, vec![3]);
        let status = StorageTierStatus {
            replicas: 4,
            ready_replicas: 4,
            target_replicas: d.target,
            draining: d.draining.clone(),
            last_scale_time: d.last_scale_time.clone(),
            memory_utilization_percent: d.utilization,
        };
        // Not drained yet: keep 4, no new decision while draining.
        let d2 = decide(&db, Some(&status), &usage(10, 4), now());
        assert_eq!((d2.target, d2.stateful_set_replicas), (3, 4));
        assert!(d2.scaled.is_none());
        // Drained and removed from the map: now the StatefulSet shrinks.
        let mut drained = usage(10, 3);
        drained.removable.insert(3);
        let d3 = decide(&db, Some(&status), &drained, now());
        assert_eq!((d3.target, d3.stateful_set_replicas), (3, 3));
        assert!(d3.draining.is_empty());
    }

    #[test]
    fn cool_down_and_bounds_hold() {
        let db = example_database("db", "ns");
        let status = StorageTierStatus {
            target_replicas: 8,
            last_scale_time: Some(now().to_string()),
            ..Default::default()
        };
        let d = decide(&db, Some(&status), &usage(95, 8), now());
        assert_eq!(d.target, 8, "at max");
        let status = StorageTierStatus {
            target_replicas: 4,
            last_scale_time: Some(now().to_string()),
            ..Default::default()
        };
        let d = decide(&db, Some(&status), &usage(95, 4), now());
        assert_eq!(d.target, 4, "within the cool-down");
        let later = now() + SignedDuration::from_secs(301);
        let d = decide(&db, Some(&status), &usage(95, 4), later);
        assert_eq!(d.target, 5, "after the cool-down");
    }

    #[test]
    fn without_autoscaling_follows_the_spec_but_still_drains() {
        let mut db = example_database("db", "ns");
        db.spec.storage.autoscaling = None;
        db.spec.storage.replicas = 3;
        let status = StorageTierStatus {
            target_replicas: 5,
            ..Default::default()
        };
        let d = decide(&db, Some(&status), &StorageObservation::default(), now());
        assert_eq!((d.target, d.stateful_set_replicas), (3, 5));
        assert_eq!(d.draining, vec![3, 4]);
    }
}
