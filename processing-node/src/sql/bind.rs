//! Binding: resolving names in parsed expressions to row positions, typing them, and
//! inferring parameter types from where parameters are used.

use std::sync::Arc;

use sqlparser::ast::{self, BinaryOperator, UnaryOperator, Value};

use crate::datum::{Datum, Decimal};
use crate::sql::catalog::Catalog;
use crate::sql::error::SqlError;
use crate::sql::expr::{CmpOp, Expr};
use crate::sql::func::Func;
use crate::sql::plan::{AggCall, AggFunc, Plan, QueryPlan, SortKey, SrfCall, SrfKind, WindowCall};
use crate::sql::sqltype::SqlType;
use crate::sql::types::PgType;
use crate::sql::value::{ArithOp, cast};

/// A column visible to expressions: which relation it belongs to, its name and type.
#[derive(Debug, Clone)]
pub struct ScopeCol {
    /// The relation's name or alias.
    pub rel: String,
    /// The column name.
    pub name: String,
    /// Its type.
    pub ty: PgType,
    /// The declared type (for key coercion), when it comes from a table.
    pub sql: Option<SqlType>,
    /// Not part of `*` (hidden row ids).
    pub hidden: bool,
}

/// The columns of an operator's output, in order.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The columns.
    pub cols: Vec<ScopeCol>,
}

impl Scope {
    /// Resolves `[rel.]name` to a position; 42703 / 42702 when missing / ambiguous.
    pub fn resolve(&self, rel: Option<&str>, name: &str) -> Result<Option<usize>, SqlError> {
        let mut found = None;
        for (i, c) in self.cols.iter().enumerate() {
            if c.name == name && rel.is_none_or(|r| r == c.rel) {
                if found.is_some() {
                    return Err(SqlError::new(
                        "42702",
                        format!("column reference \"{name}\" is ambiguous"),
                    ));
                }
                found = Some(i);
            }
        }
        Ok(found)
    }
}

/// A subquery planned inside an expression, evaluated before the statement's main plan.
#[derive(Debug, Clone)]
pub struct SubPlan {
    /// The subquery.
    pub plan: QueryPlan,
    /// Used with IN (results kept as a set).
    pub as_set: bool,
}

/// Grouping context while binding the expressions above an aggregate.
#[derive(Debug, Clone)]
pub(crate) struct AggCtx {
    /// GROUP BY expressions as written (matched by their SQL text).
    pub group_keys: Vec<String>,
    /// Aggregate calls found so far, with their SQL text.
    pub aggs: Vec<(String, AggCall)>,
    /// The scope below the aggregate.
    pub input: Scope,
}

/// Plans one statement: binding state shared by all its expressions.
pub struct Planner<'a> {
    /// The catalog of the statement's transaction.
    pub catalog: &'a Catalog,
    /// Parameter types, inferred as they are used.
    pub params: Vec<PgType>,
    /// Subqueries by slot.
    pub subqueries: Vec<SubPlan>,
    pub(crate) agg: Option<AggCtx>,
    /// Scopes of enclosing queries: the last one is the immediate parent, whose columns a
    /// correlated subquery reads as `Expr::Outer`.
    pub(crate) outer: Vec<Scope>,
    /// One flag per enclosing query in `outer`: whether the subquery being planned read a
    /// column of that parent.
    pub(crate) correlated: Vec<bool>,
    /// Correlated subqueries planned but not yet attached to the `Plan::Apply` of the query
    /// that reads them (by slot, with the plan run once per outer row).
    pub(crate) pending: Vec<(usize, QueryPlan)>,
    /// Window function calls found while binding a SELECT's outputs.
    pub(crate) windows: Vec<WindowCall>,
    /// Where the select being bound puts window results: its input width and the first
    /// of its calls in `windows` (none outside a SELECT list or ORDER BY).
    pub(crate) window_base: Option<(usize, usize)>,
    /// Set-returning function calls found while binding a SELECT's outputs, with their SQL
    /// text (the same call written twice is computed once).
    pub(crate) srfs: Vec<(String, SrfCall)>,
    /// Like `window_base`, for set-returning functions.
    pub(crate) srf_base: Option<(usize, usize)>,
    /// The record field names of the output columns of the SELECT planned last (for the
    /// columns of a derived table).
    pub(crate) output_records: Vec<Option<&'static [&'static str]>>,
    /// Columns of derived tables that hold records: relation, column, field names.
    pub(crate) record_cols: Vec<(String, String, &'static [&'static str])>,
}

/// The lower-cased (unless quoted) name of an identifier.
pub fn ident(i: &ast::Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// The last part of an object name (schema qualifiers are ignored: one schema).
pub fn object_name(n: &ast::ObjectName) -> String {
    n.0.last()
        .and_then(|p| p.as_ident())
        .map(ident)
        .unwrap_or_default()
}

/// The parts of an object name.
pub fn object_parts(n: &ast::ObjectName) -> Vec<String> {
    n.0.iter().filter_map(|p| p.as_ident()).map(ident).collect()
}

fn int_family(t: PgType) -> u8 {
    match t {
        PgType::Int2 => 1,
        PgType::Int4 => 2,
        PgType::Int8 => 3,
        _ => 0,
    }
}

/// Whether a type is one of the character types.
pub fn is_text(t: PgType) -> bool {
    matches!(t, PgType::Text | PgType::Varchar | PgType::Bpchar)
}

/// The result type of arithmetic on two types.
fn arith_type(op: ArithOp, a: PgType, b: PgType) -> PgType {
    use PgType::*;
    match (a, b) {
        (Date, Date) if op == ArithOp::Sub => Int4,
        (Date, _) | (_, Date) => Date,
        (Float4 | Float8, _) | (_, Float4 | Float8) => Float8,
        (Numeric, _) | (_, Numeric) => Numeric,
        (Unknown, Unknown) => Numeric,
        (Unknown, t) | (t, Unknown) => t,
        (x, y) if int_family(x) > 0 && int_family(y) > 0 => {
            if int_family(x) >= int_family(y) {
                x
            } else {
                y
            }
        }
        _ => Numeric,
    }
}

fn number_literal(s: &str) -> Result<(Datum, PgType), SqlError> {
    if let Ok(v) = s.parse::<i64>() {
        let t = if i32::try_from(v).is_ok() {
            PgType::Int4
        } else {
            PgType::Int8
        };
        return Ok((Datum::Int(v), t));
    }
    let d = s
        .parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(s))
        .map_err(|_| SqlError::new("22P02", format!("invalid number \"{s}\"")))?;
    Ok((Datum::Decimal(d), PgType::Numeric))
}

