//! A bounded pool of server connections for one (database, user, server).
//!
//! At most `size` connections exist (open or being opened), and no more than the
//! pool's shared [`limit`]s allow (`max_db_connections`, `max_user_connections`). A
//! client that finds none idle and no room waits in a FIFO queue; a returned
//! connection goes straight to the longest waiter, and a freed slot to the longest
//! waiter of whichever pool sharing the limit has waited longest. Waiting is bounded by
//! `checkout_timeout`. A server that cannot be reached is retried with exponential
//! backoff; meanwhile checkouts fail at once with the last connect error instead of
//! hanging.
//!
//! A checked-out connection is a [`Lease`]: give it back with [`Lease::release`]
//! (reusable) or [`Lease::discard`]; a lease dropped any other way (a panic, a
//! forgotten path) is discarded, so the pool's count never leaks. The slot of a
//! connection being opened and a place in the queue are guards too. Every change of
//! `total` goes through [`Pool::take_slot`] and [`Pool::give_slots`], which count the
//! limits' units with it.

mod affinity;
mod lease;
pub mod limit;
mod settings;
mod upkeep;
mod wait;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::ClientError;
use crate::metrics::{PoolCounts, PoolMetrics, PoolSample};
use crate::server::{self, ServerConn, ServerTarget};

pub use lease::Lease;
pub use limit::{Limit, LimitKind, Limits};
#[cfg(test)]
pub use settings::whole;
pub use settings::{PoolSettings, Share};

use lease::Slot;
use wait::{Queued, Waiter};

/// ParameterStatus values a server reported at login.
pub type ServerParams = Arc<Vec<(String, String)>>;

/// The verdict on an idle connection about to be lent.
#[derive(PartialEq, Eq)]
enum Vetted {
    Fit,
    /// Idle for longer than `server_check_delay`: check it first.
    Check,
    Unfit,
}

/// What a waiter is handed.
enum Grant {
    /// An idle connection.
    Conn(Box<ServerConn>),
    /// Room to open a new connection (already counted for the waiter).
    Slot,
    /// `checkout_timeout` ran out (sent by the pool's expiry task).
    Expired,
}

/// What a checkout does after looking at the pool (a short-lived local: its size
/// does not matter).
#[allow(clippy::large_enum_variant)]
enum Next<'a> {
    Ready(Grant),
    /// Queued; `true` when a shared limit (not the pool's size) holds it back.
    Wait(Waiter<'a>, bool),
}

/// Whether a new slot could be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Taken,
    /// The pool is at its size.
    Full,
    /// A shared limit (`max_db_connections`, `max_user_connections`) is reached.
    Limited,
}

#[derive(Default)]
struct State {
    /// Idle connections; the most recently used at the back.
    /// Boxed, here and wherever a connection travels (grant, lease): moving it is
    /// a pointer copy, not a few hundred bytes per checkout.
    idle: VecDeque<Box<ServerConn>>,
    /// Connections open or being opened, idle or lent out (each holds a unit of every
    /// limit of the pool).
    total: usize,
    /// Waiting clients, with when each began to wait.
    waiters: VecDeque<Queued>,
    /// `waiters` was non-empty when the limits were last told.
    flagged: bool,
    down: Option<Down>,
    /// A copy of the pool's settings, for the checkout and return paths, which
    /// hold the lock anyway (updated under it with the shared copy).
    settings: PoolSettings,
}

/// The server could not be reached: fail fast until `retry_at`.
struct Down {
    /// When the last failure that counted was recorded.
    since: Instant,
    retry_at: Instant,
    failures: u32,
    reason: String,
}

/// Counters read by admin commands (SHOW STATS) and, at scrape time, metrics.
#[derive(Debug, Default)]
pub struct PoolCounters {
    pub timeouts: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Time clients spent waiting for a connection (µs).
    pub wait_micros: AtomicU64,
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    /// Time from a request to its last ReadyForQuery (µs).
    pub query_micros: AtomicU64,
    /// Time server connections were lent to clients (µs).
    pub xact_micros: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// A snapshot of a pool's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub idle: usize,
    pub total: usize,
    pub waiting: usize,
    pub size: usize,
    /// How long the longest-waiting client has waited.
    pub max_wait: Duration,
}

