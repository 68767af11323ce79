//! Typed operations and outcomes, and their translation to and from the wire contract.
//!
//! Callers never see the protobuf oneofs: an [`Op`] says what to do, an [`OpOutcome`] what
//! happened, with a failed expectation as a value ([`CondOutcome::Conflict`]) rather than an
//! error, because a conflict is the normal way optimistic transactions learn they lost.

use bytes::Bytes;
use shmdb_proto::storage as pb;
use shmdb_proto::storage::op_result::Result as PbResult;

use crate::error::StoreError;

/// What a conditional operation expects to find at the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expect {
    /// The key carries exactly this stamp (the one a previous `get` returned): the
    /// store-conditional half of load-link/store-conditional.
    Stamp(u64),
    /// The key does not exist (an insert).
    Absent,
}

impl Expect {
    fn to_proto(self) -> pb::Expect {
        let kind = match self {
            Expect::Stamp(stamp) => pb::expect::Kind::Stamp(stamp),
            Expect::Absent => pb::expect::Kind::Absent(true),
        };
        pb::Expect { kind: Some(kind) }
    }
}

/// A value together with the stamp it was written with, so it can be updated conditionally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The stored bytes.
    pub value: Bytes,
    /// Changes on every write of the key and is never reused; pass it to
    /// [`Expect::Stamp`].
    pub stamp: u64,
}

/// How a conditional operation (`put_if`, `delete_if`, `check`) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondOutcome {
    /// The expectation held and the write was applied with this stamp (`put_if`,
    /// `delete_if`; for a delete, the stamp of the deletion).
    Written {
        /// The key's new stamp.
        stamp: u64,
    },
    /// The expectation held (`check` only: nothing was written, so there is no new stamp).
    Checked,
    /// The expectation did not hold; nothing was written.
    Conflict {
        /// The key's current stamp, `None` when the key is absent.
        current: Option<u64>,
    },
}

impl CondOutcome {
    /// Whether the expectation held (the write was applied, or the check passed).
    pub fn succeeded(&self) -> bool {
        !matches!(self, CondOutcome::Conflict { .. })
    }
}

/// One operation of a batch. Operations in a batch are independent: each succeeds or fails
/// on its own, as in RAMCloud multi-ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Reads the value and stamp of a key.
    Get {
        /// Table id.
        table: u64,
        /// Key within the table.
        key: Bytes,
    },
    /// Writes a value if the key matches `expect`.
    PutIf {
        /// Table id.
        table: u64,
        /// Key within the table.
        key: Bytes,
        /// New value.
        value: Bytes,
        /// What must be at the key for the write to happen.
        expect: Expect,
    },
    /// Deletes a key if it matches `expect`.
    DeleteIf {
        /// Table id.
        table: u64,
        /// Key within the table.
        key: Bytes,
        /// What must be at the key for the delete to happen.
        expect: Expect,
    },
    /// Writes a value unconditionally.
    Put {
        /// Table id.
        table: u64,
        /// Key within the table.
        key: Bytes,
        /// New value.
        value: Bytes,
    },
    /// Deletes a key unconditionally.
    Delete {
        /// Table id.
        table: u64,
        /// Key within the table.
        key: Bytes,
    },
    /// Adds `delta` to an 8-byte little-endian counter (absent counts as 0).
    Increment {
        /// Table id.
        table: u64,
        /// Key within the table.
        key: Bytes,
        /// Amount to add (may be negative).
        delta: i64,
    },
    /// Compares the key with `expect` without writing (validates a read).
    Check {
        /// Table id.
        table: u64,
        /// Key within the table.
        key: Bytes,
        /// What must be at the key.
        expect: Expect,
    },
}

impl Op {
    /// A read of `key`.
    pub fn get(table: u64, key: impl Into<Bytes>) -> Op {
        Op::Get {
            table,
            key: key.into(),
        }
    }

