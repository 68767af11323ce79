//! Replication of a range's log from its primary to its backups and learners.
//!
//! The primary runs one task per follower. A task first asks the follower how far it is
//! (a handshake: an empty `Replicate`), then either streams the missing log entries or,
//! when the follower has no trustworthy copy or the log no longer reaches back far enough,
//! sends a snapshot of the range followed by the log from the snapshot's lsn. Entries are
//! sent in lsn order, many per request, so under load one round trip carries many writes.
//! Followers refuse anything from a lower epoch: a deposed primary learns it is deposed from
//! the refusal, fences its copy, and can never complete a write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shmdb_placement::NodeId;
use shmdb_proto::storage::{self as pb, log_entry::Effect};
use tracing::{debug, info, warn};

use crate::memory::record_cost;
use crate::node::Node;
use crate::range::{Range, RangeState, Record, Role, Status};
use crate::replica_stream::ReplicaStream;

/// Items per snapshot chunk.
const SNAPSHOT_CHUNK: usize = 1000;
const BACKOFF_MIN: Duration = Duration::from_millis(2);
const BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Starts a replication task for every follower of a primary range that has none.
pub(crate) fn ensure_followers(node: &Arc<Node>, range: &Arc<Range>, state: &mut RangeState) {
    if state.role != Role::Primary {
        return;
    }
    let followers: Vec<NodeId> = state
        .replicas
        .iter()
        .skip(1)
        .chain(&state.learners)
        .copied()
        .filter(|f| *f != node.id())
        .collect();
    for follower in followers {
        if state.tasks.insert(follower) {
            let node = node.clone();
            let range = range.clone();
            tokio::spawn(async move { follow(node, range, follower).await });
        }
    }
}

/// Whether the task for `follower` should keep running.
fn wanted(state: &RangeState, follower: NodeId) -> bool {
    state.role == Role::Primary
        && matches!(state.status, Status::Serving | Status::Quiescing)
        && (state.replicas.iter().skip(1).any(|r| *r == follower)
            || state.learners.contains(&follower))
}

/// Marks a range replica as untrustworthy: it serves nothing and fails every waiting write,
/// until a snapshot replaces it (or the map removes it).
pub(crate) fn fence(node: &Node, range: &Range, state: &mut RangeState, reason: String) {
    if state.status == Status::Retired {
        return;
    }
    warn!(range = range.id, %reason, "fencing range");
    state.status = Status::NeedsSnapshot;
    state.fenced_reason = Some(reason);
    state.tasks.clear();
    node.metrics.fenced.inc();
    range.bump_fence(state);
    range.bump_config();
}

