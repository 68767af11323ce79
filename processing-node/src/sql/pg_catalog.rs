//! Catalog views computed from the catalog: the parts of `pg_catalog` and
//! `information_schema` that tools and drivers read to list tables, columns and indexes.

use crate::datum::Datum;
use crate::sql::catalog::{Catalog, ColumnMeta, TableMeta};
use crate::sql::plan::VirtualTable;
use crate::sql::sqltype::SqlType;
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
        (None | Some("pg_catalog"), "pg_am") => VirtualTable::PgAm,
        (None | Some("pg_catalog"), "pg_roles" | "pg_user" | "pg_authid") => VirtualTable::PgRoles,
        (None | Some("pg_catalog"), "pg_attrdef") => VirtualTable::PgAttrdef,
        (None | Some("pg_catalog"), "pg_constraint") => VirtualTable::PgConstraint,
        (None | Some("pg_catalog"), "pg_collation") => VirtualTable::PgCollation,
        (None | Some("pg_catalog"), n) if EMPTY.iter().any(|(e, _)| *e == n) => {
            VirtualTable::Empty(EMPTY.iter().find(|(e, _)| *e == n).map_or("", |(e, _)| e))
        }
        (Some("information_schema"), "tables") => VirtualTable::InfoTables,
        (Some("information_schema"), "columns") => VirtualTable::InfoColumns,
        _ => return None,
    })
}

/// Catalog tables that hold nothing here (no inheritance, policies, publications,
/// triggers, rules, statistics objects, comments), with the columns psql and drivers read.
const EMPTY: &[(&str, &[(&str, PgType)])] = &[
    (
        "pg_description",
        &[
            ("objoid", PgType::Int8),
            ("classoid", PgType::Int8),
            ("objsubid", PgType::Int4),
            ("description", PgType::Text),
        ],
    ),
    (
        "pg_inherits",
        &[
            ("inhrelid", PgType::Int8),
            ("inhparent", PgType::Int8),
            ("inhseqno", PgType::Int4),
            ("inhdetachpending", PgType::Bool),
        ],
    ),
    (
        "pg_policy",
        &[
            ("oid", PgType::Int8),
            ("polname", PgType::Text),
            ("polrelid", PgType::Int8),
            ("polcmd", PgType::Text),
            ("polpermissive", PgType::Bool),
            ("polroles", PgType::Text),
            ("polqual", PgType::Text),
            ("polwithcheck", PgType::Text),
        ],
    ),
    (
        "pg_statistic_ext",
        &[
            ("oid", PgType::Int8),
            ("stxrelid", PgType::Int8),
            ("stxname", PgType::Text),
            ("stxnamespace", PgType::Int8),
            ("stxowner", PgType::Int8),
            ("stxstattarget", PgType::Int4),
            ("stxkeys", PgType::Text),
            ("stxkind", PgType::Text),
            ("stxexprs", PgType::Text),
        ],
    ),
    (
        "pg_publication",
        &[
            ("oid", PgType::Int8),
            ("pubname", PgType::Text),
            ("pubowner", PgType::Int8),
            ("puballtables", PgType::Bool),
            ("pubinsert", PgType::Bool),
            ("pubupdate", PgType::Bool),
            ("pubdelete", PgType::Bool),
            ("pubtruncate", PgType::Bool),
            ("pubviaroot", PgType::Bool),
        ],
    ),
    (
        "pg_publication_rel",
        &[
            ("oid", PgType::Int8),
            ("prpubid", PgType::Int8),
            ("prrelid", PgType::Int8),
            ("prqual", PgType::Text),
            ("prattrs", PgType::Text),
        ],
    ),
    (
        "pg_publication_namespace",
        &[
            ("oid", PgType::Int8),
            ("pnpubid", PgType::Int8),
            ("pnnspid", PgType::Int8),
        ],
    ),
    (
        "pg_trigger",
        &[
            ("oid", PgType::Int8),
            ("tgrelid", PgType::Int8),
            ("tgparentid", PgType::Int8),
            ("tgname", PgType::Text),
            ("tgfoid", PgType::Int8),
            ("tgtype", PgType::Int2),
            ("tgenabled", PgType::Text),
            ("tgisinternal", PgType::Bool),
            ("tgconstraint", PgType::Int8),
        ],
    ),
    (
        "pg_rewrite",
        &[
            ("oid", PgType::Int8),
            ("rulename", PgType::Text),
            ("ev_class", PgType::Int8),
            ("ev_type", PgType::Text),
            ("ev_enabled", PgType::Text),
            ("is_instead", PgType::Bool),
        ],
    ),
    (
        "pg_foreign_table",
        &[
            ("ftrelid", PgType::Int8),
            ("ftserver", PgType::Int8),
            ("ftoptions", PgType::Text),
        ],
    ),
    (
        "pg_partitioned_table",
        &[
            ("partrelid", PgType::Int8),
            ("partstrat", PgType::Text),
            ("partnatts", PgType::Int2),
        ],
    ),
];

