//! The RDMA device plugin: advertises a node's RDMA devices to the kubelet as an extended
//! resource (`shmdb.io/rdma` by default) and hands `/dev/infiniband` device nodes to the
//! containers that are allocated one.
//!
//! It speaks the kubelet's device-plugin API v1beta1 over Unix sockets (DESIGN.md,
//! "Operator"): it serves `DevicePlugin` on its own socket in the kubelet's device-plugin
//! directory, registers that socket with the kubelet's `Registration` service, streams the
//! device list (and every health change) through `ListAndWatch`, and registers again when the
//! kubelet restarts and recreates its socket. Devices are found under a sysfs root
//! (`/sys/class/infiniband` on a real node, a temporary tree in tests). Processing and storage
//! pods that get a device also need the `IPC_LOCK` capability to pin memory regions; the
//! operator adds it to their pods, the plugin only supplies the device nodes.

pub mod api;
pub mod discovery;
mod error;
pub mod inventory;
pub mod metrics;
pub mod registration;
pub mod runner;
pub mod service;

pub use error::DevicePluginError;
pub use runner::{PluginConfig, run};
