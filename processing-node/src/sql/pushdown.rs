//! The part of a scan's condition that storage nodes can apply before they answer.
//!
//! A storage node compares a row's encoded value with an encoded constant byte for byte
//! (`shmdb_row_format::filter`). That stands for SQL `=` only where equal values have one
//! encoding and byte equality is the operator's equality: integers (`smallint`, `integer`,
//! `bigint`, stored as one integer kind) and `text`/`varchar` (compared byte-wise; `char(n)`
//! ignores trailing blanks and is left out). Everything else stays with the processing node,
//! which evaluates the whole condition on what comes back in any case.

use shmdb_store_client::proto::{ColumnEquals, RowFilter};

use crate::datum::Datum;
use crate::encoding::row::encode_value;
use crate::sql::catalog::TableMeta;
use crate::sql::expr::{CmpOp, EvalCtx, Expr};
use crate::sql::sqltype::SqlType;

/// The storage-side filter for a scan of `meta` whose rows must satisfy `condition`, from
/// its top-level `column = constant` conjuncts; `None` when none qualifies.
pub fn store_filter(
    meta: &TableMeta,
    condition: Option<&Expr>,
    ctx: &EvalCtx<'_>,
) -> Option<RowFilter> {
    let mut equals = Vec::new();
    collect(meta, condition?, ctx, &mut equals);
    (!equals.is_empty()).then_some(RowFilter {
        equals,
        garbage_only: false,
    })
}

fn collect(meta: &TableMeta, expr: &Expr, ctx: &EvalCtx<'_>, out: &mut Vec<ColumnEquals>) {
    match expr {
        Expr::And(a, b) => {
            collect(meta, a, ctx, out);
            collect(meta, b, ctx, out);
        }
        Expr::Cmp(CmpOp::Eq, a, b, false) => {
            let (column, value) = match (a.as_ref(), b.as_ref()) {
                (Expr::Column(c), v) | (v, Expr::Column(c)) if is_constant(v) => (*c, v),
                _ => return,
            };
            // An evaluation error is left to the full condition, which reports it.
            let Ok(value) = value.eval(&[], ctx) else {
                return;
            };
            if let Some(ty) = meta.columns.get(column).map(|c| c.ty)
                && exact_as_bytes(ty, &value)
                && let Ok(column) = u32::try_from(column)
            {
                out.push(ColumnEquals {
                    column,
                    value: encode_value(&value).into(),
                });
            }
        }
        _ => {}
    }
}

/// A value known before any row is read.
fn is_constant(expr: &Expr) -> bool {
    matches!(expr, Expr::Const(_) | Expr::Param(_))
}

/// Whether "the stored value's encoding equals `value`'s" is exactly SQL `column = value`
/// for a column of type `ty`.
fn exact_as_bytes(ty: SqlType, value: &Datum) -> bool {
    matches!(
        (ty, value),
        (SqlType::Int2 | SqlType::Int4 | SqlType::Int8, Datum::Int(_))
            | (SqlType::Text | SqlType::Varchar(_), Datum::Text(_))
    )
}
