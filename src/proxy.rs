//! The running proxy: state shared by all clients, the accept loop, background
//! upkeep of the pools, and graceful shutdown.
//!
//! There is no global state: everything a client needs is reached through the
//! `Arc<Proxy>` it is given.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::scram::ScramSecret;
use crate::clients::ClientRegistry;
use crate::config::{Config, ServerAddr};
use crate::metrics::Metrics;
use crate::pool::{LimitKind, Limits, Pool, PoolSettings};
use crate::prepared::Registry;
use crate::router::classify::ClassifyConfig;
use crate::router::topology::Topology;
use crate::server::ServerTarget;

/// See [`Proxy::config_cache`].
pub type ConfigCache<'a> = arc_swap::Cache<&'a arc_swap::ArcSwap<Running>, Arc<Running>>;

/// The running configuration, with what the router builds from it (read through
/// it as a [`Config`]).
pub struct Running {
    pub config: Config,
    /// `routing.write_functions`, as the classifier wants them.
    pub classifier: ClassifyConfig,
}

impl Running {
    pub fn new(config: Config) -> Running {
        Running { classifier: ClassifyConfig::from(&config.routing), config }
    }
}

impl std::ops::Deref for Running {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

/// A configured user, with what pgmux needs to check its password.
pub struct UserAuth {
    pub name: String,
    /// The password entry as written in the config (to notice changes on reload).
    configured: String,
    pub scram: ScramSecret,
    pub plaintext: Option<String>,
    /// With only a verifier configured: the SCRAM keys of the first client login,
    /// used to log in to PostgreSQL as this user.
    pub keys: Arc<std::sync::OnceLock<crate::auth::scram::ScramKeys>>,
    pub admin: bool,
}

impl UserAuth {
    /// From a password: plaintext, or a SCRAM-SHA-256 verifier.
    pub fn new(name: &str, password: &str, admin: bool) -> UserAuth {
        let (scram, plaintext) = match ScramSecret::parse_verifier(password) {
            Some(s) => (s, None),
            None => (ScramSecret::from_password(password), Some(password.to_string())),
        };
        UserAuth { name: name.to_string(), configured: password.to_string(), scram, plaintext, keys: Default::default(), admin }
    }
}

/// The pools of one (database, user): the primary's and each replica's.
pub struct DbPools {
    pub database: String,
    pub user: String,
    pub primary: Arc<Pool>,
    pub replicas: Vec<Arc<Pool>>,
    /// The database's servers as the router sees them (node `i` is [`DbPools::node`]`(i)`).
    pub topology: Arc<Topology>,
    /// Clients logged in to this database as this user.
    pub clients: AtomicUsize,
}

impl DbPools {
    /// The pool of node `i` of the database's [`Topology`] (0: the configured
    /// primary, 1..: the replicas in config order).
    pub fn node(&self, i: usize) -> &Arc<Pool> {
        if i == 0 {
            &self.primary
        } else {
            &self.replicas[i - 1]
        }
    }
}

pub struct Proxy {
    /// The running configuration, swapped whole by a reload.
    config: arc_swap::ArcSwap<Running>,
    /// Where it was read from (None: built in memory, as by `pgmux demo`).
    pub config_path: Option<std::path::PathBuf>,
    users: arc_swap::ArcSwap<HashMap<String, Arc<UserAuth>>>,
    /// Users found by `auth_query`, with the secret each had at its last login.
    looked_up: DashMap<String, Arc<UserAuth>>,
    pools: DashMap<(String, String), Arc<DbPools>>,
    /// `max_db_connections` / `max_user_connections` per server, shared by pools.
    pub limits: Limits,
    /// Each database's servers as the replica monitor sees them.
    topologies: DashMap<String, Arc<Topology>>,
    /// Every connected client, by its cancel key.
    pub clients: ClientRegistry,
    /// Failed logins per client address (`auth_failure_limit`).
    pub auth_failures: crate::client::access::AuthFailures,
    /// Every distinct named statement clients prepared (transaction mode).
    pub statements: Registry,
    pub counters: ProxyCounters,
    /// Clients' startup settings, shared when equal.
    pub params: crate::settings::ParamsInterner,
    pub metrics: Metrics,
    /// TLS for clients, rebuilt from its files on RELOAD.
    pub client_tls: arc_swap::ArcSwap<crate::tls::ClientTls>,
    /// TLS to servers, shared by every pool's target, rebuilt on RELOAD.
    pub upstream: crate::tls::UpstreamHandle,
    pub started: Instant,
    /// `true` once a graceful shutdown has begun.
    pub shutdown: watch::Sender<bool>,
    /// Databases paused by the admin console (PAUSE): no new transactions start.
    pub paused: watch::Sender<Paused>,
}

/// What PAUSE holds back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paused {
    pub all: bool,
    pub databases: std::collections::BTreeSet<String>,
}