    /// A conditional write.
    pub fn put_if(
        table: u64,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        expect: Expect,
    ) -> Op {
        Op::PutIf {
            table,
            key: key.into(),
            value: value.into(),
            expect,
        }
    }

    /// A conditional delete.
    pub fn delete_if(table: u64, key: impl Into<Bytes>, expect: Expect) -> Op {
        Op::DeleteIf {
            table,
            key: key.into(),
            expect,
        }
    }

    /// An unconditional write.
    pub fn put(table: u64, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Op {
        Op::Put {
            table,
            key: key.into(),
            value: value.into(),
        }
    }

    /// An unconditional delete.
    pub fn delete(table: u64, key: impl Into<Bytes>) -> Op {
        Op::Delete {
            table,
            key: key.into(),
        }
    }

    /// An atomic counter update.
    pub fn increment(table: u64, key: impl Into<Bytes>, delta: i64) -> Op {
        Op::Increment {
            table,
            key: key.into(),
            delta,
        }
    }

    /// A compare without a write.
    pub fn check(table: u64, key: impl Into<Bytes>, expect: Expect) -> Op {
        Op::Check {
            table,
            key: key.into(),
            expect,
        }
    }

    /// The table the operation addresses.
    pub fn table(&self) -> u64 {
        match self {
            Op::Get { table, .. }
            | Op::PutIf { table, .. }
            | Op::DeleteIf { table, .. }
            | Op::Put { table, .. }
            | Op::Delete { table, .. }
            | Op::Increment { table, .. }
            | Op::Check { table, .. } => *table,
        }
    }

    /// Bytes of value the operation carries (for sizing requests).
    pub fn value_len(&self) -> usize {
        match self {
            Op::PutIf { value, .. } | Op::Put { value, .. } => value.len(),
            _ => 0,
        }
    }

    /// The key the operation addresses within its table.
    pub fn key(&self) -> &Bytes {
        match self {
            Op::Get { key, .. }
            | Op::PutIf { key, .. }
            | Op::DeleteIf { key, .. }
            | Op::Put { key, .. }
            | Op::Delete { key, .. }
            | Op::Increment { key, .. }
            | Op::Check { key, .. } => key,
        }
    }

    /// Whether the operation changes data; decides how a possibly-applied failure is treated.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. } | Op::Check { .. })
    }

    pub(crate) fn to_proto(&self) -> pb::Op {
        use pb::op::Op as P;
        let op = match self.clone() {
            Op::Get { table, key } => P::Get(pb::GetOp { table, key }),
            Op::PutIf {
                table,
                key,
                value,
                expect,
            } => P::PutIf(pb::PutIfOp {
                table,
                key,
                value,
                expect: Some(expect.to_proto()),
            }),
            Op::DeleteIf { table, key, expect } => P::DeleteIf(pb::DeleteIfOp {
                table,
                key,
                expect: Some(expect.to_proto()),
            }),
            Op::Put { table, key, value } => P::Put(pb::PutOp { table, key, value }),
            Op::Delete { table, key } => P::Delete(pb::DeleteOp { table, key }),
            Op::Increment { table, key, delta } => {
                P::Increment(pb::IncrementOp { table, key, delta })
            }
            Op::Check { table, key, expect } => P::Check(pb::CheckOp {
                table,
                key,
                expect: Some(expect.to_proto()),
            }),
        };
        pb::Op { op: Some(op) }
    }