/// A text datum.
fn t(s: &str) -> Datum {
    Datum::Text(s.to_string())
}

/// An integer datum.
fn i(v: i64) -> Datum {
    Datum::Int(v)
}

/// The oid of a table's primary-key index (tables without a declared key have none).
pub fn pk_index_oid(t: &TableMeta) -> i64 {
    i64::from(t.oid) + 1_000_000_000
}

/// The oid of a table's primary-key constraint.
fn pk_constraint_oid(t: &TableMeta) -> i64 {
    i64::from(t.oid) + 2_000_000_000
}

/// One index as the catalog views show it.
pub struct IndexView<'a> {
    /// The index's oid.
    pub oid: i64,
    /// Its name.
    pub name: String,
    /// Its table.
    pub table: &'a TableMeta,
    /// Positions of its key columns in the table.
    pub columns: &'a [usize],
    /// UNIQUE.
    pub unique: bool,
    /// The primary key.
    pub primary: bool,
}

impl IndexView<'_> {
    /// Names of the key columns.
    pub fn column_names(&self) -> Vec<String> {
        self.columns
            .iter()
            .map(|c| {
                self.table
                    .columns
                    .get(*c)
                    .map_or_else(|| "?".to_string(), |m| m.name.clone())
            })
            .collect()
    }

    /// What `pg_get_indexdef(oid)` prints: the CREATE INDEX statement that makes it.
    pub fn definition(&self) -> String {
        format!(
            "CREATE {}INDEX {} ON public.{} USING btree ({})",
            if self.unique { "UNIQUE " } else { "" },
            self.name,
            self.table.name,
            self.column_names().join(", ")
        )
    }
}

/// Every index of a table: the primary key's first (if declared), then the secondary ones.
pub fn indexes(t: &TableMeta) -> Vec<IndexView<'_>> {
    let mut out = Vec::new();
    if !t.has_rowid() {
        out.push(IndexView {
            oid: pk_index_oid(t),
            name: t
                .pk_name
                .clone()
                .unwrap_or_else(|| format!("{}_pkey", t.name)),
            table: t,
            columns: &t.primary_key,
            unique: true,
            primary: true,
        });
    }
    for ix in &t.indexes {
        out.push(IndexView {
            oid: i64::from(ix.id),
            name: ix.name.clone(),
            table: t,
            columns: &ix.columns,
            unique: ix.unique,
            primary: false,
        });
    }
    out
}

/// Constraint definitions by constraint oid (`pg_get_constraintdef`).
pub fn constraint_defs(catalog: &Catalog) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for tm in catalog.sorted() {
        for ix in indexes(&tm) {
            if ix.primary {
                out.push((
                    pk_constraint_oid(&tm),
                    format!("PRIMARY KEY ({})", ix.column_names().join(", ")),
                ));
            }
        }
    }
    out
}

/// Index definitions by index oid: the whole statement and the key column names
/// (`pg_get_indexdef(oid[, column, pretty])`).
pub fn index_defs(catalog: &Catalog) -> Vec<(i64, String, Vec<String>)> {
    let mut out = Vec::new();
    for tm in catalog.sorted() {
        for ix in indexes(&tm) {
            out.push((ix.oid, ix.definition(), ix.column_names()));
        }
    }
    out
}

