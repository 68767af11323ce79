//! JDBC: the PostgreSQL driver's DatabaseMetaData (getTables, getColumns, getPrimaryKeys,
//! getIndexInfo) and a prepared-statement round trip, against a database started here.
//!
//! The checks live in a small Maven project (`tests/jdbc`, pgjdbc from Maven Central,
//! cached in `~/.m2` after the first run) whose program prints one line per check and
//! exits non-zero on the first mismatch. Without `mvn` and `java` on the PATH the test says
//! SKIPPED and passes (CI installs them: see .ci/run).

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::path::PathBuf;
use std::time::Duration;

use pg::PgTest;

/// Whether a tool answers `--version`.
fn installed(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_database_metadata_and_prepared_statements() -> anyhow::Result<()> {
    if !installed("mvn") || !installed("java") {
        eprintln!(
            "SKIPPED: mvn or java is not installed (apt-get install maven openjdk-17-jdk-headless)"
        );
        return Ok(());
    }
    let t = PgTest::start().await?;
    let port = t.addr().port();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/jdbc");
    let run = tokio::process::Command::new("mvn")
        .current_dir(&dir)
        .args(["-B", "-q", "compile", "exec:java"])
        .arg(format!("-Dexec.args={port}"))
        .kill_on_drop(true)
        .output();
    // The first run downloads pgjdbc and the Maven plugins; later runs use ~/.m2.
    let out = tokio::time::timeout(Duration::from_secs(300), run).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    t.shutdown().await;
    assert!(
        out.status.success(),
        "the JDBC checks failed:\n{stdout}\n{stderr}"
    );
    for check in [
        "ok getTables",
        "ok getColumns(order_line)",
        "ok getPrimaryKeys(order_line)",
        "ok getIndexInfo(order_line)",
        "ok getIndexInfo(item, unique only)",
        "ok prepared select, round 1",
        "ok duplicate unique value SQLSTATE = 23505",
        "all 13 checks passed",
    ] {
        assert!(
            stdout.contains(check),
            "missing `{check}`:\n{stdout}\n{stderr}"
        );
    }
    Ok(())
}
