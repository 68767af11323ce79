//! Lazy garbage collection: a sweep for records and index entries that are rarely written.
//!
//! Eager collection happens on every write (the writer drops versions made garbage by lav).
//! Rows that are never written again would keep their old versions forever, and
//! version-unaware index entries are never touched by writers at all; the sweep visits them.
//! The transaction log gains one entry per writing transaction and nothing else removes
//! entries, so the sweep also drops those no recovery can need any more ([`sweep_log`]).
//! Every change is conditional on the stamp read, so the sweep never races a writer: a
//! failed conditional write just means the record was written (and collected) meanwhile.

use bytes::Bytes;
use shmdb_placement::tables;
use shmdb_store_client::proto::RowFilter;
use shmdb_store_client::{CondOutcome, Expect, KeyRange, Op, OpOutcome, StoreClient};

use crate::encoding::row::decode_row;
use crate::keys;
use crate::record::Record;
use crate::txn::error::TxnError;
use crate::txn::schema::{IndexDef, TableDef};

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Records or entries looked at (a record sweep sees only those the storage nodes did
    /// not keep back as holding nothing to reclaim).
    pub visited: u64,
    /// Records rewritten without their garbage versions.
    pub compacted: u64,
    /// Records or index entries deleted.
    pub deleted: u64,
}

const PAGE: usize = 512;

/// Collects garbage in every versioned record of a storage table (`tables::ROWS`, or the
/// unique-index claims in `tables::INDEXES`) for `lav`.
pub async fn sweep_records(
    store: &StoreClient,
    table: u64,
    lav: u64,
) -> Result<SweepStats, TxnError> {
    let mut stats = SweepStats::default();
    let mut range = KeyRange::all();
    // Most records hold one live version and nothing to reclaim: the nodes keep those, so
    // a round costs in proportion to the garbage, not to the data.
    let filter = RowFilter {
        equals: Vec::new(),
        garbage_only: true,
    };
    loop {
        let page = store
            .scan_page_matching(table, &range, PAGE, Some(&filter))
            .await?;
        for item in page.items {
            stats.visited += 1;
            if table == tables::INDEXES && item.value.is_empty() {
                continue; // a version-unaware entry: see `sweep_index`
            }
            let mut record = Record::decode(&item.value)?;
            if record.is_garbage(lav) {
                if let Ok(CondOutcome::Written { .. }) = store
                    .delete_if(table, item.key, Expect::Stamp(item.stamp))
                    .await
                {
                    stats.deleted += 1;
                }
            } else if record.has_garbage(lav) {
                record.gc(lav);
                let outcome = if record.is_empty() {
                    store
                        .delete_if(table, item.key, Expect::Stamp(item.stamp))
                        .await
                } else {
                    store
                        .put_if(
                            table,
                            item.key,
                            Bytes::from(record.encode()),
                            Expect::Stamp(item.stamp),
                        )
                        .await
                };
                if let Ok(CondOutcome::Written { .. }) = outcome {
                    stats.compacted += 1;
                }
            }
        }
        match page.resume {
            Some(resume) => range.start = resume,
            None => return Ok(stats),
        }
    }
}

/// Deletes the version-unaware entries of `index` whose value no version of the row holds
/// any more (DESIGN.md, "Index GC"). The entry's stamp is read before the row and the delete
/// is conditional on it, so an entry re-added by a concurrent writer is never lost.
pub async fn sweep_index(
    store: &StoreClient,
    table: &TableDef,
    index: &IndexDef,
    lav: u64,
) -> Result<SweepStats, TxnError> {
    let mut stats = SweepStats::default();
    let range = keys::index_entries_range(index.id);
    let mut next = KeyRange {
        start: Bytes::from(range.start),
        end: range.end.map(Bytes::from),
    };
    loop {
        let page = store.scan_page(tables::INDEXES, &next, PAGE).await?;
        // The page's entries (a unique claim is a versioned record: `sweep_records`), then
        // their rows in one batch: every entry's stamp was read before its row.
        let mut entries = Vec::with_capacity(page.items.len());
        for item in page.items {
            if item.value.is_empty() {
                let (_, values, _) = keys::decode_index_key(&item.key, index.columns.len())?;
                let pk = keys::index_key_pk(&item.key, index.columns.len())?;
                let row_key = Bytes::from(keys::row_key_from_encoded(table.id, pk));
                entries.push((item, values, row_key));
            }
        }
        let gets = entries
            .iter()
            .map(|(_, _, row_key)| Op::get(tables::ROWS, row_key.clone()))
            .collect();
        let rows = store.batch(gets).await?;
        for ((item, values, _), row) in entries.into_iter().zip(rows) {
            stats.visited += 1;
            let holds = match row {
                OpOutcome::Value(None) => false,
                OpOutcome::Value(Some(found)) => {
                    let mut record = Record::decode(&found.value)?;
                    record.gc(lav);
                    let mut any = false;
                    for version in record.versions() {
                        if let Some(row) = &version.row
                            && index.values_of(&decode_row(row)?) == values
                        {
                            any = true;
                            break;
                        }
                    }
                    any
                }
                // Unknown: keep the entry; a later sweep decides.
                _ => true,
            };
            if !holds
                && let Ok(CondOutcome::Written { .. }) = store
                    .delete_if(tables::INDEXES, item.key, Expect::Stamp(item.stamp))
                    .await
            {
                stats.deleted += 1;
            }
        }
        match page.resume {
            Some(resume) => next.start = resume,
            None => return Ok(stats),
        }
    }
}

/// Deletes the transaction-log entries that no recovery can need: those of tids below
/// `lav`. Every such tid is finished at the commit managers (lav is at most the base of
/// every running or future snapshot, and every tid at or below a base has finished), so no
/// manager will ask to recover it, nor look for its node: a committed tid was acknowledged
/// only after its manager made the commit durable, and an aborted one was reported only
/// after its versions were removed (the abort invariant), by itself or by recovery. Entries
/// at or above `lav` may belong to running or unrecovered transactions and are kept. Deletes
/// are conditional on the stamp read.
pub async fn sweep_log(store: &StoreClient, lav: u64) -> Result<SweepStats, TxnError> {
    let mut stats = SweepStats::default();
    let mut range = KeyRange::all();
    loop {
        let page = store.scan_page(tables::TXLOG, &range, PAGE).await?;
        for item in page.items {
            stats.visited += 1;
            let Ok((_, tid)) = keys::decode_txlog_owner(&item.key) else {
                continue; // not a log entry of ours: leave it
            };
            if tid < lav
                && let Ok(CondOutcome::Written { .. }) = store
                    .delete_if(tables::TXLOG, item.key, Expect::Stamp(item.stamp))
                    .await
            {
                stats.deleted += 1;
            }
        }
        match page.resume {
            Some(resume) => range.start = resume,
            None => return Ok(stats),
        }
    }
}
