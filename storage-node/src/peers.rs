//! Connections from this node to the other storage nodes, for replication.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use shmdb_placement::{NodeId, PartitionMap};
use shmdb_proto::storage::replication_client::ReplicationClient;
use tonic::transport::{Channel, Endpoint};

/// Lazily connected replication clients, one per peer, re-created when a peer's address
/// changes in the map (a rescheduled pod).
#[derive(Debug, Default)]
pub struct Peers {
    clients: Mutex<HashMap<NodeId, (String, ReplicationClient<Channel>)>>,
}

impl Peers {
    /// The client for `node`, if the map knows its address.
    pub fn client(&self, node: NodeId, map: &PartitionMap) -> Option<ReplicationClient<Channel>> {
        let address = map.nodes.get(&node)?;
        let mut clients = self.clients.lock();
        if let Some((known, client)) = clients.get(&node)
            && known == address
        {
            return Some(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .ok()?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(5));
        let client = ReplicationClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(crate::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::MAX_MESSAGE_BYTES);
        clients.insert(node, (address.clone(), client.clone()));
        Some(client)
    }
}
