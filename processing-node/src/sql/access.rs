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
fn sargs(
    conjs: &[Expr],
    offset: usize,
    width: usize,
    available: &dyn Fn(&Expr) -> bool,
) -> (Vec<Sarg>, Vec<(usize, Vec<Expr>)>) {
    let mut out = Vec::new();
    let mut ins = Vec::new();
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
            _ => {}
        }
    }
    (out, ins)
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
    let (sargs, ins) = sargs(conjs, offset, width, available);
    let pk = &meta.primary_key;
    let pk_range = key_range(&sargs, pk, meta);
    if pk_range.eq.len() == pk.len() && !pk.is_empty() {
        return Chosen {
            access: Access::PkPoint(pk_range.eq),
            order: pk.clone(),
            fixed: pk.len(),
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
    let (sargs, _) = sargs(conjs, offset, meta.columns.len(), available);
    let r = key_range(&sargs, &meta.primary_key, meta);
    (r.eq.len() == meta.primary_key.len() && !r.eq.is_empty()).then_some(r.eq)
}
