//! End-to-end tests of shmdb on a real Kubernetes control plane.
//!
//! The tests live in `tests/`; `run.sh` builds and starts a control plane on 127.0.0.1 (or
//! uses the cluster `KUBECONFIG` names), installs the CRD and the operator's RBAC, runs the
//! operator and then `cargo test -p shmdb-e2e`. The tests compile in every `cargo test
//! --workspace` and skip unless a cluster is promised (see `build.rs`). The library holds
//! the harness's cluster DNS responder ([`dns`], run as the `e2e-dns` binary), which the
//! real node's pods need because the harness has no CoreDNS.

pub mod dns;