impl<'a> Planner<'a> {
    /// A planner over a catalog, with the parameter types the client declared.
    pub fn new(catalog: &'a Catalog, declared: &[Option<PgType>]) -> Self {
        Planner {
            catalog,
            params: declared
                .iter()
                .map(|t| t.unwrap_or(PgType::Unknown))
                .collect(),
            subqueries: Vec::new(),
            agg: None,
            outer: Vec::new(),
            correlated: Vec::new(),
            pending: Vec::new(),
            windows: Vec::new(),
            window_base: None,
            srfs: Vec::new(),
            srf_base: None,
            output_records: Vec::new(),
            record_cols: Vec::new(),
        }
    }

    /// Sets the type of a parameter used where `ty` is expected, if not known yet.
    pub fn infer(&mut self, e: &Expr, ty: PgType) {
        if let Expr::Param(i) = e
            && let Some(slot) = self.params.get_mut(*i)
            && *slot == PgType::Unknown
            && ty != PgType::Unknown
        {
            *slot = ty;
        }
    }

    fn param(&mut self, name: &str) -> Result<(Expr, PgType), SqlError> {
        let n: usize = name
            .trim_start_matches('$')
            .parse()
            .map_err(|_| SqlError::syntax(format!("invalid parameter \"{name}\"")))?;
        if n == 0 || n > 65535 {
            return Err(SqlError::syntax(format!("invalid parameter \"{name}\"")));
        }
        if self.params.len() < n {
            self.params.resize(n, PgType::Unknown);
        }
        Ok((Expr::Param(n - 1), self.params[n - 1]))
    }

    /// Binds an expression against a scope.
    pub fn bind(&mut self, e: &ast::Expr, scope: &Scope) -> Result<(Expr, PgType), SqlError> {
        if self.agg.is_some() {
            return self.bind_grouped(e, scope);
        }
        self.bind_plain(e, scope)
    }

    /// Binds a boolean expression (WHERE, HAVING, ON).
    pub fn bind_predicate(&mut self, e: &ast::Expr, scope: &Scope) -> Result<Expr, SqlError> {
        let (x, t) = self.bind(e, scope)?;
        self.infer(&x, PgType::Bool);
        if !matches!(t, PgType::Bool | PgType::Unknown) {
            return Err(SqlError::new(
                "42804",
                format!("argument of WHERE must be type boolean, not type {t:?}"),
            ));
        }
        Ok(x)
    }

