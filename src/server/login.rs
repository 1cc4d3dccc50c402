//! Opening a server connection: TCP, StartupMessage, authentication (trust,
//! cleartext, md5, SCRAM-SHA-256), then ParameterStatus/BackendKeyData up to the
//! first ReadyForQuery.
//!
//! pgmux asks for protocol 3.2. PostgreSQL 18 accepts it (its BackendKeyData then
//! carries a 32-byte secret); PostgreSQL 13 to 17 answer with NegotiateProtocolVersion
//! naming 3.0 and go on in 3.0. A server that refuses 3.2 outright (some
//! middleware does) is asked again with 3.0.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorField, ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;

use super::{read_message, ServerConn, ServerSecret, READ_BUF};
use crate::auth::scram::{ScramKeyClient, ScramKeys};
use crate::config::ServerAddr;
use crate::error::{PgError, Severity, SqlState};
use crate::net::Stream;
use crate::protocol::startup::{PROTOCOL_3_0, PROTOCOL_3_2};
use crate::settings::SessionParams;

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    pub addr: ServerAddr,
    pub dbname: String,
    pub user: String,
    /// Plaintext password; `None` when the config holds only a SCRAM verifier.
    pub password: Option<String>,
    /// With only a verifier: SCRAM keys taken from a client's login (set once one has
    /// logged in).
    pub keys: Arc<std::sync::OnceLock<ScramKeys>>,
    /// `server_tls`, as it is now.
    pub tls: crate::tls::UpstreamHandle,
    /// pgmux's own connections name themselves (`pgmux-monitor`, ...): they are
    /// outside the pools and their limits. Pool connections take their clients' name.
    pub application_name: Option<&'static str>,
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("server refused login: {0}")]
    Refused(PgError),
    #[error("{0}")]
    Auth(String),
}

impl LoginError {
    /// The error as a client should see it: the server's own when it gave one.
    pub fn server_error(&self) -> Option<&PgError> {
        match self {
            LoginError::Refused(e) => Some(e),
            _ => None,
        }
    }
}

/// Converts a server's ErrorResponse fields.
pub fn to_pg_error(mut fields: ErrorFields<'_>) -> PgError {
    let mut e = PgError::error(SqlState::INTERNAL_ERROR, "");
    while let Ok(Some(f)) = fields.next() {
        let f: ErrorField<'_> = f;
        let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'V' => {
                e.severity = match v.as_str() {
                    "FATAL" | "PANIC" => Severity::Fatal,
                    "WARNING" => Severity::Warning,
                    "NOTICE" => Severity::Notice,
                    _ => Severity::Error,
                }
            }
            b'C' => e.code = v.into(),
            b'M' => e.message = v,
            b'D' => e.detail = Some(v),
            b'H' => e.hint = Some(v),
            _ => {}
        }
    }
    e
}

/// Connects and logs in, within `timeout`.
pub async fn connect(target: &ServerTarget, timeout: Duration) -> Result<ServerConn, LoginError> {
    match tokio::time::timeout(timeout, connect_inner(target)).await {
        Ok(r) => r,
        Err(_) => Err(LoginError::Timeout(timeout)),
    }
}

async fn connect_inner(target: &ServerTarget) -> Result<ServerConn, LoginError> {
    match connect_with(target, PROTOCOL_3_2).await {
        Err(LoginError::Refused(e)) if refuses_protocol(&e) => {
            tracing::info!(server = %target.addr, error = %e, "the server refuses protocol 3.2; asking for 3.0");
            connect_with(target, PROTOCOL_3_0).await
        }
        r => r,
    }
}

/// An error a server that does not know minor protocol versions gives (before 2018,
/// or middleware): "unsupported frontend protocol".
fn refuses_protocol(e: &PgError) -> bool {
    (e.code == SqlState::FEATURE_NOT_SUPPORTED || e.code == SqlState::PROTOCOL_VIOLATION) && e.message.contains("protocol")
}

