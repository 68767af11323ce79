//! Helpers shared by the e2e tests: the cluster handle, waiting on conditions, the
//! storage-node processes that stand in for storage pods on simulated nodes, the
//! operator replicas a failover test kills, and, for real pods, the cluster DNS.
#![allow(dead_code)]

pub mod cluster;
pub mod cluster_dns;
pub mod data_plane;
pub mod database;
pub mod operator;
pub mod wait;
