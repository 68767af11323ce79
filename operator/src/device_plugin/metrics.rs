//! The device plugin's Prometheus metrics, served on its `/metrics`.

use shmdb_telemetry::MetricsRegistry;
use shmdb_telemetry::prometheus::{IntCounterVec, IntGaugeVec};

use super::DevicePluginError;
use super::inventory::Inventory;

/// Devices, registrations and allocations of one plugin process.
#[derive(Clone)]
pub struct PluginMetrics {
    /// The registry `/metrics` serves.
    pub registry: MetricsRegistry,
    /// Advertised devices by health (`healthy`, `unhealthy`).
    pub devices: IntGaugeVec,
    /// Registrations with the kubelet by outcome (`ok`, `error`); more than one `ok` means
    /// the kubelet restarted.
    pub registrations: IntCounterVec,
    /// Allocate calls by outcome (`ok`, `error`).
    pub allocations: IntCounterVec,
}

impl std::fmt::Debug for PluginMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMetrics").finish_non_exhaustive()
    }
}

impl PluginMetrics {
    /// Registers every metric in a fresh registry labelled with the resource name.
    pub fn new(resource_name: &str) -> Result<Self, DevicePluginError> {
        let registry =
            MetricsRegistry::new([("component", "device-plugin"), ("resource", resource_name)])?;
        Ok(PluginMetrics {
            devices: registry.register_int_gauge_vec(
                "shmdb_device_plugin_devices",
                "Advertised RDMA devices by health",
                &["health"],
            )?,
            registrations: registry.register_int_counter_vec(
                "shmdb_device_plugin_registrations_total",
                "Registrations with the kubelet by outcome",
                &["outcome"],
            )?,
            allocations: registry.register_int_counter_vec(
                "shmdb_device_plugin_allocations_total",
                "Allocate calls by outcome",
                &["outcome"],
            )?,
            registry,
        })
    }

    /// Publishes the device counts of an inventory.
    pub fn observe(&self, inventory: &Inventory) {
        let (healthy, unhealthy) = inventory.counts();
        self.devices
            .with_label_values(&["healthy"])
            .set(i64::try_from(healthy).unwrap_or(i64::MAX));
        self.devices
            .with_label_values(&["unhealthy"])
            .set(i64::try_from(unhealthy).unwrap_or(i64::MAX));
    }
}
