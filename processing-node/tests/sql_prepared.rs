//! Prepared statements: parameter type inference, parameters of every type, portals.

mod common;
mod sql;

use shmdb_processing_node::sql::{PgType, QueryOutput};
use shmdb_processing_node::{Datum, Decimal};
use sql::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_of_every_type() -> anyhow::Result<()> {
    let (_cluster, engines) = start(1).await?;
    let mut s = engines[0].session();
    exec(
        &mut s,
        "CREATE TABLE types (id int PRIMARY KEY, a smallint, b bigint, c numeric(10,2), d real, e double precision, \
         f char(3), g varchar(10), h text, i boolean, j date, k timestamp)",
    )
    .await?;
    let p = s
        .prepare(
            "INSERT INTO types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[],
        )
        .await?;
    use PgType::*;
    assert_eq!(
        p.param_types,
        vec![
            Int4, Int2, Int8, Numeric, Float4, Float8, Bpchar, Varchar, Text, Bool, Date, Timestamp
        ]
    );
    let row = vec![
        Datum::Int(1),
        Datum::Int(-2),
        Datum::Int(1 << 40),
        Datum::Decimal(Decimal::new(12345, 3)),
        Datum::Float(1.5),
        Datum::Float(-2.25),
        Datum::Text("ab".into()),
        Datum::Text("hello".into()),
        Datum::Text("world".into()),
        Datum::Bool(true),
        Datum::Date(8000),
        Datum::Timestamp(700_000_000_123_456),
    ];
    let out = s.execute(&p, &row, 0).await?;
    assert_eq!(
        out,
        QueryOutput::Command {
            tag: "INSERT 0 1".into()
        }
    );
    s.sync().await?;
    let out = prep(
        &mut s,
        "SELECT * FROM types WHERE id = $1",
        &[Datum::Int(1)],
    )
    .await?;
    assert_eq!(
        text_rows(&out),
        vec![
            "1|-2|1099511627776|12.35|1.5|-2.25|ab |hello|world|t|2021-11-26|2022-03-07 20:26:40.123456"
        ]
    );
    // Each column as a parameter in a WHERE clause.
    for (col, v) in [
        ("a", Datum::Int(-2)),
        ("c", Datum::Decimal(Decimal::new(1235, 2))),
        ("f", Datum::Text("ab".into())),
        ("i", Datum::Bool(true)),
        ("j", Datum::Date(8000)),
        ("k", Datum::Timestamp(700_000_000_123_456)),
    ] {
        let out = prep(
            &mut s,
            &format!("SELECT id FROM types WHERE {col} = $1"),
            &[v],
        )
        .await?;
        assert_eq!(text_rows(&out), vec!["1"], "column {col}");
    }
    // Text parameters are coerced where the type is known.
    let out = prep(
        &mut s,
        "SELECT id FROM types WHERE b = $1::bigint",
        &[Datum::Text("1099511627776".into())],
    )
    .await?;
    assert_eq!(text_rows(&out), vec!["1"]);
    // Describe of a query.
    let p = s
        .prepare("SELECT id, c, k FROM types WHERE g = $1 LIMIT $2", &[])
        .await?;
    assert_eq!(p.param_types, vec![Varchar, Int8]);
    assert_eq!(
        p.columns.iter().map(|c| c.pg_type).collect::<Vec<_>>(),
        vec![Int4, Numeric, Timestamp]
    );
    // Errors keep their SQLSTATE through execute.
    let p = s
        .prepare("INSERT INTO types (id, g) VALUES ($1, $2)", &[])
        .await?;
    let e = s
        .execute(
            &p,
            &[Datum::Int(2), Datum::Text("far too long text".into())],
            0,
        )
        .await;
    assert!(matches!(e, Err(ref e) if e.code == "22001"), "{e:?}");
    s.sync().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_and_copy() -> anyhow::Result<()> {
    let (_cluster, engines) = start(1).await?;
    let mut s = engines[0].session();
    exec(
        &mut s,
        "CREATE TABLE c (id int PRIMARY KEY, name text, d date)",
    )
    .await?;
    let n = s
        .copy_from_text(
            "COPY c FROM STDIN",
            b"1\ta\t2020-01-01\n2\t\\N\t2020-01-02\n3\tc\\td\t\\N\n",
        )
        .await?;
    assert_eq!(n, 3);
    assert_eq!(
        rows(&mut s, "SELECT * FROM c ORDER BY id").await?,
        vec!["1|a|2020-01-01", "2|NULL|2020-01-02", "3|c\td|NULL"]
    );
    let n = s
        .copy_from_text(
            "COPY c (id, name) FROM STDIN WITH (FORMAT csv)",
            b"4,\"x,y\"\n5,\n",
        )
        .await?;
    assert_eq!(n, 2);
    let p = s.prepare("SELECT id FROM c ORDER BY id", &[]).await?;
    let first = s.execute(&p, &[], 2).await?;
    assert_eq!(text_rows(&first), vec!["1", "2"]);
    assert!(s.suspended());
    let rest = s.resume(2).await?;
    assert_eq!(text_rows(&rest), vec!["3", "4"]);
    let rest = s.resume(0).await?;
    assert_eq!(text_rows(&rest), vec!["5"]);
    assert!(!s.suspended());
    s.sync().await?;
    Ok(())
}

/// A prepared statement keeps its plan between executions, but a catalog change (here the
/// table dropped and created again with other columns, from another session) plans it
/// anew: a stale plan would write into the dropped table's key space with its old layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_is_planned_again_after_ddl() -> anyhow::Result<()> {
    let (_cluster, engines) = start(1).await?;
    let mut s = engines[0].session();
    let mut ddl = engines[0].session();
    exec(&mut ddl, "CREATE TABLE kv (k int PRIMARY KEY, v text)").await?;
    let insert = s.prepare("INSERT INTO kv VALUES ($1, $2)", &[]).await?;
    let select = s.prepare("SELECT * FROM kv ORDER BY k", &[]).await?;
    for k in 1..=3 {
        s.execute(&insert, &[Datum::Int(k), Datum::Text(format!("v{k}"))], 0)
            .await?;
        s.sync().await?;
    }
    assert_eq!(
        text_rows(&s.execute(&select, &[], 0).await?),
        vec!["1|v1", "2|v2", "3|v3"]
    );
    s.sync().await?;

    exec(&mut ddl, "DROP TABLE kv").await?;
    exec(
        &mut ddl,
        "CREATE TABLE kv (k int PRIMARY KEY, v text, n int DEFAULT 7)",
    )
    .await?;
    s.execute(&insert, &[Datum::Int(9), Datum::Text("new".into())], 0)
        .await?;
    s.sync().await?;
    assert_eq!(
        rows(&mut ddl, "SELECT k, v, n FROM kv").await?,
        vec!["9|new|7"],
        "the insert went to the new table, with its default"
    );
    // `SELECT *` now has a third column: the old description no longer fits.
    let changed = s.execute(&select, &[], 0).await;
    assert_eq!(changed.err().map(|e| e.code), Some("0A000"));
    s.sync().await?;
    let select = s.prepare("SELECT * FROM kv ORDER BY k", &[]).await?;
    assert_eq!(
        text_rows(&s.execute(&select, &[], 0).await?),
        vec!["9|new|7"]
    );
    s.sync().await?;
    // Bad input still fails cleanly on a cached plan: a duplicate key.
    let dup = s
        .execute(&insert, &[Datum::Int(9), Datum::Text("x".into())], 0)
        .await;
    assert_eq!(dup.err().map(|e| e.code), Some("23505"));
    Ok(())
}

