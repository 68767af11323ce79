//! The transaction log: one entry per writing transaction, keyed by (processing node, tid).
//!
//! The entry holds the write set (every storage key the transaction will change) and is
//! written before any of those keys is, so that recovery of a dead node knows exactly what
//! to revert; later it carries the commit or abort flag.

use bytes::{Buf, BufMut, Bytes};

use crate::error::DecodeError;

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
    /// The write set: (storage table, key) of every record the transaction writes.
    pub keys: Vec<(u64, Bytes)>,
}

const FORMAT: u8 = 1;

impl LogEntry {
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
        if format != FORMAT {
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
        })
    }
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
        };
        let bytes = Bytes::from(entry.encode());
        assert_eq!(LogEntry::decode(&bytes).ok(), Some(entry));
        assert!(LogEntry::decode(&bytes.slice(..bytes.len() - 1)).is_err());
        assert!(LogEntry::decode(&Bytes::from_static(b"\x09")).is_err());
    }
}
