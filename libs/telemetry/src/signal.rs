//! The stop signal every binary waits for.

/// Resolves on Ctrl-C or SIGTERM. Kubernetes stops a container with SIGTERM, and a binary
/// that runs as the container's PID 1 gets no default action for it: without a handler the
/// signal is ignored and every pod deletion waits out the whole grace period.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
