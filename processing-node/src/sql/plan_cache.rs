//! Plans of prepared statements, kept per session so that executing a prepared statement
//! again neither binds nor plans it.
//!
//! Binding and planning ran on every execution and cost about 5 % of a TPC-C run's server
//! CPU. A plan depends only on the statement and the catalog it was bound against (parameter
//! values and `now()` are read at execution), so it is reused while the transaction's
//! catalog is the very same object the plan was made from: a new catalog version, or a
//! catalog reloaded after DDL, is a different object and the statement is planned again.

use std::num::NonZeroUsize;
use std::sync::Arc;

use sqlparser::ast::Statement;

use crate::sql::bind::{Planner, SubPlan};
use crate::sql::catalog::Catalog;
use crate::sql::dml::{InsertPlan, ModifyPlan, Returning};
use crate::sql::error::SqlError;
use crate::sql::plan::QueryPlan;
use crate::sql::types::Column;

/// A statement planned for execution, with the subqueries its expressions use.
#[derive(Debug)]
pub(crate) enum Planned {
    /// SELECT.
    Query(QueryPlan, Vec<SubPlan>),
    /// INSERT.
    Insert(InsertPlan, Vec<SubPlan>),
    /// UPDATE.
    Update(ModifyPlan, Vec<SubPlan>),
    /// DELETE.
    Delete(ModifyPlan, Vec<SubPlan>),
}

impl Planned {
    /// Plans `stmt` against `catalog`; `None` for statements that are not planned this way
    /// (DDL, EXPLAIN, ...).
    pub(crate) fn of(catalog: &Catalog, stmt: &Statement) -> Result<Option<Planned>, SqlError> {
        let mut planner = Planner::new(catalog, &[]);
        Ok(Some(match stmt {
            Statement::Query(q) => {
                let p = planner.plan_query(q)?;
                Planned::Query(p, planner.subqueries)
            }
            Statement::Insert(ins) => {
                let p = planner.plan_insert(ins)?;
                Planned::Insert(p, planner.subqueries)
            }
            Statement::Update(u) => {
                let p = planner.plan_update(u)?;
                Planned::Update(p, planner.subqueries)
            }
            Statement::Delete(d) => {
                let p = planner.plan_delete(d)?;
                Planned::Delete(p, planner.subqueries)
            }
            _ => return Ok(None),
        }))
    }

    /// The result columns the statement returns (empty without RETURNING).
    pub(crate) fn columns(&self) -> &[Column] {
        fn returning(r: &Option<Returning>) -> &[Column] {
            r.as_ref().map_or(&[], |r| &r.columns)
        }
        match self {
            Planned::Query(p, _) => &p.columns,
            Planned::Insert(p, _) => returning(&p.returning),
            Planned::Update(p, _) | Planned::Delete(p, _) => returning(&p.returning),
        }
    }
}

/// Statements kept planned per session (as many as are kept parsed).
const PLANS: NonZeroUsize = match NonZeroUsize::new(256) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// One session's plans by SQL text, each with the catalog it was made from.
#[derive(Debug)]
pub(crate) struct PlanCache {
    plans: lru::LruCache<String, (Arc<Catalog>, Arc<Planned>)>,
}

impl Default for PlanCache {
    fn default() -> Self {
        PlanCache {
            plans: lru::LruCache::new(PLANS),
        }
    }
}

impl PlanCache {
    /// The plan of `stmt` (whose text is `sql`) against `catalog`: the cached one when it
    /// was made from this same catalog object, else a new one (cached when `sql` is given).
    pub(crate) fn plan(
        &mut self,
        sql: Option<&str>,
        catalog: &Arc<Catalog>,
        stmt: &Statement,
    ) -> Result<Option<Arc<Planned>>, SqlError> {
        let Some(sql) = sql else {
            return Ok(Planned::of(catalog, stmt)?.map(Arc::new));
        };
        if let Some((made_from, planned)) = self.plans.get(sql)
            && Arc::ptr_eq(made_from, catalog)
        {
            return Ok(Some(planned.clone()));
        }
        let Some(planned) = Planned::of(catalog, stmt)?.map(Arc::new) else {
            return Ok(None);
        };
        self.plans
            .put(sql.to_string(), (catalog.clone(), planned.clone()));
        Ok(Some(planned))
    }
}
