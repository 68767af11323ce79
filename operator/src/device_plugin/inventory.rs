//! The devices the plugin advertises, kept across scans.
//!
//! A device that disappears from sysfs (unplugged, driver unloaded) stays in the list as
//! Unhealthy instead of vanishing: the kubelet then stops offering it and evicts nothing on
//! its own, and a device that comes back turns Healthy again under the same id.

use std::collections::BTreeMap;

use super::api;
use super::discovery::RdmaDevice;

/// One advertised device and what allocation needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertised {
    /// The device as last seen in sysfs.
    pub device: RdmaDevice,
    /// Whether it was present in the last scan.
    pub present: bool,
}

impl Advertised {
    /// Healthy iff present and healthy in sysfs.
    pub fn healthy(&self) -> bool {
        self.present && self.device.healthy
    }
}

/// Every device ever seen on this node, by id (the sysfs name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    devices: BTreeMap<String, Advertised>,
}

impl Inventory {
    /// Merges a fresh scan; returns whether anything the kubelet sees changed.
    pub fn update(&mut self, scan: Vec<RdmaDevice>) -> bool {
        let before = self.devices.clone();
        for entry in self.devices.values_mut() {
            entry.present = false;
        }
        for device in scan {
            self.devices.insert(
                device.name.clone(),
                Advertised {
                    device,
                    present: true,
                },
            );
        }
        before != self.devices
    }

    /// The device with this id.
    pub fn get(&self, id: &str) -> Option<&Advertised> {
        self.devices.get(id)
    }

    /// Devices by health: (healthy, unhealthy).
    pub fn counts(&self) -> (usize, usize) {
        let healthy = self.devices.values().filter(|d| d.healthy()).count();
        (healthy, self.devices.len() - healthy)
    }

    /// The list `ListAndWatch` sends.
    pub fn to_api(&self) -> Vec<api::Device> {
        self.devices
            .values()
            .map(|entry| api::Device {
                id: entry.device.name.clone(),
                health: if entry.healthy() {
                    api::HEALTHY
                } else {
                    api::UNHEALTHY
                }
                .to_string(),
                topology: entry.device.numa_node.map(|node| api::TopologyInfo {
                    nodes: vec![api::NumaNode { id: node }],
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, healthy: bool) -> RdmaDevice {
        RdmaDevice {
            name: name.to_string(),
            verbs: vec![format!("uverbs{}", name.len())],
            numa_node: None,
            healthy,
        }
    }

    #[test]
    fn a_vanished_device_stays_listed_as_unhealthy_and_recovers() {
        let mut inventory = Inventory::default();
        assert!(inventory.update(vec![dev("a", true), dev("b", true)]));
        assert!(!inventory.update(vec![dev("a", true), dev("b", true)]));
        assert!(inventory.update(vec![dev("a", true)]));
        let health: Vec<(String, String)> = inventory
            .to_api()
            .into_iter()
            .map(|d| (d.id, d.health))
            .collect();
        assert_eq!(
            health,
            [
                ("a".to_string(), api::HEALTHY.to_string()),
                ("b".to_string(), api::UNHEALTHY.to_string())
            ]
        );
        assert_eq!(inventory.counts(), (1, 1));
        assert!(inventory.update(vec![dev("a", true), dev("b", true)]));
        assert_eq!(inventory.counts(), (2, 0));
    }
}