    /// Interprets the node's answer to this operation.
    pub(crate) fn interpret(&self, result: pb::OpResult) -> Answer {
        let Some(result) = result.result else {
            return Answer::Done(OpOutcome::Failed(StoreError::Protocol(
                "empty result".into(),
            )));
        };
        let outcome = match (self, result) {
            (_, PbResult::Error(err)) => return self.interpret_error(err),
            (Op::Get { .. }, PbResult::Found(found)) => OpOutcome::Value(Some(Versioned {
                value: found.value,
                stamp: found.stamp,
            })),
            (Op::Get { .. }, PbResult::Absent(_)) => OpOutcome::Value(None),
            (Op::PutIf { .. } | Op::DeleteIf { .. }, PbResult::Written(w)) => {
                OpOutcome::Cond(CondOutcome::Written { stamp: w.stamp })
            }
            (Op::Check { .. }, PbResult::Checked(_)) => OpOutcome::Cond(CondOutcome::Checked),
            (Op::PutIf { .. } | Op::DeleteIf { .. } | Op::Check { .. }, PbResult::Conflict(c)) => {
                OpOutcome::Cond(CondOutcome::Conflict {
                    current: (c.stamp != 0).then_some(c.stamp),
                })
            }
            (Op::Put { .. } | Op::Delete { .. }, PbResult::Written(w)) => {
                OpOutcome::Written { stamp: w.stamp }
            }
            (Op::Increment { .. }, PbResult::Counter(c)) => OpOutcome::Counter {
                value: c.value,
                stamp: c.stamp,
            },
            (op, other) => OpOutcome::Failed(StoreError::Protocol(format!(
                "unexpected result {other:?} for {op:?}"
            ))),
        };
        Answer::Done(outcome)
    }

    fn interpret_error(&self, err: pb::OpError) -> Answer {
        use pb::ErrorCode as C;
        let failed = |e| Answer::Done(OpOutcome::Failed(e));
        match C::try_from(err.code) {
            Ok(C::WrongOwner) => Answer::Retry(Retry::WrongOwner {
                node_version: err.map_version,
                message: err.message,
            }),
            Ok(C::Unavailable) => Answer::Retry(Retry::Unavailable {
                node_version: err.map_version,
                message: err.message,
            }),
            Ok(C::UnknownTable) => failed(StoreError::UnknownTable(self.table())),
            Ok(C::InvalidArgument) => failed(StoreError::InvalidArgument(err.message)),
            Ok(C::ResourceExhausted) => failed(StoreError::ResourceExhausted(err.message)),
            Ok(C::NotACounter) => failed(StoreError::NotACounter),
            Ok(C::Unspecified) | Err(_) => failed(StoreError::Protocol(format!(
                "unknown error code {}: {}",
                err.code, err.message
            ))),
        }
    }
}

/// What happened to one operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutcome {
    /// A `get`: the value and its stamp, or `None` when the key is absent.
    Value(Option<Versioned>),
    /// A `put_if`, `delete_if` or `check`.
    Cond(CondOutcome),
    /// A `put` or `delete`, with the stamp the write got.
    Written {
        /// The key's new stamp.
        stamp: u64,
    },
    /// An `increment`: the counter's new value and stamp.
    Counter {
        /// The value after adding the delta.
        value: i64,
        /// The key's new stamp.
        stamp: u64,
    },
    /// The operation failed for good (see [`StoreError`] for what each error promises).
    Failed(StoreError),
}

impl OpOutcome {
    /// The result of a `get`.
    pub fn into_value(self) -> Result<Option<Versioned>, StoreError> {
        match self {
            OpOutcome::Value(v) => Ok(v),
            other => Err(other.mismatch("a value")),
        }
    }

    /// The result of a `put_if`, `delete_if` or `check`.
    pub fn into_cond(self) -> Result<CondOutcome, StoreError> {
        match self {
            OpOutcome::Cond(c) => Ok(c),
            other => Err(other.mismatch("a conditional outcome")),
        }
    }

    /// The stamp of a `put` or `delete`.
    pub fn into_written(self) -> Result<u64, StoreError> {
        match self {
            OpOutcome::Written { stamp } => Ok(stamp),
            other => Err(other.mismatch("a write")),
        }
    }

    /// The new value and stamp of an `increment`.
    pub fn into_counter(self) -> Result<(i64, u64), StoreError> {
        match self {
            OpOutcome::Counter { value, stamp } => Ok((value, stamp)),
            other => Err(other.mismatch("a counter")),
        }
    }

