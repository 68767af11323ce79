//! Stamps: the never-reused version tags that make conditional writes ABA-safe.
//!
//! A stamp is the range's epoch in the high bits and the range's log sequence number below.
//! Within an epoch the log sequence number grows with every write; every change of primary,
//! replica set or split raises the epoch, and a range's log sequence number continues across
//! epochs. So a key's stamps only grow, and a stamp read before an A→B→A sequence of writes
//! can never match again.

/// Bits of a stamp that hold the log sequence number.
pub const LSN_BITS: u32 = 40;
const LSN_MASK: u64 = (1 << LSN_BITS) - 1;

/// The stamp of the write at `lsn` in `epoch`.
pub fn make(epoch: u64, lsn: u64) -> u64 {
    (epoch << LSN_BITS) | (lsn & LSN_MASK)
}

/// The log sequence number a stamp was written at; used to wait until that write is
/// replicated before exposing it.
pub fn lsn(stamp: u64) -> u64 {
    stamp & LSN_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_grow_with_epoch_and_lsn() {
        assert!(make(1, 5) < make(1, 6));
        assert!(make(1, 1_000_000) < make(2, 1));
        assert_eq!(lsn(make(7, 12345)), 12345);
    }
}
