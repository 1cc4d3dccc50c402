//! A bounded pool of server connections for one (database, user, server).
//!
//! At most `size` connections exist (open or being opened). A client that finds
//! none idle and the pool full waits in a FIFO queue; a returned connection goes
//! straight to the longest waiter. Waiting is bounded by `checkout_timeout`. A server
//! that cannot be reached is retried with exponential backoff; meanwhile checkouts
//! fail at once with the last connect error instead of hanging.
//!
//! A checked-out connection is a [`Lease`]: give it back with [`Lease::release`]
//! (reusable) or [`Lease::discard`]; a lease dropped any other way (a panic, a
//! forgotten path) is discarded, so the pool's count never leaks.

mod lease;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::PoolConfig;
use crate::error::ClientError;
use crate::metrics::PoolMetrics;
use crate::server::{self, ServerConn, ServerTarget};

pub use lease::Lease;

/// Limits and timeouts of one pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub size: usize,
    pub checkout_timeout: Duration,
    pub idle_timeout: Duration,
    pub lifetime: Duration,
    pub connect_timeout: Duration,
    pub check_delay: Duration,
    pub max_prepared_statements: usize,
    /// Connections kept open even when idle (opened by the upkeep task).
    pub min_size: usize,
    /// Extra connections for clients that waited `reserve_timeout` (closed again
    /// when they come back).
    pub reserve_size: usize,
    pub reserve_timeout: Duration,
}

impl From<&PoolConfig> for PoolSettings {
    fn from(c: &PoolConfig) -> Self {
        PoolSettings {
            size: c.size,
            checkout_timeout: c.checkout_timeout.0,
            idle_timeout: c.server_idle_timeout.0,
            lifetime: c.server_lifetime.0,
            connect_timeout: c.server_connect_timeout.0,
            check_delay: c.server_check_delay.0,
            max_prepared_statements: crate::prepared::DEFAULT_CACHE,
            min_size: c.min_pool_size.min(c.size),
            reserve_size: c.reserve_pool_size,
            reserve_timeout: c.reserve_pool_timeout.0,
        }
    }
}

/// The verdict on an idle connection about to be lent.
enum Vetted {
    Fit(ServerConn),
    /// Idle for longer than `server_check_delay`: check it first.
    Check(ServerConn),
    Unfit,
}

/// What a waiter is handed.
enum Grant {
    /// An idle connection.
    Conn(ServerConn),
    /// Room to open a new connection (already counted for the waiter).
    Slot,
}

#[derive(Default)]
struct State {
    /// Idle connections; the most recently used at the back.
    idle: VecDeque<ServerConn>,
    /// Connections open or being opened, idle or lent out.
    total: usize,
    /// Waiting clients, with when each began to wait.
    waiters: VecDeque<(Instant, oneshot::Sender<Grant>)>,
    down: Option<Down>,
}