/// The primary's loop for one follower of one range.
async fn follow(node: Arc<Node>, range: Arc<Range>, follower: NodeId) {
    let mut log_rx = range.log_tx.subscribe();
    let mut next: Option<u64> = None;
    let mut backoff = BACKOFF_MIN;
    let mut link = ReplicaStream::default();
    let timeout = node.config.replication_timeout;
    debug!(range = range.id, follower, "replication task started");
    loop {
        let (epoch, start, end, applied, committed, config_gen) = {
            let mut state = range.state.lock();
            if !wanted(&state, follower) {
                state.tasks.remove(&follower);
                state.followers.remove(&follower);
                state.pins.remove(&follower);
                debug!(range = range.id, follower, "replication task stopped");
                return;
            }
            (
                state.epoch,
                state.start.clone(),
                state.end.clone().unwrap_or_default(),
                state.applied_lsn,
                state.committed_lsn,
                log_rx.borrow().config_gen,
            )
        };
        let map = node.map();
        let (Some(mut client), Some(address)) =
            (node.peers.client(follower, &map), map.nodes.get(&follower))
        else {
            // The map naming the follower may be about to be published (tasks start while
            // it is installed): retry soon, not after the longest backoff.
            sleep_backoff(&mut backoff).await;
            continue;
        };
        let request = |entries: Vec<pb::LogEntry>| pb::ReplicateRequest {
            range_id: range.id,
            epoch,
            primary: node.id(),
            entries,
            committed_lsn: committed,
            start: start.clone().into(),
            end: end.clone().into(),
            target: follower,
        };
        let Some(from) = next else {
            // Handshake: where is the follower?
            match link
                .replicate(&mut client, address, request(Vec::new()), timeout)
                .await
            {
                Ok(resp) => {
                    if !resp.accepted && resp.epoch > epoch {
                        depose(&node, &range, resp.epoch);
                        continue;
                    }
                    if !resp.accepted && !resp.needs_snapshot {
                        sleep_backoff(&mut backoff).await;
                        continue;
                    }
                    let usable = !resp.needs_snapshot && {
                        let state = range.state.lock();
                        resp.applied_lsn <= state.applied_lsn
                            && resp.applied_lsn >= state.log_base
                            && state.entry_epoch(resp.applied_lsn).is_none_or(|e| {
                                e == resp.last_entry_epoch || resp.applied_lsn == state.log_base
                            })
                    };
                    if usable {
                        acknowledge(&node, &range, follower, resp.applied_lsn);
                        next = Some(resp.applied_lsn + 1);
                    } else {
                        match send_snapshot(&node, &range, follower, &mut client).await {
                            Ok(lsn) => {
                                next = Some(lsn + 1);
                                backoff = BACKOFF_MIN;
                            }
                            Err(e) => {
                                debug!(range = range.id, follower, error = %e, "snapshot failed");
                                sleep_backoff(&mut backoff).await;
                            }
                        }
                    }
                }
                Err(status) => {
                    debug!(range = range.id, follower, %status, "handshake failed");
                    sleep_backoff(&mut backoff).await;
                }
            }
            continue;
        };
        if applied < from {
            // Nothing to send: wait for new entries or a configuration change.
            let _ = log_rx
                .wait_for(|s| s.applied >= from || s.config_gen != config_gen)
                .await;
            continue;
        }
        let entries = range
            .state
            .lock()
            .entries_after(from - 1, node.config.replication_batch);
        let Some(entries) = entries else {
            next = None; // the log no longer reaches back: handshake, then snapshot
            continue;
        };
        if entries.is_empty() {
            continue;
        }
        let started = Instant::now();
        match link
            .replicate(&mut client, address, request(entries), timeout)
            .await
        {
            Ok(resp) => {
                node.metrics
                    .replication_seconds
                    .observe(started.elapsed().as_secs_f64());
                if resp.accepted {
                    acknowledge(&node, &range, follower, resp.applied_lsn);
                    next = Some(resp.applied_lsn + 1);
                    backoff = BACKOFF_MIN;
                } else if resp.epoch > epoch {
                    depose(&node, &range, resp.epoch);
                } else {
                    next = None;
                }
            }
            Err(status) => {
                debug!(range = range.id, follower, %status, "replication failed");
                next = None;
                sleep_backoff(&mut backoff).await;
            }
        }
    }
}

async fn sleep_backoff(backoff: &mut Duration) {
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}

/// A follower refused us with a higher epoch: someone else is primary now.
fn depose(node: &Node, range: &Range, their_epoch: u64) {
    let mut state = range.state.lock();
    if state.role == Role::Primary && their_epoch > state.epoch {
        fence(
            node,
            range,
            &mut state,
            format!("deposed: a follower is at epoch {their_epoch}"),
        );
    }
}

/// Records a follower's progress and moves the commit watermark.
fn acknowledge(node: &Node, range: &Range, follower: NodeId, lsn: u64) {
    let mut state = range.state.lock();
    let acked = state.followers.entry(follower).or_insert(0);
    *acked = (*acked).max(lsn);
    state.recompute_committed();
    range.acked.notify_waiters();
    let lag = state.applied_lsn.saturating_sub(lsn);
    node.metrics
        .replication_lag
        .with_label_values(&[&range.id.to_string(), &follower.to_string()])
        .set(lag as i64);
    range.publish(&state);
}

