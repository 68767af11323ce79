//! Planning queries: FROM (tables, joins, table functions, catalog views), WHERE pushdown,
//! join methods, grouping, ORDER BY / LIMIT with sort elimination and limit pushdown.

use sqlparser::ast::{self, JoinConstraint, JoinOperator, SelectItem, SetExpr, TableFactor};

use crate::datum::Datum;
use crate::sql::access::{and_all, choose, conjuncts, pk_lookup};
use crate::sql::bind::{
    AggCtx, Planner, Scope, ScopeCol, TableRef, ident, object_name, object_parts,
};
use crate::sql::error::SqlError;
use crate::sql::expr::{CmpOp, Expr};
use crate::sql::func::Func;
use crate::sql::pg_catalog;
use crate::sql::plan::{
    Access, CorrelatedSub, Plan, QueryPlan, ScanNode, SortKey, SrfCall, WindowCall,
};
use crate::sql::types::{Column, PgType};
use crate::sql::value::ArithOp;

/// One relation of a FROM clause.
struct Rel {
    kind: RelKind,
    alias: String,
    offset: usize,
    width: usize,
    left_join: bool,
    /// ON predicates of a LEFT JOIN (over the combined row).
    on: Vec<Expr>,
}

enum RelKind {
    Table(TableRef),
    Other(Box<Plan>),
}

/// A bound ORDER BY item: position in the projected row, direction, NULLs placement, and
/// the table column it sorts by when that is known (for sort elimination).
struct OrderItem {
    pos: usize,
    desc: bool,
    nulls_first: bool,
    input_col: Option<usize>,
}

fn max_rel(e: &Expr, rels: &[Rel]) -> Option<usize> {
    let mut cols = Vec::new();
    e.columns(&mut cols);
    cols.iter()
        .map(|c| rels.iter().rposition(|r| *c >= r.offset).unwrap_or(0))
        .max()
}

fn min_rel(e: &Expr, rels: &[Rel]) -> Option<usize> {
    let mut cols = Vec::new();
    e.columns(&mut cols);
    cols.iter()
        .map(|c| rels.iter().rposition(|r| *c >= r.offset).unwrap_or(0))
        .min()
}

/// The output name PostgreSQL gives an unaliased select item.
/// Grouping by a table's whole primary key makes its other columns usable above the
/// aggregate (PostgreSQL's functional dependency rule): they are added as further group
/// keys, under their plain and qualified names, which does not change the groups.
fn functionally_dependent(
    rels: &[Rel],
    scope: &Scope,
    groups: &mut Vec<Expr>,
    keys: &mut Vec<String>,
) {
    for rel in rels {
        let RelKind::Table(meta) = &rel.kind else {
            continue;
        };
        let grouped: Vec<usize> = groups
            .iter()
            .filter_map(|g| match g {
                Expr::Column(x) => Some(*x),
                _ => None,
            })
            .collect();
        let grouped_col = |c: usize| grouped.contains(&(rel.offset + c));
        if meta.primary_key.is_empty() || !meta.primary_key.iter().all(|c| grouped_col(*c)) {
            continue;
        }
        for c in 0..rel.width {
            let at = rel.offset + c;
            let Some(col) = scope.cols.get(at) else {
                continue;
            };
            if col.hidden || grouped_col(c) {
                continue;
            }
            for text in [col.name.clone(), format!("{}.{}", col.rel, col.name)] {
                if !keys.contains(&text) {
                    groups.push(Expr::Column(at));
                    keys.push(text);
                }
            }
        }
    }
}

/// Adds `b = v` for every `a = b` and `a = v` among the WHERE conjuncts (v a constant or
/// parameter): `c_w_id = w_id AND w_id = $1` then bounds both tables' keys, not just the
/// one written with the value.
fn implied_equalities(preds: &mut Vec<Expr>) {
    let mut values: Vec<(usize, Expr, bool)> = Vec::new();
    let mut pairs: Vec<(usize, usize, bool)> = Vec::new();
    for p in preds.iter() {
        if let Expr::Cmp(CmpOp::Eq, a, b, bpchar) = p {
            match (&**a, &**b) {
                (Expr::Column(x), Expr::Column(y)) => pairs.push((*x, *y, *bpchar)),
                (Expr::Column(x), v) | (v, Expr::Column(x)) if v.is_row_free() => {
                    values.push((*x, v.clone(), *bpchar))
                }
                _ => {}
            }
        }
    }
    if pairs.is_empty() || values.is_empty() {
        return;
    }
    let mut known: Vec<usize> = values.iter().map(|(c, _, _)| *c).collect();
    // A few rounds reach chains (a = b, b = c) without a fixpoint loop on odd input.
    for _ in 0..3 {
        let mut added = false;
        for &(x, y, bp) in &pairs {
            for (from, to) in [(x, y), (y, x)] {
                if known.contains(&to) {
                    continue;
                }
                if let Some((_, v, vb)) = values.iter().find(|(c, _, _)| *c == from).cloned() {
                    preds.push(Expr::Cmp(
                        CmpOp::Eq,
                        Box::new(Expr::Column(to)),
                        Box::new(v.clone()),
                        bp || vb,
                    ));
                    values.push((to, v, bp || vb));
                    known.push(to);
                    added = true;
                }
            }
        }
        if !added {
            break;
        }
    }
}