/// The server could not be reached: fail fast until `retry_at`.
struct Down {
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
    state: Mutex<State>,
    /// ParameterStatus values of the first login, reported to clients at their login.
    server_params: Mutex<Option<Arc<Vec<(String, String)>>>>,
    pub counters: PoolCounters,
    pub metrics: PoolMetrics,
}

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Pool {
    pub fn new(target: ServerTarget, settings: PoolSettings, metrics: PoolMetrics, role: &'static str) -> Arc<Pool> {
        Arc::new(Pool {
            name: format!("{}/{}@{}", target.dbname, target.user, target.addr),
            role,
            target,
            settings: arc_swap::ArcSwap::from_pointee(settings),
            state: Mutex::new(State::default()),
            server_params: Mutex::new(None),
            counters: PoolCounters::default(),
            metrics,
        })
    }

    pub fn settings(&self) -> arc_swap::Guard<Arc<PoolSettings>> {
        self.settings.load()
    }

    /// Applies new limits (reload): a larger pool lets waiters open connections at
    /// once; a smaller one shrinks as connections come back.
    pub fn update_settings(&self, settings: PoolSettings) {
        let size = settings.size;
        self.settings.store(Arc::new(settings));
        let mut st = self.lock();
        while st.total < size {
            let Some((_, w)) = st.waiters.pop_front() else { break };
            st.total += 1;
            if w.send(Grant::Slot).is_err() {
                st.total -= 1;
            }
        }
        while st.total > size {
            let Some(c) = st.idle.pop_front() else { break };
            st.total -= 1;
            c.close();
        }
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
            max_wait: s.waiters.front().map(|(t, _)| t.elapsed()).unwrap_or_default(),
        }
    }

    /// Server parameters to report to a client logging in; opens a connection to
    /// learn them if no connection was ever made.
    pub async fn server_params(self: &Arc<Self>) -> Result<Arc<Vec<(String, String)>>, ClientError> {
        if let Some(p) = self.server_params.lock().unwrap().clone() {
            return Ok(p);
        }
        let lease = self.checkout().await?;
        let params = lease.conn().params.clone();
        lease.release();
        Ok(params)
    }

    /// Takes a connection: idle, new, or the next one returned, within the timeout.
    pub async fn checkout(self: &Arc<Self>) -> Result<Lease, ClientError> {
        let started = Instant::now();
        let r = self.checkout_inner(started + self.settings().checkout_timeout).await;
        let waited = started.elapsed();
        self.metrics.wait.record(waited.as_secs_f64());
        self.counters.wait_micros.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        r
    }

    async fn checkout_inner(self: &Arc<Self>, deadline: Instant) -> Result<Lease, ClientError> {
        loop {
            let next = {
                let mut st = self.lock();
                if let Some(conn) = st.idle.pop_back() {
                    Some(Grant::Conn(conn))
                } else if st.total < self.settings().size {
                    if let Some(d) = &st.down {
                        if Instant::now() < d.retry_at {
                            return Err(self.unavailable(&d.reason));
                        }
                    }
                    st.total += 1;
                    Some(Grant::Slot)
                } else {
                    None
                }
            };
            let grant = match next {
                Some(g) => g,
                None => Box::pin(self.wait(deadline)).await?,
            };
            match grant {
                Grant::Conn(conn) => {
                    let conn = match self.vet(conn) {
                        Vetted::Fit(conn) => Some(conn),
                        Vetted::Check(conn) => Box::pin(self.check(conn)).await,
                        Vetted::Unfit => None,
                    };
                    if let Some(conn) = conn {
                        return Ok(Lease::new(self.clone(), conn));
                    }
                    self.forget_one();
                }
                // Boxed, like the check below: rare paths with large futures stay out of
                // every client task's size.
                Grant::Slot => return Box::pin(self.open()).await.map(|c| Lease::new(self.clone(), c)),
            }
        }
    }

    /// Queues for a connection until `deadline`.
    async fn wait(&self, deadline: Instant) -> Result<Grant, ClientError> {
        let (tx, mut rx) = oneshot::channel();
        let started = Instant::now();
        self.lock().waiters.push_back((started, tx));
        let settings = self.settings().clone();
        let reserve_at = started + settings.reserve_timeout;
        if settings.reserve_size > 0 && reserve_at < deadline {
            if let Ok(r) = tokio::time::timeout_at(reserve_at.into(), &mut rx).await {
                return r.map_err(|_| self.unavailable("pool closed"));
            }
            // Waited long: a reserve connection, if the reserve has room.
            let mut st = self.lock();
            if st.total < settings.size + settings.reserve_size {
                rx.close();
                if let Ok(g) = rx.try_recv() {
                    return Ok(g);
                }
                st.total += 1;
                return Ok(Grant::Slot);
            }
        }
        let r = tokio::time::timeout_at(deadline.into(), &mut rx).await;
        match r {
            Ok(Ok(g)) => Ok(g),
            Ok(Err(_)) => Err(self.unavailable("pool closed")),
            Err(_) => {
                // A grant may have arrived just as the timer fired: take it.
                rx.close();
                match rx.try_recv() {
                    Ok(g) => Ok(g),
                    Err(_) => {
                        self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                        Err(ClientError::CheckoutTimeout {
                            pool: self.name.clone(),
                            timeout: self.settings().checkout_timeout,
                        })
                    }
                }
            }
        }
    }

    /// Looks at an idle connection before lending it (no I/O); closes it if unfit.
    fn vet(&self, conn: ServerConn) -> Vetted {
        if !conn.idle_is_clean() || conn.created.elapsed() >= self.settings().lifetime {
            conn.close();
            return Vetted::Unfit;
        }
        if conn.last_used.elapsed() >= self.settings().check_delay {
            return Vetted::Check(conn);
        }
        Vetted::Fit(conn)
    }

    /// Checks a connection idle for long with an empty query; closes it if broken.
    async fn check(&self, mut conn: ServerConn) -> Option<ServerConn> {
        match conn.run_internal("", self.settings().connect_timeout).await {
            Ok(r) if r.error.is_none() && r.status == b'I' => Some(conn),
            _ => {
                conn.close();
                None
            }
        }
    }

    /// Opens a new connection in a slot already counted in `total`.
    async fn open(&self) -> Result<ServerConn, ClientError> {
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        match server::login::connect(&self.target, self.settings().connect_timeout).await {
            Ok(mut conn) => {
                conn.statements = crate::prepared::ServerStatements::with_capacity(self.settings().max_prepared_statements);
                self.lock().down = None;
                let mut p = self.server_params.lock().unwrap();
                if p.is_none() {
                    *p = Some(conn.params.clone());
                }
                Ok(conn)
            }
            Err(e) => {
                self.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pool = %self.name, error = %e, "server login failed");
                let client_err = match e.server_error() {
                    // The server's own refusal (bad password, no such database) is passed on.
                    Some(pg) => ClientError::ServerRefused(pg.clone()),
                    None => self.unavailable(&e.to_string()),
                };
                {
                    let mut st = self.lock();
                    let failures = st.down.as_ref().map_or(0, |d| d.failures) + 1;
                    let backoff = (BACKOFF_START * 2u32.saturating_pow(failures - 1)).min(BACKOFF_MAX);
                    st.down = Some(Down { retry_at: Instant::now() + backoff, failures, reason: e.to_string() });
                }
                self.forget_one();
                Err(client_err)
            }
        }
    }

    fn unavailable(&self, reason: &str) -> ClientError {
        ClientError::ServerUnavailable { server: self.target.addr.to_string(), reason: reason.to_string() }
    }

    /// A connection (or slot) went away: let the longest waiter open a new one.
    fn forget_one(&self) {
        let mut st = self.lock();
        st.total -= 1;
        while let Some((_, w)) = st.waiters.pop_front() {
            st.total += 1;
            if w.send(Grant::Slot).is_ok() {
                return;
            }
            st.total -= 1;
        }
    }

    /// Takes back a reusable connection: to the longest waiter, else to the idle list.
    fn put_back(&self, mut conn: ServerConn) {
        if conn.created.elapsed() >= self.settings().lifetime || self.over_size() {
            conn.close();
            self.forget_one();
            return;
        }
        conn.last_used = Instant::now();
        conn.shrink();
        let mut st = self.lock();
        while let Some((_, w)) = st.waiters.pop_front() {
            match w.send(Grant::Conn(conn)) {
                Ok(()) => return,
                Err(Grant::Conn(c)) => conn = c,
                Err(Grant::Slot) => unreachable!("sent a connection"),
            }
        }
        st.idle.push_back(conn);
    }

    /// Opens connections until the pool has `min_size` (called by the upkeep task).
    pub async fn warm(self: &Arc<Self>) {
        loop {
            {
                let mut st = self.lock();
                let min = self.settings().min_size;
                if st.total >= min || st.down.as_ref().is_some_and(|d| Instant::now() < d.retry_at) {
                    return;
                }
                st.total += 1;
            }
            match self.open().await {
                Ok(conn) => self.put_back(conn),
                Err(_) => return,
            }
        }
    }

    /// More connections than the (reloaded) size allows.
    fn over_size(&self) -> bool {
        let size = self.settings().size;
        self.lock().total > size
    }

    /// Closes idle connections past `server_idle_timeout` or `server_lifetime`.
    pub fn reap(&self) {
        let now = Instant::now();
        let settings = self.settings();
        let expired: Vec<ServerConn> = {
            let mut st = self.lock();
            let mut spare = st.total.saturating_sub(settings.min_size);
            let (keep, gone): (VecDeque<_>, VecDeque<_>) = st.idle.drain(..).partition(|c| {
                let old = now.duration_since(c.created) >= settings.lifetime;
                let idle = now.duration_since(c.last_used) >= settings.idle_timeout;
                // Idle ones beyond min_pool_size go; any past its lifetime goes.
                let go = old || (idle && spare > 0);
                if go && !old {
                    spare -= 1;
                }
                !go
            });
            st.idle = keep;
            st.total -= gone.len();
            gone.into_iter().collect()
        };
        for c in expired {
            c.close();
        }
    }

    /// True while connecting fails (fail-fast backoff in force).
    pub fn is_down(&self) -> bool {
        self.lock().down.as_ref().is_some_and(|d| Instant::now() < d.retry_at)
    }

    /// (pid, created, last used) of each idle connection, for SHOW SERVERS.
    pub fn idle_servers(&self) -> Vec<(i32, Instant, Instant)> {
        self.lock().idle.iter().map(|c| (c.pid, c.created, c.last_used)).collect()
    }

    /// Closes every idle connection (shutdown, RECONNECT).
    pub fn close_idle(&self) {
        let idle: Vec<ServerConn> = {
            let mut st = self.lock();
            let v: Vec<_> = st.idle.drain(..).collect();
            st.total -= v.len();
            v
        };
        for c in idle {
            c.close();
        }
    }
}