impl Paused {
    pub fn holds(&self, database: &str) -> bool {
        self.all || self.databases.contains(database)
    }
}

/// Process-wide event counts (read by admin commands and metrics).
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Server connections whose statements were dropped after a stale-plan error.
    pub stale_plans: std::sync::atomic::AtomicU64,
    /// Requests retried transparently after a stale-plan error.
    pub stale_plan_retries: std::sync::atomic::AtomicU64,
    /// Clients pinned to a server connection by a session-only feature (ever, now).
    pub pinned_sessions: std::sync::atomic::AtomicU64,
    pub pinned_now: std::sync::atomic::AtomicI64,
}

impl Proxy {
    pub fn new(config: Config) -> Arc<Proxy> {
        Self::with_path(config, None)
    }

    pub fn with_path(config: Config, config_path: Option<std::path::PathBuf>) -> Arc<Proxy> {
        let users = build_users(&config, &HashMap::new());
        let topologies = DashMap::new();
        sync_topologies(&topologies, &config);
        // The files were read by validation a moment ago; should they fail now, TLS is off.
        let client_tls = crate::tls::ClientTls::from_settings(&config.tls).unwrap_or_else(|e| {
            tracing::error!(error = %e, "TLS for clients is off");
            crate::tls::ClientTls { mode: config.tls.mode, acceptor: None }
        });
        let upstream = crate::tls::Upstream::load(&config.server_tls).unwrap_or_else(|e| {
            tracing::error!(error = %e, "server_tls unusable: connecting without TLS");
            crate::tls::Upstream::default()
        });
        Arc::new(Proxy {
            config: arc_swap::ArcSwap::from_pointee(Running::new(config)),
            config_path,
            users: arc_swap::ArcSwap::from_pointee(users),
            looked_up: DashMap::new(),
            pools: DashMap::new(),
            limits: Limits::default(),
            topologies,
            clients: ClientRegistry::default(),
            auth_failures: Default::default(),
            statements: Registry::default(),
            counters: ProxyCounters::default(),
            params: Default::default(),
            metrics: Metrics::new(),
            client_tls: arc_swap::ArcSwap::from_pointee(client_tls),
            upstream: Arc::new(arc_swap::ArcSwap::from_pointee(upstream)),
            started: Instant::now(),
            shutdown: watch::Sender::new(false),
            paused: watch::Sender::new(Paused::default()),
        })
    }

    pub fn config(&self) -> arc_swap::Guard<Arc<Running>> {
        self.config.load()
    }

