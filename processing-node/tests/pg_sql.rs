//! SQL over the wire with a real driver (tokio-postgres) and a raw protocol client:
//! parameters of every type in text and binary, portals with row limits, COPY, implicit
//! transactions and transaction status in ReadyForQuery.

mod common;
#[path = "common/pg.rs"]
mod pg;

use chrono::{NaiveDate, NaiveDateTime};
use futures::SinkExt;
use pg::{PgTest, Raw, bind, execute, parse};
use rust_decimal::Decimal;

const ALL_TYPES: &str = "CREATE TABLE all_types (id integer PRIMARY KEY, b boolean, s smallint, \
     i integer, l bigint, n numeric(12,3), r real, d double precision, c char(4), \
     v varchar(10), t text, dt date, ts timestamp)";

fn ts(s: &str) -> anyhow::Result<NaiveDateTime> {
    Ok(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")?)
}

#[tokio::test]
async fn parameters_of_every_type_in_binary_and_text() -> anyhow::Result<()> {
    let t = PgTest::start().await?;
    let client = t.client().await?;
    client.batch_execute(ALL_TYPES).await?;

    // Binary parameters and results (tokio-postgres always uses binary).
    let insert = client
        .prepare(
            "INSERT INTO all_types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .await?;
    let n = Decimal::new(-12_345_678, 3);
    let date = NaiveDate::from_ymd_opt(1999, 12, 31).ok_or_else(|| anyhow::anyhow!("date"))?;
    let stamp = ts("2024-02-29 13:45:00.25")?;
    let rows = client
        .execute(
            &insert,
            &[
                &1i32,
                &true,
                &-7i16,
                &42i32,
                &(1i64 << 40),
                &n,
                &0.5f32,
                &-1.25e10f64,
                &"abcd",
                &"varchar",
                &"text é",
                &date,
                &stamp,
            ],
        )
        .await?;
    assert_eq!(rows, 1);
    let row = client
        .query_one(
            "SELECT id, b, s, i, l, n, r, d, c, v, t, dt, ts FROM all_types WHERE id = $1",
            &[&1i32],
        )
        .await?;
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i16>(2), -7);
    assert_eq!(row.get::<_, i32>(3), 42);
    assert_eq!(row.get::<_, i64>(4), 1 << 40);
    assert_eq!(row.get::<_, Decimal>(5), n);
    assert_eq!(row.get::<_, f32>(6), 0.5);
    assert_eq!(row.get::<_, f64>(7), -1.25e10);
    assert_eq!(row.get::<_, String>(8), "abcd");
    assert_eq!(row.get::<_, String>(9), "varchar");
    assert_eq!(row.get::<_, String>(10), "text é");
    assert_eq!(row.get::<_, NaiveDate>(11), date);
    assert_eq!(row.get::<_, NaiveDateTime>(12), stamp);
    // NULLs in every column.
    client
        .execute(
            &insert,
            &[
                &2i32,
                &None::<bool>,
                &None::<i16>,
                &None::<i32>,
                &None::<i64>,
                &None::<Decimal>,
                &None::<f32>,
                &None::<f64>,
                &None::<&str>,
                &None::<&str>,
                &None::<&str>,
                &None::<NaiveDate>,
                &None::<NaiveDateTime>,
            ],
        )
        .await?;
    let row = client
        .query_one("SELECT b, n, ts FROM all_types WHERE id = 2", &[])
        .await?;
    assert_eq!(row.get::<_, Option<bool>>(0), None);
    assert_eq!(row.get::<_, Option<Decimal>>(1), None);

    // Text parameters with inferred types through the raw protocol, text results.
    let mut raw = Raw::startup(t.addr()).await?;
    raw.send(
        b'P',
        &parse(
            "ins",
            "INSERT INTO all_types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[],
        ),
    )
    .await?;
    let values: Vec<&[u8]> = vec![
        b"3",
        b"f",
        b"12",
        b"-5",
        b"9000000000",
        b"3.140",
        b"1.5",
        b"2.25",
        b"wxyz",
        b"v",
        b"t",
        b"2000-01-01",
        b"1970-01-01 00:00:01",
    ];
    let params: Vec<Option<&[u8]>> = values.iter().map(|v| Some(*v)).collect();
    raw.send(b'B', &bind("", "ins", 0, &params, 0)).await?;
    raw.send(b'E', &execute("", 0)).await?;
    raw.send(b'S', &[]).await?;
    let msgs = raw.until_ready().await?;
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "{:?}",
        msgs.iter()
            .filter_map(|m| m.field(b'M'))
            .collect::<Vec<_>>()
    );
    let msgs = raw
        .query("SELECT id, b, s, i, l, n, r, d, c, v, t, dt, ts FROM all_types WHERE id = 3")
        .await?;
    let row = msgs
        .iter()
        .find(|m| m.tag == b'D')
        .ok_or_else(|| anyhow::anyhow!("no row: {msgs:?}"))?
        .row();
    let expected: Vec<Option<String>> = [
        "3",
        "f",
        "12",
        "-5",
        "9000000000",
        "3.140",
        "1.5",
        "2.25",
        "wxyz",
        "v",
        "t",
        "2000-01-01",
        "1970-01-01 00:00:01",
    ]
    .iter()
    .map(|s| Some(s.to_string()))
    .collect();
    assert_eq!(row, expected);
    // A bad text parameter is a 22P02, and the connection goes on.
    raw.send(
        b'B',
        &bind(
            "",
            "ins",
            0,
            &[
                Some(b"x"),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
            ],
            0,
        ),
    )
    .await?;
    raw.send(b'S', &[]).await?;
    let msgs = raw.until_ready().await?;
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("22P02"));
    t.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn portals_hand_out_rows_in_chunks() -> anyhow::Result<()> {
    let t = PgTest::start().await?;
    let mut client = t.client().await?;
    client
        .batch_execute("CREATE TABLE nums (n integer PRIMARY KEY)")
        .await?;
    let insert = client.prepare("INSERT INTO nums VALUES ($1)").await?;
    for n in 0..10i32 {
        client.execute(&insert, &[&n]).await?;
    }
    let tx = client.transaction().await?;
    let portal = tx.bind("SELECT n FROM nums ORDER BY n", &[]).await?;
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    loop {
        let rows = tx.query_portal(&portal, 3).await?;
        sizes.push(rows.len());
        all.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
        if rows.is_empty() {
            break;
        }
    }
    assert_eq!(sizes, vec![3, 3, 3, 1, 0]);
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    // Two portals open at once.
    let a = tx
        .bind("SELECT n FROM nums WHERE n < $1 ORDER BY n", &[&5i32])
        .await?;
    let b = tx
        .bind("SELECT n FROM nums WHERE n >= $1 ORDER BY n", &[&5i32])
        .await?;
    assert_eq!(tx.query_portal(&a, 2).await?.len(), 2);
    assert_eq!(tx.query_portal(&b, 4).await?.len(), 4);
    assert_eq!(tx.query_portal(&a, 10).await?.len(), 3);
    assert_eq!(tx.query_portal(&b, 10).await?.len(), 1);
    tx.commit().await?;
    t.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn copy_from_stdin() -> anyhow::Result<()> {
    let t = PgTest::start().await?;
    let client = t.client().await?;
    client
        .batch_execute("CREATE TABLE people (id integer PRIMARY KEY, name text)")
        .await?;
    let sink = client.copy_in("COPY people (id, name) FROM STDIN").await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from_static(b"1\talice\n2\tbob\n"))
        .await?;
    sink.send(bytes::Bytes::from_static(b"3\t\\N\n")).await?;
    let copied = sink.as_mut().finish().await?;
    assert_eq!(copied, 3);
    let row = client.query_one("SELECT count(*) FROM people", &[]).await?;
    assert_eq!(row.get::<_, i64>(0), 3);
    // Simple-protocol COPY through the raw client, then a CopyFail.
    let mut raw = Raw::startup(t.addr()).await?;
    raw.send(b'Q', &pg::cstr("COPY people FROM STDIN")).await?;
    let first = raw.recv().await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
    assert_eq!(first.tag, b'G', "CopyInResponse");
    raw.send(b'd', b"4\tdave\n").await?;
    raw.send(b'c', &[]).await?;
    let msgs = raw.until_ready().await?;
    assert!(msgs.iter().any(|m| m.tag == b'C'), "{msgs:?}");
    raw.send(b'Q', &pg::cstr("COPY people FROM STDIN")).await?;
    let _ = raw.recv().await?;
    raw.send(b'd', b"5\teve\n").await?;
    raw.send(b'f', &pg::cstr("client gave up")).await?;
    let msgs = raw.until_ready().await?;
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("57014"));
    let row = client.query_one("SELECT count(*) FROM people", &[]).await?;
    assert_eq!(row.get::<_, i64>(0), 4);
    t.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn implicit_transactions_and_ready_for_query_status() -> anyhow::Result<()> {
    let t = PgTest::start().await?;
    let mut raw = Raw::startup(t.addr()).await?;
    let ok = |msgs: &[pg::Backend]| msgs.iter().all(|m| m.tag != b'E');
    let status = |msgs: &[pg::Backend]| msgs.last().map(|m| m.body[0]);
    let msgs = raw
        .query("CREATE TABLE kv (k integer PRIMARY KEY, v text)")
        .await?;
    assert!(ok(&msgs), "{msgs:?}");
    // A multi-statement simple query is one transaction: the duplicate undoes the first insert.
    let msgs = raw
        .query("INSERT INTO kv VALUES (1, 'a'); INSERT INTO kv VALUES (1, 'b')")
        .await?;
    assert_eq!(
        msgs.iter().find_map(|m| m.sqlstate()).as_deref(),
        Some("23505")
    );
    assert_eq!(status(&msgs), Some(b'I'));
    let msgs = raw.query("SELECT count(*) FROM kv").await?;
    assert_eq!(
        msgs.iter().find(|m| m.tag == b'D').map(|m| m.row()),
        Some(vec![Some("0".into())])
    );
    // Extended protocol: statements between Syncs form one transaction.
    raw.send(b'P', &parse("", "INSERT INTO kv VALUES (2, 'x')", &[]))
        .await?;
    raw.send(b'B', &bind("", "", 0, &[], 0)).await?;
    raw.send(b'E', &execute("", 0)).await?;
    raw.send(b'P', &parse("", "INSERT INTO kv VALUES (2, 'y')", &[]))
        .await?;
    raw.send(b'B', &bind("", "", 0, &[], 0)).await?;
    raw.send(b'E', &execute("", 0)).await?;
    raw.send(b'S', &[]).await?;
    let msgs = raw.until_ready().await?;
    assert_eq!(
        msgs.iter().find_map(|m| m.sqlstate()).as_deref(),
        Some("23505")
    );
    assert_eq!(status(&msgs), Some(b'I'));
    let msgs = raw.query("SELECT count(*) FROM kv").await?;
    assert_eq!(
        msgs.iter().find(|m| m.tag == b'D').map(|m| m.row()),
        Some(vec![Some("0".into())])
    );
    // Transaction blocks: T, then E after an error, then I after ROLLBACK.
    let msgs = raw.query("BEGIN").await?;
    assert_eq!(status(&msgs), Some(b'T'));
    let msgs = raw.query("INSERT INTO kv VALUES (3, 'z')").await?;
    assert_eq!(status(&msgs), Some(b'T'));
    let msgs = raw.query("SELECT * FROM no_such_table").await?;
    assert_eq!(
        msgs.iter().find_map(|m| m.sqlstate()).as_deref(),
        Some("42P01")
    );
    assert_eq!(status(&msgs), Some(b'E'));
    let msgs = raw.query("SELECT 1").await?;
    assert_eq!(
        msgs.iter().find_map(|m| m.sqlstate()).as_deref(),
        Some("25P02")
    );
    let msgs = raw.query("ROLLBACK").await?;
    assert_eq!(status(&msgs), Some(b'I'));
    let msgs = raw.query("SELECT count(*) FROM kv").await?;
    assert_eq!(
        msgs.iter().find(|m| m.tag == b'D').map(|m| m.row()),
        Some(vec![Some("0".into())])
    );
    t.shutdown().await;
    Ok(())
}
