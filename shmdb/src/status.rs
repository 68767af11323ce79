//! `shmdb status`: what the cluster holds and how healthy it is, from any storage node.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use shmdb_placement::{PartitionMap, decode_range_key};
use shmdb_proto::storage::{self as pb, admin_client::AdminClient};

/// A snapshot of the cluster: the map and every node's report (or why it has none).
#[derive(Debug)]
pub struct ClusterStatus {
    /// The newest map any seed had.
    pub map: PartitionMap,
    /// Per node of the map: its report, or the error that prevented it.
    pub reports: Vec<(u64, String, Result<pb::RangeReport, String>)>,
}

async fn admin(address: &str) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    Ok(AdminClient::new(endpoint.connect().await?))
}

/// Gathers the map from the seeds and a report from every node.
pub async fn gather(seeds: &[String]) -> anyhow::Result<ClusterStatus> {
    let mut best: Option<pb::PartitionMap> = None;
    let mut errors = Vec::new();
    for seed in seeds {
        match async { anyhow::Ok(admin(seed).await?.get_map(pb::GetMapRequest {}).await?) }.await {
            Ok(resp) => {
                let map = resp.into_inner();
                if best.as_ref().is_none_or(|b| b.version < map.version) {
                    best = Some(map);
                }
            }
            Err(e) => errors.push(format!("{seed}: {e}")),
        }
    }
    let proto = best.with_context(|| format!("no storage node answered: {}", errors.join("; ")))?;
    let map = PartitionMap::from_proto(&proto).context("the cluster's map is invalid")?;
    let mut reports = Vec::new();
    for (id, address) in &map.nodes {
        let report = async {
            anyhow::Ok(
                admin(address)
                    .await?
                    .report(pb::RangeReportRequest::default())
                    .await?
                    .into_inner(),
            )
        }
        .await
        .map_err(|e| e.to_string());
        reports.push((*id, address.clone(), report));
    }
    Ok(ClusterStatus { map, reports })
}

fn bound(key: &[u8]) -> String {
    match decode_range_key(key) {
        Some((table, [])) => format!("t{table}"),
        Some((table, rest)) => format!("t{table}/{}", String::from_utf8_lossy(rest).escape_debug()),
        None if key.is_empty() => "-inf".into(),
        None => format!("{key:?}"),
    }
}

impl ClusterStatus {
    /// A human-readable report: tiers, ranges, replicas and health.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let healthy = self.reports.iter().filter(|(_, _, r)| r.is_ok()).count();
        let _ = writeln!(
            out,
            "partition map v{}  replication factor {}  storage nodes {}/{} healthy  ranges {}  under-replicated {}",
            self.map.version,
            self.map.replication_factor,
            healthy,
            self.reports.len(),
            self.map.ranges.len(),
            self.map.under_replicated()
        );
        let _ = writeln!(out, "\nSTORAGE NODES");
        let _ = writeln!(
            out,
            "{:>4}  {:<22} {:<8} {:>12} {:>12} {:>8} {:>8}",
            "ID", "ADDRESS", "HEALTH", "MEMORY", "LIMIT", "PRIMARY", "REPLICAS"
        );
        for (id, address, report) in &self.reports {
            let primaries = self
                .map
                .ranges
                .iter()
                .filter(|r| r.primary() == Some(*id))
                .count();
            let replicas = self
                .map
                .ranges
                .iter()
                .filter(|r| r.replicas.contains(id))
                .count();
            match report {
                Ok(r) => {
                    let _ = writeln!(
                        out,
                        "{id:>4}  {address:<22} {:<8} {:>12} {:>12} {primaries:>8} {replicas:>8}",
                        "up", r.memory_used, r.memory_limit
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        out,
                        "{id:>4}  {address:<22} {:<8} {:>12} {:>12} {primaries:>8} {replicas:>8}  ({e})",
                        "DOWN", "-", "-"
                    );
                }
            }
        }
        let _ = writeln!(out, "\nRANGES");
        let _ = writeln!(
            out,
            "{:>5}  {:<20} {:<20} {:>6} {:<14} {:>10} {:>12}",
            "ID", "START", "END", "EPOCH", "REPLICAS", "KEYS", "BYTES"
        );
        for range in &self.map.ranges {
            let primary_stats = self.reports.iter().find_map(|(id, _, r)| {
                (range.primary() == Some(*id))
                    .then(|| r.as_ref().ok())
                    .flatten()
                    .and_then(|r| r.ranges.iter().find(|s| s.range_id == range.id))
            });
            let mut replicas = range
                .replicas
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(",");
            if !range.learners.is_empty() {
                let learners = range
                    .learners
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                let _ = write!(replicas, "+[{learners}]");
            }
            let _ = writeln!(
                out,
                "{:>5}  {:<20} {:<20} {:>6} {:<14} {:>10} {:>12}",
                range.id,
                bound(&range.start),
                range.end.as_deref().map_or("+inf".into(), bound),
                range.epoch,
                replicas,
                primary_stats.map_or("?".into(), |s| s.keys.to_string()),
                primary_stats.map_or("?".into(), |s| s.bytes.to_string()),
            );
        }
        out
    }
}
