//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it, server side.
//!
//! A [`ScramSecret`] is what a server stores: salt, iteration count, StoredKey and
//! ServerKey. pgmux builds one from a plaintext password at config load, or parses a
//! `pg_authid` verifier. [`ScramServer`] checks a client's proof against it, with
//! `tls-server-end-point` channel binding (`SCRAM-SHA-256-PLUS`) over TLS.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub const MECHANISM: &str = "SCRAM-SHA-256";
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
const CHANNEL_BINDING_TYPE: &str = "tls-server-end-point";
const DEFAULT_ITERATIONS: u32 = 4096;
const NONCE_LEN: usize = 18;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// What a server keeps to verify a SCRAM-SHA-256 login.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramSecret(..)")
    }
}

impl ScramSecret {
    /// Derives a secret from a plaintext password with a fresh random salt.
    pub fn from_password(password: &str) -> ScramSecret {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        Self::derive(password, salt, DEFAULT_ITERATIONS)
    }

    pub fn derive(password: &str, salt: Vec<u8>, iterations: u32) -> ScramSecret {
        // PostgreSQL applies SASLprep; for the ASCII passwords nearly everyone uses it
        // is the identity, and postgres-protocol's client does the same normalisation.
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        ScramSecret { iterations, salt, stored_key: sha256(&client_key), server_key: hmac(&salted, b"Server Key") }
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse_verifier(v: &str) -> Option<ScramSecret> {
        let rest = v.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iter, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iter.parse().ok().filter(|&i| i > 0)?;
        let salt = B64.decode(salt).ok()?;
        let stored_key = B64.decode(stored).ok()?.try_into().ok()?;
        let server_key = B64.decode(server).ok()?.try_into().ok()?;
        Some(ScramSecret { iterations, salt, stored_key, server_key })
    }
}

/// Why an exchange failed; all are reported to the client as a failed password.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    Malformed(&'static str),
    /// A channel binding mismatch in the first message, reported as 08P01.
    ChannelBinding(&'static str),
    WrongProof,
}

/// The server side of one SCRAM exchange.
pub struct ScramServer<'a> {
    secret: &'a ScramSecret,
    /// With `SCRAM-SHA-256-PLUS`: the `tls-server-end-point` data the client must bind.
    cbind: Option<&'a [u8]>,
    /// PLUS was offered (the connection is TLS): a client saying "y" was downgraded.
    offered_plus: bool,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

impl<'a> ScramServer<'a> {
    /// `cbind`: the channel binding data when the client chose `SCRAM-SHA-256-PLUS`.
    pub fn new(secret: &'a ScramSecret, cbind: Option<&'a [u8]>, offered_plus: bool) -> Self {
        ScramServer {
            secret,
            cbind,
            offered_plus,
            client_first_bare: String::new(),
            server_first: String::new(),
            nonce: String::new(),
            gs2_header: String::new(),
        }
    }

