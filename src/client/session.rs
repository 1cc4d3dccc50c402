//! A logged-in client between and during transactions.
//!
//! The session waits (holding no buffers and no server) until the client sends
//! something, takes a server connection, brings its settings in line with the
//! client's, hands both sockets to the [`Relay`] until the transaction boundary,
//! and gives the connection back. In session mode the connection stays with the
//! client until it leaves. Whatever way a client leaves, the connection is returned
//! clean (rolled back, reset) or closed.

use std::sync::Arc;

use bytes::BytesMut;

use super::login::LoggedIn;
use super::relay::{Hold, Relay, RelayEnd, Timeouts, TxnRewrite, CLIENT_READ_BUF};
use super::route::{Destination, RouteState, Routing};
use super::txn::TxnTracker;
use crate::clients::{ClientEntry, ClientState, KillWatch};
use crate::config::{PoolMode, SessionFeatures};
use crate::error::{ClientError, PgError, ProtocolError, ServerFailure};
use crate::pool::Lease;
use crate::prepared::{ClientStatements, Registry};
use crate::protocol::backend;
use crate::protocol::codes;
use crate::protocol::frame::{Framer, Step};
use crate::server::{After, InternalError};
use crate::settings::{read_query, sync_query, SessionParams};
use crate::shutdown::Shutdown;
use crate::sql::SessionEffects;
use crate::state::{ConfigCache, Counters, Pause, State};

/// What a session reaches of the shared state besides the configuration (as
/// mini-redis's `Handler` gets only its db, its connection and the shutdown signal).
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    /// Every client's named statements (transaction mode).
    pub statements: &'a Registry,
    pub counters: &'a Counters,
    /// PAUSE: no transaction starts in a paused database.
    pub pause: &'a Pause,
    pub shutdown: &'a Shutdown,
}

impl<'a> Shared<'a> {
    pub fn of(state: &'a State) -> Shared<'a> {
        Shared { statements: &state.statements, counters: &state.counters, pause: &state.pause, shutdown: &state.shutdown }
    }
}

pub struct Session<'a> {
    pub shared: Shared<'a>,
    /// The configuration, looked at once per transaction.
    pub config: ConfigCache<'a>,
    pub stream: crate::net::Stream,
    pub login: LoggedIn,
    /// Its entry in the client registry (cancel key, state, kill signal).
    pub client: Arc<ClientEntry>,
    pub cbuf: BytesMut,
    pub cframer: Framer,
    pub statements: ClientStatements,
    pub route: RouteState,
    /// What this task has seen of its [`crate::clients::Kill`] signal.
    pub kill: KillWatch,
}

/// What ended an idle wait.
enum Wake {
    /// The client sent something (`false`: its socket failed).
    Readable(bool),
    IdleTimeout,
    Shutdown,
    Killed,
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The client closed its connection, or said Terminate.
    ClientLeft,
    /// The session was ended on this error (the client was told, where it could be).
    Ended(ClientError),
}

