//! The Grafana dashboards of the Helm chart (`charts/shmdb/dashboards/*.json`) against the
//! metrics shmdb really exports: every PromQL expression must parse, and every metric it
//! names must be exported — by a running `shmdb up` for the database's own metrics (scraped
//! from every component's `/metrics` after a little SQL load, so labelled series exist), by
//! the operator's and the device plugin's registries for theirs. A renamed metric or a typo
//! on a dashboard fails here instead of showing an empty panel in production.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use shmdb::cluster::ClusterOptions;
use shmdb::database::{CommitProcess, LocalDatabase, SqlOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Metrics of kube-state-metrics the dashboards use for the processing tier's HPA; they come
/// from the cluster, not from shmdb, so only these exact names are accepted.
const KUBE_STATE_METRICS: &[&str] = &[
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_min_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_horizontalpodautoscaler_spec_target_metric",
];

/// Where a metric on a dashboard comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// The database itself (`shmdb up`: storage nodes, commit manager, processing nodes).
    Database,
    /// The operator process (not part of `shmdb up`).
    Operator,
    /// The RDMA device plugin (not part of `shmdb up`).
    DevicePlugin,
    /// kube-state-metrics.
    KubeStateMetrics,
}

fn source(name: &str) -> Option<Source> {
    if name.starts_with("shmdb_operator_") {
        Some(Source::Operator)
    } else if name.starts_with("shmdb_device_plugin_") {
        Some(Source::DevicePlugin)
    } else if name.starts_with("shmdb_") {
        Some(Source::Database)
    } else if KUBE_STATE_METRICS.contains(&name) {
        Some(Source::KubeStateMetrics)
    } else {
        None
    }
}

fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/shmdb/dashboards")
}

/// Every PromQL expression of every dashboard, with where it is (file and panel title).
fn expressions() -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    anyhow::ensure!(
        files.len() >= 4,
        "expected four dashboards, found {files:?}"
    );
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let mut panels: Vec<&serde_json::Value> = Vec::new();
        let top = json["panels"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(!top.is_empty(), "{name} has no panels");
        for panel in json["panels"].as_array().into_iter().flatten() {
            panels.push(panel);
            panels.extend(panel["panels"].as_array().into_iter().flatten());
        }
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("{name} / {title}: a target without expr"))?;
                out.push((format!("{name} / {title}"), expr.to_string()));
            }
        }
        // Template variables: `label_values(metric, label)` names a metric too.
        for var in json["templating"]["list"].as_array().into_iter().flatten() {
            if let Some(query) = var["query"]["query"].as_str()
                && let Some(args) = query
                    .strip_prefix("label_values(")
                    .and_then(|q| q.strip_suffix(')'))
            {
                let (metric, _label) = args.rsplit_once(',').ok_or_else(|| {
                    anyhow::anyhow!("{name}: label_values without a label: {query}")
                })?;
                out.push((format!("{name} / variable"), metric.trim().to_string()));
            }
        }
    }
    Ok(out)
}

/// Grafana's variables replaced by values PromQL accepts, as Grafana does before querying.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${datasource}", "prometheus")
        .replace("$namespace", ".*")
        .replace("$database", ".*")
}

struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(vs) = selector {
            let name = vs
                .name
                .clone()
                .ok_or_else(|| format!("a selector without a metric name: {vs}"))?;
            self.0.insert(name);
        }
        Ok(true)
    }
}

/// The metric names an expression reads.
fn metric_names(expr: &str) -> anyhow::Result<BTreeSet<String>> {
    let concrete = substitute(expr);
    anyhow::ensure!(
        !concrete.contains('$'),
        "an unknown Grafana variable in {expr}"
    );
    let ast = parser::parse(&concrete).map_err(|e| anyhow::anyhow!("{e}\n  in {expr}"))?;
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &ast).map_err(|e| anyhow::anyhow!("{e}\n  in {expr}"))?;
    Ok(names.0)
}

/// Every metric on the dashboards by source; fails on a parse error or an unknown source.
fn dashboard_metrics() -> anyhow::Result<BTreeMap<Source, BTreeSet<String>>> {
    let mut by_source: BTreeMap<Source, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (where_, expr) in expressions()? {
        match metric_names(&expr) {
            Ok(names) if names.is_empty() => problems.push(format!("{where_}: reads no metric")),
            Ok(names) => {
                for name in names {
                    match source(&name) {
                        Some(s) => {
                            by_source.entry(s).or_default().insert(name);
                        }
                        None => problems.push(format!("{where_}: {name} is not a shmdb metric")),
                    }
                }
            }
            Err(e) => problems.push(format!("{where_}: {e}")),
        }
    }
    anyhow::ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(by_source)
}

/// The metric names (one per sample line) of a Prometheus text exposition.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_dashboard_expression_parses_and_names_known_metrics() -> anyhow::Result<()> {
    let metrics = dashboard_metrics()?;
    // The panels are there: the metrics each dashboard is about.
    let all: BTreeSet<&String> = metrics.values().flatten().collect();
    for needed in [
        "shmdb_pg_transactions_total",
        "shmdb_commit_commits_total",
        "shmdb_commit_aborts_total",
        "shmdb_pg_query_duration_seconds_bucket",
        "shmdb_storage_memory_used_bytes",
        "shmdb_storage_memory_limit_bytes",
        "shmdb_storage_ranges",
        "shmdb_operator_under_replicated_ranges",
        "shmdb_storage_replication_lag_entries",
        "shmdb_storage_request_seconds_bucket",
        "shmdb_commit_running",
        "shmdb_commit_lav_lag",
        "shmdb_operator_reconciles_total",
        "shmdb_operator_reconcile_errors_total",
        "shmdb_operator_partition_map_version",
        "shmdb_operator_placement_moves_in_flight",
        "kube_horizontalpodautoscaler_status_desired_replicas",
    ] {
        assert!(all.contains(&needed.to_string()), "no panel reads {needed}");
    }
    Ok(())
}