fn output_name(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Identifier(i) => ident(i),
        ast::Expr::CompoundIdentifier(parts) => parts.last().map(ident).unwrap_or_default(),
        ast::Expr::Function(f) => object_name(&f.name),
        ast::Expr::Cast {
            expr, data_type, ..
        } => match expr.as_ref() {
            ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) => output_name(expr),
            _ => match data_type {
                ast::DataType::Date => "date".into(),
                ast::DataType::Timestamp(..) => "timestamp".into(),
                ast::DataType::Text => "text".into(),
                _ => {
                    let s = data_type.to_string().to_lowercase();
                    match s.as_str() {
                        "int" | "integer" | "int4" => "int4".into(),
                        "bigint" | "int8" => "int8".into(),
                        "smallint" | "int2" => "int2".into(),
                        "numeric" | "decimal" => "numeric".into(),
                        "boolean" | "bool" => "bool".into(),
                        _ => "?column?".into(),
                    }
                }
            },
        },
        ast::Expr::Nested(inner) => output_name(inner),
        ast::Expr::Case { .. } => "case".into(),
        ast::Expr::Subquery(_) => "?column?".into(),
        ast::Expr::Exists { .. } => "exists".into(),
        ast::Expr::Substring { .. } => "substring".into(),
        ast::Expr::Trim { .. } => "btrim".into(),
        ast::Expr::Position { .. } => "position".into(),
        _ => "?column?".into(),
    }
}

