//! Bound expressions (columns resolved to row positions, types known) and their evaluation.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use crate::datum::Datum;
use crate::sql::error::SqlError;
use crate::sql::func::{Func, call};
use crate::sql::sqltype::SqlType;
use crate::sql::types::PgType;
use crate::sql::value::{ArithOp, arith, cast, compare};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// =
    Eq,
    /// <>
    Ne,
    /// <
    Lt,
    /// <=
    Le,
    /// >
    Gt,
    /// >=
    Ge,
}

impl CmpOp {
    /// Whether an ordering satisfies the operator.
    pub fn holds(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        }
    }

    /// The operator with its operands swapped (`a < b` ⇔ `b > a`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            o => o,
        }
    }

    /// SQL spelling (EXPLAIN).
    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A bound scalar expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// A constant.
    Const(Datum),
    /// A statement parameter ($n, zero-based).
    Param(usize),
    /// A column of the input row.
    Column(usize),
    /// A column of the enclosing query's row (correlated subqueries), by position; replaced
    /// by the row's value before the subquery runs (`Plan::bind_outer`).
    Outer(usize),
    /// Arithmetic with the static result type.
    Arith(ArithOp, Box<Expr>, Box<Expr>, PgType),
    /// Comparison; `bpchar` ignores trailing blanks.
    Cmp(CmpOp, Box<Expr>, Box<Expr>, bool),
    /// AND
    And(Box<Expr>, Box<Expr>),
    /// OR
    Or(Box<Expr>, Box<Expr>),
    /// NOT
    Not(Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    /// String concatenation.
    Concat(Box<Expr>, Box<Expr>),
    /// IS [NOT] NULL
    IsNull(Box<Expr>, bool),
    /// IS [NOT] DISTINCT FROM (`true` = DISTINCT)
    Distinct(Box<Expr>, Box<Expr>, bool),
    /// x [NOT] IN (list)
    InList(Box<Expr>, Vec<Expr>, bool),
    /// x [NOT] IN (subquery), by subquery slot.
    InSubquery(Box<Expr>, usize, bool),
    /// A scalar subquery, by slot.
    Subquery(usize),
    /// [NOT] EXISTS (subquery), by slot.
    Exists(usize, bool),
    /// ARRAY(subquery), by slot: the first column of its rows as an array (text form).
    Array(usize),
    /// x [NOT] LIKE pattern (`true` = case-insensitive)
    Like(Box<Expr>, Box<Expr>, bool, bool),
    /// CASE [operand] WHEN .. THEN .. ELSE .. END
    Case(Option<Box<Expr>>, Vec<(Expr, Expr)>, Option<Box<Expr>>),
    /// CAST(x AS t)
    Cast(Box<Expr>, SqlType),
    /// A scalar function.
    Func(Func, Vec<Expr>),
}

/// A subquery's result as expressions see it.
#[derive(Debug, Clone)]
pub enum SubResult {
    /// Not computed yet (computed on first use per outer row for correlated subqueries).
    Pending,
    /// The rows (first column only matters for IN and scalar subqueries).
    Rows(Arc<Vec<Vec<Datum>>>),
    /// The rows as a set for IN, with whether a NULL was among them.
    Set(Arc<HashSet<Vec<u8>>>, bool),
}

/// What evaluation needs besides the row.
#[derive(Debug, Default)]
pub struct EvalCtx<'a> {
    /// Statement parameters.
    pub params: &'a [Datum],
    /// Results of uncorrelated subqueries, by slot.
    pub subqueries: &'a [SubResult],
    /// The enclosing row (correlated subqueries).
    pub outer: Option<&'a [Datum]>,
    /// The transaction's timestamp (now()).
    pub now: i64,
}