/// Streams a consistent copy of the range to a follower; returns the lsn it reflects.
async fn send_snapshot(
    node: &Node,
    range: &Range,
    follower: NodeId,
    client: &mut pb::replication_client::ReplicationClient<tonic::transport::Channel>,
) -> Result<u64, tonic::Status> {
    let (items, lsn, epoch, start, end) = {
        let mut state = range.state.lock();
        let applied = state.applied_lsn;
        state.pins.insert(follower, applied);
        let items: Vec<pb::KeyValue> = state
            .data
            .iter()
            .map(|(k, r)| pb::KeyValue {
                key: Bytes::copy_from_slice(k),
                value: r.value.clone(),
                stamp: r.stamp,
            })
            .collect();
        (
            items,
            state.applied_lsn,
            state.epoch,
            Bytes::from(state.start.clone()),
            Bytes::from(state.end.clone().unwrap_or_default()),
        )
    };
    info!(
        range = range.id,
        follower,
        lsn,
        keys = items.len(),
        "sending snapshot"
    );
    let chunk = |items: Vec<pb::KeyValue>, last: bool| pb::SnapshotChunk {
        range_id: range.id,
        epoch,
        primary: node.id(),
        start: start.clone(),
        end: end.clone(),
        lsn,
        items,
        last,
        target: follower,
    };
    let mut chunks = Vec::new();
    let mut iter = items.into_iter().peekable();
    loop {
        let part: Vec<_> = iter.by_ref().take(SNAPSHOT_CHUNK).collect();
        let last = iter.peek().is_none();
        chunks.push(chunk(part, last));
        if last {
            break;
        }
    }
    let result = client.install_snapshot(tokio_stream::iter(chunks)).await;
    let mut state = range.state.lock();
    state.pins.remove(&follower);
    let ack = result?.into_inner();
    node.metrics.snapshots_sent.inc();
    let acked = state.followers.entry(follower).or_insert(0);
    *acked = (*acked).max(ack.applied_lsn);
    state.recompute_committed();
    range.publish(&state);
    Ok(ack.applied_lsn)
}

