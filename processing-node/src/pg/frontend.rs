//! Decoding of frontend (client → server) messages, bounds-checked and panic-free.
//!
//! A message on the wire is a type byte, a big-endian `i32` length that counts itself, and a
//! body; the startup-phase messages (SSLRequest, StartupMessage, CancelRequest) have no type
//! byte. The connection code reads the frame (see [`frame_length`]) and hands the body to
//! [`decode_message`] / [`decode_startup`]; both are pure functions over bytes so the fuzz
//! targets can call them directly. Every field read checks the remaining length, a body must
//! be consumed exactly, and strings must be valid UTF-8 — anything else is a
//! [`ProtocolError`] (SQLSTATE 08P01), never a panic.

use bytes::Bytes;

/// Largest body accepted after startup: PostgreSQL's own limit (1 GB), so a length field
/// cannot make us allocate more than a real server would.
pub const MAX_MESSAGE_LEN: usize = (1 << 30) - 1;

/// Largest startup-phase packet (PostgreSQL accepts 10,000 bytes as well).
pub const MAX_STARTUP_LEN: usize = 10_000;

/// The magic "protocol versions" of the special startup-phase requests.
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSS_REQUEST_CODE: u32 = 80_877_104;
const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// Why a frontend message could not be decoded. All of them are protocol violations
/// (SQLSTATE 08P01): the connection is told so and closed, because framing can no longer be
/// trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A length field is impossible (below its own size or above the limit).
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// A field runs past the end of the message.
    #[error("message truncated while reading {0}")]
    Truncated(&'static str),
    /// Bytes were left over after the last field.
    #[error("{0} bytes of unexpected data at the end of the message")]
    TrailingBytes(usize),
    /// A string is not valid UTF-8 (we only speak UTF8).
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// A message type byte that no frontend message has.
    #[error("invalid frontend message type {0}")]
    UnknownType(u8),
    /// A field has a value outside its domain (e.g. a Describe target other than S/P).
    #[error("invalid value in {0}")]
    InvalidValue(&'static str),
    /// A startup packet with a protocol version we do not speak.
    #[error("unsupported frontend protocol {0}.{1}: server supports 3.0")]
    UnsupportedProtocol(u16, u16),
}

impl ProtocolError {
    /// The SQLSTATE of every protocol violation.
    pub const SQLSTATE: &'static str = "08P01";
}

/// The startup-phase request a new connection opens with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest {
    /// SSLRequest: the client asks to switch to TLS.
    Ssl,
    /// GSSENCRequest: refused (we have no GSSAPI), the client then continues without.
    GssEnc,
    /// CancelRequest: cancel the running statement of the backend with this key.
    Cancel {
        /// Backend process id from BackendKeyData.
        pid: i32,
        /// Secret key from BackendKeyData (4 bytes in protocol 3.0).
        secret: Bytes,
    },
    /// StartupMessage with its parameters (user, database, application_name, options...).
    Startup {
        /// Requested major protocol version (3).
        major: u16,
        /// Requested minor protocol version (we answer 3.0 and negotiate down).
        minor: u16,
        /// Name/value pairs in the order sent.
        params: Vec<(String, String)>,
    },
}

/// Which object a Describe or Close names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A prepared statement ('S').
    Statement,
    /// A portal ('P').
    Portal,
}

