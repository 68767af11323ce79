//! RDMA device discovery: what the device plugin put into the pod, as libibverbs sees it.

use std::sync::Arc;

use crate::verbs::{RdmaDevice, VerbsError};

/// An RDMA device found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device name (`mlx5_0`, `rxe0`).
    pub name: String,
}

/// What discovery found; never a panic, whatever the machine lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// These devices are present.
    Found(Vec<DeviceInfo>),
    /// libibverbs reports no device; the text says what was checked.
    NoDevice(String),
    /// This binary was built without the `rdma` feature, so it cannot use a device even if
    /// one is present.
    NotCompiled,
}

impl Discovery {
    /// Why no device is usable, for logs and errors; `None` when devices were found.
    pub fn why_not(&self) -> Option<String> {
        match self {
            Discovery::Found(_) => None,
            Discovery::NoDevice(reason) => Some(reason.clone()),
            Discovery::NotCompiled => Some(
                "this binary was built without RDMA support (cargo feature `rdma` of \
                 shmdb-rdma-transport)"
                    .into(),
            ),
        }
    }
}

/// Lists the machine's RDMA devices through libibverbs.
#[cfg(feature = "rdma")]
pub fn discover() -> Discovery {
    crate::ibverbs::list_devices()
}

/// Without the `rdma` feature there is nothing to discover with.
#[cfg(not(feature = "rdma"))]
pub fn discover() -> Discovery {
    Discovery::NotCompiled
}

/// Opens a discovered device.
#[cfg(feature = "rdma")]
pub fn open(info: &DeviceInfo) -> Result<Arc<dyn RdmaDevice>, VerbsError> {
    Ok(Arc::new(crate::ibverbs::IbvDevice::open(&info.name)?))
}

/// Without the `rdma` feature no device can be opened.
#[cfg(not(feature = "rdma"))]
pub fn open(info: &DeviceInfo) -> Result<Arc<dyn RdmaDevice>, VerbsError> {
    Err(VerbsError::Device(format!(
        "cannot open {}: {}",
        info.name,
        Discovery::NotCompiled.why_not().unwrap_or_default()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_on_this_machine_reports_without_panicking() {
        // These machines have no RDMA hardware; a machine with a device finds it. Either
        // way discovery answers, and "no device" says why.
        match discover() {
            Discovery::Found(devices) => assert!(!devices.is_empty()),
            other => {
                let why = other.why_not().unwrap_or_default();
                assert!(!why.is_empty());
                if cfg!(feature = "rdma") {
                    assert!(matches!(other, Discovery::NoDevice(_)), "{other:?}");
                } else {
                    assert_eq!(other, Discovery::NotCompiled);
                    assert!(why.contains("feature `rdma`"), "{why}");
                }
            }
        }
    }
}
