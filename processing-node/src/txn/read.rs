//! Reading: fetching records (through the buffer) and picking the visible version.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use shmdb_placement::tables;
use shmdb_store_client::proto::RowFilter;
use shmdb_store_client::{KeyRange, Op, OpOutcome};

use crate::datum::Datum;
use crate::encoding::row::decode_row;
use crate::keys::{self, ScanRange};
use crate::record::Record;
use crate::txn::buffer::{BufferEntry, unit_counter_key};
use crate::txn::error::TxnError;
use crate::txn::prune::prune_behind;
use crate::txn::schema::{IndexDef, TableDef};
use crate::txn::transaction::{Pending, ReadRecord, StoreKey, Transaction};

/// Items fetched per store scan page.
const SCAN_PAGE: usize = 512;

impl Transaction {
    /// Makes sure every key is in the transaction buffer, fetching the missing ones in one
    /// batch (through the shared buffer when the node has one).
    pub(crate) async fn fetch_all(&mut self, keys: &[StoreKey]) -> Result<(), TxnError> {
        let mut missing: Vec<StoreKey> = Vec::new();
        // A set, not `missing.contains`: a COPY commits 100,000s of keys, and a quadratic
        // check held a worker thread for seconds — long enough to miss heartbeats.
        let mut queued: HashSet<&StoreKey> = HashSet::new();
        for key in keys {
            if self.reads.contains_key(key) || !queued.insert(key) {
                continue;
            }
            if let Some(entry) = self.lookup_shared(key).await? {
                self.reads.insert(key.clone(), entry);
                continue;
            }
            missing.push(key.clone());
        }
        if missing.is_empty() {
            return Ok(());
        }
        if let Some(key) = self.ride_along.take()
            && !self.reads.contains_key(&key)
            && !queued.contains(&key)
        {
            missing.push(key);
        }
        let shared = self.engine.shared.as_ref();
        let unit_shift = shared.and_then(|s| s.unit_shift);
        // V_max as of *before* the fetch: every tid it holds committed before the records are
        // read, so their versions are in what we fetch. A snapshot begun during the fetch may
        // hold a commit that overtook it, which the fetched record would lack.
        let newest = self.engine.newest_snapshot.read().clone();
        // Version-set sync: read each unit's counter before the record, so the entry is at
        // least as new as the counter it is filed under.
        let mut ops: Vec<Op> = Vec::with_capacity(missing.len() * 2);
        if let Some(shift) = unit_shift {
            for (table, key) in &missing {
                ops.push(Op::get(tables::KV, unit_counter_key(*table, key, shift)));
            }
        }
        let counters = ops.len();
        let counter_results = if counters > 0 {
            self.engine.store.batch(std::mem::take(&mut ops)).await?
        } else {
            Vec::new()
        };
        for (table, key) in &missing {
            ops.push(Op::get(*table, key.clone()));
        }
        let results = self.engine.store.batch(ops).await?;
        for ((key, outcome), counter) in missing.into_iter().zip(results).zip(
            counter_results
                .into_iter()
                .map(Some)
                .chain(std::iter::repeat(None)),
        ) {
            let read = match outcome {
                OpOutcome::Value(found) => {
                    ReadRecord::found(found.as_ref(), self.snapshot.clone())?
                }
                OpOutcome::Failed(e) => return Err(e.into()),
                other => {
                    return Err(TxnError::Corrupt(format!(
                        "unexpected get outcome {other:?}"
                    )));
                }
            };
            if let Some(shared) = shared {
                shared.miss();
                let unit_version = match counter {
                    Some(OpOutcome::Value(Some(v))) => Some(counter_value(&v.value)),
                    Some(OpOutcome::Value(None)) => Some(0),
                    _ => None,
                };
                shared.put(
                    key.clone(),
                    BufferEntry {
                        record: read.record.clone(),
                        stamp: read.stamp,
                        valid_for: newest.clone().unwrap_or_else(|| self.snapshot.clone()),
                        unit_version,
                    },
                );
            }
            self.reads.insert(key, read);
        }
        Ok(())
    }