/// A follower's side of `Replicate`.
pub(crate) fn on_replicate(node: &Arc<Node>, req: pb::ReplicateRequest) -> pb::ReplicateResponse {
    let refuse = |reason: &str, state: Option<&RangeState>| pb::ReplicateResponse {
        accepted: false,
        applied_lsn: state.map_or(0, |s| s.applied_lsn),
        epoch: state.map_or(0, |s| s.epoch),
        needs_snapshot: false,
        reason: reason.to_string(),
        last_entry_epoch: state.map_or(0, |s| s.last_entry_epoch),
    };
    if req.target != node.id() {
        return refuse("addressed to another node id", None);
    }
    let range = node.ranges.read().by_id.get(&req.range_id).cloned();
    let Some(range) = range else {
        return match create_for_primary(node, &req) {
            Ok(()) => pb::ReplicateResponse {
                accepted: false,
                needs_snapshot: true,
                epoch: req.epoch,
                reason: "no copy of this range".into(),
                ..Default::default()
            },
            Err(NotCreated::Deposed(epoch)) => pb::ReplicateResponse {
                epoch,
                ..refuse("the range has moved on without the sender", None)
            },
            Err(NotCreated::Refused(reason)) => refuse(&reason, None),
        };
    };
    let mut split = None;
    let response = {
        let mut state = range.state.lock();
        if state.status == Status::Retired {
            return refuse("range retired here", Some(&state));
        }
        if req.epoch < state.epoch {
            if state.primary == req.primary && state.role != Role::Primary {
                // Our map names the sender as primary at a higher epoch (a replica was
                // added or removed): it is not deposed, only behind on the map, which
                // reaches the nodes in no particular order. Refuse without our epoch, so it
                // retries once it has the map instead of fencing the range for good.
                return pb::ReplicateResponse {
                    epoch: req.epoch,
                    ..refuse("sender is behind on the partition map", Some(&state))
                };
            }
            return refuse("stale epoch", Some(&state));
        }
        if state.role == Role::Primary && req.primary != node.id() {
            if req.epoch == state.epoch {
                return refuse("two primaries claim the same epoch", Some(&state));
            }
            // We were deposed without noticing. Entries nobody acknowledged may exist only
            // here, so the copy can only be kept if everything applied here is committed.
            state.role = Role::Backup;
            state.tasks.clear();
            state.followers.clear();
            if state.applied_lsn > state.committed_lsn || state.status != Status::Serving {
                fence(
                    node,
                    &range,
                    &mut state,
                    "deposed with unacknowledged entries".into(),
                );
            } else {
                state.status = Status::Serving;
            }
            range.bump_fence(&state);
            range.bump_config();
        }
        state.epoch = state.epoch.max(req.epoch);
        state.primary = req.primary;
        if state.status == Status::NeedsSnapshot {
            return pb::ReplicateResponse {
                accepted: false,
                needs_snapshot: true,
                applied_lsn: state.applied_lsn,
                epoch: state.epoch,
                reason: "copy not trustworthy".into(),
                last_entry_epoch: state.last_entry_epoch,
            };
        }
        for entry in req.entries {
            if entry.lsn <= state.applied_lsn {
                continue;
            }
            if entry.lsn != state.applied_lsn + 1 {
                return refuse("gap in log", Some(&state));
            }
            if let Some(Effect::Split(s)) = &entry.effect {
                split = Some(s.clone());
                state.apply_entry(entry, &node.budget);
                break;
            }
            state.apply_entry(entry, &node.budget);
        }
        state.advance_committed(req.committed_lsn);
        let committed = state.committed_lsn;
        state.truncate_log(committed);
        range.publish(&state);
        pb::ReplicateResponse {
            accepted: true,
            applied_lsn: state.applied_lsn,
            epoch: state.epoch,
            needs_snapshot: false,
            reason: String::new(),
            last_entry_epoch: state.last_entry_epoch,
        }
    };
    if let Some(split) = split {
        crate::admin::split_local(node, &range, &split);
    }
    response
}

/// Why no replica was created for a range a primary replicates to us.
enum NotCreated {
    /// Our map has the range (or its children) at a newer epoch led by another node: the
    /// sender was deposed without noticing, and must learn it from this epoch.
    Deposed(u64),
    /// Not now (the sender is behind on the map, or the range overlaps one held here).
    Refused(String),
}

/// Creates an empty replica awaiting a snapshot for a range a primary replicates to us
/// before our map says so (maps reach nodes in no particular order).
///
/// Unless our map already shows the range at a newer epoch: then we were removed from it
/// (or it moved away entirely) and the sender runs an older map. If the newer range has the
/// same primary, the sender merely has not installed that map yet; otherwise it was
/// deposed, and a copy created here would let it complete writes that no current replica
/// of the range ever sees. The map is read under the range-table lock, and `install_map`
/// publishes a map before releasing that lock, so a range missing here is never judged by
/// a map older than the one that removed it.
fn create_for_primary(node: &Arc<Node>, req: &pb::ReplicateRequest) -> Result<(), NotCreated> {
    let start = req.start.to_vec();
    let end = (!req.end.is_empty()).then(|| req.end.to_vec());
    let mut table = node.ranges.write();
    if table.by_id.contains_key(&req.range_id) {
        return Ok(());
    }
    let map = node.map();
    let mut newer_same_primary = false;
    for desc in &map.ranges {
        let overlaps = end.as_ref().is_none_or(|e| desc.start < *e)
            && desc.end.as_ref().is_none_or(|e| start < *e);
        if !overlaps || desc.epoch <= req.epoch {
            continue;
        }
        if desc.primary() != Some(req.primary) {
            return Err(NotCreated::Deposed(desc.epoch));
        }
        newer_same_primary = true;
    }
    if newer_same_primary {
        return Err(NotCreated::Refused(
            "sender is behind on the partition map".into(),
        ));
    }
    let overlaps = table.by_start.values().any(|r| {
        let s = r.state.lock();
        s.status != Status::Retired
            && end.as_ref().is_none_or(|e| s.start < *e)
            && s.end.as_ref().is_none_or(|e| start < *e)
    });
    if overlaps {
        return Err(NotCreated::Refused("overlaps a range held here".into()));
    }
    let mut state = RangeState::empty(
        req.range_id,
        start.clone(),
        end,
        req.epoch,
        Role::Backup,
        Status::NeedsSnapshot,
    );
    state.primary = req.primary;
    table.insert(Arc::new(Range::new(state)), start);
    Ok(())
}

