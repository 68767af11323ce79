//! COPY … FROM STDIN: the copy-in sub-protocol. The statement is recognised here (the engine
//! cannot answer it through `simple_query`, because the data arrives in later messages), the
//! CopyData stream is collected, and the whole text stream is handed to
//! [`Session::copy_from_text`](crate::sql::Session::copy_from_text).

use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::CopyInResponse;

use crate::pg::conn::{Conn, ConnError};
use crate::pg::frontend::FrontendMessage;
use crate::sql::SqlError;

/// Largest COPY stream accepted in one statement (it is buffered whole).
pub const MAX_COPY_BYTES: usize = 1 << 30;

/// Whether `sql` is a `COPY … FROM STDIN` statement (which needs the copy-in sub-protocol).
pub fn is_copy_from_stdin(sql: &str) -> bool {
    let upper = sql.trim_start().to_ascii_uppercase();
    let words: Vec<&str> = upper
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    words.first() == Some(&"COPY") && words.windows(2).any(|w| w == ["FROM", "STDIN"])
}

/// How a copy-in ended.
#[derive(Debug)]
pub enum CopyOutcome {
    /// CopyDone: the complete data stream.
    Data(Vec<u8>),
    /// CopyFail, or too much data: report this error.
    Failed(SqlError),
    /// The client terminated or disconnected.
    Closed,
}

/// Sends CopyInResponse and collects CopyData until CopyDone or CopyFail.
///
/// Flush and Sync are ignored while copying, as PostgreSQL does: drivers that run COPY
/// through the extended protocol send Sync right after Execute, before the data.
pub async fn receive(conn: &mut Conn) -> Result<CopyOutcome, ConnError> {
    conn.send(PgWireBackendMessage::CopyInResponse(CopyInResponse::new(
        0,
        0,
        Vec::new(),
    )))?;
    conn.flush().await?;
    let mut data = Vec::new();
    let mut failure: Option<SqlError> = None;
    loop {
        let msg = match conn.read_message().await? {
            Some(m) => m,
            None => return Ok(CopyOutcome::Closed),
        };
        match msg {
            FrontendMessage::CopyData(chunk) => {
                if failure.is_none() {
                    if data.len() + chunk.len() > MAX_COPY_BYTES {
                        failure = Some(SqlError::new(
                            "54000",
                            format!("COPY data exceeds the limit of {MAX_COPY_BYTES} bytes"),
                        ));
                        data = Vec::new();
                    } else {
                        data.extend_from_slice(&chunk);
                    }
                }
            }
            FrontendMessage::CopyDone => {
                return Ok(match failure {
                    Some(e) => CopyOutcome::Failed(e),
                    None => CopyOutcome::Data(data),
                });
            }
            FrontendMessage::CopyFail(reason) => {
                return Ok(CopyOutcome::Failed(SqlError::new(
                    "57014",
                    format!("COPY from stdin failed: {reason}"),
                )));
            }
            FrontendMessage::Flush | FrontendMessage::Sync => {}
            FrontendMessage::Terminate => return Ok(CopyOutcome::Closed),
            _ => {
                return Ok(CopyOutcome::Failed(SqlError::new(
                    "08P01",
                    "unexpected message type during COPY from stdin",
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_copy_from_stdin() {
        assert!(is_copy_from_stdin("COPY t FROM STDIN"));
        assert!(is_copy_from_stdin(
            "  copy t(a, b) from stdin with (format text);"
        ));
        assert!(is_copy_from_stdin("COPY t(a,b) FROM stdin"));
        assert!(!is_copy_from_stdin("COPY t TO STDOUT"));
        assert!(!is_copy_from_stdin("SELECT 'COPY FROM STDIN'"));
    }
}