/// DDL that changes what a prepared statement returns fails its next execution with
/// PostgreSQL's error (the client decodes rows by the description it was given); prepared
/// again, it returns the new columns. DDL that leaves the result alone changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_that_changes_the_result_fails_the_prepared_statement() -> anyhow::Result<()> {
    let (_cluster, engines) = start(1).await?;
    let mut s = engines[0].session();
    exec(&mut s, "CREATE TABLE t (id int PRIMARY KEY, a text)").await?;
    exec(&mut s, "INSERT INTO t VALUES (1, 'x')").await?;
    let star = s.prepare("SELECT * FROM t", &[]).await?;
    let named = s.prepare("SELECT id, a FROM t", &[]).await?;
    assert_eq!(star.columns.len(), 2);
    s.execute(&star, &[], 0).await?;
    s.sync().await?;

    exec(&mut s, "ALTER TABLE t ADD COLUMN b int").await?;
    let err = s
        .execute(&star, &[], 0)
        .await
        .expect_err("the result changed under the prepared statement");
    assert_eq!(err.code, "0A000", "{err:?}");
    assert!(
        err.message.contains("must not change result type"),
        "{err:?}"
    );
    s.sync().await?;
    // The statement that names its columns is unaffected.
    let out = s.execute(&named, &[], 0).await?;
    let QueryOutput::Rows { rows, .. } = out else {
        anyhow::bail!("rows expected, got {out:?}");
    };
    assert_eq!(rows.len(), 1);
    s.sync().await?;
    let again = s.prepare("SELECT * FROM t", &[]).await?;
    assert_eq!(again.columns.len(), 3);
    let out = s.execute(&again, &[], 0).await?;
    let QueryOutput::Rows { rows, .. } = out else {
        anyhow::bail!("rows expected, got {out:?}");
    };
    assert_eq!(rows[0].len(), 3);
    s.sync().await?;
    Ok(())
}