#[test]
fn the_check_rejects_broken_expressions() {
    // The parser is a real check: unbalanced parentheses, a range on a non-selector and an
    // unknown function are refused, and variables left unsubstituted are caught.
    for broken in [
        "sum(rate(shmdb_pg_queries_total[5m])",
        "rate(sum(shmdb_pg_queries_total)[5m])",
        "no_such_function(shmdb_pg_queries_total)",
        "rate(shmdb_pg_queries_total[$unknown])",
    ] {
        assert!(metric_names(broken).is_err(), "accepted {broken}");
    }
    assert_eq!(source("node_cpu_seconds_total"), None);
}

#[test]
fn operator_and_device_plugin_metrics_on_the_dashboards_are_registered() -> anyhow::Result<()> {
    use shmdb_operator::device_plugin::inventory::Inventory;
    use shmdb_operator::device_plugin::metrics::PluginMetrics;
    use shmdb_operator::metrics::Metrics;

    let wanted = dashboard_metrics()?;
    // The operator's registry as the operator builds it, with one series of each metric.
    let operator = Metrics::new()?;
    operator.observe(
        "error",
        Duration::from_millis(3),
        Some(&shmdb_operator::Error::MissingField("x")),
    );
    for gauge in [
        &operator.map_version,
        &operator.under_replicated,
        &operator.moves_in_flight,
        &operator.storage_target,
    ] {
        gauge.with_label_values(&["ns/db"]).set(1);
    }
    let operator_names = exported(&operator.registry.encode_text());
    let plugin = PluginMetrics::new("shmdb.io/rdma")?;
    plugin.observe(&Inventory::default());
    plugin.registrations.with_label_values(&["ok"]).inc();
    let plugin_names = exported(&plugin.registry.encode_text());

    let mut missing = Vec::new();
    for (source, registered) in [
        (Source::Operator, &operator_names),
        (Source::DevicePlugin, &plugin_names),
    ] {
        for name in wanted.get(&source).into_iter().flatten() {
            if !registered.contains(name) {
                missing.push(name.clone());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "dashboards read metrics nobody exports: {missing:?}"
    );
    assert!(wanted.contains_key(&Source::Operator));
    Ok(())
}

/// `GET /metrics` over plain HTTP/1.0.
async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP response from {addr}"))?;
    anyhow::ensure!(head.contains(" 200 "), "{addr}: {head}");
    Ok(body.to_string())
}

/// A little SQL over both protocols: commits, a rollback, a failed statement.
async fn load(addr: SocketAddr) -> anyhow::Result<()> {
    let url = format!(
        "host={} port={} user=shmdb dbname=shmdb",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE accounts (id integer PRIMARY KEY, balance integer);
             INSERT INTO accounts VALUES (1, 100), (2, 100), (3, 100)",
        )
        .await?;
    for i in 0..20 {
        client
            .batch_execute("BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = 1; UPDATE accounts SET balance = balance + 1 WHERE id = 2; COMMIT")
            .await?;
        client
            .query(
                "SELECT balance FROM accounts WHERE id = $1",
                &[&(i % 3 + 1)],
            )
            .await?;
    }
    client
        .batch_execute("BEGIN; UPDATE accounts SET balance = 0 WHERE id = 3; ROLLBACK")
        .await?;
    assert!(
        client
            .batch_execute("SELECT * FROM no_such_table")
            .await
            .is_err()
    );
    drop(client);
    connection.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_database_metric_on_the_dashboards_is_exported_by_shmdb_up() -> anyhow::Result<()> {
    let wanted: BTreeSet<String> = dashboard_metrics()?
        .remove(&Source::Database)
        .unwrap_or_default();
    anyhow::ensure!(!wanted.is_empty(), "the dashboards read no database metric");

    let db =
        LocalDatabase::start(&ClusterOptions::ephemeral(3, 2), &SqlOptions::ephemeral()).await?;
    let result = async {
        let pg = db.pg_addrs()[0];
        load(pg).await?;
        let mut endpoints: Vec<SocketAddr> = db
            .storage
            .nodes
            .lock()
            .iter()
            .filter_map(|n| n.metrics_addr())
            .collect();
        endpoints.extend(db.processing.lock().iter().filter_map(|p| p.metrics_addr()));
        anyhow::ensure!(
            endpoints.len() == 4,
            "expected /metrics of 3 storage nodes and 1 processing node, got {endpoints:?}"
        );
        // Counters are published by background rounds (commit-manager merges, replication
        // acknowledgements): wait until every name shows up, or report what never did.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut seen = BTreeSet::new();
            for addr in &endpoints {
                seen.extend(exported(&scrape(*addr).await?));
            }
            // `shmdb up` runs the commit manager in-process without a /metrics listener;
            // its registry is read directly.
            if let Some(CommitProcess::InProcess(manager)) = &*db.commit.lock() {
                seen.extend(exported(&manager.manager.metrics().registry.encode_text()));
            }
            let missing: Vec<&String> = wanted.difference(&seen).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("dashboards read metrics shmdb up does not export: {missing:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    .await;
    db.shutdown().await;
    result
}
