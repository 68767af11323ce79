//! Client authentication: trust, or SCRAM-SHA-256 (RFC 5802/7677) against configured users.
//!
//! SCRAM is what PostgreSQL uses by default and what every current driver speaks; the server
//! keeps only salted verifiers (StoredKey, ServerKey), never the password, and the password
//! never crosses the wire. We do not offer SCRAM-SHA-256-PLUS (channel binding): clients
//! that merely *prefer* channel binding (libpq's and tokio-postgres' default) fall back to
//! plain SCRAM.

use std::collections::HashMap;
use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2};

/// The SASL mechanism we offer.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// PBKDF2 iterations for verifiers we derive (PostgreSQL's default).
const ITERATIONS: u32 = 4096;

/// How clients authenticate.
#[derive(Clone, Debug, Default)]
pub enum AuthConfig {
    /// Anyone may connect as any user (local development, tests).
    #[default]
    Trust,
    /// SCRAM-SHA-256 against these users.
    Scram {
        /// User name → verifier.
        users: HashMap<String, UserSecret>,
    },
}

impl AuthConfig {
    /// SCRAM-SHA-256 for the given (user, password) pairs; verifiers are derived here, once.
    pub fn scram<U, P>(users: impl IntoIterator<Item = (U, P)>) -> Self
    where
        U: Into<String>,
        P: AsRef<str>,
    {
        AuthConfig::Scram {
            users: users
                .into_iter()
                .map(|(u, p)| (u.into(), UserSecret::from_password(p.as_ref())))
                .collect(),
        }
    }

    /// Parses `user:password[,user:password...]` as given to `--users` / `SHMDB_PG_USERS`;
    /// an empty spec means trust.
    pub fn from_spec(spec: &str) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (user, password) = entry
                .split_once(':')
                .ok_or_else(|| format!("expected user:password, got {entry:?}"))?;
            if user.is_empty() {
                return Err(format!("empty user name in {entry:?}"));
            }
            pairs.push((user.to_owned(), password.to_owned()));
        }
        if pairs.is_empty() {
            Ok(AuthConfig::Trust)
        } else {
            Ok(AuthConfig::scram(pairs))
        }
    }
}

/// A SCRAM verifier: what the server needs to check a proof, without the password.
#[derive(Clone)]
pub struct UserSecret {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserSecret(..)")
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equality that takes the same time wherever the inputs differ (proof checks).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl UserSecret {
    /// Derives a verifier with a fresh random salt.
    pub fn from_password(password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        Self::derive(password, &salt, ITERATIONS)
    }

    fn derive(password: &str, salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; 32];
        let iters = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iters,
            salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        UserSecret {
            salt: salt.to_vec(),
            iterations,
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }
}

/// Why authentication did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Wrong password or unknown user (indistinguishable on purpose): 28P01.
    #[error("password authentication failed for user \"{0}\"")]
    Failed(String),
    /// The client's SASL messages are malformed: 08P01.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for something we do not offer (a mechanism, channel binding): 28000.
    #[error("{0}")]
    Unsupported(String),
}

impl AuthError {
    /// The SQLSTATE sent to the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::Failed(_) => "28P01",
            AuthError::Malformed(_) => "08P01",
            AuthError::Unsupported(_) => "28000",
        }
    }
}

/// The server side of one SCRAM-SHA-256 exchange.
#[derive(Debug)]
pub struct ScramExchange {
    user: String,
    secret: UserSecret,
    /// False for an unknown user: the exchange runs with a made-up verifier and fails at
    /// the end, so a client cannot tell unknown users from wrong passwords.
    known: bool,
    client_first_bare: String,
    server_first: String,
    gs2_header: String,
    nonce: String,
}

impl ScramExchange {
    /// Starts an exchange for `user` (whose verifier may be unknown).
    pub fn new(user: &str, secret: Option<&UserSecret>) -> Self {
        let (secret, known) = match secret {
            Some(s) => (s.clone(), true),
            None => (
                UserSecret::derive("", &sha256(user.as_bytes())[..16], ITERATIONS),
                false,
            ),
        };
        ScramExchange {
            user: user.to_owned(),
            secret,
            known,
            client_first_bare: String::new(),
            server_first: String::new(),
            gs2_header: String::new(),
            nonce: String::new(),
        }
    }