/// A transaction's first prepared statement runs with its node's newest catalog on trust,
/// and the catalog version is read along with the statement's records: DDL another node
/// committed meanwhile (TRUNCATE moves the table to a new key space, so a stale catalog
/// would read the old rows) is noticed before any result leaves, and the statement runs
/// again in a new transaction with the new catalog; in an explicit block as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_statement_run_on_a_stale_catalog_runs_again() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let mut a = engines[0].session();
    let mut b = engines[1].session();
    exec(&mut a, "CREATE TABLE kv (k int PRIMARY KEY, v text)").await?;
    exec(&mut a, "INSERT INTO kv VALUES (1, 'old'), (2, 'old')").await?;
    let get = b.prepare("SELECT v FROM kv WHERE k = $1", &[]).await?;
    let count = b.prepare("SELECT count(*) FROM kv", &[]).await?;
    let put = b.prepare("INSERT INTO kv VALUES ($1, $2)", &[]).await?;
    assert_eq!(
        text_rows(&b.execute(&get, &[Datum::Int(1)], 0).await?),
        ["old"]
    );
    b.sync().await?;

    // Node 2 still holds the catalog from before the TRUNCATE.
    exec(&mut a, "TRUNCATE kv").await?;
    exec(&mut a, "INSERT INTO kv VALUES (1, 'new')").await?;
    assert_eq!(
        text_rows(&b.execute(&get, &[Datum::Int(1)], 0).await?),
        ["new"]
    );
    b.sync().await?;
    assert_eq!(text_rows(&b.execute(&count, &[], 0).await?), ["1"]);
    b.sync().await?;

    // A write as the first statement: it must land in the new key space.
    exec(&mut a, "TRUNCATE kv").await?;
    b.execute(&put, &[Datum::Int(5), Datum::Text("b".into())], 0)
        .await?;
    b.sync().await?;
    assert_eq!(rows(&mut a, "SELECT k, v FROM kv").await?, ["5|b"]);

    // In an explicit block: the block goes on in the new transaction.
    exec(&mut a, "TRUNCATE kv").await?;
    exec(&mut b, "BEGIN").await?;
    assert!(text_rows(&b.execute(&get, &[Datum::Int(5)], 0).await?).is_empty());
    b.execute(&put, &[Datum::Int(6), Datum::Text("in block".into())], 0)
        .await?;
    exec(&mut b, "COMMIT").await?;
    assert_eq!(rows(&mut a, "SELECT k, v FROM kv").await?, ["6|in block"]);
    Ok(())
}