fn truth(d: &Datum) -> Result<Option<bool>, SqlError> {
    match d {
        Datum::Null => Ok(None),
        Datum::Bool(b) => Ok(Some(*b)),
        Datum::Text(s) => match cast(Datum::Text(s.clone()), SqlType::Bool)? {
            Datum::Bool(b) => Ok(Some(b)),
            _ => Ok(None),
        },
        other => Err(SqlError::new(
            "42804",
            format!(
                "argument of WHERE must be type boolean, not {:?}",
                other.kind()
            ),
        )),
    }
}

impl Expr {
    /// Evaluates against a row.
    pub fn eval(&self, row: &[Datum], ctx: &EvalCtx<'_>) -> Result<Datum, SqlError> {
        Ok(match self {
            Expr::Const(d) => d.clone(),
            Expr::Param(i) => ctx.params.get(*i).cloned().ok_or_else(|| {
                SqlError::new("08P01", format!("there is no parameter ${}", i + 1))
            })?,
            Expr::Column(i) => row.get(*i).cloned().unwrap_or(Datum::Null),
            Expr::Outer(i) => ctx
                .outer
                .and_then(|o| o.get(*i))
                .cloned()
                .unwrap_or(Datum::Null),
            Expr::Arith(op, a, b, t) => arith(*op, &a.eval(row, ctx)?, &b.eval(row, ctx)?, *t)?,
            Expr::Cmp(op, a, b, bpchar) => {
                let x = a.eval(row, ctx)?;
                let y = b.eval(row, ctx)?;
                match compare(&x, &y, *bpchar)? {
                    None => Datum::Null,
                    Some(o) => Datum::Bool(op.holds(o)),
                }
            }
            Expr::And(a, b) => {
                let x = truth(&a.eval(row, ctx)?)?;
                if x == Some(false) {
                    return Ok(Datum::Bool(false));
                }
                let y = truth(&b.eval(row, ctx)?)?;
                match (x, y) {
                    (_, Some(false)) => Datum::Bool(false),
                    (Some(true), Some(true)) => Datum::Bool(true),
                    _ => Datum::Null,
                }
            }
            Expr::Or(a, b) => {
                let x = truth(&a.eval(row, ctx)?)?;
                if x == Some(true) {
                    return Ok(Datum::Bool(true));
                }
                let y = truth(&b.eval(row, ctx)?)?;
                match (x, y) {
                    (_, Some(true)) => Datum::Bool(true),
                    (Some(false), Some(false)) => Datum::Bool(false),
                    _ => Datum::Null,
                }
            }
            Expr::Not(a) => match truth(&a.eval(row, ctx)?)? {
                None => Datum::Null,
                Some(b) => Datum::Bool(!b),
            },
            Expr::Neg(a) => match a.eval(row, ctx)? {
                Datum::Null => Datum::Null,
                Datum::Int(v) => Datum::Int(
                    v.checked_neg()
                        .ok_or_else(|| SqlError::new("22003", "integer out of range"))?,
                ),
                Datum::Decimal(x) => Datum::Decimal(-x),
                Datum::Float(f) => Datum::Float(-f),
                Datum::Text(s) => arith(
                    ArithOp::Sub,
                    &Datum::Int(0),
                    &cast(Datum::Text(s), SqlType::Numeric(None))?,
                    PgType::Numeric,
                )?,
                other => {
                    return Err(SqlError::new(
                        "42883",
                        format!("operator does not exist: - {:?}", other.kind()),
                    ));
                }
            },
            Expr::Concat(a, b) => {
                let x = a.eval(row, ctx)?;
                let y = b.eval(row, ctx)?;
                if x.is_null() || y.is_null() {
                    Datum::Null
                } else {
                    let xs = as_text(x)?;
                    let ys = as_text(y)?;
                    Datum::Text(xs + &ys)
                }
            }
            Expr::IsNull(a, negated) => Datum::Bool(a.eval(row, ctx)?.is_null() != *negated),
            Expr::Distinct(a, b, distinct) => {
                let x = a.eval(row, ctx)?;
                let y = b.eval(row, ctx)?;
                let same = match (x.is_null(), y.is_null()) {
                    (true, true) => true,
                    (false, false) => compare(&x, &y, false)? == Some(Ordering::Equal),
                    _ => false,
                };
                Datum::Bool(same != *distinct)
            }
            Expr::InList(a, list, negated) => {
                let x = a.eval(row, ctx)?;
                if x.is_null() {
                    return Ok(Datum::Null);
                }
                let mut saw_null = false;
                let mut found = false;
                for item in list {
                    let y = item.eval(row, ctx)?;
                    match compare(&x, &y, false)? {
                        None => saw_null = true,
                        Some(Ordering::Equal) => {
                            found = true;
                            break;
                        }
                        Some(_) => {}
                    }
                }
                in_result(found, saw_null, *negated)
            }
            Expr::InSubquery(a, slot, negated) => {
                let x = a.eval(row, ctx)?;
                if x.is_null() {
                    return Ok(Datum::Null);
                }
                match ctx.subqueries.get(*slot) {
                    Some(SubResult::Set(set, has_null)) => {
                        let found = set.contains(&hash_key(std::slice::from_ref(&x)));
                        in_result(found, *has_null, *negated)
                    }
                    Some(SubResult::Rows(rows)) => {
                        let mut found = false;
                        let mut saw_null = false;
                        for r in rows.iter() {
                            let y = r.first().cloned().unwrap_or(Datum::Null);
                            match compare(&x, &y, false)? {
                                None => saw_null = true,
                                Some(Ordering::Equal) => found = true,
                                Some(_) => {}
                            }
                        }
                        in_result(found, saw_null, *negated)
                    }
                    _ => return Err(SqlError::internal("subquery not evaluated")),
                }
            }
            Expr::Subquery(slot) => match ctx.subqueries.get(*slot) {
                Some(SubResult::Rows(rows)) => {
                    if rows.len() > 1 {
                        return Err(SqlError::new(
                            "21000",
                            "more than one row returned by a subquery used as an expression",
                        ));
                    }
                    rows.first()
                        .and_then(|r| r.first().cloned())
                        .unwrap_or(Datum::Null)
                }
                _ => return Err(SqlError::internal("subquery not evaluated")),
            },
            Expr::Array(slot) => match ctx.subqueries.get(*slot) {
                Some(SubResult::Rows(rows)) => {
                    let items: Vec<Datum> = rows
                        .iter()
                        .map(|r| r.first().cloned().unwrap_or(Datum::Null))
                        .collect();
                    Datum::Text(crate::sql::func::format_array(&items)?)
                }
                _ => return Err(SqlError::internal("subquery not evaluated")),
            },
            Expr::Exists(slot, negated) => match ctx.subqueries.get(*slot) {
                Some(SubResult::Rows(rows)) => Datum::Bool(rows.is_empty() == *negated),
                Some(SubResult::Set(set, n)) => Datum::Bool((set.is_empty() && !n) == *negated),
                _ => return Err(SqlError::internal("subquery not evaluated")),
            },
            Expr::Like(a, p, negated, ci) => {
                let x = a.eval(row, ctx)?;
                let y = p.eval(row, ctx)?;
                if x.is_null() || y.is_null() {
                    return Ok(Datum::Null);
                }
                let (mut s, mut pat) = (as_text(x)?, as_text(y)?);
                if *ci {
                    s = s.to_lowercase();
                    pat = pat.to_lowercase();
                }
                Datum::Bool(like(&s, &pat) != *negated)
            }
            Expr::Case(operand, whens, otherwise) => {
                let base = operand.as_ref().map(|o| o.eval(row, ctx)).transpose()?;
                for (cond, result) in whens {
                    let hit = match &base {
                        Some(b) => {
                            let c = cond.eval(row, ctx)?;
                            compare(b, &c, false)? == Some(Ordering::Equal)
                        }
                        None => truth(&cond.eval(row, ctx)?)? == Some(true),
                    };
                    if hit {
                        return result.eval(row, ctx);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(row, ctx)?,
                    None => Datum::Null,
                }
            }
            Expr::Cast(a, t) => cast(a.eval(row, ctx)?, *t)?,
            Expr::Func(f, args) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(a.eval(row, ctx)?);
                }
                call(*f, vals, ctx)?
            }
        })
    }

    /// Evaluates a predicate: only TRUE passes (NULL and FALSE do not).
    pub fn test(&self, row: &[Datum], ctx: &EvalCtx<'_>) -> Result<bool, SqlError> {
        Ok(truth(&self.eval(row, ctx)?)? == Some(true))
    }

    /// Whether the expression reads no column of its input (constants, parameters,
    /// subqueries), so it can be evaluated once, e.g. as a key bound.
    pub fn is_row_free(&self) -> bool {
        let mut free = true;
        self.visit(&mut |e| {
            if matches!(e, Expr::Column(_)) {
                free = false;
            }
        });
        free
    }

    /// The input columns the expression reads.
    pub fn columns(&self, out: &mut Vec<usize>) {
        self.visit(&mut |e| {
            if let Expr::Column(i) = e {
                out.push(*i);
            }
        });
    }

    /// Calls `f` on every node, parents first.
    pub fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Const(_)
            | Expr::Param(_)
            | Expr::Column(_)
            | Expr::Outer(_)
            | Expr::Subquery(_)
            | Expr::Array(_)
            | Expr::Exists(..) => {}
            Expr::Arith(_, a, b, _)
            | Expr::Cmp(_, a, b, _)
            | Expr::And(a, b)
            | Expr::Or(a, b)
            | Expr::Concat(a, b)
            | Expr::Distinct(a, b, _)
            | Expr::Like(a, b, _, _) => {
                a.visit(f);
                b.visit(f);
            }
            Expr::Not(a)
            | Expr::Neg(a)
            | Expr::IsNull(a, _)
            | Expr::Cast(a, _)
            | Expr::InSubquery(a, _, _) => a.visit(f),
            Expr::InList(a, list, _) => {
                a.visit(f);
                for e in list {
                    e.visit(f);
                }
            }
            Expr::Case(o, whens, e) => {
                if let Some(o) = o {
                    o.visit(f);
                }
                for (c, r) in whens {
                    c.visit(f);
                    r.visit(f);
                }
                if let Some(e) = e {
                    e.visit(f);
                }
            }
            Expr::Func(_, args) => {
                for a in args {
                    a.visit(f);
                }
            }
        }
    }

    /// Rewrites column positions (moving an expression onto another input layout).
    pub fn remap(&self, map: &dyn Fn(usize) -> usize) -> Expr {
        self.rewrite(&|e| match e {
            Expr::Column(i) => Some(Expr::Column(map(*i))),
            _ => None,
        })
    }

    /// Replaces the enclosing query's columns (`Expr::Outer`) by the values of one of its
    /// rows: a correlated subquery's plan becomes an ordinary one for that row.
    pub fn bind_outer(&self, outer: &[Datum]) -> Expr {
        self.rewrite(&|e| match e {
            Expr::Outer(i) => Some(Expr::Const(outer.get(*i).cloned().unwrap_or(Datum::Null))),
            _ => None,
        })
    }

    /// Whether the expression reads one of the subquery slots in `slots`.
    pub fn reads_slots(&self, slots: &[usize]) -> bool {
        let mut hit = false;
        self.visit(&mut |e| {
            if let Expr::Subquery(s)
            | Expr::Array(s)
            | Expr::Exists(s, _)
            | Expr::InSubquery(_, s, _) = e
                && slots.contains(s)
            {
                hit = true;
            }
        });
        hit
    }

    /// A copy with every node for which `f` returns a replacement replaced (parents first;
    /// a replaced node's children are not visited).
    pub fn rewrite(&self, f: &dyn Fn(&Expr) -> Option<Expr>) -> Expr {
        if let Some(e) = f(self) {
            return e;
        }
        let r = |e: &Expr| Box::new(e.rewrite(f));
        match self {
            Expr::Column(_)
            | Expr::Const(_)
            | Expr::Param(_)
            | Expr::Outer(_)
            | Expr::Subquery(_)
            | Expr::Array(_)
            | Expr::Exists(..) => self.clone(),
            Expr::Arith(op, a, b, t) => Expr::Arith(*op, r(a), r(b), *t),
            Expr::Cmp(op, a, b, bp) => Expr::Cmp(*op, r(a), r(b), *bp),
            Expr::And(a, b) => Expr::And(r(a), r(b)),
            Expr::Or(a, b) => Expr::Or(r(a), r(b)),
            Expr::Not(a) => Expr::Not(r(a)),
            Expr::Neg(a) => Expr::Neg(r(a)),
            Expr::Concat(a, b) => Expr::Concat(r(a), r(b)),
            Expr::IsNull(a, n) => Expr::IsNull(r(a), *n),
            Expr::Distinct(a, b, d) => Expr::Distinct(r(a), r(b), *d),
            Expr::InList(a, l, n) => {
                Expr::InList(r(a), l.iter().map(|e| e.rewrite(f)).collect(), *n)
            }
            Expr::InSubquery(a, s, n) => Expr::InSubquery(r(a), *s, *n),
            Expr::Like(a, b, n, ci) => Expr::Like(r(a), r(b), *n, *ci),
            Expr::Case(o, w, e) => Expr::Case(
                o.as_ref().map(|o| r(o)),
                w.iter()
                    .map(|(c, v)| (c.rewrite(f), v.rewrite(f)))
                    .collect(),
                e.as_ref().map(|e| r(e)),
            ),
            Expr::Cast(a, t) => Expr::Cast(r(a), *t),
            Expr::Func(func, args) => {
                Expr::Func(*func, args.iter().map(|e| e.rewrite(f)).collect())
            }
        }
    }
}