/// The oid of a catalog table or of a user table or index, for `'name'::regclass`.
pub fn regclass(name: &str, catalog: &Catalog) -> Option<i64> {
    let bare = name.strip_prefix("pg_catalog.").unwrap_or(name);
    let bare = bare.strip_prefix("public.").unwrap_or(bare);
    let fixed = match bare {
        "pg_class" => Some(1259),
        "pg_type" => Some(1247),
        "pg_attribute" => Some(1249),
        "pg_proc" => Some(1255),
        "pg_namespace" => Some(2615),
        "pg_index" => Some(2610),
        "pg_constraint" => Some(2606),
        "pg_attrdef" => Some(2604),
        "pg_description" => Some(2609),
        "pg_am" => Some(2601),
        "pg_collation" => Some(3456),
        "pg_database" => Some(1262),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    for tm in catalog.sorted() {
        if tm.name == bare {
            return Some(i64::from(tm.oid));
        }
        for ix in indexes(&tm) {
            if ix.name == bare {
                return Some(ix.oid);
            }
        }
    }
    None
}

/// The type modifier PostgreSQL stores for a declared type (`atttypmod`): length + 4 for
/// character types, `(precision << 16 | scale) + 4` for numeric, -1 when unconstrained.
pub fn typmod(ty: SqlType) -> i64 {
    match ty {
        SqlType::Char(n) | SqlType::Varchar(Some(n)) => i64::from(n) + 4,
        SqlType::Numeric(Some((p, s))) => ((i64::from(p) << 16) | i64::from(s)) + 4,
        _ => -1,
    }
}

/// The collation of a type: "default" (100) for character types, none (0) otherwise.
fn collation(ty: PgType) -> i64 {
    if matches!(ty, PgType::Text | PgType::Varchar | PgType::Bpchar) {
        100
    } else {
        0
    }
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
            ("relpartbound", Text),
            ("relpages", Int4),
            ("reloptions", Text),
            ("relnatts", Int2),
        ],
        VirtualTable::PgRoles => vec![
            ("oid", Int8),
            ("rolname", Text),
            ("rolsuper", Bool),
            ("rolinherit", Bool),
            ("rolcreaterole", Bool),
            ("rolcreatedb", Bool),
            ("rolcanlogin", Bool),
            ("rolreplication", Bool),
            ("rolconnlimit", Int4),
            ("rolbypassrls", Bool),
        ],
        VirtualTable::PgAm => vec![
            ("oid", Int8),
            ("amname", Text),
            ("amtype", Text),
            ("amcanorder", Bool),
        ],
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
            ("attidentity", Text),
            ("attgenerated", Text),
            ("attcollation", Int8),
            ("attstattarget", Int4),
            ("attstorage", Text),
            ("attislocal", Bool),
            ("attinhcount", Int4),
            ("attndims", Int4),
            ("attcompression", Text),
            ("attoptions", Text),
            ("attfdwoptions", Text),
        ],
        VirtualTable::PgAttrdef => vec![
            ("oid", Int8),
            ("adrelid", Int8),
            ("adnum", Int2),
            ("adbin", Text),
        ],
        VirtualTable::PgConstraint => vec![
            ("oid", Int8),
            ("conname", Text),
            ("connamespace", Int8),
            ("contype", Text),
            ("condeferrable", Bool),
            ("condeferred", Bool),
            ("convalidated", Bool),
            ("conrelid", Int8),
            ("contypid", Int8),
            ("conindid", Int8),
            ("conparentid", Int8),
            ("confrelid", Int8),
            ("confupdtype", Text),
            ("confdeltype", Text),
            ("confmatchtype", Text),
            ("conislocal", Bool),
            ("coninhcount", Int4),
            ("connoinherit", Bool),
            ("conkey", Text),
            ("confkey", Text),
            ("conbin", Text),
        ],
        VirtualTable::PgCollation => vec![
            ("oid", Int8),
            ("collname", Text),
            ("collnamespace", Int8),
            ("collprovider", Text),
            ("collcollate", Text),
            ("collctype", Text),
        ],
        VirtualTable::PgIndex => vec![
            ("indexrelid", Int8),
            ("indrelid", Int8),
            ("indisunique", Bool),
            ("indisprimary", Bool),
            ("indnatts", Int2),
            ("indkey", Text),
            ("indnkeyatts", Int2),
            ("indisclustered", Bool),
            ("indisvalid", Bool),
            ("indisreplident", Bool),
            ("indimmediate", Bool),
            ("indnullsnotdistinct", Bool),
            ("indisexclusion", Bool),
            ("indisready", Bool),
            ("indislive", Bool),
            ("indcheckxmin", Bool),
            ("indoption", Text),
            ("indpred", Text),
            ("indexprs", Text),
        ],
        VirtualTable::PgType => vec![
            ("oid", Int8),
            ("typname", Text),
            ("typnamespace", Int8),
            ("typlen", Int2),
            ("typtype", Text),
            ("typcollation", Int8),
            ("typbasetype", Int8),
            ("typtypmod", Int4),
            ("typnotnull", Bool),
            ("typelem", Int8),
            ("typarray", Int8),
            ("typrelid", Int8),
            ("typowner", Int8),
            ("typcategory", Text),
            ("typdelim", Text),
            ("typisdefined", Bool),
            ("typdefault", Text),
            ("typinput", Text),
            ("typoutput", Text),
            ("typreceive", Text),
        ],
        VirtualTable::PgDatabase => vec![
            ("oid", Int8),
            ("datname", Text),
            ("encoding", Int4),
            ("datcollate", Text),
            ("datdba", Int8),
            ("datctype", Text),
            ("daticulocale", Text),
            ("datlocprovider", Text),
            ("datacl", Text),
            ("datistemplate", Bool),
            ("datallowconn", Bool),
            ("datconnlimit", Int4),
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
        VirtualTable::Empty(name) => EMPTY
            .iter()
            .find(|(e, _)| *e == name)
            .map_or_else(|| vec![("oid", Int8)], |(_, cols)| cols.to_vec()),
    }
}

