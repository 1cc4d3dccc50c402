//! Opening a server connection: TCP, StartupMessage, authentication (trust,
//! cleartext, md5, SCRAM-SHA-256), then ParameterStatus/BackendKeyData up to the
//! first ReadyForQuery.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorField, ErrorFields, Message};
use postgres_protocol::message::frontend;
use tokio::net::TcpStream;

use super::{read_message, ServerConn, READ_BUF};
use crate::auth::scram::{ScramKeyClient, ScramKeys};
use crate::config::ServerAddr;
use crate::error::{PgError, Severity, SqlState};
use crate::net::Stream;
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
    let tcp = TcpStream::connect((target.addr.host.as_str(), target.addr.port)).await?;
    let peer = tcp.peer_addr()?;
    configure_socket(&tcp);
    let upstream = target.tls.load_full();
    let mut stream = upstream.connect(tcp, &target.addr.host).await?;
    let mut buf = BytesMut::with_capacity(256);
    frontend::startup_message([("user", target.user.as_str()), ("database", target.dbname.as_str())], &mut buf)?;
    stream.write_all(&buf).await?;
    let mut rbuf = BytesMut::with_capacity(READ_BUF);
    authenticate(&mut stream, &mut rbuf, target).await?;

    let mut params = Vec::new();
    let (mut pid, mut secret) = (0, 0);
    loop {
        match read_message(&mut stream, &mut rbuf).await? {
            Message::ParameterStatus(p) => {
                params.push((p.name()?.to_string(), p.value()?.to_string()));
            }
            Message::BackendKeyData(k) => {
                pid = k.process_id();
                secret = k.secret_key();
            }
            Message::ReadyForQuery(_) => break,
            Message::ErrorResponse(e) => return Err(LoginError::Refused(to_pg_error(e.fields()))),
            _ => {}
        }
    }
    let now = Instant::now();
    Ok(ServerConn {
        stream,
        to_client: rbuf,
        to_server: BytesMut::new(),
        statements: Default::default(),
        expect: Default::default(),
        replay: BytesMut::new(),
        peer,
        pid,
        secret,
        session: Arc::new(SessionParams::default()),
        params: Arc::new(params),
        created: now,
        last_used: now,
    })
}

/// TCP_NODELAY, and keepalives so a silent dead server is noticed.
pub fn configure_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30)).with_interval(Duration::from_secs(10)).with_retries(3);
    let _ = sock.set_tcp_keepalive(&ka);
}

async fn authenticate(stream: &mut Stream, rbuf: &mut BytesMut, target: &ServerTarget) -> Result<(), LoginError> {
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
        match read_message(stream, rbuf).await? {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                frontend::password_message(password()?.as_bytes(), &mut out)?;
            }
            Message::AuthenticationMd5Password(b) => {
                let hash = postgres_protocol::authentication::md5_hash(target.user.as_bytes(), password()?.as_bytes(), b.salt());
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            Message::AuthenticationSasl(b) => {
                let mut mechs = b.mechanisms();
                let mut ok = false;
                while let Some(m) = mechs.next()? {
                    ok |= m == SCRAM_SHA_256;
                }
                if !ok {
                    return Err(LoginError::Auth("server offers no SASL mechanism pgmux supports".into()));
                }
                if let Some(pw) = target.password.as_deref() {
                    let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
                    scram = Some(s);
                } else {
                    let keys = target.keys.get().cloned().ok_or_else(|| {
                        LoginError::Auth(format!(
                            "user \"{}\" has only a SCRAM verifier in the config: pgmux can log in to PostgreSQL once a client has logged in with SCRAM",
                            target.user
                        ))
                    })?;
                    let c = ScramKeyClient::new(keys);
                    frontend::sasl_initial_response(SCRAM_SHA_256, c.client_first().as_bytes(), &mut out)?;
                    key_client = Some(c);
                }
            }
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
