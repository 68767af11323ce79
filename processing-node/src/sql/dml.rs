//! INSERT, UPDATE and DELETE: planning (targets, defaults, access paths) and execution with
//! constraint checks and RETURNING.

use std::ops::Bound;

use sqlparser::ast::{self, SetExpr};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::datum::Datum;
use crate::sql::access::{and_all, choose, conjuncts};
use crate::sql::bind::{Planner, Scope, ScopeCol, TableRef, ident, object_name};
use crate::sql::catalog::{CatalogCache, TableMeta};
use crate::sql::error::SqlError;
use crate::sql::exec::{Exec, Row};
use crate::sql::expr::Expr;
use crate::sql::plan::{Plan, QueryPlan, ScanNode};
use crate::sql::rebase::UpdateRebase;
use crate::sql::txn_error;
use crate::sql::types::{Column, PgType};
use crate::sql::value::assign;
use crate::txn::{Engine, Newest, TxnError};

/// Where inserted rows come from.
#[derive(Debug, Clone)]
pub enum InsertSource {
    /// VALUES rows; `None` = the DEFAULT keyword.
    Values(Vec<Vec<Option<Expr>>>),
    /// INSERT … SELECT.
    Query(Box<QueryPlan>),
}

/// RETURNING: expressions over the written row and their columns.
#[derive(Debug, Clone)]
pub struct Returning {
    /// Expressions over the table's row.
    pub exprs: Vec<Expr>,
    /// Output columns.
    pub columns: Vec<Column>,
}

/// A planned INSERT.
#[derive(Debug, Clone)]
pub struct InsertPlan {
    /// Target table.
    pub table: TableRef,
    /// Positions of the target columns.
    pub targets: Vec<usize>,
    /// Source rows.
    pub source: InsertSource,
    /// DEFAULT expression per column.
    pub defaults: Vec<Option<Expr>>,
    /// ON CONFLICT DO NOTHING.
    pub do_nothing: bool,
    /// RETURNING.
    pub returning: Option<Returning>,
}

/// A planned UPDATE or DELETE: the rows to change, and for UPDATE the new values.
#[derive(Debug, Clone)]
pub struct ModifyPlan {
    /// Target table.
    pub table: TableRef,
    /// How the rows are found.
    pub scan: ScanNode,
    /// `SET column = expr` (empty for DELETE).
    pub sets: Vec<(usize, Expr)>,
    /// RETURNING.
    pub returning: Option<Returning>,
}

/// The scope of one table's rows (hidden row id included, but not visible to `*`).
pub fn table_scope(meta: &TableMeta, alias: &str) -> Scope {
    Scope {
        cols: meta
            .columns
            .iter()
            .map(|c| ScopeCol {
                rel: alias.to_string(),
                name: c.name.clone(),
                ty: c.ty.pg(),
                sql: Some(c.ty),
                hidden: c.hidden,
            })
            .collect(),
    }
}

/// Parses a stored DEFAULT expression.
fn parse_default(text: &str) -> Result<ast::Expr, SqlError> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| SqlError::internal(format!("stored default \"{text}\": {e}")))
}

