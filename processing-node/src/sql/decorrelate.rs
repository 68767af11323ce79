//! Decorrelation of scalar aggregate subqueries in a SELECT list.
//!
//! `SELECT c.x, (SELECT sum(v) FROM t WHERE t.k = c.k AND p) s FROM c` becomes
//! `SELECT c.x, d.v s FROM c LEFT JOIN (SELECT t.k, sum(v) FROM t WHERE p GROUP BY t.k) d
//! ON d.k = c.k`: one grouped pass instead of one subquery per outer row, which the hash
//! join then matches. It applies when the subquery is a single aggregate without GROUP BY,
//! HAVING, ORDER BY or LIMIT, and every predicate that reads the outer row is an equality
//! between an inner expression and an outer one. count(...) becomes
//! `coalesce(d.v, 0)`, since a group that does not exist counts zero rows, not NULL. Other
//! shapes of correlation run once per outer row (`Plan::Apply`, see `apply.rs`).

use sqlparser::ast::{self, BinaryOperator, Expr, GroupByExpr, SelectItem, SetExpr, TableFactor};
use std::collections::HashSet;

use crate::sql::bind::{Planner, ident, object_name};
use crate::sql::error::SqlError;
use crate::sql::parse::parse;

/// Relation names (aliases, or table names) a FROM list makes visible.
fn rel_names(from: &[ast::TableWithJoins]) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut add = |f: &TableFactor| match f {
        TableFactor::Table { name, alias, .. } => {
            out.insert(match alias {
                Some(a) => ident(&a.name),
                None => object_name(name)
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        TableFactor::Derived { alias: Some(a), .. } => {
            out.insert(ident(&a.name));
        }
        _ => {}
    };
    for t in from {
        add(&t.relation);
        for j in &t.joins {
            add(&j.relation);
        }
    }
    out
}

/// The qualifiers of the compound identifiers in an expression (`c` in `c.x`), read from
/// its SQL text: identifiers followed by a dot, outside string literals and quoted names
/// (quoted qualifiers keep their case, others are lower-cased as identifiers are).
fn qualifiers(e: &Expr) -> HashSet<String> {
    let text = e.to_string();
    let mut out = HashSet::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut prev_ident_char = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            prev_ident_char = false;
            continue;
        }
        if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            let name: String = chars[start..i.min(chars.len())].iter().collect();
            i += 1;
            if chars.get(i) == Some(&'.') {
                out.insert(name);
            }
            prev_ident_char = false;
            continue;
        }
        if (c.is_alphabetic() || c == '_') && !prev_ident_char {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            if chars.get(i) == Some(&'.')
                && chars
                    .get(i + 1)
                    .is_some_and(|n| n.is_alphabetic() || *n == '_' || *n == '"')
            {
                let name: String = chars[start..i].iter().collect();
                out.insert(name.to_lowercase());
            }
            prev_ident_char = false;
            continue;
        }
        prev_ident_char = c.is_alphanumeric() || c == '_' || c == '$';
        i += 1;
    }
    out
}

fn conjuncts(e: &Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner)
            if matches!(
                **inner,
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(inner, out)
        }
        other => out.push(other.clone()),
    }
}

/// One decorrelated subquery: the derived table's SQL and the join condition's outer sides.
struct Rewrite {
    derived: String,
    outer_keys: Vec<Expr>,
    count: bool,
}

