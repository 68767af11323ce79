//! Why a manager refused to finish a tid: shared by the manager, which decides, and the
//! client, which turns the wire outcome back into it.

/// Why a commit or abort of one tid was refused. Refusals change no state: a refused
/// request can be inspected and retried (or not) by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The tid was never issued by this manager (another manager issued it, or nobody).
    #[error("tid {0} is not running at this commit manager: it was never issued here")]
    UnknownTid(u64),
    /// The tid was issued here and has finished, but so long ago that whether it committed
    /// is no longer kept (if it committed, its versions are visible through the base).
    #[error("tid {0} finished long ago; its outcome is no longer kept")]
    Finished(u64),
    /// The tid already committed (also the answer to an abort after a commit).
    #[error("tid {0} already committed")]
    AlreadyCommitted(u64),
    /// The tid already aborted, by its node or by recovery after its heartbeats stopped.
    #[error("tid {0} already aborted")]
    AlreadyAborted(u64),
    /// The tid's processing node stopped heartbeating and recovery is reverting its writes;
    /// it ends aborted (or committed, if its log holds a commit flag).
    #[error("tid {0} is being recovered after its processing node stopped heartbeating")]
    Recovering(u64),
    /// The tid appears more than once in one batch.
    #[error("tid {0} appears more than once in the batch")]
    Duplicate(u64),
}

impl Refusal {
    /// The tid the refusal is about.
    pub fn tid(&self) -> u64 {
        match *self {
            Refusal::UnknownTid(t)
            | Refusal::Finished(t)
            | Refusal::AlreadyCommitted(t)
            | Refusal::AlreadyAborted(t)
            | Refusal::Recovering(t)
            | Refusal::Duplicate(t) => t,
        }
    }
}