async fn connect_with(target: &ServerTarget, version: i32) -> Result<ServerConn, LoginError> {
    let tcp = TcpStream::connect((target.addr.host.as_str(), target.addr.port)).await?;
    let peer = tcp.peer_addr()?;
    configure_socket(&tcp);
    let upstream = target.tls.load_full();
    let mut stream = upstream.connect(tcp, &target.addr.host).await?;
    let mut buf = BytesMut::with_capacity(256);
    let mut params = vec![("user", target.user.as_str()), ("database", target.dbname.as_str())];
    if let Some(name) = target.application_name {
        params.push(("application_name", name));
    }
    crate::protocol::frontend::startup_message(version, &params, &mut buf);
    stream.write_all(&buf).await?;
    let mut rbuf = BytesMut::with_capacity(READ_BUF);
    let mut minor = (version & 0xffff) as u16;
    authenticate(&mut stream, &mut rbuf, target, &mut minor).await?;

    let mut params = Vec::new();
    let (mut pid, mut secret) = (0, ServerSecret::Short([0; 4]));
    loop {
        match read_login_message(&mut stream, &mut rbuf).await? {
            LoginMessage::Key(p, s) => (pid, secret) = (p, s),
            LoginMessage::Negotiate(v) => minor = (v & 0xffff) as u16,
            LoginMessage::Other(Message::ParameterStatus(p)) => {
                params.push((p.name()?.to_string(), p.value()?.to_string()));
            }
            LoginMessage::Other(Message::ReadyForQuery(_)) => break,
            LoginMessage::Other(Message::ErrorResponse(e)) => return Err(LoginError::Refused(to_pg_error(e.fields()))),
            LoginMessage::Other(_) => {}
        }
    }
    tracing::debug!(server = %target.addr, pid, protocol = %format!("3.{minor}"), "server connection opened");
    let now = Instant::now();
    Ok(ServerConn {
        stream,
        to_client: rbuf,
        to_server: BytesMut::new(),
        statements: Default::default(),
        expect: Default::default(),
        replay: BytesMut::new(),
        cancel: Arc::new(super::CancelTarget { addr: peer, pid, secret }),
        session: Arc::new(SessionParams::default()),
        params: Arc::new(params),
        created: now,
        last_used: now,
        home: crate::worker::id(),
    })
}

/// TCP_NODELAY, and keepalives so a silent dead server is noticed.
pub fn configure_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10)).with_retries(3);
    let _ = sock.set_tcp_keepalive(&ka);
}

/// A message of the login, with the two postgres-protocol does not read: a
/// NegotiateProtocolVersion, and a protocol 3.2 BackendKeyData (its longer secret).
enum LoginMessage {
    Negotiate(i32),
    Key(i32, ServerSecret),
    Other(Message),
}

async fn read_login_message(stream: &mut Stream, rbuf: &mut BytesMut) -> io::Result<LoginMessage> {
    use tokio::io::AsyncReadExt;
    while rbuf.len() < 5 {
        if stream.read_buf(rbuf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
        }
    }
    let tag = rbuf[0];
    if tag != b'v' && tag != b'K' {
        return Ok(LoginMessage::Other(read_message(stream, rbuf).await?));
    }
    let len = i32::from_be_bytes(rbuf[1..5].try_into().expect("4 bytes")) as usize;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("malformed message '{}' from server", tag as char));
    if !(8..=4 + 4 + crate::protocol::startup::MAX_CANCEL_KEY_LEN + 1024).contains(&len) {
        return Err(bad());
    }
    while rbuf.len() < len + 1 {
        if stream.read_buf(rbuf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
        }
    }
    let msg = rbuf.split_to(len + 1);
    let body = &msg[5..];
    let first = i32::from_be_bytes(body[..4].try_into().expect("length checked"));
    if tag == b'v' {
        return Ok(LoginMessage::Negotiate(first));
    }
    let secret = &body[4..];
    if secret.len() < 4 || secret.len() > crate::protocol::startup::MAX_CANCEL_KEY_LEN {
        return Err(bad());
    }
    Ok(LoginMessage::Key(first, ServerSecret::from_bytes(secret)))
}

