//! The transaction log: one entry per writing transaction, keyed by (processing node, tid).
//!
//! The entry holds the write set (every storage key the transaction will change) and is
//! written before any of those keys is, so that recovery of a dead node knows exactly what
//! to revert; later it carries the commit or abort flag.
//!
//! A store value is bounded (1 MiB), a write set is not: a large one (a bulk COPY, an
//! UPDATE of a whole table) is split into chunks of at most [`CHUNK_BYTES`]. The entry keeps
//! the first chunk and the number of the others, which are *spilled* under
//! `keys::txlog_spill_key` and written before the entry, so whoever reads an entry can read
//! its whole write set. Status changes rewrite only the entry.

use bytes::{Buf, BufMut, Bytes};
use shmdb_placement::tables;
use shmdb_store_client::{Op, OpOutcome, StoreClient};

use crate::error::DecodeError;
use crate::keys;
use crate::txn::error::TxnError;
use crate::txn::transaction::StoreKey;

/// Most bytes of write-set keys one log record holds (half the store's value limit, leaving
/// room for the encoding's per-key overhead).
pub const CHUNK_BYTES: usize = 512 * 1024;

/// Where a logged transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStatus {
    /// Writes may be under way: recovery reverts them.
    Running,
    /// The commit flag: every write is applied and the transaction is committed.
    Committed,
    /// The abort flag: every applied write was reverted.
    Aborted,
}

/// One transaction's log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Where it stands.
    pub status: LogStatus,
    /// Wall-clock time of the entry (µs since the Unix epoch), for operators and the sweep.
    pub time_micros: u64,
    /// The write set: (storage table, key) of every record the transaction writes — all of
    /// it, or its first chunk when `spill` > 0.
    pub keys: Vec<(u64, Bytes)>,
    /// How many further chunks of the write set are spilled (see the module docs).
    pub spill: u32,
}

/// Version 1 had no spill count (read as 0); version 2 adds it after the time.
const FORMAT: u8 = 2;

impl LogEntry {
    /// The entry for `write_set` in `status`, and the chunks to spill before writing it.
    /// Deterministic: the same write set always gives the same entry keys and chunk count,
    /// so a status change can be re-derived from the write set.
    pub fn split(status: LogStatus, write_set: &[StoreKey]) -> (LogEntry, Vec<Vec<StoreKey>>) {
        let mut chunks: Vec<Vec<StoreKey>> = vec![Vec::new()];
        let mut bytes = 0;
        for key in write_set {
            let cost = key.1.len() + 12;
            if bytes + cost > CHUNK_BYTES && chunks.last().is_some_and(|c| !c.is_empty()) {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += cost;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(key.clone());
            }
        }
        let mut chunks = chunks.into_iter();
        let head = chunks.next().unwrap_or_default();
        let rest: Vec<Vec<StoreKey>> = chunks.collect();
        (
            LogEntry {
                status,
                time_micros: now_micros(),
                keys: head,
                spill: rest.len() as u32,
            },
            rest,
        )
    }

    /// The same entry (first chunk and spill count) in another status, stamped now.
    pub fn with_status(&self, status: LogStatus) -> LogEntry {
        LogEntry {
            status,
            time_micros: now_micros(),
            keys: self.keys.clone(),
            spill: self.spill,
        }
    }

    /// The compact binary form stored in the log.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(16 + self.keys.iter().map(|(_, k)| k.len() + 10).sum::<usize>());
        out.put_u8(FORMAT);
        out.put_u8(match self.status {
            LogStatus::Running => 0,
            LogStatus::Committed => 1,
            LogStatus::Aborted => 2,
        });
        out.put_u64(self.time_micros);
        out.put_u32(self.spill);
        out.put_u32(self.keys.len() as u32);
        for (table, key) in &self.keys {
            out.put_u64(*table);
            out.put_u32(key.len() as u32);
            out.put_slice(key);
        }
        out
    }

    /// Decodes a stored entry.
    pub fn decode(bytes: &Bytes) -> Result<LogEntry, DecodeError> {
        let truncated = |offset| DecodeError::Truncated {
            what: "log entry",
            offset,
        };
        let mut buf = bytes.clone();
        if buf.remaining() < 14 {
            return Err(truncated(0));
        }
        let format = buf.get_u8();
        if format != FORMAT && format != 1 {
            return Err(DecodeError::UnknownTag {
                what: "log entry format",
                tag: format,
                offset: 0,
            });
        }
        let status = match buf.get_u8() {
            0 => LogStatus::Running,
            1 => LogStatus::Committed,
            2 => LogStatus::Aborted,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "log status",
                    tag,
                    offset: 1,
                });
            }
        };
        let time_micros = buf.get_u64();
        let spill = if format == 1 {
            0
        } else if buf.remaining() >= 8 {
            buf.get_u32()
        } else {
            return Err(truncated(10));
        };
        let count = buf.get_u32() as usize;
        let mut keys = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            let offset = bytes.len() - buf.remaining();
            if buf.remaining() < 12 {
                return Err(truncated(offset));
            }
            let table = buf.get_u64();
            let len = buf.get_u32() as usize;
            if buf.remaining() < len {
                return Err(truncated(offset));
            }
            keys.push((table, buf.split_to(len)));
        }
        if buf.has_remaining() {
            return Err(DecodeError::TrailingBytes {
                what: "log entry",
                len: buf.remaining(),
            });
        }
        Ok(LogEntry {
            status,
            time_micros,
            keys,
            spill,
        })
    }
}

