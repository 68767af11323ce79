//! Helpers shared by the operator's integration tests.
#![allow(dead_code)]

pub mod fake_api;
pub mod mock_api;
pub mod nodes;
pub mod workload;
