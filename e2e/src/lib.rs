//! End-to-end tests of shmdb on a real Kubernetes control plane.
//!
//! The tests live in `tests/`; `run.sh` builds and starts a control plane on 127.0.0.1 (or
//! uses the cluster `KUBECONFIG` names), installs the CRD and the operator's RBAC, runs the
//! operator and then `cargo test -p shmdb-e2e`. This library target is empty: it exists so
//! the package is a workspace member whose tests `cargo test --workspace` compiles (and
//! skips unless a cluster is promised; see `build.rs`).
