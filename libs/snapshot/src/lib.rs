//! Snapshot descriptors: which versions a shmdb transaction may see.
//!
//! Every transaction gets a *snapshot descriptor* from a commit manager when it starts
//! (see DESIGN.md, "Commit manager"): a base `b` — every tid ≤ b has finished — and the set
//! `N` of committed tids above `b`, kept as a bitset (bit i ↔ tid b+1+i). A version tagged
//! with tid `v` is visible iff `v ≤ b` or `v ∈ N`; a reader takes the newest visible version
//! of a record. The type lives in its own small crate because both sides use it: commit
//! managers build and encode descriptors, processing nodes decode them and ask
//! [`Snapshot::is_visible`] / [`Snapshot::newest_visible`] on every record they read.
//!
//! The encoding ([`Snapshot::encode`]) is what travels in every `start` answer and what a
//! commit manager publishes to the store, so it is compact: a format byte, the base and the
//! bitset length as varints, then the bitset bytes with trailing zero bytes trimmed —
//! 100,000 committed tids above the base take about 12.5 KB.

mod encoding;
mod snapshot;

pub use encoding::DecodeError;
pub use snapshot::Snapshot;