    /// Takes client-first-message, returns server-first-message.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let msg = std::str::from_utf8(data).map_err(|_| AuthError::Malformed("client-first"))?;
        // gs2-header = cbind-flag "," [authzid] ","
        let mut parts = msg.splitn(3, ',');
        let cbind = parts.next().ok_or(AuthError::Malformed("gs2 header"))?;
        let authzid = parts.next().ok_or(AuthError::Malformed("gs2 header"))?;
        let bare = parts
            .next()
            .ok_or(AuthError::Malformed("client-first-bare"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => {
                return Err(AuthError::Unsupported(
                    "channel binding (SCRAM-SHA-256-PLUS) is not supported".into(),
                ));
            }
            _ => return Err(AuthError::Malformed("channel binding flag")),
        }
        if !authzid.is_empty() {
            return Err(AuthError::Unsupported(
                "SCRAM authorization identities are not supported".into(),
            ));
        }
        let client_nonce = bare
            .split(',')
            .find_map(|attr| attr.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(AuthError::Malformed("client nonce"))?;
        let server_nonce: [u8; 18] = rand::random();
        self.nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        self.gs2_header = format!("{cbind},{authzid},");
        self.client_first_bare = bare.to_owned();
        self.server_first = format!(
            "r={},s={},i={}",
            self.nonce,
            B64.encode(&self.secret.salt),
            self.secret.iterations
        );
        Ok(self.server_first.clone().into_bytes())
    }

    /// Takes client-final-message, checks the proof, returns server-final-message.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let msg = std::str::from_utf8(data).map_err(|_| AuthError::Malformed("client-final"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(AuthError::Malformed("client proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                channel = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let channel = channel.ok_or(AuthError::Malformed("channel binding"))?;
        if B64.decode(channel).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(AuthError::Malformed("channel binding does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(AuthError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| AuthError::Malformed("client proof encoding"))?;
        if proof.len() != 32 {
            return Err(AuthError::Malformed("client proof length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac_sha256(&self.secret.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.iter())
            .map(|(p, s)| p ^ s)
            .collect();
        let matches = constant_time_eq(&sha256(&client_key), &self.secret.stored_key);
        if !(matches && self.known) {
            return Err(AuthError::Failed(self.user.clone()));
        }
        let server_signature = hmac_sha256(&self.secret.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A client side of SCRAM, to check the server against the RFC's computations.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        let attrs: HashMap<&str, &str> = server_first
            .split(',')
            .filter_map(|a| a.split_once('='))
            .collect();
        let salt = B64.decode(attrs["s"]).unwrap();
        let iterations: u32 = attrs["i"].parse().unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored = sha256(&client_key);
        let without_proof = format!("c={},r={}", B64.encode("n,,"), attrs["r"]);
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac_sha256(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn right_and_wrong_passwords() {
        let secret = UserSecret::from_password("s3cret");
        for (password, known, ok) in [
            ("s3cret", true, true),
            ("wrong", true, false),
            ("s3cret", false, false),
        ] {
            let mut ex = ScramExchange::new("alice", known.then_some(&secret));
            let bare = "n=,r=abcdefgh";
            let first =
                String::from_utf8(ex.client_first(format!("n,,{bare}").as_bytes()).unwrap())
                    .unwrap();
            let fin = client_final(password, bare, &first);
            assert_eq!(
                ex.client_final(fin.as_bytes()).is_ok(),
                ok,
                "{password} {known}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let secret = UserSecret::from_password("x");
        let mut ex = ScramExchange::new("u", Some(&secret));
        assert!(ex.client_first(b"").is_err());
        assert!(ex.client_first(b"n,,").is_err());
        assert!(ex.client_first(b"\xff").is_err());
        assert!(ex.client_final(b"c=biws,r=x,p=!!").is_err());
    }

    #[test]
    fn spec_parsing() {
        assert!(matches!(AuthConfig::from_spec(""), Ok(AuthConfig::Trust)));
        assert!(
            matches!(AuthConfig::from_spec("a:b,c:d"), Ok(AuthConfig::Scram { users }) if users.len() == 2)
        );
        assert!(AuthConfig::from_spec("nocolon").is_err());
    }
}
