//! `shmdb up --processes`: every component a supervised child process. A SIGKILLed
//! processing node is replaced at the same address (its transactions recovered by the commit
//! manager), a SIGKILLed commit manager is restarted under its id, and SQL goes on with no
//! acknowledged row lost.

use std::time::Duration;

use shmdb::cluster::ClusterOptions;
use shmdb::database::{CommitProcess, LocalDatabase, ProcessingProcess, SqlOptions};
use tokio_postgres::{Client, NoTls};

async fn connect(addr: std::net::SocketAddr) -> Option<Client> {
    let url = format!(
        "host={} port={} user=shmdb dbname=shmdb connect_timeout=2",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.ok()?;
    tokio::spawn(connection);
    Some(client)
}

/// Waits until a new connection can insert row `id` (and returns the client); fails after
/// `timeout`. Inserts are retried only before they are acknowledged.
async fn insert_when_ready(
    addr: std::net::SocketAddr,
    id: i32,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<Client> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(client) = connect(addr).await {
            match client
                .execute("INSERT INTO t VALUES ($1, 'after')", &[&id])
                .await
            {
                Ok(1) => return Ok(client),
                // A duplicate means an earlier, unacknowledged attempt did land.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    return Ok(client);
                }
                _ => {}
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ids(client: &Client) -> anyhow::Result<Vec<i32>> {
    Ok(client
        .query("SELECT id FROM t ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_children_are_replaced_and_sql_goes_on() -> anyhow::Result<()> {
    let mut cluster = ClusterOptions::ephemeral(3, 2);
    cluster.processes = true;
    let db = LocalDatabase::start(&cluster, &SqlOptions::ephemeral()).await?;
    let addr = db.pg_addrs()[0];
    let client = connect(addr)
        .await
        .ok_or_else(|| anyhow::anyhow!("cannot connect to {addr}"))?;
    client
        .batch_execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
        .await?;
    for id in 1..=20 {
        client
            .execute("INSERT INTO t VALUES ($1, 'before')", &[&id])
            .await?;
    }
    drop(client);

    // The processing node dies; the supervisor starts another at the same address.
    {
        let mut nodes = db.processing.lock();
        let Some(ProcessingProcess::Child { child, .. }) = nodes.first_mut() else {
            anyhow::bail!("expected a processing-node child");
        };
        child.start_kill()?;
    }
    let client = insert_when_ready(
        addr,
        21,
        "a replacement processing node",
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(ids(&client).await?, (1..=21).collect::<Vec<_>>());
    drop(client);

    // The commit manager dies; the supervisor restarts it under its id and the node's
    // commit client finds it again.
    {
        let mut commit = db.commit.lock();
        let Some(CommitProcess::Child { child, .. }) = commit.as_mut() else {
            anyhow::bail!("expected a commit-manager child");
        };
        child.start_kill()?;
    }
    let client = insert_when_ready(
        addr,
        22,
        "the restarted commit manager",
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(ids(&client).await?, (1..=22).collect::<Vec<_>>());
    drop(client);
    db.shutdown().await;
    Ok(())
}
