//! Query plans: the operator tree the executor runs and EXPLAIN prints.

use std::sync::Arc;

use crate::datum::Datum;
use crate::sql::catalog::TableMeta;
use crate::sql::expr::Expr;
use crate::sql::types::{Column, PgType};

/// How a scan reaches the rows of one table.
#[derive(Debug, Clone)]
pub enum Access {
    /// Every row, in primary-key order.
    Full,
    /// One row by its whole primary key.
    PkPoint(Vec<Expr>),
    /// Several rows by whole primary keys (IN lists), fetched in one batch.
    PkMulti(Vec<Vec<Expr>>),
    /// Several primary-key prefixes (row-valued IN lists on leading key columns), each
    /// scanned as a range.
    PkPrefixes(Vec<Vec<Expr>>),
    /// A primary-key range: equal prefix, then optional bounds on the next column.
    PkRange(KeyRange),
    /// A secondary-index range (index position in the table's index list).
    Index(usize, KeyRange),
}

/// Bounds on a key: values for a prefix of its columns, then a range on the next one.
#[derive(Debug, Clone, Default)]
pub struct KeyRange {
    /// Values of the leading key columns.
    pub eq: Vec<Expr>,
    /// Lower bound on the next column (inclusive?).
    pub lower: Option<(Expr, bool)>,
    /// Upper bound on the next column (inclusive?).
    pub upper: Option<(Expr, bool)>,
}

/// A table scan with its access path, pushed-down filter and limit.
#[derive(Debug, Clone)]
pub struct ScanNode {
    /// The table.
    pub table: Arc<TableMeta>,
    /// Its alias in the query (EXPLAIN).
    pub alias: String,
    /// The access path.
    pub access: Access,
    /// Predicate over the table's row, applied as rows arrive.
    pub filter: Option<Expr>,
    /// Rows wanted (LIMIT + OFFSET pushed down), only when the access path alone decides
    /// which rows qualify and in which order.
    pub limit: Option<Expr>,
    /// SELECT … FOR UPDATE: every returned row joins the write set.
    pub for_update: bool,
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    /// count(*)
    CountStar,
    /// count(x)
    Count,
    /// sum(x)
    Sum,
    /// avg(x)
    Avg,
    /// min(x)
    Min,
    /// max(x)
    Max,
    /// string_agg(x, separator)
    StringAgg,
}

/// One aggregate call of a grouped query.
#[derive(Debug, Clone)]
pub struct AggCall {
    /// The function.
    pub func: AggFunc,
    /// Its argument over the input row (none for count(*)).
    pub arg: Option<Expr>,
    /// DISTINCT inside the call.
    pub distinct: bool,
    /// Result type.
    pub ty: PgType,
    /// The separator of string_agg (a constant).
    pub sep: Option<String>,
}

/// A sort key.
#[derive(Debug, Clone)]
pub struct SortKey {
    /// The expression over the input row.
    pub expr: Expr,
    /// Descending.
    pub desc: bool,
    /// NULLs first.
    pub nulls_first: bool,
}

/// A catalog view computed from the catalog at run time (pg_catalog, information_schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtualTable {
    /// pg_catalog.pg_class
    PgClass,
    /// pg_catalog.pg_namespace
    PgNamespace,
    /// pg_catalog.pg_attribute
    PgAttribute,
    /// pg_catalog.pg_index
    PgIndex,
    /// pg_catalog.pg_type
    PgType,
    /// information_schema.tables
    InfoTables,
    /// information_schema.columns
    InfoColumns,
    /// pg_catalog.pg_database
    PgDatabase,
    /// pg_catalog.pg_settings
    PgSettings,
    /// pg_catalog.pg_am
    PgAm,
    /// pg_catalog.pg_attrdef (column defaults, as SQL text)
    PgAttrdef,
    /// pg_catalog.pg_constraint (primary keys)
    PgConstraint,
    /// pg_catalog.pg_collation
    PgCollation,
    /// pg_catalog.pg_roles (the one user)
    PgRoles,
    /// An always-empty catalog table psql or drivers join with (pg_description, ...).
    Empty(&'static str),
}

