//! The SQL layer: parsing (PostgreSQL dialect), the catalog, planning and executing
//! statements over the transaction core, with PostgreSQL's error codes.
//!
//! The wire protocol (`crate::pg`) drives a [`Session`] per connection; the session knows
//! nothing about sockets, and the protocol code knows nothing about plans. The types here are
//! the contract between the two.
//!
//! A statement goes: [`parse`] (sqlparser) → binding and planning ([`bind`], [`select`],
//! [`access`], [`dml`]) → execution ([`exec`]) inside the session's transaction
//! ([`session`], [`run`]); DDL ([`ddl`]) writes the [`catalog`], which lives in the store
//! under the same transactions.

pub mod access;
pub mod apply;
pub mod bind;
pub mod catalog;
pub mod copy;
pub mod ddl;
pub mod decorrelate;
pub mod dml;
pub mod error;
pub mod exec;
pub mod expr;
pub mod func;
pub mod parse;
pub mod pg_catalog;
pub mod plan;
pub(crate) mod plan_cache;
pub mod prefetch;
pub mod pushdown;
pub mod rebase;
pub mod run;
pub mod select;
pub mod session;
pub mod settings;
pub mod sqltype;
pub mod types;
pub mod value;

pub use error::SqlError;
pub use session::{Prepared, QueryOutput, Session, SqlEngine, TxStatus};
pub use types::{Column, PgType};

use crate::txn::TxnError;

/// Maps a transaction-core error to the SQLSTATE a client expects.
pub fn txn_error(e: TxnError) -> SqlError {
    match e {
        TxnError::SerializationFailure => SqlError::new(
            "40001",
            "could not serialize access due to concurrent update",
        ),
        TxnError::UniqueViolation { constraint } => SqlError::new(
            "23505",
            format!("duplicate key value violates unique constraint \"{constraint}\""),
        ),
        TxnError::NotFound => SqlError::new("02000", "row not found"),
        TxnError::Recovered => SqlError::new("40001", TxnError::Recovered.to_string()),
        TxnError::Finished(what) => SqlError::new("25P02", format!("transaction is {what}")),
        TxnError::CommitAmbiguous(m) => SqlError::new(
            "08007",
            format!("the outcome of the commit is unknown: {m}"),
        ),
        TxnError::Store(e) => SqlError::new("58000", format!("storage: {e}")),
        TxnError::Commit(m) => SqlError::new("58000", format!("commit manager: {m}")),
        other => SqlError::internal(other.to_string()),
    }
}
