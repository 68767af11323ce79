//! DDL: CREATE/DROP TABLE, CREATE/DROP INDEX, ALTER TABLE, TRUNCATE — catalog rows written
//! in the statement's transaction, with index backfill and table rewrites done in it too.
//!
//! TRUNCATE and ALTER TABLE ADD PRIMARY KEY give the table a new storage id instead of
//! deleting rows one by one: the old rows stay readable by older snapshots and become
//! unreachable garbage once the catalog change commits.

use std::ops::Bound;
use std::sync::Arc;

use sqlparser::ast::{self, ColumnOption, TableConstraint};

use crate::datum::Datum;
use crate::sql::bind::{ident, object_name};
use crate::sql::catalog::{
    Catalog, ColumnMeta, IndexMeta, TableMeta, delete_table, new_id, put_table, read_all,
};
use crate::sql::dml::unique_error;
use crate::sql::error::SqlError;
use crate::sql::sqltype::SqlType;
use crate::sql::txn_error;
use crate::txn::{Engine, TableDef, Transaction};

/// What a DDL statement reports besides its tag.
#[derive(Debug, Default)]
pub struct DdlOutcome {
    /// The command tag.
    pub tag: String,
    /// NOTICE messages.
    pub notices: Vec<String>,
}

fn tag(t: &str) -> DdlOutcome {
    DdlOutcome {
        tag: t.to_string(),
        notices: Vec::new(),
    }
}

fn id32(v: i64) -> Result<u32, SqlError> {
    u32::try_from(v).map_err(|_| SqlError::internal("object ids exhausted"))
}

fn name_taken(catalog: &Catalog, name: &str) -> bool {
    catalog.tables.contains_key(name) || catalog.index_by_name(name).is_some()
}

fn columns_of(meta: &TableMeta, cols: &[ast::IndexColumn]) -> Result<Vec<usize>, SqlError> {
    cols.iter()
        .map(|c| {
            let n = match &c.column.expr {
                ast::Expr::Identifier(i) => ident(i),
                other => {
                    return Err(SqlError::unsupported(format!(
                        "index on expression {other}"
                    )));
                }
            };
            meta.column(&n)
                .ok_or_else(|| SqlError::new("42703", format!("column \"{n}\" does not exist")))
        })
        .collect()
}

