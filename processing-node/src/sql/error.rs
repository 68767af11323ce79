//! SQL errors, each with its PostgreSQL SQLSTATE.

/// A statement's failure as the client sees it: SQLSTATE, message, optional detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    /// The five-character SQLSTATE (e.g. "42P01").
    pub code: &'static str,
    /// The primary message.
    pub message: String,
    /// Optional detail line.
    pub detail: Option<String>,
}

impl SqlError {
    /// An error with a SQLSTATE and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        SqlError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// 0A000: the statement is valid SQL we do not support (yet).
    pub fn unsupported(what: impl Into<String>) -> Self {
        SqlError::new("0A000", format!("{} is not supported", what.into()))
    }

    /// 42601: syntax error.
    pub fn syntax(message: impl Into<String>) -> Self {
        SqlError::new("42601", message)
    }

    /// 25P02: a statement inside a failed transaction block.
    pub fn in_failed_transaction() -> Self {
        SqlError::new(
            "25P02",
            "current transaction is aborted, commands ignored until end of transaction block",
        )
    }

    /// XX000: an internal error (details go to the log, not the client).
    pub fn internal(message: impl Into<String>) -> Self {
        SqlError::new("XX000", message)
    }
}
