//! Why the device plugin could not do something.

use std::path::PathBuf;

/// Failures of discovery, serving and registration. The runner logs them and retries;
/// only a configuration error ends the process.
#[derive(Debug, thiserror::Error)]
pub enum DevicePluginError {
    /// A file under the sysfs root or the plugin directory could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kubelet's socket could not be reached.
    #[error("connecting to the kubelet at {path}: {source}")]
    Connect {
        /// The kubelet socket.
        path: PathBuf,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The kubelet answered the registration with an error (wrong version, name taken, ...).
    #[error("the kubelet refused the registration: {0}")]
    Refused(#[source] Box<tonic::Status>),
    /// The kubelet did not answer the registration in time.
    #[error("the kubelet did not answer the registration within {0:?}")]
    Timeout(std::time::Duration),
    /// The plugin's gRPC server failed.
    #[error("serving the device plugin: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// A setting cannot work (e.g. a resource name without a domain).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The metrics registry refused a metric.
    #[error("metrics: {0}")]
    Telemetry(#[from] shmdb_telemetry::TelemetryError),
}
