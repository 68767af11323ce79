//! A scripted psql session: the catalog queries behind `\d`, `\dt` and `\di` are what a
//! new user types first, and psql sends them unchanged, so they test pg_catalog as psql
//! really uses it. CI installs Debian's postgresql-client (see .ci/run); without psql on
//! the PATH the test says so and passes.

mod common;
#[path = "common/pg.rs"]
mod pg;

use pg::PgTest;

/// Runs psql with `commands` (one `-c` each) and returns (success, stdout, stderr).
async fn psql(port: u16, commands: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        pg::USER,
        "-d",
        "shmdb",
    ])
    .args(["-X", "-v", "ON_ERROR_STOP=1", "--no-password"])
    .env("PGCONNECT_TIMEOUT", "10")
    .env("PAGER", "cat");
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output()).await??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_session_creates_inserts_and_selects() -> anyhow::Result<()> {
    if std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("psql is not installed (apt-get install postgresql-client); skipping");
        return Ok(());
    }
    let t = PgTest::start().await?;
    let port = t.addr().port();
    let (ok, out, err) = psql(
        port,
        &[
            "CREATE TABLE accounts (id integer PRIMARY KEY, owner varchar(40) NOT NULL, balance numeric(12,2))",
            "CREATE INDEX accounts_owner ON accounts (owner)",
            "INSERT INTO accounts VALUES (1, 'alice', 10.50)",
            "SELECT owner, balance FROM accounts",
        ],
    )
    .await?;
    assert!(ok, "psql failed:\n{out}\n{err}");
    assert!(out.contains("alice") && out.contains("10.50"), "{out}");
    t.shutdown().await;
    Ok(())
}

/// The lines of psql's unaligned output (`-A`), for exact comparison.
fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_backslash_d_commands() -> anyhow::Result<()> {
    if std::process::Command::new("psql")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("psql is not installed (apt-get install postgresql-client); skipping");
        return Ok(());
    }
    let t = PgTest::start().await?;
    let port = t.addr().port();
    let (ok, out, err) = psql(
        port,
        &[
            "CREATE TABLE accounts (id integer PRIMARY KEY, owner varchar(40) NOT NULL, balance numeric(12,2) DEFAULT 0, code char(3), UNIQUE (code))",
            "CREATE INDEX accounts_owner ON accounts (owner)",
            "CREATE TABLE lines (o_id int, n int, qty smallint NOT NULL, PRIMARY KEY (o_id, n))",
        ],
    )
    .await?;
    assert!(ok, "psql failed:\n{out}\n{err}");
    let d = |cmd: &'static str| {
        let cmd = cmd.to_string();
        async move {
            let (ok, out, err) = psql(port, &["\\pset format unaligned", &cmd]).await?;
            assert!(ok, "{cmd} failed:\n{out}\n{err}");
            anyhow::Ok(out)
        }
    };

    let out = d("\\dt").await?;
    assert_eq!(
        lines(&out)[1..],
        [
            "List of relations",
            "Schema|Name|Type|Owner",
            "public|accounts|table|shmdb",
            "public|lines|table|shmdb",
            "(2 rows)",
        ],
        "\\dt:\n{out}"
    );
    let out = d("\\di").await?;
    assert_eq!(
        lines(&out)[1..],
        [
            "List of relations",
            "Schema|Name|Type|Owner|Table",
            "public|accounts_code_key|index|shmdb|accounts",
            "public|accounts_owner|index|shmdb|accounts",
            "public|accounts_pkey|index|shmdb|accounts",
            "public|lines_pkey|index|shmdb|lines",
            "(4 rows)",
        ],
        "\\di:\n{out}"
    );
    let out = d("\\d").await?;
    assert!(
        out.contains("public|accounts|table|shmdb") && out.contains("public|lines|table|shmdb"),
        "\\d:\n{out}"
    );
    // Types with their modifiers, NOT NULL, the default, and the index footer.
    let out = d("\\d accounts").await?;
    assert_eq!(
        lines(&out)[1..],
        [
            "Table \"public.accounts\"",
            "Column|Type|Collation|Nullable|Default",
            "id|integer||not null|",
            "owner|character varying(40)||not null|",
            "balance|numeric(12,2)|||0",
            "code|character(3)|||",
            "Indexes:",
            "    \"accounts_pkey\" PRIMARY KEY, btree (id)",
            "    \"accounts_code_key\" UNIQUE, btree (code)",
            "    \"accounts_owner\" btree (owner)",
        ],
        "\\d accounts:\n{out}"
    );
    let out = d("\\d lines").await?;
    assert_eq!(
        lines(&out)[1..],
        [
            "Table \"public.lines\"",
            "Column|Type|Collation|Nullable|Default",
            "o_id|integer||not null|",
            "n|integer||not null|",
            "qty|smallint||not null|",
            "Indexes:",
            "    \"lines_pkey\" PRIMARY KEY, btree (o_id, n)",
        ],
        "\\d lines:\n{out}"
    );
    let out = d("\\d accounts_owner").await?;
    assert_eq!(
        lines(&out)[1..],
        [
            "Index \"public.accounts_owner\"",
            "Column|Type|Key?|Definition",
            "owner|character varying(40)|yes|owner",
            "btree, for table \"public.accounts\"",
        ],
        "\\d accounts_owner:\n{out}"
    );
    let out = d("\\d lines_pkey").await?;
    assert_eq!(
        lines(&out)[1..],
        [
            "Index \"public.lines_pkey\"",
            "Column|Type|Key?|Definition",
            "o_id|integer|yes|o_id",
            "n|integer|yes|n",
            "primary key, btree, for table \"public.lines\"",
        ],
        "\\d lines_pkey:\n{out}"
    );
    let out = d("\\d accounts_code_key").await?;
    assert!(
        out.contains("unique, btree, for table \"public.accounts\""),
        "\\d accounts_code_key:\n{out}"
    );
    let out = d("\\l").await?;
    assert!(out.contains("shmdb|shmdb|UTF8|C|C||libc|"), "\\l:\n{out}");
    // A name that matches nothing: psql says so (and exits non-zero).
    let (ok, out, err) = psql(port, &["\\d nosuch"]).await?;
    assert!(
        !ok && err.contains("Did not find any relation named \"nosuch\""),
        "\\d nosuch:\n{out}\n{err}"
    );
    t.shutdown().await;
    Ok(())
}
