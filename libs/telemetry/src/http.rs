//! The telemetry HTTP server: `/metrics`, `/healthz` and `/readyz` on one port.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{Health, METRICS_CONTENT_TYPE, MetricsRegistry, TelemetryError};

/// What the handlers read.
#[derive(Clone)]
struct Endpoints {
    registry: MetricsRegistry,
    health: Health,
}

/// Serves `registry` and `health` over HTTP until the task is aborted, so Prometheus can
/// scrape and Kubernetes can probe every shmdb component the same way:
///
/// - `GET /metrics`: the registry in Prometheus text format (`text/plain; version=0.0.4`);
/// - `GET /healthz`: liveness, always `200 ok` while the process serves requests;
/// - `GET /readyz`: `200 ready` when [`Health::is_ready`], else `503 not ready: <reason>`.
///
/// The listener is bound before this returns, so `addr` may use port 0 and the returned
/// address is the one actually bound: callers (and tests) can connect at once.
pub async fn serve(
    addr: SocketAddr,
    registry: MetricsRegistry,
    health: Health,
) -> Result<(SocketAddr, JoinHandle<()>), TelemetryError> {
    serve_with_shutdown(addr, registry, health, std::future::pending()).await
}

/// [`serve`], but stops accepting connections when `shutdown` completes and lets in-flight
/// requests finish, so a binary can stop the endpoint as part of its orderly shutdown; the
/// returned task ends once the server has stopped.
pub async fn serve_with_shutdown<F>(
    addr: SocketAddr,
    registry: MetricsRegistry,
    health: Health,
    shutdown: F,
) -> Result<(SocketAddr, JoinHandle<()>), TelemetryError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let bind_error = |source| TelemetryError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let app = router(Endpoints { registry, health });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        if let Err(err) = served {
            tracing::error!(addr = %bound, error = %err, "telemetry HTTP server stopped");
        }
    });
    tracing::debug!(addr = %bound, "telemetry HTTP server listening");
    Ok((bound, task))
}

fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(endpoints)
}

async fn metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        endpoints.registry.encode_text(),
    )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn readyz(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    match endpoints.health.not_ready_reason() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::sample_value;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    /// A response as the tests need it.
    struct Response {
        status: u16,
        headers: String,
        body: String,
    }

    /// A minimal HTTP/1.1 GET: one request per connection, read until the server closes.
    async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let raw = String::from_utf8(raw)?;
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no header/body separator in {raw:?}"))?;
        let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        let status = status_line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?
            .parse()?;
        Ok(Response {
            status,
            headers: headers.to_ascii_lowercase(),
            body: body.to_owned(),
        })
    }

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn metrics_serves_an_incremented_counter() -> anyhow::Result<()> {
        let registry = MetricsRegistry::new([("node", "sn-0")])?;
        let puts = registry.register_int_counter_vec(
            "shmdb_test_puts_total",
            "puts handled",
            &["outcome"],
        )?;
        let (addr, server) = serve(localhost(), registry, Health::new()).await?;
        assert_ne!(addr.port(), 0);

        puts.with_label_values(&["ok"]).inc_by(41);
        puts.with_label_values(&["ok"]).inc();
        let response = http_get(addr, "/metrics").await?;
        assert_eq!(response.status, 200);
        assert!(
            response
                .headers
                .contains("content-type: text/plain; version=0.0.4"),
            "{}",
            response.headers
        );
        let ok_on_sn0 = [("node", "sn-0"), ("outcome", "ok")];
        assert_eq!(
            sample_value(&response.body, "shmdb_test_puts_total", &ok_on_sn0),
            Some(42.0),
            "{}",
            response.body
        );
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn healthz_is_200_even_when_not_ready() -> anyhow::Result<()> {
        let (addr, server) = serve(localhost(), MetricsRegistry::default(), Health::new()).await?;
        let response = http_get(addr, "/healthz").await?;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "ok\n");
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn readyz_flips_from_503_to_200_and_back() -> anyhow::Result<()> {
        let health = Health::new();
        let (addr, server) = serve(localhost(), MetricsRegistry::default(), health.clone()).await?;

        let response = http_get(addr, "/readyz").await?;
        assert_eq!(response.status, 503);
        assert_eq!(response.body, "not ready: starting\n");

        health.set_ready();
        let response = http_get(addr, "/readyz").await?;
        assert_eq!(response.status, 200);

        health.set_not_ready("lost the commit manager");
        let response = http_get(addr, "/readyz").await?;
        assert_eq!(response.status, 503);
        assert!(response.body.contains("lost the commit manager"));
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn unknown_path_is_404() -> anyhow::Result<()> {
        let (addr, server) = serve(localhost(), MetricsRegistry::default(), Health::new()).await?;
        assert_eq!(http_get(addr, "/nope").await?.status, 404);
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn shutdown_signal_stops_the_server() -> anyhow::Result<()> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = serve_with_shutdown(
            localhost(),
            MetricsRegistry::default(),
            Health::new(),
            async move {
                let _ = stopped.await;
            },
        )
        .await?;
        assert_eq!(http_get(addr, "/healthz").await?.status, 200);
        let _ = stop.send(());
        server.await?;
        assert!(TcpStream::connect(addr).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn binding_a_taken_port_is_a_bind_error() -> anyhow::Result<()> {
        let (addr, server) = serve(localhost(), MetricsRegistry::default(), Health::new()).await?;
        let second = serve(addr, MetricsRegistry::default(), Health::new()).await;
        assert!(matches!(second, Err(TelemetryError::Bind { addr: a, .. }) if a == addr));
        server.abort();
        Ok(())
    }
}