/// A frontend message after startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// 'Q': a simple query string.
    Query(String),
    /// 'P': prepare a statement.
    Parse {
        /// Statement name ("" = the unnamed statement).
        name: String,
        /// The SQL text.
        query: String,
        /// Parameter type OIDs the client specified (0 = infer).
        param_oids: Vec<u32>,
    },
    /// 'B': bind parameters to a statement, creating a portal.
    Bind {
        /// Portal name ("" = the unnamed portal).
        portal: String,
        /// Statement name.
        statement: String,
        /// Parameter format codes (0 text, 1 binary): none, one for all, or one each.
        param_formats: Vec<i16>,
        /// Parameter values; `None` is NULL.
        params: Vec<Option<Bytes>>,
        /// Result column format codes, with the same none/one/each rule.
        result_formats: Vec<i16>,
    },
    /// 'D': describe a statement or portal.
    Describe {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: String,
    },
    /// 'E': run a portal, returning at most `max_rows` rows (0 = all).
    Execute {
        /// Portal name.
        portal: String,
        /// Row limit (0 or negative = no limit).
        max_rows: i32,
    },
    /// 'C': close a statement or portal.
    Close {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: String,
    },
    /// 'S': end of an extended-query batch.
    Sync,
    /// 'H': send what is buffered.
    Flush,
    /// 'X': the client is leaving.
    Terminate,
    /// 'd': a chunk of COPY data.
    CopyData(Bytes),
    /// 'c': COPY data is complete.
    CopyDone,
    /// 'f': the client aborts the COPY, with a reason.
    CopyFail(String),
    /// 'p': a password / SASL message; its layout depends on the authentication step, so it
    /// stays raw here and [`decode_sasl_initial`] / the SCRAM code parse it.
    Password(Bytes),
}

/// The length of the body that follows a frame header, from the header's length field
/// (which counts itself). `max` bounds it, so a hostile length cannot make us buffer more.
pub fn frame_length(len_field: i32, max: usize) -> Result<usize, ProtocolError> {
    if len_field < 4 {
        return Err(ProtocolError::BadLength(i64::from(len_field)));
    }
    let body = (len_field as usize) - 4;
    if body > max {
        return Err(ProtocolError::BadLength(i64::from(len_field)));
    }
    Ok(body)
}

/// A bounds-checked reader over one message body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.remaining() < n {
            return Err(ProtocolError::Truncated(what));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.take(1, what)?[0])
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, ProtocolError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, ProtocolError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::Truncated(what))?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| ProtocolError::InvalidUtf8(what))?;
        self.pos += end + 1;
        Ok(s.to_owned())
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    fn finish(&self) -> Result<(), ProtocolError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ProtocolError::TrailingBytes(n)),
        }
    }
}

/// Decodes a startup-phase packet body (everything after the length field).
pub fn decode_startup(body: &[u8]) -> Result<StartupRequest, ProtocolError> {
    let mut r = Reader::new(body);
    let code = r.u32("protocol version")?;
    match code {
        SSL_REQUEST_CODE => {
            r.finish()?;
            Ok(StartupRequest::Ssl)
        }
        GSS_REQUEST_CODE => {
            r.finish()?;
            Ok(StartupRequest::GssEnc)
        }
        CANCEL_REQUEST_CODE => {
            let pid = r.i32("cancel pid")?;
            let secret = r.rest();
            if secret.len() < 4 || secret.len() > 256 {
                return Err(ProtocolError::InvalidValue("cancel secret key"));
            }
            Ok(StartupRequest::Cancel {
                pid,
                secret: Bytes::copy_from_slice(secret),
            })
        }
        version => {
            let major = (version >> 16) as u16;
            let minor = (version & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocol(major, minor));
            }
            let mut params = Vec::new();
            loop {
                let name = r.cstr("startup parameter name")?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr("startup parameter value")?;
                params.push((name, value));
            }
            r.finish()?;
            Ok(StartupRequest::Startup {
                major,
                minor,
                params,
            })
        }
    }
}

fn target(byte: u8) -> Result<Target, ProtocolError> {
    match byte {
        b'S' => Ok(Target::Statement),
        b'P' => Ok(Target::Portal),
        _ => Err(ProtocolError::InvalidValue("describe/close target")),
    }
}

/// Reads a count followed by that many items, refusing counts the body cannot hold (so a
/// hostile count cannot make us pre-allocate).
fn counted<T>(
    r: &mut Reader<'_>,
    min_item: usize,
    what: &'static str,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<T, ProtocolError>,
) -> Result<Vec<T>, ProtocolError> {
    let n = usize::from(r.u16(what)?);
    if n.saturating_mul(min_item) > r.remaining() {
        return Err(ProtocolError::Truncated(what));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(item(r)?);
    }
    Ok(out)
}