/// An operator tree.
#[derive(Debug, Clone)]
pub enum Plan {
    /// One row with no columns (SELECT without FROM).
    OneRow,
    /// Literal rows.
    Values(Vec<Vec<Expr>>),
    /// A table scan.
    Scan(ScanNode),
    /// generate_series(start, stop[, step])
    Series(Expr, Expr, Option<Expr>),
    /// A catalog view.
    Virtual(VirtualTable),
    /// Keeps rows where the predicate is true.
    Filter(Box<Plan>, Expr),
    /// Computes output columns.
    Project(Box<Plan>, Vec<Expr>),
    /// Nested-loop join with the right side materialized once; `left_join` pads unmatched
    /// left rows with NULLs.
    NestedLoop {
        /// Outer input.
        left: Box<Plan>,
        /// Inner input.
        right: Box<Plan>,
        /// Join predicate over left ++ right.
        on: Option<Expr>,
        /// LEFT JOIN.
        left_join: bool,
        /// Width of the right rows (for NULL padding).
        right_width: usize,
    },
    /// Index nested-loop join: the right table's rows fetched by whole primary key computed
    /// from each left row, all keys in one batch.
    IndexJoin {
        /// Outer input.
        left: Box<Plan>,
        /// The inner table (only `table`, `alias` and `for_update` are used).
        right: ScanNode,
        /// Primary-key values over the left row.
        key: Vec<Expr>,
        /// Predicate over left ++ right.
        on: Option<Expr>,
        /// LEFT JOIN.
        left_join: bool,
    },
    /// Hash join on equalities: builds on the right input.
    HashJoin {
        /// Outer (probe) input.
        left: Box<Plan>,
        /// Inner (build) input.
        right: Box<Plan>,
        /// Key expressions over the left row.
        left_keys: Vec<Expr>,
        /// Key expressions over the right row.
        right_keys: Vec<Expr>,
        /// Remaining predicate over left ++ right.
        on: Option<Expr>,
        /// LEFT JOIN.
        left_join: bool,
        /// Width of the right rows.
        right_width: usize,
    },
    /// Grouping and aggregates: output = group values ++ aggregate values.
    Aggregate {
        /// Input.
        input: Box<Plan>,
        /// Group expressions.
        groups: Vec<Expr>,
        /// Aggregate calls.
        aggs: Vec<AggCall>,
    },
    /// Sort.
    Sort(Box<Plan>, Vec<SortKey>),
    /// Duplicate elimination on the first `n` columns.
    Distinct(Box<Plan>, usize),
    /// OFFSET / LIMIT.
    Limit {
        /// Input.
        input: Box<Plan>,
        /// LIMIT (None = all).
        limit: Option<Expr>,
        /// OFFSET.
        offset: Option<Expr>,
    },
    /// UNION [ALL] of inputs.
    Union(Vec<Plan>, bool),
    /// A projection whose expressions read correlated subqueries: for each input row, every
    /// subquery runs with that row's values in place of its outer references, its result
    /// fills the subquery's slot, then the expressions are evaluated.
    Apply {
        /// Input.
        input: Box<Plan>,
        /// The correlated subqueries the expressions read: slot, and plan over the input row.
        subs: Vec<CorrelatedSub>,
        /// Output expressions over the input row.
        exprs: Vec<Expr>,
    },
    /// Window functions over the input rows (row_number() OVER (PARTITION BY .. ORDER BY ..)):
    /// each call appends one column; rows keep their input order.
    Window {
        /// Input.
        input: Box<Plan>,
        /// The calls, in the order of the columns they append.
        calls: Vec<WindowCall>,
    },
    /// Set-returning functions of a SELECT list (`unnest(a)`, `_pg_expandarray(a)`): each
    /// input row becomes as many rows as its longest function result, with the functions'
    /// columns appended (NULL where a shorter result has run out).
    ProjectSet {
        /// Input.
        input: Box<Plan>,
        /// The calls, in the order of the columns they append.
        srfs: Vec<SrfCall>,
    },
    /// The slot of a correlated subquery in the statement's list of subqueries run before
    /// it: running it is a planner bug or a correlated subquery where only uncorrelated
    /// ones are supported, and fails with a clear error instead of a wrong answer.
    Correlated,
}

