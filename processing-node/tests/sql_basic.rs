//! The SQL engine through `Session`: DDL, DML, queries, errors, transactions.

mod common;
mod sql;

use sql::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_insert_select() -> anyhow::Result<()> {
    let (_cluster, engines) = start(1).await?;
    let mut s = engines[0].session();
    assert_eq!(
        tag(
            &mut s,
            "CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL, score numeric(6,2) DEFAULT 0)"
        )
        .await?,
        "CREATE TABLE"
    );
    assert_eq!(
        tag(
            &mut s,
            "INSERT INTO t VALUES (1, 'a', 1.5), (2, 'b', 2.25), (3, 'c', NULL)"
        )
        .await?,
        "INSERT 0 3"
    );
    assert_eq!(
        tag(&mut s, "INSERT INTO t (id, name) VALUES (4, 'd')").await?,
        "INSERT 0 1"
    );
    assert_eq!(
        rows(&mut s, "SELECT id, name, score FROM t ORDER BY id").await?,
        vec!["1|a|1.50", "2|b|2.25", "3|c|NULL", "4|d|0.00"]
    );
    assert_eq!(
        rows(&mut s, "SELECT name FROM t WHERE id = 2").await?,
        vec!["b"]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*), sum(score), max(name) FROM t").await?,
        vec!["4|3.75|d"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM t WHERE id BETWEEN 2 AND 3 ORDER BY id DESC"
        )
        .await?,
        vec!["3", "2"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT id FROM t WHERE name IN ('a', 'd') ORDER BY 1"
        )
        .await?,
        vec!["1", "4"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT upper(name) || '!' FROM t WHERE name LIKE 'c%'"
        )
        .await?,
        vec!["C!"]
    );
    assert_eq!(
        tag(&mut s, "UPDATE t SET score = score + 1 WHERE id <= 2").await?,
        "UPDATE 2"
    );
    assert_eq!(
        rows(&mut s, "SELECT score FROM t WHERE id = 1").await?,
        vec!["2.50"]
    );
    assert_eq!(
        tag(&mut s, "DELETE FROM t WHERE score IS NULL").await?,
        "DELETE 1"
    );
    assert_eq!(rows(&mut s, "SELECT count(*) FROM t").await?, vec!["3"]);
    assert_eq!(
        err(&mut s, "INSERT INTO t VALUES (1, 'x', 0)").await?,
        "23505"
    );
    assert_eq!(err(&mut s, "INSERT INTO t (id) VALUES (9)").await?, "23502");
    assert_eq!(err(&mut s, "SELECT * FROM nope").await?, "42P01");
    assert_eq!(err(&mut s, "SELECT nope FROM t").await?, "42703");
    assert_eq!(err(&mut s, "CREATE TABLE t (x int)").await?, "42P07");
    assert_eq!(err(&mut s, "SELEC 1").await?, "42601");
    assert_eq!(err(&mut s, "SELECT 1/0").await?, "22012");
    assert_eq!(err(&mut s, "SELECT 'abc'::int").await?, "22P02");
    assert_eq!(err(&mut s, "SELECT 2147483647::int + 1").await?, "22003");
    assert_eq!(
        rows(&mut s, "SELECT * FROM t ORDER BY id LIMIT 1 OFFSET 1").await?,
        vec!["2|b|3.25"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_groups_subqueries() -> anyhow::Result<()> {
    let (_cluster, engines) = start(1).await?;
    let mut s = engines[0].session();
    exec(
        &mut s,
        "CREATE TABLE dept (id int PRIMARY KEY, name varchar(20))",
    )
    .await?;
    exec(
        &mut s,
        "CREATE TABLE emp (id int PRIMARY KEY, dept int, name text, salary bigint)",
    )
    .await?;
    exec(&mut s, "CREATE INDEX emp_dept ON emp (dept)").await?;
    exec(
        &mut s,
        "INSERT INTO dept VALUES (1, 'eng'), (2, 'ops'), (3, 'empty')",
    )
    .await?;
    exec(&mut s, "INSERT INTO emp VALUES (1, 1, 'ann', 100), (2, 1, 'bob', 80), (3, 2, 'cy', 70), (4, NULL, 'dan', 50)").await?;
    assert_eq!(
        rows(
            &mut s,
            "SELECT e.name, d.name FROM emp e JOIN dept d ON e.dept = d.id ORDER BY e.name"
        )
        .await?,
        vec!["ann|eng", "bob|eng", "cy|ops"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT e.name, d.name FROM emp e LEFT JOIN dept d ON e.dept = d.id ORDER BY e.name"
        )
        .await?,
        vec!["ann|eng", "bob|eng", "cy|ops", "dan|NULL"]
    );
    assert_eq!(
        rows(&mut s, "SELECT d.name, count(e.id) FROM dept d LEFT JOIN emp e ON e.dept = d.id GROUP BY d.name ORDER BY d.name").await?,
        vec!["empty|0", "eng|2", "ops|1"]
    );
    assert_eq!(
        rows(&mut s, "SELECT dept, sum(salary), avg(salary) FROM emp WHERE dept IS NOT NULL GROUP BY dept HAVING sum(salary) > 100 ORDER BY dept").await?,
        vec!["1|180|90.0000000000000000"]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(DISTINCT dept) FROM emp").await?,
        vec!["2"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT name FROM emp WHERE salary = (SELECT max(salary) FROM emp)"
        )
        .await?,
        vec!["ann"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT name FROM emp WHERE dept IN (SELECT id FROM dept WHERE name = 'ops')"
        )
        .await?,
        vec!["cy"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT e.name FROM emp e, dept d WHERE e.dept = d.id AND d.name = 'ops'"
        )
        .await?,
        vec!["cy"]
    );
    assert_eq!(
        rows(&mut s, "SELECT name FROM emp WHERE dept = 1 ORDER BY name").await?,
        vec!["ann", "bob"]
    );
    assert_eq!(
        rows(&mut s, "SELECT CASE WHEN salary >= 80 THEN 'high' ELSE 'low' END, coalesce(dept, -1) FROM emp ORDER BY id").await?,
        vec!["high|1", "high|1", "low|2", "low|-1"]
    );
    assert_eq!(
        rows(&mut s, "SELECT sum(g) FROM generate_series(1, 10) g").await?,
        vec!["55"]
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT DISTINCT dept FROM emp WHERE dept IS NOT NULL ORDER BY dept"
        )
        .await?,
        vec!["1", "2"]
    );
    assert_eq!(
        err(&mut s, "SELECT name, count(*) FROM emp").await?,
        "42803"
    );
    let plan = rows(&mut s, "EXPLAIN SELECT * FROM emp WHERE dept = 1").await?;
    assert!(
        plan.iter().any(|l| l.contains("Index Scan using emp_dept")),
        "{plan:?}"
    );
    let plan = rows(&mut s, "EXPLAIN SELECT * FROM emp WHERE id = 1").await?;
    assert!(
        plan.iter().any(|l| l.contains("Primary Key Lookup")),
        "{plan:?}"
    );
    let plan = rows(
        &mut s,
        "EXPLAIN SELECT e.name FROM emp e JOIN dept d ON d.id = e.dept",
    )
    .await?;
    assert!(
        plan.iter().any(|l| l.contains("primary-key lookup")),
        "{plan:?}"
    );
    let plan = rows(
        &mut s,
        "EXPLAIN SELECT e.name FROM emp e JOIN dept d ON d.name = e.name",
    )
    .await?;
    assert!(plan.iter().any(|l| l.contains("Hash Join")), "{plan:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_failed_blocks() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let mut a = engines[0].session();
    let mut b = engines[1].session();
    exec(&mut a, "CREATE TABLE kv (k int PRIMARY KEY, v int)").await?;
    exec(&mut a, "INSERT INTO kv VALUES (1, 10), (2, 20)").await?;
    // Another processing node sees the DDL and the data at once.
    assert_eq!(
        rows(&mut b, "SELECT v FROM kv WHERE k = 1").await?,
        vec!["10"]
    );

    exec(&mut a, "BEGIN").await?;
    exec(&mut a, "UPDATE kv SET v = v + 1 WHERE k = 1").await?;
    assert_eq!(a.status(), shmdb_processing_node::sql::TxStatus::InBlock);
    assert_eq!(
        rows(&mut b, "SELECT v FROM kv WHERE k = 1").await?,
        vec!["10"]
    );
    assert_eq!(err(&mut a, "SELECT nope FROM kv").await?, "42703");
    assert_eq!(a.status(), shmdb_processing_node::sql::TxStatus::Failed);
    assert_eq!(err(&mut a, "SELECT 1").await?, "25P02");
    assert_eq!(tag(&mut a, "COMMIT").await?, "ROLLBACK");
    assert_eq!(
        rows(&mut b, "SELECT v FROM kv WHERE k = 1").await?,
        vec!["10"]
    );

    // REPEATABLE READ, first committer wins: 40001 for the second writer.
    exec(&mut a, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    exec(&mut b, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    exec(&mut a, "UPDATE kv SET v = 11 WHERE k = 1").await?;
    exec(&mut b, "SELECT v FROM kv WHERE k = 1").await?;
    exec(&mut a, "COMMIT").await?;
    // The conflict shows at the write or, when b's buffered read hides it, at COMMIT.
    let update = b.simple_query("UPDATE kv SET v = 12 WHERE k = 1").await;
    if update.iter().all(|r| r.is_ok()) {
        assert_eq!(err(&mut b, "COMMIT").await?, "40001");
    } else {
        assert!(
            update
                .iter()
                .any(|r| matches!(r, Err(e) if e.code == "40001"))
        );
        exec(&mut b, "ROLLBACK").await?;
    }
    assert_eq!(b.status(), shmdb_processing_node::sql::TxStatus::Idle);
    assert_eq!(
        rows(&mut b, "SELECT v FROM kv WHERE k = 1").await?,
        vec!["11"]
    );
    // READ COMMITTED (the default): b's next statement sees a's commit and builds on it.
    exec(&mut a, "BEGIN").await?;
    exec(&mut b, "BEGIN").await?;
    exec(&mut a, "UPDATE kv SET v = v + 1 WHERE k = 1").await?;
    exec(&mut b, "SELECT v FROM kv WHERE k = 1").await?;
    exec(&mut a, "COMMIT").await?;
    exec(&mut b, "UPDATE kv SET v = v * 10 WHERE k = 1").await?;
    exec(&mut b, "COMMIT").await?;
    assert_eq!(
        rows(&mut b, "SELECT v FROM kv WHERE k = 1").await?,
        vec!["120"]
    );

    // Isolation levels.
    assert_eq!(
        err(&mut a, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").await?,
        "0A000"
    );
    assert_eq!(
        err(&mut a, "BEGIN ISOLATION LEVEL SERIALIZABLE").await?,
        "0A000"
    );
    exec(
        &mut a,
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
    )
    .await?;
    assert_eq!(
        rows(&mut a, "SHOW default_transaction_isolation").await?,
        vec!["read committed"]
    );
    assert_eq!(rows(&mut a, "SHOW server_version").await?, vec!["15.0"]);
    // Outside a block each statement is its own transaction at the session default.
    assert_eq!(
        rows(&mut a, "SHOW TRANSACTION ISOLATION LEVEL").await?,
        vec!["read committed"]
    );
    exec(&mut a, "BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    assert_eq!(
        rows(&mut a, "SHOW transaction_isolation").await?,
        vec!["repeatable read"]
    );
    exec(&mut a, "COMMIT").await?;
    assert_eq!(
        rows(&mut a, "SHOW transaction_isolation").await?,
        vec!["read committed"]
    );
    exec(&mut a, "SET application_name = 'x'").await?;
    assert_eq!(rows(&mut a, "SHOW application_name").await?, vec!["x"]);

    // DDL inside a block is transactional.
    exec(&mut a, "BEGIN").await?;
    exec(&mut a, "CREATE TABLE tmp (x int)").await?;
    exec(&mut a, "INSERT INTO tmp VALUES (1)").await?;
    assert_eq!(err(&mut b, "SELECT * FROM tmp").await?, "42P01");
    exec(&mut a, "ROLLBACK").await?;
    assert_eq!(err(&mut a, "SELECT * FROM tmp").await?, "42P01");

    // A multi-statement simple query is one implicit transaction.
    let out = a
        .simple_query("INSERT INTO kv VALUES (3, 30); INSERT INTO kv VALUES (1, 0)")
        .await;
    assert!(out.last().is_some_and(|r| r.is_err()));
    assert_eq!(rows(&mut a, "SELECT count(*) FROM kv").await?, vec!["2"]);

    // TRUNCATE, tables without a primary key, ALTER TABLE ADD PRIMARY KEY.
    exec(&mut a, "CREATE TABLE h (a int, b text)").await?;
    exec(&mut a, "INSERT INTO h VALUES (1, 'x'), (1, 'y'), (2, 'z')").await?;
    assert_eq!(
        rows(&mut b, "SELECT * FROM h ORDER BY b").await?,
        vec!["1|x", "1|y", "2|z"]
    );
    assert_eq!(
        err(&mut a, "ALTER TABLE h ADD PRIMARY KEY (a)").await?,
        "23505"
    );
    exec(&mut a, "DELETE FROM h WHERE b = 'y'").await?;
    exec(&mut a, "ALTER TABLE h ADD PRIMARY KEY (a)").await?;
    assert_eq!(err(&mut b, "INSERT INTO h VALUES (2, 'w')").await?, "23505");
    exec(&mut b, "TRUNCATE h").await?;
    assert_eq!(rows(&mut a, "SELECT count(*) FROM h").await?, vec!["0"]);
    exec(&mut a, "DROP TABLE h").await?;
    exec(&mut a, "DROP TABLE IF EXISTS h").await?;
    assert!(
        a.take_notices()
            .iter()
            .any(|n| n.contains("does not exist"))
    );
    Ok(())
}

/// Two processing nodes increment one counter with client-side retries on 40001: no update
/// is lost, and every failure is a serialization failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_retry_on_40001() -> anyhow::Result<()> {
    let (_cluster, engines) = start(2).await?;
    let mut setup = engines[0].session();
    exec(
        &mut setup,
        "CREATE TABLE district (w int, d int, next_o_id int NOT NULL, PRIMARY KEY (w, d))",
    )
    .await?;
    exec(&mut setup, "INSERT INTO district VALUES (1, 1, 1)").await?;
    let mut tasks = Vec::new();
    for e in engines.iter() {
        let mut s = e.session();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut conflicts = 0;
            while done < 20 {
                let out = s
                    .simple_query(
                        "BEGIN; SELECT next_o_id FROM district WHERE w = 1 AND d = 1 FOR UPDATE; \
                         UPDATE district SET next_o_id = next_o_id + 1 WHERE w = 1 AND d = 1; COMMIT",
                    )
                    .await;
                match out.iter().find_map(|r| r.as_ref().err()) {
                    None => done += 1,
                    Some(e) if e.code == "40001" => {
                        conflicts += 1;
                        let _ = s.simple_query("ROLLBACK").await;
                    }
                    Some(e) => return Err(anyhow::anyhow!("{} {}", e.code, e.message)),
                }
            }
            Ok::<_, anyhow::Error>(conflicts)
        }));
    }
    for t in tasks {
        t.await??;
    }
    assert_eq!(
        rows(&mut setup, "SELECT next_o_id FROM district").await?,
        vec!["41"]
    );
    Ok(())
}

/// What `pgbench -i` (server-side generation) and its TPC-B script send, and the
/// session statements drivers send on connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_and_driver_statements() -> anyhow::Result<()> {
    let (_cluster, engines) = start(1).await?;
    let mut s = engines[0].session();
    for stmt in [
        "SET extra_float_digits = 3",
        "SET application_name = 'PostgreSQL JDBC Driver'",
        "select version()",
        "select current_schema()",
        "drop table if exists pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
        "create table pgbench_history(tid int,bid int,aid    int,delta int,mtime timestamp,filler char(22))",
        "create table pgbench_tellers(tid int not null,bid int,tbalance int,filler char(84)) with (fillfactor=100)",
        "create table pgbench_accounts(aid    int not null,bid int,abalance int,filler char(84)) with (fillfactor=100)",
        "create table pgbench_branches(bid int not null,bbalance int,filler char(88)) with (fillfactor=100)",
        "begin",
        "truncate table pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
        "insert into pgbench_branches(bid,bbalance) select bid, 0 from generate_series(1, 1) as bid",
        "insert into pgbench_tellers(tid,bid,tbalance) select tid, (tid - 1) / 10 + 1, 0 from generate_series(1, 10) as tid",
        "insert into pgbench_accounts(aid,bid,abalance,filler) select aid, (aid - 1) / 100000 + 1, 0, '' from generate_series(1, 1000) as aid",
        "commit",
        "vacuum analyze pgbench_branches",
        "alter table pgbench_branches add primary key (bid)",
        "alter table pgbench_tellers add primary key (tid)",
        "alter table pgbench_accounts add primary key (aid)",
    ] {
        exec(&mut s, stmt).await?;
    }
    let script = "BEGIN;
        UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;
        SELECT abalance FROM pgbench_accounts WHERE aid = $2;
        UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $3;
        UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $4;
        INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($3, $4, $2, $1, CURRENT_TIMESTAMP);
        END;";
    use shmdb_processing_node::Datum;
    for (n, stmt) in script
        .split(';')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .enumerate()
    {
        let params: Vec<Datum> = match n {
            1 => vec![Datum::Int(5), Datum::Int(7)],
            2 => vec![Datum::Int(0), Datum::Int(7)],
            3 => vec![Datum::Int(5), Datum::Int(7), Datum::Int(3)],
            4 => vec![Datum::Int(5), Datum::Int(7), Datum::Int(3), Datum::Int(1)],
            5 => vec![Datum::Int(5), Datum::Int(7), Datum::Int(3), Datum::Int(1)],
            _ => vec![],
        };
        let p = s
            .prepare(stmt, &[])
            .await
            .map_err(|e| anyhow::anyhow!("{stmt}: {e}"))?;
        let params = &params[..p.param_types.len()];
        s.execute(&p, params, 0)
            .await
            .map_err(|e| anyhow::anyhow!("{stmt}: {e}"))?;
        s.sync().await?;
    }
    assert_eq!(
        rows(
            &mut s,
            "SELECT abalance FROM pgbench_accounts WHERE aid = 7"
        )
        .await?,
        vec!["5"]
    );
    assert_eq!(
        rows(&mut s, "SELECT count(*), sum(delta) FROM pgbench_history").await?,
        vec!["1|5"]
    );
    let plan = rows(
        &mut s,
        "EXPLAIN UPDATE pgbench_accounts SET abalance = 1 WHERE aid = 3",
    )
    .await?;
    assert!(
        plan.iter().any(|l| l.contains("Primary Key Lookup")),
        "{plan:?}"
    );
    Ok(())
}
