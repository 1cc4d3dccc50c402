//! Configuration: the YAML file, its defaults and its validation.
//!
//! [`Config::load`] parses with serde-saphyr (duplicate keys are errors) and
//! `deny_unknown_fields`, then [`Config::validate`] checks what types cannot
//! (addresses, sizes, password formats). Every error names the file, line and key.
//! The parsed config is immutable; a reload builds a new one.

mod access;
mod error;
mod fleet;
mod limits;
mod routing;
mod tls;
mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::tls::{ClientTlsConfig, ClientTlsMode, ServerTlsConfig, ServerTlsMode};
pub use access::{default_auth_query, Cidr, HbaAction, HbaRule};
pub use error::ConfigError;
use error::{first_line, locate};
pub use fleet::FleetConfig;
pub use routing::{Route, RoutingConfig};
pub use units::{ByteSize, Dur};

use crate::auth::scram::ScramSecret;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "defaults::listen")]
    pub listen: String,
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Also listen on the Unix socket `<dir>/.s.PGSQL.<port of listen>`, as
    /// PostgreSQL and PgBouncer do. Read at start only.
    #[serde(default)]
    pub unix_socket_dir: Option<PathBuf>,
    /// Other pgmux instances this one works with (cancel routing, a shared budget).
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    #[serde(default = "defaults::max_client_connections")]
    pub max_client_connections: usize,
    /// Threads serving clients, each with its own scheduler and listening socket
    /// (1, the default: one thread, like PgBouncer, with the least CPU per
    /// transaction; 0: one per CPU). Read at start only.
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    /// How clients prove their password: `scram-sha-256` (default) or `md5`.
    #[serde(default)]
    pub auth_type: AuthType,
    /// Largest protocol message accepted from a client or a server.
    #[serde(default = "defaults::max_message_size")]
    pub max_message_size: ByteSize,
    /// A client must finish its startup and authentication within this time.
    #[serde(default = "defaults::startup_timeout")]
    pub startup_timeout: Dur,
    /// `text` (default) or `json` (one object per line) logs on stderr.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Requests slower than this are logged with their duration, server and text (0: off).
    #[serde(default = "defaults::off")]
    pub slow_query_threshold: Dur,
    /// Warn (at most every 10 s per pool) when this many clients wait for a server
    /// connection, or one has waited `pool_pressure_wait` (0: off).
    #[serde(default)]
    pub pool_pressure_waiting: usize,
    #[serde(default = "defaults::off")]
    pub pool_pressure_wait: Dur,
    /// On SIGTERM, how long running transactions may take to finish.
    #[serde(default = "defaults::shutdown_timeout")]
    pub shutdown_timeout: Dur,
    /// On SIGTERM, how long to keep accepting clients (while `/readyz` says 503)
    /// before the drain begins, so that load balancers stop sending new ones first.
    #[serde(default = "defaults::off")]
    pub drain_delay: Dur,
    /// Named statements kept prepared per server connection (transaction mode).
    #[serde(default = "defaults::max_prepared_statements")]
    pub max_prepared_statements: usize,
    /// Who may log in from where: ordered rules, first match wins (none: everyone).
    #[serde(default)]
    pub hba: Vec<HbaRule>,
    /// Failed logins from one address within `auth_failure_window` that ban it for
    /// a window (0: off).
    #[serde(default = "access::default_auth_failure_limit")]
    pub auth_failure_limit: u32,
    #[serde(default = "access::default_auth_failure_window")]
    pub auth_failure_window: Dur,
    /// A configured user as whom pgmux looks up, with `auth_query`, users that are
    /// not in `users` (none: only configured users may log in).
    #[serde(default)]
    pub auth_user: Option<String>,
    /// Returns (name, password verifier) for the user name in `$1`.
    #[serde(default = "access::default_auth_query")]
    pub auth_query: String,
    /// TLS for clients (`cert`, `key`, `mode`).
    #[serde(default)]
    pub tls: ClientTlsConfig,
    /// TLS to the servers (`mode` as libpq's sslmode, `ca`, optional `cert`/`key`).
    #[serde(default)]
    pub server_tls: ServerTlsConfig,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    pub users: Vec<UserConfig>,
    pub databases: BTreeMap<String, DatabaseConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AuthType {
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    #[default]
    Transaction,
    Session,
}

