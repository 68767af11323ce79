//! Helpers for the SQL tests: a cluster with SQL engines, and terse query helpers.

#![allow(dead_code)]

use std::sync::Arc;

use shmdb_processing_node::Datum;
use shmdb_processing_node::sql::value::to_text;
use shmdb_processing_node::sql::{QueryOutput, Session, SqlEngine, SqlError};

use crate::common::Cluster;

/// A cluster and `n` SQL engines (one per processing node).
pub async fn start(n: u64) -> anyhow::Result<(Cluster, Vec<Arc<SqlEngine>>)> {
    let cluster = Cluster::start(1, 1).await?;
    let mut engines = Vec::new();
    for i in 1..=n {
        engines.push(SqlEngine::new(cluster.engine(i)?));
    }
    Ok((cluster, engines))
}

/// Runs a simple query and fails on any error; returns the last output.
pub async fn exec(s: &mut Session, sql: &str) -> anyhow::Result<QueryOutput> {
    let mut out = s.simple_query(sql).await;
    let last = out.pop().ok_or_else(|| anyhow::anyhow!("no output"))?;
    for r in out {
        if let Err(e) = r {
            anyhow::bail!("{sql}: {} {}", e.code, e.message);
        }
    }
    last.map_err(|e| anyhow::anyhow!("{sql}: {} {}", e.code, e.message))
}

/// The tag of a command.
pub async fn tag(s: &mut Session, sql: &str) -> anyhow::Result<String> {
    Ok(match exec(s, sql).await? {
        QueryOutput::Command { tag } | QueryOutput::Rows { tag, .. } => tag,
        QueryOutput::Empty => String::new(),
    })
}

/// Rows as text (NULL as "NULL"), each row joined with '|'.
pub fn text_rows(out: &QueryOutput) -> Vec<String> {
    match out {
        QueryOutput::Rows { columns, rows, .. } => rows
            .iter()
            .map(|r| {
                r.iter()
                    .zip(columns)
                    .map(|(d, c)| to_text(d, c.pg_type).unwrap_or_else(|| "NULL".into()))
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Runs a query and returns its rows as text.
pub async fn rows(s: &mut Session, sql: &str) -> anyhow::Result<Vec<String>> {
    Ok(text_rows(&exec(s, sql).await?))
}

/// Runs a statement that must fail; returns the SQLSTATE.
pub async fn err(s: &mut Session, sql: &str) -> anyhow::Result<&'static str> {
    let out = s.simple_query(sql).await;
    for r in out {
        if let Err(SqlError { code, .. }) = r {
            return Ok(code);
        }
    }
    anyhow::bail!("{sql}: expected an error")
}

/// A prepared statement executed with params and synced; rows as text.
pub async fn prep(s: &mut Session, sql: &str, params: &[Datum]) -> anyhow::Result<QueryOutput> {
    let p = s
        .prepare(sql, &[])
        .await
        .map_err(|e| anyhow::anyhow!("{sql}: {} {}", e.code, e.message))?;
    let out = s
        .execute(&p, params, 0)
        .await
        .map_err(|e| anyhow::anyhow!("{sql}: {} {}", e.code, e.message));
    if out.is_err() {
        let _ = s.sync().await;
        return out;
    }
    s.sync()
        .await
        .map_err(|e| anyhow::anyhow!("{sql}: sync {} {}", e.code, e.message))?;
    out
}
