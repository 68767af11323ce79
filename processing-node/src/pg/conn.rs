//! One client connection's byte stream: framed reads of frontend messages and buffered
//! writes of backend messages, over plain TCP or TLS alike.

use bytes::{Buf, BytesMut};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::ErrorResponse;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pg::frontend::{
    self, FrontendMessage, MAX_MESSAGE_LEN, MAX_STARTUP_LEN, ProtocolError, StartupRequest,
};

/// A byte stream a connection can run over (TCP, or TLS over TCP).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol; the connection cannot continue.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// A backend message could not be encoded (e.g. a field over pgwire's size limits).
    #[error("encoding a backend message: {0}")]
    Encode(String),
    /// The client closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message")]
    UnexpectedEof,
}

/// A connection with its read buffer and its (explicitly flushed) write buffer.
///
/// Writes are buffered so that a whole response (RowDescription, rows, CommandComplete,
/// ReadyForQuery) goes out in as few packets as possible: the loopback round trip is the
/// floor of every statement, so we avoid a syscall per message.
pub struct Conn {
    io: Box<dyn Stream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered_in", &self.rbuf.len())
            .field("buffered_out", &self.wbuf.len())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Wraps a stream.
    pub fn new(io: Box<dyn Stream>) -> Self {
        Conn {
            io,
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// Reads until `n` bytes are buffered. `Ok(false)` on a clean end of stream before any
    /// byte of this read arrived.
    async fn fill(&mut self, n: usize) -> Result<bool, ConnError> {
        while self.rbuf.len() < n {
            self.rbuf.reserve(n - self.rbuf.len());
            let before = self.rbuf.len();
            let read = self.io.read_buf(&mut self.rbuf).await?;
            if read == 0 {
                if before == 0 {
                    return Ok(false);
                }
                return Err(ConnError::UnexpectedEof);
            }
        }
        Ok(true)
    }

    /// Reads one startup-phase packet; `None` if the client closed the connection first.
    pub async fn read_startup(&mut self) -> Result<Option<StartupRequest>, ConnError> {
        if !self.fill(4).await? {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], self.rbuf[3]]);
        let body_len = frontend::frame_length(len, MAX_STARTUP_LEN)?;
        if !self.fill(4 + body_len).await? {
            return Err(ConnError::UnexpectedEof);
        }
        self.rbuf.advance(4);
        let body = self.rbuf.split_to(body_len);
        Ok(Some(frontend::decode_startup(&body)?))
    }

    /// Reads one message; `None` if the client closed the connection between messages.
    pub async fn read_message(&mut self) -> Result<Option<FrontendMessage>, ConnError> {
        if !self.fill(5).await? {
            return Ok(None);
        }
        let tag = self.rbuf[0];
        let len = i32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
        // Reject unknown types before waiting for a body that may never come.
        if !b"QPBDECSHXdcfp".contains(&tag) {
            return Err(ProtocolError::UnknownType(tag).into());
        }
        let body_len = frontend::frame_length(len, MAX_MESSAGE_LEN)?;
        if !self.fill(5 + body_len).await? {
            return Err(ConnError::UnexpectedEof);
        }
        self.rbuf.advance(5);
        let body = self.rbuf.split_to(body_len);
        Ok(Some(frontend::decode_message(tag, &body)?))
    }

    /// Whether the client sent bytes we have not read yet (must be none when switching to
    /// TLS: bytes sent before the handshake would bypass it).
    pub fn has_buffered_input(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// Bytes queued for the client and not yet written.
    pub fn buffered_output(&self) -> usize {
        self.wbuf.len()
    }

    /// Queues a backend message.
    pub fn send(&mut self, msg: PgWireBackendMessage) -> Result<(), ConnError> {
        msg.encode(&mut self.wbuf)
            .map_err(|e| ConnError::Encode(e.to_string()))
    }

    /// Queues raw bytes (the one-byte SSL/GSS answers, which have no frame).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Queues an ErrorResponse with severity, SQLSTATE, message and optional detail.
    pub fn send_error(
        &mut self,
        severity: &str,
        code: &str,
        message: &str,
        detail: Option<&str>,
    ) -> Result<(), ConnError> {
        let mut fields = vec![
            (b'S', severity.to_owned()),
            (b'V', severity.to_owned()),
            (b'C', code.to_owned()),
            (b'M', message.to_owned()),
        ];
        if let Some(detail) = detail {
            fields.push((b'D', detail.to_owned()));
        }
        self.send(PgWireBackendMessage::ErrorResponse(ErrorResponse::new(
            fields,
        )))
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.wbuf.is_empty() {
            self.io.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Gives the stream back (to wrap it in TLS); anything unflushed is dropped.
    pub fn into_inner(self) -> Box<dyn Stream> {
        self.io
    }

    /// Closes the write side after flushing, so the client sees a clean end of stream.
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}
