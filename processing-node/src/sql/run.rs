//! Running statements in a session: transaction handling around each statement, and the
//! dispatch to planning and execution.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sqlparser::ast::{self, Statement};

use crate::datum::Datum;
use crate::sql::bind::Planner;
use crate::sql::catalog::{Catalog, CatalogCache};
use crate::sql::ddl;
use crate::sql::error::SqlError;
use crate::sql::exec::Exec;
use crate::sql::plan::Plan;
use crate::sql::plan_cache::Planned;
use crate::sql::session::{Prepared, QueryOutput, Session, TxStatus};
use crate::sql::txn_error;
use crate::sql::types::{Column, PgType};
use crate::sql::value::now_timestamp;

fn command(tag: &str) -> QueryOutput {
    QueryOutput::Command {
        tag: tag.to_string(),
    }
}

fn text_rows(name: &str, lines: Vec<String>, tag: &str) -> QueryOutput {
    QueryOutput::Rows {
        columns: vec![Column {
            name: name.to_string(),
            pg_type: PgType::Text,
        }],
        rows: lines.into_iter().map(|l| vec![Datum::Text(l)]).collect(),
        tag: tag.to_string(),
    }
}

impl Session {
    /// Runs one statement with the session's transaction rules: a statement outside a block
    /// runs in an implicit transaction; an error inside a block fails the block.
    /// `prepared` is the prepared statement being executed, if any: its plan is kept for
    /// the next execution, and its result must still have the columns it was described with.
    pub(crate) async fn run_statement(
        &mut self,
        stmt: &Statement,
        params: &[Datum],
        prepared: Option<&Prepared>,
    ) -> Result<QueryOutput, SqlError> {
        self.cancel.store(false, Ordering::Relaxed);
        match stmt {
            Statement::StartTransaction { modes, .. } => return self.begin_block(modes),
            Statement::Commit { .. } => return self.commit_block().await,
            Statement::Rollback {
                savepoint: None, ..
            } => return self.rollback_block().await,
            _ => {}
        }
        if self.status == TxStatus::Failed {
            return Err(SqlError::in_failed_transaction());
        }
        let r = match stmt {
            Statement::Set(set) => self.set(set),
            Statement::ShowVariable { variable } => self.show(variable),
            Statement::Analyze(_) => Ok(command("ANALYZE")),
            Statement::Vacuum(_) => Ok(command("VACUUM")),
            Statement::Discard { .. } => Ok(command("DISCARD ALL")),
            Statement::Deallocate { .. } => Ok(command("DEALLOCATE")),
            _ => self.run_in_txn(stmt, params, prepared).await,
        };
        if r.is_err() {
            self.fail_after_error().await;
        }
        r
    }

    /// After a failed statement: a block becomes failed; an implicit transaction is gone.
    pub(crate) async fn fail_after_error(&mut self) {
        if let Some(tx) = self.txn.take() {
            let _ = tx.rollback().await;
        }
        self.catalog = None;
        if self.in_block {
            self.status = TxStatus::Failed;
        } else {
            self.settings.end_transaction();
        }
    }

    /// Commits an implicit transaction (end of a simple query, Sync).
    pub(crate) async fn finish_implicit(&mut self) -> Result<(), SqlError> {
        if self.in_block {
            return Ok(());
        }
        self.catalog = None;
        self.settings.end_transaction();
        if let Some(tx) = self.txn.take() {
            tx.commit().await.map_err(txn_error)?;
        }
        Ok(())
    }

    /// Opens the transaction (if none) and loads its catalog.
    pub(crate) async fn ensure_txn(&mut self) -> Result<Arc<Catalog>, SqlError> {
        if self.txn.is_none() {
            let tx = self.engine.engine.begin().await.map_err(txn_error)?;
            self.txn = Some(tx);
            self.txn_now = now_timestamp();
            self.catalog = None;
        }
        if let Some(c) = &self.catalog {
            return Ok(c.clone());
        }
        let engine = self.engine.clone();
        let tx = self
            .txn
            .as_mut()
            .ok_or_else(|| SqlError::internal("no transaction"))?;
        let c = engine.catalog.load(tx).await?;
        self.catalog = Some(c.clone());
        Ok(c)
    }

