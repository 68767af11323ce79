//! Scan filters applied by the storage nodes: a `column = constant` condition on an integer
//! or text column travels with the scan, and records that cannot match stay on the node.
//! What a query returns must not change: not for rows this transaction wrote or deleted,
//! not for rows changed since its snapshot, not for `char(n)` (blank-padded) comparisons,
//! and not for rows shorter than the table after ADD COLUMN.

mod common;
mod sql;

use common::Cluster;
use shmdb::cluster::StorageProcess;
use shmdb_processing_node::Datum;
use sql::*;

/// Records filtered scans examined and left on the nodes, summed over the cluster.
fn filtered_out(cluster: &Cluster) -> u64 {
    cluster
        .storage
        .nodes
        .lock()
        .iter()
        .map(|n| match n {
            StorageProcess::InProcess(running) => running.node.metrics().scan_filtered_out.get(),
            StorageProcess::Child { .. } => 0,
        })
        .sum()
}

async fn customers(s: &mut shmdb_processing_node::sql::Session) -> anyhow::Result<()> {
    exec(
        s,
        "CREATE TABLE customer (w int, d int, id int, last varchar(16), first varchar(16), \
         code char(4), balance numeric(12, 2), PRIMARY KEY (w, d, id))",
    )
    .await?;
    let mut values = Vec::new();
    for id in 1..=300 {
        let last = ["ABLE", "BAR", "OUGHT"][id % 3];
        values.push(format!(
            "(1, {}, {id}, '{last}{}', 'F{id:03}', 'c{}', {id}.50)",
            id % 2,
            id % 10,
            id % 4
        ));
    }
    exec(
        s,
        &format!("INSERT INTO customer VALUES {}", values.join(", ")),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equality_on_text_and_integers_is_filtered_on_the_nodes() -> anyhow::Result<()> {
    let (cluster, engines) = start(1).await?;
    let mut s = engines[0].session();
    customers(&mut s).await?;

    // 300 rows; last = 'BAR7' holds for ids ≡ 7 (mod 30), all odd (d = 1): 10 of d's 150.
    let before = filtered_out(&cluster);
    let by_name = rows(
        &mut s,
        "SELECT id FROM customer WHERE w = 1 AND d = 1 AND last = 'BAR7' ORDER BY first",
    )
    .await?;
    assert_eq!(
        by_name,
        [
            "7", "37", "67", "97", "127", "157", "187", "217", "247", "277"
        ]
    );
    let after_text = filtered_out(&cluster);
    assert!(
        after_text >= before + 140,
        "the prefix holds 150 rows and 10 match, so at least 140 stay on the node: {}",
        after_text - before
    );

    // A prepared statement: the parameter's value is what travels.
    let out = prep(
        &mut s,
        "SELECT count(*) FROM customer WHERE w = $1 AND d = $2 AND last = $3",
        &[Datum::Int(1), Datum::Int(0), Datum::Text("OUGHT2".into())],
    )
    .await?;
    // ids ≡ 2 (mod 30), all even (d = 0).
    assert_eq!(text_rows(&out), ["10"]);
    // An integer column outside the key, on a full scan.
    assert_eq!(
        rows(&mut s, "SELECT last FROM customer WHERE id = 150 AND 2 = 2").await?,
        ["ABLE0"]
    );
    assert!(filtered_out(&cluster) > after_text);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_match_the_unfiltered_meaning() -> anyhow::Result<()> {
    let (cluster, engines) = start(1).await?;
    let (mut s, mut other) = (engines[0].session(), engines[0].session());
    customers(&mut s).await?;

    // char(n) ignores trailing blanks: 'c1' = 'c1  ' must still find the rows.
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM customer WHERE code = 'c1  '").await?,
        ["75"]
    );
    // numeric is not compared as bytes: 12.5 = 12.50.
    assert_eq!(
        rows(&mut s, "SELECT id FROM customer WHERE balance = 12.5").await?,
        ["12"]
    );

    // Own writes: a row renamed into the filter, one renamed out of it, one deleted, one
    // inserted, all unseen by the store until COMMIT.
    exec(&mut s, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    exec(
        &mut s,
        "UPDATE customer SET last = 'ZED' WHERE w = 1 AND d = 0 AND id = 2",
    )
    .await?;
    exec(
        &mut s,
        "UPDATE customer SET last = 'OTHER' WHERE w = 1 AND d = 0 AND id = 32",
    )
    .await?;
    exec(
        &mut s,
        "DELETE FROM customer WHERE w = 1 AND d = 0 AND id = 62",
    )
    .await?;
    exec(
        &mut s,
        "INSERT INTO customer VALUES (1, 0, 1000, 'ZED', 'A', 'c0', 0)",
    )
    .await?;
    // Another transaction commits a matching row after this snapshot: not visible.
    exec(
        &mut other,
        "INSERT INTO customer VALUES (1, 0, 2000, 'ZED', 'B', 'c0', 0)",
    )
    .await?;
    let before = filtered_out(&cluster);
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM customer WHERE w = 1 AND d = 0 AND last = 'ZED' ORDER BY id"
        )
        .await?,
        ["2", "1000"]
    );
    assert!(
        filtered_out(&cluster) > before,
        "the scan went out filtered"
    );
    // ids 2, 32, 62, 92, … had last = 'OUGHT2' (id % 3 == 2, id % 10 == 2, d = 0).
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM customer WHERE w = 1 AND d = 0 AND last = 'OUGHT2' ORDER BY id LIMIT 3"
        )
        .await?,
        ["92", "122", "152"]
    );
    exec(&mut s, "COMMIT").await?;
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM customer WHERE w = 1 AND d = 0 AND last = 'ZED' ORDER BY id"
        )
        .await?,
        ["2", "1000", "2000"]
    );

    // A row shorter than the table (ADD COLUMN without default): the new column reads NULL.
    exec(&mut s, "ALTER TABLE customer ADD COLUMN note text").await?;
    exec(
        &mut s,
        "INSERT INTO customer VALUES (2, 0, 1, 'NEW', 'N', 'c0', 0, 'x')",
    )
    .await?;
    assert_eq!(
        rows(&mut s, "SELECT id FROM customer WHERE note = 'x'").await?,
        ["1"]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*) FROM customer WHERE note IS NULL").await?,
        ["301"],
        "300 loaded, one deleted, two inserted"
    );
    Ok(())
}