/// A type's storage length (`typlen`, `attlen`): -1 for variable-length types.
fn type_len(ty: PgType) -> i64 {
    match ty {
        PgType::Bool => 1,
        PgType::Int2 => 2,
        PgType::Int4 | PgType::Float4 | PgType::Date => 4,
        PgType::Int8 | PgType::Float8 | PgType::Timestamp => 8,
        _ => -1,
    }
}

/// A type's category (`typcategory`): what drivers group types by.
fn category(ty: PgType) -> &'static str {
    match ty {
        PgType::Bool => "B",
        PgType::Int2
        | PgType::Int4
        | PgType::Int8
        | PgType::Numeric
        | PgType::Float4
        | PgType::Float8 => "N",
        PgType::Date | PgType::Timestamp => "D",
        PgType::Bytea => "U",
        _ => "S",
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
            Datum::Null,
            Datum::Int(0),
            Datum::Null,
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
            for tm in &tables {
                out.push(vec![
                    i(i64::from(tm.oid)),
                    t(&tm.name),
                    i(PUBLIC_OID),
                    t("r"),
                    i(10),
                    Datum::Float(-1.0),
                    Datum::Bool(!tm.indexes.is_empty() || !tm.has_rowid()),
                    t("p"),
                    Datum::Bool(false),
                ]);
                extend_class(out.last_mut(), 2);
                if let Some(r) = out.last_mut() {
                    r.push(i(tm.visible().count() as i64));
                }
                for ix in indexes(tm) {
                    out.push(vec![
                        i(ix.oid),
                        t(&ix.name),
                        i(PUBLIC_OID),
                        t("i"),
                        i(10),
                        Datum::Float(-1.0),
                        Datum::Bool(false),
                        t("p"),
                        Datum::Bool(false),
                    ]);
                    extend_class(out.last_mut(), 403);
                    if let Some(r) = out.last_mut() {
                        r.push(i(ix.columns.len() as i64));
                    }
                }
            }
            out
        }
        VirtualTable::PgRoles => vec![vec![
            i(10),
            t("shmdb"),
            Datum::Bool(true),
            Datum::Bool(true),
            Datum::Bool(true),
            Datum::Bool(true),
            Datum::Bool(true),
            Datum::Bool(false),
            i(-1),
            Datum::Bool(true),
        ]],
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
            let attr = |rel: i64, num: usize, c: &ColumnMeta, table_col: bool| {
                let pg = c.ty.pg();
                vec![
                    i(rel),
                    t(&c.name),
                    i(i64::from(pg.oid())),
                    i(num as i64),
                    Datum::Bool(table_col && c.not_null),
                    Datum::Bool(table_col && c.default.is_some()),
                    Datum::Bool(false),
                    i(typmod(c.ty)),
                    i(type_len(pg)),
                    t(""),
                    t(""),
                    i(collation(pg)),
                    i(-1),
                    t(if type_len(pg) < 0 { "x" } else { "p" }),
                    Datum::Bool(true),
                    i(0),
                    i(0),
                    t(""),
                    Datum::Null,
                    Datum::Null,
                ]
            };
            for tm in &tables {
                for (pos, c) in tm.visible() {
                    out.push(attr(i64::from(tm.oid), pos + 1, c, true));
                }
                for ix in indexes(tm) {
                    for (k, pos) in ix.columns.iter().enumerate() {
                        if let Some(c) = tm.columns.get(*pos) {
                            out.push(attr(ix.oid, k + 1, c, false));
                        }
                    }
                }
            }
            out
        }
        VirtualTable::PgIndex => {
            let mut out = Vec::new();
            for tm in &tables {
                for ix in indexes(tm) {
                    let keys = ix
                        .columns
                        .iter()
                        .map(|c| (c + 1).to_string())
                        .collect::<Vec<_>>()
                        .join(" ");
                    let n = ix.columns.len() as i64;
                    out.push(vec![
                        i(ix.oid),
                        i(i64::from(tm.oid)),
                        Datum::Bool(ix.unique),
                        Datum::Bool(ix.primary),
                        i(n),
                        t(&keys),
                        i(n),
                        Datum::Bool(false),
                        Datum::Bool(true),
                        Datum::Bool(false),
                        Datum::Bool(true),
                        Datum::Bool(false),
                        Datum::Bool(false),
                        Datum::Bool(true),
                        Datum::Bool(true),
                        Datum::Bool(false),
                        t(&vec!["0"; ix.columns.len()].join(" ")),
                        Datum::Null,
                        Datum::Null,
                    ]);
                }
            }
            out
        }
        VirtualTable::PgAttrdef => {
            let mut out = Vec::new();
            for tm in &tables {
                for (pos, c) in tm.visible() {
                    if let Some(d) = &c.default {
                        out.push(vec![
                            i(i64::from(tm.oid) * 1000 + pos as i64 + 1),
                            i(i64::from(tm.oid)),
                            i(pos as i64 + 1),
                            t(d),
                        ]);
                    }
                }
            }
            out
        }
        VirtualTable::PgConstraint => {
            let mut out = Vec::new();
            for tm in &tables {
                for ix in indexes(tm) {
                    if !ix.primary {
                        continue;
                    }
                    let keys = ix
                        .columns
                        .iter()
                        .map(|c| (c + 1).to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    out.push(vec![
                        i(pk_constraint_oid(tm)),
                        t(&ix.name),
                        i(PUBLIC_OID),
                        t("p"),
                        Datum::Bool(false),
                        Datum::Bool(false),
                        Datum::Bool(true),
                        i(i64::from(tm.oid)),
                        i(0),
                        i(ix.oid),
                        i(0),
                        i(0),
                        t(" "),
                        t(" "),
                        t(" "),
                        Datum::Bool(true),
                        i(0),
                        Datum::Bool(true),
                        t(&format!("{{{keys}}}")),
                        Datum::Null,
                        Datum::Null,
                    ]);
                }
            }
            out
        }
        VirtualTable::PgCollation => vec![
            vec![
                i(100),
                t("default"),
                i(PG_CATALOG_OID),
                t("d"),
                t(""),
                t(""),
            ],
            vec![i(950), t("C"), i(PG_CATALOG_OID), t("c"), t("C"), t("C")],
        ],
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
        .map(|(ty, n, l)| {
            vec![
                i(i64::from(ty.oid())),
                t(n),
                i(PG_CATALOG_OID),
                i(*l),
                t("b"),
                i(collation(*ty)),
                i(0),
                i(-1),
                Datum::Bool(false),
                i(0),
                i(0),
                i(0),
                i(10),
                t(category(*ty)),
                t(","),
                Datum::Bool(true),
                Datum::Null,
                t(&format!("{n}in")),
                t(&format!("{n}out")),
                t(&format!("{n}recv")),
            ]
        })
        .collect(),
        VirtualTable::PgAm => vec![
            vec![Datum::Int(2), text("heap"), text("t"), Datum::Bool(false)],
            vec![Datum::Int(403), text("btree"), text("i"), Datum::Bool(true)],
        ],
        VirtualTable::PgDatabase => {
            vec![vec![
                Datum::Int(1),
                text("shmdb"),
                Datum::Int(6),
                text("C"),
                Datum::Int(10),
                text("C"),
                Datum::Null,
                text("c"),
                Datum::Null,
                Datum::Bool(false),
                Datum::Bool(true),
                Datum::Int(-1),
            ]]
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