/// A set-returning function of a SELECT list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrfKind {
    /// unnest(array): one column, the elements.
    Unnest,
    /// information_schema._pg_expandarray(array): the record (x, n) of each element and its
    /// position from 1 (drivers read index keys with it).
    ExpandArray,
}

impl SrfKind {
    /// The columns a call appends.
    pub fn width(self) -> usize {
        match self {
            SrfKind::Unnest => 1,
            SrfKind::ExpandArray => 2,
        }
    }
}

/// One set-returning function call over the input row.
#[derive(Debug, Clone)]
pub struct SrfCall {
    /// The function.
    pub kind: SrfKind,
    /// Its array argument.
    pub arg: Expr,
}

/// One window function call: `row_number()` numbers the rows of each partition in the
/// window's order, from 1.
#[derive(Debug, Clone)]
pub struct WindowCall {
    /// PARTITION BY expressions over the input row.
    pub partition: Vec<Expr>,
    /// ORDER BY keys over the input row.
    pub order: Vec<SortKey>,
}

/// A correlated subquery attached to the `Plan::Apply` that runs it once per row.
#[derive(Debug, Clone)]
pub struct CorrelatedSub {
    /// Its slot (where `Expr::Subquery`, `Exists` and `InSubquery` read the result).
    pub slot: usize,
    /// Its plan, with `Expr::Outer` for the columns of the Apply's input row.
    pub plan: Plan,
    /// Used with IN (the result is kept as a set).
    pub as_set: bool,
}

/// A planned query: its operators and output columns.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    /// The tree.
    pub plan: Plan,
    /// Output columns.
    pub columns: Vec<Column>,
}

impl Plan {
    /// EXPLAIN lines, indented by depth.
    pub fn explain(&self, depth: usize, out: &mut Vec<String>) {
        let pad = if depth == 0 {
            String::new()
        } else {
            format!("{}->  ", "  ".repeat(depth * 2 - 2))
        };
        let mut line = |s: String| out.push(format!("{pad}{s}"));
        match self {
            Plan::OneRow => line("Result".into()),
            Plan::Values(rows) => line(format!("Values Scan ({} rows)", rows.len())),
            Plan::Scan(s) => {
                line(scan_line(s));
            }
            Plan::Series(..) => line("Function Scan on generate_series".into()),
            Plan::Virtual(v) => line(format!("Catalog Scan on {v:?}")),
            Plan::Filter(input, _) => {
                line("Filter".into());
                input.explain(depth + 1, out);
            }
            Plan::Project(input, _) => {
                // Projections are not shown by PostgreSQL either.
                input.explain(depth, out);
            }
            Plan::NestedLoop {
                left,
                right,
                left_join,
                ..
            } => {
                line(format!(
                    "Nested Loop{}",
                    if *left_join { " Left Join" } else { "" }
                ));
                left.explain(depth + 1, out);
                right.explain(depth + 1, out);
            }
            Plan::IndexJoin {
                left,
                right,
                left_join,
                ..
            } => {
                line(format!(
                    "Nested Loop{} (primary-key lookup of {})",
                    if *left_join { " Left Join" } else { "" },
                    right.table.name
                ));
                left.explain(depth + 1, out);
                let pad2 = format!("{}->  ", "  ".repeat(depth * 2));
                out.push(format!(
                    "{pad2}Primary Key Lookup on {}{}{}",
                    right.table.name,
                    alias_suffix(right),
                    if right.for_update {
                        " (for update)"
                    } else {
                        ""
                    }
                ));
            }
            Plan::HashJoin {
                left,
                right,
                left_join,
                ..
            } => {
                line(format!(
                    "Hash{} Join",
                    if *left_join { " Left" } else { "" }
                ));
                left.explain(depth + 1, out);
                right.explain(depth + 1, out);
            }
            Plan::Aggregate { input, groups, .. } => {
                line(if groups.is_empty() {
                    "Aggregate".into()
                } else {
                    "HashAggregate".into()
                });
                input.explain(depth + 1, out);
            }
            Plan::Sort(input, _) => {
                line("Sort".into());
                input.explain(depth + 1, out);
            }
            Plan::Distinct(input, _) => {
                line("Unique".into());
                input.explain(depth + 1, out);
            }
            Plan::Limit { input, .. } => {
                line("Limit".into());
                input.explain(depth + 1, out);
            }
            Plan::Union(inputs, all) => {
                line(if *all {
                    "Append".into()
                } else {
                    "Union".into()
                });
                for i in inputs {
                    i.explain(depth + 1, out);
                }
            }
            Plan::Apply { input, subs, .. } => {
                line(format!(
                    "Correlated SubPlan{} (per row)",
                    if subs.len() == 1 { "" } else { "s" }
                ));
                input.explain(depth + 1, out);
                for s in subs {
                    s.plan.explain(depth + 1, out);
                }
            }
            Plan::Correlated => line("Correlated SubPlan (run by its Apply)".into()),
            Plan::Window { input, .. } => {
                line("WindowAgg".into());
                input.explain(depth + 1, out);
            }
            Plan::ProjectSet { input, .. } => {
                line("ProjectSet".into());
                input.explain(depth + 1, out);
            }
        }
    }

