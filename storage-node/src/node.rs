//! The storage node: its ranges, its view of the partition map, and the data path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use shmdb_placement::{NodeId, PartitionMap, RangeId, decode_range_key, range_key, table_end};
use shmdb_proto::storage::{self as pb, op::Op as OpKind, op_result::Result as OpRes};

use crate::config::{
    MAX_FILTER_CONDITIONS, MAX_FILTER_VALUE_BYTES, MAX_KEY_BYTES, MAX_SCAN_EXAMINED,
    MAX_SCAN_LIMIT, NodeConfig,
};
use crate::error::OpFailure;
use crate::memory::MemoryBudget;
use crate::metrics::NodeMetrics;
use crate::peers::Peers;
use crate::range::{Expectation, Outcome, Range, RangeState, Record};
use shmdb_row_format::filter::{ColumnEquals, may_hold_garbage, may_match};

/// This node's ranges, indexed by start key (routing) and by id (replication, admin).
#[derive(Debug, Default)]
pub(crate) struct RangeTable {
    pub by_start: BTreeMap<Vec<u8>, Arc<Range>>,
    pub by_id: HashMap<RangeId, Arc<Range>>,
}

impl RangeTable {
    /// The local range whose interval holds `range_key`.
    pub fn find(&self, range_key: &[u8]) -> Option<&Arc<Range>> {
        let (_, range) = self
            .by_start
            .range::<[u8], _>((
                std::ops::Bound::Unbounded,
                std::ops::Bound::Included(range_key),
            ))
            .next_back()?;
        range.contains(range_key).then_some(range)
    }

    pub fn insert(&mut self, range: Arc<Range>, start: Vec<u8>) {
        self.by_id.insert(range.id, range.clone());
        self.by_start.insert(start, range);
    }

    pub fn remove(&mut self, id: RangeId) -> Option<Arc<Range>> {
        let range = self.by_id.remove(&id)?;
        if self
            .by_start
            .get(&range.start)
            .is_some_and(|r| Arc::ptr_eq(r, &range))
        {
            self.by_start.remove(&range.start);
        }
        Some(range)
    }
}

/// A storage node: shared by every request handler and background task of the process.
#[derive(Debug)]
pub struct Node {
    pub(crate) config: NodeConfig,
    pub(crate) ranges: RwLock<RangeTable>,
    pub(crate) map: RwLock<Arc<PartitionMap>>,
    pub(crate) budget: MemoryBudget,
    pub(crate) peers: Peers,
    pub(crate) metrics: NodeMetrics,
    /// Serializes map installs and splits, which restructure the range table.
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
    /// Op counters at the last report, for op rates.
    pub(crate) rates: crate::admin::RateTracker,
    /// Random per process start (see `RangeReport.incarnation`).
    pub(crate) incarnation: u64,
}

/// What executing one operation produced.
struct Executed {
    /// The result to report (once `wait` is satisfied).
    outcome: Outcome,
    /// The commit watermark to wait for, if the result depends on unreplicated entries.
    wait: Option<CommitWait>,
    /// The range written to, whose watermarks must be published after the batch.
    wrote: Option<Arc<Range>>,
}

/// A range whose commit watermark an operation must wait for before answering.
struct CommitWait {
    range: Arc<Range>,
    lsn: u64,
    fence_gen: u64,
}

