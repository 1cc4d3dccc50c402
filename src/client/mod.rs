//! One client connection, from accept to close.
//!
//! - [`negotiate`]: first packets (TLS, GSSENC refusal, CancelRequest).
//! - [`login`]: authentication, greeting.
//! - [`auth_query`]: users not in the config, looked up in PostgreSQL.
//! - [`access`]: `hba:` rules and banned addresses, checked before authentication.
//! - [`session`]: a logged-in client between transactions (the idle wait).
//! - `transaction`: one request's way: routing, checkout, settings, the relay, and
//!   what becomes of the connection (one `match` over how the relay ended).
//! - [`route`]: where a request goes (held-back `BEGIN`, `SET pgmux.route`, fallback).
//! - [`relay`]: the hot path forwarding bytes during a transaction, as explicit
//!   per-direction state; [`to_server`] and `to_client`: its two directions.
//! - [`listen`]: LISTEN in transaction mode: the channels read back at the boundary,
//!   handed to the database's hub, notifications written between transactions.
//! - [`buffers`]: read buffers lent to active clients and kept per thread.
//! - [`rewrite`], [`responses`], [`retry`]: named statements shared across server
//!   connections, and the one retry after a stale cached plan.
//! - [`txn`]: the protocol bookkeeping that says when a transaction is over.

pub mod access;
pub mod auth_query;
pub mod listen;
pub mod login;
pub mod negotiate;
pub mod relay;
pub mod responses;
pub mod retry;
pub mod rewrite;
pub mod route;
pub mod session;
mod to_client;
pub mod to_server;
mod transaction;
pub mod txn;

use std::sync::Arc;

use bytes::BytesMut;

use crate::error::{ClientError, ErrorKind, Severity};
use crate::net::{Inbound, Stream};
use crate::prepared::ClientStatements;
use crate::protocol::backend;
use crate::protocol::frame::Framer;
use crate::state::State;
use login::Refusal;
use session::{Session, SessionEnd, Shared};

/// First packets and login; on failure, the stream to tell the client on (if any).
async fn start(
    socket: Stream,
    peer: Peer,
    state: &State,
    key: &crate::clients::ClientEntry,
) -> Result<(Stream, Inbound, login::Login), negotiate::Failed> {
    let mut inbound = Inbound::default();
    let (mut stream, startup) = negotiate::first_packets(socket, state, &mut inbound).await?;
    match login::login(&mut stream, &mut inbound, peer.0, state, key, startup).await {
        Ok(l) => Ok((stream, inbound, l)),
        Err(r) => Err((Some(stream), r)),
    }
}

/// A client's address, for logs (read once, at its arrival; formatted only if logged).
#[derive(Clone, Copy)]
struct Peer(Option<std::net::SocketAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("unix socket"),
        }
    }
}

/// Tells a refused client why (FATAL: a refusal at login closes the connection),
/// counts it by kind, and closes.
async fn refuse(state: &State, mut stream: Stream, e: ClientError, id: i32, peer: Peer) {
    let mut pg = e.to_pg();
    pg.severity = Severity::Fatal;
    let kind = e.kind();
    if matches!(kind, ErrorKind::Hba | ErrorKind::AuthFailureLimit) {
        tracing::warn!(client = id, %peer, reason = kind.label(), error = %pg, "login refused before authentication");
    } else {
        tracing::info!(client = id, %peer, error = %pg, "login refused");
    }
    state.metrics.rejected.count(kind);
    let mut out = BytesMut::new();
    backend::error(&mut out, &pg);
    let _ = stream.write_all(&out).await;
    stream.shutdown().await;
}

