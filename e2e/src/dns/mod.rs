//! A cluster DNS responder for the harness's real node, which has no CoreDNS: pods of a
//! database find each other by Service and pod names (the partition map records storage
//! nodes as `<pod>.<db>-storage-headless.<ns>.svc`), so someone has to answer those names
//! from the API's Pods and Services.
//!
//! - [`lookup`]: which addresses a query name has, from a snapshot of Pods and Services
//!   (pure, so the naming rules are unit-tested without a cluster);
//! - [`server`]: the UDP loop that turns DNS queries into answers;
//! - [`cluster`]: the watch-fed caches of Pods and Services the answers come from.
//!
//! Deviation from a real cluster, on purpose: there is no kube-proxy, so a ClusterIP
//! Service's VIP routes nowhere; the responder answers a ClusterIP Service's name with its
//! ready endpoints' pod IPs, the way a headless Service resolves.

pub mod cluster;
pub mod lookup;
pub mod server;
