//! Fragments on the wire: a fixed header in front of each piece of a protobuf message, so
//! a message of any size travels through fixed-size registered buffers.
//!
//! Reliable-connected queue pairs deliver in order, so a message's fragments arrive one
//! after another (fragments of different messages may interleave when the sender batches
//! several messages under one doorbell); the reassembler checks that order and treats any
//! violation as a broken connection rather than guessing.

use std::collections::HashMap;

/// Bytes of the header in front of every fragment.
pub const HEADER_BYTES: usize = 24;

/// Flag: this fragment completes its message.
const FLAG_LAST: u8 = 1;

/// What a message carries; requests and responses share one numbering so a stray fragment
/// is recognised as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A `BatchRequest` (client → node).
    BatchRequest,
    /// A `ScanRequest` (client → node).
    ScanRequest,
    /// A `BatchResponse` (node → client).
    BatchResponse,
    /// A `ScanResponse` (node → client).
    ScanResponse,
    /// The node refused the request as a whole; the payload is the reason (UTF-8).
    Rejected,
    /// A liveness probe with no payload: its only purpose is a send that fails if the peer
    /// is gone, since RDMA tells a sender nothing until it sends.
    Ping,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::BatchRequest => 1,
            Kind::ScanRequest => 2,
            Kind::BatchResponse => 3,
            Kind::ScanResponse => 4,
            Kind::Rejected => 5,
            Kind::Ping => 6,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            1 => Kind::BatchRequest,
            2 => Kind::ScanRequest,
            3 => Kind::BatchResponse,
            4 => Kind::ScanResponse,
            5 => Kind::Rejected,
            6 => Kind::Ping,
            _ => return None,
        })
    }
}

/// The fixed header of one fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the whole message is.
    pub kind: Kind,
    /// Matches a response to its request.
    pub request_id: u64,
    /// Bytes of the whole message.
    pub total_len: u32,
    /// Where this fragment's payload starts within the message.
    pub offset: u32,
    /// Bytes of payload in this fragment.
    pub len: u32,
    /// Whether this fragment completes the message.
    pub last: bool,
}

impl Header {
    /// The header's wire form.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0] = self.kind.code();
        out[1] = if self.last { FLAG_LAST } else { 0 };
        out[4..8].copy_from_slice(&self.offset.to_le_bytes());
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.total_len.to_le_bytes());
        out[20..24].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// Parses a fragment's header; `None` for anything malformed.
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let head = bytes.get(..HEADER_BYTES)?;
        let u32_at = |i: usize| {
            head.get(i..i + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
        };
        let request_id = head
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)?;
        Some(Header {
            kind: Kind::from_code(head[0])?,
            last: head[1] & FLAG_LAST != 0,
            offset: u32_at(4)?,
            request_id,
            total_len: u32_at(16)?,
            len: u32_at(20)?,
        })
    }
}

/// Cuts a message into fragments whose header plus payload fit in `slot_bytes`.
///
/// An empty message is one empty fragment, so every message is at least one send.
pub fn fragments(
    kind: Kind,
    request_id: u64,
    payload: &[u8],
    slot_bytes: usize,
) -> Result<Vec<(Header, &[u8])>, FrameError> {
    let per_fragment = slot_bytes
        .checked_sub(HEADER_BYTES)
        .filter(|n| *n > 0)
        .ok_or(FrameError::SlotTooSmall(slot_bytes))?;
    let total_len =
        u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge(payload.len()))?;
    let mut out = Vec::with_capacity(payload.len() / per_fragment + 1);
    let mut offset = 0usize;
    loop {
        let end = (offset + per_fragment).min(payload.len());
        let chunk = &payload[offset..end];
        let last = end == payload.len();
        out.push((
            Header {
                kind,
                request_id,
                total_len,
                offset: offset as u32,
                len: chunk.len() as u32,
                last,
            },
            chunk,
        ));
        if last {
            return Ok(out);
        }
        offset = end;
    }
}