    /// The plan of a correlated subquery for one row of its enclosing query: every
    /// `Expr::Outer` becomes that row's value. Nested Applies keep their own subqueries'
    /// outer references, which point at the nested query's rows, not at `outer`.
    pub fn bind_outer(&self, outer: &[Datum]) -> Plan {
        self.map_exprs(&|e| e.bind_outer(outer))
    }

    /// A copy with `f` applied to every expression of the tree (not inside the subqueries
    /// of nested Applies).
    pub fn map_exprs(&self, f: &dyn Fn(&Expr) -> Expr) -> Plan {
        let b = |p: &Plan| Box::new(p.map_exprs(f));
        let v = |es: &[Expr]| es.iter().map(f).collect::<Vec<_>>();
        let o = |e: &Option<Expr>| e.as_ref().map(f);
        match self {
            Plan::OneRow | Plan::Virtual(_) | Plan::Correlated => self.clone(),
            Plan::Values(rows) => Plan::Values(rows.iter().map(|r| v(r)).collect()),
            Plan::Scan(s) => Plan::Scan(s.map_exprs(f)),
            Plan::Series(a, c, step) => Plan::Series(f(a), f(c), o(step)),
            Plan::Filter(p, e) => Plan::Filter(b(p), f(e)),
            Plan::Project(p, es) => Plan::Project(b(p), v(es)),
            Plan::NestedLoop {
                left,
                right,
                on,
                left_join,
                right_width,
            } => Plan::NestedLoop {
                left: b(left),
                right: b(right),
                on: o(on),
                left_join: *left_join,
                right_width: *right_width,
            },
            Plan::IndexJoin {
                left,
                right,
                key,
                on,
                left_join,
            } => Plan::IndexJoin {
                left: b(left),
                right: right.map_exprs(f),
                key: v(key),
                on: o(on),
                left_join: *left_join,
            },
            Plan::HashJoin {
                left,
                right,
                left_keys,
                right_keys,
                on,
                left_join,
                right_width,
            } => Plan::HashJoin {
                left: b(left),
                right: b(right),
                left_keys: v(left_keys),
                right_keys: v(right_keys),
                on: o(on),
                left_join: *left_join,
                right_width: *right_width,
            },
            Plan::Aggregate {
                input,
                groups,
                aggs,
            } => Plan::Aggregate {
                input: b(input),
                groups: v(groups),
                aggs: aggs
                    .iter()
                    .map(|a| AggCall {
                        arg: o(&a.arg),
                        ..a.clone()
                    })
                    .collect(),
            },
            Plan::Sort(p, keys) => Plan::Sort(
                b(p),
                keys.iter()
                    .map(|k| SortKey {
                        expr: f(&k.expr),
                        ..k.clone()
                    })
                    .collect(),
            ),
            Plan::Distinct(p, n) => Plan::Distinct(b(p), *n),
            Plan::Limit {
                input,
                limit,
                offset,
            } => Plan::Limit {
                input: b(input),
                limit: o(limit),
                offset: o(offset),
            },
            Plan::Union(inputs, all) => {
                Plan::Union(inputs.iter().map(|p| p.map_exprs(f)).collect(), *all)
            }
            Plan::ProjectSet { input, srfs } => Plan::ProjectSet {
                input: b(input),
                srfs: srfs
                    .iter()
                    .map(|c| SrfCall {
                        kind: c.kind,
                        arg: f(&c.arg),
                    })
                    .collect(),
            },
            Plan::Window { input, calls } => Plan::Window {
                input: b(input),
                calls: calls
                    .iter()
                    .map(|c| WindowCall {
                        partition: v(&c.partition),
                        order: c
                            .order
                            .iter()
                            .map(|k| SortKey {
                                expr: f(&k.expr),
                                ..k.clone()
                            })
                            .collect(),
                    })
                    .collect(),
            },
            Plan::Apply { input, subs, exprs } => Plan::Apply {
                input: b(input),
                subs: subs.clone(),
                exprs: v(exprs),
            },
        }
    }
}

