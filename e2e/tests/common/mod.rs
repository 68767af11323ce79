//! Helpers shared by the e2e tests: the cluster handle, waiting on conditions, the
//! storage-node processes that stand in for storage pods on simulated nodes, and the
//! operator replicas a failover test kills.
#![allow(dead_code)]

pub mod cluster;
pub mod data_plane;
pub mod database;
pub mod operator;
pub mod wait;
