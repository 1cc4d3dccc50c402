//! The running proxy, on top of everything: it owns the shared [`State`] and runs
//! the jobs that use it: the [`listener`]'s accept loop (each client a task of its
//! own), the [`upkeep`], the replica monitor ([`crate::monitor`]), the listening
//! connections of LISTEN/NOTIFY ([`crate::notify::listener`], told where to go by
//! [`Primaries`]) and the metrics endpoint ([`http`]); and it drains them at shutdown.

pub mod http;
pub mod listener;
pub mod upkeep;
pub mod workers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::state::State;
pub use listener::Listener;

/// A spawned job, stopped when dropped.
struct Job(JoinHandle<()>);

impl Drop for Job {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The proxy's jobs, running.
pub struct Proxy {
    pub state: Arc<State>,
    jobs: Vec<Job>,
}

impl Proxy {
    /// Starts serving clients on `listener`, spread over the worker threads by
    /// `spread` ([`workers`]), with the upkeep and the replica monitor
    /// (both stop when shutdown begins, with the accept loop), and the metrics
    /// endpoint on `metrics` (until [`Proxy::stop`]).
    pub fn start(state: Arc<State>, listener: Listener, spread: workers::Spread, metrics: Option<TcpListener>) -> Proxy {
        let mut jobs = vec![Job(tokio::spawn(serve(state.clone(), listener, spread)))];
        if let Some(l) = metrics {
            jobs.push(Job(tokio::spawn(http::serve(l, state.clone()))));
        }
        if let Some(fleet) = state.fleet.clone() {
            // Heartbeats go on while draining: the peers must hear of it.
            let weak = Arc::downgrade(&state);
            fleet.set_compliance(Box::new(move |shares| weak.upgrade().is_none_or(|s| s.within(shares))));
            jobs.push(Job(tokio::spawn(fleet.clone().run())));
            jobs.push(Job(tokio::spawn(follow_shares(state.clone(), fleet.shares()))));
        }
        Proxy { state, jobs }
    }

    /// The first phase of a graceful shutdown (SIGTERM): `/readyz` says 503 and the
    /// fleet hears this instance is draining, while clients are still accepted and
    /// served for `drain_delay`. Returns at once if a drain already began.
    pub async fn stop_being_ready(&self) {
        if !self.state.shutdown.drain() {
            return;
        }
        if let Some(f) = &self.state.fleet {
            f.set_draining();
        }
        let delay = self.state.config.current().drain_delay.0;
        tracing::info!(?delay, "draining: not ready; still accepting clients for drain_delay");
        tokio::time::sleep(delay).await;
    }

    /// Starts a graceful shutdown and waits until every client has left or
    /// `shutdown_timeout` has passed; then closes idle server connections. Returns
    /// the number of clients still connected.
    pub async fn drain(&self) -> usize {
        let state = &self.state;
        state.begin_shutdown();
        let deadline = Instant::now() + state.config.current().shutdown_timeout.0;
        while state.clients.connected() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        state.pools.close_idle(None);
        state.clients.connected()
    }

    /// Stops every job and closes idle server connections.
    pub fn stop(self) {
        drop(self.jobs);
        self.state.pools.close_idle(None);
    }
}

/// Sizes the pools again whenever the fleet's shares change.
async fn follow_shares(state: Arc<State>, mut shares: tokio::sync::watch::Receiver<crate::fleet::view::Shares>) {
    state.resize();
    while shares.changed().await.is_ok() {
        let s = shares.borrow_and_update().clone();
        tracing::info!(instances = s.view.len(), settled = s.settled.is_some(), "fleet: pool shares changed");
        state.resize();
    }
}

/// Accepts clients until shutdown begins, with the upkeep, the monitor and the
/// listening connections alongside.
async fn serve(state: Arc<State>, listener: Listener, spread: workers::Spread) {
    let sources =
        crate::monitor::Sources { config: state.config.clone(), users: state.users.clone(), topologies: state.topologies.clone() };
    let _upkeep = Job(tokio::spawn(upkeep::run(state.clone())));
    let _monitor = Job(tokio::spawn(crate::monitor::run(sources)));
    let primaries = Primaries { config: state.config.clone(), users: state.users.clone(), topologies: state.topologies.clone() };
    let _notify = Job(tokio::spawn(crate::notify::listener::run(state.notify.clone(), Arc::new(primaries))));
    listener.serve(state, spread).await;
}

/// Where each database's listening connection goes: its current primary (it follows
/// a failover), logged in as the monitor user.
struct Primaries {
    config: Arc<crate::state::ConfigStore>,
    users: Arc<crate::state::Users>,
    topologies: Arc<crate::state::Topologies>,
}

impl crate::notify::listener::Upstream for Primaries {
    fn target(&self, database: &str) -> Option<crate::server::ServerTarget> {
        let config = self.config.current();
        let db = config.databases.get(database)?;
        let user = config.monitor_user().and_then(|u| self.users.get(&u.name))?;
        if user.plaintext.is_none() && user.keys.get().is_none() {
            return None;
        }
        let topo = self.topologies.get(database)?;
        Some(crate::server::ServerTarget {
            addr: topo.nodes[topo.primary()].addr.clone(),
            dbname: db.dbname.clone().unwrap_or_else(|| database.to_string()),
            user: user.name.clone(),
            password: user.plaintext.clone(),
            keys: user.keys.clone(),
            tls: self.config.upstream().clone(),
            application_name: Some(crate::notify::APPLICATION_NAME),
        })
    }

    fn timeout(&self) -> Duration {
        self.config.current().pool.server_connect_timeout.0
    }
}
