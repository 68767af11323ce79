//! Runs the sqllogictest files in `tests/slt/` directly against `Session` (the wire layer
//! runs the same files over the network with the sqllogictest crate). Supported records:
//! `statement ok`, `statement error <SQLSTATE or message regex>`, `statement count <n>`,
//! `query <types> [rowsort]` with `----` results; `#` comments; `halt`.
//!
//! Values print as PostgreSQL's text format; NULL prints as `NULL`, the empty string as
//! `(empty)`; columns are separated by one space.

mod common;
mod sql;

use shmdb_processing_node::sql::value::to_text;
use shmdb_processing_node::sql::{QueryOutput, Session};

fn render(out: &QueryOutput) -> Vec<String> {
    match out {
        QueryOutput::Rows { columns, rows, .. } => rows
            .iter()
            .map(|r| {
                r.iter()
                    .zip(columns)
                    .map(|(d, c)| match to_text(d, c.pg_type) {
                        None => "NULL".to_string(),
                        Some(s) if s.is_empty() => "(empty)".to_string(),
                        Some(s) => s,
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn affected(out: &QueryOutput) -> Option<u64> {
    let tag = match out {
        QueryOutput::Command { tag } | QueryOutput::Rows { tag, .. } => tag,
        QueryOutput::Empty => return None,
    };
    tag.rsplit(' ').next().and_then(|n| n.parse().ok())
}

async fn run_file(s: &mut Session, name: &str, text: &str) -> anyhow::Result<()> {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "halt" {
            break;
        }
        let header: Vec<&str> = line.split_whitespace().collect();
        let start = i;
        let mut sql = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].trim() != "----" {
            sql.push(lines[i]);
            i += 1;
        }
        let sql = sql.join("\n");
        let mut expected = Vec::new();
        if i < lines.len() && lines[i].trim() == "----" {
            i += 1;
            while i < lines.len() && !lines[i].trim().is_empty() {
                expected.push(lines[i].trim_end().to_string());
                i += 1;
            }
        }
        let mut results = s.simple_query(&sql).await;
        let last = results.pop().ok_or_else(|| anyhow::anyhow!("no result"))?;
        let at = format!("{name}:{start}: {sql}");
        match header.as_slice() {
            ["statement", "ok"] => {
                if let Err(e) = last {
                    anyhow::bail!("{at}: {} {}", e.code, e.message);
                }
            }
            ["statement", "count", n] => match last {
                Ok(out) => anyhow::ensure!(
                    affected(&out) == n.parse().ok(),
                    "{at}: count {:?}",
                    affected(&out)
                ),
                Err(e) => anyhow::bail!("{at}: {} {}", e.code, e.message),
            },
            ["statement", "error", pattern @ ..] => match last {
                Ok(_) => anyhow::bail!("{at}: expected an error"),
                Err(e) => {
                    let p = pattern.join(" ");
                    anyhow::ensure!(
                        p.is_empty() || e.code == p || e.message.contains(&p),
                        "{at}: got {} {}",
                        e.code,
                        e.message
                    );
                }
            },
            ["query", "error", pattern @ ..] => match last {
                Ok(_) => anyhow::bail!("{at}: expected an error"),
                Err(e) => {
                    let p = pattern.join(" ");
                    anyhow::ensure!(
                        e.code == p || e.message.contains(&p),
                        "{at}: got {} {}",
                        e.code,
                        e.message
                    );
                }
            },
            ["query", _types, rest @ ..] => {
                let out = last.map_err(|e| anyhow::anyhow!("{at}: {} {}", e.code, e.message))?;
                let mut got = render(&out);
                if rest.contains(&"rowsort") {
                    got.sort();
                    expected.sort();
                }
                anyhow::ensure!(got == expected, "{at}:\n got {got:?}\nwant {expected:?}");
            }
            other => anyhow::bail!("{name}:{start}: unknown record {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files() -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no .slt files");
    for f in files {
        // A fresh cluster per file, as the wire runner gives each file a fresh database.
        let (_cluster, engines) = sql::start(1).await?;
        let mut s = engines[0].session();
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        run_file(&mut s, &name, &std::fs::read_to_string(&f)?).await?;
    }
    Ok(())
}
