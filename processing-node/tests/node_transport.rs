//! A processing node asked for the RDMA data path on a machine without an RDMA device
//! refuses to start with a message that says why and what to do, instead of quietly using
//! TCP; `auto` falls back to TCP and serves.

mod common;

use std::time::Duration;

use shmdb_processing_node::node::{self, NodeConfig};
use shmdb_processing_node::pg::AuthConfig;
use shmdb_store_client::TransportKind;

fn config(cluster: &common::Cluster, transport: TransportKind) -> anyhow::Result<NodeConfig> {
    Ok(NodeConfig {
        node_id: 1,
        listen: "127.0.0.1:0".parse()?,
        store_seeds: cluster.storage.seeds(),
        commit_managers: vec![cluster.manager.addr.to_string()],
        metrics_listen: None,
        auth: AuthConfig::default(),
        tls: None,
        gc_interval: Some(Duration::from_secs(60)),
        transport,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdma_without_a_device_is_refused_and_auto_falls_back() -> anyhow::Result<()> {
    let cluster = common::Cluster::start(1, 1).await?;
    if shmdb_rdma_transport::discover().why_not().is_none() {
        eprintln!("SKIPPED: this machine has an RDMA device, so `rdma` would start");
    } else {
        let refused = node::start(config(&cluster, TransportKind::Rdma)?).await;
        let message = match refused {
            Ok(_) => anyhow::bail!("started with --transport rdma and no device"),
            Err(e) => e.to_string(),
        };
        assert!(
            message.contains("RDMA") && message.contains("auto"),
            "unclear refusal: {message}"
        );
    }
    let running = node::start(config(&cluster, TransportKind::Auto)?).await?;
    assert_ne!(running.pg.addr.port(), 0);
    running.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}