impl PoolMode {
    /// As written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    #[serde(default)]
    pub mode: PoolMode,
    /// Server connections per (database, user) on each server.
    #[serde(default = "defaults::pool_size")]
    pub size: usize,
    /// Server connections kept open even when idle, per pool (once a client has used it).
    #[serde(default)]
    pub min_pool_size: usize,
    /// Extra server connections a pool may open for clients that have waited
    /// `reserve_pool_timeout` (0: none).
    #[serde(default)]
    pub reserve_pool_size: usize,
    #[serde(default = "defaults::reserve_pool_timeout")]
    pub reserve_pool_timeout: Dur,
    /// Server connections per database on each server, over all its users' pools (0: no limit).
    #[serde(default)]
    pub max_db_connections: usize,
    /// Server connections per user on each server, over all its databases' pools (0: no limit).
    #[serde(default)]
    pub max_user_connections: usize,
    #[serde(default = "defaults::checkout_timeout")]
    pub checkout_timeout: Dur,
    #[serde(default = "defaults::server_idle_timeout")]
    pub server_idle_timeout: Dur,
    #[serde(default = "defaults::server_lifetime")]
    pub server_lifetime: Dur,
    /// Opening a server connection (TCP and login) must finish within this time.
    #[serde(default = "defaults::server_connect_timeout")]
    pub server_connect_timeout: Dur,
    /// A connection idle for longer than this is checked with an empty query before reuse.
    #[serde(default = "defaults::server_check_delay")]
    pub server_check_delay: Dur,
    /// Sent when a session-mode client leaves, before its connection is reused.
    #[serde(default = "defaults::server_reset_query")]
    pub server_reset_query: String,
    /// A client idle inside a transaction longer than this is disconnected and its
    /// transaction rolled back (0: off).
    #[serde(default = "defaults::off")]
    pub idle_transaction_timeout: Dur,
    /// A client idle between transactions longer than this is disconnected (0: off).
    #[serde(default = "defaults::off")]
    pub client_idle_timeout: Dur,
    /// A request running longer than this is cancelled on the server (0: off).
    #[serde(default = "defaults::off")]
    pub query_timeout: Dur,
    /// A client that has waited this long for a server connection gets a NOTICE
    /// saying so (0: off).
    #[serde(default = "defaults::off")]
    pub wait_notice: Dur,
    /// Transaction mode: notifications queued for one listening client at most; a
    /// client that falls this far behind is disconnected (`notify::hub`).
    #[serde(default = "defaults::notify_queue_size")]
    pub notify_queue_size: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::default(),
            size: defaults::pool_size(),
            min_pool_size: 0,
            reserve_pool_size: 0,
            reserve_pool_timeout: defaults::reserve_pool_timeout(),
            max_db_connections: 0,
            max_user_connections: 0,
            checkout_timeout: defaults::checkout_timeout(),
            server_idle_timeout: defaults::server_idle_timeout(),
            server_lifetime: defaults::server_lifetime(),
            server_connect_timeout: defaults::server_connect_timeout(),
            server_check_delay: defaults::server_check_delay(),
            server_reset_query: defaults::server_reset_query(),
            idle_transaction_timeout: defaults::off(),
            client_idle_timeout: defaults::off(),
            query_timeout: defaults::off(),
            wait_notice: defaults::off(),
            notify_queue_size: defaults::notify_queue_size(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plaintext, or a SCRAM-SHA-256 verifier as stored in `pg_authid`.
    pub password: String,
    #[serde(default)]
    pub admin: bool,
    /// Where this user's transactions go by default: `auto`, `primary` or `replica`.
    #[serde(default)]
    pub route: Route,
    /// This user's pools' size (wins over `databases.<name>.pool_size` and `pool.size`).
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// Overrides `pool.max_user_connections` for this user (0: no limit).
    #[serde(default)]
    pub max_user_connections: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `host:port` of the primary.
    pub primary: String,
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Database name on the servers; defaults to the key.
    #[serde(default)]
    pub dbname: Option<String>,
    /// Transaction mode: what to do when a client uses a session-only feature
    /// (temporary tables, WITH HOLD cursors, session advisory locks, LOAD,
    /// SQL PREPARE): `pin` it to its server connection, or `reject` the statement.
    #[serde(default)]
    pub session_features: SessionFeatures,
    /// Overrides of the `pool:` keys of the same names for this database's pools.
    #[serde(default)]
    pub pool_size: Option<usize>,
    #[serde(default)]
    pub min_pool_size: Option<usize>,
    #[serde(default)]
    pub reserve_pool_size: Option<usize>,
    /// Overrides `pool.max_db_connections` for this database (0: no limit).
    #[serde(default)]
    pub max_db_connections: Option<usize>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionFeatures {
    #[default]
    Pin,
    Reject,
}

mod defaults {
    use super::{ByteSize, Dur};
    use std::time::Duration;
    pub fn listen() -> String {
        "127.0.0.1:6432".into()
    }
    pub fn max_client_connections() -> usize {
        5000
    }
    pub fn workers() -> usize {
        1
    }
    pub fn max_message_size() -> ByteSize {
        ByteSize(256 << 20)
    }
    pub fn startup_timeout() -> Dur {
        Dur(Duration::from_secs(15))
    }
    pub fn shutdown_timeout() -> Dur {
        Dur(Duration::from_secs(30))
    }
    pub fn max_prepared_statements() -> usize {
        256
    }
    pub fn pool_size() -> usize {
        10
    }
    pub fn notify_queue_size() -> usize {
        10000
    }
    pub fn checkout_timeout() -> Dur {
        Dur(Duration::from_secs(5))
    }
    pub fn server_idle_timeout() -> Dur {
        Dur(Duration::from_secs(600))
    }
    pub fn server_lifetime() -> Dur {
        Dur(Duration::from_secs(3600))
    }
    pub fn server_connect_timeout() -> Dur {
        Dur(Duration::from_secs(5))
    }
    pub fn server_check_delay() -> Dur {
        Dur(Duration::from_secs(30))
    }
    pub fn reserve_pool_timeout() -> Dur {
        Dur(Duration::from_secs(5))
    }
    pub fn off() -> Dur {
        Dur(Duration::ZERO)
    }
    pub fn server_reset_query() -> String {
        "DISCARD ALL".into()
    }
}

/// A server address as written in the config (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
}

impl ServerAddr {
    pub fn parse(s: &str) -> Option<ServerAddr> {
        let (host, port) = s.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some(ServerAddr { host: host.to_string(), port: port.parse().ok()? })
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The database names that reach the admin console, as in PgBouncer (the first is
/// the name PgBouncer lists it under). No configured database may take them.
pub const ADMIN_DATABASES: [&str; 2] = ["pgbouncer", "pgmux"];

/// Whether a client asking for this database wants the admin console.
pub fn is_admin_database(name: &str) -> bool {
    ADMIN_DATABASES.contains(&name)
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.into(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = serde_saphyr::from_str(text).map_err(|e| ConfigError {
            file: path.into(),
            line: e.location().map(|l| l.line() as usize),
            key: String::new(),
            message: first_line(&e.to_string()),
        })?;
        let fail = |(key, message): (String, String)| ConfigError { file: path.into(), line: locate(text, &key), key, message };
        if let Some(f) = cfg.fleet.as_mut() {
            f.read_secret_file().map_err(fail)?;
        }
        cfg.validate().map_err(fail)?;
        Ok(cfg)
    }

    /// Checks what the types cannot; returns (key path, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        if self.listen.parse::<SocketAddr>().is_err() {
            return err("listen", format!("invalid address \"{}\" (expected ip:port)", self.listen));
        }
        if let Some(m) = &self.metrics_listen {
            if m.parse::<SocketAddr>().is_err() {
                return err("metrics_listen", format!("invalid address \"{m}\" (expected ip:port)"));
            }
        }
        if self.max_client_connections == 0 {
            return err("max_client_connections", "must be at least 1".into());
        }
        if let Some(f) = &self.fleet {
            f.validate()?;
        }
        if let Some(d) = self.unix_socket_dir.as_ref().filter(|d| !d.is_dir()) {
            return err("unix_socket_dir", format!("\"{}\" is not a directory", d.display()));
        }
        if self.max_message_size.0 < 1024 || self.max_message_size.0 > (1 << 30) {
            return err("max_message_size", "must be between 1kB and 1GB".into());
        }
        if self.max_prepared_statements == 0 {
            return err("max_prepared_statements", "must be at least 1".into());
        }
        if self.pool.size == 0 {
            return err("pool.size", "must be at least 1".into());
        }
        if self.pool.min_pool_size > self.pool.size {
            return err("pool.min_pool_size", format!("must not exceed pool.size ({})", self.pool.size));
        }
        if self.pool.notify_queue_size == 0 {
            return err("pool.notify_queue_size", "must be at least 1".into());
        }
        if self.pool.checkout_timeout.0.is_zero() {
            return err("pool.checkout_timeout", "must be more than 0".into());
        }
        self.validate_users()?;
        if let Some(m) = &self.routing.monitor_user {
            if self.user(m).is_none() {
                return err("routing.monitor_user", format!("user \"{m}\" is not in users"));
            }
        }
        if self.routing.monitor_interval.0 < std::time::Duration::from_millis(10) {
            return err("routing.monitor_interval", "must be at least 10ms".into());
        }
        if self.routing.ban_after_failures == 0 {
            return err("routing.ban_after_failures", "must be at least 1".into());
        }
        self.validate_databases()?;
        self.validate_access()?;
        self.validate_tls()?;
        self.validate_pool_overrides()
    }

    /// Each user: a name, once, and a password pgmux can use.
    fn validate_users(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        if self.users.is_empty() {
            return err("users", "at least one user is required".into());
        }
        let mut seen = std::collections::HashSet::new();
        for u in &self.users {
            let key = format!("users.{}", u.name);
            if u.name.is_empty() {
                return err("users", "a user has an empty name".into());
            }
            if !seen.insert(&u.name) {
                return err(&key, format!("user \"{}\" is listed twice", u.name));
            }
            if u.password.starts_with("SCRAM-SHA-256$") {
                if ScramSecret::parse_verifier(&u.password).is_none() {
                    return err(
                        &format!("{key}.password"),
                        "malformed SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)".into(),
                    );
                }
                if self.auth_type == AuthType::Md5 {
                    return err(&format!("{key}.password"), "auth_type md5 needs a plaintext password, not a SCRAM verifier".into());
                }
            } else if u.password.starts_with("md5") && u.password.len() == 35 {
                return err(
                    &format!("{key}.password"),
                    "md5 hashes are not accepted; give the plaintext password or a SCRAM-SHA-256 verifier".into(),
                );
            }
        }
        Ok(())
    }

    /// Each database: not an admin console name, addresses that parse.
    fn validate_databases(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((k.to_string(), m));
        if self.databases.is_empty() {
            return err("databases", "at least one database is required".into());
        }
        for (name, db) in &self.databases {
            let key = format!("databases.{name}");
            if is_admin_database(name) {
                return err(&key, format!("\"{name}\" is reserved for the admin console"));
            }
            if ServerAddr::parse(&db.primary).is_none() {
                return err(&format!("{key}.primary"), format!("invalid address \"{}\" (expected host:port)", db.primary));
            }
            for r in &db.replicas {
                if ServerAddr::parse(r).is_none() {
                    return err(&format!("{key}.replicas"), format!("invalid address \"{r}\" (expected host:port)"));
                }
            }
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen.parse().expect("validated")
    }

    /// The user the replica monitor logs in as: `routing.monitor_user`, else the
    /// first user that is not an admin, else the first user.
    pub fn monitor_user(&self) -> Option<&UserConfig> {
        match &self.routing.monitor_user {
            Some(m) => self.user(m),
            None => self.users.iter().find(|u| !u.admin).or(self.users.first()),
        }
    }

    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

impl DatabaseConfig {
    pub fn primary_addr(&self) -> ServerAddr {
        ServerAddr::parse(&self.primary).expect("validated")
    }
    pub fn replica_addrs(&self) -> Vec<ServerAddr> {
        self.replicas.iter().map(|r| ServerAddr::parse(r).expect("validated")).collect()
    }
}

#[cfg(test)]
mod tests;
