//! A SQL session: one per client connection, with its transaction state and settings.
//!
//! This file fixes the contract between the wire protocol and the SQL engine; the engine's
//! implementation lives in the modules next to it.
//!
//! # Additions to the contract (for the wire layer)
//!
//! - [`Session::take_notices`] (and the `notices` field): NOTICE / WARNING messages produced
//!   by the last statements (e.g. "FOREIGN KEY … accepted but not enforced", "there is no
//!   transaction in progress"); send them as NoticeResponse before CommandComplete.
//! - Portals with row limits: when [`Session::execute`] is called with `max_rows > 0` and the
//!   result has more rows, it returns the first `max_rows` and [`Session::suspended`] is
//!   true: send PortalSuspended instead of CommandComplete, and on the next Execute of that
//!   portal call [`Session::resume`]. One suspended portal per session (the common case);
//!   any other statement discards it.
//! - [`Session::parameter`] reads a setting (server_version, client_encoding, DateStyle,
//!   integer_datetimes, standard_conforming_strings, TimeZone, …) for ParameterStatus.
//! - Implicit transactions follow PostgreSQL: in the extended protocol the statements
//!   between two Syncs form one transaction, committed by [`Session::sync`] (so a commit
//!   failure such as 40001 is reported by `sync`). A simple query string is one implicit
//!   transaction, committed before `simple_query` returns.
//! - [`crate::sql::value::to_text`] / [`crate::sql::value::from_text`] format and parse values
//!   in PostgreSQL's text formats, for text-format parameters and results.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::datum::Datum;
use crate::sql::catalog::{Catalog, CatalogCache};
use crate::sql::error::SqlError;
use crate::sql::settings::Settings;
use crate::sql::types::{Column, PgType};
use crate::txn::{Engine, Transaction};

/// Transaction status as ReadyForQuery reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Not in a transaction block ('I').
    Idle,
    /// In a transaction block ('T').
    InBlock,
    /// In a failed transaction block ('E'): only ROLLBACK is accepted.
    Failed,
}

/// What one statement produced.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryOutput {
    /// A result set (SELECT, RETURNING, SHOW, EXPLAIN ...).
    Rows {
        /// Column descriptions.
        columns: Vec<Column>,
        /// The rows.
        rows: Vec<Vec<Datum>>,
        /// The command tag ("SELECT 3").
        tag: String,
    },
    /// A command without rows; the tag is what CommandComplete carries ("INSERT 0 3").
    Command {
        /// The command tag.
        tag: String,
    },
    /// An empty query string.
    Empty,
}

/// A parsed and described statement, ready to be executed with parameters.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The SQL text.
    pub sql: String,
    /// Parameter types ($1, $2, ...), inferred where the client did not give them.
    pub param_types: Vec<PgType>,
    /// Result columns (empty for commands).
    pub columns: Vec<Column>,
}

/// The SQL engine of one processing node: shared by all its sessions.
#[derive(Debug)]
pub struct SqlEngine {
    /// The transaction core.
    pub engine: Arc<Engine>,
    /// Catalog versions cached on this node, and row-id blocks.
    pub(crate) catalog: CatalogCache,
}

impl SqlEngine {
    /// A SQL engine over a transaction engine.
    pub fn new(engine: Arc<Engine>) -> Arc<Self> {
        Arc::new(SqlEngine {
            engine,
            catalog: CatalogCache::default(),
        })
    }

    /// A new session (one per connection).
    pub fn session(self: &Arc<Self>) -> Session {
        Session {
            engine: self.clone(),
            status: TxStatus::Idle,
            cancel: Arc::new(AtomicBool::new(false)),
            txn: None,
            in_block: false,
            txn_now: 0,
            catalog: None,
            catalog_unconfirmed: false,
            settings: Settings::default(),
            notices: Vec::new(),
            portal: None,
            parsed: lru::LruCache::new(PARSE_CACHE),
            plans: crate::sql::plan_cache::PlanCache::default(),
        }
    }
}

