//! `--transport auto|tcp|grpc|rdma` turned into a decision: which transport this process uses,
//! why, and a clear start-up error when RDMA is demanded but cannot be had.

use std::sync::Arc;

use shmdb_store_client::{
    DataPath, FramedConfig, GrpcConfig, GrpcTransport, Transport, TransportKind, tcp_transport,
};

use crate::client::{RdmaConfig, RdmaTransport};
use crate::device::{self, DeviceInfo, Discovery};
use crate::metrics::TransportMetrics;
use crate::verbs::{RdmaDevice, VerbsError};

/// The transport chosen for this process.
#[derive(Debug, Clone)]
pub enum Selected {
    /// Framed TCP (gRPC to nodes without it), and why (asked for, or the reason RDMA is
    /// not usable under `auto`).
    Tcp {
        /// Why TCP, for the start-up log.
        reason: String,
    },
    /// gRPC over TCP only (`--transport grpc`).
    Grpc {
        /// Why gRPC, for the start-up log.
        reason: String,
    },
    /// RDMA on this device.
    Rdma {
        /// The opened device.
        device: Arc<dyn RdmaDevice>,
    },
}

impl Selected {
    /// `tcp`, `grpc` or `rdma`, as in the `shmdb_transport_in_use` metric.
    pub fn name(&self) -> &'static str {
        match self {
            Selected::Tcp { .. } => "tcp",
            Selected::Grpc { .. } => "grpc",
            Selected::Rdma { .. } => "rdma",
        }
    }

    /// A one-line account of the choice, for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Selected::Tcp { reason } => format!("tcp ({reason})"),
            Selected::Grpc { reason } => format!("grpc ({reason})"),
            Selected::Rdma { device } => format!("rdma (device {})", device.name()),
        }
    }
}

/// `--transport rdma` on a machine where RDMA cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// No usable device (none present, or support not compiled in).
    #[error(
        "--transport rdma: no usable RDMA device: {0} (use --transport auto to fall back to TCP, \
         or run where the RDMA device plugin provides a device)"
    )]
    NoDevice(String),
    /// A device is present but could not be opened.
    #[error("--transport rdma: cannot open RDMA device {device}: {error}")]
    Open {
        /// The device.
        device: String,
        /// Why.
        error: VerbsError,
    },
}

/// Decides the transport from the flag and what discovery found; `open` opens a device
/// (passed in so the decision is tested without hardware).
pub fn resolve(
    kind: TransportKind,
    discovery: &Discovery,
    open: impl FnOnce(&DeviceInfo) -> Result<Arc<dyn RdmaDevice>, VerbsError>,
) -> Result<Selected, SelectError> {
    match kind {
        TransportKind::Tcp => {
            return Ok(Selected::Tcp {
                reason: "--transport tcp".into(),
            });
        }
        TransportKind::Grpc => {
            return Ok(Selected::Grpc {
                reason: "--transport grpc".into(),
            });
        }
        TransportKind::Auto | TransportKind::Rdma => {}
    }
    let first = match discovery {
        Discovery::Found(devices) => devices.first(),
        _ => None,
    };
    let Some(info) = first else {
        let why = discovery
            .why_not()
            .unwrap_or_else(|| "no RDMA device found".into());
        return match kind {
            TransportKind::Rdma => Err(SelectError::NoDevice(why)),
            _ => Ok(Selected::Tcp {
                reason: format!("auto: {why}"),
            }),
        };
    };
    match open(info) {
        Ok(device) => Ok(Selected::Rdma { device }),
        Err(error) if kind == TransportKind::Rdma => Err(SelectError::Open {
            device: info.name.clone(),
            error,
        }),
        Err(error) => Ok(Selected::Tcp {
            reason: format!("auto: RDMA device {} unusable: {error}", info.name),
        }),
    }
}

/// Discovers devices, decides, and logs the decision (the one line an operator looks for
/// to know whether RDMA is in use).
pub fn select(kind: TransportKind) -> Result<Selected, SelectError> {
    let discovery = device::discover();
    let selected = resolve(kind, &discovery, device::open)?;
    tracing::info!(
        requested = %kind,
        transport = selected.name(),
        "storage transport: {}",
        selected.describe()
    );
    Ok(selected)
}