    /// A record from the node's shared buffer, if one is usable for this snapshot.
    async fn lookup_shared(&mut self, key: &StoreKey) -> Result<Option<ReadRecord>, TxnError> {
        let Some(shared) = self.engine.shared.as_ref() else {
            return Ok(None);
        };
        let Some(entry) = shared.get(key) else {
            return Ok(None);
        };
        if self.snapshot.is_subset_of(&entry.valid_for) {
            shared.hit();
            return Ok(Some(ReadRecord {
                record: entry.record,
                stamp: entry.stamp,
                snapshot: self.snapshot.clone(),
            }));
        }
        let (Some(shift), Some(version)) = (shared.unit_shift, entry.unit_version) else {
            return Ok(None);
        };
        // A version outside the entry's version set was not committed when the entry was
        // stored (as far as it knows): if its transaction aborted since, the undo (or a
        // dead node's recovery) removed it from the store without touching the unit
        // counter, and once the base passes its tid it would read as committed. Only
        // entries without such versions may be revalidated by the counter.
        if entry
            .record
            .versions()
            .iter()
            .any(|v| !entry.valid_for.is_visible(v.tid))
        {
            return Ok(None);
        }
        let counter = self
            .engine
            .store
            .get(tables::KV, unit_counter_key(key.0, &key.1, shift))
            .await?;
        let current = counter.map_or(0, |v| counter_value(&v.value));
        if current != version {
            return Ok(None);
        }
        // No write touched the unit since the entry was stored: it is complete for any
        // snapshot, in particular ours.
        shared.validated();
        shared.put(
            key.clone(),
            BufferEntry {
                valid_for: self.snapshot.clone(),
                ..entry.clone()
            },
        );
        Ok(Some(ReadRecord {
            record: entry.record,
            stamp: entry.stamp,
            snapshot: self.snapshot.clone(),
        }))
    }

    /// The row this transaction sees at a storage key: its own pending write, else the
    /// newest version in its snapshot. `Ok(None)` = no row (absent or deleted).
    pub(crate) fn visible_at(&self, key: &StoreKey) -> Option<Bytes> {
        match self.writes.get(key) {
            Some(Pending::Write(row)) => return row.clone(),
            Some(Pending::Lock) | None => {}
        }
        // Under the snapshot the record was read under: a READ COMMITTED writer may have
        // read one row again under a newer snapshot than its statement's.
        let read = self.reads.get(key)?;
        read.record
            .visible(|tid| tid == self.tid || read.snapshot.is_visible(tid))
            .and_then(|v| v.row.clone())
    }

    /// Reads one row by primary key.
    pub async fn get(
        &mut self,
        table: &TableDef,
        pk: &[Datum],
    ) -> Result<Option<Vec<Datum>>, TxnError> {
        self.ensure_active()?;
        self.observed(table.id);
        let key: StoreKey = (tables::ROWS, Bytes::from(keys::row_key(table.id, pk)));
        self.fetch_all(std::slice::from_ref(&key)).await?;
        self.visible_at(&key)
            .map(|row| decode_row(&row).map_err(Into::into))
            .transpose()
    }

    /// Reads several rows by primary key in one round trip (for joins and IN lists).
    pub async fn get_many(
        &mut self,
        table: &TableDef,
        pks: &[Vec<Datum>],
    ) -> Result<Vec<Option<Vec<Datum>>>, TxnError> {
        self.ensure_active()?;
        self.observed(table.id);
        let keys: Vec<StoreKey> = pks
            .iter()
            .map(|pk| (tables::ROWS, Bytes::from(keys::row_key(table.id, pk))))
            .collect();
        self.fetch_all(&keys).await?;
        keys.iter()
            .map(|key| {
                self.visible_at(key)
                    .map(|row| decode_row(&row).map_err(Into::into))
                    .transpose()
            })
            .collect()
    }

    /// Brings the records of these rows into the buffer in one batch, for the lookups a
    /// statement is about to make (`sql::prefetch`). It decides nothing: the lookups still
    /// read through the buffer as they would have.
    pub async fn prefetch(
        &mut self,
        rows: &[(keys::SqlTableId, Vec<Datum>)],
    ) -> Result<(), TxnError> {
        self.ensure_active()?;
        let keys: Vec<StoreKey> = rows
            .iter()
            .map(|(table, pk)| (tables::ROWS, Bytes::from(keys::row_key(*table, pk))))
            .collect();
        self.fetch_all(&keys).await
    }