/// Rows of a suspended portal waiting for the next Execute.
#[derive(Debug)]
pub(crate) struct PortalRest {
    pub columns: Vec<Column>,
    pub rows: std::vec::IntoIter<Vec<Datum>>,
    pub sent: usize,
    pub tag_word: String,
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    pub(crate) engine: Arc<SqlEngine>,
    pub(crate) status: TxStatus,
    pub(crate) cancel: Arc<AtomicBool>,
    /// The open transaction (a block's, or an implicit one).
    pub(crate) txn: Option<Transaction>,
    /// Inside BEGIN … COMMIT.
    pub(crate) in_block: bool,
    /// now() of the open transaction.
    pub(crate) txn_now: i64,
    /// The catalog as the open transaction sees it.
    pub(crate) catalog: Option<Arc<Catalog>>,
    /// `catalog` is this node's newest one, taken on trust for the transaction's first
    /// statement: its version has not been read in the transaction yet (see
    /// `Session::run_in_txn`).
    pub(crate) catalog_unconfirmed: bool,
    pub(crate) settings: Settings,
    /// NOTICE / WARNING messages not yet sent to the client.
    pub notices: Vec<String>,
    pub(crate) portal: Option<PortalRest>,
    /// Parsed statements by SQL text, so executing a prepared statement does not parse it
    /// again.
    parsed: lru::LruCache<String, Arc<Vec<sqlparser::ast::Statement>>>,
    /// Plans of prepared statements by SQL text (see [`crate::sql::plan_cache`]).
    pub(crate) plans: crate::sql::plan_cache::PlanCache,
}

/// Statements kept parsed per session.
const PARSE_CACHE: std::num::NonZeroUsize = match std::num::NonZeroUsize::new(256) {
    Some(n) => n,
    None => std::num::NonZeroUsize::MIN,
};