pub struct Pool {
    /// `database/user@host:port`, for messages and logs.
    pub name: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    pub target: ServerTarget,
    /// Swapped whole on reload.
    settings: arc_swap::ArcSwap<PoolSettings>,
    /// The shared limits this pool's connections count in (its database's and its
    /// user's on this server).
    pub limits: Vec<Arc<Limit>>,
    state: Mutex<State>,
    /// Wakes the expiry task ([`wait::expire_waiters`]), started at the first wait.
    expiry: Arc<tokio::sync::Notify>,
    expiry_started: std::sync::atomic::AtomicBool,
    /// ParameterStatus values of the first login, reported to clients at their login.
    server_params: Mutex<Option<ServerParams>>,
    pub counters: PoolCounters,
    pub metrics: PoolMetrics,
}

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Pool {
    pub fn new(
        target: ServerTarget,
        settings: PoolSettings,
        metrics: PoolMetrics,
        role: &'static str,
        limits: Vec<Arc<Limit>>,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            name: format!("{}/{}@{}", target.dbname, target.user, target.addr),
            role,
            target,
            settings: arc_swap::ArcSwap::from_pointee(settings.clone()),
            limits,
            state: Mutex::new(State { settings, ..State::default() }),
            expiry: Default::default(),
            expiry_started: Default::default(),
            server_params: Mutex::new(None),
            counters: PoolCounters::default(),
            metrics,
        });
        for l in &pool.limits {
            l.join(&pool);
        }
        pool
    }

    pub fn settings(&self) -> arc_swap::Guard<Arc<PoolSettings>> {
        self.settings.load()
    }

    /// Applies new limits (reload): a larger pool lets waiters open connections at
    /// once; a smaller one closes idle connections beyond its size and shrinks further
    /// as connections come back.
    pub fn update_settings(&self, settings: PoolSettings) {
        let size = settings.size;
        self.settings.store(Arc::new(settings.clone()));
        let mut closed = Vec::new();
        {
            let mut st = self.lock();
            st.settings = settings;
            // The timeout may have changed: the expiry task looks again.
            self.expiry.notify_one();
            self.grant_waiters(&mut st);
            while st.total > size {
                let Some(c) = st.idle.pop_front() else { break };
                self.give_slots(&mut st, 1);
                closed.push(c);
            }
            self.sync_waiting(&mut st);
        }
        closed.into_iter().for_each(|c| c.close());
        self.wake_limits();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> PoolStatus {
        let s = self.lock();
        PoolStatus {
            idle: s.idle.len(),
            total: s.total,
            waiting: s.waiters.len(),
            size: self.settings().size,
            max_wait: s.waiters.front().map(|q| q.since.elapsed()).unwrap_or_default(),
        }
    }

    /// Its figures for a metrics scrape.
    pub fn sample(&self) -> PoolSample<'_> {
        let s = self.status();
        let c = &self.counters;
        let counts = PoolCounts {
            transactions: c.transactions.load(Ordering::Relaxed),
            queries: c.queries.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
            checkout_timeouts: c.timeouts.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            connect_failures: c.connect_failures.load(Ordering::Relaxed),
        };
        PoolSample { metrics: &self.metrics, idle: s.idle, total: s.total, waiting: s.waiting, size: s.size, counts }
    }

    /// The server parameters, if a connection has been made (no waiting).
    pub fn known_server_params(&self) -> Option<ServerParams> {
        self.server_params.lock().unwrap().clone()
    }

    /// Server parameters to report to a client logging in; opens a connection to
    /// learn them if no connection was ever made.
    pub async fn server_params(self: &Arc<Self>) -> Result<ServerParams, ClientError> {
        if let Some(p) = self.known_server_params() {
            return Ok(p);
        }
        let lease = self.checkout().await?;
        let params = lease.conn().params.clone();
        lease.release();
        Ok(params)
    }

    /// Takes a connection: idle, new, or the next one returned, within the timeout.
    pub async fn checkout(self: &Arc<Self>) -> Result<Lease, ClientError> {
        // The common case, an idle connection fit for use, reads no clock for the wait.
        // The client's worker thread (see `crate::worker`), read once.
        let me = crate::worker::id();
        if let Some(lease) = self.take_idle_fit(me) {
            self.metrics.wait.record(std::time::Duration::ZERO);
            return Ok(lease);
        }
        let started = Instant::now();
        let r = self.checkout_inner(started, me).await;
        // The lease's clock read ends the wait (a failed checkout reads the clock).
        let waited = r.as_ref().map_or_else(|_| Instant::now(), Lease::lent_at).saturating_duration_since(started);
        self.metrics.wait.record(waited);
        self.counters.wait_micros.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        r
    }

    async fn checkout_inner(self: &Arc<Self>, started: Instant, me: u16) -> Result<Lease, ClientError> {
        // Set once a grant turned out unusable: the client waits again, first in line.
        let mut again = false;
        loop {
            let next = {
                let mut st = self.lock();
                if let Some(conn) = st.pop_idle(me) {
                    Next::Ready(Grant::Conn(conn))
                } else {
                    let size = st.settings.size;
                    if st.total < size {
                        if let Some(d) = &st.down {
                            if Instant::now() < d.retry_at {
                                return Err(self.unavailable(&d.reason));
                            }
                        }
                    }
                    match self.take_slot(&mut st, size) {
                        Room::Taken => Next::Ready(Grant::Slot),
                        // Queued under the same lock: a grant cannot slip by.
                        room => Next::Wait(Waiter::enqueue(self, &mut st, started, again, me), room == Room::Limited),
                    }
                }
            };
            let grant = match next {
                Next::Ready(grant) => grant,
                Next::Wait(waiter, limited) => {
                    self.watch_expiry();
                    if limited {
                        // Room may be made by closing idle connections of other pools.
                        limit::wake(&self.limits);
                    }
                    waiter.wait().await?
                }
            };
            match grant {
                Grant::Conn(conn) => {
                    // Leased before any await: the slot is freed whatever happens.
                    let now = Instant::now();
                    let mut lease = Lease::new(self.clone(), conn, now, me);
                    let fit = match self.vet(lease.conn(), &self.settings(), now) {
                        Vetted::Fit => true,
                        Vetted::Check => Box::pin(self.check(lease.conn_mut())).await,
                        Vetted::Unfit => false,
                    };
                    if fit {
                        return Ok(lease);
                    }
                    lease.discard();
                    again = true;
                }
                // Boxed, like the check above: rare paths with large futures stay out of
                // every client task's size.
                Grant::Slot => {
                    let slot = Slot::new(self);
                    return Box::pin(self.open()).await.map(|c| slot.lend(c));
                }
                Grant::Expired => unreachable!("Waiter::wait answers an expiry with an error"),
            }
        }
    }

    /// Takes a slot if the pool has fewer than `cap` and every limit has room.
    fn take_slot(&self, st: &mut State, cap: usize) -> Room {
        if st.total >= cap {
            return Room::Full;
        }
        for (i, l) in self.limits.iter().enumerate() {
            if !l.try_take() {
                self.limits[..i].iter().for_each(|l| l.give(1));
                return Room::Limited;
            }
        }
        st.total += 1;
        Room::Taken
    }

    /// Frees `n` slots (their connections are gone or going).
    fn give_slots(&self, st: &mut State, n: usize) {
        st.total -= n;
        self.limits.iter().for_each(|l| l.give(n));
    }

    /// Tells the limits whether this pool has clients waiting.
    fn sync_waiting(&self, st: &mut State) {
        let on = !st.waiters.is_empty();
        if on != st.flagged {
            st.flagged = on;
            self.limits.iter().for_each(|l| l.set_waiting(on));
        }
    }

    /// Gives waiters new slots while the size and the limits allow; returns how many.
    fn grant_waiters(&self, st: &mut State) -> usize {
        let size = st.settings.size;
        let mut granted = 0;
        while !st.waiters.is_empty() && self.take_slot(st, size) == Room::Taken {
            let q = st.waiters.pop_front().expect("not empty");
            if q.tx.send(Grant::Slot).is_ok() {
                granted += 1;
            } else {
                self.give_slots(st, 1);
            }
        }
        granted
    }

    /// For [`limit::wake`]: since when the longest waiter has waited, if the pool has
    /// waiters and room by its size (so only a limit can hold them back).
    fn blocked_since(&self) -> Option<Instant> {
        let st = self.lock();
        let q = st.waiters.front()?;
        (st.total < st.settings.size).then_some(q.since)
    }

    /// For [`limit::wake`]: gives waiters the room there is.
    fn grant(&self) -> usize {
        let mut st = self.lock();
        let n = self.grant_waiters(&mut st);
        self.sync_waiting(&mut st);
        n
    }

    /// For [`limit::wake`]: when the least recently used idle connection was last used.
    fn oldest_idle(&self) -> Option<Instant> {
        self.lock().idle.front().map(|c| c.last_used)
    }

    /// Closes the least recently used idle connection to make room under a limit.
    fn evict_idle(&self) -> bool {
        let conn = {
            let mut st = self.lock();
            let Some(c) = st.idle.pop_front() else { return false };
            self.give_slots(&mut st, 1);
            c
        };
        tracing::debug!(pool = %self.name, "closing an idle server connection to make room for another pool under a connection limit");
        conn.close();
        true
    }

    /// After slots were freed: lets waiters of other pools sharing a limit proceed.
    fn wake_limits(&self) {
        if self.limits.iter().any(|l| l.has_waiters()) {
            limit::wake(&self.limits);
        }
    }

    /// A grant that reached a client no longer waiting.
    fn take_back(&self, g: Grant) {
        match g {
            Grant::Conn(c) => self.put_back(c, Instant::now()),
            Grant::Slot => self.forget_one(),
            Grant::Expired => {}
        }
    }

    /// The most recently used idle connection, if it is fit for use as it is (else
    /// it stays, for the full checkout to deal with).
    fn take_idle_fit(self: &Arc<Self>, me: u16) -> Option<Lease> {
        let mut st = self.lock();
        let conn = st.pop_idle(me)?;
        let now = Instant::now();
        if self.vet(&conn, &st.settings, now) == Vetted::Fit {
            drop(st);
            return Some(Lease::new(self.clone(), conn, now, me));
        }
        st.idle.push_back(conn);
        None
    }

    /// Looks at an idle connection before lending it (no I/O).
    fn vet(&self, conn: &ServerConn, settings: &PoolSettings, now: Instant) -> Vetted {
        if !conn.idle_is_clean() || now.duration_since(conn.created) >= settings.lifetime {
            return Vetted::Unfit;
        }
        if now.duration_since(conn.last_used) >= settings.check_delay {
            return Vetted::Check;
        }
        Vetted::Fit
    }

    /// Checks a connection idle for long with an empty query.
    async fn check(&self, conn: &mut ServerConn) -> bool {
        conn.run_checked("", self.settings().connect_timeout, server::After::Idle).await.is_ok()
    }

    /// Opens a new connection in a slot already counted in `total` (the caller's
    /// [`Slot`] frees it if this fails).
    async fn open(&self) -> Result<Box<ServerConn>, ClientError> {
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        match server::login::connect(&self.target, self.settings().connect_timeout).await {
            Ok(mut conn) => {
                conn.statements = crate::prepared::ServerStatements::with_capacity(self.settings().max_prepared_statements);
                self.lock().down = None;
                let mut p = self.server_params.lock().unwrap();
                if p.is_none() {
                    *p = Some(conn.params.clone());
                }
                Ok(Box::new(conn))
            }
            Err(e) => {
                self.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pool = %self.name, error = %e, "server login failed");
                let client_err = match e.server_error() {
                    // The server's own refusal (bad password, no such database) is passed on.
                    Some(pg) => ClientError::ServerRefused(pg.clone()),
                    None => self.unavailable(&e.to_string()),
                };
                let mut st = self.lock();
                match st.down.as_mut() {
                    // Begun before the last failure was recorded: one of the attempts
                    // made at once (many clients), not a retry. The backoff grows per
                    // retry, not per client.
                    Some(d) if d.since >= began => d.reason = e.to_string(),
                    _ => {
                        let failures = st.down.as_ref().map_or(0, |d| d.failures) + 1;
                        let backoff = (BACKOFF_START * 2u32.saturating_pow(failures - 1)).min(BACKOFF_MAX);
                        let now = Instant::now();
                        st.down = Some(Down { since: now, retry_at: now + backoff, failures, reason: e.to_string() });
                    }
                }
                Err(client_err)
            }
        }
    }

    fn unavailable(&self, reason: &str) -> ClientError {
        ClientError::ServerUnavailable { server: self.target.addr.to_string(), reason: reason.to_string() }
    }

    /// A connection (or slot) went away: its slot goes to the longest waiter if the
    /// size and limits allow, else back to the limits (for other pools' waiters).
    fn forget_one(&self) {
        {
            let mut st = self.lock();
            self.give_slots(&mut st, 1);
            self.grant_waiters(&mut st);
            self.sync_waiting(&mut st);
        }
        self.wake_limits();
    }

    /// Takes back a reusable connection: to the longest waiter, else to the idle list
    /// (or closed, when a limit it counts in is wanted by another pool's waiters).
    /// `now` is a fresh clock read of the caller's.
    fn put_back(&self, mut conn: Box<ServerConn>, now: Instant) {
        conn.last_used = now;
        conn.shrink();
        {
            let mut st = self.lock();
            // Past its lifetime, more connections than the (reloaded) size allows,
            // or a shared limit over its (reloaded) maximum: closed.
            if now.duration_since(conn.created) >= st.settings.lifetime
                || st.total > st.settings.size
                || self.limits.iter().any(|l| l.is_over())
            {
                drop(st);
                conn.close();
                self.forget_one();
                return;
            }
            let (mut left, mut idled) = (Some(conn), false);
            while let Some(c) = left.take() {
                let Some(q) = st.next_waiter(c.home) else {
                    st.idle.push_back(c);
                    idled = true;
                    break;
                };
                match q.tx.send(Grant::Conn(c)) {
                    Ok(()) => {}
                    Err(Grant::Conn(c)) => left = Some(c),
                    Err(Grant::Slot | Grant::Expired) => unreachable!("sent a connection"),
                }
            }
            self.sync_waiting(&mut st);
            if !idled {
                return;
            }
        }
        if self.limits.iter().any(|l| l.contended()) {
            limit::wake(&self.limits);
        }
    }
}

#[cfg(test)]
mod tests;