    fn mismatch(self, wanted: &str) -> StoreError {
        match self {
            OpOutcome::Failed(e) => e,
            other => StoreError::Protocol(format!("expected {wanted}, got {other:?}")),
        }
    }
}

/// The client-side reading of one attempt at one operation.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The node settled the operation (success, conflict or a final error).
    Done(OpOutcome),
    /// A transient failure; whether a retry is safe depends on the operation.
    Retry(Retry),
}

/// Why an attempt must be retried.
#[derive(Debug, Clone)]
pub(crate) enum Retry {
    /// The node is not the range's primary: definitely not applied.
    WrongOwner { node_version: u64, message: String },
    /// Replication failed or the range is fenced/moving: a write may have been applied.
    Unavailable { node_version: u64, message: String },
    /// No answer from the node.
    Transport(crate::transport::TransportError),
    /// Our map cannot route the key (no map yet).
    NoRoute,
}

impl Retry {
    /// Whether the failed attempt may have been applied by the node.
    pub(crate) fn may_have_been_applied(&self) -> bool {
        match self {
            Retry::Unavailable { .. } => true,
            Retry::Transport(e) => e.may_have_been_applied(),
            Retry::WrongOwner { .. } | Retry::NoRoute => false,
        }
    }

    /// The newest map version the node told us about (0 when unknown).
    pub(crate) fn node_version(&self) -> u64 {
        match self {
            Retry::WrongOwner { node_version, .. } | Retry::Unavailable { node_version, .. } => {
                *node_version
            }
            Retry::Transport(_) | Retry::NoRoute => 0,
        }
    }
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retry::WrongOwner {
                node_version,
                message,
            } => write!(f, "wrong owner (node map v{node_version}): {message}"),
            Retry::Unavailable {
                node_version,
                message,
            } => write!(f, "unavailable (node map v{node_version}): {message}"),
            Retry::Transport(e) => write!(f, "{e}"),
            Retry::NoRoute => write!(f, "no partition map routes the key"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(r: PbResult) -> pb::OpResult {
        pb::OpResult { result: Some(r) }
    }

    #[test]
    fn conflict_on_absent_key_has_no_current_stamp() {
        let op = Op::put_if(1, "k", "v", Expect::Absent);
        let answer = op.interpret(result(PbResult::Conflict(pb::Conflict { stamp: 0 })));
        assert!(matches!(
            answer,
            Answer::Done(OpOutcome::Cond(CondOutcome::Conflict { current: None }))
        ));
        let answer = op.interpret(result(PbResult::Conflict(pb::Conflict { stamp: 9 })));
        assert!(matches!(
            answer,
            Answer::Done(OpOutcome::Cond(CondOutcome::Conflict { current: Some(9) }))
        ));
    }

    #[test]
    fn a_result_of_the_wrong_kind_is_a_protocol_error() {
        let op = Op::get(1, "k");
        let answer = op.interpret(result(PbResult::Written(pb::Written { stamp: 1 })));
        assert!(matches!(
            answer,
            Answer::Done(OpOutcome::Failed(StoreError::Protocol(_)))
        ));
    }

    #[test]
    fn error_codes_map_to_final_errors_or_retries() {
        let op = Op::increment(7, "c", 1);
        let err = |code: pb::ErrorCode| {
            op.interpret(result(PbResult::Error(pb::OpError {
                code: code as i32,
                message: "m".into(),
                map_version: 3,
            })))
        };
        assert!(matches!(
            err(pb::ErrorCode::UnknownTable),
            Answer::Done(OpOutcome::Failed(StoreError::UnknownTable(7)))
        ));
        assert!(matches!(
            err(pb::ErrorCode::NotACounter),
            Answer::Done(OpOutcome::Failed(StoreError::NotACounter))
        ));
        assert!(matches!(
            err(pb::ErrorCode::WrongOwner),
            Answer::Retry(Retry::WrongOwner {
                node_version: 3,
                ..
            })
        ));
        match err(pb::ErrorCode::Unavailable) {
            Answer::Retry(r) => assert!(r.may_have_been_applied()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