/// Decodes one message after startup from its type byte and body.
pub fn decode_message(tag: u8, body: &[u8]) -> Result<FrontendMessage, ProtocolError> {
    let mut r = Reader::new(body);
    let msg = match tag {
        b'Q' => FrontendMessage::Query(r.cstr("query string")?),
        b'P' => {
            let name = r.cstr("statement name")?;
            let query = r.cstr("query string")?;
            let param_oids = counted(&mut r, 4, "parameter types", |r| r.u32("parameter type"))?;
            FrontendMessage::Parse {
                name,
                query,
                param_oids,
            }
        }
        b'B' => {
            let portal = r.cstr("portal name")?;
            let statement = r.cstr("statement name")?;
            let param_formats = counted(&mut r, 2, "parameter formats", |r| {
                r.i16("parameter format")
            })?;
            let params = counted(&mut r, 4, "parameter values", |r| {
                let len = r.i32("parameter length")?;
                if len == -1 {
                    Ok(None)
                } else if len < 0 {
                    Err(ProtocolError::InvalidValue("parameter length"))
                } else {
                    Ok(Some(Bytes::copy_from_slice(
                        r.take(len as usize, "parameter value")?,
                    )))
                }
            })?;
            let result_formats = counted(&mut r, 2, "result formats", |r| r.i16("result format"))?;
            FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            }
        }
        b'D' => FrontendMessage::Describe {
            target: target(r.u8("describe target")?)?,
            name: r.cstr("describe name")?,
        },
        b'E' => FrontendMessage::Execute {
            portal: r.cstr("portal name")?,
            max_rows: r.i32("row limit")?,
        },
        b'C' => FrontendMessage::Close {
            target: target(r.u8("close target")?)?,
            name: r.cstr("close name")?,
        },
        b'S' => FrontendMessage::Sync,
        b'H' => FrontendMessage::Flush,
        b'X' => FrontendMessage::Terminate,
        b'd' => FrontendMessage::CopyData(Bytes::copy_from_slice(r.rest())),
        b'c' => FrontendMessage::CopyDone,
        b'f' => FrontendMessage::CopyFail(r.cstr("copy failure reason")?),
        b'p' => FrontendMessage::Password(Bytes::copy_from_slice(r.rest())),
        other => return Err(ProtocolError::UnknownType(other)),
    };
    r.finish()?;
    Ok(msg)
}

/// The SASLInitialResponse body: the chosen mechanism and the client-first-message.
pub fn decode_sasl_initial(body: &[u8]) -> Result<(String, Bytes), ProtocolError> {
    let mut r = Reader::new(body);
    let mechanism = r.cstr("SASL mechanism")?;
    let len = r.i32("SASL data length")?;
    let data = if len < 0 {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(r.take(len as usize, "SASL data")?)
    };
    r.finish()?;
    Ok((mechanism, data))
}