    fn begin_block(&mut self, modes: &[ast::TransactionMode]) -> Result<QueryOutput, SqlError> {
        let mut level = None;
        for m in modes {
            if let ast::TransactionMode::IsolationLevel(l) = m {
                level = Some(crate::sql::settings::check_isolation(&l.to_string())?);
            }
        }
        if self.status == TxStatus::Failed || self.in_block {
            self.notices
                .push("WARNING: there is already a transaction in progress".into());
            return Ok(command("BEGIN"));
        }
        if let Some(level) = level {
            self.settings.set("transaction_isolation", &level)?;
        }
        self.in_block = true;
        self.status = TxStatus::InBlock;
        Ok(command("BEGIN"))
    }

    async fn commit_block(&mut self) -> Result<QueryOutput, SqlError> {
        if !self.in_block {
            self.notices
                .push("WARNING: there is no transaction in progress".into());
            self.finish_implicit().await?;
            return Ok(command("COMMIT"));
        }
        self.in_block = false;
        let failed = self.status == TxStatus::Failed;
        self.status = TxStatus::Idle;
        self.catalog = None;
        self.settings.end_transaction();
        if failed {
            if let Some(tx) = self.txn.take() {
                let _ = tx.rollback().await;
            }
            return Ok(command("ROLLBACK"));
        }
        if let Some(tx) = self.txn.take() {
            tx.commit().await.map_err(txn_error)?;
        }
        Ok(command("COMMIT"))
    }

    async fn rollback_block(&mut self) -> Result<QueryOutput, SqlError> {
        if !self.in_block {
            self.notices
                .push("WARNING: there is no transaction in progress".into());
        }
        self.in_block = false;
        self.status = TxStatus::Idle;
        self.catalog = None;
        self.settings.end_transaction();
        if let Some(tx) = self.txn.take() {
            let _ = tx.rollback().await;
        }
        Ok(command("ROLLBACK"))
    }