fn is_default_keyword(e: &ast::Expr) -> bool {
    matches!(e, ast::Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

/// The SQLSTATE 23505 error for a unique violation, named as the user named things.
pub fn unique_error(meta: &TableMeta, e: TxnError) -> SqlError {
    match e {
        TxnError::UniqueViolation { constraint } => {
            let name = if constraint.ends_with("_pkey") {
                meta.pk_name
                    .clone()
                    .unwrap_or_else(|| format!("{}_pkey", meta.name))
            } else {
                constraint
                    .rsplit("_idx")
                    .next()
                    .and_then(|id| id.parse::<u32>().ok())
                    .and_then(|id| meta.indexes.iter().find(|i| i.id == id))
                    .map_or(constraint.clone(), |i| i.name.clone())
            };
            SqlError::new(
                "23505",
                format!("duplicate key value violates unique constraint \"{name}\""),
            )
        }
        other => txn_error(other),
    }
}

impl Planner<'_> {
    fn returning(
        &mut self,
        items: &Option<Vec<ast::SelectItem>>,
        scope: &Scope,
    ) -> Result<Option<Returning>, SqlError> {
        let Some(items) = items else { return Ok(None) };
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        for it in items {
            match it {
                ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..) => {
                    for (i, c) in scope.cols.iter().enumerate().filter(|(_, c)| !c.hidden) {
                        exprs.push(Expr::Column(i));
                        columns.push(Column {
                            name: c.name.clone(),
                            pg_type: c.ty,
                        });
                    }
                }
                ast::SelectItem::UnnamedExpr(e) => {
                    let (x, t) = self.bind(e, scope)?;
                    let name = match e {
                        ast::Expr::Identifier(i) => ident(i),
                        ast::Expr::CompoundIdentifier(p) => p.last().map(ident).unwrap_or_default(),
                        _ => "?column?".into(),
                    };
                    exprs.push(x);
                    columns.push(Column {
                        name,
                        pg_type: if t == PgType::Unknown {
                            PgType::Text
                        } else {
                            t
                        },
                    });
                }
                ast::SelectItem::ExprWithAlias { expr, alias } => {
                    let (x, t) = self.bind(expr, scope)?;
                    exprs.push(x);
                    columns.push(Column {
                        name: ident(alias),
                        pg_type: if t == PgType::Unknown {
                            PgType::Text
                        } else {
                            t
                        },
                    });
                }
                other => return Err(SqlError::unsupported(format!("RETURNING {other}"))),
            }
        }
        Ok(Some(Returning { exprs, columns }))
    }

    /// Plans INSERT.
    pub fn plan_insert(&mut self, ins: &ast::Insert) -> Result<InsertPlan, SqlError> {
        let ast::TableObject::TableName(name) = &ins.table else {
            return Err(SqlError::unsupported("INSERT into a table function"));
        };
        let meta = self.catalog.table(&object_name(name))?;
        let mut targets: Vec<usize> = if ins.columns.is_empty() {
            meta.visible().map(|(i, _)| i).collect()
        } else {
            ins.columns
                .iter()
                .map(|c| {
                    let n = object_name(c);
                    meta.column(&n).ok_or_else(|| {
                        SqlError::new(
                            "42703",
                            format!(
                                "column \"{n}\" of relation \"{}\" does not exist",
                                meta.name
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let empty = Scope::default();
        let mut defaults = Vec::with_capacity(meta.columns.len());
        for c in &meta.columns {
            defaults.push(match &c.default {
                Some(text) => Some(self.bind(&parse_default(text)?, &empty)?.0),
                None => None,
            });
        }
        let source = match ins.source.as_deref() {
            None => InsertSource::Values(vec![vec![None; targets.len()]]),
            Some(q) => match q.body.as_ref() {
                SetExpr::Values(v) if q.order_by.is_none() && q.limit_clause.is_none() => {
                    let width = v.rows.first().map_or(0, |r| r.content.len());
                    if v.rows.iter().any(|r| r.content.len() != width) {
                        return Err(SqlError::syntax("VALUES lists must all be the same length"));
                    }
                    // Without a column list, PostgreSQL fills the leading columns and
                    // gives the rest their defaults.
                    if ins.columns.is_empty() {
                        targets.truncate(width);
                    }
                    let mut rows = Vec::with_capacity(v.rows.len());
                    for r in &v.rows {
                        if r.content.len() > targets.len() {
                            return Err(SqlError::syntax(
                                "INSERT has more expressions than target columns",
                            ));
                        }
                        if r.content.len() < targets.len() {
                            return Err(SqlError::syntax(
                                "INSERT has more target columns than expressions",
                            ));
                        }
                        let mut row = Vec::with_capacity(r.content.len());
                        for (e, &col) in r.content.iter().zip(&targets) {
                            if is_default_keyword(e) {
                                row.push(None);
                                continue;
                            }
                            let (x, t) = self.bind(e, &empty)?;
                            let ty = meta.columns[col].ty.pg();
                            self.infer(&x, ty);
                            let _ = t;
                            row.push(Some(x));
                        }
                        rows.push(row);
                    }
                    InsertSource::Values(rows)
                }
                _ => {
                    let plan = self.plan_query(q)?;
                    if ins.columns.is_empty() {
                        targets.truncate(plan.columns.len());
                    }
                    if plan.columns.len() > targets.len() {
                        return Err(SqlError::syntax(
                            "INSERT has more expressions than target columns",
                        ));
                    }
                    if plan.columns.len() != targets.len() {
                        return Err(SqlError::syntax(
                            "INSERT has more target columns than expressions",
                        ));
                    }
                    InsertSource::Query(Box::new(plan))
                }
            },
        };
        let do_nothing = match &ins.on {
            None => false,
            Some(ast::OnInsert::OnConflict(c))
                if matches!(c.action, ast::OnConflictAction::DoNothing) =>
            {
                true
            }
            Some(_) => return Err(SqlError::unsupported("ON CONFLICT DO UPDATE")),
        };
        let scope = table_scope(&meta, &meta.name);
        let returning = self.returning(&ins.returning, &scope)?;
        Ok(InsertPlan {
            table: meta,
            targets,
            source,
            defaults,
            do_nothing,
            returning,
        })
    }

    fn modify_scan(
        &mut self,
        meta: &TableRef,
        alias: &str,
        selection: &Option<ast::Expr>,
    ) -> Result<ScanNode, SqlError> {
        let scope = table_scope(meta, alias);
        let mut preds = Vec::new();
        if let Some(w) = selection {
            let p = self.bind_predicate(w, &scope)?;
            conjuncts(p, &mut preds);
        }
        let chosen = choose(meta, &preds, 0, &|e: &Expr| e.is_row_free());
        Ok(ScanNode {
            table: meta.clone(),
            alias: alias.to_string(),
            access: chosen.access,
            filter: and_all(preds),
            limit: None,
            for_update: false,
        })
    }

    fn target_table(&self, t: &ast::TableWithJoins) -> Result<(TableRef, String), SqlError> {
        if !t.joins.is_empty() {
            return Err(SqlError::unsupported("joins in UPDATE / DELETE"));
        }
        match &t.relation {
            ast::TableFactor::Table { name, alias, .. } => {
                let meta = self.catalog.table(&object_name(name))?;
                let alias = alias
                    .as_ref()
                    .map(|a| ident(&a.name))
                    .unwrap_or_else(|| meta.name.clone());
                Ok((meta, alias))
            }
            other => Err(SqlError::unsupported(format!("target {other}"))),
        }
    }

    /// Plans UPDATE.
    pub fn plan_update(&mut self, u: &ast::Update) -> Result<ModifyPlan, SqlError> {
        if u.from.is_some() {
            return Err(SqlError::unsupported("UPDATE … FROM"));
        }
        let (meta, alias) = self.target_table(&u.table)?;
        let scope = table_scope(&meta, &alias);
        let mut sets = Vec::new();
        for a in &u.assignments {
            let ast::AssignmentTarget::ColumnName(c) = &a.target else {
                return Err(SqlError::unsupported("tuple assignment"));
            };
            let n = object_name(c);
            let col = meta.column(&n).ok_or_else(|| {
                SqlError::new(
                    "42703",
                    format!(
                        "column \"{n}\" of relation \"{}\" does not exist",
                        meta.name
                    ),
                )
            })?;
            let (x, _) = if is_default_keyword(&a.value) {
                match &meta.columns[col].default {
                    Some(text) => self.bind(&parse_default(text)?, &Scope::default())?,
                    None => (Expr::Const(Datum::Null), PgType::Unknown),
                }
            } else {
                self.bind(&a.value, &scope)?
            };
            self.infer(&x, meta.columns[col].ty.pg());
            sets.push((col, x));
        }
        let scan = self.modify_scan(&meta, &alias, &u.selection)?;
        let returning = self.returning(&u.returning, &scope)?;
        Ok(ModifyPlan {
            table: meta,
            scan,
            sets,
            returning,
        })
    }

    /// Plans DELETE.
    pub fn plan_delete(&mut self, d: &ast::Delete) -> Result<ModifyPlan, SqlError> {
        if d.using.is_some() {
            return Err(SqlError::unsupported("DELETE … USING"));
        }
        let from = match &d.from {
            ast::FromTable::WithFromKeyword(v) | ast::FromTable::WithoutKeyword(v) => v,
        };
        let [t] = from.as_slice() else {
            return Err(SqlError::unsupported("DELETE from several tables"));
        };
        let (meta, alias) = self.target_table(t)?;
        let scope = table_scope(&meta, &alias);
        let scan = self.modify_scan(&meta, &alias, &d.selection)?;
        let returning = self.returning(&d.returning, &scope)?;
        Ok(ModifyPlan {
            table: meta,
            scan,
            sets: Vec::new(),
            returning,
        })
    }
}

fn not_null_error(meta: &TableMeta, col: usize) -> SqlError {
    let name = meta
        .columns
        .get(col)
        .map(|c| c.name.as_str())
        .unwrap_or("?");
    SqlError::new(
        "23502",
        format!(
            "null value in column \"{name}\" of relation \"{}\" violates not-null constraint",
            meta.name
        ),
    )
}

pub(crate) fn check_not_null(meta: &TableMeta, row: &[Datum]) -> Result<(), SqlError> {
    for (i, c) in meta.columns.iter().enumerate() {
        if (c.not_null || meta.primary_key.contains(&i)) && row.get(i).is_none_or(Datum::is_null) {
            return Err(not_null_error(meta, i));
        }
    }
    Ok(())
}

impl Exec<'_> {
    fn returning_row(
        &self,
        r: &Option<Returning>,
        row: &[Datum],
        out: &mut Vec<Row>,
    ) -> Result<(), SqlError> {
        if let Some(r) = r {
            let ctx = self.eval_ctx();
            out.push(
                r.exprs
                    .iter()
                    .map(|e| e.eval(row, &ctx))
                    .collect::<Result<Row, _>>()?,
            );
        }
        Ok(())
    }

    /// Runs an INSERT: rows inserted and RETURNING rows.
    pub async fn insert(
        &mut self,
        p: &InsertPlan,
        engine: &Engine,
        cache: &CatalogCache,
    ) -> Result<(u64, Vec<Row>), SqlError> {
        let meta = p.table.clone();
        let def = meta.def();
        let sources: Vec<Vec<Option<Datum>>> = match &p.source {
            InsertSource::Values(rows) => {
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let mut vals = Vec::with_capacity(r.len());
                    for e in r {
                        vals.push(match e {
                            Some(e) => Some(self.eval_free(e)?),
                            None => None,
                        });
                    }
                    out.push(vals);
                }
                out
            }
            InsertSource::Query(q) => self
                .run(&q.plan)
                .await?
                .into_iter()
                .map(|r| r.into_iter().map(Some).collect())
                .collect(),
        };
        let mut count = 0u64;
        let mut returned = Vec::new();
        let mut rows: Vec<Row> = Vec::with_capacity(sources.len());
        for vals in sources {
            let mut row: Row = vec![Datum::Null; meta.columns.len()];
            let mut given = vec![false; meta.columns.len()];
            for (v, &col) in vals.into_iter().zip(&p.targets) {
                if let Some(v) = v {
                    row[col] = assign(v, meta.columns[col].ty)?;
                    given[col] = true;
                }
            }
            for (i, c) in meta.columns.iter().enumerate() {
                if given[i] {
                    continue;
                }
                if c.hidden {
                    row[i] = Datum::Int(cache.next_rowid(engine, meta.oid).await?);
                } else if let Some(Some(d)) = p.defaults.get(i) {
                    row[i] = assign(self.eval_free(d)?, c.ty)?;
                }
            }
            check_not_null(&meta, &row)?;
            rows.push(row);
        }
        // A table without a primary key is keyed by a hidden row id generated here: its
        // keys are new, nothing to read.
        let generated_keys = meta.columns.iter().any(|c| c.hidden);
        // Every other insert reads its key first (is it taken?): one batched read for all
        // the rows instead of a round trip per row. What it finds stays in the
        // transaction's buffer, where the inserts below look.
        if rows.len() > 1 && !generated_keys {
            let pks: Vec<Row> = rows.iter().map(|r| def.pk_of(r)).collect();
            self.tx.get_many(&def, &pks).await.map_err(txn_error)?;
        }
        for row in rows {
            if p.do_nothing && self.conflicts(&meta, &row).await? {
                continue;
            }
            let inserted = if generated_keys {
                self.tx.insert_new(&def, row.clone()).await
            } else {
                self.tx.insert(&def, row.clone()).await
            };
            inserted.map_err(|e| unique_error(&meta, e))?;
            count += 1;
            self.returning_row(&p.returning, &row, &mut returned)?;
        }
        Ok((count, returned))
    }

    /// Whether a row would violate the primary key or a unique index (ON CONFLICT DO
    /// NOTHING checks first, so that a failed insert leaves nothing behind).
    async fn conflicts(&mut self, meta: &TableMeta, row: &[Datum]) -> Result<bool, SqlError> {
        let def = meta.def();
        if self
            .tx
            .get(&def, &def.pk_of(row))
            .await
            .map_err(txn_error)?
            .is_some()
        {
            return Ok(true);
        }
        for idx in def.indexes.iter().filter(|i| i.unique) {
            let values = idx.values_of(row);
            if values.iter().any(Datum::is_null) {
                continue;
            }
            let hits = self
                .tx
                .index_scan(
                    &def,
                    idx,
                    Bound::Included(&values),
                    Bound::Included(&values),
                    1,
                )
                .await
                .map_err(txn_error)?;
            if !hits.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs an UPDATE or DELETE: rows changed and RETURNING rows.
    pub async fn modify(
        &mut self,
        p: &ModifyPlan,
        delete: bool,
    ) -> Result<(u64, Vec<Row>), SqlError> {
        let meta = p.table.clone();
        let def = meta.def();
        let rows = self.run(&Plan::Scan(p.scan.clone())).await?;
        // READ COMMITTED: an update whose outcome depends only on the row may be re-applied
        // onto a newer version at commit instead of failing it (`txn::rebase`).
        let rebase = (!delete && self.tx.is_read_committed())
            .then(|| UpdateRebase::for_plan(p, self.params, self.now))
            .flatten();
        let mut count = 0u64;
        let mut returned = Vec::new();
        for old in rows {
            let pk = def.pk_of(&old);
            // READ COMMITTED: a row changed since the statement's snapshot is taken in its
            // newest committed form if it still qualifies (PostgreSQL's re-check).
            let old = if self.tx.is_read_committed() {
                match self
                    .tx
                    .newest_for_write(&def, &pk)
                    .await
                    .map_err(txn_error)?
                {
                    Newest::Unchanged => old,
                    Newest::Changed(None) => continue,
                    Newest::Changed(Some(newest)) => {
                        if !self.still_qualifies(&p.scan, &old, &newest)? {
                            continue;
                        }
                        newest
                    }
                }
            } else {
                old
            };
            if delete {
                if self.tx.delete(&def, &pk).await.map_err(txn_error)? {
                    count += 1;
                    self.returning_row(&p.returning, &old, &mut returned)?;
                }
                continue;
            }
            let mut new = old.clone();
            {
                let ctx = self.eval_ctx();
                for (col, e) in &p.sets {
                    new[*col] = assign(e.eval(&old, &ctx)?, meta.columns[*col].ty)?;
                }
            }
            check_not_null(&meta, &new)?;
            let updated = match &rebase {
                Some(rebase) => {
                    self.tx
                        .update_rebasable(&def, &pk, new.clone(), rebase.clone())
                        .await
                }
                None => self.tx.update(&def, &pk, new.clone()).await,
            };
            match updated {
                Ok(()) => {
                    count += 1;
                    self.returning_row(&p.returning, &new, &mut returned)?;
                }
                Err(TxnError::NotFound) => {}
                Err(e) => return Err(unique_error(&meta, e)),
            }
        }
        Ok((count, returned))
    }
}
