//! The SQL side of re-applying a READ COMMITTED UPDATE at commit
//! ([`crate::txn::rebase`]): which statements qualify, and the recomputation itself.

use std::sync::Arc;

use crate::datum::Datum;
use crate::sql::bind::TableRef;
use crate::sql::dml::{ModifyPlan, check_not_null};
use crate::sql::expr::{EvalCtx, Expr};
use crate::sql::value::assign;
use crate::txn::{Rebase, TxnError};

/// An UPDATE statement's SET list and WHERE clause, with everything they read besides the
/// row: recomputes the statement's change on another version of a row.
pub struct UpdateRebase {
    table: TableRef,
    sets: Vec<(usize, Expr)>,
    filter: Option<Expr>,
    params: Vec<Datum>,
    now: i64,
}

impl UpdateRebase {
    /// The re-apply for `plan`, if its outcome on a row depends only on that row: no
    /// RETURNING (the client would have seen the row as first computed), no subquery or
    /// outer reference anywhere (they read other rows, under the statement's snapshot), and
    /// no SET target in the primary key or an index (index entries and claims are written
    /// for the values computed at statement time, and must stay right).
    pub fn for_plan(plan: &ModifyPlan, params: &[Datum], now: i64) -> Option<Arc<dyn Rebase>> {
        if plan.returning.is_some() || plan.sets.is_empty() {
            return None;
        }
        let meta = &plan.table;
        let keyed = |col: usize| {
            meta.primary_key.contains(&col) || meta.indexes.iter().any(|i| i.columns.contains(&col))
        };
        if plan.sets.iter().any(|(col, _)| keyed(*col)) {
            return None;
        }
        let exprs = plan
            .sets
            .iter()
            .map(|(_, e)| e)
            .chain(plan.scan.filter.as_ref());
        if !exprs.into_iter().all(row_local) {
            return None;
        }
        Some(Arc::new(UpdateRebase {
            table: meta.clone(),
            sets: plan.sets.clone(),
            filter: plan.scan.filter.clone(),
            params: params.to_vec(),
            now,
        }))
    }
}

/// Whether an expression reads nothing but the row, constants and parameters.
fn row_local(e: &Expr) -> bool {
    let mut local = true;
    e.visit(&mut |x| {
        if matches!(
            x,
            Expr::Outer(_)
                | Expr::Subquery(_)
                | Expr::Exists(..)
                | Expr::Array(_)
                | Expr::InSubquery(..)
        ) {
            local = false;
        }
    });
    local
}

impl Rebase for UpdateRebase {
    /// An evaluation error (say, an overflow on the newer value) fails the commit with a
    /// serialization failure: the statement already succeeded, and a retry of the
    /// transaction meets the error where it belongs, at the UPDATE.
    fn rebase(&self, newest: &[Datum]) -> Result<Option<Vec<Datum>>, TxnError> {
        let ctx = EvalCtx {
            params: &self.params,
            subqueries: &[],
            outer: None,
            now: self.now,
        };
        let recompute = || -> Result<Option<Vec<Datum>>, crate::sql::SqlError> {
            if let Some(filter) = &self.filter
                && !filter.test(newest, &ctx)?
            {
                return Ok(None);
            }
            let mut row = newest.to_vec();
            for (col, e) in &self.sets {
                row[*col] = assign(e.eval(newest, &ctx)?, self.table.columns[*col].ty)?;
            }
            check_not_null(&self.table, &row)?;
            Ok(Some(row))
        };
        recompute().map_err(|e| {
            tracing::debug!(error = %e, "re-applying an UPDATE at commit failed");
            TxnError::SerializationFailure
        })
    }
}
