//! The transaction core: distributed snapshot isolation over the shared store.
//!
//! Any processing node runs any transaction against shared data (DESIGN.md, "Processing
//! node"). A transaction takes a tid and a snapshot from a commit manager, reads records
//! from the store (every version of a row in one `get`), keeps its writes local, and at
//! commit logs its write set, then writes every changed record with `put_if` on the stamp it
//! read: a failed `put_if` is a write-write conflict, and the transaction undoes what it
//! applied and aborts (first committer wins). One file per step of the life-cycle:
//! [`begin`](engine::Engine::begin), [`read`], [`write`], [`commit`], [`abort`], plus the
//! transaction [`log`], [`recover`]y of a dead node's transactions, garbage collection
//! ([`gc`]), secondary [`index`]es and record [`buffer`]ing.

pub mod abort;
pub mod buffer;
pub mod commit;
pub mod engine;
pub mod error;
pub mod gc;
pub mod index;
pub mod log;
pub mod prune;
pub mod read;
pub mod rebase;
pub mod recover;
pub mod schema;
pub mod transaction;
pub mod write;

pub use buffer::BufferStrategy;
pub use engine::{Engine, EngineConfig, TxnManager};
pub use error::TxnError;
pub use rebase::Rebase;
pub use schema::{IndexDef, TableDef};
pub use transaction::Transaction;
pub use write::Newest;
