//! The executor: runs a plan inside a transaction and materializes its rows.
//!
//! OLTP plans touch few rows, so operators hand whole row vectors to their parent instead
//! of streaming; what matters is the number of store round trips, which the access paths
//! and the batched index joins keep small.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use crate::datum::Datum;
use crate::sql::bind::SubPlan;
use crate::sql::catalog::{Catalog, TableMeta};
use crate::sql::error::SqlError;
use crate::sql::expr::{EvalCtx, Expr, SubResult, hash_key};
use crate::sql::pg_catalog;
use crate::sql::plan::{Access, AggCall, AggFunc, KeyRange, Plan, ScanNode, SortKey};
use crate::sql::pushdown::store_filter;
use crate::sql::sqltype::SqlType;
use crate::sql::txn_error;
use crate::sql::types::PgType;
use crate::sql::value::{ArithOp, arith, cast, compare};
use crate::txn::Transaction;

/// A row of values.
pub type Row = Vec<Datum>;

/// Lower and upper prefix bounds of a key scan.
type KeyBounds = (Bound<Row>, Bound<Row>);

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, SqlError>> + Send + 'a>>;

/// Everything a running statement needs.
pub struct Exec<'a> {
    /// The transaction.
    pub tx: &'a mut Transaction,
    /// Parameters.
    pub params: &'a [Datum],
    /// Evaluated subqueries.
    pub subs: Vec<SubResult>,
    /// The transaction's start time (now()).
    pub now: i64,
    /// The catalog (for catalog views).
    pub catalog: &'a Catalog,
    /// Set by a cancel request.
    pub cancel: &'a AtomicBool,
}

fn cancelled(flag: &AtomicBool) -> Result<(), SqlError> {
    if flag.swap(false, AtomicOrdering::Relaxed) {
        return Err(SqlError::new(
            "57014",
            "canceling statement due to user request",
        ));
    }
    Ok(())
}

/// Converts a value to a key column's type. `None` = no stored key can equal it (NULL, or a
/// value the column cannot hold); `exact` = false when the conversion rounded.
fn key_value(d: Datum, ty: SqlType) -> Result<Option<(Datum, bool)>, SqlError> {
    if d.is_null() {
        return Ok(None);
    }
    if let (SqlType::Char(n), Datum::Text(s)) = (ty, &d)
        && s.trim_end_matches(' ').chars().count() > n as usize
    {
        return Ok(None);
    }
    let kind_ok = matches!(
        (ty, &d),
        (SqlType::Int2 | SqlType::Int4 | SqlType::Int8, Datum::Int(_))
            | (SqlType::Numeric(_), Datum::Decimal(_))
            | (SqlType::Float4 | SqlType::Float8, Datum::Float(_))
            | (SqlType::Text | SqlType::Varchar(_), Datum::Text(_))
            | (SqlType::Date, Datum::Date(_))
            | (SqlType::Timestamp, Datum::Timestamp(_))
            | (SqlType::Bool, Datum::Bool(_))
    );
    if kind_ok {
        // Values outside a narrower integer type simply match nothing.
        return Ok(Some((d, true)));
    }
    let converted = match ty {
        SqlType::Int2 | SqlType::Int4 | SqlType::Int8 => match cast(d.clone(), SqlType::Int8) {
            Ok(v) => v,
            Err(e) if e.code == "22003" => return Ok(None),
            Err(e) => return Err(e),
        },
        SqlType::Numeric(_) => cast(d.clone(), SqlType::Numeric(None))?,
        SqlType::Char(n) => cast(d.clone(), SqlType::Char(n))?,
        other => cast(d.clone(), other)?,
    };
    let exact = compare(&d, &converted, matches!(ty, SqlType::Char(_)))? == Some(Ordering::Equal);
    Ok(Some((converted, exact)))
}