/// Serves one accepted client connection to the end.
///
/// Its future is what an idle client costs (with its socket): it holds the session
/// and the session's idle wait, nothing of the login (boxed, and gone by then) or of
/// a transaction (boxed while it runs).
pub async fn serve(socket: Stream, state: Arc<State>, arrival: crate::clients::Arrival) {
    let key = state.clients.register_arrived(arrival);
    let Some(mut session) = Box::pin(welcome(socket, &state, &key.entry)).await else { return };
    // Every log line carries the client id; no span is entered per poll (hot path).
    let id = key.entry.pid;
    session.login.pools.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match session.run().await {
        SessionEnd::ClientLeft => tracing::info!(client = id, "client left"),
        SessionEnd::Ended(e) => tracing::info!(client = id, error = %e, "session ended"),
    }
    session.login.pools.clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// First packets and login within `startup_timeout`; a refusal is told and
/// counted, an admin console served. `Some`: a pooled client's session, greeted.
async fn welcome<'a>(socket: Stream, state: &'a Arc<State>, entry: &Arc<crate::clients::ClientEntry>) -> Option<Session<'a>> {
    let id = entry.pid;
    let peer = Peer(socket.peer_addr().ok());
    let timeout = state.config.current().startup_timeout.0;
    let (stream, inbound, logged_in) = match tokio::time::timeout(timeout, start(socket, peer, state, entry)).await {
        Ok(Ok((stream, inbound, login::Login::Pooled(l)))) => (stream, inbound, l),
        Ok(Ok((stream, inbound, login::Login::Admin { user }))) => {
            tracing::info!(client = id, %peer, %user, "admin console");
            crate::admin::serve(stream, inbound, state.clone(), entry.clone()).await;
            return None;
        }
        Ok(Err((Some(stream), Refusal::Error(e)))) => {
            refuse(state, stream, e, id, peer).await;
            return None;
        }
        Ok(Err(_)) => return None,
        Err(_) => {
            tracing::info!(client = id, %peer, "startup timed out");
            state.metrics.rejected.count(ErrorKind::StartupTimeout);
            return None;
        }
    };
    tracing::info!(client = id, %peer, user = %logged_in.pools.user, database = %logged_in.pools.database, "logged in");
    let route = state.config.current().user(&logged_in.pools.user).map(|u| u.route).unwrap_or_default();
    Some(Session {
        shared: Shared::of(state),
        config: state.config.cache(),
        stream,
        login: logged_in,
        client: entry.clone(),
        // A first request sent before the greeting was read.
        from_client: inbound.into_rest(),
        framer: Framer::default(),
        statements: ClientStatements::new(state.statements.client_uid()),
        route: route::RouteState::new(route),
        kill: Default::default(),
        late: state.shutdown.begun(),
        listening: None,
    })
}

#[cfg(test)]
mod tests {
    /// What an idle client may cost, besides its socket and its task's header: the
    /// future of [`super::serve`] (the session and its idle wait). A feature that
    /// needs more per idle client raises these on purpose.
    /// (LISTEN/NOTIFY took 8 bytes: `Session::listening`, a pointer.)
    const IDLE_CLIENT_FUTURE: usize = 600;
    const SESSION: usize = 360;
    /// The login's future is boxed and gone once the client is in; still bounded.
    const LOGIN_FUTURE: usize = 1536;

    #[test]
    fn future_sizes() {
        let state = crate::state::State::new(
            crate::config::Config::parse(include_str!("../../configs/pgmux.yaml"), std::path::Path::new("x")).unwrap(),
        );
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let s = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let key = state.clients.register();
            let mut s2 = crate::net::Stream::Plain(tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap());
            let login =
                std::mem::size_of_val(&super::login::login(&mut s2, &mut Default::default(), None, &state, &key.entry, Default::default()));
            let serve = std::mem::size_of_val(&super::serve(crate::net::Stream::Plain(s), state.clone(), state.clients.arriving()));
            let session = std::mem::size_of::<super::session::Session<'static>>();
            let sizes = format!(
                "serve future {serve} bytes, session {session}, login future {login}; logged in {}, statements {}, route {}",
                std::mem::size_of::<super::login::LoggedIn>(),
                std::mem::size_of::<crate::prepared::ClientStatements>(),
                std::mem::size_of::<super::route::RouteState>()
            );
            println!("{sizes}");
            assert!(serve <= IDLE_CLIENT_FUTURE, "an idle client's future outgrew its budget: {sizes}");
            assert!(session <= SESSION, "a session outgrew its budget: {sizes}");
            assert!(login <= LOGIN_FUTURE, "the login's future outgrew its budget: {sizes}");
        });
    }
}
