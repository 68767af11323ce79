//! The `shmdb` command-line tool as a library: the embedded local cluster behind
//! `shmdb up`, the cluster status report behind `shmdb status`, and the benchmarks behind
//! `shmdb bench`.
//!
//! The local cluster is what a new user runs first and what integration tests start: the
//! same storage-node code and the same placement manager as in Kubernetes, on 127.0.0.1,
//! either inside this process or as supervised child processes.

pub mod bench;
pub mod cluster;
pub mod database;
pub mod status;