/// CREATE TABLE.
pub async fn create_table(
    engine: &Engine,
    tx: &mut Transaction,
    catalog: &Catalog,
    ct: &ast::CreateTable,
) -> Result<DdlOutcome, SqlError> {
    let name = object_name(&ct.name);
    if ct.query.is_some() {
        return Err(SqlError::unsupported("CREATE TABLE … AS"));
    }
    if name_taken(catalog, &name) {
        if ct.if_not_exists {
            let mut out = tag("CREATE TABLE");
            out.notices
                .push(format!("relation \"{name}\" already exists, skipping"));
            return Ok(out);
        }
        return Err(SqlError::new(
            "42P07",
            format!("relation \"{name}\" already exists"),
        ));
    }
    let mut out = tag("CREATE TABLE");
    let mut meta = TableMeta {
        oid: 0,
        store_id: 0,
        name: name.clone(),
        columns: Vec::new(),
        primary_key: Vec::new(),
        pk_name: None,
        indexes: Vec::new(),
    };
    let mut uniques: Vec<(Option<String>, Vec<usize>)> = Vec::new();
    for c in &ct.columns {
        let cname = ident(&c.name);
        if meta.columns.iter().any(|x| x.name == cname) {
            return Err(SqlError::new(
                "42701",
                format!("column \"{cname}\" specified more than once"),
            ));
        }
        let ty = SqlType::from_ast(&c.data_type)?;
        let pos = meta.columns.len();
        let mut col = ColumnMeta {
            name: cname.clone(),
            ty,
            not_null: false,
            default: None,
            hidden: false,
        };
        for o in &c.options {
            match &o.option {
                ColumnOption::NotNull => col.not_null = true,
                ColumnOption::Null => {}
                ColumnOption::Default(e) => col.default = Some(e.to_string()),
                ColumnOption::PrimaryKey(_) => {
                    if !meta.primary_key.is_empty() {
                        return Err(SqlError::new(
                            "42P16",
                            format!("multiple primary keys for table \"{name}\" are not allowed"),
                        ));
                    }
                    meta.primary_key = vec![pos];
                    meta.pk_name = o.name.as_ref().map(ident);
                }
                ColumnOption::Unique(_) => uniques.push((o.name.as_ref().map(ident), vec![pos])),
                ColumnOption::ForeignKey(_) => out.notices.push(format!(
                    "FOREIGN KEY on \"{name}\".\"{cname}\" is accepted but not enforced"
                )),
                ColumnOption::Check(_) => out.notices.push(format!(
                    "CHECK on \"{name}\".\"{cname}\" is accepted but not enforced"
                )),
                other => return Err(SqlError::unsupported(format!("column option {other}"))),
            }
        }
        meta.columns.push(col);
    }
    for tc in &ct.constraints {
        match tc {
            TableConstraint::PrimaryKey(pk) => {
                if !meta.primary_key.is_empty() {
                    return Err(SqlError::new(
                        "42P16",
                        format!("multiple primary keys for table \"{name}\" are not allowed"),
                    ));
                }
                meta.primary_key = columns_of(&meta, &pk.columns)?;
                meta.pk_name = pk.name.as_ref().map(ident);
            }
            TableConstraint::Unique(u) => {
                uniques.push((u.name.as_ref().map(ident), columns_of(&meta, &u.columns)?))
            }
            TableConstraint::ForeignKey(_) => out.notices.push(format!(
                "FOREIGN KEY on \"{name}\" is accepted but not enforced"
            )),
            TableConstraint::Check(_) => out
                .notices
                .push(format!("CHECK on \"{name}\" is accepted but not enforced")),
            other => return Err(SqlError::unsupported(format!("constraint {other}"))),
        }
    }
    if meta.columns.is_empty() {
        return Err(SqlError::unsupported("a table without columns"));
    }
    if meta.primary_key.is_empty() {
        meta.columns.push(ColumnMeta {
            name: "_rowid".into(),
            ty: SqlType::Int8,
            not_null: true,
            default: None,
            hidden: true,
        });
        meta.primary_key = vec![meta.columns.len() - 1];
    }
    for &p in &meta.primary_key.clone() {
        meta.columns[p].not_null = true;
    }
    meta.oid = id32(new_id(engine).await?)?;
    meta.store_id = meta.oid;
    for (n, cols) in uniques {
        let iname = n.unwrap_or_else(|| {
            let names: Vec<&str> = cols
                .iter()
                .map(|c| meta.columns[*c].name.as_str())
                .collect();
            format!("{}_{}_key", name, names.join("_"))
        });
        if name_taken(catalog, &iname) || meta.indexes.iter().any(|i| i.name == iname) {
            return Err(SqlError::new(
                "42P07",
                format!("relation \"{iname}\" already exists"),
            ));
        }
        meta.indexes.push(IndexMeta {
            id: id32(new_id(engine).await?)?,
            name: iname,
            columns: cols,
            unique: true,
        });
    }
    put_table(engine, tx, &meta).await?;
    Ok(out)
}

/// DROP TABLE / DROP INDEX.
pub async fn drop(
    engine: &Engine,
    tx: &mut Transaction,
    catalog: &Catalog,
    object_type: &ast::ObjectType,
    if_exists: bool,
    names: &[ast::ObjectName],
) -> Result<DdlOutcome, SqlError> {
    match object_type {
        ast::ObjectType::Table => {
            let mut out = tag("DROP TABLE");
            for n in names {
                let name = object_name(n);
                match catalog.tables.get(&name) {
                    Some(t) => delete_table(engine, tx, t.oid).await?,
                    None if if_exists => out
                        .notices
                        .push(format!("table \"{name}\" does not exist, skipping")),
                    None => {
                        return Err(SqlError::new(
                            "42P01",
                            format!("table \"{name}\" does not exist"),
                        ));
                    }
                }
            }
            Ok(out)
        }
        ast::ObjectType::Index => {
            let mut out = tag("DROP INDEX");
            for n in names {
                let name = object_name(n);
                match catalog.index_by_name(&name) {
                    Some((t, pos)) => {
                        let mut meta = (*t).clone();
                        meta.indexes.remove(pos);
                        put_table(engine, tx, &meta).await?;
                    }
                    None if if_exists => out
                        .notices
                        .push(format!("index \"{name}\" does not exist, skipping")),
                    None => {
                        return Err(SqlError::new(
                            "42704",
                            format!("index \"{name}\" does not exist"),
                        ));
                    }
                }
            }
            Ok(out)
        }
        other => Err(SqlError::unsupported(format!("DROP {other}"))),
    }
}

