//! The PostgreSQL front end at the protocol level: startup, authentication, TLS, parameter
//! status, error responses, cancel requests and malformed input. None of it needs SQL to
//! work, so these pass whatever the engine supports.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::Duration;

use pg::{PgTest, Raw, USER, bind, cstr, execute, parse};
use shmdb_processing_node::pg::{AuthConfig, TlsConfig};

#[tokio::test]
async fn trust_startup_reports_the_parameters_drivers_check() -> anyhow::Result<()> {
    let t = PgTest::start().await?;
    let url = format!("{} application_name=wiretest", t.url(USER, None));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    for (name, value) in [
        ("server_version", "15.0"),
        ("client_encoding", "UTF8"),
        ("server_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
        ("application_name", "wiretest"),
        ("session_authorization", USER),
    ] {
        assert_eq!(connection.parameter(name), Some(value), "{name}");
    }
    tokio::spawn(connection);
    assert!(!client.is_closed());
    drop(client);
    t.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn scram_accepts_the_right_password_and_refuses_others() -> anyhow::Result<()> {
    let t = PgTest::start_with(|c| c.auth = AuthConfig::scram([("alice", "wonder land")])).await?;
    // Right password.
    let (client, connection) = tokio_postgres::connect(
        &t.url("alice", Some("'wonder land'")),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    assert!(!client.is_closed());
    // Wrong password, unknown user: both 28P01, indistinguishable.
    for (user, password) in [("alice", "wrong"), ("mallory", "wonder land")] {
        let err = tokio_postgres::connect(
            &t.url(user, Some(&format!("'{password}'"))),
            tokio_postgres::NoTls,
        )
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("{user} connected with a wrong password"))?;
        let code = err.as_db_error().map(|d| d.code().code().to_owned());
        assert_eq!(code.as_deref(), Some("28P01"), "{user}: {err}");
    }
    // No password at all: the driver cannot answer the SASL request.
    assert!(
        tokio_postgres::connect(&t.url("alice", None), tokio_postgres::NoTls)
            .await
            .is_err()
    );
    drop(client);
    t.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn tls_handshake_with_a_self_signed_certificate() -> anyhow::Result<()> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let dir = tempfile::tempdir()?;
    let cert_path = dir.path().join("server.crt");
    let key_path = dir.path().join("server.key");
    std::fs::write(&cert_path, cert.cert.pem())?;
    std::fs::write(&key_path, cert.signing_key.serialize_pem())?;
    let t = PgTest::start_with(|c| {
        c.tls = Some(TlsConfig {
            cert: cert_path.clone(),
            key: key_path.clone(),
        });
        c.auth = AuthConfig::scram([(USER, "pw")]);
    })
    .await?;

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let url = format!(
        "host=localhost port={} user={USER} password=pw dbname=shmdb sslmode=require",
        t.addr().port()
    );
    let (client, connection) = tokio_postgres::connect(&url, connector).await?;
    tokio::spawn(connection);
    // A round trip over the encrypted stream: any answer (rows or an SQL error) proves it.
    match client.simple_query("SELECT 1").await {
        Ok(_) => {}
        Err(e) => assert!(e.as_db_error().is_some(), "{e}"),
    }
    assert!(!client.is_closed());

    // Without TLS configured, SSLRequest is refused and a sslmode=prefer client goes on in
    // plain text.
    let plain = PgTest::start().await?;
    let (client2, connection2) = tokio_postgres::connect(
        &format!("{} sslmode=prefer", plain.url(USER, None)),
        tokio_postgres_rustls::MakeRustlsConnect::new(
            tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
            .with_no_client_auth(),
        ),
    )
    .await?;
    tokio::spawn(connection2);
    assert!(!client2.is_closed());
    drop((client, client2));
    t.shutdown().await;
    plain.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn sql_errors_carry_sqlstate_and_keep_the_connection_usable() -> anyhow::Result<()> {
    let t = PgTest::start().await?;
    let client = t.client().await?;
    for _ in 0..3 {
        // A statement no engine version accepts.
        let err = client
            .simple_query("THIS IS NOT SQL")
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("garbage SQL succeeded"))?;
        let db = err
            .as_db_error()
            .ok_or_else(|| anyhow::anyhow!("not a server error: {err}"))?;
        assert!(["42601", "0A000"].contains(&db.code().code()), "{db:?}");
        // Extended protocol: the Parse error skips to Sync, then the connection goes on.
        let err = client
            .prepare("THIS IS NOT SQL EITHER")
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("garbage SQL prepared"))?;
        assert!(err.as_db_error().is_some(), "{err}");
        assert!(!client.is_closed());
    }
    t.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn extended_protocol_errors_skip_to_sync() -> anyhow::Result<()> {
    let t = PgTest::start().await?;
    let mut raw = Raw::startup(t.addr()).await?;
    // Bind to a statement that does not exist, then Execute (skipped), then Sync.
    raw.send(b'B', &bind("", "nope", 0, &[], 0)).await?;
    raw.send(b'E', &execute("", 0)).await?;
    raw.send(b'S', &[]).await?;
    let msgs = raw.until_ready().await?;
    let errors: Vec<_> = msgs.iter().filter(|m| m.tag == b'E').collect();
    assert_eq!(errors.len(), 1, "{msgs:?}");
    assert_eq!(errors[0].sqlstate().as_deref(), Some("26000"));
    assert_eq!(msgs.last().map(|m| m.body.clone()), Some(b"I".to_vec()));
    // Describe / Close of unknown objects.
    raw.send(b'D', b"Pnope\0").await?;
    raw.send(b'S', &[]).await?;
    let msgs = raw.until_ready().await?;
    assert_eq!(msgs[0].sqlstate().as_deref(), Some("34000"));
    raw.send(b'C', b"Snope\0").await?;
    raw.send(b'S', &[]).await?;
    let msgs = raw.until_ready().await?;
    assert_eq!(
        msgs[0].tag, b'3',
        "CloseComplete even for an unknown statement"
    );
    // A Parse the engine refuses, then a Bind to it: one error only.
    raw.send(b'P', &parse("s", "THIS IS NOT SQL", &[])).await?;
    raw.send(b'B', &bind("", "s", 0, &[], 0)).await?;
    raw.send(b'S', &[]).await?;
    let msgs = raw.until_ready().await?;
    assert_eq!(msgs.iter().filter(|m| m.tag == b'E').count(), 1, "{msgs:?}");
    // Empty simple query.
    let msgs = raw.query("").await?;
    assert!(
        msgs.iter().any(|m| m.tag == b'I' || m.tag == b'E'),
        "{msgs:?}"
    );
    t.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn cancel_requests_are_accepted_and_harmless_when_idle() -> anyhow::Result<()> {
    let t = PgTest::start().await?;
    let client = t.client().await?;
    assert_eq!(t.server.cancel.len(), 1);
    client
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await?;
    // A stale cancel must not hit the next statement: the answer is the engine's own.
    match client.simple_query("THIS IS NOT SQL").await {
        Ok(_) => anyhow::bail!("garbage SQL succeeded"),
        Err(e) => {
            let code = e.as_db_error().map(|d| d.code().code().to_owned());
            assert_ne!(code.as_deref(), Some("57014"), "{e}");
        }
    }
    // A cancel with a wrong key is ignored.
    let mut raw = Raw::connect(t.addr()).await?;
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80_877_102u32.to_be_bytes());
    packet.extend_from_slice(&12345i32.to_be_bytes());
    packet.extend_from_slice(&0i32.to_be_bytes());
    raw.send_bytes(&packet).await?;
    assert!(raw.until_closed().await?.is_empty());
    assert!(!client.is_closed());
    drop(client);
    // The key goes away with the connection.
    common::wait_for(
        "the connection's key to be dropped",
        Duration::from_secs(5),
        || async { t.server.cancel.is_empty().then_some(()) },
    )
    .await?;
    t.shutdown().await;
    Ok(())
}

/// Sends `bytes` on a fresh authenticated connection and expects an 08P01 error and a close.
async fn expect_protocol_violation(t: &PgTest, bytes: &[u8]) -> anyhow::Result<()> {
    let mut raw = Raw::startup(t.addr()).await?;
    raw.send_bytes(bytes).await?;
    let msgs = raw.until_closed().await?;
    let codes: Vec<_> = msgs.iter().filter_map(|m| m.sqlstate()).collect();
    assert_eq!(codes, vec!["08P01".to_string()], "{bytes:?} → {msgs:?}");
    Ok(())
}

#[tokio::test]
async fn malformed_messages_close_the_connection_not_the_server() -> anyhow::Result<()> {
    let t = PgTest::start().await?;
    // Unknown message type.
    expect_protocol_violation(&t, &[b'!', 0, 0, 0, 4]).await?;
    // Lengths below the length field itself, negative, and absurdly large.
    expect_protocol_violation(&t, &[b'Q', 0, 0, 0, 2]).await?;
    expect_protocol_violation(&t, &[b'Q', 0xff, 0xff, 0xff, 0xff]).await?;
    expect_protocol_violation(&t, &[b'Q', 0x7f, 0xff, 0xff, 0xff]).await?;
    // A Bind whose parameter count runs past the end of the message.
    expect_protocol_violation(&t, &[b'B', 0, 0, 0, 10, 0, 0, 0, 0, 0xff, 0xff]).await?;
    // A query string without its terminating NUL.
    expect_protocol_violation(&t, &[b'Q', 0, 0, 0, 7, b'a', b'b', b'c']).await?;
    // A Describe with an invalid target.
    expect_protocol_violation(&t, &[b'D', 0, 0, 0, 6, b'X', 0]).await?;
    // Invalid UTF-8 in a query.
    expect_protocol_violation(&t, &[b'Q', 0, 0, 0, 6, 0xff, 0]).await?;

    // Garbage instead of a startup packet.
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0, 0, 0, 1],
        &[0, 0, 0, 8, 0, 9, 0, 0],
    ] {
        let mut raw = Raw::connect(t.addr()).await?;
        raw.send_bytes(garbage).await?;
        let msgs = raw.until_closed().await?;
        assert!(msgs.iter().all(|m| m.tag == b'E'), "{msgs:?}");
    }
    // A client that connects and leaves mid-message.
    {
        let mut raw = Raw::startup(t.addr()).await?;
        raw.send_bytes(&[b'Q', 0, 0, 1, 0, b's']).await?;
    }
    // A password message after authentication.
    expect_protocol_violation(&t, &[b'p', 0, 0, 0, 5, 0]).await?;

    // The server is still serving.
    let mut raw = Raw::startup(t.addr()).await?;
    let msgs = raw.query("THIS IS NOT SQL").await?;
    assert!(msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
    let client = t.client().await?;
    assert!(!client.is_closed());
    drop(client);
    t.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn newer_protocol_minor_versions_are_negotiated_down() -> anyhow::Result<()> {
    let t = PgTest::start().await?;
    let mut raw = Raw::connect(t.addr()).await?;
    let mut body = vec![0, 3, 0, 2];
    body.extend_from_slice(&cstr("user"));
    body.extend_from_slice(&cstr(USER));
    body.extend_from_slice(&cstr("_pq_.something"));
    body.extend_from_slice(&cstr("x"));
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    raw.send_bytes(&packet).await?;
    let msgs = raw.until_ready().await?;
    assert_eq!(
        msgs[0].tag, b'v',
        "NegotiateProtocolVersion first: {msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.tag == b'R'));
    assert!(msgs.iter().any(|m| m.tag == b'K'));
    t.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn notices_and_warnings_carry_their_severity_once() -> anyhow::Result<()> {
    use futures::StreamExt;
    let t = PgTest::start().await?;
    let (client, mut connection) =
        tokio_postgres::connect(&t.url(USER, None), tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notice(notice) = message {
                let _ = tx.send(notice);
            }
        }
    });
    client
        .batch_execute("DROP TABLE IF EXISTS nothing_here")
        .await?;
    let notice = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no notice"))?;
    assert_eq!(notice.severity(), "NOTICE");
    assert_eq!(notice.code().code(), "00000");
    assert_eq!(
        notice.message(),
        "table \"nothing_here\" does not exist, skipping"
    );
    client.batch_execute("COMMIT").await?;
    let warning = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no warning"))?;
    assert_eq!(warning.severity(), "WARNING");
    assert_eq!(warning.message(), "there is no transaction in progress");
    drop(client);
    t.shutdown().await;
    Ok(())
}
