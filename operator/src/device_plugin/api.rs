//! The kubelet device-plugin API v1beta1 (generated from `proto/deviceplugin_v1beta1.proto`)
//! and the constants the kubelet fixes for it.

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("v1beta1");

/// The API version sent in every registration.
pub const VERSION: &str = "v1beta1";
/// Where the kubelet keeps its own socket and expects plugins' sockets.
pub const DEVICE_PLUGIN_PATH: &str = "/var/lib/kubelet/device-plugins";
/// The kubelet's registration socket, in [`DEVICE_PLUGIN_PATH`].
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// Health of a device that can be allocated.
pub const HEALTHY: &str = "Healthy";
/// Health of a device that must not be allocated.
pub const UNHEALTHY: &str = "Unhealthy";
