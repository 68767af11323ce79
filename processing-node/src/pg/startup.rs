//! The startup phase of a connection: TLS negotiation, the startup packet, cancel requests
//! and authentication, up to AuthenticationOk.

use std::sync::Arc;

use bytes::Bytes;
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::startup::{Authentication, NegotiateProtocolVersion};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::pg::auth::{AuthConfig, AuthError, SCRAM_SHA_256, ScramExchange};
use crate::pg::cancel::CancelRegistry;
use crate::pg::conn::{Conn, ConnError};
use crate::pg::frontend::{self, FrontendMessage, StartupRequest};

/// What the startup phase ended with.
#[derive(Debug)]
pub enum StartupOutcome {
    /// An authenticated client, ready for ParameterStatus and queries.
    Ready {
        /// The connection (TLS-wrapped if negotiated).
        conn: Conn,
        /// The authenticated user.
        user: String,
        /// The startup parameters (database, application_name, ...).
        params: Vec<(String, String)>,
    },
    /// A cancel request was handled; the connection is done.
    Cancel,
    /// The client went away or was refused (it was told why, where possible).
    Closed {
        /// Whether authentication itself failed (for metrics).
        auth_failed: bool,
    },
}

/// Sends a FATAL error and flushes; the caller then closes the connection.
async fn fatal(conn: &mut Conn, code: &str, message: &str) -> Result<(), ConnError> {
    conn.send_error("FATAL", code, message, None)?;
    conn.flush().await
}

/// Runs the startup phase on a fresh connection.
pub async fn negotiate(
    mut conn: Conn,
    auth: &AuthConfig,
    tls: Option<&TlsAcceptor>,
    cancel: &Arc<CancelRegistry>,
) -> Result<StartupOutcome, ConnError> {
    let mut tls_done = false;
    let mut gss_done = false;
    let (minor, params) = loop {
        let request = match conn.read_startup().await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(StartupOutcome::Closed { auth_failed: false }),
            Err(ConnError::Protocol(e)) => {
                fatal(&mut conn, frontend::ProtocolError::SQLSTATE, &e.to_string()).await?;
                return Ok(StartupOutcome::Closed { auth_failed: false });
            }
            Err(e) => return Err(e),
        };
        match request {
            StartupRequest::Ssl if !tls_done => {
                let Some(acceptor) = tls else {
                    conn.send_raw(b"N");
                    conn.flush().await?;
                    tls_done = true;
                    continue;
                };
                conn.send_raw(b"S");
                conn.flush().await?;
                // Bytes that arrived before the handshake would be trusted as if encrypted
                // (CVE-2021-23214 in PostgreSQL): refuse them.
                if conn.has_buffered_input() {
                    return Err(frontend::ProtocolError::InvalidValue(
                        "data received before the TLS handshake",
                    )
                    .into());
                }
                let stream = acceptor.accept(conn.into_inner()).await?;
                conn = Conn::new(Box::new(stream));
                tls_done = true;
            }
            StartupRequest::GssEnc if !gss_done => {
                conn.send_raw(b"N");
                conn.flush().await?;
                gss_done = true;
            }
            StartupRequest::Ssl | StartupRequest::GssEnc => {
                fatal(
                    &mut conn,
                    "08P01",
                    "duplicate SSL or GSSAPI negotiation request",
                )
                .await?;
                return Ok(StartupOutcome::Closed { auth_failed: false });
            }
            StartupRequest::Cancel { pid, secret } => {
                let done = cancel.cancel(pid, &secret);
                debug!(pid, done, "cancel request");
                return Ok(StartupOutcome::Cancel);
            }
            StartupRequest::Startup { minor, params, .. } => break (minor, params),
        }
    };

    // We speak 3.0; tell a newer client so (and which protocol options we ignored), as
    // PostgreSQL does, instead of failing it.
    let unsupported: Vec<String> = params
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if minor > 0 || !unsupported.is_empty() {
        conn.send(PgWireBackendMessage::NegotiateProtocolVersion(
            NegotiateProtocolVersion::new(0, unsupported),
        ))?;
    }
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if user.is_empty() {
        fatal(
            &mut conn,
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
        .await?;
        return Ok(StartupOutcome::Closed { auth_failed: true });
    }

    match auth {
        AuthConfig::Trust => {}
        AuthConfig::Scram { users } => {
            let mut exchange = ScramExchange::new(&user, users.get(&user));
            if let Err(e) = scram(&mut conn, &mut exchange).await? {
                fatal(&mut conn, e.sqlstate(), &e.to_string()).await?;
                return Ok(StartupOutcome::Closed { auth_failed: true });
            }
        }
    }
    conn.send(PgWireBackendMessage::Authentication(Authentication::Ok))?;
    Ok(StartupOutcome::Ready { conn, user, params })
}

/// Reads the next password-family message body, or says why not.
async fn password_message(conn: &mut Conn) -> Result<Result<Bytes, AuthError>, ConnError> {
    match conn.read_message().await? {
        Some(FrontendMessage::Password(body)) => Ok(Ok(body)),
        None => Err(ConnError::UnexpectedEof),
        Some(_) => Ok(Err(AuthError::Malformed(
            "expected a SASL response message",
        ))),
    }
}

/// The SCRAM-SHA-256 message exchange. The outer error is the socket; the inner one the
/// authentication outcome to report.
async fn scram(
    conn: &mut Conn,
    exchange: &mut ScramExchange,
) -> Result<Result<(), AuthError>, ConnError> {
    conn.send(PgWireBackendMessage::Authentication(Authentication::SASL(
        vec![SCRAM_SHA_256.to_owned()],
    )))?;
    conn.flush().await?;
    let body = match password_message(conn).await? {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let (mechanism, first) = match frontend::decode_sasl_initial(&body) {
        Ok(v) => v,
        Err(_) => return Ok(Err(AuthError::Malformed("SASLInitialResponse"))),
    };
    if mechanism != SCRAM_SHA_256 {
        return Ok(Err(AuthError::Unsupported(format!(
            "SASL authentication mechanism {mechanism} is not supported"
        ))));
    }
    let server_first = match exchange.client_first(&first) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    conn.send(PgWireBackendMessage::Authentication(
        Authentication::SASLContinue(Bytes::from(server_first)),
    ))?;
    conn.flush().await?;
    let body = match password_message(conn).await? {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let server_final = match exchange.client_final(&body) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    conn.send(PgWireBackendMessage::Authentication(
        Authentication::SASLFinal(Bytes::from(server_final)),
    ))?;
    Ok(Ok(()))
}