    /// Takes client-first-message, returns server-first-message.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (cb_flag, rest) = msg.split_once(',').ok_or(ScramError::Malformed("no gs2 header"))?;
        // PostgreSQL's checks and wording (auth-scram.c).
        match cb_flag {
            "n" | "y" if self.cbind.is_some() => {
                return Err(ScramError::ChannelBinding("The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data."))
            }
            "y" if self.offered_plus => {
                return Err(ScramError::ChannelBinding("SCRAM channel binding negotiation error: the client supports SCRAM channel binding but thinks the server does not. However, this server does support channel binding."))
            }
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                if self.cbind.is_none() {
                    return Err(ScramError::ChannelBinding("The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data."));
                }
                if &f[2..] != CHANNEL_BINDING_TYPE {
                    return Err(ScramError::ChannelBinding("unsupported SCRAM channel-binding type"));
                }
            }
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no gs2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed("authorization identity is not supported"));
        }
        self.gs2_header = format!("{cb_flag},,");
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(r) = attr.strip_prefix("r=") {
                client_nonce = Some(r);
            } else if attr.starts_with("m=") {
                return Err(ScramError::Malformed("mandatory extension"));
            }
        }
        let client_nonce = client_nonce.filter(|n| !n.is_empty()).ok_or(ScramError::Malformed("no nonce"))?;
        let mut raw = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut raw);
        self.nonce = format!("{client_nonce}{}", B64.encode(raw));
        self.client_first_bare = bare.to_string();
        self.server_first = format!("r={},s={},i={}", self.nonce, B64.encode(&self.secret.salt), self.secret.iterations);
        Ok(self.server_first.clone())
    }

    /// Takes client-final-message; returns server-final-message when the proof holds,
    /// and the ClientKey the proof reveals (with it pgmux can log in to a server that
    /// stores the same verifier, without knowing the password).
    pub fn client_final(&self, msg: &[u8]) -> Result<(String, [u8; 32]), ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut cbind = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                cbind = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        let cbind = B64
            .decode(cbind.ok_or(ScramError::Malformed("no channel binding"))?)
            .map_err(|_| ScramError::Malformed("bad channel binding"))?;
        let mut expected = self.gs2_header.as_bytes().to_vec();
        expected.extend_from_slice(self.cbind.unwrap_or_default());
        if !super::ct_eq(&cbind, &expected) {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::Malformed("bad proof"))?;
        if proof.len() != 32 {
            return Err(ScramError::WrongProof);
        }
        let auth_message = format!("{},{},{}", self.client_first_bare, self.server_first, without_proof);
        let client_signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = proof[i] ^ client_signature[i];
        }
        if !super::ct_eq(&sha256(&client_key), &self.secret.stored_key) {
            return Err(ScramError::WrongProof);
        }
        let server_signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        Ok((format!("v={}", B64.encode(server_signature)), client_key))
    }
}

/// SCRAM keys recovered from a client's login: enough to log in as that user to a
/// server whose verifier is the one in pgmux's config.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub client_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(..)")
    }
}

/// The client side of SCRAM-SHA-256 with keys instead of a password.
pub struct ScramKeyClient {
    keys: ScramKeys,
    client_first_bare: String,
    nonce: String,
    server_signature: [u8; 32],
}

