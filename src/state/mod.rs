//! The state every part of pgmux shares: registries, each with its own job, below
//! everything that runs (it imports nothing above [`crate::pool`] and
//! [`crate::router::topology`]; the accept loop and the jobs are [`crate::proxy`]'s).
//!
//! - [`config`]: the running configuration and its TLS, swapped whole by a reload;
//! - [`users`]: configured users and those `auth_query` found;
//! - [`pools`]: the pools of each (database, user), and the limits they share;
//! - [`topologies`]: each database's servers as the router sees them;
//! - the client registry ([`crate::clients`]), the statement registry
//!   ([`crate::prepared::Registry`]), shared startup settings, failed logins per
//!   address ([`failures`]), event counters, metrics handles, PAUSE ([`pause`]),
//!   the listening clients of each database ([`crate::notify::Hubs`]) and the
//!   shutdown flag ([`crate::shutdown`]).
//!
//! There is no global state: a consumer is given the parts it needs.

pub mod config;
pub mod failures;
pub mod pause;
pub mod pools;
pub mod topologies;
pub mod users;

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use crate::cancel_key::KeyMaker;
use crate::clients::ClientRegistry;
use crate::config::{Config, ServerAddr};
use crate::fleet::view::Shares;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::pool::{LimitKind, Pool, PoolSettings};
use crate::prepared::Registry;
use crate::server::ServerTarget;
use crate::settings::ParamsInterner;
use crate::shutdown::Shutdown;

pub use config::{ConfigCache, ConfigStore, ReloadError, Running};
pub use failures::AuthFailures;
pub use pause::Pause;
pub use pools::{DbPools, PoolRegistry};
pub use topologies::Topologies;
pub use users::{LookedUp, UserAuth, Users};

/// Process-wide event counts (read by admin commands and metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// Server connections whose statements were dropped after a stale-plan error.
    pub stale_plans: AtomicU64,
    /// Requests retried transparently after a stale-plan error.
    pub stale_plan_retries: AtomicU64,
    /// Clients pinned to a server connection by a session-only feature (ever, now).
    pub pinned_sessions: AtomicU64,
    pub pinned_now: AtomicI64,
}

pub struct State {
    pub config: Arc<ConfigStore>,
    pub users: Arc<Users>,
    pub pools: PoolRegistry,
    pub topologies: Arc<Topologies>,
    /// Every connected client, by its cancel key.
    pub clients: ClientRegistry,
    /// The other pgmux instances this one works with (`fleet:`), if any.
    pub fleet: Option<Arc<Fleet>>,
    /// Every distinct named statement clients prepared (transaction mode).
    pub statements: Registry,
    /// Clients' startup settings, shared when equal.
    pub params: ParamsInterner,
    /// Failed logins per client address (`auth_failure_limit`).
    pub auth_failures: AuthFailures,
    pub counters: Counters,
    pub metrics: Metrics,
    pub pause: Pause,
    pub shutdown: Shutdown,
    /// LISTEN/NOTIFY in transaction mode: each database's listening clients.
    pub notify: Arc<crate::notify::Hubs>,
    pub started: Instant,
}

impl State {
    /// The state for a configuration built in memory (`pgmux demo`, tests).
    pub fn new(config: Config) -> Arc<State> {
        Self::with_path(config, None)
    }

    /// The state for a configuration read from `path` (which RELOAD reads again).
    pub fn with_path(config: Config, path: Option<std::path::PathBuf>) -> Arc<State> {
        // Cancel keys carry this instance's id; in a fleet, long keys are signed
        // with a key derived from the fleet's secret, so every instance can check them.
        let fleet_secret = config.fleet.as_ref().map(|f| f.secret.as_bytes().to_vec());
        let keys = KeyMaker::new(rand::random(), fleet_secret.as_deref());
        let fleet = config.fleet.as_ref().map(|f| Fleet::new(f, keys.clone()));
        Arc::new(State {
            fleet,
            users: Arc::new(Users::new(&config)),
            topologies: Arc::new(Topologies::new(&config)),
            config: Arc::new(ConfigStore::new(config, path)),
            pools: PoolRegistry::default(),
            clients: ClientRegistry::new(keys),
            statements: Registry::default(),
            params: ParamsInterner::default(),
            auth_failures: AuthFailures::default(),
            counters: Counters::default(),
            metrics: Metrics::new(),
            pause: Pause::default(),
            shutdown: Shutdown::default(),
            notify: Arc::default(),
            started: Instant::now(),
        })
    }

