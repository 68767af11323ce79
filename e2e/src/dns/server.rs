//! The DNS side: one UDP socket, each datagram a query answered from the cluster view.
//! UDP only: the answers are a few A records, far below the 512-byte limit that would
//! make a resolver retry over TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

use super::cluster::ClusterView;
use super::lookup::{self, Answer};

/// Seconds resolvers may keep an answer: short, because a replaced pod changes address.
const TTL: u32 = 1;

/// What became of one query, for the `result` label of the query counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with records (or NOERROR without data for a non-A type).
    Answered,
    /// NXDOMAIN: not a cluster name, or no such Service or pod.
    NoSuchName,
    /// Not a standard query.
    Refused,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::NoSuchName => "nxdomain",
            Outcome::Refused => "refused",
        }
    }
}

/// Builds the response to `request` (wire format): A records for cluster names that
/// exist, NOERROR without data for other record types of such names (so a resolver asking
/// A and AAAA together keeps the A answer), NXDOMAIN otherwise. `None` when the datagram
/// is not a DNS message at all (nothing to reply to).
pub fn respond(
    request: &[u8],
    domain: &str,
    resolve: impl Fn(&lookup::ClusterName) -> Answer,
) -> Option<(Vec<u8>, Outcome)> {
    let query = Message::from_vec(request).ok()?;
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(false);
    let question = match (query.message_type(), query.op_code(), query.queries()) {
        (MessageType::Query, OpCode::Query, [one]) => one.clone(),
        _ => {
            reply.set_response_code(ResponseCode::Refused);
            return reply.to_vec().ok().map(|b| (b, Outcome::Refused));
        }
    };
    reply.add_query(question.clone());
    let labels: Vec<String> = question
        .name()
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let answer = lookup::parse(&labels, domain).map_or(Answer::NoSuchName, |n| resolve(&n));
    let outcome = match answer {
        Answer::NoSuchName => {
            reply.set_response_code(ResponseCode::NXDomain);
            Outcome::NoSuchName
        }
        Answer::Addresses(ips) => {
            reply.set_authoritative(true);
            if question.query_type() == RecordType::A {
                for ip in ips {
                    reply.add_answer(Record::from_rdata(
                        question.name().clone(),
                        TTL,
                        RData::A(A(ip)),
                    ));
                }
            }
            Outcome::Answered
        }
    };
    reply.to_vec().ok().map(|b| (b, outcome))
}

/// Serves queries on `socket` until the process ends; `count` is told each outcome.
pub async fn serve(
    socket: UdpSocket,
    view: ClusterView,
    domain: Arc<str>,
    count: impl Fn(Outcome),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer): (usize, SocketAddr) = socket.recv_from(&mut buf).await?;
        let (pods, services) = view.snapshot();
        let Some((reply, outcome)) = respond(&buf[..len], &domain, |name| {
            lookup::resolve(name, &pods, &services)
        }) else {
            continue;
        };
        count(outcome);
        if let Err(e) = socket.send_to(&reply, peer).await {
            tracing::warn!(%peer, error = %e, "sending a DNS reply failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;
    use crate::dns::lookup::ClusterName;

    fn ask(name: &str, kind: RecordType) -> Vec<u8> {
        let mut msg = Message::new();
        msg.set_id(77)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(
                Name::from_ascii(name).unwrap_or_default(),
                kind,
            ));
        msg.to_vec().unwrap_or_default()
    }

    fn fixed(name: &ClusterName) -> Answer {
        match name {
            ClusterName::Service { service, .. } if service == "db" => {
                Answer::Addresses(vec![Ipv4Addr::new(10, 88, 0, 7)])
            }
            _ => Answer::NoSuchName,
        }
    }

    fn reply(request: &[u8]) -> (Message, Outcome) {
        let (bytes, outcome) =
            respond(request, "cluster.local", fixed).unwrap_or_else(|| panic!("no reply"));
        (
            Message::from_vec(&bytes).unwrap_or_else(|e| panic!("bad reply: {e}")),
            outcome,
        )
    }

    #[test]
    fn a_known_name_gets_its_a_records_and_the_query_id() {
        let (msg, outcome) = reply(&ask("DB.ns.svc.cluster.local.", RecordType::A));
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!(msg.id(), 77);
        assert_eq!(msg.response_code(), ResponseCode::NoError);
        let ips: Vec<_> = msg
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        assert_eq!(ips, vec![Ipv4Addr::new(10, 88, 0, 7)]);
    }

    #[test]
    fn aaaa_of_a_known_name_is_empty_not_nxdomain() {
        let (msg, outcome) = reply(&ask("db.ns.svc.", RecordType::AAAA));
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!(msg.response_code(), ResponseCode::NoError);
        assert!(msg.answers().is_empty());
    }

    #[test]
    fn unknown_and_foreign_names_are_nxdomain() {
        for name in ["other.ns.svc.cluster.local.", "example.com."] {
            let (msg, outcome) = reply(&ask(name, RecordType::A));
            assert_eq!(outcome, Outcome::NoSuchName, "{name}");
            assert_eq!(msg.response_code(), ResponseCode::NXDomain, "{name}");
        }
    }

    #[test]
    fn garbage_gets_no_reply_and_a_response_is_refused() {
        assert!(respond(b"\x01\x02", "cluster.local", fixed).is_none());
        let mut msg = Message::new();
        msg.set_id(5).set_message_type(MessageType::Response);
        let (reply, outcome) = respond(&msg.to_vec().unwrap_or_default(), "cluster.local", fixed)
            .unwrap_or_else(|| panic!("no reply"));
        assert_eq!(outcome, Outcome::Refused);
        let reply = Message::from_vec(&reply).unwrap_or_else(|e| panic!("bad reply: {e}"));
        assert_eq!(reply.response_code(), ResponseCode::Refused);
    }
}