    /// The configuration as a long-lived reader (a client's session) sees it: one
    /// pointer comparison per look while it is unchanged.
    pub fn config_cache(&self) -> ConfigCache<'_> {
        arc_swap::Cache::new(&self.config)
    }

    /// A configured user, or one `auth_query` found.
    pub fn user(&self, name: &str) -> Option<Arc<UserAuth>> {
        self.configured_user(name).or_else(|| self.looked_up.get(name).map(|u| u.clone()))
    }

    pub fn configured_user(&self, name: &str) -> Option<Arc<UserAuth>> {
        self.users.load().get(name).cloned()
    }

    /// Records what `auth_query` returned for `name` (`None`: no such user). A
    /// changed secret drops the user's pools (they log in with the old one): they drain.
    pub fn looked_up(&self, name: &str, secret: Option<&str>) -> Option<Arc<UserAuth>> {
        let Some(secret) = secret else {
            self.looked_up.remove(name);
            return None;
        };
        if let Some(u) = self.looked_up.get(name).filter(|u| u.configured == secret) {
            return Some(u.clone());
        }
        let auth = Arc::new(UserAuth::new(name, secret, false));
        self.looked_up.insert(name.to_string(), auth.clone());
        self.pools.retain(|(_, user), _| user != name);
        Some(auth)
    }

    /// Re-reads the config file, validates all of it, and applies it at once: users,
    /// databases (a removed or changed one drains: its clients keep their pools, new
    /// logins get the new ones), pool limits (resized in place). A rejected file
    /// changes nothing. `listen` and `metrics_listen` need a restart.
    pub fn reload(&self) -> Result<(), String> {
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

    fn try_reload(&self) -> Result<(), String> {
        let path = self.config_path.as_ref().ok_or("no configuration file to reload (pgmux demo)")?;
        let new = Config::load(path).map_err(|e| e.to_string())?;
        let old = self.config.load_full();
        if new.listen != old.listen || new.metrics_listen != old.metrics_listen {
            tracing::warn!("listen and metrics_listen changes take effect after a restart");
        }
        // Certificates are read again even when their paths did not change.
        let client_tls = crate::tls::ClientTls::from_settings(&new.tls).map_err(|e| e.to_string())?;
        let upstream = crate::tls::Upstream::load(&new.server_tls).map_err(|e| e.to_string())?;
        let users = build_users(&new, &self.users.load());
        // Pool sets whose database or user changed are dropped from the registry:
        // their clients drain, new logins build new pools.
        self.pools.retain(|(db, user), pools| {
            let same_db = old.databases.get(db).map(|d| (&d.primary, &d.replicas, &d.dbname))
                == new.databases.get(db).map(|d| (&d.primary, &d.replicas, &d.dbname));
            let old_user = old.user(user).map(|u| &u.password);
            let same_user = old_user.is_some() && old_user == new.user(user).map(|u| &u.password);
            if same_db && same_user {
                let settings = PoolSettings::resolve(&new, db, user);
                for p in std::iter::once(&pools.primary).chain(pools.replicas.iter()) {
                    p.update_settings(settings.clone());
                }
            }
            same_db && same_user
        });
        sync_topologies(&self.topologies, &new);
        self.client_tls.store(Arc::new(client_tls));
        self.upstream.store(Arc::new(upstream));
        self.users.store(Arc::new(users));
        self.config.store(Arc::new(Running::new(new)));
        self.limits.apply(&self.config());
        Ok(())
    }

    /// The pools for a configured database and user, created on first use.
    pub fn pools(&self, database: &str, user: &str) -> Option<Arc<DbPools>> {
        let key = (database.to_string(), user.to_string());
        if let Some(p) = self.pools.get(&key) {
            return Some(p.clone());
        }
        let config = self.config();
        let db = config.databases.get(database)?;
        let auth = self.user(user)?;
        let topology = self.topology(database)?;
        let settings = PoolSettings::resolve(&config, database, user);
        let make = |addr: ServerAddr, role: &'static str| {
            let metrics = self.metrics.pool(database, user, &addr.to_string(), role);
            let limits = vec![
                self.limits.get(LimitKind::Database, database, &addr, &config),
                self.limits.get(LimitKind::User, user, &addr, &config),
            ];
            Pool::new(
                ServerTarget {
                    addr,
                    dbname: db.dbname.clone().unwrap_or_else(|| database.to_string()),
                    user: user.to_string(),
                    password: auth.plaintext.clone(),
                    keys: auth.keys.clone(),
                    tls: self.upstream.clone(),
                },
                settings.clone(),
                metrics,
                role,
                limits,
            )
        };
        let pools = Arc::new(DbPools {
            database: database.to_string(),
            user: user.to_string(),
            primary: make(db.primary_addr(), "primary"),
            replicas: db.replica_addrs().into_iter().map(|a| make(a, "replica")).collect(),
            topology,
            clients: AtomicUsize::new(0),
        });
        Some(self.pools.entry(key).or_insert(pools).clone())
    }

    /// What the router knows about a database's servers.
    pub fn topology(&self, database: &str) -> Option<Arc<Topology>> {
        self.topologies.get(database).map(|t| t.clone())
    }

    /// Every database's topology.
    pub fn topologies(&self) -> Vec<Arc<Topology>> {
        self.topologies.iter().map(|t| t.value().clone()).collect()
    }

    /// Waits while `database` is paused (returns at once when it is not).
    pub async fn wait_unpaused(&self, database: &str) {
        if !self.paused.borrow().holds(database) {
            return;
        }
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|p| !p.holds(database)).await;
    }

    /// Every (database, user) pool set created so far.
    pub fn pool_sets(&self) -> Vec<(String, Arc<DbPools>)> {
        self.pools.iter().map(|e| (e.key().0.clone(), e.value().clone())).collect()
    }

    /// Every pool created so far.
    pub fn all_pools(&self) -> Vec<Arc<Pool>> {
        self.pools.iter().flat_map(|e| std::iter::once(e.primary.clone()).chain(e.replicas.iter().cloned()).collect::<Vec<_>>()).collect()
    }

    /// Accepts clients until shutdown begins.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let upkeep = tokio::spawn(self.clone().upkeep());
        let monitor = tokio::spawn(crate::router::monitor::run(self.clone()));
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(crate::client::serve(stream, self.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
            }
        }
        upkeep.abort();
        monitor.abort();
    }

    /// Once a second: closes idle server connections past their idle timeout or
    /// lifetime, warns (rate-limited) about pools under pressure, and forgets
    /// failed-login counts whose window has passed.
    async fn upkeep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_warned: HashMap<String, Instant> = HashMap::new();
        let mut trim = crate::memory::Trim::default();
        loop {
            tick.tick().await;
            trim.after_tick(self.clients.connected());
            // Folds recorded histogram samples into their buckets (bounded memory
            // even when nobody scrapes).
            self.metrics.upkeep();
            let config = self.config();
            let (max_waiting, max_wait) = (config.pool_pressure_waiting, config.pool_pressure_wait.nonzero());
            // min_pool_size: only primaries carry traffic until routing exists.
            for (_, set) in self.pool_sets() {
                if set.primary.settings().min_size > 0 {
                    let p = set.primary.clone();
                    tokio::spawn(async move { p.warm().await });
                }
            }
            self.limits.upkeep();
            self.auth_failures.prune(config.auth_failure_window.0);
            for p in self.all_pools() {
                p.reap();
                if max_waiting == 0 && max_wait.is_none() {
                    continue;
                }
                let s = p.status();
                let pressed = (max_waiting > 0 && s.waiting >= max_waiting) || max_wait.is_some_and(|w| s.max_wait >= w);
                let due = last_warned.get(&p.name).is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                if pressed && due {
                    last_warned.insert(p.name.clone(), Instant::now());
                    tracing::warn!(
                        pool = %p.name,
                        waiting = s.waiting,
                        longest_wait_ms = s.max_wait.as_millis() as u64,
                        in_use = s.total - s.idle,
                        size = s.size,
                        "pool pressure: clients are waiting for server connections"
                    );
                }
            }
        }
    }

    /// Begins a graceful shutdown: no new transactions; each client is woken through
    /// its `kill` signal (idle clients wait on that alone) and, seeing the shutdown
    /// flag, says goodbye at its next boundary.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.clients.kill(|_| true);
    }

    /// Starts a graceful shutdown and waits until every client has left or
    /// `shutdown_timeout` has passed. Returns the number of clients still connected.
    pub async fn drain(&self) -> usize {
        self.begin_shutdown();
        let deadline = Instant::now() + self.config().shutdown_timeout.0;
        while self.clients.connected() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for p in self.all_pools() {
            p.close_idle();
        }
        self.clients.connected()
    }
}

