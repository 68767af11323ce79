//! `shmdb up`'s whole database in-process: storage, commit manager and a processing node,
//! reached the way a user reaches it — a PostgreSQL driver on the printed port.

use shmdb::cluster::ClusterOptions;
use shmdb::database::{LocalDatabase, SqlOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_sql_over_the_postgres_protocol() -> anyhow::Result<()> {
    let db =
        LocalDatabase::start(&ClusterOptions::ephemeral(3, 2), &SqlOptions::ephemeral()).await?;
    let addr = db.pg_addrs()[0];
    let url = format!(
        "host={} port={} user=shmdb dbname=shmdb",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE t (id integer PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .await?;
    let rows = client.query("SELECT v FROM t ORDER BY id", &[]).await?;
    let values: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, ["one", "two"]);
    drop(client);
    db.shutdown().await;
    Ok(())
}
