//! A client's way in after its StartupMessage (the packets before it are
//! `negotiate`'s): password authentication (SCRAM-SHA-256, with channel binding
//! over TLS, or md5) and the greeting (ParameterStatus, BackendKeyData, ReadyForQuery). Refusals use PostgreSQL's SQLSTATEs and wording.

use std::sync::Arc;

use bytes::BytesMut;
use rand::RngCore;

use crate::auth::md5;
use crate::auth::scram::{ScramSecret, ScramServer, MECHANISM, MECHANISM_PLUS};
use crate::clients::{ClientEntry, ClientInfo, ClientState};
use crate::config::AuthType;
use crate::error::{ClientError, ProtocolError};
use crate::net::{Inbound, Stream};
use crate::protocol::backend;
use crate::protocol::codes;
use crate::protocol::frame::cstr;
use crate::protocol::startup::{self, Startup};
use crate::settings::SessionParams;
use crate::state::{DbPools, State};

/// Largest password/SASL message accepted during authentication.
const MAX_AUTH_MESSAGE: usize = 8192;

/// A logged-in client.
pub struct LoggedIn {
    /// The pool set of the user and database logged in to (their names too).
    pub pools: Arc<DbPools>,
    /// The settings the client expects now (startup settings plus its SETs).
    pub params: Arc<SessionParams>,
    /// The settings from its startup packet (what RESET ALL returns to).
    pub startup: Arc<SessionParams>,
    pub session_features: crate::config::SessionFeatures,
}

/// Where a successful login leads.
pub enum Login {
    Pooled(LoggedIn),
    /// The admin console (database `pgbouncer` or `pgmux`, an admin user).
    Admin {
        user: String,
    },
}

/// How a login attempt ended, short of success.
pub enum Refusal {
    /// Tell the client (always FATAL at login), then close.
    Error(ClientError),
    /// Close without a word (a cancel request, a vanished client).
    Silent,
}

impl From<ClientError> for Refusal {
    fn from(e: ClientError) -> Self {
        Refusal::Error(e)
    }
}

impl From<ProtocolError> for Refusal {
    fn from(e: ProtocolError) -> Self {
        Refusal::Error(ClientError::Protocol(e))
    }
}

impl From<std::io::Error> for Refusal {
    fn from(_: std::io::Error) -> Self {
        Refusal::Silent
    }
}

/// Runs the whole login. On success the client has been greeted.
/// `peer`: the client's address (none on the Unix socket).
pub async fn login(
    stream: &mut Stream,
    inbound: &mut Inbound,
    peer: Option<std::net::SocketAddr>,
    state: &State,
    key: &ClientEntry,
    startup: Startup,
) -> Result<Login, Refusal> {
    let user = startup.get("user").filter(|u| !u.is_empty()).ok_or(ClientError::NoUserName)?.to_string();
    let database = startup.get("database").filter(|d| !d.is_empty()).unwrap_or(&user).to_string();
    if startup.get("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
        return Err(ClientError::Unsupported("pgmux does not pool replication connections").into());
    }
    // A client on the Unix socket counts as 127.0.0.1 (hba rules, failed logins).
    let addr = match stream {
        Stream::Unix(_) => ([127, 0, 0, 1], 0).into(),
        _ => peer.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
    };
    // Before any authentication exchange, as PostgreSQL checks pg_hba.conf.
    super::access::check(&state.config.current(), &state.auth_failures, addr.ip(), &user, &database)?;
    if state.clients.connected() > state.config.current().max_client_connections {
        return Err(ClientError::TooManyClients.into());
    }
    let mut out = BytesMut::with_capacity(512);
    negotiate(&startup, &mut out);
    state.clients.issue_secret(key, speaks_3_2(&startup));
    match authenticate(stream, inbound, state, &user, &database, &mut out).await {
        Ok(()) => state.auth_failures.succeeded(addr.ip()),
        Err(Refusal::Error(e @ ClientError::AuthFailed(_))) => {
            let (limit, window) = {
                let c = state.config.current();
                (c.auth_failure_limit, c.auth_failure_window.0)
            };
            if state.auth_failures.failed(addr.ip(), limit, window) {
                tracing::warn!(addr = %addr.ip(), failures = limit, ban = ?window, "too many failed logins: address banned");
            }
            return Err(Refusal::Error(e));
        }
        Err(e) => return Err(e),
    }
    let info = |user: Arc<str>, database: Arc<str>, application_name: &str| ClientInfo {
        user,
        database,
        addr,
        connected: std::time::SystemTime::now(),
        application_name: application_name.to_string(),
    };
    if crate::config::is_admin_database(&database) {
        if !state.users.get(&user).is_some_and(|u| u.admin) {
            return Err(ClientError::NotAdmin(user).into());
        }
        let _ = key.info.set(info(user.as_str().into(), database.as_str().into(), "admin console"));
        stream.write_all(&out).await?;
        return Ok(Login::Admin { user });
    }

    let Some(pools) = state.pools_for(&database, &user) else {
        return Err(ClientError::UnknownDatabase(database).into());
    };
    let mut settings = startup.params.clone();
    if let Some(opts) = startup.get("options") {
        let parsed = startup::split_options(opts).map_err(ProtocolError::from)?;
        settings.extend(parsed);
    }
    let params = state.params.intern(SessionParams::from_startup(settings));
    // From the server writes go to now (the configured primary may be gone after a failover).
    // Known after the first login; that one waits for a connection (boxed: rare).
    let node = pools.current_primary();
    let server_params = match node.known_server_params() {
        Some(p) => p,
        None => Box::pin(node.server_params()).await?,
    };

    backend::auth_ok(&mut out);
    for (k, v) in server_params.iter() {
        let v = params.get(k).unwrap_or(v);
        backend::parameter_status(&mut out, k, v);
    }
    backend::backend_key(&mut out, key.pid, key.secret().expect("issued above").as_bytes());
    backend::ready(&mut out, codes::TXN_IDLE);
    stream.write_all(&out).await?;
    let session_features = state.config.current().databases.get(&database).map(|d| d.session_features).unwrap_or_default();
    let _ = key.info.set(info(pools.user.clone(), pools.database.clone(), params.get("application_name").unwrap_or("")));
    key.set_state(ClientState::Idle);
    Ok(Login::Pooled(LoggedIn { pools, startup: params.clone(), params, session_features }))
}