/// Why a fragment could not be framed or reassembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The buffer slot cannot hold a header and any payload.
    #[error("slot of {0} bytes cannot hold a fragment")]
    SlotTooSmall(usize),
    /// The message exceeds the limit (or 4 GiB).
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A fragment whose header does not parse or whose length disagrees with its header.
    #[error("malformed fragment: {0}")]
    Malformed(String),
    /// A fragment that does not continue its message where the previous one ended.
    #[error(
        "fragment out of order for request {request_id}: expected offset {expected}, got {got}"
    )]
    OutOfOrder {
        /// The message.
        request_id: u64,
        /// Where the next fragment should start.
        expected: u32,
        /// Where it started.
        got: u32,
    },
}

/// A whole message, reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// What it is.
    pub kind: Kind,
    /// Its request id.
    pub request_id: u64,
    /// The protobuf bytes (or the rejection reason).
    pub payload: Vec<u8>,
}

struct Partial {
    kind: Kind,
    total_len: u32,
    buf: Vec<u8>,
}

/// Reassembles messages from fragments arriving in order per message.
pub struct Reassembler {
    max_message: usize,
    partial: HashMap<u64, Partial>,
}

impl Reassembler {
    /// A reassembler refusing messages above `max_message` bytes (so a corrupt header
    /// cannot make us allocate gigabytes).
    pub fn new(max_message: usize) -> Self {
        Reassembler {
            max_message,
            partial: HashMap::new(),
        }
    }

    /// Messages still missing fragments.
    pub fn in_progress(&self) -> usize {
        self.partial.len()
    }

