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
use crate::sql::func::parse_array;
use crate::sql::plan::{CorrelatedSub, Plan, SortKey, SrfCall, SrfKind, WindowCall};
use crate::sql::value::compare;
use std::cmp::Ordering;

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
    /// The evaluation context for expressions that read no outer row.
    pub fn eval_ctx(&self) -> EvalCtx<'_> {
        EvalCtx {
            params: self.params,
            subqueries: &self.subs,
            outer: None,
            now: self.now,
        }
    }

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
            let ctx = self.eval_ctx();
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

/// Orders two rows' sort-key values as ORDER BY does (NULLs last ascending, first
/// descending, unless NULLS FIRST/LAST says otherwise).
fn cmp_keys(a: &[Datum], b: &[Datum], keys: &[SortKey]) -> Result<Ordering, SqlError> {
    for ((x, y), k) in a.iter().zip(b).zip(keys) {
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) if k.nulls_first => Ordering::Less,
            (true, false) => Ordering::Greater,
            (false, true) if k.nulls_first => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let o = compare(x, y, false)?.unwrap_or(Ordering::Equal);
                if k.desc { o.reverse() } else { o }
            }
        };
        if o != Ordering::Equal {
            return Ok(o);
        }
    }
    Ok(Ordering::Equal)
}

/// Appends one column per window call: the row's number within its partition in the
/// window's order. Rows keep their input order.
pub fn window(
    mut rows: Vec<Row>,
    calls: &[WindowCall],
    ctx: &EvalCtx<'_>,
) -> Result<Vec<Row>, SqlError> {
    for call in calls {
        let mut keyed = Vec::with_capacity(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let part = call
                .partition
                .iter()
                .map(|e| e.eval(r, ctx))
                .collect::<Result<Row, _>>()?;
            let order = call
                .order
                .iter()
                .map(|k| k.expr.eval(r, ctx))
                .collect::<Result<Row, _>>()?;
            keyed.push((hash_key(&part), order, i));
        }
        // Group partitions together (any fixed order), then the window order inside each.
        let mut err = None;
        keyed.sort_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                cmp_keys(&a.1, &b.1, &call.order).unwrap_or_else(|e| {
                    err.get_or_insert(e);
                    Ordering::Equal
                })
            })
        });
        if let Some(e) = err {
            return Err(e);
        }
        let mut numbers = vec![0i64; rows.len()];
        let mut n = 0;
        for (j, (part, _, i)) in keyed.iter().enumerate() {
            n = if j > 0 && keyed[j - 1].0 == *part {
                n + 1
            } else {
                1
            };
            numbers[*i] = n;
        }
        for (r, n) in rows.iter_mut().zip(numbers) {
            r.push(Datum::Int(n));
        }
    }
    Ok(rows)
}

/// An array element as a value: integers (index keys) as numbers, anything else as text.
fn element(v: Option<String>) -> Datum {
    match v {
        None => Datum::Null,
        Some(s) => s.parse::<i64>().map_or(Datum::Text(s), Datum::Int),
    }
}

/// Expands each row by its set-returning functions (see `Plan::ProjectSet`).
pub fn project_set(
    rows: Vec<Row>,
    srfs: &[SrfCall],
    ctx: &EvalCtx<'_>,
) -> Result<Vec<Row>, SqlError> {
    let mut out = Vec::new();
    for row in rows {
        let mut results = Vec::with_capacity(srfs.len());
        for s in srfs {
            let items = match s.arg.eval(&row, ctx)? {
                Datum::Null => Vec::new(),
                d => parse_array(&crate::sql::expr::as_text(d)?)?,
            };
            let fields: Vec<Row> = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match s.kind {
                    SrfKind::Unnest => vec![element(v)],
                    SrfKind::ExpandArray => vec![element(v), Datum::Int(i as i64 + 1)],
                })
                .collect();
            results.push(fields);
        }
        let n = results.iter().map(Vec::len).max().unwrap_or(0);
        for j in 0..n {
            let mut r = row.clone();
            for (s, res) in srfs.iter().zip(&results) {
                match res.get(j) {
                    Some(f) => r.extend(f.iter().cloned()),
                    None => r.extend(std::iter::repeat_n(Datum::Null, s.kind.width())),
                }
            }
            out.push(r);
        }
    }
    Ok(out)
}
