//! The PostgreSQL front end: the wire protocol (v3) that psql and every PostgreSQL driver
//! speak, served over TCP (optionally TLS) and translated into calls on a SQL
//! [`Session`](crate::sql::Session).
//!
//! Everything protocol-shaped lives in this folder and nothing of it leaks into the engine:
//! the SQL layer sees statements, parameters as [`Datum`](crate::Datum)s and a cancel flag;
//! this module owns sockets, framing, authentication, the extended-query state (statements,
//! portals), COPY sub-protocol, text/binary value formats and SQLSTATE-carrying error
//! responses.
//!
//! We use the `pgwire` crate for the backend message types and their encoding. Frontend
//! messages are decoded by our own bounds-checked decoder ([`frontend`]) because pgwire 0.42's
//! decoders read fixed-size fields without checking the remaining length (a truncated Bind
//! panics) — and malformed input from the network must never take a connection task, let
//! alone the process, down. The decoder is pure, so it is also the fuzz target.

pub mod auth;
pub mod cancel;
pub mod conn;
pub mod copy;
pub mod frontend;
pub mod handler;
pub mod metrics;
pub mod server;
pub mod startup;
pub mod tls;
pub mod types;

pub use auth::{AuthConfig, UserSecret};
pub use server::{PgServer, ServerConfig, ServerHandle};
pub use tls::TlsConfig;