fn in_result(found: bool, saw_null: bool, negated: bool) -> Datum {
    if found {
        Datum::Bool(!negated)
    } else if saw_null {
        Datum::Null
    } else {
        Datum::Bool(negated)
    }
}

/// A byte key for hashing values by SQL equality (grouping, DISTINCT, hash joins, IN
/// sets): integers become decimals so that `1 = 1.0`, and the key encoding normalises
/// decimal scale and `-0.0`.
pub fn hash_key(values: &[Datum]) -> Vec<u8> {
    let norm: Vec<Datum> = values
        .iter()
        .map(|d| match d {
            Datum::Int(v) => Datum::Decimal(crate::datum::Decimal::from(*v)),
            other => other.clone(),
        })
        .collect();
    crate::encoding::key::encode_key(&norm)
}

/// A value as text (for `||`, LIKE and text functions).
pub fn as_text(d: Datum) -> Result<String, SqlError> {
    match cast(d, SqlType::Text)? {
        Datum::Text(s) => Ok(s),
        _ => Ok(String::new()),
    }
}

/// SQL LIKE with `%`, `_` and `\` escapes.
pub fn like(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    like_at(&s, &p)
}

fn like_at(s: &[char], p: &[char]) -> bool {
    let Some((&first, rest)) = p.split_first() else {
        return s.is_empty();
    };
    match first {
        '%' => (0..=s.len()).any(|i| like_at(&s[i..], rest)),
        '_' => !s.is_empty() && like_at(&s[1..], rest),
        '\\' if !rest.is_empty() => s.first() == rest.first() && like_at(&s[1..], &rest[1..]),
        c => s.first() == Some(&c) && like_at(&s[1..], rest),
    }
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn like_patterns() {
        assert!(like("hello", "h%o"));
        assert!(like("hello", "_ello"));
        assert!(!like("hello", "h_o"));
        assert!(like("50%", "50\\%"));
        assert!(like("", "%"));
    }
}