/// CREATE [UNIQUE] INDEX, with backfill of existing rows.
pub async fn create_index(
    engine: &Engine,
    tx: &mut Transaction,
    catalog: &Catalog,
    ci: &ast::CreateIndex,
) -> Result<DdlOutcome, SqlError> {
    let table = catalog.table(&object_name(&ci.table_name))?;
    let cols = columns_of(&table, &ci.columns)?;
    let name = match &ci.name {
        Some(n) => object_name(n),
        None => {
            let names: Vec<&str> = cols
                .iter()
                .map(|c| table.columns[*c].name.as_str())
                .collect();
            format!("{}_{}_idx", table.name, names.join("_"))
        }
    };
    if name_taken(catalog, &name) {
        if ci.if_not_exists {
            let mut out = tag("CREATE INDEX");
            out.notices
                .push(format!("relation \"{name}\" already exists, skipping"));
            return Ok(out);
        }
        return Err(SqlError::new(
            "42P07",
            format!("relation \"{name}\" already exists"),
        ));
    }
    let index = IndexMeta {
        id: id32(new_id(engine).await?)?,
        name,
        columns: cols,
        unique: ci.unique,
    };
    add_index(engine, tx, &table, index).await?;
    Ok(tag("CREATE INDEX"))
}

/// Adds an index to a table and fills it from the existing rows: each row is rewritten
/// unchanged through a definition holding only the new index, which writes just its entries.
async fn add_index(
    engine: &Engine,
    tx: &mut Transaction,
    table: &Arc<TableMeta>,
    index: IndexMeta,
) -> Result<(), SqlError> {
    let mut meta = (**table).clone();
    meta.indexes.push(index);
    let full = meta.def();
    let only_new = TableDef {
        indexes: full.indexes.last().cloned().into_iter().collect(),
        ..full.clone()
    };
    let bare = TableDef {
        indexes: Vec::new(),
        ..full.clone()
    };
    let rows = tx
        .scan(&bare, Bound::Unbounded, Bound::Unbounded, 0)
        .await
        .map_err(txn_error)?;
    for row in rows {
        let row = pad(row, meta.columns.len());
        tx.delete(&bare, &bare.pk_of(&row))
            .await
            .map_err(txn_error)?;
        tx.insert(&only_new, row)
            .await
            .map_err(|e| unique_error(&meta, e))?;
    }
    put_table(engine, tx, &meta).await
}

/// Pads a row written before ADD COLUMN to the table's width.
pub fn pad(mut row: Vec<Datum>, width: usize) -> Vec<Datum> {
    if row.len() < width {
        row.resize(width, Datum::Null);
    }
    row
}

/// Moves a table to a new storage id (and new index ids) and writes `rows` there.
async fn rewrite(
    engine: &Engine,
    tx: &mut Transaction,
    mut meta: TableMeta,
    rows: Vec<Vec<Datum>>,
) -> Result<TableMeta, SqlError> {
    meta.store_id = id32(new_id(engine).await?)?;
    for i in &mut meta.indexes {
        i.id = id32(new_id(engine).await?)?;
    }
    let def = meta.def();
    for row in rows {
        tx.insert(&def, row)
            .await
            .map_err(|e| unique_error(&meta, e))?;
    }
    put_table(engine, tx, &meta).await?;
    Ok(meta)
}

/// TRUNCATE.
pub async fn truncate(
    engine: &Engine,
    tx: &mut Transaction,
    catalog: &Catalog,
    names: &[ast::TruncateTableTarget],
) -> Result<DdlOutcome, SqlError> {
    for n in names {
        let meta = catalog.table(&object_name(&n.name))?;
        rewrite(engine, tx, (*meta).clone(), Vec::new()).await?;
    }
    Ok(tag("TRUNCATE TABLE"))
}