/// Whether the client gets protocol 3.2 (it asked for 3.2 or newer): a 32-byte key.
fn speaks_3_2(startup: &Startup) -> bool {
    startup.minor_version >= 2
}

/// As PostgreSQL 18: a NegotiateProtocolVersion when the client asked for a minor
/// version pgmux does not speak (3.1, or newer than 3.2), or for `_pq_.` options
/// (none are known here), naming the version it gets.
fn negotiate(startup: &Startup, out: &mut BytesMut) {
    let speak = if speaks_3_2(startup) { startup::PROTOCOL_3_2 } else { startup::PROTOCOL_3_0 };
    let unsupported: Vec<String> = startup.params.iter().filter(|(k, _)| k.starts_with("_pq_.")).map(|(k, _)| k.clone()).collect();
    if i32::from(startup.minor_version) != speak & 0xffff || !unsupported.is_empty() {
        backend::negotiate_protocol(out, speak, unsupported);
    }
}

/// Reads one typed message that must be a password/SASL message ('p').
async fn read_password_message(stream: &mut Stream, inbound: &mut Inbound) -> Result<BytesMut, Refusal> {
    let tag = inbound.peek_u8(stream).await?;
    if tag != codes::PASSWORD {
        return Err(ProtocolError::NotPassword(tag).into());
    }
    let len = inbound.peek_i32(stream, 1).await?;
    if !(4..=MAX_AUTH_MESSAGE as i32).contains(&len) {
        return Err(ProtocolError::Length(len.into()).into());
    }
    inbound.skip(5);
    Ok(inbound.take(stream, len as usize - 4).await?)
}

async fn authenticate(
    stream: &mut Stream,
    inbound: &mut Inbound,
    state: &State,
    user: &str,
    database: &str,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let failed = || Refusal::from(ClientError::AuthFailed(user.to_string()));
    let known = match state.users.configured(user) {
        Some(u) => Some(u),
        None => Box::pin(super::auth_query::look_up(state, database, user)).await?,
    };
    match state.config.current().auth_type {
        AuthType::ScramSha256 => {
            // An unknown user goes through the same exchange against a throwaway
            // secret, so the answer does not reveal which user names exist.
            let dummy;
            let secret: &ScramSecret = match &known {
                Some(u) => &u.scram,
                None => {
                    dummy = ScramSecret::from_password(&rand::random::<u64>().to_string());
                    &dummy
                }
            };
            // Over TLS, channel binding is offered first, as PostgreSQL does.
            let cbind = stream.channel_binding().map(<[u8]>::to_vec);
            if cbind.is_some() {
                backend::auth_sasl(out, &[MECHANISM_PLUS, MECHANISM]);
            } else {
                backend::auth_sasl(out, &[MECHANISM]);
            }
            stream.write_all(out).await?;
            out.clear();
            let initial = read_password_message(stream, inbound).await?;
            let (mech, rest) = cstr(&initial).ok_or_else(|| Refusal::from(ProtocolError::Malformed("malformed SASLInitialResponse")))?;
            let plus = cbind.is_some() && mech == MECHANISM_PLUS.as_bytes();
            if !(plus || mech == MECHANISM.as_bytes()) || rest.len() < 4 {
                return Err(ProtocolError::Malformed("client selected an invalid SASL authentication mechanism").into());
            }
            let data_len = i32::from_be_bytes(rest[..4].try_into().unwrap());
            let data = &rest[4..];
            if data_len as isize != data.len() as isize {
                return Err(ProtocolError::Malformed("malformed SASLInitialResponse").into());
            }
            let mut server = ScramServer::new(secret, cbind.as_deref().filter(|_| plus), cbind.is_some());
            let first = server.client_first(data).map_err(|e| match e {
                crate::auth::scram::ScramError::ChannelBinding(m) => Refusal::from(ProtocolError::Malformed(m)),
                _ => failed(),
            })?;
            backend::auth_sasl_continue(out, first.as_bytes());
            stream.write_all(out).await?;
            out.clear();
            let fin = read_password_message(stream, inbound).await?;
            let (server_final, client_key) = server.client_final(&fin).map_err(|_| failed())?;
            let Some(known) = known else {
                return Err(failed());
            };
            if known.plaintext.is_none() {
                // Only a verifier is configured: keep the keys to log in to PostgreSQL.
                let _ = known.keys.set(crate::auth::scram::ScramKeys { client_key, server_key: known.scram.server_key });
            }
            backend::auth_sasl_final(out, server_final.as_bytes());
        }
        AuthType::Md5 => {
            let mut salt = [0u8; 4];
            rand::thread_rng().fill_bytes(&mut salt);
            backend::auth_md5(out, salt);
            stream.write_all(out).await?;
            out.clear();
            let resp = read_password_message(stream, inbound).await?;
            let resp = resp.strip_suffix(&[0]).unwrap_or(&resp);
            let ok = known.as_ref().and_then(|u| u.plaintext.as_deref()).is_some_and(|pw| md5::verify(user, pw, salt, resp));
            if !ok {
                return Err(failed());
            }
        }
    }
    Ok(())
}
