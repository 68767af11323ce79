//! Finding RDMA devices under a sysfs root (`/sys/class/infiniband` on a real node).
//!
//! Each entry of the root is one RDMA device (e.g. `mlx5_0`). Its user-space verbs node is
//! named in `device/infiniband_verbs/` (e.g. `uverbs0`, opened as `/dev/infiniband/uverbs0`),
//! its NUMA node in `device/numa_node` and its port states in `ports/<n>/state`
//! (`4: ACTIVE` when the link is up). sysfs cannot be watched with inotify, so callers scan
//! again periodically.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::DevicePluginError;

/// One RDMA device as sysfs shows it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaDevice {
    /// The device name (its directory under the root), also its id for the kubelet.
    pub name: String,
    /// Its verbs device nodes in `/dev/infiniband` (normally one `uverbsN`).
    pub verbs: Vec<String>,
    /// The NUMA node it is attached to, when the kernel knows it.
    pub numa_node: Option<i64>,
    /// Usable: it has a verbs node and, if it reports ports, at least one is ACTIVE.
    pub healthy: bool,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DevicePluginError {
    let path = path.to_path_buf();
    move |source| DevicePluginError::Io { what, path, source }
}

/// Names in a directory, sorted; a missing directory has none.
fn names(dir: &Path) -> Result<Vec<String>, DevicePluginError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("listing", dir))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// A small sysfs attribute, trimmed; `None` when it does not exist.
fn attribute(path: &Path) -> Result<Option<String>, DevicePluginError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}

/// Every device under `root`, sorted by name. A missing root is a node without RDMA
/// hardware: no devices, not an error.
pub fn scan(root: &Path) -> Result<Vec<RdmaDevice>, DevicePluginError> {
    let mut devices = Vec::new();
    for name in names(root)? {
        let dir: PathBuf = root.join(&name);
        // A device vanishing between the listing and the reads is simply not there.
        let verbs: Vec<String> = names(&dir.join("device/infiniband_verbs"))?
            .into_iter()
            .filter(|n| n.starts_with("uverbs"))
            .collect();
        let numa_node = attribute(&dir.join("device/numa_node"))?
            .and_then(|text| text.parse::<i64>().ok())
            .filter(|node| *node >= 0);
        let ports = names(&dir.join("ports"))?;
        let mut active = ports.is_empty();
        for port in &ports {
            let state = attribute(&dir.join("ports").join(port).join("state"))?;
            if state.is_some_and(|s| s.ends_with("ACTIVE")) {
                active = true;
            }
        }
        devices.push(RdmaDevice {
            healthy: !verbs.is_empty() && active,
            name,
            verbs,
            numa_node,
        });
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(
        root: &Path,
        name: &str,
        uverbs: &str,
        state: &str,
        numa: &str,
    ) -> anyhow::Result<()> {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("device/infiniband_verbs").join(uverbs))?;
        std::fs::write(dir.join("device/numa_node"), numa)?;
        std::fs::create_dir_all(dir.join("ports/1"))?;
        std::fs::write(dir.join("ports/1/state"), state)?;
        Ok(())
    }

    #[test]
    fn reads_verbs_numa_and_port_state() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        device(root.path(), "mlx5_1", "uverbs1", "1: DOWN\n", "-1\n")?;
        device(root.path(), "mlx5_0", "uverbs0", "4: ACTIVE\n", "1\n")?;
        let devices = scan(root.path())?;
        assert_eq!(
            devices,
            vec![
                RdmaDevice {
                    name: "mlx5_0".into(),
                    verbs: vec!["uverbs0".into()],
                    numa_node: Some(1),
                    healthy: true,
                },
                RdmaDevice {
                    name: "mlx5_1".into(),
                    verbs: vec!["uverbs1".into()],
                    numa_node: None,
                    healthy: false,
                },
            ]
        );
        Ok(())
    }

    #[test]
    fn a_device_without_a_verbs_node_is_unhealthy() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join("mlx5_0/ports/1"))?;
        std::fs::write(root.path().join("mlx5_0/ports/1/state"), "4: ACTIVE")?;
        let devices = scan(root.path())?;
        assert_eq!(devices.len(), 1);
        assert!(!devices[0].healthy);
        Ok(())
    }

    #[test]
    fn a_missing_root_means_no_devices() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        assert_eq!(scan(&root.path().join("absent"))?, vec![]);
        Ok(())
    }

    #[test]
    fn an_unreadable_root_is_an_error() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let file = root.path().join("file");
        std::fs::write(&file, "not a directory")?;
        let Err(err) = scan(&file) else {
            anyhow::bail!("a file as the sysfs root was accepted");
        };
        assert!(err.to_string().contains("listing"), "{err}");
        Ok(())
    }
}
