//! The frame format of the framed TCP data path, and the reading and writing of frames that
//! both ends share.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of one protobuf
//! message: a `StreamRequest` from client to node, a `StreamResponse` back (the messages of
//! the gRPC `Stream` method, so both paths carry exactly the same requests). Lengths are
//! capped, so a peer that sends garbage costs at most one capped buffer before the
//! connection is closed; decoding is `tokio_util`'s length-delimited codec.

use bytes::{BufMut as _, Bytes, BytesMut};
use futures::StreamExt as _;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::metrics::Direction;
use super::metrics::FramedMetrics;

/// Bytes of the length prefix.
pub const LENGTH_BYTES: usize = 4;

/// Frames queued for one write are cut off at about this many bytes, so one huge burst
/// does not become one huge buffer.
const COALESCE_BYTES: usize = 256 << 10;

/// A write buffer that grew beyond this (large values) is given back after the write.
const KEEP_BUFFER_BYTES: usize = 1 << 20;

/// Why no frame could be read, or one could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced (or the caller built) a frame over the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame's bytes are not the expected protobuf message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// The connection failed (or ended inside a frame).
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Appends `message` to `out` as one frame; refuses a message over `max` bytes (nothing is
/// appended then).
pub fn encode<M: Message>(message: &M, max: usize, out: &mut BytesMut) -> Result<(), FrameError> {
    let len = message.encoded_len();
    if len > max || u32::try_from(len).is_err() {
        return Err(FrameError::TooLarge { len, max });
    }
    out.reserve(LENGTH_BYTES + len);
    out.put_u32(len as u32);
    message
        .encode(out)
        .map_err(|e| FrameError::Io(std::io::Error::other(e)))
}

/// Reads frames from one connection, each decoded as an `M`.
pub struct FrameReader<R> {
    inner: FramedRead<R, LengthDelimitedCodec>,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames of at most `max` bytes (the prefix not counted) from `reader`.
    pub fn new(reader: R, max: usize) -> FrameReader<R> {
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(LENGTH_BYTES)
            .max_frame_length(max)
            .new_codec();
        FrameReader {
            inner: FramedRead::with_capacity(reader, codec, 64 << 10),
            max,
        }
    }

    /// The next message and its size on the wire (prefix included); `None` when the peer
    /// closed the connection between two frames.
    pub async fn next<M: Message + Default>(&mut self) -> Result<Option<(M, usize)>, FrameError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Ok(frame)) => {
                let wire = LENGTH_BYTES + frame.len();
                let frame: Bytes = frame.freeze();
                Ok(Some((M::decode(frame)?, wire)))
            }
            Some(Err(e)) => {
                let too_long = e.get_ref().is_some_and(|inner| {
                    inner.is::<tokio_util::codec::LengthDelimitedCodecError>()
                });
                if too_long {
                    let len = announced_length(self.inner.read_buffer());
                    Err(FrameError::TooLarge { len, max: self.max })
                } else {
                    Err(FrameError::Io(e))
                }
            }
        }
    }
}

/// The length the frame at the start of `buffer` announces (for the error message).
fn announced_length(buffer: &BytesMut) -> usize {
    match buffer.get(..LENGTH_BYTES) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]) as usize,
        _ => 0,
    }
}

