//! One request's way through a session: where it goes ([`super::route`]), a server
//! connection, the client's settings on it, the [`Relay`] until it hands back, and
//! what becomes of the connection, decided in one `match` over how the relay ended
//! ([`RelayEnd`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::relay::{Hold, Relay, RelayEnd, Timeouts, TxnRewrite};
use super::route::{Destination, Routing};
use super::session::{Session, SessionEnd};
use super::txn::TxnTracker;
use crate::clients::ClientState;
use crate::config::{PoolMode, SessionFeatures};
use crate::error::ClientError;
use crate::pool::Lease;
use crate::protocol::codes;
use crate::router::topology::Topology;
use crate::server::{After, InternalError};
use crate::settings::{read_query, sync_query, SessionParams};
use crate::sql::SessionEffects;
use crate::state::Running;

/// What the session follows while it holds a server connection.
pub(super) struct Holding {
    tracker: TxnTracker,
    /// What the client's queries did to its session (transaction mode).
    effects: SessionEffects,
    /// A session-only feature ties the client to this connection for the rest of
    /// its session.
    pinned: bool,
    routing: Option<Routing>,
    /// Only reads are sent: on a replica, and for a read on the primary (to see a
    /// write coming: it counts for read-your-writes).
    reads_only: bool,
    read_on_primary: bool,
    /// A write ran here: when it ends, the client's reads wait for the replicas.
    wrote: bool,
    /// The configuration the classifier reads, kept while reads-only (only when routing).
    classifier: Option<Arc<Running>>,
    mode: PoolMode,
    max_message: usize,
    timeouts: Timeouts,
    reject_session_features: bool,
    /// The connection LISTENs on the client's channels (`client::listen`): it is
    /// to listen on nothing again before it goes back to the pool.
    listen_dirty: bool,
    /// NotificationResponses the relay kept (a transaction that ran LISTEN).
    kept: Vec<Arc<crate::notify::Notification>>,
}

impl Holding {
    #[inline]
    fn new(config: &Arc<Running>, routing: Option<Routing>, began: bool, features: SessionFeatures) -> Holding {
        let read_on_primary = routing.is_some_and(|r| r.read && !r.decision.routed.to_replica());
        let timeouts = Timeouts {
            idle_transaction: config.pool.idle_transaction_timeout.nonzero(),
            query: config.pool.query_timeout.nonzero(),
            slow_query: config.slow_query_threshold.nonzero(),
        };
        let mut tracker = TxnTracker::default();
        if began {
            // pgmux's own BEGIN opened the transaction the client believes it is in.
            tracker.status = codes::TXN_IN_BLOCK;
        }
        Holding {
            tracker,
            effects: SessionEffects::default(),
            pinned: false,
            routing,
            reads_only: routing.is_some_and(|r| r.reads_only) || read_on_primary,
            read_on_primary,
            wrote: routing.is_some_and(|r| !r.read && !r.decision.routed.to_replica()),
            classifier: routing.map(|_| config.clone()),
            mode: config.pool.mode,
            max_message: config.max_message_size.0 as usize,
            timeouts,
            reject_session_features: features == SessionFeatures::Reject,
            listen_dirty: false,
            kept: Vec::new(),
        }
    }

    /// A request that is not a read on a replica: the transaction may move to the
    /// primary (it began with a plain `BEGIN`, has only read, and is still open).
    /// Moving is safe even after a Parse/Describe/Flush without its Sync: nothing ran,
    /// and the statements are prepared again on the primary.
    fn movable(&self) -> bool {
        self.routing.is_some_and(|r| r.movable) && self.tracker.status == codes::TXN_IN_BLOCK && !self.pinned
    }

    /// Whether the boundary has work: settings to read back, stale statements to drop.
    fn untidy(&self, lease: &Lease) -> bool {
        !self.effects.settings.is_empty() || self.effects.reset_all || lease.conn().statements.stale
    }
}