    fn bind_grouped(&mut self, e: &ast::Expr, scope: &Scope) -> Result<(Expr, PgType), SqlError> {
        let text = e.to_string();
        let Some(ctx) = self.agg.as_ref() else {
            return self.bind_plain(e, scope);
        };
        if let Some(i) = ctx.group_keys.iter().position(|k| *k == text) {
            let input = ctx.input.clone();
            let saved = self.agg.take();
            let bound = self.bind_plain(e, &input);
            self.agg = saved;
            let (_, t) = bound?;
            return Ok((Expr::Column(i), t));
        }
        if let ast::Expr::Function(f) = e
            && let Some(func) = agg_func(f)
        {
            return self.bind_aggregate(f, func, text);
        }
        if let ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) = e {
            // A column of an enclosing query is one value per group here.
            if !self.outer.is_empty() {
                let input = ctx.input.clone();
                let saved = self.agg.take();
                // Input columns resolve first; only a name they lack reaches the outer query.
                let outer = self.bind_plain(e, &input).ok();
                self.agg = saved;
                if let Some((x @ Expr::Outer(_), t)) = outer {
                    return Ok((x, t));
                }
            }
            let name = e.to_string();
            return Err(SqlError::new(
                "42803",
                format!(
                    "column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"
                ),
            ));
        }
        self.bind_plain(e, scope)
    }

    fn bind_aggregate(
        &mut self,
        f: &ast::Function,
        func: AggFunc,
        text: String,
    ) -> Result<(Expr, PgType), SqlError> {
        let Some(ctx) = self.agg.as_ref() else {
            return Err(SqlError::new(
                "42803",
                "aggregate functions are not allowed here",
            ));
        };
        let groups = ctx.group_keys.len();
        if let Some(j) = ctx.aggs.iter().position(|(k, _)| *k == text) {
            let t = ctx.aggs[j].1.ty;
            return Ok((Expr::Column(groups + j), t));
        }
        let input = ctx.input.clone();
        let (args, distinct) = match &f.args {
            ast::FunctionArguments::List(list) => (
                list.args.clone(),
                matches!(
                    list.duplicate_treatment,
                    Some(ast::DuplicateTreatment::Distinct)
                ),
            ),
            _ => (Vec::new(), false),
        };
        let saved = self.agg.take();
        let result = (|| -> Result<AggCall, SqlError> {
            let star = matches!(
                args.first(),
                Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard))
            );
            if func == AggFunc::Count && (args.is_empty() || star) {
                return Ok(AggCall {
                    func: AggFunc::CountStar,
                    arg: None,
                    distinct: false,
                    ty: PgType::Int8,
                    sep: None,
                });
            }
            let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(a))) = args.first()
            else {
                return Err(SqlError::syntax(format!("bad arguments to {text}")));
            };
            let mut sep = None;
            if func == AggFunc::StringAgg {
                sep = match args.get(1) {
                    Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(s)))
                        if args.len() == 2 =>
                    {
                        match self.bind_plain(s, &input)? {
                            (Expr::Const(Datum::Null), _) => None,
                            (Expr::Const(d), _) => Some(crate::sql::expr::as_text(d)?),
                            _ => {
                                return Err(SqlError::unsupported(
                                    "a string_agg separator that is not a constant",
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(SqlError::new(
                            "42883",
                            format!("function {text} does not exist"),
                        ));
                    }
                };
            } else if args.len() != 1 {
                return Err(SqlError::new(
                    "42883",
                    format!("function {text} does not exist"),
                ));
            }
            let (arg, t) = self.bind_plain(a, &input)?;
            let ty = match func {
                AggFunc::Count | AggFunc::CountStar => PgType::Int8,
                AggFunc::Sum => match t {
                    PgType::Int2 | PgType::Int4 => PgType::Int8,
                    PgType::Float4 | PgType::Float8 => PgType::Float8,
                    _ => PgType::Numeric,
                },
                AggFunc::Avg => match t {
                    PgType::Float4 | PgType::Float8 => PgType::Float8,
                    _ => PgType::Numeric,
                },
                AggFunc::Min | AggFunc::Max => t,
                AggFunc::StringAgg => PgType::Text,
            };
            Ok(AggCall {
                func,
                arg: Some(arg),
                distinct,
                ty,
                sep,
            })
        })();
        self.agg = saved;
        let call = result?;
        let ty = call.ty;
        let ctx = self
            .agg
            .as_mut()
            .ok_or_else(|| SqlError::internal("aggregate context lost"))?;
        ctx.aggs.push((text, call));
        Ok((Expr::Column(groups + ctx.aggs.len() - 1), ty))
    }

    fn column(
        &mut self,
        rel: Option<&str>,
        name: &str,
        scope: &Scope,
    ) -> Result<(Expr, PgType), SqlError> {
        if let Some(i) = scope.resolve(rel, name)? {
            let t = scope.cols[i].ty;
            return Ok((Expr::Column(i), t));
        }
        let depth = self.outer.len();
        for (d, outer) in self.outer.iter().enumerate().rev() {
            if let Some(i) = outer.resolve(rel, name)? {
                if d + 1 != depth {
                    return Err(SqlError::unsupported(
                        "a subquery reading a column of a query more than one level up",
                    ));
                }
                if let Some(flag) = self.correlated.last_mut() {
                    *flag = true;
                }
                return Ok((Expr::Outer(i), outer.cols[i].ty));
            }
        }
        let full = match rel {
            Some(r) => format!("{r}.{name}"),
            None => name.to_string(),
        };
        if let Some(r) = rel
            && !scope.cols.iter().any(|c| c.rel == r)
        {
            return Err(SqlError::new(
                "42P01",
                format!("missing FROM-clause entry for table \"{r}\""),
            ));
        }
        Err(SqlError::new(
            "42703",
            format!("column \"{full}\" does not exist"),
        ))
    }

    fn cmp(
        &mut self,
        op: CmpOp,
        l: &ast::Expr,
        r: &ast::Expr,
        scope: &Scope,
    ) -> Result<(Expr, PgType), SqlError> {
        let (a, ta) = self.bind(l, scope)?;
        let (b, tb) = self.bind(r, scope)?;
        Ok((self.make_cmp(op, a, ta, b, tb)?, PgType::Bool))
    }

    /// Builds a comparison, inferring parameter types and converting untyped literals to the
    /// other side's type once, at plan time.
    pub fn make_cmp(
        &mut self,
        op: CmpOp,
        a: Expr,
        ta: PgType,
        b: Expr,
        tb: PgType,
    ) -> Result<Expr, SqlError> {
        self.infer(&a, tb);
        self.infer(&b, ta);
        let a = coerce_literal(a, ta, tb)?;
        let b = coerce_literal(b, tb, ta)?;
        let bpchar = ta == PgType::Bpchar || tb == PgType::Bpchar;
        Ok(Expr::Cmp(op, Box::new(a), Box::new(b), bpchar))
    }

    fn arith(
        &mut self,
        op: ArithOp,
        l: &ast::Expr,
        r: &ast::Expr,
        scope: &Scope,
    ) -> Result<(Expr, PgType), SqlError> {
        let (a, ta) = self.bind(l, scope)?;
        let (b, tb) = self.bind(r, scope)?;
        let ta2 = if ta == PgType::Unknown && matches!(a, Expr::Param(_)) {
            if tb == PgType::Date { PgType::Int4 } else { tb }
        } else {
            ta
        };
        let tb2 = if tb == PgType::Unknown && matches!(b, Expr::Param(_)) {
            if ta == PgType::Date { PgType::Int4 } else { ta }
        } else {
            tb
        };
        self.infer(&a, ta2);
        self.infer(&b, tb2);
        let t = arith_type(op, ta2, tb2);
        Ok((Expr::Arith(op, Box::new(a), Box::new(b), t), t))
    }

    fn bind_plain(&mut self, e: &ast::Expr, scope: &Scope) -> Result<(Expr, PgType), SqlError> {
        use ast::Expr as E;
        Ok(match e {
            E::Identifier(i) => {
                let name = ident(i);
                match self.column(None, &name, scope) {
                    Ok(x) => x,
                    Err(err) => match name.as_str() {
                        "current_timestamp" | "localtimestamp" => {
                            (Expr::Func(Func::Now, vec![]), PgType::Timestamp)
                        }
                        "current_date" => (Expr::Func(Func::CurrentDate, vec![]), PgType::Date),
                        "current_user" | "session_user" | "user" => {
                            (Expr::Const(Datum::Text("shmdb".into())), PgType::Text)
                        }
                        "current_schema" => {
                            (Expr::Const(Datum::Text("public".into())), PgType::Text)
                        }
                        _ => return Err(err),
                    },
                }
            }
            E::CompoundIdentifier(parts) => {
                let names: Vec<String> = parts.iter().map(ident).collect();
                let (rel, name) = match names.as_slice() {
                    [.., r, n] => (r.as_str(), n.as_str()),
                    [n] => return self.column(None, n, scope),
                    [] => return Err(SqlError::syntax("empty identifier")),
                };
                self.column(Some(rel), name, scope)?
            }
            E::Value(v) => self.literal(&v.value)?,
            E::TypedString(ts) => {
                let ty = SqlType::from_ast(&ts.data_type)?;
                let text = ts.value.clone().into_string().unwrap_or_default();
                (Expr::Const(cast(Datum::Text(text), ty)?), ty.pg())
            }
            E::Nested(inner) => self.bind(inner, scope)?,
            E::BinaryOp { left, op, right } => match op {
                BinaryOperator::Eq => self.cmp(CmpOp::Eq, left, right, scope)?,
                BinaryOperator::NotEq => self.cmp(CmpOp::Ne, left, right, scope)?,
                BinaryOperator::Lt => self.cmp(CmpOp::Lt, left, right, scope)?,
                BinaryOperator::LtEq => self.cmp(CmpOp::Le, left, right, scope)?,
                BinaryOperator::Gt => self.cmp(CmpOp::Gt, left, right, scope)?,
                BinaryOperator::GtEq => self.cmp(CmpOp::Ge, left, right, scope)?,
                BinaryOperator::Plus => self.arith(ArithOp::Add, left, right, scope)?,
                BinaryOperator::Minus => self.arith(ArithOp::Sub, left, right, scope)?,
                BinaryOperator::Multiply => self.arith(ArithOp::Mul, left, right, scope)?,
                BinaryOperator::Divide => self.arith(ArithOp::Div, left, right, scope)?,
                BinaryOperator::Modulo => self.arith(ArithOp::Mod, left, right, scope)?,
                BinaryOperator::And | BinaryOperator::Or => {
                    let a = self.bind_predicate(left, scope)?;
                    let b = self.bind_predicate(right, scope)?;
                    if *op == BinaryOperator::And {
                        (Expr::And(Box::new(a), Box::new(b)), PgType::Bool)
                    } else {
                        (Expr::Or(Box::new(a), Box::new(b)), PgType::Bool)
                    }
                }
                BinaryOperator::BitwiseAnd => {
                    let (a, _) = self.bind(left, scope)?;
                    let (b, _) = self.bind(right, scope)?;
                    (Expr::Func(Func::BitAnd, vec![a, b]), PgType::Int8)
                }
                BinaryOperator::StringConcat => {
                    let (a, ta) = self.bind(left, scope)?;
                    let (b, tb) = self.bind(right, scope)?;
                    let _ = (ta, tb);
                    self.infer(&a, PgType::Text);
                    self.infer(&b, PgType::Text);
                    (Expr::Concat(Box::new(a), Box::new(b)), PgType::Text)
                }
                BinaryOperator::PGRegexMatch => self.regex(left, right, false, false, scope)?,
                BinaryOperator::PGRegexIMatch => self.regex(left, right, false, true, scope)?,
                BinaryOperator::PGRegexNotMatch => self.regex(left, right, true, false, scope)?,
                BinaryOperator::PGRegexNotIMatch => self.regex(left, right, true, true, scope)?,
                BinaryOperator::PGCustomBinaryOperator(parts)
                    if parts.last().is_some_and(|p| p == "~") =>
                {
                    self.regex(left, right, false, false, scope)?
                }
                other => return Err(SqlError::unsupported(format!("operator {other}"))),
            },
            E::Collate { expr, .. } => self.bind(expr, scope)?,
            E::UnaryOp { op, expr } => match op {
                UnaryOperator::Not => (
                    Expr::Not(Box::new(self.bind_predicate(expr, scope)?)),
                    PgType::Bool,
                ),
                UnaryOperator::Minus => {
                    if let E::Value(v) = expr.as_ref()
                        && let Value::Number(n, _) = &v.value
                    {
                        let (d, t) = number_literal(&format!("-{n}"))?;
                        return Ok((Expr::Const(d), t));
                    }
                    let (x, t) = self.bind(expr, scope)?;
                    (Expr::Neg(Box::new(x)), t)
                }
                UnaryOperator::Plus => self.bind(expr, scope)?,
                other => return Err(SqlError::unsupported(format!("operator {other}"))),
            },
            E::IsNull(x) => (
                Expr::IsNull(Box::new(self.bind(x, scope)?.0), false),
                PgType::Bool,
            ),
            E::IsNotNull(x) => (
                Expr::IsNull(Box::new(self.bind(x, scope)?.0), true),
                PgType::Bool,
            ),
            E::IsTrue(x) => {
                let b = self.bind_predicate(x, scope)?;
                (
                    Expr::Distinct(Box::new(b), Box::new(Expr::Const(Datum::Bool(true))), false),
                    PgType::Bool,
                )
            }
            E::IsFalse(x) => {
                let b = self.bind_predicate(x, scope)?;
                (
                    Expr::Distinct(
                        Box::new(b),
                        Box::new(Expr::Const(Datum::Bool(false))),
                        false,
                    ),
                    PgType::Bool,
                )
            }
            E::IsNotTrue(x) => {
                let b = self.bind_predicate(x, scope)?;
                (
                    Expr::Distinct(Box::new(b), Box::new(Expr::Const(Datum::Bool(true))), true),
                    PgType::Bool,
                )
            }
            E::IsNotFalse(x) => {
                let b = self.bind_predicate(x, scope)?;
                (
                    Expr::Distinct(Box::new(b), Box::new(Expr::Const(Datum::Bool(false))), true),
                    PgType::Bool,
                )
            }
            E::IsDistinctFrom(a, b) | E::IsNotDistinctFrom(a, b) => {
                let (x, tx) = self.bind(a, scope)?;
                let (y, ty) = self.bind(b, scope)?;
                self.infer(&x, ty);
                self.infer(&y, tx);
                let distinct = matches!(e, E::IsDistinctFrom(..));
                (
                    Expr::Distinct(Box::new(x), Box::new(y), distinct),
                    PgType::Bool,
                )
            }
            E::In {
                expr,
                target: ast::InTarget::List(list),
                negated,
                ..
            } if matches!(&**expr, E::Tuple(_)) => self.row_in(expr, list, *negated, scope)?,
            E::In {
                expr,
                target: ast::InTarget::List(list),
                negated,
                ..
            } => {
                let (x, tx) = self.bind(expr, scope)?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let (y, ty) = self.bind(item, scope)?;
                    self.infer(&y, tx);
                    items.push(coerce_literal(y, ty, tx)?);
                }
                (Expr::InList(Box::new(x), items, *negated), PgType::Bool)
            }
            E::In {
                expr,
                target: ast::InTarget::Subquery(subquery),
                negated,
                ..
            } => {
                let (x, _) = self.bind(expr, scope)?;
                let slot = self.subquery(subquery, scope, true)?;
                (Expr::InSubquery(Box::new(x), slot, *negated), PgType::Bool)
            }
            E::Exists { subquery, negated } => {
                let slot = self.subquery(subquery, scope, false)?;
                (Expr::Exists(slot, *negated), PgType::Bool)
            }
            E::Subquery(q) => {
                let slot = self.subquery(q, scope, false)?;
                let t = self.subqueries[slot]
                    .plan
                    .columns
                    .first()
                    .map_or(PgType::Unknown, |c| c.pg_type);
                (Expr::Subquery(slot), t)
            }
            E::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let (x, tx) = self.bind(expr, scope)?;
                let (lo, tl) = self.bind(low, scope)?;
                let (hi, th) = self.bind(high, scope)?;
                let ge = self.make_cmp(CmpOp::Ge, x.clone(), tx, lo, tl)?;
                let le = self.make_cmp(CmpOp::Le, x, tx, hi, th)?;
                let both = Expr::And(Box::new(ge), Box::new(le));
                (
                    if *negated {
                        Expr::Not(Box::new(both))
                    } else {
                        both
                    },
                    PgType::Bool,
                )
            }
            E::Like {
                negated,
                expr,
                pattern,
                escape_char,
                ..
            }
            | E::ILike {
                negated,
                expr,
                pattern,
                escape_char,
                ..
            } => {
                if escape_char.is_some() {
                    return Err(SqlError::unsupported("LIKE … ESCAPE"));
                }
                let (x, _) = self.bind(expr, scope)?;
                let (p, _) = self.bind(pattern, scope)?;
                self.infer(&x, PgType::Text);
                self.infer(&p, PgType::Text);
                let ci = matches!(e, E::ILike { .. });
                (
                    Expr::Like(Box::new(x), Box::new(p), *negated, ci),
                    PgType::Bool,
                )
            }
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let op = match operand {
                    Some(o) => Some(self.bind(o, scope)?),
                    None => None,
                };
                let mut whens = Vec::new();
                let mut ty = PgType::Unknown;
                for w in conditions {
                    let c = match &op {
                        Some((_, t)) => {
                            let (c, tc) = self.bind(&w.condition, scope)?;
                            self.infer(&c, *t);
                            coerce_literal(c, tc, *t)?
                        }
                        None => self.bind_predicate(&w.condition, scope)?,
                    };
                    let (r, tr) = self.bind(&w.result, scope)?;
                    if ty == PgType::Unknown {
                        ty = tr;
                    } else if tr != PgType::Unknown && tr != ty {
                        ty = unify(ty, tr);
                    }
                    whens.push((c, r));
                }
                let otherwise = match else_result {
                    Some(x) => {
                        let (r, tr) = self.bind(x, scope)?;
                        if ty == PgType::Unknown {
                            ty = tr;
                        } else if tr != PgType::Unknown && tr != ty {
                            ty = unify(ty, tr);
                        }
                        Some(Box::new(r))
                    }
                    None => None,
                };
                if ty == PgType::Unknown {
                    ty = PgType::Text;
                }
                (
                    Expr::Case(op.map(|(o, _)| Box::new(o)), whens, otherwise),
                    ty,
                )
            }
            E::Cast {
                expr, data_type, ..
            } => {
                // A relation named by a constant ('pg_class'::regclass) is its oid.
                if data_type.to_string().to_lowercase().ends_with("regclass")
                    && let E::Value(v) = &**expr
                    && let Value::SingleQuotedString(n) = &v.value
                {
                    let oid =
                        crate::sql::pg_catalog::regclass(n, self.catalog).ok_or_else(|| {
                            SqlError::new("42P01", format!("relation \"{n}\" does not exist"))
                        })?;
                    return Ok((Expr::Const(Datum::Int(oid)), PgType::Int8));
                }
                let ty = SqlType::from_ast(data_type)?;
                let (x, _) = self.bind(expr, scope)?;
                self.infer(&x, ty.pg());
                if let Expr::Const(d) = &x {
                    return Ok((Expr::Const(cast(d.clone(), ty)?), ty.pg()));
                }
                (Expr::Cast(Box::new(x), ty), ty.pg())
            }
            E::Function(f)
                if object_name(&f.name) == "array"
                    && let ast::FunctionArguments::Subquery(q) = &f.args =>
            {
                let slot = self.subquery(q, scope, false)?;
                (Expr::Array(slot), PgType::Text)
            }
            E::Function(f) => self.function(f, scope)?,
            E::AnyOp {
                left,
                compare_op,
                right,
                ..
            } => {
                let op = match compare_op {
                    BinaryOperator::Eq => CmpOp::Eq,
                    BinaryOperator::NotEq => CmpOp::Ne,
                    BinaryOperator::Lt => CmpOp::Lt,
                    BinaryOperator::LtEq => CmpOp::Le,
                    BinaryOperator::Gt => CmpOp::Gt,
                    BinaryOperator::GtEq => CmpOp::Ge,
                    other => return Err(SqlError::unsupported(format!("{other} ANY (...)"))),
                };
                if let E::Subquery(q) = &**right {
                    // x = ANY (subquery) is x IN (subquery).
                    if op != CmpOp::Eq {
                        return Err(SqlError::unsupported(format!(
                            "{} ANY (subquery)",
                            op.sql()
                        )));
                    }
                    let (x, _) = self.bind(left, scope)?;
                    let slot = self.subquery(q, scope, true)?;
                    return Ok((Expr::InSubquery(Box::new(x), slot, false), PgType::Bool));
                }
                let (x, _) = self.bind(left, scope)?;
                let (arr, _) = self.bind(right, scope)?;
                (Expr::Func(Func::ArrayAny(op), vec![x, arr]), PgType::Bool)
            }
            E::CompoundFieldAccess { root, access_chain }
                if let [ast::AccessExpr::Dot(ast::Expr::Identifier(field))] =
                    access_chain.as_slice() =>
            {
                self.field_access(root, &ident(field), scope)?
            }
            E::CompoundFieldAccess { root, access_chain } => {
                // `t.col[i]` parses as `t` with `.col` and `[i]`: the dots name the column.
                let mut parts = match &**root {
                    E::Identifier(i) => vec![i.clone()],
                    E::CompoundIdentifier(p) => p.clone(),
                    _ => Vec::new(),
                };
                let mut chain = access_chain.as_slice();
                while !parts.is_empty()
                    && let Some((ast::AccessExpr::Dot(E::Identifier(i)), rest)) =
                        chain.split_first()
                {
                    parts.push(i.clone());
                    chain = rest;
                }
                let (mut x, _) = if parts.len() > 1 {
                    self.bind(&E::CompoundIdentifier(parts), scope)?
                } else {
                    self.bind(root, scope)?
                };
                for a in chain {
                    let ast::AccessExpr::Subscript(ast::Subscript::Index { index }) = a else {
                        return Err(SqlError::unsupported(format!("field access {a}")));
                    };
                    let (k, _) = self.bind(index, scope)?;
                    x = Expr::Func(Func::ArrayElem, vec![x, k]);
                }
                (x, PgType::Text)
            }
            E::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.bind(expr, scope)?.0];
                args.push(match substring_from {
                    Some(x) => self.bind(x, scope)?.0,
                    None => Expr::Const(Datum::Int(1)),
                });
                if let Some(x) = substring_for {
                    args.push(self.bind(x, scope)?.0);
                }
                (Expr::Func(Func::Substr, args), PgType::Text)
            }
            E::Trim {
                expr,
                trim_where,
                trim_what,
                ..
            } => {
                let f = match trim_where {
                    Some(ast::TrimWhereField::Leading) => Func::Ltrim,
                    Some(ast::TrimWhereField::Trailing) => Func::Rtrim,
                    _ => Func::Trim,
                };
                let mut args = vec![self.bind(expr, scope)?.0];
                if let Some(w) = trim_what {
                    args.push(self.bind(w, scope)?.0);
                }
                (Expr::Func(f, args), PgType::Text)
            }
            E::Position { expr, r#in } => {
                let sub = self.bind(expr, scope)?.0;
                let s = self.bind(r#in, scope)?.0;
                (Expr::Func(Func::Strpos, vec![s, sub]), PgType::Int4)
            }
            E::Ceil { expr, .. } => {
                let (x, t) = self.bind(expr, scope)?;
                (
                    Expr::Func(Func::Ceil, vec![x]),
                    Func::Ceil.result_type(&[t]),
                )
            }
            E::Floor { expr, .. } => {
                let (x, t) = self.bind(expr, scope)?;
                (
                    Expr::Func(Func::Floor, vec![x]),
                    Func::Floor.result_type(&[t]),
                )
            }
            E::Tuple(_) => return Err(SqlError::unsupported("row values")),
            other => return Err(SqlError::unsupported(format!("expression {other}"))),
        })
    }

    /// `(a, b) [NOT] IN ((x, y), ...)`: a disjunction of conjunctions of equalities, the
    /// shape access-path selection recognizes as several whole or prefix keys.
    fn row_in(
        &mut self,
        lhs: &ast::Expr,
        list: &[ast::Expr],
        negated: bool,
        scope: &Scope,
    ) -> Result<(Expr, PgType), SqlError> {
        let ast::Expr::Tuple(cols) = lhs else {
            return Err(SqlError::internal("row IN without a row"));
        };
        let mut left = Vec::with_capacity(cols.len());
        for c in cols {
            left.push(self.bind(c, scope)?);
        }
        let mut any: Option<Expr> = None;
        for item in list {
            let values = match item {
                ast::Expr::Tuple(v) => v,
                ast::Expr::Nested(inner) => match &**inner {
                    ast::Expr::Tuple(v) => v,
                    _ => std::slice::from_ref(&**inner),
                },
                other => std::slice::from_ref(other),
            };
            if values.len() != left.len() {
                return Err(SqlError::new(
                    "42601",
                    format!(
                        "row of {} values compared with a row of {} values",
                        left.len(),
                        values.len()
                    ),
                ));
            }
            let mut all: Option<Expr> = None;
            for ((x, tx), v) in left.iter().zip(values) {
                let (y, ty) = self.bind(v, scope)?;
                let eq = self.make_cmp(CmpOp::Eq, x.clone(), *tx, y, ty)?;
                all = Some(match all {
                    None => eq,
                    Some(a) => Expr::And(Box::new(a), Box::new(eq)),
                });
            }
            let Some(all) = all else {
                return Err(SqlError::new("42601", "an empty row in IN"));
            };
            any = Some(match any {
                None => all,
                Some(a) => Expr::Or(Box::new(a), Box::new(all)),
            });
        }
        let e = any.unwrap_or(Expr::Const(Datum::Bool(false)));
        Ok((
            if negated { Expr::Not(Box::new(e)) } else { e },
            PgType::Bool,
        ))
    }

    fn regex(
        &mut self,
        l: &ast::Expr,
        r: &ast::Expr,
        negated: bool,
        ci: bool,
        scope: &Scope,
    ) -> Result<(Expr, PgType), SqlError> {
        let (a, _) = self.bind(l, scope)?;
        let (b, _) = self.bind(r, scope)?;
        self.infer(&a, PgType::Text);
        self.infer(&b, PgType::Text);
        Ok((
            Expr::Func(Func::Regex(negated, ci), vec![a, b]),
            PgType::Bool,
        ))
    }

    fn literal(&mut self, v: &Value) -> Result<(Expr, PgType), SqlError> {
        Ok(match v {
            Value::Number(n, _) => {
                let (d, t) = number_literal(n)?;
                (Expr::Const(d), t)
            }
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::NationalStringLiteral(s) => {
                (Expr::Const(Datum::Text(s.clone())), PgType::Unknown)
            }
            Value::DollarQuotedString(s) => {
                (Expr::Const(Datum::Text(s.value.clone())), PgType::Unknown)
            }
            Value::Boolean(b) => (Expr::Const(Datum::Bool(*b)), PgType::Bool),
            Value::Null => (Expr::Const(Datum::Null), PgType::Unknown),
            Value::Placeholder(p) => self.param(p)?,
            other => return Err(SqlError::unsupported(format!("literal {other}"))),
        })
    }

    fn function(&mut self, f: &ast::Function, scope: &Scope) -> Result<(Expr, PgType), SqlError> {
        let name = object_name(&f.name);
        if agg_func(f).is_some() {
            return Err(SqlError::new(
                "42803",
                format!("aggregate function {name} is not allowed here"),
            ));
        }
        if let Some(over) = &f.over {
            return self.window_call(&name, f, over, scope);
        }
        let srf = match name.as_str() {
            "unnest" => Some(SrfKind::Unnest),
            "_pg_expandarray" => Some(SrfKind::ExpandArray),
            _ => None,
        };
        if let Some(kind) = srf {
            return self.srf_call(kind, f, scope);
        }
        let args: Vec<&ast::Expr> = match &f.args {
            ast::FunctionArguments::None => Vec::new(),
            ast::FunctionArguments::List(l) => l
                .args
                .iter()
                .map(|a| match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
                    _ => Err(SqlError::unsupported(format!("arguments of {name}"))),
                })
                .collect::<Result<_, _>>()?,
            ast::FunctionArguments::Subquery(_) => {
                return Err(SqlError::unsupported("subquery arguments"));
            }
        };
        if let Some(e) = self.catalog_lookup(&name, &args, scope)? {
            return Ok((e, PgType::Text));
        }
        let Some(func) = Func::lookup(&name, args.len()) else {
            return Err(SqlError::new(
                "42883",
                format!("function {name}({}) does not exist", args.len()),
            ));
        };
        let mut bound = Vec::new();
        let mut types = Vec::new();
        for a in args {
            let (x, t) = self.bind(a, scope)?;
            bound.push(x);
            types.push(t);
        }
        let ty = func.result_type(&types);
        for x in &bound {
            match func {
                Func::Upper
                | Func::Lower
                | Func::Length
                | Func::Trim
                | Func::Ltrim
                | Func::Rtrim => self.infer(x, PgType::Text),
                Func::Coalesce | Func::Greatest | Func::Least => self.infer(x, ty),
                _ => {}
            }
        }
        Ok((Expr::Func(func, bound), ty))
    }

    /// Binds `row_number() OVER (...)`: the call is computed by the select's `Plan::Window`
    /// and read here as the column it appends.
    fn window_call(
        &mut self,
        name: &str,
        f: &ast::Function,
        over: &ast::WindowType,
        scope: &Scope,
    ) -> Result<(Expr, PgType), SqlError> {
        let no_args = match &f.args {
            ast::FunctionArguments::None => true,
            ast::FunctionArguments::List(l) => l.args.is_empty(),
            ast::FunctionArguments::Subquery(_) => false,
        };
        if name != "row_number" || !no_args {
            return Err(SqlError::unsupported(format!("window function {name}")));
        }
        let ast::WindowType::WindowSpec(spec) = over else {
            return Err(SqlError::unsupported("named windows"));
        };
        let Some((width, first)) = self.window_base else {
            return Err(SqlError::new(
                "42P20",
                "window functions are not allowed here",
            ));
        };
        let mut partition = Vec::new();
        for e in &spec.partition_by {
            partition.push(self.bind(e, scope)?.0);
        }
        let mut order = Vec::new();
        for o in &spec.order_by {
            let desc = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
            order.push(SortKey {
                expr: self.bind(&o.expr, scope)?.0,
                desc,
                nulls_first: o.options.nulls_first.unwrap_or(desc),
            });
        }
        self.windows.push(WindowCall { partition, order });
        Ok((
            Expr::Column(width + self.windows.len() - 1 - first),
            PgType::Int8,
        ))
    }

    /// Binds a set-returning function of a SELECT list: the select's `Plan::ProjectSet`
    /// computes it, and it reads here as the column(s) appended (a record for
    /// `_pg_expandarray`).
    fn srf_call(
        &mut self,
        kind: SrfKind,
        f: &ast::Function,
        scope: &Scope,
    ) -> Result<(Expr, PgType), SqlError> {
        let Some((width, first)) = self.srf_base else {
            return Err(SqlError::unsupported(format!(
                "set-returning function {} outside a SELECT list",
                object_name(&f.name)
            )));
        };
        let arg = match &f.args {
            ast::FunctionArguments::List(l) if l.args.len() == 1 => match &l.args[0] {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => e,
                _ => return Err(SqlError::syntax(format!("bad argument to {}", f.name))),
            },
            _ => {
                return Err(SqlError::new(
                    "42883",
                    format!("function {} does not exist", f.name),
                ));
            }
        };
        let text = f.to_string();
        let existing = self.srfs[first..].iter().position(|(t, _)| *t == text);
        let k = match existing {
            Some(k) => k,
            None => {
                let (arg, _) = self.bind(arg, scope)?;
                self.srfs.push((text, SrfCall { kind, arg }));
                self.srfs.len() - 1 - first
            }
        };
        let offset: usize = self.srfs[first..first + k]
            .iter()
            .map(|(_, c)| c.kind.width())
            .sum();
        let col = width + offset;
        Ok(match kind {
            SrfKind::Unnest => (Expr::Column(col), PgType::Text),
            SrfKind::ExpandArray => (
                Expr::Func(
                    Func::Record(&["x", "n"]),
                    vec![Expr::Column(col), Expr::Column(col + 1)],
                ),
                PgType::Text,
            ),
        })
    }

    /// `(record).field`: a field of a record built in this query, or of a derived table's
    /// record column.
    fn field_access(
        &mut self,
        root: &ast::Expr,
        field: &str,
        scope: &Scope,
    ) -> Result<(Expr, PgType), SqlError> {
        let mut root = root;
        while let ast::Expr::Nested(inner) = root {
            root = inner;
        }
        let missing = || {
            SqlError::new(
                "42703",
                format!("could not identify column \"{field}\" in record data type"),
            )
        };
        let (x, _) = self.bind(root, scope)?;
        if let Expr::Func(Func::Record(fields), args) = &x {
            let i = fields
                .iter()
                .position(|f| *f == field)
                .ok_or_else(missing)?;
            let t = if *fields == ["x", "n"] {
                PgType::Int8
            } else {
                PgType::Text
            };
            return Ok((args[i].clone(), t));
        }
        let (rel, name) = match root {
            ast::Expr::Identifier(i) => (None, ident(i)),
            ast::Expr::CompoundIdentifier(parts) => (
                parts.iter().rev().nth(1).map(ident),
                parts.last().map(ident).unwrap_or_default(),
            ),
            _ => return Err(SqlError::unsupported(format!("field access on {root}"))),
        };
        let fields = self
            .record_cols
            .iter()
            .rev()
            .find(|(r, n, _)| *n == name && rel.as_ref().is_none_or(|x| x == r))
            .map(|(_, _, f)| *f)
            .ok_or_else(|| SqlError::new("42809", format!("column \"{name}\" is not a record")))?;
        let i = fields
            .iter()
            .position(|f| *f == field)
            .ok_or_else(missing)?;
        Ok((Expr::Func(Func::RecordField(i), vec![x]), PgType::Text))
    }

    /// `pg_get_indexdef(oid [, column, pretty])` and `pg_get_constraintdef(oid [, pretty])`
    /// read definitions from the statement's catalog: they bind to a CASE over that
    /// catalog's objects (evaluation has no catalog at hand, the planner does).
    fn catalog_lookup(
        &mut self,
        name: &str,
        args: &[&ast::Expr],
        scope: &Scope,
    ) -> Result<Option<Expr>, SqlError> {
        let text = |s: &str| Expr::Const(Datum::Text(s.to_string()));
        let eq = |a: &Expr, v: i64| {
            Expr::Cmp(
                CmpOp::Eq,
                Box::new(a.clone()),
                Box::new(Expr::Const(Datum::Int(v))),
                false,
            )
        };
        let whens: Vec<(Expr, Expr)> = match (name, args) {
            ("pg_get_indexdef", [oid] | [oid, _, _]) => {
                let (oid_x, _) = self.bind(oid, scope)?;
                let column = match args.get(1) {
                    Some(c) => Some(self.bind(c, scope)?.0),
                    None => None,
                };
                let mut whens = Vec::new();
                for (ix, def, cols) in crate::sql::pg_catalog::index_defs(self.catalog) {
                    match &column {
                        None => whens.push((eq(&oid_x, ix), text(&def))),
                        Some(c) => {
                            whens.push((
                                Expr::And(Box::new(eq(&oid_x, ix)), Box::new(eq(c, 0))),
                                text(&def),
                            ));
                            for (k, col) in cols.iter().enumerate() {
                                whens.push((
                                    Expr::And(
                                        Box::new(eq(&oid_x, ix)),
                                        Box::new(eq(c, k as i64 + 1)),
                                    ),
                                    text(col),
                                ));
                            }
                        }
                    }
                }
                whens
            }
            ("pg_get_constraintdef", [oid] | [oid, _]) => {
                let (oid_x, _) = self.bind(oid, scope)?;
                crate::sql::pg_catalog::constraint_defs(self.catalog)
                    .into_iter()
                    .map(|(c, def)| (eq(&oid_x, c), text(&def)))
                    .collect()
            }
            _ => return Ok(None),
        };
        if whens.is_empty() {
            return Ok(Some(Expr::Const(Datum::Null)));
        }
        Ok(Some(Expr::Case(None, whens, None)))
    }

    /// Plans a subquery into a slot. An uncorrelated one is run once before the statement;
    /// a correlated one (reading columns of `scope`) gets a slot whose plan refuses to run
    /// until the enclosing SELECT attaches the real plan to a `Plan::Apply`, which runs it
    /// once per row of `scope`.
    fn subquery(&mut self, q: &ast::Query, scope: &Scope, as_set: bool) -> Result<usize, SqlError> {
        self.outer.push(scope.clone());
        self.correlated.push(false);
        let saved = self.agg.take();
        let plan = self.plan_query(q);
        self.agg = saved;
        let correlated = self.correlated.pop().unwrap_or(false);
        self.outer.pop();
        let plan = plan?;
        if plan.columns.len() != 1 && as_set {
            return Err(SqlError::new("42601", "subquery has too many columns"));
        }
        if correlated {
            let placeholder = QueryPlan {
                plan: Plan::Correlated,
                columns: plan.columns.clone(),
            };
            self.subqueries.push(SubPlan {
                plan: placeholder,
                as_set,
            });
            let slot = self.subqueries.len() - 1;
            self.pending.push((slot, plan));
            return Ok(slot);
        }
        self.subqueries.push(SubPlan { plan, as_set });
        Ok(self.subqueries.len() - 1)
    }

    /// Whether an expression (as written) contains an aggregate call outside subqueries.
    pub fn has_aggregate(e: &ast::Expr) -> bool {
        use ast::Expr as E;
        let any = |v: &[&ast::Expr]| v.iter().any(|x| Self::has_aggregate(x));
        match e {
            E::Function(f) => {
                agg_func(f).is_some()
                    || match &f.args {
                        ast::FunctionArguments::List(l) => l.args.iter().any(|a| match a {
                            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(x)) => {
                                Self::has_aggregate(x)
                            }
                            _ => false,
                        }),
                        _ => false,
                    }
            }
            E::BinaryOp { left, right, .. } => any(&[left, right]),
            E::UnaryOp { expr, .. }
            | E::Nested(expr)
            | E::Cast { expr, .. }
            | E::IsNull(expr)
            | E::IsNotNull(expr)
            | E::IsTrue(expr)
            | E::IsFalse(expr)
            | E::IsNotTrue(expr)
            | E::IsNotFalse(expr)
            | E::Ceil { expr, .. }
            | E::Floor { expr, .. } => Self::has_aggregate(expr),
            E::IsDistinctFrom(a, b) | E::IsNotDistinctFrom(a, b) => any(&[a, b]),
            E::Between {
                expr, low, high, ..
            } => any(&[expr, low, high]),
            E::Like { expr, pattern, .. } | E::ILike { expr, pattern, .. } => any(&[expr, pattern]),
            E::In { expr, target, .. } => {
                Self::has_aggregate(expr)
                    || matches!(target, ast::InTarget::List(l) if l.iter().any(Self::has_aggregate))
            }
            E::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                operand.as_deref().is_some_and(Self::has_aggregate)
                    || conditions.iter().any(|w| {
                        Self::has_aggregate(&w.condition) || Self::has_aggregate(&w.result)
                    })
                    || else_result.as_deref().is_some_and(Self::has_aggregate)
            }
            E::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                Self::has_aggregate(expr)
                    || substring_from.as_deref().is_some_and(Self::has_aggregate)
                    || substring_for.as_deref().is_some_and(Self::has_aggregate)
            }
            _ => false,
        }
    }
}