impl ScramKeyClient {
    pub fn new(keys: ScramKeys) -> Self {
        let mut raw = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut raw);
        let nonce = B64.encode(raw);
        ScramKeyClient { keys, client_first_bare: format!("n=,r={nonce}"), nonce, server_signature: [0; 32] }
    }

    /// client-first-message.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Takes server-first-message, returns client-final-message.
    pub fn server_first(&mut self, msg: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let nonce = msg
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|r| r.starts_with(&self.nonce) && r.len() > self.nonce.len())
            .ok_or(ScramError::Malformed("server nonce"))?;
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{},{}", self.client_first_bare, msg, without_proof);
        let stored_key = sha256(&self.keys.client_key);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = [0u8; 32];
        for i in 0..32 {
            proof[i] = self.keys.client_key[i] ^ signature[i];
        }
        self.server_signature = hmac(&self.keys.server_key, auth_message.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks server-final-message (the server knows the verifier too).
    pub fn server_final(&self, msg: &[u8]) -> Result<(), ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let v = msg.strip_prefix("v=").ok_or(ScramError::Malformed("server final"))?;
        let v = B64.decode(v).map_err(|_| ScramError::Malformed("server signature"))?;
        if super::ct_eq(&v, &self.server_signature) {
            Ok(())
        } else {
            Err(ScramError::WrongProof)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs postgres-protocol's client (the one tokio-postgres uses) against our server.
    fn exchange(secret: &ScramSecret, client_password: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(client_password.as_bytes(), ChannelBinding::unsupported());
        let mut server = ScramServer::new(secret, None, false);
        let server_first = server.client_first(client.message())?;
        client.update(server_first.as_bytes()).unwrap();
        let (server_final, _) = server.client_final(client.message())?;
        client.finish(server_final.as_bytes()).expect("client accepts server signature");
        Ok(())
    }

    #[test]
    fn keys_recovered_from_a_login_log_in_elsewhere() {
        let secret = ScramSecret::from_password("s3cret");
        // A client logs in to pgmux with the password...
        let mut client = ScramSha256::new(b"s3cret", ChannelBinding::unsupported());
        let mut server = ScramServer::new(&secret, None, false);
        let first = server.client_first(client.message()).unwrap();
        client.update(first.as_bytes()).unwrap();
        let (_, client_key) = server.client_final(client.message()).unwrap();
        // ...and pgmux logs in to a server holding the same verifier with the keys.
        let keys = ScramKeys { client_key, server_key: secret.server_key };
        let mut as_pgmux = ScramKeyClient::new(keys);
        let mut upstream = ScramServer::new(&secret, None, false);
        let first = upstream.client_first(as_pgmux.client_first().as_bytes()).unwrap();
        let fin = as_pgmux.server_first(first.as_bytes()).unwrap();
        let (server_final, _) = upstream.client_final(fin.as_bytes()).expect("upstream accepts the proof");
        as_pgmux.server_final(server_final.as_bytes()).unwrap();
    }

    #[test]
    fn right_and_wrong_password() {
        let s = ScramSecret::from_password("app");
        assert_eq!(exchange(&s, "app"), Ok(()));
        assert_eq!(exchange(&s, "nope"), Err(ScramError::WrongProof));
    }

    #[test]
    fn verifier_round_trip() {
        let s = ScramSecret::derive("pw", b"0123456789abcdef".to_vec(), 4096);
        let v = format!("SCRAM-SHA-256$4096:{}${}:{}", B64.encode(&s.salt), B64.encode(s.stored_key), B64.encode(s.server_key));
        let parsed = ScramSecret::parse_verifier(&v).unwrap();
        assert_eq!(parsed, s);
        assert_eq!(exchange(&parsed, "pw"), Ok(()));
        assert!(ScramSecret::parse_verifier("SCRAM-SHA-256$x:y$z").is_none());
    }

    #[test]
    fn rejects_garbage() {
        let s = ScramSecret::from_password("x");
        let mut srv = ScramServer::new(&s, None, false);
        assert!(srv.client_first(b"garbage").is_err());
        assert!(matches!(srv.client_first(b"p=tls-server-end-point,,n=,r=abc"), Err(ScramError::ChannelBinding(_))));
        assert!(srv.client_first(b"n,,n=,r=abc").is_ok());
        assert!(srv.client_final(b"c=biws,r=wrong,p=AAAA").is_err());
    }

    /// The client side of channel binding, as postgres-protocol does it.
    fn exchange_plus(server_cb: &[u8], client: ChannelBinding, offered_plus: bool, plus: bool) -> Result<(), ScramError> {
        let s = ScramSecret::from_password("pw");
        let mut client = ScramSha256::new(b"pw", client);
        let mut server = ScramServer::new(&s, plus.then_some(server_cb), offered_plus);
        let first = server.client_first(client.message())?;
        client.update(first.as_bytes()).unwrap();
        let (fin, _) = server.client_final(client.message())?;
        client.finish(fin.as_bytes()).unwrap();
        Ok(())
    }

    #[test]
    fn channel_binding() {
        let hash = [7u8; 32];
        // SCRAM-SHA-256-PLUS with the right certificate hash.
        assert_eq!(exchange_plus(&hash, ChannelBinding::tls_server_end_point(hash.to_vec()), true, true), Ok(()));
        // A different certificate (a man in the middle): the binding does not match.
        assert!(exchange_plus(&hash, ChannelBinding::tls_server_end_point(vec![8; 32]), true, true).is_err());
        // PLUS chosen but no binding data sent.
        assert!(matches!(exchange_plus(&hash, ChannelBinding::unsupported(), true, true), Err(ScramError::ChannelBinding(_))));
        // "y": the client thinks the server cannot bind, though it offered to: a downgrade.
        assert!(matches!(exchange_plus(&hash, ChannelBinding::unrequested(), true, false), Err(ScramError::ChannelBinding(_))));
        // Plain SCRAM over TLS without binding ("n") is still fine.
        assert_eq!(exchange_plus(&hash, ChannelBinding::unsupported(), true, false), Ok(()));
    }
}