/// ALTER TABLE: ADD PRIMARY KEY, ADD UNIQUE, ADD COLUMN, foreign keys (accepted).
pub async fn alter_table(
    engine: &Engine,
    tx: &mut Transaction,
    catalog: &Catalog,
    at: &ast::AlterTable,
) -> Result<DdlOutcome, SqlError> {
    let name = object_name(&at.name);
    let mut out = tag("ALTER TABLE");
    let Some(mut meta) = catalog.tables.get(&name).map(|t| (**t).clone()) else {
        if at.if_exists {
            out.notices
                .push(format!("relation \"{name}\" does not exist, skipping"));
            return Ok(out);
        }
        return Err(SqlError::new(
            "42P01",
            format!("relation \"{name}\" does not exist"),
        ));
    };
    for op in &at.operations {
        // Each operation sees the previous ones.
        let current = read_all(tx, 0).await?;
        if let Some(t) = current.tables.get(&name) {
            meta = (**t).clone();
        }
        match op {
            ast::AlterTableOperation::AddConstraint { constraint, .. } => match constraint {
                TableConstraint::PrimaryKey(pk) => {
                    if !meta.has_rowid() {
                        return Err(SqlError::new(
                            "42P16",
                            format!("multiple primary keys for table \"{name}\" are not allowed"),
                        ));
                    }
                    let cols = columns_of(&meta, &pk.columns)?;
                    let old = meta.def();
                    let rows = tx
                        .scan(&old, Bound::Unbounded, Bound::Unbounded, 0)
                        .await
                        .map_err(txn_error)?;
                    let hidden = meta
                        .columns
                        .iter()
                        .position(|c| c.hidden)
                        .unwrap_or(meta.columns.len());
                    let mut new_meta = meta.clone();
                    new_meta.columns.remove(hidden);
                    let shift = |c: usize| if c > hidden { c - 1 } else { c };
                    new_meta.primary_key = cols.iter().map(|c| shift(*c)).collect();
                    for i in &mut new_meta.indexes {
                        i.columns = i.columns.iter().map(|c| shift(*c)).collect();
                    }
                    new_meta.pk_name = pk.name.as_ref().map(ident);
                    for &p in &new_meta.primary_key {
                        new_meta.columns[p].not_null = true;
                    }
                    let mut new_rows = Vec::with_capacity(rows.len());
                    for row in rows {
                        let mut row = pad(row, meta.columns.len());
                        row.remove(hidden);
                        for &p in &new_meta.primary_key {
                            if row[p].is_null() {
                                return Err(SqlError::new(
                                    "23502",
                                    format!(
                                        "column \"{}\" of relation \"{name}\" contains null values",
                                        new_meta.columns[p].name
                                    ),
                                ));
                            }
                        }
                        new_rows.push(row);
                    }
                    rewrite(engine, tx, new_meta, new_rows).await?;
                }
                TableConstraint::Unique(u) => {
                    let cols = columns_of(&meta, &u.columns)?;
                    let iname = u.name.as_ref().map(ident).unwrap_or_else(|| {
                        let names: Vec<&str> = cols
                            .iter()
                            .map(|c| meta.columns[*c].name.as_str())
                            .collect();
                        format!("{}_{}_key", name, names.join("_"))
                    });
                    if name_taken(catalog, &iname) {
                        return Err(SqlError::new(
                            "42P07",
                            format!("relation \"{iname}\" already exists"),
                        ));
                    }
                    let index = IndexMeta {
                        id: id32(new_id(engine).await?)?,
                        name: iname,
                        columns: cols,
                        unique: true,
                    };
                    add_index(engine, tx, &Arc::new(meta.clone()), index).await?;
                }
                TableConstraint::ForeignKey(_) => out.notices.push(format!(
                    "FOREIGN KEY on \"{name}\" is accepted but not enforced"
                )),
                TableConstraint::Check(_) => out
                    .notices
                    .push(format!("CHECK on \"{name}\" is accepted but not enforced")),
                other => return Err(SqlError::unsupported(format!("constraint {other}"))),
            },
            ast::AlterTableOperation::AddColumn {
                column_def,
                if_not_exists,
                ..
            } => {
                let cname = ident(&column_def.name);
                if meta.column(&cname).is_some() {
                    if *if_not_exists {
                        out.notices.push(format!(
                            "column \"{cname}\" of relation \"{name}\" already exists, skipping"
                        ));
                        continue;
                    }
                    return Err(SqlError::new(
                        "42701",
                        format!("column \"{cname}\" of relation \"{name}\" already exists"),
                    ));
                }
                let ty = SqlType::from_ast(&column_def.data_type)?;
                let mut col = ColumnMeta {
                    name: cname.clone(),
                    ty,
                    not_null: false,
                    default: None,
                    hidden: false,
                };
                for o in &column_def.options {
                    match &o.option {
                        ColumnOption::NotNull => col.not_null = true,
                        ColumnOption::Null => {}
                        ColumnOption::Default(e) => col.default = Some(e.to_string()),
                        other => {
                            return Err(SqlError::unsupported(format!("ADD COLUMN with {other}")));
                        }
                    }
                }
                let def = meta.def();
                let rows = tx
                    .scan(&def, Bound::Unbounded, Bound::Unbounded, 1)
                    .await
                    .map_err(txn_error)?;
                if !rows.is_empty() && (col.default.is_some() || col.not_null) {
                    return Err(SqlError::unsupported(
                        "ADD COLUMN with DEFAULT or NOT NULL on a non-empty table",
                    ));
                }
                meta.columns.push(col);
                put_table(engine, tx, &meta).await?;
            }
            other => return Err(SqlError::unsupported(format!("ALTER TABLE {other}"))),
        }
    }
    Ok(out)
}
