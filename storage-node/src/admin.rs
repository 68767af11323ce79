//! The placement manager's levers on a node: install a map, split a range, report ranges.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use shmdb_placement::{PartitionMap, RangeDesc, RangeId};
use shmdb_proto::storage as pb;
use tracing::{info, warn};

use crate::node::Node;
use crate::range::{Range, RangeState, Role, Status};
use crate::replication::{ensure_followers, fence};

/// Installs a partition map: adopts roles, epochs and replica lists for the ranges it
/// gives this node, creates replicas that will be filled by their primary, hands over
/// ranges this node no longer leads (after letting its followers catch up), and drops the
/// ranges it no longer holds.
pub async fn install_map(node: &Arc<Node>, proto: pb::PartitionMap) -> Result<u64, tonic::Status> {
    let map = PartitionMap::from_proto(&proto)
        .map_err(|e| tonic::Status::invalid_argument(format!("invalid partition map: {e}")))?;
    let _guard = node.admin_lock.lock().await;
    let current = node.map();
    if map.version < current.version {
        return Err(tonic::Status::failed_precondition(format!(
            "stale partition map: version {} is older than the installed {}",
            map.version, current.version
        )));
    }
    if map.version == current.version {
        return if map == *current {
            Ok(map.version)
        } else {
            Err(tonic::Status::failed_precondition(format!(
                "a different partition map with version {} is already installed",
                map.version
            )))
        };
    }
    let me = node.id();
    hand_over(node, &map).await;
    {
        let mut table = node.ranges.write();
        for desc in map.ranges.iter().filter(|r| r.involves(me)) {
            let role = role_in(desc, me);
            let existing = table
                .by_id
                .get(&desc.id)
                .filter(|r| r.state.lock().status != Status::Retired)
                .cloned();
            match existing {
                Some(range) => {
                    let mut state = range.state.lock();
                    adopt(node, &range, &mut state, desc, role);
                }
                None => {
                    let ahead = table.by_start.values().any(|r| {
                        let s = r.state.lock();
                        s.status != Status::Retired && overlaps(&s, desc) && s.epoch > desc.epoch
                    });
                    if ahead {
                        // We split this range after the map was computed; keep our children.
                        continue;
                    }
                    let status = if role == Role::Primary && desc.bootstrap {
                        Status::Serving
                    } else {
                        Status::NeedsSnapshot
                    };
                    if role == Role::Primary && status != Status::Serving {
                        warn!(
                            range = desc.id,
                            "made primary of a range without a copy; it will serve nothing"
                        );
                    }
                    let mut state = RangeState::empty(
                        desc.id,
                        desc.start.clone(),
                        desc.end.clone(),
                        desc.epoch,
                        role,
                        status,
                    );
                    state.primary = desc.primary().unwrap_or_default();
                    state.replicas = desc.replicas.clone();
                    state.learners = desc.learners.clone();
                    let range = Arc::new(Range::new(state));
                    table.insert(range.clone(), desc.start.clone());
                    let mut state = range.state.lock();
                    ensure_followers(node, &range, &mut state);
                }
            }
        }
        let stale: Vec<RangeId> = table
            .by_id
            .iter()
            .filter(|(id, range)| {
                if map.range(**id).is_some_and(|d| d.involves(me)) {
                    return false;
                }
                let s = range.state.lock();
                // A child of a split the map does not know yet is newer than the map.
                let ahead = map.range(**id).is_none()
                    && map
                        .ranges
                        .iter()
                        .filter(|d| overlaps(&s, d))
                        .all(|d| s.epoch > d.epoch);
                !ahead || s.status == Status::Retired
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(range) = table.remove(id) {
                retire(node, &range);
            }
        }
        // Published before the table lock is released: whoever finds a range gone from
        // the table also sees the map that removed it (see `create_for_primary`).
        *node.map.write() = Arc::new(map.clone());
    }
    info!(version = map.version, "installed partition map");
    node.metrics.map_version.set(map.version as i64);
    Ok(map.version)
}

fn role_in(desc: &RangeDesc, node: u64) -> Role {
    if desc.primary() == Some(node) {
        Role::Primary
    } else if desc.replicas.contains(&node) {
        Role::Backup
    } else {
        Role::Learner
    }
}

fn overlaps(state: &RangeState, desc: &RangeDesc) -> bool {
    desc.end.as_ref().is_none_or(|e| state.start < *e)
        && state.end.as_ref().is_none_or(|e| desc.start < *e)
}

/// Applies a map entry to a replica this node already holds.
fn adopt(
    node: &Arc<Node>,
    range: &Arc<Range>,
    state: &mut RangeState,
    desc: &RangeDesc,
    role: Role,
) {
    let was_primary = state.role == Role::Primary;
    state.replicas = desc.replicas.clone();
    state.learners = desc.learners.clone();
    state.epoch = state.epoch.max(desc.epoch);
    state.primary = desc.primary().unwrap_or_default();
    match (was_primary, role) {
        (_, Role::Primary) => {
            if !was_primary {
                state.followers.clear();
                if state.status != Status::Serving {
                    warn!(
                        range = desc.id,
                        "promoted a replica without a trustworthy copy"
                    );
                }
            }
            state.role = Role::Primary;
            if state.status == Status::Quiescing {
                state.status = Status::Serving;
            }
            state.followers.retain(|f, _| desc.involves(*f));
            state.recompute_committed();
            ensure_followers(node, range, state);
        }
        (true, other) => {
            state.role = other;
            state.tasks.clear();
            state.followers.clear();
            state.pins.clear();
            if state.status == Status::Quiescing {
                state.status = Status::Serving;
            }
        }
        (false, other) => state.role = other,
    }
    range.publish(state);
    range.bump_config();
}

/// Before giving up primaryship, stop taking writes and let every backup catch up, so the
/// new primary has every acknowledged and every applied write.
///
/// Each backup's own acknowledged position is what counts, not the commit watermark: a
/// backup that was a learner when an entry committed may not have that entry yet (the
/// placement manager saw it caught up, then the primary committed more before the map that
/// promoted it arrived), and handing over to it would lose acknowledged writes.
async fn hand_over(node: &Arc<Node>, map: &PartitionMap) {
    let me = node.id();
    let leaving: Vec<Arc<Range>> = node
        .ranges
        .read()
        .by_id
        .values()
        .filter(|r| {
            let s = r.state.lock();
            s.role == Role::Primary
                && s.status == Status::Serving
                && map.range(r.id).is_some_and(|d| d.primary() != Some(me))
        })
        .cloned()
        .collect();
    for range in leaving {
        let target = {
            let mut state = range.state.lock();
            state.status = Status::Quiescing;
            state.applied_lsn
        };
        let caught_up = tokio::time::timeout(
            node.config.replication_timeout,
            backups_reach(&range, target),
        )
        .await
        .is_ok();
        if !caught_up {
            let mut state = range.state.lock();
            fence(
                node,
                &range,
                &mut state,
                "followers did not catch up before hand-over".into(),
            );
        }
    }
}

/// Returns once every backup of the range has acknowledged `lsn`.
async fn backups_reach(range: &Range, lsn: u64) {
    loop {
        // Registered before the check, so an acknowledgement in between is not missed.
        let acked = range.acked.notified();
        tokio::pin!(acked);
        acked.as_mut().enable();
        {
            let state = range.state.lock();
            let behind = state
                .replicas
                .iter()
                .filter(|n| **n != state.primary)
                .any(|n| state.followers.get(n).is_none_or(|acked| *acked < lsn));
            if !behind {
                return;
            }
        }
        acked.await;
    }
}

/// Drops a replica this node no longer holds and returns its memory.
fn retire(node: &Node, range: &Range) {
    let mut state = range.state.lock();
    node.budget.release(state.bytes);
    state.bytes = 0;
    state.data.clear();
    state.log.clear();
    state.status = Status::Retired;
    state.tasks.clear();
    range.bump_fence(&state);
    range.bump_config();
    info!(range = range.id, "dropped range replica");
}

/// Splits a range as its primary: logs the split, waits until every replica has it, then
/// splits locally. Returns the two children.
pub async fn split(
    node: &Arc<Node>,
    req: pb::SplitRangeRequest,
) -> Result<pb::SplitRangeResponse, tonic::Status> {
    let _guard = node.admin_lock.lock().await;
    let range = node
        .ranges
        .read()
        .by_id
        .get(&req.range_id)
        .cloned()
        .ok_or_else(|| {
            tonic::Status::not_found(format!("range {} is not held here", req.range_id))
        })?;
    if req.left_id == 0 || req.right_id == 0 || req.left_id == req.right_id {
        return Err(tonic::Status::invalid_argument(
            "split needs two distinct non-zero range ids",
        ));
    }
    {
        let table = node.ranges.read();
        let map = node.map();
        for id in [req.left_id, req.right_id] {
            if table.by_id.contains_key(&id) || map.range(id).is_some() {
                return Err(tonic::Status::invalid_argument(format!(
                    "range id {id} is in use"
                )));
            }
        }
    }
    let (lsn, fence_gen, effect) = {
        let mut state = range.state.lock();
        if !state.serves() {
            return Err(tonic::Status::failed_precondition(
                "not the serving primary of this range",
            ));
        }
        let key = if req.split_key.is_empty() {
            state.median_key().ok_or_else(|| {
                tonic::Status::failed_precondition("range has fewer than two keys")
            })?
        } else {
            req.split_key.to_vec()
        };
        if key <= state.start || !state.contains(&key) {
            return Err(tonic::Status::invalid_argument(
                "split key is not strictly inside the range",
            ));
        }
        let effect = pb::SplitEffect {
            key: Bytes::from(key),
            left_id: req.left_id,
            right_id: req.right_id,
            new_epoch: state.epoch + 1,
        };
        let lsn = state.append_split(effect.clone());
        state.status = Status::Quiescing;
        range.publish(&state);
        (lsn, range.commit_tx.borrow().fence_gen, effect)
    };
    let mut rx = range.commit_tx.subscribe();
    let waited = tokio::time::timeout(
        node.config.replication_timeout * 6,
        rx.wait_for(|s| s.fence_gen != fence_gen || s.committed >= lsn),
    )
    .await;
    let replicated = matches!(&waited, Ok(Ok(s)) if s.fence_gen == fence_gen);
    drop(waited);
    if !replicated {
        let mut state = range.state.lock();
        fence(
            node,
            &range,
            &mut state,
            "split was not replicated in time".into(),
        );
        return Err(tonic::Status::unavailable(
            "split was not replicated in time; range fenced",
        ));
    }
    let (left, right) = split_local(node, &range, &effect)
        .ok_or_else(|| tonic::Status::aborted("range changed during the split"))?;
    Ok(pb::SplitRangeResponse {
        left: Some(left),
        right: Some(right),
    })
}

/// Performs a logged split on this node's copy: the parent is retired and two children take
/// its place, continuing its log at the new epoch.
pub(crate) fn split_local(
    node: &Arc<Node>,
    parent: &Arc<Range>,
    effect: &pb::SplitEffect,
) -> Option<(pb::RangeInfo, pb::RangeInfo)> {
    let mut table = node.ranges.write();
    let (left_state, right_state) = {
        let mut state = parent.state.lock();
        if state.status == Status::Retired {
            return None;
        }
        let placeholder = RangeState::empty(
            state.id,
            state.start.clone(),
            state.end.clone(),
            state.epoch,
            state.role,
            Status::Retired,
        );
        let mut left = std::mem::replace(&mut *state, placeholder);
        if left.status == Status::Quiescing {
            left.status = Status::Serving;
        }
        let right = left.split_off(
            &effect.key,
            effect.left_id,
            effect.right_id,
            effect.new_epoch,
        );
        (left, right)
    };
    parent.bump_config();
    table.remove(parent.id);
    let info = |s: &RangeState| pb::RangeInfo {
        id: s.id,
        start: s.start.clone().into(),
        end: s.end.clone().unwrap_or_default().into(),
        epoch: s.epoch,
        replicas: s.replicas.clone(),
        learners: s.learners.clone(),
        bootstrap: false,
    };
    let infos = (info(&left_state), info(&right_state));
    info!(
        parent = parent.id,
        left = effect.left_id,
        right = effect.right_id,
        "split range"
    );
    for state in [left_state, right_state] {
        let start = state.start.clone();
        let range = Arc::new(Range::new(state));
        table.insert(range.clone(), start);
        let mut state = range.state.lock();
        ensure_followers(node, &range, &mut state);
    }
    Some(infos)
}

/// Per-node memory of the last report, to turn op counters into rates.
#[derive(Debug, Default)]
pub struct RateTracker {
    last: Mutex<HashMap<RangeId, (Instant, u64)>>,
}

/// Sizes, roles, progress and load of every range held here.
pub fn report(node: &Node, req: &pb::RangeReportRequest) -> pb::RangeReport {
    let now = Instant::now();
    let ranges: Vec<Arc<Range>> = node.ranges.read().by_id.values().cloned().collect();
    let mut last = node.rates.last.lock();
    let mut stats = Vec::with_capacity(ranges.len());
    for range in ranges {
        let mut state = range.state.lock();
        if state.status == Status::Retired {
            continue;
        }
        let (then, ops_then) = last.get(&range.id).copied().unwrap_or((now, state.ops));
        let secs = now.duration_since(then).as_secs_f64();
        let op_rate = if secs > 0.0 {
            (state.ops.saturating_sub(ops_then)) as f64 / secs
        } else {
            0.0
        };
        last.insert(range.id, (now, state.ops));
        let role = match state.role {
            Role::Primary => pb::ReplicaRole::Primary,
            Role::Backup => pb::ReplicaRole::Backup,
            Role::Learner => pb::ReplicaRole::Learner,
        };
        let followers = if state.role == Role::Primary {
            state
                .replicas
                .iter()
                .skip(1)
                .chain(&state.learners)
                .map(|f| {
                    let acked = state.followers.get(f).copied().unwrap_or(0);
                    pb::LearnerProgress {
                        node: *f,
                        acked_lsn: acked,
                        caught_up: acked >= state.committed_lsn && state.followers.contains_key(f),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        stats.push(pb::RangeStats {
            range_id: range.id,
            start: state.start.clone().into(),
            end: state.end.clone().unwrap_or_default().into(),
            epoch: state.epoch,
            role: role as i32,
            applied_lsn: state.applied_lsn,
            committed_lsn: state.committed_lsn,
            keys: state.data.len() as u64,
            bytes: state.bytes,
            op_rate,
            fenced: state.status == Status::NeedsSnapshot,
            followers,
            split_key: if req.with_split_keys {
                state.split_hint().map(Bytes::from).unwrap_or_default()
            } else {
                Bytes::new()
            },
        });
    }
    stats.sort_by_key(|s| s.range_id);
    pb::RangeReport {
        node_id: node.id(),
        map_version: node.map_version(),
        ranges: stats,
        memory_used: node.budget.used(),
        memory_limit: node.budget.limit(),
        incarnation: node.incarnation,
    }
}