impl Planner<'_> {
    /// Plans a query (SELECT, VALUES, UNION).
    pub fn plan_query(&mut self, q: &ast::Query) -> Result<QueryPlan, SqlError> {
        if q.with.is_some() {
            return Err(SqlError::unsupported("WITH"));
        }
        let for_update = !q.locks.is_empty();
        let order_by: Vec<ast::OrderByExpr> = match &q.order_by {
            None => Vec::new(),
            Some(ob) => match &ob.kind {
                ast::OrderByKind::Expressions(v) => v.clone(),
                ast::OrderByKind::All(_) => return Err(SqlError::unsupported("ORDER BY ALL")),
            },
        };
        let (limit, offset) = match &q.limit_clause {
            None => (None, None),
            Some(ast::LimitClause::LimitOffset { limit, offset, .. }) => {
                (limit.clone(), offset.as_ref().map(|o| o.value.clone()))
            }
            Some(ast::LimitClause::OffsetCommaLimit { offset, limit }) => {
                (Some(limit.clone()), Some(offset.clone()))
            }
        };
        let limit = match limit {
            Some(ast::Expr::Value(v)) if matches!(v.value, ast::Value::Null) => None,
            l => l,
        };
        let empty = Scope::default();
        let limit = limit.map(|l| self.bind_count(&l, &empty)).transpose()?;
        let offset = offset.map(|o| self.bind_count(&o, &empty)).transpose()?;
        match q.body.as_ref() {
            SetExpr::Select(s) => self.plan_select(s, &order_by, limit, offset, for_update),
            other => {
                let inner = self.plan_set_expr(other)?;
                self.finish_simple(inner, &order_by, limit, offset)
            }
        }
    }

    fn bind_count(&mut self, e: &ast::Expr, scope: &Scope) -> Result<Expr, SqlError> {
        let (x, _) = self.bind(e, scope)?;
        self.infer(&x, PgType::Int8);
        Ok(x)
    }

    fn plan_set_expr(&mut self, body: &SetExpr) -> Result<QueryPlan, SqlError> {
        match body {
            SetExpr::Select(s) => self.plan_select(s, &[], None, None, false),
            SetExpr::Query(q) => self.plan_query(q),
            SetExpr::Values(v) => {
                let empty = Scope::default();
                let mut rows = Vec::new();
                let mut types: Vec<PgType> = Vec::new();
                for r in &v.rows {
                    let mut row = Vec::new();
                    for (i, e) in r.content.iter().enumerate() {
                        let (x, t) = self.bind(e, &empty)?;
                        if types.len() <= i {
                            types.push(t);
                        } else if types[i] == PgType::Unknown {
                            types[i] = t;
                        }
                        row.push(x);
                    }
                    if rows
                        .first()
                        .is_some_and(|f: &Vec<Expr>| f.len() != row.len())
                    {
                        return Err(SqlError::syntax("VALUES lists must all be the same length"));
                    }
                    rows.push(row);
                }
                let columns = types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| Column {
                        name: format!("column{}", i + 1),
                        pg_type: if *t == PgType::Unknown {
                            PgType::Text
                        } else {
                            *t
                        },
                    })
                    .collect();
                Ok(QueryPlan {
                    plan: Plan::Values(rows),
                    columns,
                })
            }
            SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                if *op != ast::SetOperator::Union {
                    return Err(SqlError::unsupported(format!("{op}")));
                }
                let l = self.plan_set_expr(left)?;
                let r = self.plan_set_expr(right)?;
                if l.columns.len() != r.columns.len() {
                    return Err(SqlError::syntax(
                        "each UNION query must have the same number of columns",
                    ));
                }
                let all = matches!(set_quantifier, ast::SetQuantifier::All);
                Ok(QueryPlan {
                    plan: Plan::Union(vec![l.plan, r.plan], all),
                    columns: l.columns,
                })
            }
            other => Err(SqlError::unsupported(format!("query {other}"))),
        }
    }

    /// ORDER BY / LIMIT over a VALUES or UNION result: by output name or position only.
    fn finish_simple(
        &mut self,
        q: QueryPlan,
        order_by: &[ast::OrderByExpr],
        limit: Option<Expr>,
        offset: Option<Expr>,
    ) -> Result<QueryPlan, SqlError> {
        let scope = Scope {
            cols: q
                .columns
                .iter()
                .map(|c| ScopeCol {
                    rel: String::new(),
                    name: c.name.clone(),
                    ty: c.pg_type,
                    sql: None,
                    hidden: false,
                })
                .collect(),
        };
        let mut plan = q.plan;
        if !order_by.is_empty() {
            let mut keys = Vec::new();
            for o in order_by {
                let expr = match &o.expr {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::Number(n, _) => {
                            let k: usize = n
                                .parse()
                                .map_err(|_| SqlError::syntax("bad ORDER BY position"))?;
                            if k == 0 || k > q.columns.len() {
                                return Err(SqlError::new(
                                    "42P10",
                                    format!("ORDER BY position {k} is not in select list"),
                                ));
                            }
                            Expr::Column(k - 1)
                        }
                        _ => self.bind(&o.expr, &scope)?.0,
                    },
                    e => self.bind(e, &scope)?.0,
                };
                let desc = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
                keys.push(SortKey {
                    expr,
                    desc,
                    nulls_first: o.options.nulls_first.unwrap_or(desc),
                });
            }
            plan = Plan::Sort(Box::new(plan), keys);
        }
        if limit.is_some() || offset.is_some() {
            plan = Plan::Limit {
                input: Box::new(plan),
                limit,
                offset,
            };
        }
        Ok(QueryPlan {
            plan,
            columns: q.columns,
        })
    }

    fn plan_from_item(
        &mut self,
        factor: &TableFactor,
        rels: &mut Vec<Rel>,
        scope: &mut Scope,
    ) -> Result<(), SqlError> {
        let offset = scope.cols.len();
        match factor {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                let parts = object_parts(name);
                let table_name = parts.last().cloned().unwrap_or_default();
                let alias_name = alias
                    .as_ref()
                    .map(|a| ident(&a.name))
                    .unwrap_or_else(|| table_name.clone());
                if let Some(args) = args {
                    if table_name != "generate_series" {
                        return Err(SqlError::new(
                            "42883",
                            format!("function {table_name} does not exist"),
                        ));
                    }
                    let empty = Scope::default();
                    let mut bound = Vec::new();
                    let mut all_int4 = true;
                    for a in &args.args {
                        let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) = a else {
                            return Err(SqlError::unsupported("named arguments"));
                        };
                        let (x, t) = self.bind(e, &empty)?;
                        self.infer(&x, PgType::Int4);
                        all_int4 &= matches!(t, PgType::Int4 | PgType::Int2 | PgType::Unknown);
                        bound.push(x);
                    }
                    if !(2..=3).contains(&bound.len()) {
                        return Err(SqlError::new(
                            "42883",
                            "function generate_series needs 2 or 3 arguments",
                        ));
                    }
                    let step = if bound.len() == 3 { bound.pop() } else { None };
                    let stop = bound.pop().unwrap_or(Expr::Const(Datum::Null));
                    let start = bound.pop().unwrap_or(Expr::Const(Datum::Null));
                    let col = alias
                        .as_ref()
                        .and_then(|a| a.columns.first().map(|c| ident(&c.name)))
                        .unwrap_or_else(|| alias_name.clone());
                    scope.cols.push(ScopeCol {
                        rel: alias_name.clone(),
                        name: col,
                        ty: if all_int4 { PgType::Int4 } else { PgType::Int8 },
                        sql: None,
                        hidden: false,
                    });
                    rels.push(Rel {
                        kind: RelKind::Other(Box::new(Plan::Series(start, stop, step))),
                        alias: alias_name,
                        offset,
                        width: 1,
                        left_join: false,
                        on: Vec::new(),
                    });
                    return Ok(());
                }
                if let Some(v) = pg_catalog::lookup(&parts, self.catalog) {
                    let cols = pg_catalog::columns(v);
                    for (n, t) in &cols {
                        scope.cols.push(ScopeCol {
                            rel: alias_name.clone(),
                            name: n.to_string(),
                            ty: *t,
                            sql: None,
                            hidden: false,
                        });
                    }
                    rels.push(Rel {
                        kind: RelKind::Other(Box::new(Plan::Virtual(v))),
                        alias: alias_name,
                        offset,
                        width: cols.len(),
                        left_join: false,
                        on: Vec::new(),
                    });
                    return Ok(());
                }
                let meta = self.catalog.table(&table_name)?;
                for c in &meta.columns {
                    scope.cols.push(ScopeCol {
                        rel: alias_name.clone(),
                        name: c.name.clone(),
                        ty: c.ty.pg(),
                        sql: Some(c.ty),
                        hidden: c.hidden,
                    });
                }
                let width = meta.columns.len();
                rels.push(Rel {
                    kind: RelKind::Table(meta),
                    alias: alias_name,
                    offset,
                    width,
                    left_join: false,
                    on: Vec::new(),
                });
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                self.output_records.clear();
                let q = self.plan_query(subquery)?;
                let records = std::mem::take(&mut self.output_records);
                let alias_name = alias
                    .as_ref()
                    .map(|a| ident(&a.name))
                    .unwrap_or_else(|| "subquery".into());
                if records.len() == q.columns.len() {
                    for (c, r) in q.columns.iter().zip(&records) {
                        if let Some(fields) = r {
                            self.record_cols
                                .push((alias_name.clone(), c.name.clone(), fields));
                        }
                    }
                }
                for (i, c) in q.columns.iter().enumerate() {
                    let name = alias
                        .as_ref()
                        .and_then(|a| a.columns.get(i).map(|c| ident(&c.name)))
                        .unwrap_or_else(|| c.name.clone());
                    scope.cols.push(ScopeCol {
                        rel: alias_name.clone(),
                        name,
                        ty: c.pg_type,
                        sql: None,
                        hidden: false,
                    });
                }
                let width = q.columns.len();
                rels.push(Rel {
                    kind: RelKind::Other(Box::new(q.plan)),
                    alias: alias_name,
                    offset,
                    width,
                    left_join: false,
                    on: Vec::new(),
                });
            }
            other => return Err(SqlError::unsupported(format!("FROM item {other}"))),
        }
        Ok(())
    }

    /// FROM: relations, their combined scope, and the predicates of inner joins.
    fn plan_from(
        &mut self,
        from: &[ast::TableWithJoins],
    ) -> Result<(Vec<Rel>, Scope, Vec<Expr>), SqlError> {
        let mut rels = Vec::new();
        let mut scope = Scope::default();
        let mut preds = Vec::new();
        for twj in from {
            self.plan_from_item(&twj.relation, &mut rels, &mut scope)?;
            for j in &twj.joins {
                let (left, constraint) = match &j.join_operator {
                    JoinOperator::Join(c) | JoinOperator::Inner(c) => (false, Some(c)),
                    JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (true, Some(c)),
                    JoinOperator::CrossJoin(_) => (false, None),
                    other => {
                        return Err(SqlError::unsupported(
                            format!("join {other:?}")
                                .chars()
                                .take(60)
                                .collect::<String>(),
                        ));
                    }
                };
                let before = scope.cols.len();
                self.plan_from_item(&j.relation, &mut rels, &mut scope)?;
                let mut on = Vec::new();
                match constraint {
                    Some(JoinConstraint::On(e)) => {
                        let p = self.bind_predicate(e, &scope)?;
                        conjuncts(p, &mut on);
                    }
                    Some(JoinConstraint::Using(cols)) => {
                        for c in cols {
                            let name = object_name(c);
                            let left_scope = Scope {
                                cols: scope.cols[..before].to_vec(),
                            };
                            let l = left_scope
                                .resolve(None, &name)?
                                .ok_or_else(|| SqlError::new("42703", format!("column \"{name}\" specified in USING clause does not exist in left table")))?;
                            let right_scope = Scope {
                                cols: scope.cols[before..].to_vec(),
                            };
                            let r = right_scope
                                .resolve(None, &name)?
                                .ok_or_else(|| SqlError::new("42703", format!("column \"{name}\" specified in USING clause does not exist in right table")))?;
                            on.push(Expr::Cmp(
                                CmpOp::Eq,
                                Box::new(Expr::Column(l)),
                                Box::new(Expr::Column(before + r)),
                                false,
                            ));
                            // The right copy no longer resolves by bare name.
                            scope.cols[before + r].hidden = true;
                            scope.cols[before + r].rel =
                                format!("{}\u{0}", scope.cols[before + r].rel);
                        }
                    }
                    Some(JoinConstraint::None) | None => {}
                    Some(other) => {
                        return Err(SqlError::unsupported(
                            format!("join constraint {other:?}")
                                .chars()
                                .take(60)
                                .collect::<String>(),
                        ));
                    }
                }
                if let Some(r) = rels.last_mut()
                    && left
                {
                    r.left_join = true;
                    r.on = on;
                } else {
                    preds.extend(on);
                }
            }
        }
        Ok((rels, scope, preds))
    }

    /// The plan of one relation with its own predicates pushed into it.
    fn rel_plan(
        &self,
        rel: &mut Rel,
        local: Vec<Expr>,
        for_update: bool,
    ) -> (Plan, Option<crate::sql::access::Chosen>) {
        let off = rel.offset;
        let shift = |e: &Expr| e.remap(&|c| c - off);
        match &mut rel.kind {
            RelKind::Table(meta) => {
                let chosen = choose(meta, &local, off, &|e: &Expr| e.is_row_free());
                let filter = and_all(local.iter().map(shift).collect());
                let scan = ScanNode {
                    table: meta.clone(),
                    alias: rel.alias.clone(),
                    access: chosen.access.clone(),
                    filter,
                    limit: None,
                    for_update,
                };
                (Plan::Scan(scan), Some(chosen))
            }
            RelKind::Other(plan) => {
                let p = std::mem::replace(plan.as_mut(), Plan::OneRow);
                match and_all(local.iter().map(shift).collect()) {
                    Some(f) => (Plan::Filter(Box::new(p), f), None),
                    None => (p, None),
                }
            }
        }
    }

    /// Joins the relations left to right, choosing per step an index nested-loop join, a
    /// hash join or a nested loop, and applying each WHERE predicate as early as possible.
    fn plan_joins(
        &self,
        mut rels: Vec<Rel>,
        mut preds: Vec<Expr>,
        for_update: bool,
    ) -> (Plan, Option<crate::sql::access::Chosen>) {
        if rels.is_empty() {
            let plan = match and_all(preds) {
                Some(f) => Plan::Filter(Box::new(Plan::OneRow), f),
                None => Plan::OneRow,
            };
            return (plan, None);
        }
        // Predicates for the first relation (and constant ones).
        let (first, rest): (Vec<Expr>, Vec<Expr>) = preds
            .drain(..)
            .partition(|p| max_rel(p, &rels).is_none_or(|r| r == 0));
        preds = rest;
        let single = rels.len() == 1;
        let (mut plan, chosen) = self.rel_plan(&mut rels[0], first, for_update);
        for i in 1..rels.len() {
            let offset = rels[i].offset;
            let width = rels[i].width;
            let left_join = rels[i].left_join;
            let (mut local, mut conds): (Vec<Expr>, Vec<Expr>) = (Vec::new(), Vec::new());
            let source = if left_join {
                std::mem::take(&mut rels[i].on)
            } else {
                let (mine, rest): (Vec<Expr>, Vec<Expr>) =
                    preds.drain(..).partition(|p| max_rel(p, &rels) == Some(i));
                preds = rest;
                mine
            };
            for p in source {
                if min_rel(&p, &rels) == Some(i) {
                    local.push(p);
                } else {
                    conds.push(p);
                }
            }
            let left_available = |e: &Expr| {
                let mut cols = Vec::new();
                e.columns(&mut cols);
                cols.iter().all(|c| *c < offset)
            };
            // The relation's own predicates first: a key they fix with constants and
            // parameters (`w_id = $1` beside `c_w_id = w_id`) makes it a lookup that needs no
            // left row, so it is read once and fetched with the statement's other fixed
            // lookups (`sql::prefetch`) instead of after the left side.
            let mut all: Vec<Expr> = local.clone();
            all.extend(conds.iter().cloned());
            let lookup = match &rels[i].kind {
                RelKind::Table(meta) => pk_lookup(meta, &all, offset, &left_available)
                    .filter(|k| k.iter().any(|e| !e.is_row_free())),
                RelKind::Other(_) => None,
            };
            if let (Some(key), RelKind::Table(meta)) = (lookup, &rels[i].kind) {
                plan = Plan::IndexJoin {
                    left: Box::new(plan),
                    right: ScanNode {
                        table: meta.clone(),
                        alias: rels[i].alias.clone(),
                        access: Access::Full,
                        filter: None,
                        limit: None,
                        for_update,
                    },
                    key,
                    on: and_all(all),
                    left_join,
                };
            } else {
                // Equalities between the two sides make a hash join.
                let mut lk = Vec::new();
                let mut rk = Vec::new();
                let mut residual = Vec::new();
                for c in conds {
                    if let Expr::Cmp(CmpOp::Eq, a, b, _) = &c {
                        let a_left = left_available(a) && !a.is_row_free();
                        let b_left = left_available(b) && !b.is_row_free();
                        let a_right = min_rel(a, &rels) == Some(i);
                        let b_right = min_rel(b, &rels) == Some(i);
                        if a_left && b_right {
                            lk.push((**a).clone());
                            rk.push(b.remap(&|c| c - offset));
                            continue;
                        }
                        if b_left && a_right {
                            lk.push((**b).clone());
                            rk.push(a.remap(&|c| c - offset));
                            continue;
                        }
                    }
                    residual.push(c);
                }
                let (right, _) = self.rel_plan(&mut rels[i], local, for_update);
                plan = if lk.is_empty() {
                    Plan::NestedLoop {
                        left: Box::new(plan),
                        right: Box::new(right),
                        on: and_all(residual),
                        left_join,
                        right_width: width,
                    }
                } else {
                    Plan::HashJoin {
                        left: Box::new(plan),
                        right: Box::new(right),
                        left_keys: lk,
                        right_keys: rk,
                        on: and_all(residual),
                        left_join,
                        right_width: width,
                    }
                };
            }
            // WHERE predicates complete at this step (after a LEFT JOIN they filter the
            // padded rows, as SQL requires).
            let (now, rest): (Vec<Expr>, Vec<Expr>) = preds
                .drain(..)
                .partition(|p| max_rel(p, &rels).is_some_and(|r| r <= i));
            preds = rest;
            if let Some(f) = and_all(now) {
                plan = Plan::Filter(Box::new(plan), f);
            }
        }
        if let Some(f) = and_all(preds) {
            plan = Plan::Filter(Box::new(plan), f);
        }
        (plan, if single { chosen } else { None })
    }

    fn plan_select(
        &mut self,
        s: &ast::Select,
        order_by: &[ast::OrderByExpr],
        limit: Option<Expr>,
        offset: Option<Expr>,
        for_update: bool,
    ) -> Result<QueryPlan, SqlError> {
        if let Some(flat) = crate::sql::decorrelate::decorrelate(s)? {
            return self.plan_select(&flat, order_by, limit, offset, for_update);
        }
        let mark = self.pending.len();
        let (rels, scope, mut preds) = self.plan_from(&s.from)?;
        if self.pending.len() > mark {
            return Err(SqlError::unsupported(
                "a correlated subquery in FROM or JOIN ... ON",
            ));
        }
        // WHERE conjuncts that read correlated subqueries run after the joins, per row.
        let mut late_preds = Vec::new();
        if let Some(w) = &s.selection {
            if Self::has_aggregate(w) {
                return Err(SqlError::new(
                    "42803",
                    "aggregate functions are not allowed in WHERE",
                ));
            }
            let p = self.bind_predicate(w, &scope)?;
            let slots: Vec<usize> = self.pending[mark..].iter().map(|(s, _)| *s).collect();
            let mut all = Vec::new();
            conjuncts(p, &mut all);
            for c in all {
                if c.reads_slots(&slots) {
                    late_preds.push(c);
                } else {
                    preds.push(c);
                }
            }
        }
        // Projection items, with wildcards expanded.
        let mut items = Vec::new();
        for it in &s.projection {
            match it {
                SelectItem::UnnamedExpr(e) => {
                    items.push(ProjItem::Expr(Box::new(e.clone()), output_name(e)))
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    items.push(ProjItem::Expr(Box::new(expr.clone()), ident(alias)))
                }
                SelectItem::Wildcard(_) => {
                    if scope.cols.is_empty() {
                        return Err(SqlError::syntax(
                            "SELECT * with no tables specified is not valid",
                        ));
                    }
                    for (i, c) in scope.cols.iter().enumerate() {
                        if !c.hidden {
                            items.push(ProjItem::Col(i));
                        }
                    }
                }
                SelectItem::QualifiedWildcard(kind, _) => {
                    let rel = match kind {
                        ast::SelectItemQualifiedWildcardKind::ObjectName(n) => object_name(n),
                        ast::SelectItemQualifiedWildcardKind::Expr(e) => e.to_string(),
                    };
                    let before = items.len();
                    for (i, c) in scope.cols.iter().enumerate() {
                        if !c.hidden && c.rel == rel {
                            items.push(ProjItem::Col(i));
                        }
                    }
                    if items.len() == before {
                        return Err(SqlError::new(
                            "42P01",
                            format!("missing FROM-clause entry for table \"{rel}\""),
                        ));
                    }
                }
                other => return Err(SqlError::unsupported(format!("select item {other}"))),
            }
        }
        let group_exprs: Vec<ast::Expr> = match &s.group_by {
            ast::GroupByExpr::Expressions(v, _) => v
                .iter()
                .map(|g| {
                    // GROUP BY position or output alias.
                    if let ast::Expr::Value(v) = g
                        && let ast::Value::Number(n, _) = &v.value
                        && let Ok(k) = n.parse::<usize>()
                        && let Some(ProjItem::Expr(e, _)) = items.get(k.wrapping_sub(1))
                    {
                        return (**e).clone();
                    }
                    if let ast::Expr::Identifier(id) = g
                        && scope.resolve(None, &ident(id)).ok().flatten().is_none()
                        && let Some(ProjItem::Expr(e, _)) = items
                            .iter()
                            .find(|it| matches!(it, ProjItem::Expr(_, n) if *n == ident(id)))
                    {
                        return (**e).clone();
                    }
                    g.clone()
                })
                .collect(),
            ast::GroupByExpr::All(_) => return Err(SqlError::unsupported("GROUP BY ALL")),
        };
        let grouped = !group_exprs.is_empty()
            || items
                .iter()
                .any(|it| matches!(it, ProjItem::Expr(e, _) if Self::has_aggregate(e)))
            || s.having.is_some()
            || order_by.iter().any(|o| Self::has_aggregate(&o.expr));
        let mut groups = Vec::new();
        let mut group_keys: Vec<String> = group_exprs.iter().map(|g| g.to_string()).collect();
        if grouped {
            for g in &group_exprs {
                groups.push(self.bind(g, &scope)?.0);
            }
            functionally_dependent(&rels, &scope, &mut groups, &mut group_keys);
            self.agg = Some(AggCtx {
                group_keys,
                aggs: Vec::new(),
                input: scope.clone(),
            });
        }
        let window_mark = self.windows.len();
        let srf_mark = self.srfs.len();
        let saved_base = self.window_base.replace((scope.cols.len(), window_mark));
        let saved_srf = self.srf_base.replace((scope.cols.len(), srf_mark));
        let result = self.plan_select_outputs(&items, &scope, s, order_by, grouped);
        self.window_base = saved_base;
        self.srf_base = saved_srf;
        let windows: Vec<WindowCall> = self.windows.drain(window_mark..).collect();
        let srfs: Vec<SrfCall> = self.srfs.drain(srf_mark..).map(|(_, c)| c).collect();
        if !srfs.is_empty() && (grouped || !windows.is_empty()) {
            return Err(SqlError::unsupported(
                "set-returning functions with aggregates or window functions",
            ));
        }
        let agg = self.agg.take();
        let (mut exprs, columns, having, order_items) = result?;
        if grouped && !windows.is_empty() {
            return Err(SqlError::unsupported(
                "window functions in a query with GROUP BY or aggregates",
            ));
        }
        if grouped && self.pending.len() > mark {
            return Err(SqlError::unsupported(
                "a correlated subquery in a query with GROUP BY or aggregates",
            ));
        }
        let correlated: Vec<CorrelatedSub> = self
            .pending
            .drain(mark..)
            .map(|(slot, q)| CorrelatedSub {
                slot,
                plan: q.plan,
                as_set: false,
            })
            .collect();
        let correlated = self.attach(correlated);
        implied_equalities(&mut preds);
        let (mut plan, chosen) = self.plan_joins(rels, preds, for_update);
        if !late_preds.is_empty() {
            let width = scope.cols.len();
            let mut pred = late_preds.remove(0);
            for p in late_preds {
                pred = Expr::And(Box::new(pred), Box::new(p));
            }
            let subs = reading(&correlated, std::slice::from_ref(&pred));
            let mut cols: Vec<Expr> = (0..width).map(Expr::Column).collect();
            cols.push(pred);
            plan = Plan::Apply {
                input: Box::new(plan),
                subs,
                exprs: cols,
            };
            plan = Plan::Filter(Box::new(plan), Expr::Column(width));
            plan = Plan::Project(Box::new(plan), (0..width).map(Expr::Column).collect());
        }
        if let Some(ctx) = agg {
            plan = Plan::Aggregate {
                input: Box::new(plan),
                groups,
                aggs: ctx.aggs.into_iter().map(|(_, a)| a).collect(),
            };
        }
        if let Some(h) = having {
            plan = Plan::Filter(Box::new(plan), h);
        }
        if !srfs.is_empty() {
            plan = Plan::ProjectSet {
                input: Box::new(plan),
                srfs,
            };
        }
        if !windows.is_empty() {
            plan = Plan::Window {
                input: Box::new(plan),
                calls: windows,
            };
        }
        let visible = columns.len();
        // Can the scan deliver rows already in ORDER BY order?
        let ordered_by_scan = !grouped
            && chosen.as_ref().is_some_and(|c| {
                if matches!(c.access, Access::PkPoint(_)) {
                    return true;
                }
                if order_items.is_empty() {
                    return !matches!(c.access, Access::PkMulti(_));
                }
                let mut pos = 0;
                for o in &order_items {
                    let Some(col) = o.input_col else { return false };
                    if o.desc || o.nulls_first {
                        return false;
                    }
                    while pos < c.order.len() && c.order[pos] != col && pos < c.fixed {
                        pos += 1;
                    }
                    if pos < c.order.len() && c.order[pos] == col {
                        pos += 1;
                    } else if !c.order[..c.fixed.min(c.order.len())].contains(&col) {
                        return false;
                    }
                }
                true
            });
        if ordered_by_scan
            && s.distinct.is_none()
            && let Some(l) = &limit
            && let Plan::Scan(scan) = &mut plan
        {
            let wanted = match &offset {
                Some(o) => Expr::Arith(
                    ArithOp::Add,
                    Box::new(l.clone()),
                    Box::new(o.clone()),
                    PgType::Int8,
                ),
                None => l.clone(),
            };
            scan.limit = Some(wanted);
        }
        let extra = exprs.len() > visible;
        self.output_records = exprs[..visible]
            .iter()
            .map(|e| match e {
                Expr::Func(Func::Record(fields), _) => Some(*fields),
                _ => None,
            })
            .collect();
        let subs = reading(&correlated, &exprs);
        plan = if subs.is_empty() {
            Plan::Project(Box::new(plan), std::mem::take(&mut exprs))
        } else {
            Plan::Apply {
                input: Box::new(plan),
                subs,
                exprs: std::mem::take(&mut exprs),
            }
        };
        if s.distinct.is_some() {
            if extra {
                return Err(SqlError::new(
                    "42P10",
                    "for SELECT DISTINCT, ORDER BY expressions must appear in select list",
                ));
            }
            plan = Plan::Distinct(Box::new(plan), visible);
        }
        if !order_items.is_empty() && !ordered_by_scan {
            let keys = order_items
                .iter()
                .map(|o| SortKey {
                    expr: Expr::Column(o.pos),
                    desc: o.desc,
                    nulls_first: o.nulls_first,
                })
                .collect();
            plan = Plan::Sort(Box::new(plan), keys);
        }
        if limit.is_some() || offset.is_some() {
            plan = Plan::Limit {
                input: Box::new(plan),
                limit,
                offset,
            };
        }
        if extra {
            plan = Plan::Project(Box::new(plan), (0..visible).map(Expr::Column).collect());
        }
        Ok(QueryPlan { plan, columns })
    }

    /// Binds projections, HAVING and ORDER BY (in grouped mode when `grouped`).
    #[allow(clippy::type_complexity)]
    fn plan_select_outputs(
        &mut self,
        items: &[ProjItem],
        scope: &Scope,
        s: &ast::Select,
        order_by: &[ast::OrderByExpr],
        grouped: bool,
    ) -> Result<(Vec<Expr>, Vec<Column>, Option<Expr>, Vec<OrderItem>), SqlError> {
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        let mut input_cols = Vec::new();
        for item in items {
            let (x, t, name) = match item {
                ProjItem::Col(i) => {
                    if grouped {
                        let c = &scope.cols[*i];
                        return Err(SqlError::new(
                            "42803",
                            format!(
                                "column \"{}.{}\" must appear in the GROUP BY clause or be used in an aggregate function",
                                c.rel, c.name
                            ),
                        ));
                    }
                    (
                        Expr::Column(*i),
                        scope.cols[*i].ty,
                        scope.cols[*i].name.clone(),
                    )
                }
                ProjItem::Expr(e, name) => {
                    let (x, t) = self.bind(e, scope)?;
                    (x, t, name.clone())
                }
            };
            input_cols.push(match (&x, grouped) {
                (Expr::Column(c), false) => Some(*c),
                _ => None,
            });
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
        let having = match &s.having {
            Some(h) => Some(self.bind_predicate(h, scope)?),
            None => None,
        };
        let mut order_items = Vec::new();
        for o in order_by {
            let desc = matches!(o.options.sort, Some(ast::OrderBySort::Desc));
            let nulls_first = o.options.nulls_first.unwrap_or(desc);
            let by_name = match &o.expr {
                ast::Expr::Identifier(id) => {
                    let n = ident(id);
                    columns.iter().position(|c| c.name == n).filter(|_| {
                        scope.resolve(None, &n).ok().flatten().is_none() || grouped || {
                            // A bare name matching both an output and an input column means the output.
                            true
                        }
                    })
                }
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::Number(n, _) => {
                        let k: usize = n
                            .parse()
                            .map_err(|_| SqlError::syntax("bad ORDER BY position"))?;
                        if k == 0 || k > columns.len() {
                            return Err(SqlError::new(
                                "42P10",
                                format!("ORDER BY position {k} is not in select list"),
                            ));
                        }
                        Some(k - 1)
                    }
                    _ => None,
                },
                _ => None,
            };
            let (pos, input_col) = match by_name {
                Some(p) => (p, input_cols.get(p).copied().flatten()),
                None => {
                    let (x, _) = self.bind(&o.expr, scope)?;
                    let input_col = match (&x, grouped) {
                        (Expr::Column(c), false) => Some(*c),
                        _ => None,
                    };
                    exprs.push(x);
                    (exprs.len() - 1, input_col)
                }
            };
            order_items.push(OrderItem {
                pos,
                desc,
                nulls_first,
                input_col,
            });
        }
        Ok((exprs, columns, having, order_items))
    }
}

/// The correlated subqueries among `subs` that `exprs` read.
fn reading(subs: &[CorrelatedSub], exprs: &[Expr]) -> Vec<CorrelatedSub> {
    subs.iter()
        .filter(|s| exprs.iter().any(|e| e.reads_slots(&[s.slot])))
        .cloned()
        .collect()
}

impl Planner<'_> {
    /// Takes over the correlated subqueries of one SELECT for its `Plan::Apply`: their
    /// slots' placeholders become empty plans (run cheaply before the statement, then
    /// overwritten per row), and each keeps whether its result is used as a set.
    fn attach(&mut self, mut subs: Vec<CorrelatedSub>) -> Vec<CorrelatedSub> {
        for s in &mut subs {
            if let Some(slot) = self.subqueries.get_mut(s.slot) {
                slot.plan.plan = Plan::Values(Vec::new());
                s.as_set = slot.as_set;
            }
        }
        subs
    }
}

/// A projection item after wildcard expansion.
enum ProjItem {
    Expr(Box<ast::Expr>, String),
    Col(usize),
}
