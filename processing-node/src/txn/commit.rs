//! Try-commit and commit: log the write set, write every record with `put_if`, then index
//! entries and the commit flag, then tell the commit manager (DESIGN.md, life-cycle 3–4).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use shmdb_placement::tables;
use shmdb_store_client::{CondOutcome, Expect, Op, OpOutcome, StoreError};

use crate::keys;
use crate::record::{Record, Version};
use crate::txn::buffer::{BufferEntry, unit_counter_key, with_tid};
use crate::txn::error::TxnError;
use crate::txn::log::{LogEntry, LogStatus, write_spill};
use crate::txn::rebase::{REBASE_RESTARTS, Rebased};
use crate::txn::transaction::{Pending, State, StoreKey, Transaction};

impl Transaction {
    /// Commits: applies every write or none. A write-write conflict rolls the transaction
    /// back and fails with [`TxnError::SerializationFailure`].
    pub async fn commit(mut self) -> Result<(), TxnError> {
        self.ensure_active()?;
        if self.writes.is_empty() {
            self.state = State::Committed;
            return self.engine.manager.commit(self.tid).await;
        }
        let mut restarts = 0;
        loop {
            let attempt = self.try_commit(restarts < REBASE_RESTARTS).await?;
            match attempt {
                Attempt::Committed => return Ok(()),
                Attempt::Restart(applied) => {
                    restarts += 1;
                    if let Err(e) = self.restart_under_fresh_tid(applied).await {
                        self.state = State::Aborted;
                        return Err(e);
                    }
                }
            }
        }
    }