    /// Rows with primary key between `lower` and `upper` (prefix bounds, see
    /// [`keys::pk_range`]), in primary-key order, at most `limit` (0 = no limit).
    pub async fn scan(
        &mut self,
        table: &TableDef,
        lower: Bound<&[Datum]>,
        upper: Bound<&[Datum]>,
        limit: usize,
    ) -> Result<Vec<Vec<Datum>>, TxnError> {
        self.scan_matching(table, lower, upper, limit, None).await
    }

    /// [`Transaction::scan`] with a pre-filter the storage nodes apply (see
    /// `shmdb_row_format::filter`): every row that satisfies it is returned, and rows that
    /// do not may be left out. The caller still applies its own condition to what comes back.
    pub async fn scan_matching(
        &mut self,
        table: &TableDef,
        lower: Bound<&[Datum]>,
        upper: Bound<&[Datum]>,
        limit: usize,
        filter: Option<&RowFilter>,
    ) -> Result<Vec<Vec<Datum>>, TxnError> {
        self.ensure_active()?;
        self.observed(table.id);
        let range = keys::pk_range(table.id, lower, upper);
        let rows = self
            .scan_versioned(tables::ROWS, &range, limit, filter)
            .await?;
        rows.into_iter()
            .map(|(_, row)| decode_row(&row).map_err(Into::into))
            .collect()
    }