/// Encodes a frontend message (the inverse of [`decode_message`]); used by tests and the
/// fuzz targets' round-trip check.
pub fn encode_message(msg: &FrontendMessage) -> Vec<u8> {
    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    let mut body = Vec::new();
    let tag = match msg {
        FrontendMessage::Query(q) => {
            cstr(&mut body, q);
            b'Q'
        }
        FrontendMessage::Parse {
            name,
            query,
            param_oids,
        } => {
            cstr(&mut body, name);
            cstr(&mut body, query);
            body.extend_from_slice(&(param_oids.len() as u16).to_be_bytes());
            for oid in param_oids {
                body.extend_from_slice(&oid.to_be_bytes());
            }
            b'P'
        }
        FrontendMessage::Bind {
            portal,
            statement,
            param_formats,
            params,
            result_formats,
        } => {
            cstr(&mut body, portal);
            cstr(&mut body, statement);
            body.extend_from_slice(&(param_formats.len() as u16).to_be_bytes());
            for f in param_formats {
                body.extend_from_slice(&f.to_be_bytes());
            }
            body.extend_from_slice(&(params.len() as u16).to_be_bytes());
            for p in params {
                match p {
                    Some(v) => {
                        body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        body.extend_from_slice(v);
                    }
                    None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
            body.extend_from_slice(&(result_formats.len() as u16).to_be_bytes());
            for f in result_formats {
                body.extend_from_slice(&f.to_be_bytes());
            }
            b'B'
        }
        FrontendMessage::Describe { target, name } | FrontendMessage::Close { target, name } => {
            body.push(match target {
                Target::Statement => b'S',
                Target::Portal => b'P',
            });
            cstr(&mut body, name);
            if matches!(msg, FrontendMessage::Describe { .. }) {
                b'D'
            } else {
                b'C'
            }
        }
        FrontendMessage::Execute { portal, max_rows } => {
            cstr(&mut body, portal);
            body.extend_from_slice(&max_rows.to_be_bytes());
            b'E'
        }
        FrontendMessage::Sync => b'S',
        FrontendMessage::Flush => b'H',
        FrontendMessage::Terminate => b'X',
        FrontendMessage::CopyData(d) => {
            body.extend_from_slice(d);
            b'd'
        }
        FrontendMessage::CopyDone => b'c',
        FrontendMessage::CopyFail(m) => {
            cstr(&mut body, m);
            b'f'
        }
        FrontendMessage::Password(p) => {
            body.extend_from_slice(p);
            b'p'
        }
    };
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(msg: FrontendMessage) {
        let wire = encode_message(&msg);
        let len = i32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]);
        assert_eq!(frame_length(len, MAX_MESSAGE_LEN), Ok(wire.len() - 5));
        assert_eq!(decode_message(wire[0], &wire[5..]), Ok(msg));
    }

    #[test]
    fn messages_roundtrip() {
        roundtrip(FrontendMessage::Query("select 1".into()));
        roundtrip(FrontendMessage::Parse {
            name: "s1".into(),
            query: "select $1".into(),
            param_oids: vec![23, 0],
        });
        roundtrip(FrontendMessage::Bind {
            portal: "".into(),
            statement: "s1".into(),
            param_formats: vec![1],
            params: vec![Some(Bytes::from_static(&[0, 0, 0, 1])), None],
            result_formats: vec![0, 1],
        });
        roundtrip(FrontendMessage::Describe {
            target: Target::Portal,
            name: "p".into(),
        });
        roundtrip(FrontendMessage::Execute {
            portal: "".into(),
            max_rows: 10,
        });
        roundtrip(FrontendMessage::CopyFail("nope".into()));
    }

    #[test]
    fn truncated_bind_is_an_error_not_a_panic() {
        let wire = encode_message(&FrontendMessage::Bind {
            portal: "".into(),
            statement: "".into(),
            param_formats: vec![0],
            params: vec![Some(Bytes::from_static(b"12345"))],
            result_formats: vec![],
        });
        for cut in 5..wire.len() {
            assert!(decode_message(b'B', &wire[5..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_counts_and_lengths_are_refused() {
        // 65535 parameter types announced, none present.
        assert!(decode_message(b'P', b"\0select\0\xff\xff").is_err());
        assert!(frame_length(3, MAX_MESSAGE_LEN).is_err());
        assert!(frame_length(-1, MAX_MESSAGE_LEN).is_err());
        assert!(frame_length(i32::MAX, 10_000).is_err());
        assert_eq!(
            decode_message(b'?', b""),
            Err(ProtocolError::UnknownType(b'?'))
        );
        assert!(decode_message(b'S', b"x").is_err());
    }

    #[test]
    fn startup_packets() {
        let mut body = vec![0, 3, 0, 0];
        body.extend_from_slice(b"user\0alice\0database\0db\0\0");
        assert_eq!(
            decode_startup(&body),
            Ok(StartupRequest::Startup {
                major: 3,
                minor: 0,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "db".into())
                ],
            })
        );
        assert_eq!(
            decode_startup(&SSL_REQUEST_CODE.to_be_bytes()),
            Ok(StartupRequest::Ssl)
        );
        let mut cancel = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        cancel.extend_from_slice(&7i32.to_be_bytes());
        cancel.extend_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(
            decode_startup(&cancel),
            Ok(StartupRequest::Cancel { pid: 7, .. })
        ));
        assert!(decode_startup(&[0, 2, 0, 0]).is_err());
        assert!(decode_startup(&[0, 3, 0, 0, b'u']).is_err());
    }
}