    fn set(&mut self, set: &ast::Set) -> Result<QueryOutput, SqlError> {
        let value_text = |e: &ast::Expr| -> String {
            match e {
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    ast::Value::Number(n, _) => n.clone(),
                    ast::Value::Boolean(b) => {
                        if *b {
                            "on".into()
                        } else {
                            "off".into()
                        }
                    }
                    other => other.to_string(),
                },
                ast::Expr::Identifier(i) => i.value.clone(),
                other => other.to_string(),
            }
        };
        match set {
            ast::Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = variable.to_string().to_lowercase();
                let name = name
                    .trim_start_matches("session.")
                    .trim_start_matches("local.")
                    .to_string();
                let value = values.iter().map(value_text).collect::<Vec<_>>().join(", ");
                if value.eq_ignore_ascii_case("default") {
                    self.settings.reset(&name);
                } else {
                    self.settings.set(&name, &value)?;
                }
            }
            ast::Set::SetTimeZone { value, .. } => {
                self.settings.set("timezone", &value_text(value))?
            }
            ast::Set::SetNames { charset_name, .. } => {
                self.settings.set("client_encoding", &charset_name.value)?
            }
            ast::Set::SetTransaction { modes, session, .. } => {
                for m in modes {
                    if let ast::TransactionMode::IsolationLevel(l) = m {
                        let level = crate::sql::settings::check_isolation(&l.to_string())?;
                        let key = if *session {
                            "default_transaction_isolation"
                        } else {
                            "transaction_isolation"
                        };
                        self.settings.set(key, &level)?;
                    }
                }
            }
            other => return Err(SqlError::unsupported(format!("{other}"))),
        }
        Ok(command("SET"))
    }

    fn show(&self, variable: &[ast::Ident]) -> Result<QueryOutput, SqlError> {
        let name = variable
            .iter()
            .map(|i| i.value.to_lowercase())
            .collect::<Vec<_>>()
            .join(" ");
        let name = match name.as_str() {
            "transaction isolation level" => "transaction_isolation".to_string(),
            "time zone" => "timezone".to_string(),
            other => other.to_string(),
        };
        if name == "all" {
            let rows = self
                .settings
                .all()
                .into_iter()
                .map(|(k, v)| vec![Datum::Text(k), Datum::Text(v), Datum::Text(String::new())])
                .collect();
            return Ok(QueryOutput::Rows {
                columns: ["name", "setting", "description"]
                    .iter()
                    .map(|n| Column {
                        name: n.to_string(),
                        pg_type: PgType::Text,
                    })
                    .collect(),
                rows,
                tag: "SHOW".into(),
            });
        }
        let (display, value) = self.settings.get(&name)?;
        Ok(text_rows(&display, vec![value], "SHOW"))
    }

    /// Runs a statement in the open (or a new) transaction.
    ///
    /// Every transaction must see the catalog of its own snapshot, which costs a read of the
    /// catalog version; DDL is rare, so a prepared statement that opens a transaction is
    /// planned and run with this node's newest catalog, and the version is read along with
    /// the statement's first records. Nothing the statement did leaves the transaction
    /// before that version is confirmed: if it differs, the transaction (which holds only
    /// this statement) is rolled back and the statement runs again, in a new one.
    async fn run_in_txn(
        &mut self,
        stmt: &Statement,
        params: &[Datum],
        prepared: Option<&Prepared>,
    ) -> Result<QueryOutput, SqlError> {
        let notices = self.notices.len();
        let out = self.run_in_txn_once(stmt, params, prepared, true).await;
        if !self.catalog_unconfirmed {
            return out;
        }
        match self.confirm_catalog().await {
            Ok(true) => out,
            Ok(false) => {
                if let Some(tx) = self.txn.take() {
                    let _ = tx.rollback().await;
                }
                self.catalog = None;
                self.notices.truncate(notices);
                self.run_in_txn_once(stmt, params, prepared, false).await
            }
            // A statement that doomed the transaction leaves nothing to read it with.
            Err(_) if out.is_err() => out,
            Err(e) => Err(e),
        }
    }

    /// Reads the catalog version in the open transaction and makes its catalog the
    /// session's; whether it is the one the statement was run with.
    async fn confirm_catalog(&mut self) -> Result<bool, SqlError> {
        self.catalog_unconfirmed = false;
        let engine = self.engine.clone();
        let Some(tx) = self.txn.as_mut() else {
            return Ok(true);
        };
        let fresh = engine.catalog.load(tx).await?;
        let same = self
            .catalog
            .as_ref()
            .is_some_and(|c| c.version == fresh.version);
        self.catalog = Some(fresh);
        Ok(same)
    }

    async fn run_in_txn_once(
        &mut self,
        stmt: &Statement,
        params: &[Datum],
        prepared: Option<&Prepared>,
        on_trust: bool,
    ) -> Result<QueryOutput, SqlError> {
        let sql = prepared.map(|p| p.sql.as_str());
        let trusted = match (on_trust && sql.is_some(), &self.catalog) {
            (true, None) => self.engine.catalog.current(),
            _ => None,
        };
        let catalog = match trusted {
            Some(catalog) => {
                if self.txn.is_none() {
                    let tx = self.engine.engine.begin().await.map_err(txn_error)?;
                    self.txn = Some(tx);
                    self.txn_now = now_timestamp();
                }
                if let Some(tx) = self.txn.as_mut() {
                    CatalogCache::read_version_with_next_fetch(tx);
                }
                self.catalog = Some(catalog.clone());
                self.catalog_unconfirmed = true;
                catalog
            }
            None => self.ensure_txn().await?,
        };
        if self.settings.read_committed()
            && let Some(tx) = self.txn.as_mut()
        {
            tx.begin_statement().await.map_err(txn_error)?;
        }
        let planned = self.plans.plan(sql, &catalog, stmt)?;
        if planned.is_none() && self.catalog_unconfirmed {
            // Not a planned statement (DDL, transaction control, …): confirm first, and
            // run with the transaction's own catalog.
            self.confirm_catalog().await?;
            return Box::pin(self.run_in_txn_once(stmt, params, prepared, false)).await;
        }
        if let Some(planned) = planned {
            // As PostgreSQL: the client decodes rows by the description it was given at
            // Describe, so DDL that changed them fails the execution (drivers re-prepare).
            if let Some(prepared) = prepared
                && !same_result_type(&prepared.columns, planned.columns())
            {
                return Err(SqlError::new(
                    "0A000",
                    "cached plan must not change result type",
                ));
            }
            return self.run_planned(&planned, params, &catalog).await;
        }
        let engine = self.engine.clone();
        let Some(tx) = self.txn.as_mut() else {
            return Err(SqlError::internal("no transaction"));
        };
        let mut planner = Planner::new(&catalog, &[]);
        let mut ddl_done = None;
        let out = match stmt {
            Statement::Explain { statement, .. } => {
                let plan = match statement.as_ref() {
                    Statement::Query(q) => planner.plan_query(q)?.plan,
                    Statement::Insert(i) => match planner.plan_insert(i)?.source {
                        crate::sql::dml::InsertSource::Query(q) => q.plan,
                        crate::sql::dml::InsertSource::Values(v) => Plan::Values(
                            v.into_iter()
                                .map(|r| {
                                    r.into_iter()
                                        .map(|e| {
                                            e.unwrap_or(crate::sql::expr::Expr::Const(Datum::Null))
                                        })
                                        .collect()
                                })
                                .collect(),
                        ),
                    },
                    Statement::Update(u) => Plan::Scan(planner.plan_update(u)?.scan),
                    Statement::Delete(d) => Plan::Scan(planner.plan_delete(d)?.scan),
                    other => {
                        return Err(SqlError::unsupported(format!(
                            "EXPLAIN of {}",
                            statement_kind(other)
                        )));
                    }
                };
                let mut lines = Vec::new();
                match statement.as_ref() {
                    Statement::Insert(_) => lines.push("Insert".to_string()),
                    Statement::Update(_) => lines.push("Update".to_string()),
                    Statement::Delete(_) => lines.push("Delete".to_string()),
                    _ => {}
                }
                let depth = usize::from(!lines.is_empty());
                plan.explain(depth, &mut lines);
                text_rows("QUERY PLAN", lines, "EXPLAIN")
            }
            Statement::CreateTable(ct) => {
                let o = ddl::create_table(&engine.engine, tx, &catalog, ct).await?;
                ddl_done = Some(o);
                command("")
            }
            Statement::CreateIndex(ci) => {
                ddl_done = Some(ddl::create_index(&engine.engine, tx, &catalog, ci).await?);
                command("")
            }
            Statement::Drop {
                object_type,
                if_exists,
                names,
                ..
            } => {
                ddl_done = Some(
                    ddl::drop(&engine.engine, tx, &catalog, object_type, *if_exists, names).await?,
                );
                command("")
            }
            Statement::AlterTable(at) => {
                ddl_done = Some(ddl::alter_table(&engine.engine, tx, &catalog, at).await?);
                command("")
            }
            Statement::Truncate(t) => {
                ddl_done = Some(ddl::truncate(&engine.engine, tx, &catalog, &t.table_names).await?);
                command("")
            }
            Statement::CreateSchema {
                if_not_exists: true,
                ..
            } => command("CREATE SCHEMA"),
            other => return Err(SqlError::unsupported(statement_kind(other))),
        };
        if let Some(o) = ddl_done {
            self.notices
                .extend(o.notices.into_iter().map(|n| format!("NOTICE: {n}")));
            let tx = self
                .txn
                .as_mut()
                .ok_or_else(|| SqlError::internal("no transaction"))?;
            self.catalog = Some(engine.catalog.load(tx).await?);
            return Ok(command(&o.tag));
        }
        Ok(out)
    }

    /// Executes a planned SELECT, INSERT, UPDATE or DELETE in the open transaction.
    async fn run_planned(
        &mut self,
        planned: &Planned,
        params: &[Datum],
        catalog: &Catalog,
    ) -> Result<QueryOutput, SqlError> {
        let engine = self.engine.clone();
        let now = self.txn_now;
        let Some(tx) = self.txn.as_mut() else {
            return Err(SqlError::internal("no transaction"));
        };
        let subs = match planned {
            Planned::Query(_, s)
            | Planned::Insert(_, s)
            | Planned::Update(_, s)
            | Planned::Delete(_, s) => s,
        };
        let mut ex = Exec {
            tx,
            params,
            subs: Vec::new(),
            now,
            catalog,
            cancel: &self.cancel,
        };
        let main = match planned {
            Planned::Query(qp, _) => Some(&qp.plan),
            _ => None,
        };
        ex.prefetch(subs.iter().map(|s| &s.plan.plan).chain(main))
            .await?;
        ex.prepare_subqueries(subs).await?;
        let (tag, returning, rows) = match planned {
            Planned::Query(qp, _) => {
                let rows = ex.run(&qp.plan).await?;
                return Ok(QueryOutput::Rows {
                    columns: qp.columns.clone(),
                    tag: format!("SELECT {}", rows.len()),
                    rows,
                });
            }
            Planned::Insert(p, _) => {
                let (n, rows) = ex.insert(p, &engine.engine, &engine.catalog).await?;
                (format!("INSERT 0 {n}"), &p.returning, rows)
            }
            Planned::Update(p, _) => {
                let (n, rows) = ex.modify(p, false).await?;
                (format!("UPDATE {n}"), &p.returning, rows)
            }
            Planned::Delete(p, _) => {
                let (n, rows) = ex.modify(p, true).await?;
                (format!("DELETE {n}"), &p.returning, rows)
            }
        };
        Ok(match returning {
            Some(r) => QueryOutput::Rows {
                columns: r.columns.clone(),
                rows,
                tag,
            },
            None => QueryOutput::Command { tag },
        })
    }

    /// Parameter types and result columns of a statement, for Describe.
    pub(crate) async fn describe(
        &mut self,
        stmt: &Statement,
        declared: &[Option<PgType>],
    ) -> Result<(Vec<PgType>, Vec<Column>), SqlError> {
        let cached = match &self.catalog {
            Some(c) => Some(c.clone()),
            None => self.engine.catalog.current(),
        };
        let first = match &cached {
            Some(c) => describe_with(c, stmt, declared),
            None => Err(SqlError::new("42P01", "no catalog yet")),
        };
        match first {
            Err(e) if matches!(e.code, "42P01" | "42703") && self.catalog.is_none() => {
                // The cached catalog may be older than a DDL on another node: read the
                // current one in a short transaction and try again.
                let mut tx = self.engine.engine.begin().await.map_err(txn_error)?;
                let c = self.engine.catalog.load(&mut tx).await;
                let _ = tx.rollback().await;
                let c = c?;
                describe_with(&c, stmt, declared)
            }
            other => other,
        }
    }
}