/// The store client's transport for `--transport kind`: [`RdmaTransport`] (falling back to
/// gRPC per node under `auto`), framed TCP ([`shmdb_store_client::FramedTransport`], gRPC
/// streams to nodes without a framed endpoint) or [`GrpcTransport`]. `grpc.data_path`
/// other than `Framed` (`SHMDB_STORAGE_DATA_PATH=stream|unary`) makes `tcp` use gRPC too,
/// so the same binary can compare them; the in-use metric then says `grpc`.
pub fn client_transport(
    kind: TransportKind,
    grpc: GrpcConfig,
    rdma: RdmaConfig,
    metrics: TransportMetrics,
) -> Result<(Arc<dyn Transport>, Selected), SelectError> {
    let selected = select(kind)?;
    let transport: Arc<dyn Transport> = match &selected {
        Selected::Tcp { .. } => {
            let framed = FramedConfig {
                connect_timeout: grpc.connect_timeout,
                request_timeout: grpc.request_timeout,
                max_frame_bytes: grpc.max_message_size,
                ..FramedConfig::default()
            };
            let in_use = if grpc.data_path == DataPath::Framed {
                "tcp"
            } else {
                "grpc"
            };
            metrics.set_in_use(in_use);
            tcp_transport(grpc.data_path, grpc, framed, metrics.framed.clone())
        }
        Selected::Grpc { .. } => {
            metrics.set_in_use("grpc");
            let data_path = match grpc.data_path {
                DataPath::Framed => DataPath::Stream,
                other => other,
            };
            Arc::new(GrpcTransport::new(GrpcConfig { data_path, ..grpc }))
        }
        Selected::Rdma { device } => {
            metrics.set_in_use("rdma");
            Arc::new(RdmaTransport::new(
                device.clone(),
                RdmaConfig {
                    fallback_to_tcp: kind != TransportKind::Rdma,
                    ..rdma
                },
                metrics,
            ))
        }
    };
    Ok((transport, selected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeFabric;

    fn fake(_: &DeviceInfo) -> Result<Arc<dyn RdmaDevice>, VerbsError> {
        Ok(Arc::new(FakeFabric::new("fake0")))
    }

    fn broken(_: &DeviceInfo) -> Result<Arc<dyn RdmaDevice>, VerbsError> {
        Err(VerbsError::Device("permission denied".into()))
    }

    fn found() -> Discovery {
        Discovery::Found(vec![DeviceInfo {
            name: "mlx5_0".into(),
        }])
    }

    #[test]
    fn auto_uses_rdma_when_a_device_is_present_and_tcp_otherwise() {
        let picked = resolve(TransportKind::Auto, &found(), fake).expect("auto");
        assert_eq!(picked.name(), "rdma");
        let none = Discovery::NoDevice("libibverbs lists no device".into());
        let picked = resolve(TransportKind::Auto, &none, fake).expect("auto");
        assert_eq!(picked.name(), "tcp");
        assert!(picked.describe().contains("libibverbs lists no device"));
        let picked = resolve(TransportKind::Auto, &Discovery::NotCompiled, fake).expect("auto");
        assert!(picked.describe().contains("feature `rdma`"));
        // A device that cannot be opened is a fallback under auto, too.
        let picked = resolve(TransportKind::Auto, &found(), broken).expect("auto");
        assert!(picked.describe().contains("permission denied"));
    }

    #[test]
    fn explicit_rdma_without_a_usable_device_fails_with_a_clear_message() {
        let none = Discovery::NoDevice("libibverbs lists no device".into());
        let err = resolve(TransportKind::Rdma, &none, fake).expect_err("error");
        let text = err.to_string();
        assert!(text.contains("--transport rdma"), "{text}");
        assert!(text.contains("libibverbs lists no device"), "{text}");
        assert!(text.contains("--transport auto"), "{text}");
        let err = resolve(TransportKind::Rdma, &found(), broken).expect_err("error");
        assert!(matches!(err, SelectError::Open { .. }));
        assert!(err.to_string().contains("mlx5_0"));
        assert_eq!(
            resolve(TransportKind::Rdma, &found(), fake).map(|s| s.name()),
            Ok("rdma")
        );
    }

    #[test]
    fn tcp_and_grpc_are_used_when_asked_for_even_with_a_device() {
        let picked = resolve(TransportKind::Tcp, &found(), fake).expect("tcp");
        assert_eq!(picked.name(), "tcp");
        let picked = resolve(TransportKind::Grpc, &found(), fake).expect("grpc");
        assert_eq!(picked.name(), "grpc");
        assert!(picked.describe().contains("--transport grpc"));
    }

    #[test]
    fn on_this_machine_auto_falls_back_to_tcp_and_rdma_fails() {
        // These machines have no RDMA device (and default builds no RDMA support).
        if let Discovery::Found(devices) = device::discover() {
            eprintln!("RDMA devices present ({devices:?}); fallback check not applicable");
            return;
        }
        assert_eq!(select(TransportKind::Auto).map(|s| s.name()), Ok("tcp"));
        assert!(matches!(
            select(TransportKind::Rdma),
            Err(SelectError::NoDevice(_))
        ));
    }
}