    /// The pools for a configured database and user, created on first use.
    pub fn pools_for(&self, database: &str, user: &str) -> Option<Arc<DbPools>> {
        if let Some(p) = self.pools.get(database, user) {
            return Some(p);
        }
        let config = self.config.current();
        let db = config.databases.get(database)?;
        let auth = self.users.get(user)?;
        let topology = self.topologies.get(database)?;
        let shares = self.shares();
        let share = |t: usize| shares.of(t);
        let settings = PoolSettings::resolve(&config, database, user, &share);
        let make = |addr: ServerAddr, role: &'static str| {
            let metrics = self.metrics.pool(database, user, &addr.to_string(), role);
            let limits = vec![
                self.pools.limits.get(LimitKind::Database, database, &addr, &config, &share),
                self.pools.limits.get(LimitKind::User, user, &addr, &config, &share),
            ];
            let target = ServerTarget {
                addr,
                dbname: db.dbname.clone().unwrap_or_else(|| database.to_string()),
                user: user.to_string(),
                password: auth.plaintext.clone(),
                keys: auth.keys.clone(),
                tls: self.config.upstream().clone(),
                application_name: None,
            };
            Pool::new(target, settings.clone(), metrics, role, limits)
        };
        Some(self.pools.insert(DbPools {
            database: database.into(),
            user: user.into(),
            primary: make(db.primary_addr(), "primary"),
            replicas: db.replica_addrs().into_iter().map(|a| make(a, "replica")).collect(),
            topology,
            clients: AtomicUsize::new(0),
        }))
    }

    /// Records what `auth_query` returned for `name` (`None`: no such user). A
    /// changed secret drops the user's pools (they log in with the old one): they drain.
    pub fn looked_up(&self, name: &str, secret: Option<&str>) -> Option<Arc<UserAuth>> {
        match self.users.looked_up(name, secret) {
            LookedUp::Unknown => None,
            LookedUp::Same(u) => Some(u),
            LookedUp::Changed(u) => {
                self.pools.retain(|p| &*p.user != name);
                Some(u)
            }
        }
    }

    /// Re-reads the config file, validates all of it, and applies it at once: users,
    /// databases (a removed or changed one drains: its clients keep their pools, new
    /// logins get the new ones), pool limits (resized in place). A rejected file
    /// changes nothing. `listen` and `metrics_listen` need a restart.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let r = self.try_reload();
        match &r {
            Ok(()) => {
                self.metrics.config_reloads_ok.increment(1);
                tracing::info!("configuration reloaded");
            }
            Err(e) => {
                self.metrics.config_reloads_failed.increment(1);
                tracing::error!(error = %e, "configuration reload rejected; the running configuration is unchanged");
            }
        }
        r
    }

    fn try_reload(&self) -> Result<(), ReloadError> {
        let loaded = self.config.read()?;
        let new = loaded.config();
        let old = self.config.current();
        if new.listen != old.listen || new.metrics_listen != old.metrics_listen {
            tracing::warn!("listen and metrics_listen changes take effect after a restart");
        }
        // Pool sets whose database or user changed are dropped from the registry:
        // their clients drain, new logins build new pools.
        self.pools.retain(|pools| {
            let (db, user) = (&*pools.database, &*pools.user);
            let same_db = old.databases.get(db).map(|d| (&d.primary, &d.replicas, &d.dbname))
                == new.databases.get(db).map(|d| (&d.primary, &d.replicas, &d.dbname));
            let old_user = old.user(user).map(|u| &u.password);
            let same_user = old_user.is_some() && old_user == new.user(user).map(|u| &u.password);
            same_db && same_user
        });
        self.topologies.sync(new);
        self.users.reload(new);
        drop(old);
        self.config.apply(loaded);
        self.resize();
        Ok(())
    }

    /// How much of each configured total this instance may use: all of it, unless
    /// a fleet divides the budget (`fleet.share_pools`).
    pub fn shares(&self) -> Shares {
        match &self.fleet {
            Some(f) if f.share_pools() => f.shares().borrow().clone(),
            _ => Shares::whole(),
        }
    }

    /// Every pool and limit takes its size from the running config and this
    /// instance's shares (after a reload, or when the fleet's shares change).
    pub fn resize(&self) {
        let config = self.config.current();
        let shares = self.shares();
        let share = |t: usize| shares.of(t);
        for pools in self.pools.sets() {
            let settings = PoolSettings::resolve(&config, &pools.database, &pools.user, &share);
            pools.all().for_each(|p| p.update_settings(settings.clone()));
        }
        self.pools.limits.apply(&config, &share);
    }

    /// Whether every pool and limit holds no more connections than its target under
    /// `shares` (what this instance tells its peers before they grow).
    pub fn within(&self, shares: &Shares) -> bool {
        let config = self.config.current();
        let pools_ok = self.pools.sets().iter().all(|pools| {
            let size = shares.target(config.pool_sizes(&pools.database, &pools.user).size);
            pools.all().all(|p| p.status().total <= size)
        });
        let limits_ok = self.pools.limits.all().iter().all(|l| {
            let total = l.kind.max_in(&config, &l.name);
            total == 0 || l.used() <= shares.target(total)
        });
        pools_ok && limits_ok
    }

    /// Begins a graceful shutdown: no new transactions; each client is woken through
    /// its `kill` signal (idle clients wait on that alone) and, seeing the shutdown
    /// flag, says goodbye at its next boundary.
    pub fn begin_shutdown(&self) {
        self.shutdown.begin();
        self.clients.kill(|_| true);
    }
}