fn describe_with(
    catalog: &Catalog,
    stmt: &Statement,
    declared: &[Option<PgType>],
) -> Result<(Vec<PgType>, Vec<Column>), SqlError> {
    let mut planner = Planner::new(catalog, declared);
    let columns = match stmt {
        Statement::Query(q) => planner.plan_query(q)?.columns,
        Statement::Insert(i) => planner
            .plan_insert(i)?
            .returning
            .map(|r| r.columns)
            .unwrap_or_default(),
        Statement::Update(u) => planner
            .plan_update(u)?
            .returning
            .map(|r| r.columns)
            .unwrap_or_default(),
        Statement::Delete(d) => planner
            .plan_delete(d)?
            .returning
            .map(|r| r.columns)
            .unwrap_or_default(),
        Statement::Explain { .. } => vec![Column {
            name: "QUERY PLAN".into(),
            pg_type: PgType::Text,
        }],
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|i| i.value.to_lowercase())
                .collect::<Vec<_>>()
                .join("_");
            vec![Column {
                name,
                pg_type: PgType::Text,
            }]
        }
        _ => Vec::new(),
    };
    let mut params = planner.params;
    if params.len() < declared.len() {
        params.resize(declared.len(), PgType::Unknown);
    }
    let params = params
        .into_iter()
        .map(|t| {
            if t == PgType::Unknown {
                PgType::Text
            } else {
                t
            }
        })
        .collect();
    Ok((params, columns))
}

/// A statement's kind for "… is not supported" messages.
fn statement_kind(s: &Statement) -> String {
    let text = s.to_string();
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a result has the column types a prepared statement was described with.
fn same_result_type(described: &[Column], now: &[Column]) -> bool {
    described.len() == now.len()
        && described
            .iter()
            .zip(now)
            .all(|(a, b)| a.pg_type == b.pg_type)
}
