//! gRPC over Unix sockets, and the registration call to the kubelet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::DevicePluginError;
use super::api::{self, registration_client::RegistrationClient};

/// A gRPC channel to the server listening on the Unix socket at `path`. The URI is only a
/// placeholder tonic needs; every connection goes to the socket.
pub async fn uds_channel(path: &Path) -> Result<Channel, DevicePluginError> {
    let socket: PathBuf = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|source| DevicePluginError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

/// What this plugin registers: its socket's file name, resource and options.
pub fn request(endpoint: &str, resource_name: &str) -> api::RegisterRequest {
    api::RegisterRequest {
        version: api::VERSION.to_string(),
        endpoint: endpoint.to_string(),
        resource_name: resource_name.to_string(),
        options: Some(super::service::options()),
    }
}

/// Registers with the kubelet listening on `kubelet_socket`, waiting at most `timeout`.
pub async fn register(
    kubelet_socket: &Path,
    request: api::RegisterRequest,
    timeout: Duration,
) -> Result<(), DevicePluginError> {
    let call = async {
        let channel = uds_channel(kubelet_socket).await?;
        RegistrationClient::new(channel)
            .register(request)
            .await
            .map_err(|status| DevicePluginError::Refused(Box::new(status)))?;
        Ok(())
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| DevicePluginError::Timeout(timeout))?
}
