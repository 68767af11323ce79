//! The record: the value stored under one row key, i.e. every live version of the row.
//!
//! DESIGN.md keeps one key-value pair per row whose value lists the row's versions
//! `[(tid, row | tombstone)]`, newest first, so that one `get` fetches everything a reader or
//! a writer needs and one `put_if` writes a new version (or detects a conflict). The functions
//! here are the pure half of that: visibility, conflict checks, appending, undoing and eager
//! garbage collection, all on an in-memory [`Record`], plus its byte encoding.
//!
//! # Format
//!
//! `0x01` (format version), the version count (LEB128), then per version, newest first: the
//! tid (LEB128; for every version after the first, the *difference* to the previous, newer,
//! tid, which is small and at least 1) and the body length plus one (LEB128; `0` marks a
//! tombstone) followed by the body, an encoded row (see [`crate::encoding::row`]).

use bytes::Bytes;

use crate::encoding::cursor::Cursor;
use crate::encoding::varint::{get_u64, put_u64};
use crate::error::{DecodeError, RecordError};

const WHAT: &str = "record";
/// The layout's first byte, defined where storage nodes read it too (scan filters).
const FORMAT_V1: u8 = shmdb_row_format::RECORD_FORMAT_V1;

/// One version of a row: the tid of the transaction that wrote it and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The writer's tid, which is also the version number (DESIGN.md, commit manager).
    pub tid: u64,
    /// The encoded row, or `None` for a tombstone (the row was deleted by `tid`).
    pub row: Option<Bytes>,
}

impl Version {
    /// A version holding a row (an insert or an update).
    pub fn live(tid: u64, row: impl Into<Bytes>) -> Version {
        Version {
            tid,
            row: Some(row.into()),
        }
    }

    /// A tombstone: the row does not exist for snapshots that see `tid` as its newest version.
    pub fn tombstone(tid: u64) -> Version {
        Version { tid, row: None }
    }

    /// Whether this version deletes the row.
    pub fn is_tombstone(&self) -> bool {
        self.row.is_none()
    }
}

/// Every live version of one row, newest (largest tid) first, tids strictly decreasing.
///
/// The order is an invariant kept by every method (construction validates it), because the
/// algorithms rely on it: the visible version is the *first* visible one, the conflict check
/// looks only at the head, and garbage collection is a truncation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    versions: Vec<Version>,
}

impl Record {
    /// An empty record (a row about to be inserted; never stored empty).
    pub fn new() -> Record {
        Record::default()
    }

    /// A record from versions that must already be newest first with distinct tids.
    pub fn from_versions(versions: Vec<Version>) -> Result<Record, RecordError> {
        for pair in versions.windows(2) {
            if pair[0].tid <= pair[1].tid {
                return Err(RecordError::Unordered {
                    previous: pair[0].tid,
                    tid: pair[1].tid,
                });
            }
        }
        Ok(Record { versions })
    }

    /// The versions, newest first.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// Takes the versions out, newest first.
    pub fn into_versions(self) -> Vec<Version> {
        self.versions
    }

    /// Number of versions kept.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether no version is left: the key should be deleted from the store, not written.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// The newest version, whether or not anybody can see it yet.
    pub fn newest(&self) -> Option<&Version> {
        self.versions.first()
    }

    /// The newest version's tid: what conflict detection compares against a snapshot.
    pub fn newest_tid(&self) -> Option<u64> {
        self.newest().map(|v| v.tid)
    }

    /// The version a snapshot reads: the one with the largest tid that `is_visible` accepts
    /// (DESIGN.md, "Reading"). `None` means no version is visible, i.e. the row does not exist
    /// for this snapshot — as it does not when the returned version is a tombstone.
    ///
    /// `is_visible` is the snapshot's membership test (`v ≤ b || v ∈ N`); a closure keeps this
    /// crate independent of the snapshot descriptor's representation.
    pub fn visible(&self, is_visible: impl Fn(u64) -> bool) -> Option<&Version> {
        self.versions.iter().find(|v| is_visible(v.tid))
    }

    /// The row a snapshot reads, or `None` if it sees no version or a tombstone.
    pub fn visible_row(&self, is_visible: impl Fn(u64) -> bool) -> Option<&Bytes> {
        self.visible(is_visible).and_then(|v| v.row.as_ref())
    }

    /// Whether a transaction with tid `writer` and snapshot `is_visible` must abort instead of
    /// writing this record: the newest version is not in its snapshot (a concurrent
    /// transaction committed it, or is about to: first committer wins), or it is not older than
    /// `writer` (with several commit managers, a tid leased by another manager can be larger
    /// and already committed; writing below it would hide the new version from readers who
    /// see both). This check costs no round trip: it is made on the record that was read.
    pub fn write_conflict(&self, writer: u64, is_visible: impl Fn(u64) -> bool) -> bool {
        self.newest_tid()
            .is_some_and(|newest| newest >= writer || !is_visible(newest))
    }

    /// Adds `version` as the newest one. Fails if its tid is not above every tid present,
    /// which would break the order readers depend on (see [`Record::write_conflict`]).
    pub fn push(&mut self, version: Version) -> Result<(), RecordError> {
        if let Some(newest) = self.newest_tid()
            && version.tid <= newest
        {
            return Err(RecordError::NotNewest {
                tid: version.tid,
                newest,
            });
        }
        self.versions.insert(0, version);
        Ok(())
    }