/// Plans the rewrite of one scalar subquery, or `None` when it is not correlated or not of
/// the supported shape.
fn rewrite_subquery(q: &ast::Query, outer: &HashSet<String>) -> Option<Rewrite> {
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(inner) = &*q.body else {
        return None;
    };
    let no_groups = matches!(&inner.group_by, GroupByExpr::Expressions(v, _) if v.is_empty());
    if !no_groups || inner.having.is_some() || inner.distinct.is_some() {
        return None;
    }
    let [item] = inner.projection.as_slice() else {
        return None;
    };
    let agg = match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return None,
    };
    if !Planner::has_aggregate(agg) {
        return None;
    }
    let inner_rels = rel_names(&inner.from);
    let is_outer = |e: &Expr| {
        let q = qualifiers(e);
        !q.is_empty()
            && q.iter()
                .all(|r| outer.contains(r) && !inner_rels.contains(r))
    };
    let reads_outer = |e: &Expr| {
        qualifiers(e)
            .iter()
            .any(|r| outer.contains(r) && !inner_rels.contains(r))
    };
    if reads_outer(agg) {
        return None;
    }
    let mut conjs = Vec::new();
    if let Some(w) = &inner.selection {
        conjuncts(w, &mut conjs);
    }
    let (mut inner_keys, mut outer_keys, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    for c in conjs {
        if !reads_outer(&c) {
            rest.push(c);
            continue;
        }
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = &c
        else {
            return None;
        };
        if is_outer(right) && !reads_outer(left) {
            inner_keys.push((**left).clone());
            outer_keys.push((**right).clone());
        } else if is_outer(left) && !reads_outer(right) {
            inner_keys.push((**right).clone());
            outer_keys.push((**left).clone());
        } else {
            return None;
        }
    }
    if inner_keys.is_empty() {
        return None;
    }
    let keys: Vec<String> = inner_keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} AS __k{i}"))
        .collect();
    let from: Vec<String> = inner.from.iter().map(|t| t.to_string()).collect();
    let group: Vec<String> = inner_keys.iter().map(|k| k.to_string()).collect();
    let filter: Vec<String> = rest.iter().map(|c| format!("({c})")).collect();
    let derived = format!(
        "SELECT {}, {agg} AS __v FROM {}{} GROUP BY {}",
        keys.join(", "),
        from.join(", "),
        if filter.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filter.join(" AND "))
        },
        group.join(", ")
    );
    let count = matches!(agg, Expr::Function(f) if object_name(&f.name) == "count");
    Some(Rewrite {
        derived,
        outer_keys,
        count,
    })
}

/// Rewrites the correlated scalar subqueries of a SELECT list into LEFT JOINs with grouped
/// derived tables; `None` when there is nothing to rewrite.
pub fn decorrelate(s: &ast::Select) -> Result<Option<ast::Select>, SqlError> {
    if s.from.is_empty() {
        return Ok(None);
    }
    let outer = rel_names(&s.from);
    let mut out = s.clone();
    let mut n = 0;
    for item in out.projection.iter_mut() {
        let e = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => continue,
        };
        let Expr::Subquery(q) = e else { continue };
        let Some(rw) = rewrite_subquery(q, &outer) else {
            continue;
        };
        let name = format!("__sq{n}");
        n += 1;
        let on: Vec<String> = rw
            .outer_keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{name}.__k{i} = {k}"))
            .collect();
        let sql = format!(
            "SELECT 1 FROM __outer LEFT JOIN ({}) AS {name} ON {}",
            rw.derived,
            on.join(" AND ")
        );
        let stmts = parse(&sql)?;
        let join = match stmts.first() {
            Some(ast::Statement::Query(q)) => match &*q.body {
                SetExpr::Select(sel) => sel.from.first().and_then(|t| t.joins.first()).cloned(),
                _ => None,
            },
            _ => None,
        };
        let Some(join) = join else {
            return Err(SqlError::internal("decorrelation produced no join"));
        };
        let value = if rw.count {
            format!("coalesce({name}.__v, 0)")
        } else {
            format!("{name}.__v")
        };
        let replacement = match parse(&format!("SELECT {value}"))?.first() {
            Some(ast::Statement::Query(q)) => match &*q.body {
                SetExpr::Select(sel) => match sel.projection.first() {
                    Some(SelectItem::UnnamedExpr(e)) => Some(e.clone()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        };
        let Some(replacement) = replacement else {
            return Err(SqlError::internal("decorrelation produced no expression"));
        };
        *e = replacement;
        if let Some(last) = out.from.last_mut() {
            last.joins.push(join);
        }
    }
    Ok((n > 0).then_some(out))
}