impl KeyRange {
    fn map_exprs(&self, f: &dyn Fn(&Expr) -> Expr) -> KeyRange {
        KeyRange {
            eq: self.eq.iter().map(f).collect(),
            lower: self.lower.as_ref().map(|(e, i)| (f(e), *i)),
            upper: self.upper.as_ref().map(|(e, i)| (f(e), *i)),
        }
    }
}

impl ScanNode {
    fn map_exprs(&self, f: &dyn Fn(&Expr) -> Expr) -> ScanNode {
        let v = |es: &[Expr]| es.iter().map(f).collect::<Vec<_>>();
        ScanNode {
            access: match &self.access {
                Access::Full => Access::Full,
                Access::PkPoint(k) => Access::PkPoint(v(k)),
                Access::PkMulti(ks) => Access::PkMulti(ks.iter().map(|k| v(k)).collect()),
                Access::PkPrefixes(ks) => Access::PkPrefixes(ks.iter().map(|k| v(k)).collect()),
                Access::PkRange(r) => Access::PkRange(r.map_exprs(f)),
                Access::Index(i, r) => Access::Index(*i, r.map_exprs(f)),
            },
            filter: self.filter.as_ref().map(f),
            limit: self.limit.as_ref().map(f),
            ..self.clone()
        }
    }
}

fn alias_suffix(s: &ScanNode) -> String {
    if s.alias != s.table.name {
        format!(" {}", s.alias)
    } else {
        String::new()
    }
}

fn scan_line(s: &ScanNode) -> String {
    let t = &s.table;
    let mut line = match &s.access {
        Access::Full => format!("Seq Scan on {}{}", t.name, alias_suffix(s)),
        Access::PkPoint(_) => format!("Primary Key Lookup on {}{}", t.name, alias_suffix(s)),
        Access::PkMulti(keys) => format!(
            "Primary Key Lookup on {}{} ({} keys)",
            t.name,
            alias_suffix(s),
            keys.len()
        ),
        Access::PkPrefixes(keys) => format!(
            "Primary Key Range Scan on {}{} ({} prefixes)",
            t.name,
            alias_suffix(s),
            keys.len()
        ),
        Access::PkRange(r) => format!(
            "Primary Key Range Scan on {}{} ({} equal{}{})",
            t.name,
            alias_suffix(s),
            r.eq.len(),
            if r.lower.is_some() {
                ", lower bound"
            } else {
                ""
            },
            if r.upper.is_some() {
                ", upper bound"
            } else {
                ""
            }
        ),
        Access::Index(i, r) => format!(
            "Index Scan using {} on {}{} ({} equal{}{})",
            t.indexes.get(*i).map(|x| x.name.as_str()).unwrap_or("?"),
            t.name,
            alias_suffix(s),
            r.eq.len(),
            if r.lower.is_some() {
                ", lower bound"
            } else {
                ""
            },
            if r.upper.is_some() {
                ", upper bound"
            } else {
                ""
            }
        ),
    };
    if s.filter.is_some() {
        line.push_str(" (filter)");
    }
    if s.limit.is_some() {
        line.push_str(" (limit pushed down)");
    }
    if s.for_update {
        line.push_str(" (for update)");
    }
    line
}
