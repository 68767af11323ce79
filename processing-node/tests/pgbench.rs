//! pgbench's own TPC-B-like workload against `shmdb up`'s database (3 storage nodes, RF 2):
//! `pgbench -i -s 1` (client-side data generation: COPY, then ALTER TABLE ADD PRIMARY KEY),
//! then 4 clients for 20 s with up to 10 tries per transaction. pgbench must end cleanly
//! (it retries and counts only serialization failures, 40001; any other error ends a client
//! and the run with a non-zero status), and the TPC-B invariant must hold afterwards: every
//! committed transaction moved the same delta into one account, teller and branch and
//! logged one history row.
//!
//! The share of transactions that succeed within 10 tries must be at least 99 %. At scale 1
//! every transaction updates the one branch row; pgbench runs at READ COMMITTED, where each
//! statement reads a newer snapshot, an UPDATE of a row committed since is applied to its
//! newest version, an UPDATE of a row whose newest version is still being committed waits
//! for it, and an UPDATE whose outcome depends only on its row is re-applied at commit onto
//! a version committed after it ran — as PostgreSQL's writer, queued on the row lock, would
//! have applied it (tests/read_committed.rs). Without that re-apply 98.2–98.4 % succeeded at
//! 510–610 tps; under REPEATABLE READ about 78 %.
//!
//! Ignored by default (a release build is needed for a meaningful load): `.ci/run` runs
//! `cargo test --release -p shmdb-processing-node --test pgbench -- --ignored --nocapture`. Needs pgbench
//! (Debian: postgresql-client); without it the test says so and passes.

use std::process::Output;

use shmdb::cluster::ClusterOptions;
use shmdb::database::{LocalDatabase, SqlOptions};

async fn pgbench(port: u16, args: &[&str]) -> anyhow::Result<Output> {
    let port = port.to_string();
    let mut command = tokio::process::Command::new("pgbench");
    command
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "shmdb"])
        .args(args)
        .arg("shmdb")
        .env("PGCONNECT_TIMEOUT", "10");
    let out = tokio::time::timeout(std::time::Duration::from_secs(600), command.output()).await??;
    eprintln!(
        "pgbench {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// The number after `label` on the line that starts with it (`label: 123 ...`).
fn number(report: &str, label: &str) -> Option<u64> {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 20 s load test: run in release from .ci/run"]
async fn pgbench_tpcb_like_run_succeeds() -> anyhow::Result<()> {
    if std::process::Command::new("pgbench")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: pgbench is not installed (apt-get install postgresql-client)");
        return Ok(());
    }
    let db =
        LocalDatabase::start(&ClusterOptions::ephemeral(3, 2), &SqlOptions::ephemeral()).await?;
    let port = db.pg_addrs()[0].port();

    let init = pgbench(port, &["-i", "-s", "1"]).await?;
    anyhow::ensure!(init.status.success(), "pgbench -i failed");

    let run = pgbench(
        port,
        &["-n", "-c", "4", "-j", "2", "-T", "20", "--max-tries", "10"],
    )
    .await?;
    let report = String::from_utf8_lossy(&run.stdout).into_owned();
    anyhow::ensure!(
        run.status.success(),
        "a pgbench client ended on an error other than a serialization failure"
    );
    let processed = number(&report, "number of transactions actually processed")
        .ok_or_else(|| anyhow::anyhow!("no transaction count in the report"))?;
    let failed = number(&report, "number of failed transactions").unwrap_or(0);
    let total = processed + failed;
    anyhow::ensure!(total > 0, "no transaction ran");
    let success = processed as f64 / total as f64;
    eprintln!(
        "pgbench: {processed} committed, {failed} failed after 10 tries ({:.3} % success)",
        success * 100.0
    );
    anyhow::ensure!(
        success >= 0.99,
        "only {:.3} % of transactions succeeded within 10 tries",
        success * 100.0
    );

    // The TPC-B invariant: every committed transaction changed one account, teller and
    // branch by the same delta and added one history row.
    let url = format!("host=127.0.0.1 port={port} user=shmdb dbname=shmdb");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let sums = client
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts), \
                    (SELECT sum(tbalance) FROM pgbench_tellers), \
                    (SELECT sum(bbalance) FROM pgbench_branches), \
                    (SELECT coalesce(sum(delta), 0) FROM pgbench_history), \
                    (SELECT count(*) FROM pgbench_history)",
            &[],
        )
        .await?;
    let (accounts, tellers, branches, history): (i64, i64, i64, i64) =
        (sums.get(0), sums.get(1), sums.get(2), sums.get(3));
    let rows: i64 = sums.get(4);
    assert_eq!((accounts, tellers, branches), (history, history, history));
    assert_eq!(
        rows as u64, processed,
        "one history row per committed transaction"
    );
    drop(client);
    db.shutdown().await;
    Ok(())
}