impl Session<'_> {
    pub async fn run(&mut self) -> SessionEnd {
        loop {
            // Idle: no server, no buffer unless the client pipelined ahead.
            if self.cbuf.len() < 5 {
                if self.shared.shutdown.begun() {
                    return Box::pin(self.end_with(ClientError::AdminShutdown)).await;
                }
                // In a held-back transaction the client is idle in a transaction.
                let in_txn = self.route.pending_begin.is_some() && !self.route.to_primary;
                let pool = &self.config.load().pool;
                let idle_limit = if in_txn { pool.idle_transaction_timeout.nonzero() } else { pool.client_idle_timeout.nonzero() };
                match self.idle_wait(idle_limit).await {
                    Wake::Readable(true) => {}
                    Wake::Readable(false) => return SessionEnd::ClientLeft,
                    Wake::Shutdown => continue,
                    Wake::IdleTimeout => {
                        let e = if in_txn { ClientError::IdleInTransactionTimeout } else { ClientError::IdleSessionTimeout };
                        return Box::pin(self.end_with(e)).await;
                    }
                    Wake::Killed => return Box::pin(self.end_with(ClientError::Killed)).await,
                }
                if self.cbuf.capacity() == 0 {
                    self.cbuf = super::buffers::take();
                }
                match self.stream.read_some(&mut self.cbuf) {
                    Ok(0) => return SessionEnd::ClientLeft,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => return SessionEnd::ClientLeft,
                }
            }
            if self.cbuf[0] == codes::TERMINATE {
                return SessionEnd::ClientLeft;
            }
            // Boxed: an idle client's task keeps only the idle wait above; the state
            // of a transaction (routing, checkout, relay) lives while it runs.
            if let Some(end) = Box::pin(self.transaction()).await {
                return end;
            }
            self.client.set_state(ClientState::Idle);
            if self.cbuf.is_empty() {
                super::buffers::give_back(std::mem::take(&mut self.cbuf));
            }
        }
    }

    /// One request's way: where it goes, a server connection, the relay. `Some`
    /// when the session is over.
    async fn transaction(&mut self) -> Option<SessionEnd> {
        let mut routing = None;
        let topo = if self.routes() { Some(self.login.pools.topology.clone()) } else { None };
        if let Some(topo) = &topo {
            match self.prepare_route(topo).await {
                Ok(Destination::Route(r)) => routing = Some(r),
                Ok(Destination::Answered) => return None,
                Err(end) => return Some(end),
            }
        }
        self.client.set_state(ClientState::Waiting);
        self.shared.pause.wait_unpaused(&self.login.database).await;
        let checkout = match (routing.as_mut(), &topo) {
            (Some(r), Some(topo)) => self.checkout_routed(topo, r).await,
            // The primary now (it moves on failover).
            _ => {
                let pools = &self.login.pools;
                self.checkout_from(pools.node(pools.topology.primary()).clone()).await
            }
        };
        self.client.set_state(ClientState::Active);
        let lease = match checkout {
            Ok(l) => l,
            Err(e) => return Box::pin(self.refuse_request(e)).await.err(),
        };
        self.serve_with(lease, routing).await
    }

    /// Waits, idle, for the client's next bytes or an event. This is what an idle
    /// client's task holds, so it is kept small: the idle timer is allocated only
    /// when a timeout is configured, and nothing is registered but the socket's
    /// waker (see [`crate::clients::kill`]).
    async fn idle_wait(&mut self, limit: Option<std::time::Duration>) -> Wake {
        use std::future::Future;
        use std::task::Poll;
        let mut timer = limit.map(|t| Box::pin(tokio::time::sleep(t)));
        let (stream, kill, watch) = (&self.stream, &self.client.kill, &mut self.kill);
        let wake = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                return Poll::Ready(Some(Wake::Readable(r.is_ok())));
            }
            if let Some(t) = timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Wake::IdleTimeout));
                }
            }
            // Also how a shutdown reaches idle clients (see `Proxy::begin_shutdown`).
            watch.poll(kill, cx).map(|()| None)
        })
        .await;
        wake.unwrap_or_else(|| if self.shared.shutdown.begun() { Wake::Shutdown } else { Wake::Killed })
    }

    /// Whether this client's requests are routed (else all go to the primary).
    fn routes(&mut self) -> bool {
        if !self.login.pools.topology.has_replicas() {
            return false;
        }
        let c = self.config.load();
        c.pool.mode == PoolMode::Transaction && c.routing.read_write_split
    }

    /// Takes a server connection; tells the client with a NOTICE when the wait passes
    /// `pool.wait_notice` (it keeps waiting, up to `checkout_timeout`).
    pub(super) async fn checkout_from(&mut self, pool: Arc<crate::pool::Pool>) -> Result<Lease, ClientError> {
        let Some(after) = self.config.load().pool.wait_notice.nonzero() else {
            return pool.checkout().await;
        };
        let mut checkout = Box::pin(pool.checkout());
        tokio::select! {
            r = &mut checkout => return r,
            _ = tokio::time::sleep(after) => {}
        }
        let s = pool.status();
        let notice = PgError::new(
            crate::error::Severity::Notice,
            "00000",
            format!("pgmux: waiting for a server connection ({} of {} in use, {} clients waiting)", s.total - s.idle, s.size, s.waiting),
        );
        let mut out = BytesMut::new();
        backend::notice(&mut out, &notice);
        let _ = self.stream.write_all(&out).await;
        checkout.await
    }

    /// Runs the client's traffic on `lease` until the boundary (transaction mode) or
    /// the end of the session (session mode, or a client pinned by a session-only
    /// feature). Returns `Some` when the session is over.
    async fn serve_with(&mut self, mut lease: Lease, routing: Option<Routing>) -> Option<SessionEnd> {
        // The boxed steps (kept out of this future's size) are entered only when
        // there is something to do: a box per transaction is measurable.
        if !Arc::ptr_eq(&lease.conn().session, &self.login.params) {
            if let Err(e) = Box::pin(self.sync_settings(&mut lease)).await {
                lease.discard();
                return Box::pin(self.refuse_request(e)).await.err();
            }
        }
        let began = self.route.pending_begin.is_some();
        if began {
            if let Err(e) = Box::pin(self.send_pending_begin(&mut lease)).await {
                lease.discard();
                return Box::pin(self.refuse_request(e)).await.err();
            }
        }
        // Kept while the relay runs reads-only (only when routing).
        let config = routing.map(|_| self.config.load().clone());
        // A read on the primary (no replica would do) is watched the same way: a write
        // that follows in its transaction counts for read-your-writes.
        let read_on_primary = routing.is_some_and(|r| r.read && !r.decision.routed.to_replica());
        let mut wrote = routing.is_some_and(|r| !r.read && !r.decision.routed.to_replica());
        let mut reads_only = routing.is_some_and(|r| r.reads_only) || read_on_primary;
        self.client.attach(lease.conn().cancel_target());
        let (mode, max_message, timeouts) = {
            let c = self.config.load();
            let timeouts = Timeouts {
                idle_transaction: c.pool.idle_transaction_timeout.nonzero(),
                query: c.pool.query_timeout.nonzero(),
                slow_query: c.slow_query_threshold.nonzero(),
            };
            (c.pool.mode, c.max_message_size.0 as usize, timeouts)
        };
        let reject = self.login.session_features == SessionFeatures::Reject;
        let mut pinned = false;
        let mut txn = TxnTracker::default();
        if began {
            // pgmux's own BEGIN opened the transaction the client believes it is in.
            txn.status = codes::TXN_IN_BLOCK;
        }
        let mut effects = SessionEffects::default();
        loop {
            let hold = if mode == PoolMode::Session || pinned { Hold::Session } else { Hold::UntilBoundary };
            let statements = (mode == PoolMode::Transaction).then(|| TxnRewrite {
                client: &mut self.statements,
                registry: self.shared.statements,
                effects: &mut effects,
                reject_session_features: reject,
            });
            let pool = lease.pool().clone();
            let mut relay = Relay {
                client: &self.stream,
                cbuf: &mut self.cbuf,
                cframer: &mut self.cframer,
                server: lease.conn_mut(),
                txn: &mut txn,
                statements,
                max_message,
                counters: self.shared.counters,
                pool: &pool,
                timeouts,
                label: None,
                kill: (&self.client.kill, &mut self.kill),
                stopping: self.shared.shutdown,
                reads_only: config.as_ref().filter(|_| reads_only).map(|c| &c.classifier),
            };
            let end = relay.run(hold).await;
            drop(relay);
            if matches!(end, RelayEnd::Reroute) && read_on_primary {
                wrote = true;
                reads_only = false;
                continue;
            }
            if matches!(end, RelayEnd::Reroute) {
                let movable = routing.is_some_and(|r| r.movable);
                // Moving is safe even after a Parse/Describe/Flush without its Sync:
                // nothing ran, and the statements are prepared again on the primary.
                if movable && txn.status == codes::TXN_IN_BLOCK && !pinned {
                    self.client.detach();
                    if !Box::pin(self.move_to_primary(lease)).await {
                        return Some(self.end_with(ClientError::ServerLost(ServerFailure::NotMoved)).await);
                    }
                    return None;
                }
                tracing::debug!(client = self.client.pid, movable, status = %(txn.status as char), unsynced = txn.unsynced, pinned, "a request that is not a read stays on the replica");
                // A failed, read-only or repeatable-read transaction stays where it is:
                // the server answers the request (a standby refuses writes with 25006).
                reads_only = false;
                continue;
            }
            if matches!(end, RelayEnd::Boundary) {
                // Read-your-writes: a write ended on the primary.
                if wrote {
                    self.route.wrote(&self.login.pools.topology);
                }
            }
            if let Some(reason) = effects.pin.filter(|_| !pinned) {
                pinned = true;
                self.shared.counters.pinned_sessions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.shared.counters.pinned_now.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(client = self.client.pid, reason, "client pinned to its server connection for the rest of its session");
            }
            if matches!(end, RelayEnd::Boundary) && (!effects.settings.is_empty() || effects.reset_all) {
                if let Err(e) = Box::pin(self.refresh_settings(&mut lease, &effects)).await {
                    tracing::warn!(client = self.client.pid, error = %e, "could not read back session settings");
                    self.client.detach();
                    lease.discard();
                    return None;
                }
            }
            if matches!(end, RelayEnd::Boundary) && lease.conn().statements.stale {
                // Re-prepared on next use, with the table's new columns.
                let timeout = lease.pool().settings().connect_timeout;
                match Box::pin(lease.conn_mut().run_checked("DEALLOCATE ALL", timeout, After::Any)).await {
                    Ok(_) => {
                        lease.conn_mut().statements.clear();
                        self.shared.counters.stale_plans.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(
                            client = self.client.pid,
                            "prepared statements dropped after \"cached plan must not change result type\""
                        );
                    }
                    _ => {
                        self.client.detach();
                        lease.discard();
                        return None;
                    }
                }
            }
            if matches!(end, RelayEnd::Boundary) && pinned {
                txn = TxnTracker::default();
                effects = SessionEffects::default();
                continue;
            }
            self.client.detach();
            if pinned && !matches!(end, RelayEnd::Boundary) {
                self.shared.counters.pinned_now.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                // Temporary tables, listeners, advisory locks: nothing to hand on.
                lease.discard();
                return Some(match end {
                    RelayEnd::Shutdown => Box::pin(self.end_with(ClientError::AdminShutdown)).await,
                    _ => SessionEnd::ClientLeft,
                });
            }
            if matches!(end, RelayEnd::Boundary | RelayEnd::Reroute) {
                lease.release();
                return None;
            }
            return Box::pin(self.after_relay(end, lease, &txn)).await;
        }
    }

    /// The relay ended other than at a boundary (handled in `serve_with`).
    async fn after_relay(&mut self, end: RelayEnd, lease: Lease, txn: &TxnTracker) -> Option<SessionEnd> {
        let told = match end {
            RelayEnd::Boundary | RelayEnd::Reroute => {
                lease.release();
                return None;
            }
            RelayEnd::ServerFailed(f) => {
                tracing::warn!(client = self.client.pid, server = %lease.pool().name, error = %f, "server connection lost mid-transaction");
                lease.discard();
                return Some(self.end_with(ClientError::ServerLost(f)).await);
            }
            RelayEnd::ClientGone => None,
            RelayEnd::Shutdown => Some(ClientError::AdminShutdown),
            RelayEnd::Killed => Some(ClientError::Killed),
            RelayEnd::IdleInTransaction => Some(ClientError::IdleInTransactionTimeout),
            RelayEnd::ClientFailed(e) => Some(ClientError::Protocol(e)),
        };
        self.recycle(lease, txn).await;
        Some(match told {
            Some(e) => self.end_with(e).await,
            None => SessionEnd::ClientLeft,
        })
    }

    /// After a transaction that ran SET/RESET: reads the settings back from the
    /// server, so the client keeps them on every later connection (and a rolled-back
    /// or LOCAL setting is not kept).
    async fn refresh_settings(&mut self, lease: &mut Lease, fx: &SessionEffects) -> Result<(), InternalError> {
        let mut names = fx.settings.clone();
        names.sort();
        names.dedup();
        let mut changes = Vec::new();
        if !names.is_empty() {
            let timeout = lease.pool().settings().connect_timeout;
            let r = lease.conn_mut().run_checked(&read_query(&names), timeout, After::Any).await?;
            for row in r.rows {
                if let [Some(name), value] = &row[..] {
                    changes.push((name.clone(), value.clone()));
                }
            }
        }
        let conn = lease.conn_mut();
        let (client_base, server_base) = if fx.reset_all {
            (self.login.startup.clone(), Arc::new(SessionParams::default()))
        } else {
            (self.login.params.clone(), conn.session.clone())
        };
        let client = client_base.updated(&changes);
        let server = server_base.updated(&changes);
        if client == server {
            let shared = Arc::new(client);
            conn.session = shared.clone();
            self.login.params = shared;
        } else {
            conn.session = Arc::new(server);
            self.login.params = Arc::new(client);
        }
        Ok(())
    }

    /// Applies the client's startup settings to the connection if it differs.
    async fn sync_settings(&mut self, lease: &mut Lease) -> Result<(), ClientError> {
        let conn = lease.conn_mut();
        if Arc::ptr_eq(&conn.session, &self.login.params) {
            return Ok(());
        }
        if let Some(sql) = sync_query(&self.login.params, &conn.session) {
            let timeout = lease.pool().settings().connect_timeout;
            lease.conn_mut().run_checked(&sql, timeout, After::Any).await?;
        }
        lease.conn_mut().session = self.login.params.clone();
        Ok(())
    }

    /// Returns a connection whose client left: clean at a boundary (reset in session
    /// mode), rolled back if idle in a transaction, otherwise cancelled and closed.
    /// Messages the client left without their Sync are ended with one first.
    async fn recycle(&mut self, mut lease: Lease, txn: &TxnTracker) {
        let (mode, reset_query) = {
            let c = self.config.load();
            (c.pool.mode, c.pool.server_reset_query.clone())
        };
        let timeout = lease.pool().settings().connect_timeout;
        let mut synced;
        let txn = if txn.answered() && txn.unsynced {
            synced = txn.clone();
            match lease.conn_mut().sync(timeout).await {
                Ok(r) => {
                    synced.client_sent(codes::SYNC);
                    synced.server_sent(codes::READY_FOR_QUERY, &[r.status]);
                }
                Err(_) => {
                    lease.discard();
                    return;
                }
            }
            &synced
        } else {
            txn
        };
        let cleanup = if txn.at_boundary() {
            match mode {
                PoolMode::Session => Some(reset_query),
                PoolMode::Transaction => None,
            }
        } else if txn.quiescent() {
            Some("ROLLBACK".to_string())
        } else {
            lease.conn().cancel_target().send_later();
            lease.discard();
            return;
        };
        if let Some(sql) = cleanup.filter(|s| !s.is_empty()) {
            match lease.conn_mut().run_checked(&sql, timeout, After::Idle).await {
                Ok(_) => {
                    // A reset forgets settings and statements; so must our records.
                    let conn = lease.conn_mut();
                    conn.session = Default::default();
                    if mode == PoolMode::Session {
                        conn.statements.clear();
                    }
                }
                _ => {
                    lease.discard();
                    return;
                }
            }
        }
        lease.release();
    }

    /// Answers the client's pending request with an error, as a server would: the
    /// error at once, then everything up to its Sync skipped, then ReadyForQuery.
    async fn refuse_request(&mut self, e: ClientError) -> Result<(), SessionEnd> {
        tracing::info!(client = self.client.pid, error = %e, "request refused");
        if e.is_fatal() {
            return Err(self.end_with(e).await);
        }
        self.send_error(&e.to_pg()).await;
        let max = self.config.load().max_message_size.0 as usize;
        loop {
            let mut end_found = false;
            let r = self.cframer.scan::<std::convert::Infallible>(
                &self.cbuf,
                max,
                |_| 0,
                |f| {
                    if matches!(f.tag(), codes::QUERY | codes::FUNCTION_CALL | codes::SYNC) {
                        end_found = true;
                        return Ok(Step::Stop);
                    }
                    Ok(Step::Continue)
                },
            );
            let n = match r {
                Ok(Ok(n)) => n,
                Ok(Err(bad)) => return Err(SessionEnd::Ended(ProtocolError::BadLength { tag: bad.tag, len: bad.len }.into())),
                Err(never) => match never {},
            };
            crate::server::consume(&mut self.cbuf, n);
            if end_found {
                let mut out = BytesMut::new();
                backend::ready(&mut out, codes::TXN_IDLE);
                return self.stream.write_all(&out).await.map_err(|_| SessionEnd::ClientLeft);
            }
            self.cbuf.reserve(CLIENT_READ_BUF);
            match tokio::io::AsyncReadExt::read_buf(&mut self.stream, &mut self.cbuf).await {
                Ok(0) | Err(_) => return Err(SessionEnd::ClientLeft),
                Ok(_) => {}
            }
        }
    }

    async fn send_error(&mut self, e: &PgError) {
        let mut out = BytesMut::new();
        backend::error(&mut out, e);
        let _ = self.stream.write_all(&out).await;
    }

    /// Tells the client why its session ends (a FATAL error), and ends it.
    async fn end_with(&mut self, e: ClientError) -> SessionEnd {
        self.send_error(&e.to_pg()).await;
        SessionEnd::Ended(e)
    }
}
