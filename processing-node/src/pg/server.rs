//! The listener: accepts client connections and runs each in its own task, from startup
//! to termination.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::pg::auth::AuthConfig;
use crate::pg::cancel::CancelRegistry;
use crate::pg::conn::Conn;
use crate::pg::handler::Connection;
use crate::pg::metrics::PgMetrics;
use crate::pg::startup::{self, StartupOutcome};
use crate::pg::tls::{TlsConfig, TlsError};
use crate::sql::SqlEngine;

/// How long a client may take from connecting to being authenticated (PostgreSQL's
/// `authentication_timeout` default), so idle half-open sockets cannot pile up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How the PostgreSQL front end is run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port; see [`ServerHandle::addr`]).
    pub listen: SocketAddr,
    /// Client authentication.
    pub auth: AuthConfig,
    /// TLS certificate and key; `None` refuses SSLRequest (clients continue in plain text).
    pub tls: Option<TlsConfig>,
    /// Metrics to update; `None` keeps private, unscraped ones.
    pub metrics: Option<PgMetrics>,
}

impl ServerConfig {
    /// Trust authentication, no TLS, on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        ServerConfig {
            listen,
            auth: AuthConfig::Trust,
            tls: None,
            metrics: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] shmdb_telemetry::TelemetryError),
}

/// The PostgreSQL server of a processing node.
#[derive(Debug)]
pub struct PgServer;

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    /// The address actually bound.
    pub addr: SocketAddr,
    /// Backend keys of live connections (cancel requests).
    pub cancel: Arc<CancelRegistry>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Stops accepting, closes every connection and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Shared by every connection task.
struct Shared {
    sql: Arc<SqlEngine>,
    auth: AuthConfig,
    tls: Option<TlsAcceptor>,
    cancel: Arc<CancelRegistry>,
    metrics: PgMetrics,
}

impl PgServer {
    /// Binds `config.listen` and serves SQL sessions of `sql` until the handle is shut down.
    pub async fn start(
        config: ServerConfig,
        sql: Arc<SqlEngine>,
    ) -> Result<ServerHandle, ServerError> {
        let tls = config.tls.as_ref().map(TlsConfig::acceptor).transpose()?;
        let metrics = match config.metrics {
            Some(m) => m,
            None => PgMetrics::unregistered()?,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let cancel = Arc::new(CancelRegistry::default());
        let shared = Arc::new(Shared {
            sql,
            auth: config.auth,
            tls,
            cancel: cancel.clone(),
            metrics,
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, shared, stop_rx));
        info!(%addr, "PostgreSQL front end listening");
        Ok(ServerHandle {
            addr,
            cancel,
            stop,
            task,
        })
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    connections.spawn(async move { serve(stream, peer, shared).await });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

/// Completes once the stop flag is set (the watch guard is dropped inside, so the accept
/// loop's future stays `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One connection, start to end. Errors are logged here, where they are handled.
async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let metrics = &shared.metrics;
    let conn = Conn::new(Box::new(stream));
    let outcome = tokio::time::timeout(
        STARTUP_TIMEOUT,
        startup::negotiate(conn, &shared.auth, shared.tls.as_ref(), &shared.cancel),
    )
    .await;
    let (conn, user, params) = match outcome {
        Ok(Ok(StartupOutcome::Ready { conn, user, params })) => (conn, user, params),
        Ok(Ok(StartupOutcome::Cancel)) => {
            metrics.connections.with_label_values(&["cancel"]).inc();
            return;
        }
        Ok(Ok(StartupOutcome::Closed { auth_failed })) => {
            let outcome = if auth_failed { "auth_failed" } else { "error" };
            metrics.connections.with_label_values(&[outcome]).inc();
            return;
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "connection failed during startup");
            metrics.connections.with_label_values(&["error"]).inc();
            return;
        }
        Err(_) => {
            debug!(%peer, "startup timed out");
            metrics.connections.with_label_values(&["error"]).inc();
            return;
        }
    };
    metrics.connections.with_label_values(&["ok"]).inc();
    metrics.connections_active.inc();
    let session = shared.sql.session();
    let key = shared.cancel.register(session.cancel_handle());
    let (pid, secret) = (key.pid, key.secret);
    let mut connection = Connection::new(conn, session, metrics.clone(), key);
    debug!(%peer, %user, pid, "client authenticated");
    let result = match connection.greet(&user, &params, pid, secret).await {
        Ok(()) => connection.run().await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "connection ended with an error");
    }
    metrics.connections_active.dec();
}
