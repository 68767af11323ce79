//! Access-path selection: which key (primary key or a secondary index) a scan uses, from
//! the predicates that constrain one table.

use crate::sql::catalog::TableMeta;
use crate::sql::expr::{CmpOp, Expr};
use crate::sql::plan::{Access, KeyRange};

/// A predicate usable as a key bound: `column op value`.
#[derive(Debug, Clone)]
struct Sarg {
    col: usize,
    op: CmpOp,
    value: Expr,
}

/// Splits a predicate into its AND-ed parts.
pub fn conjuncts(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::And(a, b) => {
            conjuncts(*a, out);
            conjuncts(*b, out);
        }
        other => out.push(other),
    }
}

/// AND-s predicates back together.
pub fn and_all(mut es: Vec<Expr>) -> Option<Expr> {
    let first = es.pop()?;
    Some(
        es.into_iter()
            .rev()
            .fold(first, |acc, e| Expr::And(Box::new(e), Box::new(acc))),
    )
}

/// Finds the key bounds among `conjs` for a table whose columns sit at
/// `offset..offset + width` of the rows the predicates read. `available` says which value
/// expressions can be computed before the scan (constants and parameters for a plain scan;
/// also the outer row's columns for an index join). Returned value expressions keep their
/// positions (they are evaluated against the outer row, or no row).
/// Several rows of key values (`(a, b) IN ((1, 2), (3, 4))`): the columns, then one value
/// per column for each row.
type RowIn = (Vec<usize>, Vec<Vec<Expr>>);

/// A single-column IN list on a table column: the column, then the values.
type ColIn = (usize, Vec<Expr>);

fn disjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::Or(a, b) => {
            disjuncts(a, out);
            disjuncts(b, out);
        }
        other => out.push(other),
    }
}

fn and_parts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::And(a, b) => {
            and_parts(a, out);
            and_parts(b, out);
        }
        other => out.push(other),
    }
}

/// Recognizes an OR of ANDs of `column = value` over the same columns (how a row-valued IN
/// list is bound).
fn row_in(
    e: &Expr,
    own: &dyn Fn(&Expr) -> Option<usize>,
    available: &dyn Fn(&Expr) -> bool,
) -> Option<RowIn> {
    let mut ds = Vec::new();
    disjuncts(e, &mut ds);
    let mut cols: Option<Vec<usize>> = None;
    let mut rows = Vec::with_capacity(ds.len());
    for d in ds {
        let mut parts = Vec::new();
        and_parts(d, &mut parts);
        let mut pairs: Vec<(usize, Expr)> = Vec::with_capacity(parts.len());
        for p in parts {
            let Expr::Cmp(CmpOp::Eq, a, b, _) = p else {
                return None;
            };
            if let Some(c) = own(a)
                && available(b)
            {
                pairs.push((c, (**b).clone()));
            } else if let Some(c) = own(b)
                && available(a)
            {
                pairs.push((c, (**a).clone()));
            } else {
                return None;
            }
        }
        pairs.sort_by_key(|(c, _)| *c);
        let these: Vec<usize> = pairs.iter().map(|(c, _)| *c).collect();
        if these.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        match &cols {
            None => cols = Some(these),
            Some(c) if *c == these => {}
            Some(_) => return None,
        }
        rows.push(pairs.into_iter().map(|(_, v)| v).collect());
    }
    cols.map(|c| (c, rows))
}

fn sargs(
    conjs: &[Expr],
    offset: usize,
    width: usize,
    available: &dyn Fn(&Expr) -> bool,
) -> (Vec<Sarg>, Vec<ColIn>, Vec<RowIn>) {
    let mut out = Vec::new();
    let mut ins = Vec::new();
    let mut rows = Vec::new();
    let own = |e: &Expr| match e {
        Expr::Column(c) if *c >= offset && *c < offset + width => Some(*c - offset),
        // Anything else (a cast of the column, an expression) is not a key bound.
        _ => None,
    };
    for c in conjs {
        match c {
            Expr::Cmp(op, a, b, _) if *op != CmpOp::Ne => {
                if let Some(col) = own(a)
                    && available(b)
                {
                    out.push(Sarg {
                        col,
                        op: *op,
                        value: (**b).clone(),
                    });
                } else if let Some(col) = own(b)
                    && available(a)
                {
                    out.push(Sarg {
                        col,
                        op: op.flip(),
                        value: (**a).clone(),
                    });
                }
            }
            Expr::InList(a, list, false) => {
                if let Some(col) = own(a)
                    && list.iter().all(available)
                {
                    ins.push((col, list.clone()));
                }
            }
            Expr::Or(..) => {
                if let Some(r) = row_in(c, &own, available) {
                    rows.push(r);
                }
            }
            _ => {}
        }
    }
    (out, ins, rows)
}

