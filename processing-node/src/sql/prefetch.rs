//! Reading a statement's fixed key lookups together: every primary-key lookup whose key is
//! given by constants and parameters alone is known before the statement runs, so all of
//! them go to the store in one batch instead of one round trip each, one after the other
//! (`SELECT … FROM customer, warehouse WHERE w_id = $1 AND c_w_id = w_id AND …` reads both
//! rows at once). The operators then find the records in the transaction's buffer.

use crate::keys::SqlTableId;
use crate::sql::error::SqlError;
use crate::sql::exec::{Exec, Row};
use crate::sql::expr::Expr;
use crate::sql::plan::{Access, Plan, ScanNode};
use crate::sql::txn_error;

impl Exec<'_> {
    /// Fetches the rows of every fixed key lookup in `plans` in one batch, when there are
    /// lookups on two tables or more (one lookup alone gains nothing). A key that does not
    /// evaluate is left to its operator, which reports the error in its place.
    pub async fn prefetch<'p>(
        &mut self,
        plans: impl IntoIterator<Item = &'p Plan>,
    ) -> Result<(), SqlError> {
        let mut scans = Vec::new();
        for plan in plans {
            fixed_lookups(plan, &mut scans);
        }
        if scans.len() < 2 {
            return Ok(());
        }
        let mut rows: Vec<(SqlTableId, Row)> = Vec::new();
        for scan in scans {
            let meta = &scan.table;
            let keys: &[Vec<Expr>] = match &scan.access {
                Access::PkPoint(key) => std::slice::from_ref(key),
                Access::PkMulti(keys) => keys,
                _ => continue,
            };
            let table = meta.store_id;
            for key in keys {
                if let Ok(Some(pk)) = self.key_values(meta, &meta.primary_key, key, &[]) {
                    rows.push((table, pk));
                }
            }
        }
        self.tx.prefetch(&rows).await.map_err(txn_error)
    }
}

/// Collects the scans of `plan` that read whole primary keys fixed before the statement
/// runs. Correlated subqueries (`Apply`) and the inner side of index joins depend on rows
/// and are not looked into.
fn fixed_lookups<'p>(plan: &'p Plan, out: &mut Vec<&'p ScanNode>) {
    match plan {
        Plan::Scan(scan) => {
            let fixed = match &scan.access {
                Access::PkPoint(key) => key.iter().all(is_fixed),
                Access::PkMulti(keys) => keys.iter().flatten().all(is_fixed),
                _ => false,
            };
            if fixed {
                out.push(scan);
            }
        }
        Plan::Filter(input, _)
        | Plan::Project(input, _)
        | Plan::Sort(input, _)
        | Plan::Distinct(input, _)
        | Plan::Limit { input, .. }
        | Plan::Aggregate { input, .. }
        | Plan::Window { input, .. }
        | Plan::ProjectSet { input, .. }
        | Plan::IndexJoin { left: input, .. } => fixed_lookups(input, out),
        Plan::NestedLoop { left, right, .. } | Plan::HashJoin { left, right, .. } => {
            fixed_lookups(left, out);
            fixed_lookups(right, out);
        }
        Plan::Union(inputs, _) => {
            for input in inputs {
                fixed_lookups(input, out);
            }
        }
        Plan::Apply { input, .. } => fixed_lookups(input, out),
        Plan::OneRow | Plan::Values(_) | Plan::Series(..) | Plan::Virtual(_) | Plan::Correlated => {
        }
    }
}

/// Whether an expression's value is known before any row or subquery is read: constants
/// and parameters, and casts and arithmetic over them.
fn is_fixed(e: &Expr) -> bool {
    match e {
        Expr::Const(_) | Expr::Param(_) => true,
        Expr::Cast(inner, _) | Expr::Neg(inner) => is_fixed(inner),
        Expr::Arith(_, a, b, _) => is_fixed(a) && is_fixed(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datum::Datum;

    #[test]
    fn only_constants_and_parameters_are_fixed() {
        assert!(is_fixed(&Expr::Param(0)));
        assert!(is_fixed(&Expr::Neg(Box::new(Expr::Const(Datum::Int(1))))));
        assert!(!is_fixed(&Expr::Column(0)));
        assert!(!is_fixed(&Expr::Outer(0)));
        assert!(!is_fixed(&Expr::Subquery(0)));
        assert!(!is_fixed(&Expr::Neg(Box::new(Expr::Column(1)))));
    }
}