/// Writes every message queued on `queue` to `writer`, encoding all that are queued at once
/// into one buffer and writing it with one call, until the queue closes (then the write side
/// is shut down) or a write fails. A message over `max` bytes is logged and skipped (senders
/// check sizes first and answer such a request themselves; this is the last line).
pub async fn write_frames<W, M>(
    mut writer: W,
    mut queue: mpsc::UnboundedReceiver<M>,
    max: usize,
    metrics: FramedMetrics,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    M: Message,
{
    let mut out = BytesMut::with_capacity(64 << 10);
    while let Some(first) = queue.recv().await {
        // Let every task that is ready to run queue its frame first: with many requests in
        // flight they then share one write (and one read on the other end), which costs
        // less than a system call each; alone, the yield costs one pass of the scheduler.
        tokio::task::yield_now().await;
        let mut frames = 0u64;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match encode(&message, max, &mut out) {
                Ok(()) => frames += 1,
                Err(e) => tracing::warn!(error = %e, "framed transport: frame not sent"),
            }
            if out.len() < COALESCE_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if out.is_empty() {
            continue;
        }
        writer.write_all(&out).await?;
        metrics.count(Direction::Sent, frames, out.len());
        out.clear();
        if out.capacity() > KEEP_BUFFER_BYTES {
            out = BytesMut::with_capacity(64 << 10);
        }
    }
    writer.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmdb_proto::storage as pb;

    fn request(id: u64, value_len: usize) -> pb::StreamRequest {
        pb::StreamRequest {
            id,
            body: Some(pb::stream_request::Body::Batch(pb::BatchRequest {
                map_version: id * 3,
                ops: vec![pb::Op {
                    op: Some(pb::op::Op::Put(pb::PutOp {
                        table: 1,
                        key: Bytes::from(format!("key-{id}")),
                        value: Bytes::from(vec![id as u8; value_len]),
                    })),
                }],
            })),
        }
    }

    #[tokio::test]
    async fn frames_split_across_many_partial_reads_decode_in_order() {
        // A 7-byte pipe: every frame arrives in many pieces, prefixes split too.
        let (client, server) = tokio::io::duplex(7);
        let sent: Vec<_> = (1..=40u64)
            .map(|i| request(i, (i as usize * 37) % 300))
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        for r in &sent {
            tx.send(r.clone()).expect("queued");
        }
        drop(tx);
        let metrics = FramedMetrics::new().expect("metrics");
        let writer = tokio::spawn(write_frames(client, rx, 1 << 20, metrics.clone()));
        let mut reader = FrameReader::new(server, 1 << 20);
        let mut got = Vec::new();
        while let Some((message, wire)) = reader.next::<pb::StreamRequest>().await.expect("frame") {
            assert_eq!(wire, LENGTH_BYTES + message.encoded_len());
            got.push(message);
        }
        assert_eq!(got, sent);
        assert!(matches!(writer.await, Ok(Ok(()))));
        assert_eq!(metrics.frames(Direction::Sent), 40);
        let bytes: usize = sent.iter().map(|r| LENGTH_BYTES + r.encoded_len()).sum();
        assert_eq!(metrics.bytes(Direction::Sent), bytes as u64);
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_from_its_prefix_alone() {
        let (mut client, server) = tokio::io::duplex(64);
        // Announces 4 GiB and sends nothing more: refused at once, nothing reserved for it.
        client
            .write_all(&u32::MAX.to_be_bytes())
            .await
            .expect("write");
        let mut reader = FrameReader::new(server, 1 << 20);
        let err = reader.next::<pb::StreamRequest>().await.err();
        assert!(
            matches!(err, Some(FrameError::TooLarge { len, max }) if len == u32::MAX as usize && max == 1 << 20),
            "{err:?}"
        );
        // And a sender never builds one.
        let mut out = BytesMut::new();
        let err = encode(&request(1, 2048), 1024, &mut out).err();
        assert!(
            matches!(err, Some(FrameError::TooLarge { max: 1024, .. })),
            "{err:?}"
        );
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn garbage_inside_a_frame_is_malformed_and_a_cut_frame_is_an_error() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(&5u32.to_be_bytes()).await.expect("write");
        client.write_all(&[0xff; 5]).await.expect("write");
        let mut reader = FrameReader::new(server, 1 << 20);
        let err = reader.next::<pb::StreamRequest>().await.err();
        assert!(matches!(err, Some(FrameError::Malformed(_))), "{err:?}");

        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(&100u32.to_be_bytes())
            .await
            .expect("write");
        client.write_all(b"only part").await.expect("write");
        drop(client);
        let mut reader = FrameReader::new(server, 1 << 20);
        let err = reader.next::<pb::StreamRequest>().await.err();
        assert!(matches!(err, Some(FrameError::Io(_))), "{err:?}");

        // A close between frames is the ordinary end, not an error.
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let mut reader = FrameReader::new(server, 1 << 20);
        assert!(matches!(reader.next::<pb::StreamRequest>().await, Ok(None)));
    }

    #[tokio::test]
    async fn a_message_too_large_to_write_is_skipped_and_the_rest_are_written() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(request(1, 10)).expect("queued");
        tx.send(request(2, 4000)).expect("queued");
        tx.send(request(3, 10)).expect("queued");
        drop(tx);
        let metrics = FramedMetrics::new().expect("metrics");
        let writer = tokio::spawn(write_frames(client, rx, 1000, metrics));
        let mut reader = FrameReader::new(server, 1000);
        let mut ids = Vec::new();
        while let Some((message, _)) = reader.next::<pb::StreamRequest>().await.expect("frame") {
            ids.push(message.id);
        }
        assert_eq!(ids, vec![1, 3]);
        assert!(matches!(writer.await, Ok(Ok(()))));
    }
}
