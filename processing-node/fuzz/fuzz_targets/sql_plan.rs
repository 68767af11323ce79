//! Fuzzes SQL text → parse → plan against a fixed catalog: any input must give statements
//! and plans or a `SqlError`, never a panic (the planner runs on every client's text before
//! anything touches the store).
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use shmdb_processing_node::sql::bind::Planner;
use shmdb_processing_node::sql::catalog::{Catalog, ColumnMeta, IndexMeta, TableMeta};
use shmdb_processing_node::sql::parse::parse;
use shmdb_processing_node::sql::sqltype::SqlType;
use sqlparser::ast::Statement;

fn column(name: &str, ty: SqlType, not_null: bool) -> ColumnMeta {
    ColumnMeta {
        name: name.into(),
        ty,
        not_null,
        default: None,
        hidden: false,
    }
}

/// `accounts(id int8 pk, owner varchar(40) not null, balance numeric(12,2))` with an index on
/// owner, and `orders(w int4, d int4, o int4, amount float8, note text)` with a composite
/// key: enough for joins, composite ranges, indexes and every type family.
fn catalog() -> Catalog {
    let accounts = TableMeta {
        oid: 16384,
        store_id: 1,
        name: "accounts".into(),
        columns: vec![
            column("id", SqlType::Int8, true),
            column("owner", SqlType::Varchar(Some(40)), true),
            column("balance", SqlType::Numeric(Some((12, 2))), false),
        ],
        primary_key: vec![0],
        pk_name: Some("accounts_pkey".into()),
        indexes: vec![IndexMeta {
            id: 100,
            name: "accounts_owner".into(),
            columns: vec![1],
            unique: false,
        }],
    };
    let orders = TableMeta {
        oid: 16390,
        store_id: 2,
        name: "orders".into(),
        columns: vec![
            column("w", SqlType::Int4, true),
            column("d", SqlType::Int4, true),
            column("o", SqlType::Int4, true),
            column("amount", SqlType::Float8, false),
            column("note", SqlType::Text, false),
        ],
        primary_key: vec![0, 1, 2],
        pk_name: Some("orders_pkey".into()),
        indexes: vec![IndexMeta {
            id: 101,
            name: "orders_note".into(),
            columns: vec![4],
            unique: true,
        }],
    };
    let mut tables = HashMap::new();
    tables.insert("accounts".to_string(), Arc::new(accounts));
    tables.insert("orders".to_string(), Arc::new(orders));
    Catalog { version: 1, tables }
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(statements) = parse(sql) else {
        return;
    };
    let catalog = catalog();
    for statement in &statements {
        let mut planner = Planner::new(&catalog, &[]);
        let _ = match statement {
            Statement::Query(q) => planner.plan_query(q).map(|_| ()),
            Statement::Insert(i) => planner.plan_insert(i).map(|_| ()),
            Statement::Update(u) => planner.plan_update(u).map(|_| ()),
            Statement::Delete(d) => planner.plan_delete(d).map(|_| ()),
            _ => Ok(()),
        };
    }
});
