//! Runs every `tests/slt/*.slt` file (sqllogictest format) over the wire: each file gets a
//! fresh database and a tokio-postgres connection using the simple query protocol, so the
//! results are PostgreSQL's text formats as psql would show them.
//!
//! Expected errors can name the SQLSTATE (`statement error (42P01)`) or match the message
//! with a regex; the error text is `<SQLSTATE>: <message>` so either works.
//! `SHMDB_SLT=name` runs only files whose name contains `name`.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use pg::PgTest;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::SimpleQueryMessage;

/// A statement's failure as the runner sees it.
#[derive(Debug)]
struct SltError {
    sqlstate: Option<String>,
    text: String,
}

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for SltError {}

impl From<tokio_postgres::Error> for SltError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => SltError {
                sqlstate: Some(db.code().code().to_owned()),
                text: format!("{}: {}", db.code().code(), db.message()),
            },
            None => SltError {
                sqlstate: None,
                text: e.to_string(),
            },
        }
    }
}

struct WireDb {
    client: tokio_postgres::Client,
}

#[async_trait]
impl AsyncDB for WireDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let messages = self.client.simple_query(sql).await?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut count = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(desc) => columns = Some(desc.len()),
                SimpleQueryMessage::Row(row) => {
                    columns = Some(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_owned(),
                                Some("") => "(empty)".to_owned(),
                                Some(v) => v.to_owned(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "shmdb"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &SltError) -> Option<String> {
        err.sqlstate.clone()
    }
}

fn slt_files() -> anyhow::Result<Vec<PathBuf>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let filter = std::env::var("SHMDB_SLT").unwrap_or_default();
    let mut files = Vec::new();
    if dir.is_dir() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if name.ends_with(".slt") && name.contains(&filter) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files_over_the_wire() -> anyhow::Result<()> {
    let files = slt_files()?;
    if files.is_empty() {
        eprintln!("no tests/slt/*.slt files");
        return Ok(());
    }
    let mut failures = Vec::new();
    for file in &files {
        let t = PgTest::start().await?;
        let client = t.client().await?;
        let db = std::sync::Arc::new(tokio::sync::Mutex::new(Some(WireDb { client })));
        let mut runner = sqllogictest::Runner::new(move || {
            let db = db.clone();
            async move {
                match db.lock().await.take() {
                    Some(conn) => Ok(conn),
                    None => Err(SltError {
                        sqlstate: None,
                        text: "one connection per file".into(),
                    }),
                }
            }
        });
        runner.add_label("shmdb");
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}:\n{e}", file.display()));
        }
        t.shutdown().await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
    Ok(())
}