/// Answers an AuthenticationSASL: SCRAM-SHA-256 with the password, or with the keys
/// a client's login revealed (a verifier-only user). A server that offers neither
/// (PostgreSQL 18 may offer OAUTHBEARER only) is refused by name.
fn sasl_start(
    b: postgres_protocol::message::backend::AuthenticationSaslBody,
    target: &ServerTarget,
    out: &mut BytesMut,
) -> Result<(Option<ScramSha256>, Option<ScramKeyClient>), LoginError> {
    let mut mechs = b.mechanisms();
    let mut offered = Vec::new();
    while let Some(m) = mechs.next()? {
        offered.push(m.to_string());
    }
    if !offered.iter().any(|m| m == SCRAM_SHA_256) {
        return Err(LoginError::Auth(format!(
            "the server offers SASL {} only; pgmux logs in to servers with passwords (md5, SCRAM-SHA-256)",
            offered.join(", ")
        )));
    }
    if let Some(pw) = target.password.as_deref() {
        let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
        frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), out)?;
        return Ok((Some(s), None));
    }
    let keys = target.keys.get().cloned().ok_or_else(|| {
        LoginError::Auth(format!(
            "user \"{}\" has only a SCRAM verifier in the config: pgmux can log in to PostgreSQL once a client has logged in with SCRAM",
            target.user
        ))
    })?;
    let c = ScramKeyClient::new(keys);
    frontend::sasl_initial_response(SCRAM_SHA_256, c.client_first().as_bytes(), out)?;
    Ok((None, Some(c)))
}

async fn authenticate(stream: &mut Stream, rbuf: &mut BytesMut, target: &ServerTarget, minor: &mut u16) -> Result<(), LoginError> {
    let password = || {
        target.password.as_deref().ok_or_else(|| {
            LoginError::Auth(format!(
                "the server asks user \"{}\" for a password in a way other than SCRAM-SHA-256, and the config holds only a SCRAM verifier",
                target.user
            ))
        })
    };
    let mut out = BytesMut::new();
    let mut scram: Option<ScramSha256> = None;
    let mut key_client: Option<ScramKeyClient> = None;
    loop {
        out.clear();
        let m = match read_login_message(stream, rbuf).await? {
            LoginMessage::Other(m) => m,
            LoginMessage::Negotiate(v) => {
                *minor = (v & 0xffff) as u16;
                continue;
            }
            LoginMessage::Key(..) => return Err(LoginError::Auth("BackendKeyData before authentication".into())),
        };
        match m {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(password()?.as_bytes(), &mut out)?;
            }
            Message::AuthenticationMd5Password(b) => {
                let hash = postgres_protocol::authentication::md5_hash(target.user.as_bytes(), password()?.as_bytes(), b.salt());
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            Message::AuthenticationSasl(b) => (scram, key_client) = sasl_start(b, target, &mut out)?,
            Message::AuthenticationSaslContinue(b) => {
                if let Some(c) = key_client.as_mut() {
                    let fin = c.server_first(b.data()).map_err(|e| LoginError::Auth(format!("SCRAM: {e:?}")))?;
                    frontend::sasl_response(fin.as_bytes(), &mut out)?;
                } else {
                    let s = scram.as_mut().ok_or_else(|| LoginError::Auth("unexpected SASL continue".into()))?;
                    s.update(b.data())?;
                    frontend::sasl_response(s.message(), &mut out)?;
                }
            }
            Message::AuthenticationSaslFinal(b) => {
                if let Some(c) = key_client.as_ref() {
                    c.server_final(b.data())
                        .map_err(|_| LoginError::Auth("the server's SCRAM signature does not match the configured verifier".into()))?;
                } else {
                    let s = scram.as_mut().ok_or_else(|| LoginError::Auth("unexpected SASL final".into()))?;
                    s.finish(b.data())?;
                }
                continue;
            }
            Message::ErrorResponse(e) => return Err(LoginError::Refused(to_pg_error(e.fields()))),
            _ => return Err(LoginError::Auth("unsupported authentication request from server".into())),
        }
        stream.write_all(&out).await?;
    }
}