/// Writes the spilled chunks of `tid`'s write set (before its entry: see the module docs).
pub async fn write_spill(
    store: &StoreClient,
    node: u64,
    tid: u64,
    chunks: &[Vec<StoreKey>],
) -> Result<(), TxnError> {
    if chunks.is_empty() {
        return Ok(());
    }
    let ops = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let record = LogEntry {
                status: LogStatus::Running,
                time_micros: now_micros(),
                keys: chunk.clone(),
                spill: 0,
            };
            Op::put(
                tables::TXLOG,
                Bytes::from(keys::txlog_spill_key(node, tid, i as u32)),
                Bytes::from(record.encode()),
            )
        })
        .collect();
    for outcome in store.batch(ops).await? {
        if let OpOutcome::Failed(e) = outcome {
            return Err(e.into());
        }
    }
    Ok(())
}

/// The whole write set of a logged transaction: the entry's keys and its spilled chunks.
/// A missing chunk is an error, except that `tolerate_missing` (an entry already flagged
/// aborted, whose versions its writer removed) skips it.
pub async fn read_write_set(
    store: &StoreClient,
    node: u64,
    tid: u64,
    entry: &LogEntry,
    tolerate_missing: bool,
) -> Result<Vec<StoreKey>, TxnError> {
    let mut all = entry.keys.clone();
    if entry.spill == 0 {
        return Ok(all);
    }
    let gets = (0..entry.spill)
        .map(|i| {
            Op::get(
                tables::TXLOG,
                Bytes::from(keys::txlog_spill_key(node, tid, i)),
            )
        })
        .collect();
    for (i, outcome) in store.batch(gets).await?.into_iter().enumerate() {
        match outcome {
            OpOutcome::Value(Some(found)) => all.extend(LogEntry::decode(&found.value)?.keys),
            OpOutcome::Value(None) if tolerate_missing => {}
            OpOutcome::Value(None) => {
                return Err(TxnError::Corrupt(format!(
                    "write-set chunk {i} of tid {tid} of node {node} is missing"
                )));
            }
            OpOutcome::Failed(e) => return Err(e.into()),
            other => {
                return Err(TxnError::Corrupt(format!(
                    "unexpected answer {other:?} reading a write-set chunk"
                )));
            }
        }
    }
    Ok(all)
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let entry = LogEntry {
            status: LogStatus::Committed,
            time_micros: 42,
            keys: vec![(4, Bytes::from_static(b"row")), (5, Bytes::new())],
            spill: 3,
        };
        let bytes = Bytes::from(entry.encode());
        assert_eq!(LogEntry::decode(&bytes).ok(), Some(entry));
        assert!(LogEntry::decode(&bytes.slice(..bytes.len() - 1)).is_err());
        assert!(LogEntry::decode(&Bytes::from_static(b"\x09")).is_err());
    }

    #[test]
    fn a_large_write_set_splits_into_bounded_deterministic_chunks() {
        let key = |i: u32| (4, Bytes::from(format!("{i:0>100}")));
        let write_set: Vec<StoreKey> = (0..20_000).map(key).collect();
        let (head, chunks) = LogEntry::split(LogStatus::Running, &write_set);
        assert_eq!(head.spill as usize, chunks.len());
        assert!(!chunks.is_empty(), "2 MB of keys fit no single record");
        for record in std::iter::once(&head.keys).chain(&chunks) {
            let encoded = LogEntry {
                status: LogStatus::Running,
                time_micros: 0,
                keys: record.clone(),
                spill: 0,
            }
            .encode();
            assert!(encoded.len() <= CHUNK_BYTES + 64, "{}", encoded.len());
        }
        let rejoined: Vec<StoreKey> = head
            .keys
            .iter()
            .chain(chunks.iter().flatten())
            .cloned()
            .collect();
        assert_eq!(rejoined, write_set);
        let (again, _) = LogEntry::split(LogStatus::Committed, &write_set);
        assert_eq!((again.keys, again.spill), (head.keys, head.spill));
        let (small, none) = LogEntry::split(LogStatus::Running, &write_set[..3]);
        assert_eq!((small.keys.len(), small.spill, none.len()), (3, 0, 0));
    }
}
