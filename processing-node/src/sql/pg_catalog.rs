//! Catalog views computed from the catalog: the parts of `pg_catalog` and
//! `information_schema` that tools and drivers read to list tables, columns and indexes.

use crate::datum::Datum;
use crate::sql::catalog::Catalog;
use crate::sql::plan::VirtualTable;
use crate::sql::types::PgType;

/// The oid of the `public` schema.
const PUBLIC_OID: i64 = 2200;
/// The oid of `pg_catalog`.
const PG_CATALOG_OID: i64 = 11;

/// Resolves a (possibly qualified) name to a catalog view.
pub fn lookup(parts: &[String], catalog: &Catalog) -> Option<VirtualTable> {
    let (schema, name) = match parts {
        [name] => (None, name.as_str()),
        [.., schema, name] => (Some(schema.as_str()), name.as_str()),
        [] => return None,
    };
    if schema.is_none() && catalog.tables.contains_key(name) {
        return None;
    }
    Some(match (schema, name) {
        (None | Some("pg_catalog"), "pg_class") => VirtualTable::PgClass,
        (None | Some("pg_catalog"), "pg_namespace") => VirtualTable::PgNamespace,
        (None | Some("pg_catalog"), "pg_attribute") => VirtualTable::PgAttribute,
        (None | Some("pg_catalog"), "pg_index") => VirtualTable::PgIndex,
        (None | Some("pg_catalog"), "pg_type") => VirtualTable::PgType,
        (None | Some("pg_catalog"), "pg_database") => VirtualTable::PgDatabase,
        (None | Some("pg_catalog"), "pg_settings") => VirtualTable::PgSettings,
        (None | Some("pg_catalog"), "pg_description") => VirtualTable::Empty("pg_description"),
        (None | Some("pg_catalog"), "pg_am") => VirtualTable::PgAm,
        (None | Some("pg_catalog"), "pg_attrdef") => VirtualTable::Empty("pg_attrdef"),
        (None | Some("pg_catalog"), "pg_constraint") => VirtualTable::Empty("pg_constraint"),
        (None | Some("pg_catalog"), "pg_inherits") => VirtualTable::Empty("pg_inherits"),
        (Some("information_schema"), "tables") => VirtualTable::InfoTables,
        (Some("information_schema"), "columns") => VirtualTable::InfoColumns,
        _ => return None,
    })
}

/// The columns of a catalog view.
pub fn columns(v: VirtualTable) -> Vec<(&'static str, PgType)> {
    use PgType::*;
    match v {
        VirtualTable::PgClass => vec![
            ("oid", Int8),
            ("relname", Text),
            ("relnamespace", Int8),
            ("relkind", Text),
            ("relowner", Int8),
            ("reltuples", Float4),
            ("relhasindex", Bool),
            ("relpersistence", Text),
            ("relispartition", Bool),
            ("relam", Int8),
            ("relchecks", Int2),
            ("relhasrules", Bool),
            ("relhastriggers", Bool),
            ("relrowsecurity", Bool),
            ("relforcerowsecurity", Bool),
            ("reltablespace", Int8),
            ("reloftype", Int8),
            ("relreplident", Text),
            ("reltoastrelid", Int8),
        ],
        VirtualTable::PgAm => vec![("oid", Int8), ("amname", Text), ("amtype", Text)],
        VirtualTable::PgNamespace => vec![("oid", Int8), ("nspname", Text), ("nspowner", Int8)],
        VirtualTable::PgAttribute => vec![
            ("attrelid", Int8),
            ("attname", Text),
            ("atttypid", Int8),
            ("attnum", Int2),
            ("attnotnull", Bool),
            ("atthasdef", Bool),
            ("attisdropped", Bool),
            ("atttypmod", Int4),
            ("attlen", Int2),
        ],
        VirtualTable::PgIndex => vec![
            ("indexrelid", Int8),
            ("indrelid", Int8),
            ("indisunique", Bool),
            ("indisprimary", Bool),
            ("indnatts", Int2),
            ("indkey", Text),
        ],
        VirtualTable::PgType => vec![
            ("oid", Int8),
            ("typname", Text),
            ("typnamespace", Int8),
            ("typlen", Int2),
            ("typtype", Text),
        ],
        VirtualTable::PgDatabase => vec![
            ("oid", Int8),
            ("datname", Text),
            ("encoding", Int4),
            ("datcollate", Text),
        ],
        VirtualTable::PgSettings => vec![("name", Text), ("setting", Text)],
        VirtualTable::InfoTables => vec![
            ("table_catalog", Text),
            ("table_schema", Text),
            ("table_name", Text),
            ("table_type", Text),
        ],
        VirtualTable::InfoColumns => vec![
            ("table_catalog", Text),
            ("table_schema", Text),
            ("table_name", Text),
            ("column_name", Text),
            ("ordinal_position", Int4),
            ("column_default", Text),
            ("is_nullable", Text),
            ("data_type", Text),
            ("character_maximum_length", Int4),
            ("numeric_precision", Int4),
            ("numeric_scale", Int4),
        ],
        VirtualTable::Empty(_) => vec![("oid", Int8)],
    }
}

