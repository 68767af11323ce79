//! Where a commit manager's state records live in the store, and which of them counts.
//!
//! # Why several records per manager
//! A publish is one conditional write of the manager's state, conditional on the stamp of
//! what it last wrote there — that condition is what fences a stale instance off. With a
//! single record, publish N+1 cannot be sent before publish N returned (it needs N's stamp),
//! so commits wait for whole store round trips in a row. A manager therefore owns
//! `MAX_PUBLISH_SLOTS` record *slots* and writes the configured number of them
//! (`--publish-slots`, K) round-robin, each write conditional on that slot's own previous
//! stamp, with at most one write in flight per slot: up to K publishes overlap.
//!
//! # Why the newest record is enough
//! Every record is complete: it carries the manager's whole state as of the moment it was
//! prepared (its committed set is cumulative, plus the running tids, the floor, the tid
//! blocks). Publishes are numbered in the order they are prepared (`seq`), and a slot is
//! only written when its previous write returned, so within a slot the stored sequence
//! numbers only grow. Hence:
//! - a commit is acknowledged once *some* publish with a sequence number at or above the one
//!   it waited for is durable (that record contains it, and so does every later one);
//! - the newest record in the store by `(incarnation, seq)` contains every acknowledged
//!   commit: it is at least as new as the one that acknowledged it, which stays in its slot
//!   until a newer one replaces it;
//! - restore after a crash and every other manager's merge read all slots and take the
//!   newest ([`record_order`], [`newest_per_manager`]). Whether the write in flight when the
//!   manager died landed or not does not matter: if it landed it is the newest, otherwise
//!   the previous record is, and nothing that record lacks was acknowledged.
//!
//! # Why a stale instance stays fenced off
//! Before a restarted instance serves anything it *claims* every slot
//! `0..MAX_PUBLISH_SLOTS` — not only the K it will use: the old instance may have run with a
//! larger K, and a slot it never wrote would accept its write conditional on "absent". A
//! claim reads the slot and at once writes back what it read, conditional on the stamp it
//! read (an absent slot gets a copy of slot 0's record); if the old instance wrote in
//! between, the write-back fails and the slot is read and claimed again. Stamps are never
//! reused, so once a slot is claimed every later write of the old instance to it fails, and
//! the old instance stops at its first such failure (fenced) without acknowledging anything
//! more; the slots claimed later are read after their last successful write. When every slot
//! is claimed, the written-back records are therefore the final content of every slot, and
//! the newest of them — what the new instance restores — holds every commit the old
//! instance acknowledged. Claims write back the old records, not the new incarnation's
//! state, so that a claim that stops half way (the process dies, the store fails) leaves
//! only the old instance's records: the newest is still its newest, and no record of the new
//! incarnation hides a commit the old one acknowledged in a slot the claim did not reach.
//! The new incarnation's own records follow only after every claim succeeded.

//! # Format compatibility
//! Slot 0 is the key of the single-record format (`manager/<id>`), and the other slots
//! append one byte, so every record still lies under `manager/`. A store written by an
//! older build (one record) is restored from that record, and the new build then claims
//! the other slots. The reverse is not supported: an older build reads slot 0 only and
//! could restore a record older than the newest, so a manager id must not go back to an
//! older build once this one wrote its records.

use bytes::Bytes;
use shmdb_proto::commit::ManagerState;

/// Prefix of every manager's published state in table `COMMIT`.
pub const STATE_PREFIX: &[u8] = b"manager/";

/// Record slots each manager claims at start-up; `--publish-slots` may use up to this many.
/// Fixed (not the configured K) so that an instance always fences off an older one that ran
/// with any K.
pub const MAX_PUBLISH_SLOTS: usize = 4;

/// The key of a manager's slot 0 (the key of the single-record format): prefix +
/// big-endian id, so a prefix scan returns managers in id order.
pub fn state_key(manager_id: u64) -> Bytes {
    let mut key = Vec::with_capacity(STATE_PREFIX.len() + 8);
    key.extend_from_slice(STATE_PREFIX);
    key.extend_from_slice(&manager_id.to_be_bytes());
    Bytes::from(key)
}

/// The key of one of a manager's record slots: slot 0 is [`state_key`], slot `s > 0`
/// appends the byte `s`, so all of a manager's slots sort together after its slot 0.
pub fn slot_key(manager_id: u64, slot: usize) -> Bytes {
    if slot == 0 {
        return state_key(manager_id);
    }
    let mut key = Vec::with_capacity(STATE_PREFIX.len() + 9);
    key.extend_from_slice(STATE_PREFIX);
    key.extend_from_slice(&manager_id.to_be_bytes());
    // Slots are fewer than 256 (MAX_PUBLISH_SLOTS); the cast keeps the key one byte longer.
    key.push(slot as u8);
    Bytes::from(key)
}

/// The order of records of one manager: a later incarnation is newer than anything an
/// earlier one wrote (a restart bumps it and restarts `seq`), then the publish sequence.
pub fn record_order(state: &ManagerState) -> (u64, u64) {
    (state.incarnation, state.seq)
}

/// Keeps the newest record of every manager (records in any order, several per manager),
/// in manager id order: what a merge reads of each peer.
pub fn newest_per_manager(records: Vec<ManagerState>) -> Vec<ManagerState> {
    let mut by_manager: std::collections::BTreeMap<u64, ManagerState> =
        std::collections::BTreeMap::new();
    for state in records {
        match by_manager.get(&state.manager_id) {
            Some(kept) if record_order(kept) >= record_order(&state) => {}
            _ => {
                by_manager.insert(state.manager_id, state);
            }
        }
    }
    by_manager.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(manager_id: u64, incarnation: u64, seq: u64) -> ManagerState {
        ManagerState {
            manager_id,
            incarnation,
            seq,
            ..ManagerState::default()
        }
    }

    #[test]
    fn slot_zero_is_the_single_record_key_and_slots_sort_together() {
        assert_eq!(
            state_key(7),
            Bytes::from(b"manager/\0\0\0\0\0\0\0\x07".to_vec())
        );
        assert_eq!(slot_key(7, 0), state_key(7));
        let keys: Vec<Bytes> = (0..MAX_PUBLISH_SLOTS).map(|s| slot_key(7, s)).collect();
        for pair in keys.windows(2) {
            assert!(pair[0] < pair[1], "slots in order");
        }
        for key in &keys {
            assert!(
                key.starts_with(&state_key(7)),
                "under the manager's own prefix"
            );
            assert!(
                *key < state_key(8) && *key > state_key(6),
                "between the neighbours"
            );
        }
    }

    #[test]
    fn the_newest_record_is_the_highest_sequence_of_the_latest_incarnation() {
        let records = [
            record(1, 3, 9),
            record(1, 4, 2),
            record(1, 4, 1),
            record(1, 3, 12),
        ];
        let newest = records.iter().max_by_key(|s| record_order(s));
        assert_eq!(newest.map(record_order), Some((4, 2)));
    }

    #[test]
    fn a_merge_keeps_one_newest_record_per_manager() {
        let kept = newest_per_manager(vec![
            record(2, 1, 5),
            record(1, 1, 7),
            record(2, 1, 6),
            record(1, 2, 1),
            record(3, 1, 1),
            record(2, 1, 4),
        ]);
        let orders: Vec<(u64, u64, u64)> = kept
            .iter()
            .map(|s| (s.manager_id, s.incarnation, s.seq))
            .collect();
        assert_eq!(orders, vec![(1, 2, 1), (2, 1, 6), (3, 1, 1)]);
    }
}