/// Keys (whole, or a prefix of the primary key) from a row-valued IN list and equalities:
/// the primary-key columns are taken in order while each is fixed by an equality or by the
/// list, and the list's columns must all be among them.
fn row_in_keys(sargs: &[Sarg], rows: &[RowIn], pk: &[usize]) -> Option<Vec<Vec<Expr>>> {
    let mut best: Option<Vec<Vec<Expr>>> = None;
    for (cols, values) in rows {
        if values.is_empty() || values.len() > 1000 {
            continue;
        }
        let mut prefix = 0;
        for c in pk {
            let fixed = cols.contains(c) || sargs.iter().any(|s| s.col == *c && s.op == CmpOp::Eq);
            if !fixed {
                break;
            }
            prefix += 1;
        }
        if !cols.iter().all(|c| pk[..prefix].contains(c)) {
            continue;
        }
        let keys: Vec<Vec<Expr>> = values
            .iter()
            .map(|row| {
                pk[..prefix]
                    .iter()
                    .map(|c| match cols.iter().position(|x| x == c) {
                        Some(i) => row[i].clone(),
                        None => sargs
                            .iter()
                            .find(|s| s.col == *c && s.op == CmpOp::Eq)
                            .map(|s| s.value.clone())
                            .unwrap_or(Expr::Const(crate::datum::Datum::Null)),
                    })
                    .collect()
            })
            .collect();
        if best.as_ref().is_none_or(|b| b[0].len() < prefix) {
            best = Some(keys);
        }
    }
    best
}

/// The bounds a list of sargs puts on a key with columns `key`.
fn key_range(sargs: &[Sarg], key: &[usize], meta: &TableMeta) -> KeyRange {
    let mut r = KeyRange::default();
    for &col in key {
        if let Some(s) = sargs.iter().find(|s| s.col == col && s.op == CmpOp::Eq) {
            r.eq.push(s.value.clone());
            continue;
        }
        // Character(n) columns compare without trailing blanks: only equality is a bound.
        let bpchar = matches!(
            meta.columns.get(col).map(|c| c.ty),
            Some(crate::sql::sqltype::SqlType::Char(_))
        );
        if !bpchar {
            for s in sargs.iter().filter(|s| s.col == col) {
                match s.op {
                    CmpOp::Gt | CmpOp::Ge if r.lower.is_none() => {
                        r.lower = Some((s.value.clone(), s.op == CmpOp::Ge))
                    }
                    CmpOp::Lt | CmpOp::Le if r.upper.is_none() => {
                        r.upper = Some((s.value.clone(), s.op == CmpOp::Le))
                    }
                    _ => {}
                }
            }
        }
        break;
    }
    r
}

/// The chosen access path and the key columns it delivers rows in the order of (with how
/// many leading ones are fixed by equalities).
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The access path.
    pub access: Access,
    /// Key columns in delivery order.
    pub order: Vec<usize>,
    /// Leading key columns fixed to one value.
    pub fixed: usize,
}

/// Picks the access path for a table given the predicates on it.
pub fn choose(
    meta: &TableMeta,
    conjs: &[Expr],
    offset: usize,
    available: &dyn Fn(&Expr) -> bool,
) -> Chosen {
    let width = meta.columns.len();
    let (sargs, ins, rows) = sargs(conjs, offset, width, available);
    let pk = &meta.primary_key;
    let pk_range = key_range(&sargs, pk, meta);
    if pk_range.eq.len() == pk.len() && !pk.is_empty() {
        return Chosen {
            access: Access::PkPoint(pk_range.eq),
            order: pk.clone(),
            fixed: pk.len(),
        };
    }
    if let Some(keys) = row_in_keys(&sargs, &rows, pk)
        && keys[0].len() > pk_range.eq.len()
    {
        let access = if keys[0].len() == pk.len() {
            Access::PkMulti(keys)
        } else {
            Access::PkPrefixes(keys)
        };
        return Chosen {
            access,
            order: Vec::new(),
            fixed: 0,
        };
    }
    // IN list on the one primary-key column not fixed by an equality.
    if pk_range.eq.len() + 1 == pk.len()
        && let Some(last) = pk.get(pk_range.eq.len())
        && let Some((_, list)) = ins.iter().find(|(c, _)| c == last)
        && list.len() <= 1000
    {
        let keys = list
            .iter()
            .map(|v| {
                let mut k = pk_range.eq.clone();
                k.push(v.clone());
                k
            })
            .collect();
        return Chosen {
            access: Access::PkMulti(keys),
            order: Vec::new(),
            fixed: 0,
        };
    }
    let score = |r: &KeyRange| r.eq.len() * 2 + usize::from(r.lower.is_some() || r.upper.is_some());
    let mut best = (score(&pk_range), None::<usize>, pk_range);
    for (i, idx) in meta.indexes.iter().enumerate() {
        let r = key_range(&sargs, &idx.columns, meta);
        let s = score(&r);
        if s > best.0 {
            best = (s, Some(i), r);
        }
    }
    match best {
        (0, _, _) => Chosen {
            access: Access::Full,
            order: pk.clone(),
            fixed: 0,
        },
        (_, None, r) => {
            let fixed = r.eq.len();
            Chosen {
                access: Access::PkRange(r),
                order: pk.clone(),
                fixed,
            }
        }
        (_, Some(i), r) => {
            let fixed = r.eq.len();
            let mut order = meta.indexes[i].columns.clone();
            order.extend(pk.iter().copied());
            Chosen {
                access: Access::Index(i, r),
                order,
                fixed,
            }
        }
    }
}

/// Whether the full primary key of `meta` (at `offset`) is fixed by equalities with values
/// from `available`: the key expressions for an index nested-loop join.
pub fn pk_lookup(
    meta: &TableMeta,
    conjs: &[Expr],
    offset: usize,
    available: &dyn Fn(&Expr) -> bool,
) -> Option<Vec<Expr>> {
    let (sargs, _, _) = sargs(conjs, offset, meta.columns.len(), available);
    let r = key_range(&sargs, &meta.primary_key, meta);
    (r.eq.len() == meta.primary_key.len() && !r.eq.is_empty()).then_some(r.eq)
}