impl Session<'_> {
    /// One request's way: where it goes, a server connection, the relay. `Some`
    /// when the session is over.
    pub(super) async fn transaction(&mut self) -> Option<SessionEnd> {
        let mut routing = None;
        let topo = if self.routes() { Some(self.login.pools.topology.clone()) } else { None };
        if let Some(topo) = &topo {
            let config = self.config.load();
            match self.route.next(&mut self.stream, &mut self.from_client, &self.statements, config, topo).await {
                Ok(Destination::Route(r)) => routing = Some(r),
                Ok(Destination::Answered) => return None,
                Err(_) => return Some(SessionEnd::ClientLeft),
            }
        }
        self.client.set_state(ClientState::Waiting);
        self.shared.pause.wait_unpaused(&self.login.pools.database).await;
        let checkout = match (routing.as_mut(), &topo) {
            (Some(r), Some(topo)) => self.checkout_routed(topo, r).await,
            // The primary now (it moves on failover).
            _ => self.checkout_from(self.login.pools.current_primary().clone()).await,
        };
        self.client.set_state(ClientState::Active);
        match checkout {
            Ok(lease) => self.serve_with(lease, routing).await,
            Err(e) => Box::pin(self.refuse_request(e)).await,
        }
    }

    /// Takes a connection as decided; a replica that cannot be reached (or refuses
    /// logins for now) is skipped for the next one, then the primary.
    async fn checkout_routed(&mut self, topo: &Topology, routing: &mut Routing) -> Result<Lease, ClientError> {
        let mut skip = 0u64;
        loop {
            let pool = self.login.pools.node(routing.decision.node).clone();
            match self.checkout_from(pool).await {
                Ok(lease) => {
                    topo.count(routing.decision.routed);
                    return Ok(lease);
                }
                Err(e) if routing.decision.routed.to_replica() && e.server_unavailable() => {
                    let server = &topo.nodes[routing.decision.node].addr;
                    tracing::info!(client = self.client.pid, %server, error = %e, "replica unavailable; the read goes elsewhere");
                    routing.fall_back(topo, &mut skip);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs the client's traffic on `lease` until the boundary (transaction mode) or
    /// the end of the session (session mode, or a client pinned by a session-only
    /// feature). Returns `Some` when the session is over.
    async fn serve_with(&mut self, mut lease: Lease, routing: Option<Routing>) -> Option<SessionEnd> {
        // The relay's first run starts when the connection was lent (no clock read),
        // unless `prepare` talks to the server first.
        let quiet =
            Arc::ptr_eq(&lease.conn().session, &self.login.params) && self.listening.is_none() && self.route.pending_begin.is_none();
        let mut started = quiet.then(|| lease.lent_at());
        let (began, listen_dirty) = match self.prepare(&mut lease).await {
            Ok(r) => r,
            Err(e) => {
                lease.discard();
                return Box::pin(self.refuse_request(e)).await;
            }
        };
        let mut held = Holding::new(self.config.load(), routing, began, self.login.session_features);
        held.listen_dirty = listen_dirty;
        self.client.attach(lease.conn().cancel_target());
        loop {
            let started = started.take().unwrap_or_else(Instant::now);
            let (end, ended) = self.relay(&mut lease, &mut held, started).await;
            let was_pinned = held.pinned;
            if !matches!(end, RelayEnd::Reroute) {
                self.note_pin(&mut held);
            }
            let told = match end {
                RelayEnd::Boundary => {
                    if held.wrote {
                        // Read-your-writes: a write ended on the primary.
                        self.route.wrote(&self.login.pools.topology);
                    }
                    if let Some(e) = self.listen_boundary(&mut lease, &mut held, was_pinned).await {
                        tracing::warn!(client = self.client.pid, error = %e, "LISTEN bookkeeping failed at the transaction's end");
                        self.client.detach();
                        lease.discard();
                        return Some(Box::pin(self.end_with(e)).await);
                    }
                    if held.untidy(&lease) && !Box::pin(self.tidy(&mut lease, &held)).await {
                        self.client.detach();
                        lease.discard();
                        return None;
                    }
                    if held.pinned {
                        held.tracker = TxnTracker::default();
                        held.effects = SessionEffects::default();
                        continue;
                    }
                    self.client.detach();
                    lease.release_at(ended);
                    return None;
                }
                RelayEnd::Reroute if held.read_on_primary => {
                    held.wrote = true;
                    held.reads_only = false;
                    continue;
                }
                RelayEnd::Reroute if held.movable() => {
                    self.client.detach();
                    return Box::pin(self.move_to_primary(lease)).await;
                }
                RelayEnd::Reroute => {
                    let t = &held.tracker;
                    tracing::debug!(client = self.client.pid, status = %(t.status as char), unsynced = t.unsynced, pinned = held.pinned, "a request that is not a read stays on the replica");
                    // A failed, read-only or repeatable-read transaction stays where it
                    // is: the server answers the request (a standby refuses writes with 25006).
                    held.reads_only = false;
                    continue;
                }
                RelayEnd::ClientGone => None,
                RelayEnd::Shutdown => Some(ClientError::AdminShutdown),
                RelayEnd::Killed => Some(ClientError::Killed),
                RelayEnd::IdleInTransaction => Some(ClientError::IdleInTransactionTimeout),
                RelayEnd::ClientFailed(e) => Some(ClientError::Protocol(e)),
                RelayEnd::ServerFailed(f) => {
                    tracing::warn!(client = self.client.pid, server = %lease.pool().name, error = %f, "server connection lost mid-transaction");
                    Some(ClientError::ServerLost(f))
                }
            };
            self.client.detach();
            return Box::pin(self.leave(lease, &held, told)).await;
        }
    }

    /// Readies the connection for the client: its settings, a listening client's
    /// channels (outside its transaction), its held-back `BEGIN`. Returns whether that
    /// `BEGIN` was sent and whether the connection now listens.
    #[inline]
    async fn prepare(&mut self, lease: &mut Lease) -> Result<(bool, bool), ClientError> {
        // The boxed steps (kept out of this future's size) are entered only when
        // there is something to do: a box per transaction is measurable.
        if !Arc::ptr_eq(&lease.conn().session, &self.login.params) {
            Box::pin(self.sync_settings(lease)).await?;
        }
        let listen_dirty = if self.listening.is_some() { Box::pin(self.listen_before(lease)).await? } else { false };
        let began = self.route.pending_begin.is_some();
        if began {
            Box::pin(self.route.send_pending_begin(lease)).await?;
        }
        Ok((began, listen_dirty))
    }

    /// Runs the relay on the held connection until it hands back.
    async fn relay(&mut self, lease: &mut Lease, held: &mut Holding, started: Instant) -> (RelayEnd, Instant) {
        let hold = if held.mode == PoolMode::Session || held.pinned { Hold::Session } else { Hold::UntilBoundary };
        let statements = (held.mode == PoolMode::Transaction).then_some(TxnRewrite {
            client: &mut self.statements,
            registry: self.shared.statements,
            effects: &mut held.effects,
            reject_session_features: held.reject_session_features,
        });
        let (pool, server) = lease.parts();
        let mut relay = Relay {
            client: &self.stream,
            from_client: &mut self.from_client,
            client_framer: &mut self.framer,
            server,
            txn: &mut held.tracker,
            statements,
            max_message: held.max_message,
            counters: self.shared.counters,
            pool,
            timeouts: held.timeouts,
            kill: (&self.client.kill, &mut self.kill),
            stopping: self.shared.shutdown,
            reads_only: held.classifier.as_ref().filter(|_| held.reads_only).map(|c| &c.classifier),
            movable: held.routing.is_some_and(|r| r.movable) && !held.pinned,
            notifications: (hold == Hold::UntilBoundary && held.mode == PoolMode::Transaction).then_some(&mut held.kept),
        };
        relay.run(hold, started).await
    }

    /// At a boundary: a listening client's channels taken over by the hub and the
    /// connection listening on nothing (`client::listen`); at the boundary that pins
    /// the client, its notifications moved to its connection. `Some`: the error that
    /// ends the session (the connection is to be closed).
    async fn listen_boundary(&mut self, lease: &mut Lease, held: &mut Holding, was_pinned: bool) -> Option<ClientError> {
        if !(held.listen_dirty || held.effects.listen || (held.pinned && !was_pinned && self.listening.is_some())) {
            return None;
        }
        let kept = std::mem::take(&mut held.kept);
        held.listen_dirty = false;
        if was_pinned || !self.on_primary(lease) {
            return None;
        }
        if held.pinned {
            return Box::pin(self.listen_pinned(lease, kept)).await.err();
        }
        Box::pin(self.listen_after(lease, held.effects.listen, kept)).await.err().map(|e| {
            tracing::warn!(client = self.client.pid, error = %e, "could not read back the client's channels");
            ClientError::NotifyMissed
        })
    }

    /// A session-only feature used in this transaction pins the client to its
    /// connection from now on.
    fn note_pin(&mut self, held: &mut Holding) {
        if let Some(reason) = held.effects.pin.filter(|_| !held.pinned) {
            held.pinned = true;
            self.shared.counters.pinned_sessions.fetch_add(1, Ordering::Relaxed);
            self.shared.counters.pinned_now.fetch_add(1, Ordering::Relaxed);
            tracing::info!(client = self.client.pid, reason, "client pinned to its server connection for the rest of its session");
        }
    }

    /// The client leaves, or is told to go (`told`): its connection is recycled, or
    /// closed when its server was lost or the client was pinned to it (temporary
    /// tables, listeners, advisory locks: nothing to hand on).
    async fn leave(&mut self, lease: Lease, held: &Holding, told: Option<ClientError>) -> Option<SessionEnd> {
        if held.pinned {
            self.shared.counters.pinned_now.fetch_sub(1, Ordering::Relaxed);
        }
        // A connection that may listen is not handed on (a rare way out: the client
        // left or was told to go mid-transaction).
        if held.pinned || held.listen_dirty || held.effects.listen || matches!(told, Some(ClientError::ServerLost(_))) {
            lease.discard();
        } else {
            self.recycle(lease, &held.tracker).await;
        }
        Some(match told {
            Some(e) => self.end_with(e).await,
            None => SessionEnd::ClientLeft,
        })
    }

    /// A write came in a read-only transaction on a replica: the transaction ends
    /// there, and continues on the primary with the next request.
    async fn move_to_primary(&mut self, lease: Lease) -> Option<SessionEnd> {
        self.route.move_to_primary(lease).await;
        tracing::debug!(client = self.client.pid, "transaction moves from a replica to the primary");
        None
    }

    /// At a boundary after SET/RESET or a stale plan: the settings read back, the
    /// statements dropped. False when the connection is to be closed.
    async fn tidy(&mut self, lease: &mut Lease, held: &Holding) -> bool {
        if !held.effects.settings.is_empty() || held.effects.reset_all {
            if let Err(e) = self.refresh_settings(lease, &held.effects).await {
                tracing::warn!(client = self.client.pid, error = %e, "could not read back session settings");
                return false;
            }
        }
        if lease.conn().statements.stale {
            // Re-prepared on next use, with the table's new columns.
            let timeout = lease.pool().settings().connect_timeout;
            if lease.conn_mut().run_checked("DEALLOCATE ALL", timeout, After::Any).await.is_err() {
                return false;
            }
            lease.conn_mut().statements.clear();
            self.shared.counters.stale_plans.fetch_add(1, Ordering::Relaxed);
            tracing::info!(client = self.client.pid, "prepared statements dropped after \"cached plan must not change result type\"");
        }
        true
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
            let Ok(r) = lease.conn_mut().sync(timeout).await else {
                lease.discard();
                return;
            };
            synced.client_sent(codes::SYNC);
            synced.server_sent(codes::READY_FOR_QUERY, &[r.status]);
            &synced
        } else {
            txn
        };
        let cleanup = if txn.at_boundary() {
            (mode == PoolMode::Session).then_some(reset_query)
        } else if txn.quiescent() {
            Some("ROLLBACK".to_string())
        } else {
            lease.conn().cancel_target().send_later();
            lease.discard();
            return;
        };
        if let Some(sql) = cleanup.filter(|s| !s.is_empty()) {
            if lease.conn_mut().run_checked(&sql, timeout, After::Idle).await.is_err() {
                lease.discard();
                return;
            }
            // A reset forgets settings and statements; so must our records.
            let conn = lease.conn_mut();
            conn.session = Default::default();
            if mode == PoolMode::Session {
                conn.statements.clear();
            }
        }
        lease.release();
    }
}