    /// Visible values of the versioned records (rows or unique-index claims) of one storage
    /// table in `range`, merged with this transaction's own writes, in key order.
    pub(crate) async fn scan_versioned(
        &mut self,
        table: u64,
        range: &ScanRange,
        limit: usize,
        filter: Option<&RowFilter>,
    ) -> Result<Vec<(Bytes, Bytes)>, TxnError> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut out: Vec<(Bytes, Bytes)> = Vec::new();
        let mut seen: HashSet<Bytes> = HashSet::new();
        let mut next = KeyRange {
            start: Bytes::from(range.start.clone()),
            end: range.end.clone().map(Bytes::from),
        };
        // A page no larger than the rows still wanted: `ORDER BY key LIMIT 1` (TPC-C's
        // Delivery, once per district) must not pull 512 records to keep one. Pages grow
        // geometrically when records turn out invisible (deleted, or too new).
        let mut page_size = limit.clamp(1, SCAN_PAGE);
        let lav = self.engine.lav.load(Ordering::Relaxed);
        let mut garbage: Vec<(Bytes, u64)> = Vec::new();
        loop {
            let page = self
                .engine
                .store
                .scan_page_matching(table, &next, page_size, filter)
                .await?;
            page_size = page_size.saturating_mul(4).min(SCAN_PAGE);
            for item in page.items {
                let key: StoreKey = (table, item.key.clone());
                if !self.reads.contains_key(&key) {
                    let read = ReadRecord {
                        record: Record::decode(&item.value)?,
                        stamp: Some(item.stamp),
                        snapshot: self.snapshot.clone(),
                    };
                    if read.record.is_garbage(lav) {
                        // Invisible to every snapshot, and about to be deleted: kept out of
                        // the buffer, so a later write of the key reads it afresh instead of
                        // expecting a stamp the deletion removes.
                        garbage.push((item.key.clone(), item.stamp));
                        seen.insert(item.key);
                        continue;
                    }
                    self.reads.insert(key, read);
                }
                seen.insert(item.key.clone());
                if let Some(row) = self.visible_at(&(table, item.key.clone())) {
                    out.push((item.key, row));
                }
            }
            match page.resume {
                Some(resume) if out.len() < limit => next.start = resume,
                _ => break,
            }
        }
        prune_behind(&self.engine.store, &self.engine.prune, table, garbage);
        let complete = out.len() < limit;
        // Own inserts the store does not have yet.
        let start = (table, Bytes::from(range.start.clone()));
        let mut own: Vec<(Bytes, Bytes)> = self
            .writes
            .range(start..)
            .take_while(|((t, k), _)| {
                *t == table && range.end.as_ref().is_none_or(|e| k.as_ref() < e.as_slice())
            })
            .filter(|((_, k), _)| !seen.contains(k))
            .filter_map(|((_, k), p)| match p {
                Pending::Write(Some(row)) => Some((k.clone(), row.clone())),
                _ => None,
            })
            .collect();
        if filter.is_some() {
            // Records read before keep answering for this transaction (a READ COMMITTED
            // statement may have read one under a newer snapshot than the store filter saw
            // it with): the ones the filter skipped come from the buffer, as without it.
            own.extend(
                self.reads
                    .keys()
                    .filter(|(t, k)| {
                        *t == table
                            && range.contains(k)
                            && !seen.contains(k)
                            && !matches!(self.writes.get(&(*t, k.clone())), Some(Pending::Write(_)))
                    })
                    .filter_map(|key| Some((key.1.clone(), self.visible_at(key)?)))
                    .collect::<Vec<_>>(),
            );
        }
        if !own.is_empty() {
            let last = out.last().map(|(k, _)| k.clone());
            out.extend(
                own.into_iter()
                    .filter(|(k, _)| complete || last.as_ref().is_none_or(|l| k < l)),
            );
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Rows whose indexed columns lie between `lower` and `upper` (prefix bounds in the
    /// index's order), in index order, at most `limit` (0 = no limit).
    pub async fn index_scan(
        &mut self,
        table: &TableDef,
        index: &IndexDef,
        lower: Bound<&[Datum]>,
        upper: Bound<&[Datum]>,
        limit: usize,
    ) -> Result<Vec<Vec<Datum>>, TxnError> {
        self.ensure_active()?;
        self.observed(table.id);
        let range = keys::index_range(index.id, &index.orders, lower, upper);
        let wanted = |row: &[Datum]| {
            let values = index.values_of(row);
            let key = keys::index_range(
                index.id,
                &index.orders,
                Bound::Included(&values),
                Bound::Included(&values),
            );
            range.contains(&key.start)
        };
        let mut pks: Vec<Vec<u8>> = Vec::new();
        if index.unique {
            // Claims are versioned records holding the encoded primary key.
            for (_, pk) in self
                .scan_versioned(tables::INDEXES, &range, 0, None)
                .await?
            {
                pks.push(pk.to_vec());
            }
        }
        // Version-unaware entries (non-unique indexes, and unique rows with NULLs).
        let mut next = KeyRange {
            start: Bytes::from(range.start.clone()),
            end: range.end.clone().map(Bytes::from),
        };
        loop {
            let page = self
                .engine
                .store
                .scan_page(tables::INDEXES, &next, SCAN_PAGE)
                .await?;
            for item in page.items {
                if !item.value.is_empty() {
                    continue; // a unique claim, handled above
                }
                if let Ok(pk) = keys::index_key_pk(&item.key, index.columns.len()) {
                    pks.push(pk.to_vec());
                }
            }
            match page.resume {
                Some(resume) => next.start = resume,
                None => break,
            }
        }
        // Own writes whose index entries are not in the store yet.
        for (key, pending) in self.writes.range((tables::ROWS, Bytes::new())..) {
            if key.0 != tables::ROWS {
                break;
            }
            if let Pending::Write(Some(_)) = pending
                && let Ok((t, pk)) = keys::decode_row_key(&key.1)
                && t == table.id
            {
                pks.push(crate::encoding::key::encode_key(&pk));
            }
        }
        let mut unique_pks: Vec<Vec<u8>> = Vec::new();
        let mut seen = HashSet::new();
        for pk in pks {
            if seen.insert(pk.clone()) {
                unique_pks.push(pk);
            }
        }
        let row_keys: Vec<StoreKey> = unique_pks
            .iter()
            .map(|pk| {
                (
                    tables::ROWS,
                    Bytes::from(keys::row_key_from_encoded(table.id, pk)),
                )
            })
            .collect();
        self.fetch_all(&row_keys).await?;
        let mut rows: Vec<(Vec<u8>, Vec<Datum>)> = Vec::new();
        for key in &row_keys {
            let Some(row) = self.visible_at(key) else {
                continue; // the entry's row version is not visible: skip (version-unaware)
            };
            let row = decode_row(&row)?;
            if wanted(&row) {
                let values = index.values_of(&row);
                let sort_key =
                    keys::index_entry_key(index.id, &values, &index.orders, &table.pk_of(&row));
                rows.push((sort_key, row));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        if limit > 0 {
            rows.truncate(limit);
        }
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }
}

/// A unit counter's value (8 little-endian bytes, as the store's increment keeps it).
fn counter_value(bytes: &[u8]) -> i64 {
    bytes.try_into().map(i64::from_le_bytes).unwrap_or_default()
}