/// The users of a config, keeping the state of those whose password did not change
/// (their SCRAM salt, and keys recovered from client logins).
fn build_users(config: &Config, old: &HashMap<String, Arc<UserAuth>>) -> HashMap<String, Arc<UserAuth>> {
    config
        .users
        .iter()
        .map(|u| {
            let kept = old.get(&u.name).filter(|o| o.configured == u.password && o.admin == u.admin);
            let auth = match kept {
                Some(o) => o.clone(),
                None => Arc::new(UserAuth::new(&u.name, &u.password, u.admin)),
            };
            (u.name.clone(), auth)
        })
        .collect()
}

/// Makes `map` hold one topology per configured database: kept where the servers
/// did not change (with what the monitor learned), new where they did.
fn sync_topologies(map: &DashMap<String, Arc<Topology>>, config: &Config) {
    map.retain(|name, t| {
        config.databases.get(name).is_some_and(|db| {
            let addrs: Vec<ServerAddr> = std::iter::once(db.primary_addr()).chain(db.replica_addrs()).collect();
            addrs.len() == t.nodes.len() && addrs.iter().zip(&t.nodes).all(|(a, n)| *a == n.addr)
        })
    });
    for (name, db) in &config.databases {
        if !map.contains_key(name) {
            map.insert(name.clone(), Arc::new(Topology::new(name, db.primary_addr(), db.replica_addrs())));
        }
    }
}

/// Binds the client listener.
pub async fn bind(config: &Config) -> io::Result<TcpListener> {
    let addr = config.listen_addr();
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(4096)
}