/// The aggregate a function call names, if it is one.
pub fn agg_func(f: &ast::Function) -> Option<AggFunc> {
    if f.over.is_some() {
        return None;
    }
    Some(match object_name(&f.name).as_str() {
        "count" => AggFunc::Count,
        "sum" => AggFunc::Sum,
        "avg" => AggFunc::Avg,
        "min" => AggFunc::Min,
        "max" => AggFunc::Max,
        "string_agg" => AggFunc::StringAgg,
        _ => return None,
    })
}

/// The common type of CASE / COALESCE branches.
fn unify(a: PgType, b: PgType) -> PgType {
    use PgType::*;
    match (a, b) {
        (x, y) if x == y => x,
        (Float4 | Float8, _) | (_, Float4 | Float8) => Float8,
        (Numeric, _) | (_, Numeric) => Numeric,
        (Int8, _) | (_, Int8) => Int8,
        (Int4, _) | (_, Int4) => Int4,
        (x, _) if is_text(x) => Text,
        (x, _) => x,
    }
}

/// Converts an untyped literal to the type it is compared with, once at plan time.
pub fn coerce_literal(e: Expr, own: PgType, other: PgType) -> Result<Expr, SqlError> {
    if own != PgType::Unknown || other == PgType::Unknown || is_text(other) {
        return Ok(e);
    }
    match e {
        Expr::Const(Datum::Text(s)) => {
            let target = match other {
                PgType::Int2 | PgType::Int4 | PgType::Int8 if s.contains(['.', 'e', 'E']) => {
                    SqlType::Numeric(None)
                }
                t => SqlType::from_pg(t),
            };
            Ok(Expr::Const(cast(Datum::Text(s), target)?))
        }
        other => Ok(other),
    }
}

/// Shares the catalog's table type with the planner modules.
pub type TableRef = Arc<crate::sql::catalog::TableMeta>;