    /// Takes one fragment (header and payload as received); returns the message it
    /// completes, if any.
    pub fn push(&mut self, fragment: &[u8]) -> Result<Option<Message>, FrameError> {
        let header =
            Header::decode(fragment).ok_or_else(|| FrameError::Malformed("bad header".into()))?;
        let body = &fragment[HEADER_BYTES..];
        if body.len() != header.len as usize {
            return Err(FrameError::Malformed(format!(
                "header says {} payload bytes, fragment has {}",
                header.len,
                body.len()
            )));
        }
        if header.total_len as usize > self.max_message {
            return Err(FrameError::TooLarge(header.total_len as usize));
        }
        let expected = self
            .partial
            .get(&header.request_id)
            .map(|p| p.buf.len() as u32)
            .unwrap_or(0);
        if header.offset != expected {
            return Err(FrameError::OutOfOrder {
                request_id: header.request_id,
                expected,
                got: header.offset,
            });
        }
        let end = u64::from(header.offset) + u64::from(header.len);
        if end > u64::from(header.total_len)
            || (header.last != (end == u64::from(header.total_len)))
        {
            return Err(FrameError::Malformed(format!(
                "fragment [{}, {end}) of a {}-byte message (last: {})",
                header.offset, header.total_len, header.last
            )));
        }
        if header.offset == 0 && header.last {
            // The common case: a message in one fragment needs no bookkeeping.
            return Ok(Some(Message {
                kind: header.kind,
                request_id: header.request_id,
                payload: body.to_vec(),
            }));
        }
        let partial = self
            .partial
            .entry(header.request_id)
            .or_insert_with(|| Partial {
                kind: header.kind,
                total_len: header.total_len,
                buf: Vec::with_capacity(header.total_len as usize),
            });
        if partial.kind != header.kind || partial.total_len != header.total_len {
            return Err(FrameError::Malformed(format!(
                "fragment of request {} changes kind or length mid-message",
                header.request_id
            )));
        }
        partial.buf.extend_from_slice(body);
        if !header.last {
            return Ok(None);
        }
        let done = self.partial.remove(&header.request_id);
        Ok(done.map(|p| Message {
            kind: p.kind,
            request_id: header.request_id,
            payload: p.buf,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(header: &Header, chunk: &[u8]) -> Vec<u8> {
        let mut out = header.encode().to_vec();
        out.extend_from_slice(chunk);
        out
    }

    #[test]
    fn headers_survive_encoding() {
        let h = Header {
            kind: Kind::ScanResponse,
            request_id: u64::MAX - 3,
            total_len: 123_456,
            offset: 65_000,
            len: 4_000,
            last: false,
        };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        assert_eq!(Header::decode(&h.encode()[..10]), None);
        let mut bad = h.encode();
        bad[0] = 99;
        assert_eq!(Header::decode(&bad), None);
    }

    #[test]
    fn a_large_message_is_cut_to_the_slot_and_reassembled_byte_exact() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let frags = fragments(Kind::BatchRequest, 9, &payload, 4096).expect("fragments");
        assert_eq!(frags.len(), 100_000usize.div_ceil(4096 - HEADER_BYTES));
        assert!(
            frags
                .iter()
                .all(|(h, c)| c.len() + HEADER_BYTES <= 4096 && h.len as usize == c.len())
        );
        assert_eq!(frags.iter().filter(|(h, _)| h.last).count(), 1);
        let mut r = Reassembler::new(1 << 20);
        let mut done = Vec::new();
        for (h, c) in &frags {
            if let Some(m) = r.push(&wire(h, c)).expect("in order") {
                done.push(m);
            }
        }
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].payload, payload);
        assert_eq!(done[0].request_id, 9);
        assert_eq!(r.in_progress(), 0);
    }

    #[test]
    fn interleaved_messages_reassemble_separately() {
        let a = vec![1u8; 10_000];
        let b = vec![2u8; 7_000];
        let fa = fragments(Kind::BatchResponse, 1, &a, 1024).expect("a");
        let fb = fragments(Kind::ScanResponse, 2, &b, 1024).expect("b");
        let mut r = Reassembler::new(1 << 20);
        let mut done = Vec::new();
        let mut ia = fa.iter();
        let mut ib = fb.iter();
        loop {
            let (x, y) = (ia.next(), ib.next());
            if x.is_none() && y.is_none() {
                break;
            }
            for (h, c) in x.into_iter().chain(y) {
                done.extend(r.push(&wire(h, c)).expect("ok"));
            }
        }
        assert_eq!(done.len(), 2);
        let by_id = |id| {
            done.iter()
                .find(|m| m.request_id == id)
                .map(|m| m.payload.clone())
        };
        assert_eq!(by_id(1), Some(a));
        assert_eq!(by_id(2), Some(b));
    }

    #[test]
    fn an_empty_message_is_one_fragment() {
        let frags = fragments(Kind::Ping, 0, &[], 64).expect("ping");
        assert_eq!(frags.len(), 1);
        assert!(frags[0].0.last);
        let mut r = Reassembler::new(16);
        let m = r.push(&wire(&frags[0].0, frags[0].1)).expect("ok");
        assert_eq!(m.map(|m| m.kind), Some(Kind::Ping));
    }

    #[test]
    fn out_of_order_malformed_and_oversized_fragments_are_errors() {
        let payload = vec![5u8; 3000];
        let frags = fragments(Kind::BatchRequest, 4, &payload, 1024).expect("f");
        let mut r = Reassembler::new(1 << 20);
        // Skipping the first fragment is detected.
        let err = r.push(&wire(&frags[1].0, frags[1].1)).err();
        assert!(
            matches!(err, Some(FrameError::OutOfOrder { expected: 0, .. })),
            "{err:?}"
        );
        // A fragment whose body disagrees with its header.
        let mut short = wire(&frags[0].0, frags[0].1);
        short.pop();
        assert!(matches!(r.push(&short), Err(FrameError::Malformed(_))));
        // A message above the limit is refused before anything is allocated.
        let mut small = Reassembler::new(100);
        assert!(matches!(
            small.push(&wire(&frags[0].0, frags[0].1)),
            Err(FrameError::TooLarge(3000))
        ));
        assert!(matches!(
            fragments(Kind::Ping, 0, &[], HEADER_BYTES),
            Err(FrameError::SlotTooSmall(_))
        ));
    }
}
