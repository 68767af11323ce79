//! Correlated subqueries run once per row of the query that encloses them (`Plan::Apply`).
//!
//! Catalog queries of psql and drivers read a column's default or collation with a scalar
//! subquery over the outer row; general SQL uses EXISTS and IN the same way. Each outer
//! row's values replace the subquery's outer references, so the subquery plans like any
//! other (a key equality on an outer column becomes a primary-key lookup).

use std::collections::HashSet;
use std::sync::Arc;

use crate::datum::Datum;
use crate::sql::error::SqlError;
use crate::sql::exec::{Exec, Row};
use crate::sql::expr::{EvalCtx, Expr, SubResult, hash_key};
use crate::sql::plan::{CorrelatedSub, Plan};

/// The error for a correlated subquery in a place that does not run one per row.
pub fn unattached() -> SqlError {
    SqlError::unsupported("a correlated subquery in this position")
}

/// A subquery's rows as the slot value its readers expect.
pub fn sub_result(rows: Vec<Row>, as_set: bool) -> SubResult {
    if !as_set {
        return SubResult::Rows(Arc::new(rows));
    }
    let mut set = HashSet::new();
    let mut has_null = false;
    for r in &rows {
        let v = r.first().cloned().unwrap_or(Datum::Null);
        if v.is_null() {
            has_null = true;
        } else {
            set.insert(hash_key(&[v]));
        }
    }
    SubResult::Set(Arc::new(set), has_null)
}

impl Exec<'_> {
    /// Runs `input`, then per row its correlated subqueries and the output expressions.
    pub async fn apply(
        &mut self,
        input: &Plan,
        subs: &[CorrelatedSub],
        exprs: &[Expr],
    ) -> Result<Vec<Row>, SqlError> {
        let rows = self.run(input).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            for s in subs {
                let plan = s.plan.bind_outer(&row);
                let result = self.run(&plan).await?;
                let slot = self
                    .subs
                    .get_mut(s.slot)
                    .ok_or_else(|| SqlError::internal("correlated subquery slot missing"))?;
                *slot = sub_result(result, s.as_set);
            }
            let ctx = EvalCtx {
                params: self.params,
                subqueries: &self.subs,
                outer: None,
                now: self.now,
            };
            out.push(
                exprs
                    .iter()
                    .map(|e| e.eval(&row, &ctx))
                    .collect::<Result<Row, _>>()?,
            );
        }
        Ok(out)
    }
}