impl<'a> Exec<'a> {
    /// Evaluates the statement's subqueries (in slot order: inner ones come first).
    pub async fn prepare_subqueries(&mut self, subs: &[SubPlan]) -> Result<(), SqlError> {
        self.subs = vec![SubResult::Pending; subs.len()];
        for (i, s) in subs.iter().enumerate() {
            let rows = self.run(&s.plan.plan).await?;
            self.subs[i] = crate::sql::apply::sub_result(rows, s.as_set);
        }
        Ok(())
    }

    /// Evaluates an expression that reads no row.
    pub fn eval_free(&self, e: &Expr) -> Result<Datum, SqlError> {
        let ctx = self.eval_ctx();
        e.eval(&[], &ctx)
    }

    fn count(&self, e: &Option<Expr>, what: &str) -> Result<Option<usize>, SqlError> {
        let Some(e) = e else { return Ok(None) };
        match cast(self.eval_free(e)?, SqlType::Int8)? {
            Datum::Null => Ok(None),
            Datum::Int(v) if v >= 0 => Ok(Some(v as usize)),
            _ => Err(SqlError::new(
                "2201W",
                format!("{what} must not be negative"),
            )),
        }
    }

    /// Runs a plan to completion.
    pub fn run<'b>(&'b mut self, plan: &'b Plan) -> BoxFut<'b, Vec<Row>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            cancelled(self.cancel)?;
            Ok(match plan {
                Plan::OneRow => vec![Vec::new()],
                Plan::Values(rows) => {
                    let mut out = Vec::with_capacity(rows.len());
                    for r in rows {
                        out.push(
                            r.iter()
                                .map(|e| self.eval_free(e))
                                .collect::<Result<Row, _>>()?,
                        );
                    }
                    out
                }
                Plan::Scan(s) => self.scan(s).await?,
                Plan::Series(start, stop, step) => {
                    let int = |d: Datum| -> Result<Option<i64>, SqlError> {
                        match cast(d, SqlType::Int8)? {
                            Datum::Int(v) => Ok(Some(v)),
                            _ => Ok(None),
                        }
                    };
                    let (Some(a), Some(b)) =
                        (int(self.eval_free(start)?)?, int(self.eval_free(stop)?)?)
                    else {
                        return Ok(Vec::new());
                    };
                    let step = match step {
                        Some(s) => int(self.eval_free(s)?)?.unwrap_or(1),
                        None => 1,
                    };
                    if step == 0 {
                        return Err(SqlError::new("22023", "step size cannot equal zero"));
                    }
                    let mut out = Vec::new();
                    let mut v = a;
                    while (step > 0 && v <= b) || (step < 0 && v >= b) {
                        out.push(vec![Datum::Int(v)]);
                        if out.len() % 65536 == 0 {
                            cancelled(self.cancel)?;
                        }
                        match v.checked_add(step) {
                            Some(n) => v = n,
                            None => break,
                        }
                    }
                    out
                }
                Plan::Virtual(v) => pg_catalog::rows(*v, self.catalog),
                Plan::Filter(input, pred) => {
                    let rows = self.run(input).await?;
                    let ctx = self.eval_ctx();
                    let mut out = Vec::new();
                    for r in rows {
                        if pred.test(&r, &ctx)? {
                            out.push(r);
                        }
                    }
                    out
                }
                Plan::Project(input, exprs) => {
                    let rows = self.run(input).await?;
                    let ctx = self.eval_ctx();
                    let mut out = Vec::with_capacity(rows.len());
                    for r in rows {
                        out.push(
                            exprs
                                .iter()
                                .map(|e| e.eval(&r, &ctx))
                                .collect::<Result<Row, _>>()?,
                        );
                    }
                    out
                }
                Plan::NestedLoop {
                    left,
                    right,
                    on,
                    left_join,
                    right_width,
                } => {
                    let l = self.run(left).await?;
                    let r = self.run(right).await?;
                    let ctx = self.eval_ctx();
                    let mut out = Vec::new();
                    for lr in &l {
                        let mut matched = false;
                        for rr in &r {
                            let mut row = lr.clone();
                            row.extend(rr.iter().cloned());
                            if on.as_ref().map_or(Ok(true), |p| p.test(&row, &ctx))? {
                                matched = true;
                                out.push(row);
                            }
                        }
                        if !matched && *left_join {
                            let mut row = lr.clone();
                            row.extend(std::iter::repeat_n(Datum::Null, *right_width));
                            out.push(row);
                        }
                    }
                    out
                }
                Plan::IndexJoin {
                    left,
                    right,
                    key,
                    on,
                    left_join,
                } => {
                    let l = self.run(left).await?;
                    self.index_join(l, right, key, on.as_ref(), *left_join)
                        .await?
                }
                Plan::HashJoin {
                    left,
                    right,
                    left_keys,
                    right_keys,
                    on,
                    left_join,
                    right_width,
                } => {
                    let l = self.run(left).await?;
                    let r = self.run(right).await?;
                    let ctx = self.eval_ctx();
                    let mut table: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
                    for (i, rr) in r.iter().enumerate() {
                        let k = right_keys
                            .iter()
                            .map(|e| e.eval(rr, &ctx))
                            .collect::<Result<Row, _>>()?;
                        if k.iter().any(Datum::is_null) {
                            continue;
                        }
                        table.entry(hash_key(&k)).or_default().push(i);
                    }
                    let mut out = Vec::new();
                    for lr in l {
                        let k = left_keys
                            .iter()
                            .map(|e| e.eval(&lr, &ctx))
                            .collect::<Result<Row, _>>()?;
                        let mut matched = false;
                        if !k.iter().any(Datum::is_null)
                            && let Some(hits) = table.get(&hash_key(&k))
                        {
                            for &i in hits {
                                let mut row = lr.clone();
                                row.extend(r[i].iter().cloned());
                                if on.as_ref().map_or(Ok(true), |p| p.test(&row, &ctx))? {
                                    matched = true;
                                    out.push(row);
                                }
                            }
                        }
                        if !matched && *left_join {
                            let mut row = lr;
                            row.extend(std::iter::repeat_n(Datum::Null, *right_width));
                            out.push(row);
                        }
                    }
                    out
                }
                Plan::Aggregate {
                    input,
                    groups,
                    aggs,
                } => {
                    let rows = self.run(input).await?;
                    let ctx = self.eval_ctx();
                    aggregate(rows, groups, aggs, &ctx)?
                }
                Plan::Sort(input, keys) => {
                    let rows = self.run(input).await?;
                    let ctx = self.eval_ctx();
                    sort(rows, keys, &ctx)?
                }
                Plan::Distinct(input, n) => {
                    let rows = self.run(input).await?;
                    let mut seen = HashSet::new();
                    rows.into_iter()
                        .filter(|r| seen.insert(hash_key(&r[..(*n).min(r.len())])))
                        .collect()
                }
                Plan::Limit {
                    input,
                    limit,
                    offset,
                } => {
                    let rows = self.run(input).await?;
                    let limit = self.count(limit, "LIMIT")?;
                    let offset = self.count(offset, "OFFSET")?.unwrap_or(0);
                    rows.into_iter()
                        .skip(offset)
                        .take(limit.unwrap_or(usize::MAX))
                        .collect()
                }
                Plan::Union(inputs, all) => {
                    let mut out = Vec::new();
                    for i in inputs {
                        out.extend(self.run(i).await?);
                    }
                    if !all {
                        let mut seen = HashSet::new();
                        out.retain(|r| seen.insert(hash_key(r)));
                    }
                    out
                }
                Plan::Apply { input, subs, exprs } => self.apply(input, subs, exprs).await?,
                Plan::Correlated => return Err(crate::sql::apply::unattached()),
                Plan::ProjectSet { input, srfs } => {
                    let rows = self.run(input).await?;
                    crate::sql::apply::project_set(rows, srfs, &self.eval_ctx())?
                }
                Plan::Window { input, calls } => {
                    let rows = self.run(input).await?;
                    crate::sql::apply::window(rows, calls, &self.eval_ctx())?
                }
            })
        })
    }

    /// Key values for a table's key columns from expressions (no row, or an outer row).
    pub(crate) fn key_values(
        &self,
        meta: &TableMeta,
        cols: &[usize],
        exprs: &[Expr],
        row: &[Datum],
    ) -> Result<Option<Row>, SqlError> {
        let ctx = self.eval_ctx();
        let mut out = Vec::with_capacity(exprs.len());
        for (e, c) in exprs.iter().zip(cols) {
            let ty = meta.columns.get(*c).map_or(SqlType::Text, |m| m.ty);
            match key_value(e.eval(row, &ctx)?, ty)? {
                Some((v, true)) => out.push(v),
                _ => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// Lower and upper prefix bounds of a key range; `None` when nothing can match.
    fn bounds(
        &self,
        meta: &TableMeta,
        cols: &[usize],
        r: &KeyRange,
    ) -> Result<Option<KeyBounds>, SqlError> {
        let Some(eq) = self.key_values(meta, cols, &r.eq, &[])? else {
            return Ok(None);
        };
        let next_ty = cols
            .get(eq.len())
            .and_then(|c| meta.columns.get(*c))
            .map_or(SqlType::Text, |m| m.ty);
        let bound = |b: &Option<(Expr, bool)>| -> Result<Option<Bound<Row>>, SqlError> {
            Ok(match b {
                None if eq.is_empty() => Some(Bound::Unbounded),
                None => Some(Bound::Included(eq.clone())),
                Some((e, incl)) => match key_value(self.eval_free(e)?, next_ty)? {
                    None => None,
                    Some((v, exact)) => {
                        let mut k = eq.clone();
                        k.push(v);
                        Some(if *incl || !exact {
                            Bound::Included(k)
                        } else {
                            Bound::Excluded(k)
                        })
                    }
                },
            })
        };
        let (Some(lo), Some(hi)) = (bound(&r.lower)?, bound(&r.upper)?) else {
            return Ok(None);
        };
        Ok(Some((lo, hi)))
    }

    async fn scan(&mut self, s: &ScanNode) -> Result<Vec<Row>, SqlError> {
        let meta = s.table.clone();
        let def = meta.def();
        let want = self.count(&s.limit, "LIMIT")?;
        let mut rows: Vec<Row> = match &s.access {
            Access::PkPoint(key) => {
                let Some(pk) = self.key_values(&meta, &meta.primary_key, key, &[])? else {
                    return Ok(Vec::new());
                };
                let row = if s.for_update {
                    self.tx.get_for_update(&def, &pk).await
                } else {
                    self.tx.get(&def, &pk).await
                }
                .map_err(txn_error)?;
                return self.filter_rows(row.into_iter().collect(), s.filter.as_ref());
            }
            Access::PkMulti(keys) => {
                let mut pks = Vec::new();
                let mut seen = HashSet::new();
                for k in keys {
                    if let Some(pk) = self.key_values(&meta, &meta.primary_key, k, &[])?
                        && seen.insert(hash_key(&pk))
                    {
                        pks.push(pk);
                    }
                }
                pks.sort();
                let found = self.tx.get_many(&def, &pks).await.map_err(txn_error)?;
                found.into_iter().flatten().collect()
            }
            Access::PkPrefixes(prefixes) => {
                let pushed = store_filter(&meta, s.filter.as_ref(), &self.eval_ctx());
                let mut seen = HashSet::new();
                let mut out = Vec::new();
                for p in prefixes {
                    let r = KeyRange {
                        eq: p.clone(),
                        lower: None,
                        upper: None,
                    };
                    let Some((lo, hi)) = self.bounds(&meta, &meta.primary_key, &r)? else {
                        continue;
                    };
                    if let Bound::Included(k) = &lo
                        && !seen.insert(hash_key(k))
                    {
                        continue;
                    }
                    let raw = self
                        .tx
                        .scan_matching(&def, as_slices(&lo), as_slices(&hi), 0, pushed.as_ref())
                        .await
                        .map_err(txn_error)?;
                    out.extend(raw);
                }
                out
            }
            Access::Full | Access::PkRange(_) | Access::Index(..) => {
                let pushed = match &s.access {
                    Access::Index(..) => None,
                    _ => store_filter(&meta, s.filter.as_ref(), &self.eval_ctx()),
                };
                let mut fetch = want.map_or(0, |w| (w + w / 2).max(8));
                loop {
                    let raw = match &s.access {
                        Access::Index(i, r) => {
                            let Some(index) = def.indexes.get(*i) else {
                                return Err(SqlError::internal("index vanished"));
                            };
                            let cols = &meta.indexes[*i].columns;
                            let Some((lo, hi)) = self.bounds(&meta, cols, r)? else {
                                return Ok(Vec::new());
                            };
                            self.tx
                                .index_scan(&def, index, as_slices(&lo), as_slices(&hi), fetch)
                                .await
                                .map_err(txn_error)?
                        }
                        Access::PkRange(r) => {
                            let Some((lo, hi)) = self.bounds(&meta, &meta.primary_key, r)? else {
                                return Ok(Vec::new());
                            };
                            self.tx
                                .scan_matching(
                                    &def,
                                    as_slices(&lo),
                                    as_slices(&hi),
                                    fetch,
                                    pushed.as_ref(),
                                )
                                .await
                                .map_err(txn_error)?
                        }
                        _ => self
                            .tx
                            .scan_matching(
                                &def,
                                Bound::Unbounded,
                                Bound::Unbounded,
                                fetch,
                                pushed.as_ref(),
                            )
                            .await
                            .map_err(txn_error)?,
                    };
                    let complete = fetch == 0 || raw.len() < fetch;
                    let passed = self.filter_rows(raw, s.filter.as_ref())?;
                    if complete || want.is_some_and(|w| passed.len() >= w) {
                        break passed;
                    }
                    fetch = fetch.saturating_mul(4);
                }
            }
        };
        if matches!(s.access, Access::PkMulti(_) | Access::PkPrefixes(_)) {
            rows = self.filter_rows(rows, s.filter.as_ref())?;
        }
        if let Some(w) = want {
            rows.truncate(w);
        }
        if s.for_update {
            // The lock returns the row's newest committed form under READ COMMITTED (the
            // same row otherwise): a changed row is kept only if it still qualifies.
            let mut locked = Vec::with_capacity(rows.len());
            for r in rows {
                let newest = self
                    .tx
                    .get_for_update(&def, &def.pk_of(&r))
                    .await
                    .map_err(txn_error)?;
                match newest {
                    Some(n) if n == r => locked.push(r),
                    Some(n) if self.still_qualifies(s, &r, &n)? => locked.push(n),
                    _ => {}
                }
            }
            rows = locked;
        }
        Ok(rows)
    }

    /// Whether a row that changed since the statement's snapshot (READ COMMITTED) still
    /// qualifies for the scan that found it: the residual filter must hold on its newest
    /// form. The access path's own conditions hold for a primary-key path (a key never
    /// changes in place); for an index path, a change of the indexed columns is not
    /// re-checked against the range but fails with a serialization failure.
    pub(crate) fn still_qualifies(
        &self,
        s: &ScanNode,
        old: &Row,
        newest: &Row,
    ) -> Result<bool, SqlError> {
        if let Access::Index(i, _) = &s.access {
            let def = s.table.def();
            let moved = def
                .indexes
                .get(*i)
                .is_none_or(|index| index.values_of(old) != index.values_of(newest));
            if moved {
                return Err(txn_error(crate::txn::TxnError::SerializationFailure));
            }
        }
        let kept = self.filter_rows(vec![newest.clone()], s.filter.as_ref())?;
        Ok(!kept.is_empty())
    }

    fn filter_rows(&self, rows: Vec<Row>, filter: Option<&Expr>) -> Result<Vec<Row>, SqlError> {
        let Some(f) = filter else { return Ok(rows) };
        let ctx = self.eval_ctx();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            if f.test(&r, &ctx)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn index_join(
        &mut self,
        left: Vec<Row>,
        right: &ScanNode,
        key: &[Expr],
        on: Option<&Expr>,
        left_join: bool,
    ) -> Result<Vec<Row>, SqlError> {
        let meta = right.table.clone();
        let def = meta.def();
        let mut keys: Vec<Option<Row>> = Vec::with_capacity(left.len());
        let mut unique: Vec<Row> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        for lr in &left {
            let k = self.key_values(&meta, &meta.primary_key, key, lr)?;
            if let Some(k) = &k {
                let h = hash_key(k);
                if let std::collections::hash_map::Entry::Vacant(e) = index.entry(h) {
                    e.insert(unique.len());
                    unique.push(k.clone());
                }
            }
            keys.push(k);
        }
        let found: Vec<Option<Row>> = if right.for_update {
            let mut v = Vec::with_capacity(unique.len());
            for k in &unique {
                v.push(self.tx.get_for_update(&def, k).await.map_err(txn_error)?);
            }
            v
        } else {
            self.tx.get_many(&def, &unique).await.map_err(txn_error)?
        };
        let ctx = self.eval_ctx();
        let width = meta.columns.len();
        let mut out = Vec::new();
        for (lr, k) in left.into_iter().zip(keys) {
            let hit = k
                .and_then(|k| index.get(&hash_key(&k)).copied())
                .and_then(|i| found.get(i).cloned().flatten());
            let mut matched = false;
            if let Some(rr) = hit {
                let mut row = lr.clone();
                row.extend(rr);
                if on.map_or(Ok(true), |p| p.test(&row, &ctx))? {
                    matched = true;
                    out.push(row);
                }
            }
            if !matched && left_join {
                let mut row = lr;
                row.extend(std::iter::repeat_n(Datum::Null, width));
                out.push(row);
            }
        }
        Ok(out)
    }
}

fn as_slices(b: &Bound<Row>) -> Bound<&[Datum]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Sorts rows by keys (NULL placement per key; SQL comparison across numeric types).
pub fn sort(rows: Vec<Row>, keys: &[SortKey], ctx: &EvalCtx<'_>) -> Result<Vec<Row>, SqlError> {
    let mut keyed = Vec::with_capacity(rows.len());
    for r in rows {
        let k = keys
            .iter()
            .map(|s| s.expr.eval(&r, ctx))
            .collect::<Result<Row, _>>()?;
        keyed.push((k, r));
    }
    let mut error = None;
    keyed.sort_by(|(a, _), (b, _)| {
        for (i, s) in keys.iter().enumerate() {
            let (x, y) = (&a[i], &b[i]);
            let o = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => {
                    if s.nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (false, true) => {
                    if s.nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (false, false) => {
                    let o = match compare(x, y, false) {
                        Ok(o) => o.unwrap_or(Ordering::Equal),
                        Err(e) => {
                            error.get_or_insert(e);
                            Ordering::Equal
                        }
                    };
                    if s.desc { o.reverse() } else { o }
                }
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    if let Some(e) = error {
        return Err(e);
    }
    Ok(keyed.into_iter().map(|(_, r)| r).collect())
}

/// One aggregate's running state.
#[derive(Debug, Clone)]
enum Acc {
    Count(i64),
    Sum(Datum),
    Avg(Datum, i64),
    MinMax(Datum),
    Text(Option<String>),
}

fn new_acc(a: &AggCall) -> Acc {
    match a.func {
        AggFunc::Count | AggFunc::CountStar => Acc::Count(0),
        AggFunc::Sum => Acc::Sum(Datum::Null),
        AggFunc::Avg => Acc::Avg(Datum::Null, 0),
        AggFunc::Min | AggFunc::Max => Acc::MinMax(Datum::Null),
        AggFunc::StringAgg => Acc::Text(None),
    }
}

fn feed(acc: &mut Acc, a: &AggCall, v: Datum) -> Result<(), SqlError> {
    match acc {
        Acc::Count(n) => {
            if a.func == AggFunc::CountStar || !v.is_null() {
                *n += 1;
            }
        }
        Acc::Sum(s) => {
            if !v.is_null() {
                let v = match a.ty {
                    PgType::Numeric => cast(v, SqlType::Numeric(None))?,
                    PgType::Float8 => cast(v, SqlType::Float8)?,
                    _ => v,
                };
                *s = if s.is_null() {
                    v
                } else {
                    arith(ArithOp::Add, s, &v, a.ty)?
                };
            }
        }
        Acc::Avg(s, n) => {
            if !v.is_null() {
                let v = match a.ty {
                    PgType::Float8 => cast(v, SqlType::Float8)?,
                    _ => cast(v, SqlType::Numeric(None))?,
                };
                *s = if s.is_null() {
                    v
                } else {
                    arith(ArithOp::Add, s, &v, a.ty)?
                };
                *n += 1;
            }
        }
        Acc::MinMax(m) => {
            if !v.is_null() {
                let replace = m.is_null()
                    || match compare(&v, m, false)? {
                        Some(Ordering::Less) => a.func == AggFunc::Min,
                        Some(Ordering::Greater) => a.func == AggFunc::Max,
                        _ => false,
                    };
                if replace {
                    *m = v;
                }
            }
        }
        Acc::Text(t) => {
            if !v.is_null() {
                let v = crate::sql::expr::as_text(v)?;
                match t {
                    Some(t) => t.extend([a.sep.as_deref().unwrap_or(""), &v]),
                    None => *t = Some(v),
                }
            }
        }
    }
    Ok(())
}

fn finish(acc: Acc, a: &AggCall) -> Result<Datum, SqlError> {
    Ok(match acc {
        Acc::Count(n) => Datum::Int(n),
        Acc::Sum(s) => s,
        Acc::Avg(s, n) => {
            if n == 0 {
                Datum::Null
            } else {
                arith(ArithOp::Div, &s, &Datum::Int(n), a.ty)?
            }
        }
        Acc::MinMax(m) => m,
        Acc::Text(t) => t.map_or(Datum::Null, Datum::Text),
    })
}

/// Groups rows and computes aggregates; without GROUP BY, one row even for no input.
fn aggregate(
    rows: Vec<Row>,
    groups: &[Expr],
    aggs: &[AggCall],
    ctx: &EvalCtx<'_>,
) -> Result<Vec<Row>, SqlError> {
    struct Group {
        values: Row,
        accs: Vec<Acc>,
        seen: Vec<HashSet<Vec<u8>>>,
    }
    let mut order: Vec<Group> = Vec::new();
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in rows {
        let values = groups
            .iter()
            .map(|g| g.eval(&r, ctx))
            .collect::<Result<Row, _>>()?;
        let key = hash_key(&values);
        let gi = match index.get(&key) {
            Some(i) => *i,
            None => {
                index.insert(key, order.len());
                order.push(Group {
                    values,
                    accs: aggs.iter().map(new_acc).collect(),
                    seen: vec![HashSet::new(); aggs.len()],
                });
                order.len() - 1
            }
        };
        let g = &mut order[gi];
        for (j, a) in aggs.iter().enumerate() {
            let v = match &a.arg {
                Some(e) => e.eval(&r, ctx)?,
                None => Datum::Null,
            };
            if a.distinct && (v.is_null() || !g.seen[j].insert(hash_key(std::slice::from_ref(&v))))
            {
                continue;
            }
            feed(&mut g.accs[j], a, v)?;
        }
    }
    if order.is_empty() && groups.is_empty() {
        order.push(Group {
            values: Vec::new(),
            accs: aggs.iter().map(new_acc).collect(),
            seen: Vec::new(),
        });
    }
    let mut out = Vec::with_capacity(order.len());
    for g in order {
        let mut row = g.values;
        for (acc, a) in g.accs.into_iter().zip(aggs) {
            row.push(finish(acc, a)?);
        }
        out.push(row);
    }
    Ok(out)
}