impl Session {
    /// Runs a simple-protocol query string (possibly several statements). Returns one
    /// output per statement executed; execution stops at the first error, which is last.
    pub async fn simple_query(&mut self, sql: &str) -> Vec<Result<QueryOutput, SqlError>> {
        self.portal = None;
        let statements = match crate::sql::parse::parse(sql) {
            Ok(s) => s,
            Err(e) => {
                self.fail_after_error().await;
                return vec![Err(e)];
            }
        };
        if statements.is_empty() {
            return vec![Ok(QueryOutput::Empty)];
        }
        let mut out = Vec::with_capacity(statements.len());
        for stmt in &statements {
            let r = self.run_statement(stmt, &[], None).await;
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        // The implicit transaction of a simple query ends with it.
        if let Err(e) = self.finish_implicit().await {
            out.push(Err(e));
        }
        out
    }

    fn parse_cached(&mut self, sql: &str) -> Result<Arc<Vec<sqlparser::ast::Statement>>, SqlError> {
        if let Some(p) = self.parsed.get(sql) {
            return Ok(p.clone());
        }
        let p = Arc::new(crate::sql::parse::parse(sql)?);
        self.parsed.put(sql.to_string(), p.clone());
        Ok(p)
    }

    /// Parses and describes one statement (extended protocol Parse + Describe).
    pub async fn prepare(
        &mut self,
        sql: &str,
        param_types: &[Option<PgType>],
    ) -> Result<Prepared, SqlError> {
        let statements = self.parse_cached(sql)?;
        match statements.as_slice() {
            [] => Ok(Prepared {
                sql: sql.to_string(),
                param_types: Vec::new(),
                columns: Vec::new(),
            }),
            [stmt] => {
                let (param_types, columns) = self.describe(stmt, param_types).await?;
                Ok(Prepared {
                    sql: sql.to_string(),
                    param_types,
                    columns,
                })
            }
            _ => Err(SqlError::syntax(
                "cannot insert multiple commands into a prepared statement",
            )),
        }
    }

    /// Executes a prepared statement with bound parameters; `max_rows` (0 = all) limits
    /// the rows of this execution (portal row limits, see [`Session::suspended`]).
    pub async fn execute(
        &mut self,
        prepared: &Prepared,
        params: &[Datum],
        max_rows: usize,
    ) -> Result<QueryOutput, SqlError> {
        self.portal = None;
        let statements = self.parse_cached(&prepared.sql)?;
        let Some(stmt) = statements.first() else {
            return Ok(QueryOutput::Empty);
        };
        if params.len() < prepared.param_types.len() {
            return Err(SqlError::new(
                "08P01",
                format!(
                    "bind message supplies {} parameters, but prepared statement requires {}",
                    params.len(),
                    prepared.param_types.len()
                ),
            ));
        }
        let out = self.run_statement(stmt, params, Some(prepared)).await?;
        Ok(self.limit_rows(out, max_rows))
    }

    /// Whether the last `execute` / `resume` left rows for a later Execute of the portal.
    pub fn suspended(&self) -> bool {
        self.portal.as_ref().is_some_and(|p| p.rows.len() > 0)
    }

    /// The next `max_rows` rows (0 = all) of the suspended portal.
    pub async fn resume(&mut self, max_rows: usize) -> Result<QueryOutput, SqlError> {
        let Some(p) = self.portal.take() else {
            return Err(SqlError::new("34000", "portal does not exist"));
        };
        let out = QueryOutput::Rows {
            columns: p.columns,
            rows: p.rows.collect(),
            tag: String::new(),
        };
        let sent = p.sent;
        let word = p.tag_word;
        Ok(match self.limit_rows(out, max_rows) {
            QueryOutput::Rows { columns, rows, .. } => {
                let total = sent + rows.len();
                if let Some(p) = self.portal.as_mut() {
                    p.sent = total;
                    p.tag_word = word.clone();
                }
                QueryOutput::Rows {
                    columns,
                    rows,
                    tag: format!("{word} {total}"),
                }
            }
            other => other,
        })
    }

    fn limit_rows(&mut self, out: QueryOutput, max_rows: usize) -> QueryOutput {
        match out {
            QueryOutput::Rows { columns, rows, tag } if max_rows > 0 && rows.len() > max_rows => {
                let mut it = rows.into_iter();
                let first: Vec<Vec<Datum>> = it.by_ref().take(max_rows).collect();
                let word = tag.split(' ').next().unwrap_or("SELECT").to_string();
                self.portal = Some(PortalRest {
                    columns: columns.clone(),
                    rows: it,
                    sent: max_rows,
                    tag_word: word,
                });
                QueryOutput::Rows {
                    columns,
                    rows: first,
                    tag,
                }
            }
            other => other,
        }
    }

    /// The extended protocol's Sync: ends an implicit transaction (commit, or rollback after
    /// an error), as PostgreSQL does.
    pub async fn sync(&mut self) -> Result<(), SqlError> {
        self.finish_implicit().await
    }

    /// COPY … FROM STDIN in text format: the statement and the whole data stream; returns
    /// the number of rows copied.
    pub async fn copy_from_text(&mut self, statement: &str, data: &[u8]) -> Result<u64, SqlError> {
        self.portal = None;
        let r = self.copy_in(statement, data).await;
        let r = match r {
            Ok(n) => self.finish_implicit().await.map(|_| n),
            Err(e) => Err(e),
        };
        if r.is_err() {
            let _ = self.finish_implicit().await;
        }
        r
    }

    /// The transaction status for ReadyForQuery.
    pub fn status(&self) -> TxStatus {
        self.status
    }

    /// A handle that cancels the running statement of this session (cancel requests).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Whether the running statement was cancelled (checked by executor loops).
    pub fn cancelled(&self) -> bool {
        self.cancel.swap(false, Ordering::Relaxed)
    }

    /// NOTICE / WARNING messages produced since the last call, oldest first.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// A setting's current value (ParameterStatus, SHOW).
    pub fn parameter(&self, name: &str) -> Option<String> {
        self.settings.get(name).ok().map(|(_, v)| v)
    }
}