/// A follower's side of `InstallSnapshot`: replaces its copy once the last chunk arrives.
pub(crate) async fn on_snapshot(
    node: &Arc<Node>,
    mut chunks: tonic::Streaming<pb::SnapshotChunk>,
) -> Result<pb::SnapshotAck, tonic::Status> {
    let mut data = BTreeMap::new();
    let mut bytes = 0u64;
    let mut header: Option<pb::SnapshotChunk> = None;
    while let Some(chunk) = chunks.message().await? {
        for item in &chunk.items {
            bytes += record_cost(item.key.len(), item.value.len());
            data.insert(
                item.key.to_vec(),
                Record {
                    value: item.value.clone(),
                    stamp: item.stamp,
                },
            );
        }
        let last = chunk.last;
        header = Some(pb::SnapshotChunk {
            items: Vec::new(),
            ..chunk
        });
        if last {
            break;
        }
    }
    let header = header
        .filter(|h| h.last)
        .ok_or_else(|| tonic::Status::invalid_argument("snapshot stream ended early"))?;
    if header.target != node.id() {
        return Err(tonic::Status::failed_precondition(
            "snapshot addressed to another node id",
        ));
    }
    let range = node.ranges.read().by_id.get(&header.range_id).cloned();
    let range = match range {
        Some(range) => range,
        None => {
            let req = pb::ReplicateRequest {
                range_id: header.range_id,
                epoch: header.epoch,
                primary: header.primary,
                start: header.start.clone(),
                end: header.end.clone(),
                target: header.target,
                ..Default::default()
            };
            create_for_primary(node, &req).map_err(|e| match e {
                NotCreated::Deposed(epoch) => tonic::Status::failed_precondition(format!(
                    "the range has moved on without the sender (epoch {epoch})"
                )),
                NotCreated::Refused(reason) => tonic::Status::failed_precondition(reason),
            })?;
            node.ranges
                .read()
                .by_id
                .get(&header.range_id)
                .cloned()
                .ok_or_else(|| tonic::Status::internal("range vanished"))?
        }
    };
    let mut state = range.state.lock();
    if state.status == Status::Retired {
        return Err(tonic::Status::failed_precondition("range retired here"));
    }
    if header.epoch < state.epoch {
        return Err(tonic::Status::failed_precondition(format!(
            "snapshot from epoch {} but replica is at {}",
            header.epoch, state.epoch
        )));
    }
    if state.role == Role::Primary && header.primary != node.id() {
        state.role = Role::Backup;
        range.bump_fence(&state);
    }
    state.install_snapshot(data, bytes, header.lsn, header.epoch, &node.budget);
    state.primary = header.primary;
    range.publish(&state);
    range.bump_config();
    info!(range = range.id, lsn = header.lsn, "installed snapshot");
    Ok(pb::SnapshotAck {
        applied_lsn: state.applied_lsn,
    })
}