    /// One attempt at the commit under the current tid. `may_restart`: a re-applied update
    /// that needs a larger tid ends the attempt with [`Attempt::Restart`] (undone by the
    /// caller) instead of a serialization failure.
    async fn try_commit(&mut self, may_restart: bool) -> Result<Attempt, TxnError> {
        // Versions are ordered by tid, and READ COMMITTED statements may have based writes on
        // versions newer than this transaction's tid: it then commits under a tid taken now,
        // above every version it read. (Nothing was written under the first one yet.)
        let newest_base = self
            .writes
            .keys()
            .filter_map(|key| self.reads.get(key)?.record.newest_tid())
            .max();
        if newest_base.is_some_and(|tid| tid >= self.tid) {
            self.take_fresh_tid().await?;
        }
        let log_key = Bytes::from(keys::txlog_key(self.engine.config.node_id, self.tid));
        let write_set: Vec<StoreKey> = self.writes.keys().cloned().collect();
        // 1. The write set goes to the log before any record is touched.
        let node = self.engine.config.node_id;
        let (entry, spill) = LogEntry::split(LogStatus::Running, &write_set);
        write_spill(&self.engine.store, node, self.tid, &spill).await?;
        // Conditional: an entry already there is recovery's abort flag (the manager took
        // this node for dead before it logged anything).
        //
        // From here on every failure goes through `abort_after`, which settles the entry as
        // aborted: an entry left running would never be settled while this node lives (only
        // a dead node's entries are recovered), so a caller that could not learn the outcome
        // could never find it out, and an ambiguous write may have put the entry there.
        let log_stamp = match self
            .engine
            .store
            .put_if(
                tables::TXLOG,
                log_key.clone(),
                Bytes::from(entry.encode()),
                Expect::Absent,
            )
            .await
        {
            Ok(CondOutcome::Written { stamp }) => stamp,
            Ok(_) => {
                return self
                    .abort_with(Vec::new(), false, TxnError::Recovered)
                    .await;
            }
            Err(e) => return self.abort_with(Vec::new(), false, e.into()).await,
        };
        // 2. Every changed record, conditionally on the stamp read, in one batch.
        if let Err(e) = self.fetch_all(&write_set).await {
            return self.abort_with(Vec::new(), false, e).await;
        }
        let lav = self.engine.lav.load(Ordering::Relaxed).max(self.lav);
        let mut ops = Vec::with_capacity(write_set.len());
        let mut new_records = Vec::with_capacity(write_set.len());
        for key in &write_set {
            let (Some(pending), Some(read)) = (self.writes.get(key), self.reads.get(key)) else {
                return Err(TxnError::Corrupt("write set and buffer disagree".into()));
            };
            if read
                .record
                .write_conflict(self.tid, |t| read.snapshot.is_visible(t))
            {
                return self
                    .abort_with(Vec::new(), false, TxnError::SerializationFailure)
                    .await;
            }
            let record = match self.with_own_version(read.record.clone(), pending, lav) {
                Ok(record) => record,
                Err(e) => return self.abort_with(Vec::new(), false, e).await,
            };
            let expect = read.stamp.map_or(Expect::Absent, Expect::Stamp);
            ops.push(Op::put_if(
                key.0,
                key.1.clone(),
                Bytes::from(record.encode()),
                expect,
            ));
            new_records.push(record);
        }
        let results = match self.engine.store.batch(ops).await {
            Ok(results) => results,
            // Only a missing map fails a whole batch, before anything is sent; undo looks
            // anyway, as for an ambiguous write.
            Err(e) => return self.abort_with(write_set, false, e.into()).await,
        };
        let mut applied: Vec<StoreKey> = Vec::new();
        let mut failure: Option<TxnError> = None;
        let mut stamps = Vec::with_capacity(results.len());
        let mut changed_since_read = Vec::new();
        for (i, (key, outcome)) in write_set.iter().zip(results).enumerate() {
            match outcome {
                OpOutcome::Cond(CondOutcome::Written { stamp }) => {
                    applied.push(key.clone());
                    stamps.push(stamp);
                }
                OpOutcome::Cond(CondOutcome::Conflict { .. }) => {
                    changed_since_read.push(i);
                    stamps.push(0);
                }
                OpOutcome::Cond(_) => {
                    failure.get_or_insert(TxnError::SerializationFailure);
                    stamps.push(0);
                }
                OpOutcome::Failed(e) => {
                    if e.is_ambiguous() {
                        // May have been applied: undo must look.
                        applied.push(key.clone());
                    }
                    failure.get_or_insert(TxnError::Store(e));
                    stamps.push(0);
                }
                other => {
                    failure.get_or_insert(TxnError::Corrupt(format!(
                        "unexpected put_if outcome {other:?}"
                    )));
                    stamps.push(0);
                }
            }
        }
        if failure.is_none() && !changed_since_read.is_empty() {
            match self
                .rewrite_changed(
                    &write_set,
                    changed_since_read,
                    lav,
                    &mut new_records,
                    &mut stamps,
                    &mut applied,
                )
                .await
            {
                Ok(Rewrite::Done) => {}
                Ok(Rewrite::Restart) if may_restart => return Ok(Attempt::Restart(applied)),
                Ok(Rewrite::Restart) => failure = Some(TxnError::SerializationFailure),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(error) = failure {
            if let Some(shared) = &self.engine.shared {
                for key in &write_set {
                    shared.invalidate(key);
                }
            }
            return self.abort_with(applied, false, error).await;
        }
        // 3. Index entries, cache-unit counters and the commit flag.
        let mut ops: Vec<Op> = self
            .index_entries
            .iter()
            .map(|k| Op::put(tables::INDEXES, k.clone(), Bytes::new()))
            .collect();
        if let Some(shift) = self.engine.shared.as_ref().and_then(|s| s.unit_shift) {
            let mut units: Vec<Bytes> = write_set
                .iter()
                .map(|(t, k)| unit_counter_key(*t, k, shift))
                .collect();
            units.sort();
            units.dedup();
            ops.extend(units.into_iter().map(|u| Op::increment(tables::KV, u, 1)));
        }
        let flag = entry.with_status(LogStatus::Committed);
        // Conditional on the entry of step 1: if recovery took this node for dead meanwhile,
        // it rewrote the entry (abort flag) and reverted the versions, and the flag must not
        // bring the transaction back to life.
        ops.push(Op::put_if(
            tables::TXLOG,
            log_key,
            Bytes::from(flag.encode()),
            Expect::Stamp(log_stamp),
        ));
        let mut retry: Vec<Op> = Vec::new();
        let mut failed: Option<StoreError> = None;
        let mut recovered = false;
        let outcomes = match self.engine.store.batch(ops.clone()).await {
            Ok(outcomes) => outcomes,
            Err(e) => return self.abort_with(write_set, true, e.into()).await,
        };
        for (op, outcome) in ops.iter().zip(outcomes) {
            match outcome {
                OpOutcome::Cond(CondOutcome::Written { .. }) => {}
                OpOutcome::Cond(_) => recovered = true,
                // A counter bump may be repeated: it only has to change the counter.
                OpOutcome::Failed(StoreError::Ambiguous { .. })
                    if matches!(op, Op::Increment { .. }) =>
                {
                    retry.push(op.clone());
                }
                OpOutcome::Failed(e) => {
                    failed.get_or_insert(e);
                }
                _ => {}
            }
        }
        for op in retry {
            if let Err(e) = bump_until_applied(&self.engine.store, op).await {
                failed.get_or_insert(e);
            }
        }
        if recovered {
            // Recovery reverted what it found; versions written after it looked are
            // removed here (removal is idempotent), and the entry stays aborted.
            return self.abort_with(write_set, false, TxnError::Recovered).await;
        }
        if let Some(e) = failed {
            // Not committed: take every applied version back before aborting (the commit
            // flag may have been written: set the entry back to running first).
            return self.abort_with(write_set, true, TxnError::Store(e)).await;
        }
        // 4. The commit manager.
        self.state = State::Committed;
        if let Some(shared) = &self.engine.shared {
            let newest = self.engine.newest_snapshot.read().clone();
            let base = newest.unwrap_or_else(|| self.snapshot.clone());
            let valid_for = std::sync::Arc::new(with_tid(&base, self.tid));
            for ((key, record), stamp) in write_set.iter().zip(new_records).zip(stamps) {
                shared.put(
                    key.clone(),
                    BufferEntry {
                        record,
                        stamp: Some(stamp),
                        valid_for: valid_for.clone(),
                        unit_version: None,
                    },
                );
            }
        }
        self.engine.manager.commit(self.tid).await?;
        self.engine.note_commit(self.tid);
        Ok(Attempt::Committed)
    }

    /// [`Transaction::abort_after`] as an attempt's result.
    async fn abort_with(
        &mut self,
        applied: Vec<StoreKey>,
        relog: bool,
        error: TxnError,
    ) -> Result<Attempt, TxnError> {
        Err(self.abort_after(applied, relog, error).await)
    }
}

/// How one commit attempt ended, when it did not fail.
enum Attempt {
    Committed,
    /// Run again under a fresh tid, after undoing these applied writes.
    Restart(Vec<StoreKey>),
}

/// How [`Transaction::rewrite_changed`] ended, when it did not fail.
enum Rewrite {
    Done,
    /// A re-applied update builds on a version with a larger tid.
    Restart,
}

impl Transaction {
    /// Moves the transaction to a tid started now (see [`Transaction::commit`]); the old
    /// one, which wrote nothing, is aborted so it does not hold back lav.
    async fn take_fresh_tid(&mut self) -> Result<(), TxnError> {
        let begun = self.engine.manager.start().await?;
        self.engine.lav.fetch_max(begun.lav, Ordering::Relaxed);
        self.lav = self.lav.max(begun.lav);
        let old = std::mem::replace(&mut self.tid, begun.tid);
        if let Err(e) = self.engine.manager.abort(old).await {
            tracing::warn!(tid = old, error = %e, "could not abort the tid a READ COMMITTED transaction left");
        }
        Ok(())
    }

    /// The record as this transaction writes it: its version on top (after eager GC for
    /// `lav`), or unchanged for a locking read (`SELECT ... FOR UPDATE` writes the record
    /// back only so that its stamp takes part in conflict detection).
    fn with_own_version(
        &self,
        mut record: Record,
        pending: &Pending,
        lav: u64,
    ) -> Result<Record, TxnError> {
        if let Pending::Write(row) = pending {
            let version = match row {
                Some(row) => Version::live(self.tid, row.clone()),
                None => Version::tombstone(self.tid),
            };
            record.write(version, lav)?;
        }
        Ok(record)
    }

    /// Step 2 again for records whose stamp changed since they were read. A changed stamp
    /// is a write-write conflict only if the record now holds a version this transaction
    /// does not see: garbage collection (the background sweep, or a writer's eager GC that
    /// was then undone) rewrites records without adding one, and must not abort every
    /// transaction that read a record before it was compacted — a long bulk load would
    /// never commit. So each such record is read again, checked, and written with its new
    /// stamp, a few times at most. A record that did gain such a version fails the commit,
    /// unless the write is a READ COMMITTED update that may be re-applied onto it
    /// ([`crate::txn::rebase`]).
    async fn rewrite_changed(
        &mut self,
        write_set: &[StoreKey],
        mut pending: Vec<usize>,
        lav: u64,
        new_records: &mut [Record],
        stamps: &mut [u64],
        applied: &mut Vec<StoreKey>,
    ) -> Result<Rewrite, TxnError> {
        for _ in 0..REWRITE_ATTEMPTS {
            // Taken before the gets, for judging which versions they find are committed
            // (see `Transaction::rebase_onto`).
            let seen = self.engine.newest_snapshot.read().clone();
            let gets = pending
                .iter()
                .map(|&i| Op::get(write_set[i].0, write_set[i].1.clone()))
                .collect();
            let found = self.engine.store.batch(gets).await?;
            let mut ops = Vec::with_capacity(pending.len());
            for (&i, outcome) in pending.iter().zip(found) {
                let key = &write_set[i];
                let found = match outcome {
                    OpOutcome::Value(found) => found,
                    OpOutcome::Failed(e) => return Err(TxnError::Store(e)),
                    other => {
                        return Err(TxnError::Corrupt(format!(
                            "unexpected get outcome {other:?}"
                        )));
                    }
                };
                let (mut record, mut expect) = match &found {
                    Some(v) => (Record::decode(&v.value)?, Expect::Stamp(v.stamp)),
                    None => (Record::new(), Expect::Absent),
                };
                let read = self.reads.get(key);
                let read_under = read.map_or(&self.snapshot, |r| &r.snapshot).clone();
                let took_absent = read.is_some_and(|r| r.stamp.is_none());
                if record.write_conflict(self.tid, |t| read_under.is_visible(t)) {
                    if !self.is_rebasable(key) {
                        return Err(TxnError::SerializationFailure);
                    }
                    // A READ COMMITTED update that may be re-applied onto the newer version.
                    match self
                        .rebase_onto(key, found, seen.clone(), !applied.is_empty())
                        .await?
                    {
                        Rebased::Write(newest, stamp) => {
                            record = newest;
                            expect = Expect::Stamp(stamp);
                        }
                        Rebased::Restart => return Ok(Rewrite::Restart),
                    }
                }
                // A key this transaction took for absent (an insert; `insert_new` does not
                // even read it) must still hold no row it can see, or the insert would
                // silently replace that row.
                if took_absent
                    && record
                        .visible_row(|t| t != self.tid && read_under.is_visible(t))
                        .is_some()
                {
                    return Err(TxnError::SerializationFailure);
                }
                if let Some(pending) = self.writes.get(key) {
                    record = self.with_own_version(record, pending, lav)?;
                }
                ops.push(Op::put_if(
                    key.0,
                    key.1.clone(),
                    Bytes::from(record.encode()),
                    expect,
                ));
                new_records[i] = record;
            }
            let mut again = Vec::new();
            for (&i, outcome) in pending.iter().zip(self.engine.store.batch(ops).await?) {
                match outcome {
                    OpOutcome::Cond(CondOutcome::Written { stamp }) => {
                        stamps[i] = stamp;
                        applied.push(write_set[i].clone());
                    }
                    OpOutcome::Cond(CondOutcome::Conflict { .. }) => again.push(i),
                    OpOutcome::Failed(e) => {
                        if e.is_ambiguous() {
                            applied.push(write_set[i].clone());
                        }
                        return Err(TxnError::Store(e));
                    }
                    other => {
                        return Err(TxnError::Corrupt(format!(
                            "unexpected put_if outcome {other:?}"
                        )));
                    }
                }
            }
            if again.is_empty() {
                return Ok(Rewrite::Done);
            }
            pending = again;
        }
        Err(TxnError::SerializationFailure)
    }
}

/// Rounds of [`Transaction::rewrite_changed`] before a record that keeps changing counts as
/// a conflict.
const REWRITE_ATTEMPTS: usize = 4;

/// Repeats a counter increment whose outcome was unknown until one is known to be applied.
async fn bump_until_applied(
    store: &shmdb_store_client::StoreClient,
    op: Op,
) -> Result<(), StoreError> {
    let Op::Increment { table, key, delta } = op else {
        return Ok(());
    };
    for _ in 0..16 {
        match store.increment(table, key.clone(), delta).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Ambiguous { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Ambiguous {
        reason: "cache-unit counter increment stayed ambiguous".into(),
    })
}

/// The transaction-log key of a tid of this node.
pub(crate) fn log_key(node: u64, tid: u64) -> Bytes {
    Bytes::from(keys::txlog_key(node, tid))
}