/// The pg_class columns after relispartition: access method, and nothing else to report.
fn extend_class(row: Option<&mut Vec<Datum>>, am: i64) {
    if let Some(r) = row {
        r.extend([
            Datum::Int(am),
            Datum::Int(0),
            Datum::Bool(false),
            Datum::Bool(false),
            Datum::Bool(false),
            Datum::Bool(false),
            Datum::Int(0),
            Datum::Int(0),
            text("d"),
            Datum::Int(0),
        ]);
    }
}

fn text(s: &str) -> Datum {
    Datum::Text(s.to_string())
}

/// The rows of a catalog view for a catalog.
pub fn rows(v: VirtualTable, catalog: &Catalog) -> Vec<Vec<Datum>> {
    let tables = catalog.sorted();
    match v {
        VirtualTable::PgClass => {
            let mut out = Vec::new();
            for t in &tables {
                out.push(vec![
                    Datum::Int(i64::from(t.oid)),
                    text(&t.name),
                    Datum::Int(PUBLIC_OID),
                    text("r"),
                    Datum::Int(10),
                    Datum::Float(-1.0),
                    Datum::Bool(!t.indexes.is_empty() || !t.has_rowid()),
                    text("p"),
                    Datum::Bool(false),
                ]);
                extend_class(out.last_mut(), 2);
                if !t.has_rowid() {
                    out.push(vec![
                        Datum::Int(i64::from(t.oid) + 1_000_000_000),
                        text(t.pk_name.as_deref().unwrap_or(&format!("{}_pkey", t.name))),
                        Datum::Int(PUBLIC_OID),
                        text("i"),
                        Datum::Int(10),
                        Datum::Float(-1.0),
                        Datum::Bool(false),
                        text("p"),
                        Datum::Bool(false),
                    ]);
                    extend_class(out.last_mut(), 403);
                }
                for i in &t.indexes {
                    out.push(vec![
                        Datum::Int(i64::from(i.id)),
                        text(&i.name),
                        Datum::Int(PUBLIC_OID),
                        text("i"),
                        Datum::Int(10),
                        Datum::Float(-1.0),
                        Datum::Bool(false),
                        text("p"),
                        Datum::Bool(false),
                    ]);
                    extend_class(out.last_mut(), 403);
                }
            }
            out
        }
        VirtualTable::PgNamespace => vec![
            vec![
                Datum::Int(PG_CATALOG_OID),
                text("pg_catalog"),
                Datum::Int(10),
            ],
            vec![Datum::Int(PUBLIC_OID), text("public"), Datum::Int(10)],
            vec![
                Datum::Int(13000),
                text("information_schema"),
                Datum::Int(10),
            ],
        ],
        VirtualTable::PgAttribute => {
            let mut out = Vec::new();
            for t in &tables {
                for (i, c) in t.visible() {
                    out.push(vec![
                        Datum::Int(i64::from(t.oid)),
                        text(&c.name),
                        Datum::Int(i64::from(c.ty.pg().oid())),
                        Datum::Int(i as i64 + 1),
                        Datum::Bool(c.not_null),
                        Datum::Bool(c.default.is_some()),
                        Datum::Bool(false),
                        Datum::Int(c.ty.char_length().map_or(-1, |n| i64::from(n) + 4)),
                        Datum::Int(-1),
                    ]);
                }
            }
            out
        }
        VirtualTable::PgIndex => {
            let mut out = Vec::new();
            for t in &tables {
                let keys = |cols: &[usize]| {
                    cols.iter()
                        .map(|c| (c + 1).to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                if !t.has_rowid() {
                    out.push(vec![
                        Datum::Int(i64::from(t.oid) + 1_000_000_000),
                        Datum::Int(i64::from(t.oid)),
                        Datum::Bool(true),
                        Datum::Bool(true),
                        Datum::Int(t.primary_key.len() as i64),
                        text(&keys(&t.primary_key)),
                    ]);
                }
                for i in &t.indexes {
                    out.push(vec![
                        Datum::Int(i64::from(i.id)),
                        Datum::Int(i64::from(t.oid)),
                        Datum::Bool(i.unique),
                        Datum::Bool(false),
                        Datum::Int(i.columns.len() as i64),
                        text(&keys(&i.columns)),
                    ]);
                }
            }
            out
        }
        VirtualTable::PgType => [
            (PgType::Bool, "bool", 1),
            (PgType::Int2, "int2", 2),
            (PgType::Int4, "int4", 4),
            (PgType::Int8, "int8", 8),
            (PgType::Numeric, "numeric", -1),
            (PgType::Float4, "float4", 4),
            (PgType::Float8, "float8", 8),
            (PgType::Bpchar, "bpchar", -1),
            (PgType::Varchar, "varchar", -1),
            (PgType::Text, "text", -1),
            (PgType::Date, "date", 4),
            (PgType::Timestamp, "timestamp", 8),
            (PgType::Bytea, "bytea", -1),
        ]
        .iter()
        .map(|(t, n, l)| {
            vec![
                Datum::Int(i64::from(t.oid())),
                text(n),
                Datum::Int(PG_CATALOG_OID),
                Datum::Int(*l),
                text("b"),
            ]
        })
        .collect(),
        VirtualTable::PgAm => vec![
            vec![Datum::Int(2), text("heap"), text("t")],
            vec![Datum::Int(403), text("btree"), text("i")],
        ],
        VirtualTable::PgDatabase => {
            vec![vec![Datum::Int(1), text("shmdb"), Datum::Int(6), text("C")]]
        }
        VirtualTable::PgSettings => crate::sql::settings::defaults()
            .into_iter()
            .map(|(k, v)| vec![text(k), text(&v)])
            .collect(),
        VirtualTable::InfoTables => tables
            .iter()
            .map(|t| {
                vec![
                    text("shmdb"),
                    text("public"),
                    text(&t.name),
                    text("BASE TABLE"),
                ]
            })
            .collect(),
        VirtualTable::InfoColumns => {
            let mut out = Vec::new();
            for t in &tables {
                for (i, c) in t.visible() {
                    let (p, s) = match c.ty {
                        crate::sql::sqltype::SqlType::Numeric(Some((p, s))) => {
                            (Datum::Int(i64::from(p)), Datum::Int(i64::from(s)))
                        }
                        crate::sql::sqltype::SqlType::Int2 => (Datum::Int(16), Datum::Int(0)),
                        crate::sql::sqltype::SqlType::Int4 => (Datum::Int(32), Datum::Int(0)),
                        crate::sql::sqltype::SqlType::Int8 => (Datum::Int(64), Datum::Int(0)),
                        _ => (Datum::Null, Datum::Null),
                    };
                    out.push(vec![
                        text("shmdb"),
                        text("public"),
                        text(&t.name),
                        text(&c.name),
                        Datum::Int(i as i64 + 1),
                        c.default.as_deref().map_or(Datum::Null, text),
                        text(if c.not_null { "NO" } else { "YES" }),
                        text(&c.ty.display()),
                        c.ty.char_length()
                            .map_or(Datum::Null, |n| Datum::Int(i64::from(n))),
                        p,
                        s,
                    ]);
                }
            }
            out
        }
        VirtualTable::Empty(_) => Vec::new(),
    }
}
