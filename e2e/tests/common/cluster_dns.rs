//! Asking the harness's cluster DNS (`e2e-dns`, at `SHMDB_E2E_DNS`) what a name resolves
//! to, the way a pod's resolver would, so a test reaches a Service by its DNS name.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

/// The responder's address (`SHMDB_E2E_DNS`, set by run.sh; the bridge gateway by default).
pub fn server() -> Result<SocketAddr> {
    let text = std::env::var("SHMDB_E2E_DNS").unwrap_or_else(|_| "10.88.0.1:53".to_string());
    text.parse()
        .with_context(|| format!("SHMDB_E2E_DNS={text} is not an address"))
}

/// The A records of `name` (fully qualified, e.g. `db.ns.svc.cluster.local`); an error for
/// NXDOMAIN or any other failure, an empty list for a name without addresses yet.
pub async fn resolve(name: &str) -> Result<Vec<Ipv4Addr>> {
    let server = server()?;
    let socket = UdpSocket::bind("0.0.0.0:0").await?;
    let mut query = Message::new();
    let id = u16::try_from(std::process::id() & 0xffff).unwrap_or(1);
    query
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_ascii(format!("{name}."))?,
            RecordType::A,
        ));
    socket.send_to(&query.to_vec()?, server).await?;
    let mut buf = vec![0u8; 4096];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .with_context(|| format!("no answer from {server} for {name} within 5s"))??;
    let reply = Message::from_vec(&buf[..len])?;
    if reply.id() != id {
        bail!("answer for another query (id {} != {id})", reply.id());
    }
    if reply.response_code() != ResponseCode::NoError {
        bail!("{server} answered {} for {name}", reply.response_code());
    }
    Ok(reply
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}
