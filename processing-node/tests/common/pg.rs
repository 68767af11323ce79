//! Shared set-up of the wire-protocol tests: a processing node's PostgreSQL front end on
//! 127.0.0.1:0 over the test cluster, a tokio-postgres client for it, and a raw protocol
//! client for what drivers never send (malformed messages, hand-made batches).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shmdb_processing_node::pg::{PgServer, ServerConfig, ServerHandle};
use shmdb_processing_node::sql::SqlEngine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::Cluster;

/// The user tests connect as.
pub const USER: &str = "shmdb";

/// A PostgreSQL front end over a one-node test cluster.
pub struct PgTest {
    pub cluster: Cluster,
    pub server: ServerHandle,
}

impl PgTest {
    /// Trust authentication, no TLS.
    pub async fn start() -> anyhow::Result<PgTest> {
        Self::start_with(|_| {}).await
    }

    /// With a customised server configuration (auth, TLS).
    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> anyhow::Result<PgTest> {
        let cluster = Cluster::start(1, 1).await?;
        let engine = cluster.engine(1)?;
        let mut config = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        configure(&mut config);
        let server = PgServer::start(config, SqlEngine::new(engine)).await?;
        Ok(PgTest { cluster, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// A connection string for this server.
    pub fn url(&self, user: &str, password: Option<&str>) -> String {
        let mut s = format!(
            "host=127.0.0.1 port={} user={user} dbname=shmdb connect_timeout=10",
            self.addr().port()
        );
        if let Some(p) = password {
            s.push_str(&format!(" password={p}"));
        }
        s
    }

    /// A tokio-postgres client (plain text, trust).
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(USER, None), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
        self.cluster.shutdown().await;
    }
}

/// A backend message as the raw client sees it.
#[derive(Debug, Clone)]
pub struct Backend {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Backend {
    /// The SQLSTATE of an ErrorResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.field(b'C')
    }

    /// A field of an ErrorResponse / NoticeResponse.
    pub fn field(&self, code: u8) -> Option<String> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut i = 0;
        while i < self.body.len() && self.body[i] != 0 {
            let c = self.body[i];
            let end = self.body[i + 1..].iter().position(|&b| b == 0)? + i + 1;
            if c == code {
                return Some(String::from_utf8_lossy(&self.body[i + 1..end]).into_owned());
            }
            i = end + 1;
        }
        None
    }

    /// The values of a DataRow in text format (`None` = NULL).
    pub fn row(&self) -> Vec<Option<String>> {
        let b = &self.body;
        let n = i16::from_be_bytes([b[0], b[1]]) as usize;
        let mut pos = 2;
        let mut out = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes([b[pos], b[pos + 1], b[pos + 2], b[pos + 3]]);
            pos += 4;
            if len < 0 {
                out.push(None);
            } else {
                let len = len as usize;
                out.push(Some(
                    String::from_utf8_lossy(&b[pos..pos + len]).into_owned(),
                ));
                pos += len;
            }
        }
        out
    }
}

/// A hand-driven protocol client.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Raw> {
        Ok(Raw {
            stream: TcpStream::connect(addr).await?,
        })
    }

    /// Connects and completes a trust startup, up to the first ReadyForQuery.
    pub async fn startup(addr: SocketAddr) -> anyhow::Result<Raw> {
        let mut raw = Raw::connect(addr).await?;
        let mut body = vec![0, 3, 0, 0];
        body.extend_from_slice(format!("user\0{USER}\0database\0shmdb\0\0").as_bytes());
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        raw.send_bytes(&packet).await?;
        raw.until_ready().await?;
        Ok(raw)
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Sends a typed message.
    pub async fn send(&mut self, tag: u8, body: &[u8]) -> anyhow::Result<()> {
        let mut out = vec![tag];
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
        self.send_bytes(&out).await
    }

    /// Reads one backend message; `None` at end of stream.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Backend>> {
        let read = async {
            let mut head = [0u8; 5];
            match self.stream.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(anyhow::Error::from(e)),
            }
            let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut body = vec![0u8; len - 4];
            self.stream.read_exact(&mut body).await?;
            Ok(Some(Backend { tag: head[0], body }))
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .map_err(|_| anyhow::anyhow!("no message from the server within 30 s"))?
    }

    /// Reads messages up to and including ReadyForQuery; returns them all.
    pub async fn until_ready(&mut self) -> anyhow::Result<Vec<Backend>> {
        let mut out = Vec::new();
        loop {
            match self.recv().await? {
                Some(m) => {
                    let done = m.tag == b'Z';
                    out.push(m);
                    if done {
                        return Ok(out);
                    }
                }
                None => anyhow::bail!("connection closed before ReadyForQuery: {out:?}"),
            }
        }
    }

    /// Reads until the server closes the connection; returns what it sent.
    pub async fn until_closed(&mut self) -> anyhow::Result<Vec<Backend>> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await? {
            out.push(m);
        }
        Ok(out)
    }

    pub async fn query(&mut self, sql: &str) -> anyhow::Result<Vec<Backend>> {
        self.send(b'Q', &cstr(sql)).await?;
        self.until_ready().await
    }
}

/// A NUL-terminated string.
pub fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A Parse body.
pub fn parse(name: &str, sql: &str, oids: &[u32]) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend_from_slice(&cstr(sql));
    b.extend_from_slice(&(oids.len() as u16).to_be_bytes());
    for o in oids {
        b.extend_from_slice(&o.to_be_bytes());
    }
    b
}

/// A Bind body with one format code for all parameters and all results.
pub fn bind(
    portal: &str,
    stmt: &str,
    format: i16,
    params: &[Option<&[u8]>],
    result_format: i16,
) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend_from_slice(&cstr(stmt));
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&format.to_be_bytes());
    b.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        match p {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&result_format.to_be_bytes());
    b
}

/// An Execute body.
pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend_from_slice(&max_rows.to_be_bytes());
    b
}

/// The engine's answer when SQL is not implemented yet; tests that need real SQL skip
/// themselves on it (the SQL engine is written concurrently with the protocol).
pub fn sql_unsupported(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.code().code() == "0A000" && d.message() == "SQL is not supported")
}

/// A shared engine handle type for tests that build servers by hand.
pub type SharedSql = Arc<SqlEngine>;