    /// The write of try-commit: eager garbage collection for `lav`, then the new version on
    /// top (DESIGN.md, "Eager GC on write"). Returns how many old versions were dropped.
    ///
    /// Nothing changes when the push fails.
    pub fn write(&mut self, version: Version, lav: u64) -> Result<usize, RecordError> {
        if let Some(newest) = self.newest_tid()
            && version.tid <= newest
        {
            return Err(RecordError::NotNewest {
                tid: version.tid,
                newest,
            });
        }
        let dropped = self.gc(lav);
        self.push(version)?;
        Ok(dropped)
    }

    /// Removes the version written by `tid`, if present: how an abort undoes an applied write
    /// and how recovery reverts a dead node's unfinished transactions. Returns it, so that
    /// running the undo twice is visibly harmless (the second call returns `None`).
    pub fn remove(&mut self, tid: u64) -> Option<Version> {
        let at = self.versions.iter().position(|v| v.tid == tid)?;
        Some(self.versions.remove(at))
    }

    /// Eager garbage collection: of the versions with tid ≤ `lav` (all visible to every running
    /// and future snapshot), keep only the largest, which is what the oldest snapshots read;
    /// every version above `lav` stays. Returns how many versions were dropped.
    ///
    /// One refinement over the rule as stated in DESIGN.md: if that largest version is a
    /// tombstone, it goes too — a snapshot that finds no visible version reads "no row",
    /// exactly what the tombstone told it, so no reader can tell the difference. A record left
    /// empty by this should be deleted from the store (conditionally on its stamp).
    pub fn gc(&mut self, lav: u64) -> usize {
        let before = self.versions.len();
        if let Some(at) = self.versions.iter().position(|v| v.tid <= lav) {
            let keep = if self.versions[at].is_tombstone() {
                at
            } else {
                at + 1
            };
            self.versions.truncate(keep);
        }
        before - self.versions.len()
    }

    /// Whether the whole record is garbage for `lav`: its newest version is a tombstone that
    /// every running and future snapshot sees (or it has no version). The lazy sweep deletes
    /// such records, so that deleted rows do not occupy the store forever.
    pub fn is_garbage(&self, lav: u64) -> bool {
        self.newest()
            .is_none_or(|v| v.is_tombstone() && v.tid <= lav)
    }

    /// Whether `gc(lav)` would drop anything, so a sweep can skip writes that change nothing.
    pub fn has_garbage(&self, lav: u64) -> bool {
        match self.versions.iter().position(|v| v.tid <= lav) {
            Some(at) => at + 1 < self.versions.len() || self.versions[at].is_tombstone(),
            None => false,
        }
    }

    /// Size of [`Record::encode`]'s output, to size buffers exactly.
    pub fn encoded_len(&self) -> usize {
        let mut len = 1 + varint_len(self.versions.len() as u64);
        let mut previous = None;
        for v in &self.versions {
            len += varint_len(previous.map_or(v.tid, |p: u64| p - v.tid));
            len += match &v.row {
                Some(row) => varint_len(row.len() as u64 + 1) + row.len(),
                None => 1,
            };
            previous = Some(v.tid);
        }
        len
    }

    /// Encodes the record as the value to store under its row key.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut buf);
        buf
    }

    /// Appends the record's encoding to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.push(FORMAT_V1);
        put_u64(buf, self.versions.len() as u64);
        let mut previous = None;
        for v in &self.versions {
            // The invariant makes `p - v.tid` at least 1 and never underflow.
            put_u64(buf, previous.map_or(v.tid, |p: u64| p - v.tid));
            match &v.row {
                Some(row) => {
                    put_u64(buf, row.len() as u64 + 1);
                    buf.extend_from_slice(row);
                }
                None => put_u64(buf, 0),
            }
            previous = Some(v.tid);
        }
    }

    /// Decodes a stored value. The versions' rows are slices of `value` (no copy).
    pub fn decode(value: &Bytes) -> Result<Record, DecodeError> {
        let mut cur = Cursor::new(value, WHAT);
        let format = cur.byte()?;
        if format != FORMAT_V1 {
            return Err(cur.unknown_tag(format, 0));
        }
        let count = get_u64(&mut cur)?;
        // Every version takes at least two bytes.
        if count > cur.rest().len() as u64 / 2 {
            return Err(cur.invalid(0, "version count exceeds the record's length"));
        }
        let mut versions = Vec::with_capacity(count as usize);
        let mut previous: Option<u64> = None;
        for _ in 0..count {
            let at = cur.pos();
            let delta = get_u64(&mut cur)?;
            let tid = match previous {
                None => delta,
                Some(p) => match p.checked_sub(delta) {
                    Some(tid) if delta > 0 => tid,
                    _ => return Err(cur.invalid(at, "versions are not strictly newest first")),
                },
            };
            let body = get_u64(&mut cur)?;
            let row = match body {
                0 => None,
                len_plus_one => {
                    let len = usize::try_from(len_plus_one - 1).map_err(|_| cur.truncated())?;
                    let start = cur.pos();
                    cur.take(len)?;
                    Some(value.slice(start..start + len))
                }
            };
            versions.push(Version { tid, row });
            previous = Some(tid);
        }
        cur.finish()?;
        Ok(Record { versions })
    }
}

fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
}

#[cfg(test)]
mod tests;