impl Node {
    /// The node's metrics, for in-process inspection (tests, the embedded cluster).
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// A node with no ranges and no map; it serves nothing until a map is installed.
    pub fn new(config: NodeConfig, metrics: NodeMetrics) -> Arc<Self> {
        let budget = MemoryBudget::new(config.memory_limit);
        metrics.memory_limit.set(config.memory_limit as i64);
        Arc::new(Node {
            config,
            ranges: RwLock::new(RangeTable::default()),
            map: RwLock::new(Arc::new(PartitionMap::default())),
            budget,
            peers: Peers::default(),
            metrics,
            admin_lock: tokio::sync::Mutex::new(()),
            rates: Default::default(),
            incarnation: rand::random::<u64>() | 1,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.node_id
    }

    /// The installed partition map.
    pub fn map(&self) -> Arc<PartitionMap> {
        self.map.read().clone()
    }

    /// The installed map's version (0 before the first install).
    pub fn map_version(&self) -> u64 {
        self.map.read().version
    }

    /// Bytes of record data held.
    pub fn memory_used(&self) -> u64 {
        self.budget.used()
    }

    fn check_table(&self, table: u64, client_map_version: u64) -> Result<(), OpFailure> {
        let map = self.map.read();
        if map.tables.contains_key(&table) {
            Ok(())
        } else if client_map_version > map.version {
            Err(OpFailure::Unavailable {
                reason: format!(
                    "table {table} unknown at map version {}, client has {client_map_version}",
                    map.version
                ),
                map_version: map.version,
            })
        } else {
            Err(OpFailure::UnknownTable(table))
        }
    }

    fn wrong_owner(&self) -> OpFailure {
        OpFailure::WrongOwner {
            map_version: self.map_version(),
        }
    }

    /// Runs a batch of independent operations; each succeeds or fails on its own. Every
    /// result is returned only once the state it reports is replicated to all replicas.
    pub async fn batch(&self, req: pb::BatchRequest) -> pb::BatchResponse {
        let mut results: Vec<Result<Outcome, OpFailure>> = Vec::with_capacity(req.ops.len());
        let mut op_ranges: Vec<Option<RangeId>> = Vec::with_capacity(req.ops.len());
        let mut waits: HashMap<RangeId, CommitWait> = HashMap::new();
        let mut kinds = Vec::with_capacity(req.ops.len());
        let mut written: Vec<Arc<Range>> = Vec::new();
        for op in req.ops {
            let kind = op_kind_name(op.op.as_ref());
            kinds.push(kind);
            match self.execute(op.op, req.map_version) {
                Ok(Executed {
                    outcome,
                    wait,
                    wrote,
                }) => {
                    if let Some(range) = wrote
                        && !written.iter().any(|r| Arc::ptr_eq(r, &range))
                    {
                        written.push(range);
                    }
                    op_ranges.push(wait.as_ref().map(|w| w.range.id));
                    if let Some(wait) = wait {
                        match waits.get_mut(&wait.range.id) {
                            Some(existing) => existing.lsn = existing.lsn.max(wait.lsn),
                            None => {
                                waits.insert(wait.range.id, wait);
                            }
                        }
                    }
                    results.push(Ok(outcome));
                }
                Err(failure) => {
                    op_ranges.push(None);
                    results.push(Err(failure));
                }
            }
        }
        for range in &written {
            range.publish(&range.state.lock());
        }
        let mut failed_ranges: HashMap<RangeId, OpFailure> = HashMap::new();
        for (id, wait) in waits {
            if let Err(failure) = self.wait_committed(&wait).await {
                failed_ranges.insert(id, failure);
            }
        }
        let results = results
            .into_iter()
            .zip(op_ranges)
            .zip(kinds)
            .map(|((result, range), kind)| {
                let result = match (result, range.and_then(|r| failed_ranges.get(&r))) {
                    (Ok(_), Some(failure)) => Err(failure.clone()),
                    (result, _) => result,
                };
                self.metrics.record_op(kind, &result);
                pb::OpResult {
                    result: Some(match result {
                        Ok(outcome) => outcome_to_proto(outcome),
                        Err(failure) => OpRes::Error(failure.to_proto()),
                    }),
                }
            })
            .collect();
        pb::BatchResponse {
            results,
            map_version: self.map_version(),
        }
    }

    /// Waits until a range's commit watermark reaches `lsn`; fails if the entries are given
    /// up (fencing) or the replicas do not answer in time.
    async fn wait_committed(&self, wait: &CommitWait) -> Result<(), OpFailure> {
        let mut rx = wait.range.commit_tx.subscribe();
        let fence_gen = wait.fence_gen;
        let lsn = wait.lsn;
        let waited = tokio::time::timeout(
            self.config.replication_timeout,
            rx.wait_for(|s| s.fence_gen != fence_gen || s.committed >= lsn),
        )
        .await;
        match waited {
            Ok(Ok(signal)) if signal.commits(lsn, fence_gen) => Ok(()),
            Ok(_) => Err(OpFailure::Unavailable {
                reason: "the range was fenced before the write was replicated".into(),
                map_version: self.map_version(),
            }),
            Err(_) => {
                let signal = *wait.range.commit_tx.borrow();
                let state = wait.range.state.lock();
                tracing::warn!(
                    range = wait.range.id,
                    lsn,
                    committed = signal.committed,
                    fence_gen,
                    now_fence_gen = signal.fence_gen,
                    status = ?state.status,
                    role = ?state.role,
                    applied = state.applied_lsn,
                    followers = ?state.followers,
                    "replicas did not acknowledge a write in time"
                );
                Err(OpFailure::Unavailable {
                    reason: "replicas did not acknowledge in time".into(),
                    map_version: self.map_version(),
                })
            }
        }
    }

    /// Applies one operation under its range's lock; returns the outcome and what to wait
    /// for before the outcome may be reported.
    fn execute(&self, op: Option<OpKind>, client_map_version: u64) -> Result<Executed, OpFailure> {
        let op = op.ok_or_else(|| OpFailure::InvalidArgument("empty operation".into()))?;
        let (table, key, value) = match &op {
            OpKind::Get(o) => (o.table, &o.key, None),
            OpKind::PutIf(o) => (o.table, &o.key, Some(&o.value)),
            OpKind::DeleteIf(o) => (o.table, &o.key, None),
            OpKind::Put(o) => (o.table, &o.key, Some(&o.value)),
            OpKind::Delete(o) => (o.table, &o.key, None),
            OpKind::Increment(o) => (o.table, &o.key, None),
            OpKind::Check(o) => (o.table, &o.key, None),
        };
        if key.len() > MAX_KEY_BYTES {
            return Err(OpFailure::InvalidArgument(format!(
                "key of {} bytes exceeds the maximum of {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        if let Some(value) = value
            && value.len() > self.config.max_value_bytes
        {
            return Err(OpFailure::InvalidArgument(format!(
                "value of {} bytes exceeds the maximum of {}",
                value.len(),
                self.config.max_value_bytes
            )));
        }
        self.check_table(table, client_map_version)?;
        let rk = range_key(table, key);
        let range = self
            .ranges
            .read()
            .find(&rk)
            .cloned()
            .ok_or_else(|| self.wrong_owner())?;
        let mut state = range.state.lock();
        if !state.serves() {
            return Err(self.wrong_owner());
        }
        state.ops += 1;
        let fence_gen = range.commit_tx.borrow().fence_gen;
        let over = |needed: u64| {
            OpFailure::ResourceExhausted(format!(
                "writing {needed} more bytes would pass the node's limit of {} bytes ({} used)",
                self.budget.limit(),
                self.budget.used()
            ))
        };
        let mut written_lsn = None;
        let outcome = match op {
            OpKind::Get(_) => match state.get(&rk) {
                Some(record) => Outcome::Found(record.clone()),
                None => Outcome::Absent,
            },
            OpKind::Check(o) => {
                let expect = expectation(o.expect.as_ref())?;
                if state.matches(&rk, expect) {
                    Outcome::Checked
                } else {
                    Outcome::Conflict(state.stamp_of(&rk))
                }
            }
            OpKind::PutIf(o) => {
                let expect = expectation(o.expect.as_ref())?;
                if state.matches(&rk, expect) {
                    let stamp = state
                        .write(&rk, Some(o.value), &self.budget)
                        .map_err(|e| over(e.needed))?;
                    written_lsn = Some(state.applied_lsn);
                    Outcome::Written(stamp)
                } else {
                    self.metrics.conflicts.inc();
                    Outcome::Conflict(state.stamp_of(&rk))
                }
            }
            OpKind::DeleteIf(o) => {
                let expect = expectation(o.expect.as_ref())?;
                if !state.matches(&rk, expect) {
                    self.metrics.conflicts.inc();
                    Outcome::Conflict(state.stamp_of(&rk))
                } else if state.get(&rk).is_some() {
                    let stamp = state
                        .write(&rk, None, &self.budget)
                        .map_err(|e| over(e.needed))?;
                    written_lsn = Some(state.applied_lsn);
                    Outcome::Written(stamp)
                } else {
                    Outcome::Written(0)
                }
            }
            OpKind::Put(o) => {
                let stamp = state
                    .write(&rk, Some(o.value), &self.budget)
                    .map_err(|e| over(e.needed))?;
                written_lsn = Some(state.applied_lsn);
                Outcome::Written(stamp)
            }
            OpKind::Delete(_) => {
                if state.get(&rk).is_some() {
                    let stamp = state
                        .write(&rk, None, &self.budget)
                        .map_err(|e| over(e.needed))?;
                    written_lsn = Some(state.applied_lsn);
                    Outcome::Written(stamp)
                } else {
                    Outcome::Written(0)
                }
            }
            OpKind::Increment(o) => {
                let current = match state.get(&rk) {
                    None => 0,
                    Some(Record { value, .. }) => {
                        let bytes: [u8; 8] = value
                            .as_ref()
                            .try_into()
                            .map_err(|_| OpFailure::NotACounter)?;
                        i64::from_le_bytes(bytes)
                    }
                };
                let next = current.checked_add(o.delta).ok_or_else(|| {
                    OpFailure::InvalidArgument(format!("counter overflow: {current} + {}", o.delta))
                })?;
                let stamp = state
                    .write(
                        &rk,
                        Some(Bytes::copy_from_slice(&next.to_le_bytes())),
                        &self.budget,
                    )
                    .map_err(|e| over(e.needed))?;
                written_lsn = Some(state.applied_lsn);
                Outcome::Counter(next, stamp)
            }
        };
        // A write waits for its own entry; anything else waits for pending writes it saw.
        let lsn = written_lsn.unwrap_or_else(|| pending_lsn(&state, &rk, Some(&rk)));
        let needs_wait = lsn > state.committed_lsn;
        drop(state);
        let wait = needs_wait.then(|| CommitWait {
            range: range.clone(),
            lsn,
            fence_gen,
        });
        // The watermarks are published once per batch and range, not per write.
        let wrote = written_lsn.is_some().then_some(range);
        Ok(Executed {
            outcome,
            wait,
            wrote,
        })
    }

    /// An ordered scan within the one local range that holds the start key.
    pub async fn scan(&self, req: pb::ScanRequest) -> pb::ScanResponse {
        let map_version = self.map_version();
        let result = self.scan_inner(&req).await;
        self.metrics.record_op(
            "scan",
            &result
                .as_ref()
                .map(|_| Outcome::Checked)
                .map_err(Clone::clone),
        );
        match result {
            Ok((items, resume_key)) => pb::ScanResponse {
                items,
                resume_key,
                error: None,
                map_version,
            },
            Err(failure) => pb::ScanResponse {
                items: Vec::new(),
                resume_key: None,
                error: Some(failure.to_proto()),
                map_version,
            },
        }
    }

    async fn scan_inner(
        &self,
        req: &pb::ScanRequest,
    ) -> Result<(Vec<pb::KeyValue>, Option<Bytes>), OpFailure> {
        if !req.to_table_end && req.end < req.start {
            return Err(OpFailure::InvalidArgument(
                "inverted scan range: end is before start".into(),
            ));
        }
        if req.start.len() > MAX_KEY_BYTES || req.end.len() > MAX_KEY_BYTES {
            return Err(OpFailure::InvalidArgument(format!(
                "scan bound exceeds the maximum key size of {MAX_KEY_BYTES} bytes"
            )));
        }
        self.check_table(req.table, req.map_version)?;
        let conditions = filter_conditions(req.filter.as_ref())?;
        let limit = match req.limit as usize {
            0 => MAX_SCAN_LIMIT,
            n => n.min(MAX_SCAN_LIMIT),
        };
        let from = range_key(req.table, &req.start);
        let to = if req.to_table_end {
            table_end(req.table)
        } else {
            Some(range_key(req.table, &req.end))
        };
        let range = self
            .ranges
            .read()
            .find(&from)
            .cloned()
            .ok_or_else(|| self.wrong_owner())?;
        let (items, resume, wait) = {
            let mut state = range.state.lock();
            if !state.serves() {
                return Err(self.wrong_owner());
            }
            state.ops += 1;
            let upper = match (&to, &state.end) {
                (Some(to), Some(end)) => Some(to.min(end).clone()),
                (Some(to), None) => Some(to.clone()),
                (None, end) => end.clone(),
            };
            let garbage_only = req.filter.as_ref().is_some_and(|f| f.garbage_only);
            let (found, mut resume) = if conditions.is_empty() && !garbage_only {
                let mut found = state.scan(&from, upper.as_deref(), limit + 1);
                let next = (found.len() > limit).then(|| found.remove(limit).0);
                (found, next)
            } else {
                let matches = state.scan_matching(
                    &from,
                    upper.as_deref(),
                    limit,
                    MAX_SCAN_EXAMINED,
                    |value| {
                        (!garbage_only || may_hold_garbage(value)) && may_match(value, &conditions)
                    },
                );
                self.metrics
                    .scan_filtered_out
                    .inc_by((matches.examined - matches.items.len()) as u64);
                (matches.items, matches.next)
            };
            if resume.is_none()
                && let Some(end) = &state.end
                && to.as_ref().is_none_or(|to| end < to)
            {
                resume = Some(end.clone());
            }
            let wait_to = resume.as_deref().or(upper.as_deref());
            let lsn = pending_lsn(&state, &from, wait_to);
            let wait = (lsn > state.committed_lsn).then(|| CommitWait {
                range: range.clone(),
                lsn,
                fence_gen: range.commit_tx.borrow().fence_gen,
            });
            (found, resume, wait)
        };
        if let Some(wait) = wait {
            self.wait_committed(&wait).await?;
        }
        let items = items
            .into_iter()
            .filter_map(|(k, record)| {
                let (_, key) = decode_range_key(&k)?;
                Some(pb::KeyValue {
                    key: Bytes::copy_from_slice(key),
                    value: record.value,
                    stamp: record.stamp,
                })
            })
            .collect();
        // Continue only within the requested table.
        let resume_key = resume.and_then(|k| match decode_range_key(&k) {
            Some((table, key)) if table == req.table => Some(Bytes::copy_from_slice(key)),
            _ => None,
        });
        Ok((items, resume_key))
    }
}

/// A scan filter's conditions, checked against the node's limits; none for no filter.
fn filter_conditions(filter: Option<&pb::RowFilter>) -> Result<Vec<ColumnEquals<'_>>, OpFailure> {
    let Some(filter) = filter else {
        return Ok(Vec::new());
    };
    if filter.equals.len() > MAX_FILTER_CONDITIONS {
        return Err(OpFailure::InvalidArgument(format!(
            "scan filter has {} conditions; at most {MAX_FILTER_CONDITIONS} are accepted",
            filter.equals.len()
        )));
    }
    filter
        .equals
        .iter()
        .map(|c| {
            if c.value.is_empty() || c.value.len() > MAX_FILTER_VALUE_BYTES {
                return Err(OpFailure::InvalidArgument(format!(
                    "scan filter value for column {} has {} bytes; 1 to {MAX_FILTER_VALUE_BYTES} are accepted",
                    c.column,
                    c.value.len()
                )));
            }
            Ok(ColumnEquals {
                column: c.column as usize,
                value: &c.value,
            })
        })
        .collect()
}

/// The newest uncommitted log entry that touches range keys in `[from, to]` (a point when
/// `from == to`, open-ended when `to` is `None`); 0 when there is none.
fn pending_lsn(state: &RangeState, from: &[u8], to: Option<&[u8]>) -> u64 {
    use shmdb_proto::storage::log_entry::Effect;
    let point = to == Some(from);
    for entry in state.log.iter().rev() {
        if entry.lsn <= state.committed_lsn {
            break;
        }
        let key: &[u8] = match &entry.effect {
            Some(Effect::Put(put)) => &put.key,
            Some(Effect::Delete(key)) => key,
            _ => return entry.lsn,
        };
        let inside = if point {
            key == from
        } else {
            key >= from && to.is_none_or(|to| key < to)
        };
        if inside {
            return entry.lsn;
        }
    }
    0
}

fn expectation(expect: Option<&pb::Expect>) -> Result<Expectation, OpFailure> {
    Expectation::from_proto(expect).ok_or_else(|| {
        OpFailure::InvalidArgument("conditional operation without expectation".into())
    })
}

fn op_kind_name(op: Option<&OpKind>) -> &'static str {
    match op {
        Some(OpKind::Get(_)) => "get",
        Some(OpKind::PutIf(_)) => "put_if",
        Some(OpKind::DeleteIf(_)) => "delete_if",
        Some(OpKind::Put(_)) => "put",
        Some(OpKind::Delete(_)) => "delete",
        Some(OpKind::Increment(_)) => "increment",
        Some(OpKind::Check(_)) => "check",
        None => "empty",
    }
}

fn outcome_to_proto(outcome: Outcome) -> OpRes {
    match outcome {
        Outcome::Found(record) => OpRes::Found(pb::Found {
            value: record.value,
            stamp: record.stamp,
        }),
        Outcome::Absent => OpRes::Absent(pb::Absent {}),
        Outcome::Written(stamp) => OpRes::Written(pb::Written { stamp }),
        Outcome::Conflict(stamp) => OpRes::Conflict(pb::Conflict { stamp }),
        Outcome::Counter(value, stamp) => OpRes::Counter(pb::Counter { value, stamp }),
        Outcome::Checked => OpRes::Checked(pb::Checked {}),
    }
}

impl Node {
    /// Updates the gauges that describe what the node holds.
    pub(crate) fn refresh_gauges(&self) {
        use crate::range::{Role, Status};
        self.metrics.memory_used.set(self.budget.used() as i64);
        self.metrics.range_keys.reset();
        self.metrics.range_bytes.reset();
        let mut roles = [0i64; 3];
        for range in self.ranges.read().by_id.values() {
            let state = range.state.lock();
            if state.status == Status::Retired {
                continue;
            }
            let id = range.id.to_string();
            self.metrics
                .range_keys
                .with_label_values(&[&id])
                .set(state.data.len() as i64);
            self.metrics
                .range_bytes
                .with_label_values(&[&id])
                .set(state.bytes as i64);
            roles[match state.role {
                Role::Primary => 0,
                Role::Backup => 1,
                Role::Learner => 2,
            }] += 1;
        }
        for (role, count) in ["primary", "backup", "learner"].iter().zip(roles) {
            self.metrics.ranges.with_label_values(&[role]).set(count);
        }
    }
}

impl Node {
    /// Every record this node holds in `table`, whatever its role for the range, in key
    /// order. For comparing replicas (tests, `shmdb status --verify`), not for serving.
    pub fn local_items(&self, table: u64) -> Vec<(Vec<u8>, Bytes, u64)> {
        use crate::range::Status;
        let from = shmdb_placement::table_start(table);
        let to = table_end(table);
        let mut out = Vec::new();
        for range in self.ranges.read().by_start.values() {
            let state = range.state.lock();
            if state.status == Status::Retired {
                continue;
            }
            for (k, record) in state.scan(&from, to.as_deref(), usize::MAX) {
                if let Some((_, key)) = decode_range_key(&k) {
                    out.push((key.to_vec(), record.value, record.stamp));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
