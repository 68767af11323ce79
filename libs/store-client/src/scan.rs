//! Ordered scans of one table across ranges and nodes, following the nodes' continuations.

use std::ops::Bound;

use bytes::Bytes;
use shmdb_proto::storage as pb;
use tokio::time::Instant;

use crate::client::StoreClient;
use crate::error::StoreError;
use crate::transport::TransportError;

/// A key interval within one table: `start` inclusive, `end` exclusive (`None` = to the end
/// of the table). Kept in this normalised form because it is what the wire contract speaks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRange {
    /// First key included.
    pub start: Bytes,
    /// First key excluded; `None` scans to the end of the table.
    pub end: Option<Bytes>,
}

impl KeyRange {
    /// The whole table.
    pub fn all() -> KeyRange {
        KeyRange::default()
    }

    /// `[start, end)`.
    pub fn between(start: impl Into<Bytes>, end: impl Into<Bytes>) -> KeyRange {
        KeyRange {
            start: start.into(),
            end: Some(end.into()),
        }
    }

    /// `[start, end of table)`.
    pub fn from_start(start: impl Into<Bytes>) -> KeyRange {
        KeyRange {
            start: start.into(),
            end: None,
        }
    }

    /// Every key that begins with `prefix` (an index lookup, a primary-key prefix).
    pub fn prefix(prefix: impl Into<Bytes>) -> KeyRange {
        let start: Bytes = prefix.into();
        let mut end = start.to_vec();
        // The smallest key above every key with this prefix: drop trailing 0xff bytes and
        // increment the last remaining one; all-0xff (or empty) prefixes run to the table end.
        while end.last() == Some(&0xff) {
            end.pop();
        }
        let end = end
            .last_mut()
            .map(|last| *last += 1)
            .map(|()| Bytes::from(end));
        KeyRange { start, end }
    }

    /// From arbitrary bounds, for callers (SQL plans) that think in inclusive/exclusive ends.
    /// An excluded start or an included end becomes the key's immediate successor (`key\0`).
    pub fn from_bounds(start: Bound<&[u8]>, end: Bound<&[u8]>) -> KeyRange {
        let successor = |key: &[u8]| {
            let mut next = Vec::with_capacity(key.len() + 1);
            next.extend_from_slice(key);
            next.push(0);
            Bytes::from(next)
        };
        let start = match start {
            Bound::Included(key) => Bytes::copy_from_slice(key),
            Bound::Excluded(key) => successor(key),
            Bound::Unbounded => Bytes::new(),
        };
        let end = match end {
            Bound::Included(key) => Some(successor(key)),
            Bound::Excluded(key) => Some(Bytes::copy_from_slice(key)),
            Bound::Unbounded => None,
        };
        KeyRange { start, end }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_ref() && self.end.as_ref().is_none_or(|end| key < end.as_ref())
    }

    /// Whether no key can lie in the range.
    pub fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| *end <= self.start)
    }

    /// Rejects an inverted range before anything is sent.
    fn validate(&self) -> Result<(), StoreError> {
        match &self.end {
            Some(end) if *end < self.start => Err(StoreError::InvalidArgument(format!(
                "scan range is inverted: start {:?} > end {:?}",
                self.start, end
            ))),
            _ => Ok(()),
        }
    }
}

/// One record returned by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Key within the table.
    pub key: Bytes,
    /// Stored value.
    pub value: Bytes,
    /// The key's stamp, usable with `put_if` like one from `get`.
    pub stamp: u64,
}

/// One node's answer to a scan: items in key order and where to continue.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanPage {
    /// Items in key order (possibly none, when a range boundary came first).
    pub items: Vec<Item>,
    /// Where the scan continues (inclusive), `None` when the range is exhausted. Pass it as
    /// the `start` of the next page with the same `end`.
    pub resume: Option<Bytes>,
}

impl StoreClient {
    /// Returns up to `limit` items of `table` within `range`, in key order, following the
    /// nodes' continuations across ranges. Each page gets the full deadline, so a long scan
    /// that keeps making progress is not cut off. Items are read range by range, without a
    /// snapshot: a concurrent write may or may not be seen.
    pub async fn scan(
        &self,
        table: u64,
        range: KeyRange,
        limit: usize,
    ) -> Result<Vec<Item>, StoreError> {
        range.validate()?;
        let mut items = Vec::new();
        let mut range = range;
        while items.len() < limit && !range.is_empty() {
            let page = self.scan_page(table, &range, limit - items.len()).await?;
            items.extend(page.items);
            match page.resume {
                Some(resume) => range.start = resume,
                None => break,
            }
        }
        Ok(items)
    }

    /// One step of a scan (one node's answer, retried until the deadline), for callers that
    /// stream results instead of collecting them.
    pub async fn scan_page(
        &self,
        table: u64,
        range: &KeyRange,
        limit: usize,
    ) -> Result<ScanPage, StoreError> {
        self.scan_page_matching(table, range, limit, None).await
    }

    /// [`StoreClient::scan_page`] with a pre-filter the node applies before it answers, so
    /// that records the reader would discard never cross the network. A page may then come
    /// back short, or empty with a continuation, before the interval is exhausted.
    pub async fn scan_page_matching(
        &self,
        table: u64,
        range: &KeyRange,
        limit: usize,
        filter: Option<&pb::RowFilter>,
    ) -> Result<ScanPage, StoreError> {
        range.validate()?;
        if limit == 0 {
            return Err(StoreError::InvalidArgument(
                "scan limit must be positive".into(),
            ));
        }
        if range.is_empty() {
            return Ok(ScanPage::default());
        }
        let deadline = Instant::now() + self.config().deadline;
        self.ensure_map(deadline).await?;
        let mut backoff = self.backoff();
        let mut last_error = String::new();
        let mut first = true;
        loop {
            if !first && Instant::now() >= deadline {
                return Err(StoreError::DeadlineExceeded { last_error });
            }
            first = false;
            let map = self.map();
            let Some(addr) = Self::route(&map, table, &range.start) else {
                return Err(StoreError::NoMap);
            };
            let page_limit = limit.min(self.config().scan_page_limit.max(1) as usize);
            let req = pb::ScanRequest {
                map_version: map.version,
                table,
                start: range.start.clone(),
                end: range.end.clone().unwrap_or_default(),
                to_table_end: range.end.is_none(),
                limit: u32::try_from(page_limit).unwrap_or(u32::MAX),
                filter: filter.cloned(),
            };
            let budget = self.attempt_budget(deadline);
            let answer = match tokio::time::timeout(budget, self.transport().scan(addr, req)).await
            {
                Ok(answer) => answer,
                Err(_) => Err(TransportError::Timeout(format!(
                    "{addr}: no answer within {budget:?}"
                ))),
            };
            let wanted = match answer {
                Ok(resp) => match resp.error {
                    None => return page(resp, range, page_limit),
                    Some(err) => {
                        let version = err.map_version;
                        match scan_error(table, err) {
                            Ok(retry) => {
                                last_error = retry;
                                version
                            }
                            Err(e) => return Err(e),
                        }
                    }
                },
                Err(e) if e.is_retryable() => {
                    last_error = e.to_string();
                    0
                }
                Err(e) => return Err(StoreError::Transport(e)),
            };
            tracing::debug!(table, addr, %last_error, "retrying scan");
            self.recover(map.version, wanted, deadline, &mut backoff)
                .await;
        }
    }
}

/// Classifies a node's scan error: `Ok(description)` when worth retrying, else the final
/// error.
fn scan_error(table: u64, err: pb::OpError) -> Result<String, StoreError> {
    use pb::ErrorCode as C;
    match C::try_from(err.code) {
        Ok(C::WrongOwner) => Ok(format!(
            "wrong owner (node map v{}): {}",
            err.map_version, err.message
        )),
        Ok(C::Unavailable) => Ok(format!(
            "unavailable (node map v{}): {}",
            err.map_version, err.message
        )),
        Ok(C::UnknownTable) => Err(StoreError::UnknownTable(table)),
        Ok(C::InvalidArgument) => Err(StoreError::InvalidArgument(err.message)),
        Ok(C::ResourceExhausted) => Err(StoreError::ResourceExhausted(err.message)),
        Ok(C::NotACounter | C::Unspecified) | Err(_) => Err(StoreError::Protocol(format!(
            "unexpected scan error {}: {}",
            err.code, err.message
        ))),
    }
}

/// Checks a node's scan answer against what was asked (order, bounds, limit, progress), so a
/// faulty answer can never make a scan loop forever or return keys out of range.
fn page(resp: pb::ScanResponse, range: &KeyRange, limit: usize) -> Result<ScanPage, StoreError> {
    let mut items: Vec<Item> = Vec::with_capacity(resp.items.len().min(limit));
    let mut resume = resp.resume_key;
    for kv in resp.items {
        if !range.contains(&kv.key) || items.last().is_some_and(|prev| prev.key >= kv.key) {
            return Err(StoreError::Protocol(format!(
                "scan item {:?} out of order or outside the requested range",
                kv.key
            )));
        }
        if items.len() == limit {
            // More than asked for: continue from the first item not taken.
            resume = Some(kv.key);
            break;
        }
        items.push(Item {
            key: kv.key,
            value: kv.value,
            stamp: kv.stamp,
        });
    }
    if let Some(key) = &resume {
        let floor = items.last().map_or(&range.start, |item| &item.key);
        if key <= floor {
            return Err(StoreError::Protocol(format!(
                "scan continuation {key:?} does not advance past {floor:?}"
            )));
        }
        if range.end.as_ref().is_some_and(|end| key >= end) {
            resume = None;
        }
    }
    Ok(ScanPage { items, resume })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_cover_exactly_the_prefix() {
        let r = KeyRange::prefix(&b"ab"[..]);
        assert_eq!(r.end.as_deref(), Some(&b"ac"[..]));
        assert!(r.contains(b"ab\xff\xff") && !r.contains(b"ac"));
        let r = KeyRange::prefix(&b"a\xff"[..]);
        assert_eq!(r.end.as_deref(), Some(&b"b"[..]));
        assert_eq!(KeyRange::prefix(&b"\xff"[..]).end, None);
    }

    #[test]
    fn bounds_become_inclusive_start_and_exclusive_end() {
        let r = KeyRange::from_bounds(Bound::Excluded(b"a"), Bound::Included(b"c"));
        assert!(!r.contains(b"a") && r.contains(b"a\0") && r.contains(b"c") && !r.contains(b"c\0"));
    }

    #[test]
    fn a_continuation_that_does_not_advance_is_rejected() {
        let resp = pb::ScanResponse {
            items: vec![],
            resume_key: Some(Bytes::from_static(b"a")),
            error: None,
            map_version: 1,
        };
        let range = KeyRange::from_start(&b"a"[..]);
        assert!(matches!(
            page(resp, &range, 10),
            Err(StoreError::Protocol(_))
        ));
    }
}
