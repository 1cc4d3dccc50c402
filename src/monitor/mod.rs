//! The replica monitor: one task for all databases that have replicas. Every
//! `routing.monitor_interval` it checks every server of those databases at once
//! (each check bounded by max(interval, 1 s), so a dead or silent host delays
//! nothing else), over one persistent connection per (database, server) as the
//! monitor user, with one query: in recovery or not, and the replay (standby) or
//! flushed WAL (primary) position.
//!
//! What the answers mean is decided in [`assess`] (pure, unit-tested): circuit
//! breakers ([`breaker`]), which node is the primary (a failover is followed),
//! each standby's lag, which nodes take reads. The result is written to the
//! database's [`Topology`], which the router reads without locks; state changes are
//! logged once each.

mod assess;
mod breaker;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::auth::scram::ScramKeys;
use crate::config::ServerAddr;
use crate::router::topology::{parse_lsn, Topology};
use crate::server::{login, InternalResult, ServerConn, ServerTarget};
use crate::state::{ConfigStore, Running, Topologies, UserAuth, Users};
use assess::{DbMonitor, Event, Limits, Outcome, Probe};

/// The one query of a check.
const CHECK_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END, \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn() END, \
     extract(epoch from now() - pg_last_xact_replay_timestamp())";

/// What the monitor reads of the shared state: the configuration (and the TLS to
/// servers), the users (to log in as the monitor user) and the topologies it writes.
#[derive(Clone)]
pub struct Sources {
    pub config: Arc<ConfigStore>,
    pub users: Arc<Users>,
    pub topologies: Arc<Topologies>,
}

/// Runs until aborted (at shutdown).
pub async fn run(sources: Sources) {
    let mut monitor = Monitor::default();
    loop {
        let started = Instant::now();
        monitor.round(&sources, started).await;
        let interval = sources.config.current().routing.monitor_interval.0;
        tokio::time::sleep_until((started + interval).into()).await;
    }
}

#[derive(Default)]
struct Monitor {
    dbs: HashMap<String, Db>,
    conns: HashMap<(String, ServerAddr), Conn>,
    /// The monitor user already warned about (it has no usable credentials yet).
    warned_credentials: Option<String>,
}

/// A monitored database: its topology (replaced on reload when its servers change)
/// and what the monitor remembers of it.
struct Db {
    topo: Arc<Topology>,
    mon: DbMonitor,
}

/// A monitor connection, with what it logged in as (a reload may change that).
struct Conn {
    conn: ServerConn,
    dbname: String,
    user: String,
    password: Option<String>,
    keys: Arc<OnceLock<ScramKeys>>,
}

impl Conn {
    fn serves(&self, t: &ServerTarget) -> bool {
        self.dbname == t.dbname && self.user == t.user && self.password == t.password && Arc::ptr_eq(&self.keys, &t.keys)
    }
}

impl Monitor {
    async fn round(&mut self, sources: &Sources, now: Instant) {
        // Owned: the guard of a config load is not to be held across awaits.
        let config: Arc<Running> = Arc::clone(&sources.config.current());
        let r = &config.routing;
        let lim = Limits {
            interval: r.monitor_interval.0,
            ban_after: r.ban_after_failures,
            max_lag: r.max_replica_lag.0,
            max_bytes: r.max_replica_lag_bytes.0,
        };
        let topologies: Vec<Arc<Topology>> = sources.topologies.all().into_iter().filter(|t| t.has_replicas()).collect();
        self.dbs.retain(|name, db| topologies.iter().any(|t| t.database == *name && Arc::ptr_eq(t, &db.topo)));
        for t in &topologies {
            self.dbs.entry(t.database.clone()).or_insert_with(|| Db { topo: t.clone(), mon: DbMonitor::new(t.nodes.len()) });
        }
        let dbs = &self.dbs;
        self.conns.retain(|(db, addr), _| dbs.get(db).is_some_and(|d| d.topo.nodes.iter().any(|n| n.addr == *addr)));
        if self.dbs.is_empty() {
            return;
        }
        let Some(user) = self.credentials(&config, &sources.users) else { return };

        let limit = lim.interval.max(Duration::from_secs(1));
        let mut outcomes: HashMap<String, Vec<Outcome>> = HashMap::new();
        let mut checks = JoinSet::new();
        for (name, db) in &mut self.dbs {
            let dbname = config.databases.get(name).and_then(|d| d.dbname.clone()).unwrap_or_else(|| name.clone());
            outcomes.insert(name.clone(), vec![Outcome::NotProbed; db.topo.nodes.len()]);
            for (i, node) in db.topo.nodes.iter().enumerate() {
                if !db.mon.admit(i, now) {
                    continue;
                }
                let target = ServerTarget {
                    addr: node.addr.clone(),
                    dbname: dbname.clone(),
                    user: user.name.clone(),
                    password: user.plaintext.clone(),
                    keys: user.keys.clone(),
                    tls: sources.config.upstream().clone(),
                    application_name: Some("pgmux-monitor"),
                };
                let key = (name.clone(), node.addr.clone());
                let conn = self.conns.remove(&key).filter(|c| c.serves(&target));
                let topo = db.topo.clone();
                checks.spawn(async move {
                    let t0 = Instant::now();
                    let (conn, result) = match tokio::time::timeout(limit, check(conn, &target, &topo, limit)).await {
                        Ok(r) => r,
                        Err(_) => (None, Err(CheckError::NoAnswer(limit))),
                    };
                    (key, i, conn, result, t0.elapsed())
                });
            }
        }
        while let Some(done) = checks.join_next().await {
            // A check that panicked stays "not probed": its node is probed again next round.
            let Ok((key, i, conn, result, took)) = done else { continue };
            if let Some(c) = conn {
                self.conns.insert(key.clone(), c);
            }
            if let Some(o) = outcomes.get_mut(&key.0) {
                o[i] = match result {
                    Ok(p) => Outcome::Passed(p, took),
                    Err(e) => Outcome::Failed(e.to_string(), took),
                };
            }
        }
        for (name, db) in &mut self.dbs {
            let Some(o) = outcomes.get(name) else { continue };
            for event in db.mon.apply(&db.topo, o, now, &lim) {
                log(&db.topo, &event);
            }
        }
    }

    /// The monitor user, when pgmux can log in as it (with only a SCRAM verifier
    /// configured, once a client has logged in as that user).
    fn credentials(&mut self, config: &Running, users: &Users) -> Option<Arc<UserAuth>> {
        let user = config.monitor_user().and_then(|u| users.get(&u.name))?;
        if user.plaintext.is_none() && user.keys.get().is_none() {
            if self.warned_credentials.as_deref() != Some(user.name.as_str()) {
                tracing::warn!(
                    user = %user.name,
                    "replica monitor waiting: the monitor user has only a SCRAM verifier; checks start after a client logs in as it"
                );
                self.warned_credentials = Some(user.name.clone());
            }
            return None;
        }
        self.warned_credentials = None;
        Some(user)
    }
}

/// One check over `conn` (or a new connection); the connection is kept only while
/// it answers properly.
/// Why a check did not pass.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    #[error("login failed: {0}")]
    Login(#[from] login::LoginError),
    #[error("check query failed: {0}")]
    Lost(std::io::Error),
    #[error("check query failed: {}", .0.message)]
    Refused(crate::error::PgError),
    #[error("check query returned no row")]
    NoRow,
    #[error("unexpected pg_is_in_recovery() value {0:?}")]
    Recovery(Option<String>),
    #[error("unexpected LSN {0:?}")]
    Lsn(String),
}

async fn check(conn: Option<Conn>, target: &ServerTarget, topo: &Topology, limit: Duration) -> (Option<Conn>, Result<Probe, CheckError>) {
    let mut conn = match conn {
        Some(c) => c,
        None => match login::connect(target, limit).await {
            Ok(conn) => Conn {
                conn,
                dbname: target.dbname.clone(),
                user: target.user.clone(),
                password: target.password.clone(),
                keys: target.keys.clone(),
            },
            Err(e) => return (None, Err(e.into())),
        },
    };
    let started = topo.now();
    match conn.conn.run_internal(CHECK_SQL, limit).await {
        Ok(r) => match parse(&r, started) {
            Ok(p) => (Some(conn), Ok(p)),
            Err(e) => (None, Err(e)),
        },
        Err(e) => (None, Err(CheckError::Lost(e))),
    }
}

/// Reads the row of [`CHECK_SQL`] (sent at `started`, topology clock).
fn parse(r: &InternalResult, started: u64) -> Result<Probe, CheckError> {
    if let Some(e) = &r.error {
        return Err(CheckError::Refused(e.clone()));
    }
    let row = r.rows.first().ok_or(CheckError::NoRow)?;
    let col = |i: usize| row.get(i).and_then(|v| v.as_deref());
    let in_recovery = match col(0) {
        Some("t") => true,
        Some("f") => false,
        other => return Err(CheckError::Recovery(other.map(str::to_string))),
    };
    let lsn_at = |i: usize| match col(i) {
        Some(v) => parse_lsn(v).ok_or_else(|| CheckError::Lsn(v.to_string())),
        None => Ok(0),
    };
    let lsn = lsn_at(1)?;
    // The insert position covers every commit that returned, asynchronous ones too
    // (at a page boundary it counts the next page's header, which a caught-up standby
    // has not "replayed": a reader then waits for the next WAL write, or reads from
    // an idle primary).
    let insert_lsn = if in_recovery { lsn } else { lsn_at(2)?.max(lsn) };
    let replay_age =
        col(3).and_then(|v| v.parse::<f64>().ok()).filter(|s| s.is_finite()).map(|s| Duration::from_secs_f64(s.clamp(0.0, 1e9)));
    Ok(Probe { in_recovery, lsn, insert_lsn, replay_age, started })
}

/// Logs a state change (each is reported once, when it happens).
fn log(t: &Topology, event: &Event) {
    let db = t.database.as_str();
    let server = |i: usize| t.nodes[i].addr.to_string();
    match event {
        Event::Down { node, error } => {
            tracing::warn!(database = db, server = %server(*node), error = %error, "server down: out of rotation after failed checks")
        }
        Event::Up { node } => tracing::info!(database = db, server = %server(*node), "server answers its checks again"),
        Event::Role { node, in_recovery: true } => {
            tracing::info!(database = db, server = %server(*node), "server is a standby (in recovery)")
        }
        Event::Role { node, in_recovery: false } => {
            tracing::warn!(database = db, server = %server(*node), "server is a primary (not in recovery)")
        }
        Event::Failover { from, to } => tracing::warn!(
            database = db,
            from = %server(*from),
            to = %server(*to),
            "failover followed: writes now go to {}",
            server(*to)
        ),
        Event::TwoPrimaries { current, other } => tracing::warn!(
            database = db,
            primary = %server(*current),
            other = %server(*other),
            "two servers answer as primary; writes stay on the current one"
        ),
        Event::NoPrimary { current } => tracing::warn!(
            database = db,
            server = %server(*current),
            "the primary is in recovery and no server answers as primary: writes will fail"
        ),
        Event::Lagging { node, bytes, lag } => tracing::warn!(
            database = db,
            server = %server(*node),
            lag_bytes = bytes,
            lag_seconds = lag.as_secs_f64(),
            "replica lagging: no reads until it is back within half of both lag bounds"
        ),
        Event::Readable { node, bytes, lag } => tracing::info!(
            database = db,
            server = %server(*node),
            lag_bytes = bytes,
            lag_seconds = lag.as_secs_f64(),
            "replica takes reads"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(row: &[Option<&str>]) -> InternalResult {
        InternalResult { error: None, status: b'I', rows: vec![row.iter().map(|v| v.map(str::to_string)).collect()] }
    }

    #[test]
    fn parses_a_standby_and_a_primary() {
        let p = parse(&result(&[Some("t"), Some("0/3000148"), None, Some("0.250913")]), 5).unwrap();
        let age = Some(Duration::from_micros(250_913));
        assert_eq!(p, Probe { in_recovery: true, lsn: 0x3000148, insert_lsn: 0x3000148, replay_age: age, started: 5 });
        let p = parse(&result(&[Some("f"), Some("1/10"), Some("1/48"), None]), 9).unwrap();
        assert_eq!(p, Probe { in_recovery: false, lsn: (1 << 32) + 0x10, insert_lsn: (1 << 32) + 0x48, replay_age: None, started: 9 });
        // Clock skew: a negative age is 0.
        let p = parse(&result(&[Some("t"), Some("0/1"), None, Some("-0.5")]), 1).unwrap();
        assert_eq!(p.replay_age, Some(Duration::ZERO));
    }

    #[test]
    fn rejects_what_is_not_an_answer() {
        assert!(parse(&result(&[None, Some("0/1"), None, None]), 1).is_err());
        assert!(parse(&result(&[Some("f"), Some("garbage"), None, None]), 1).is_err());
        assert!(parse(&InternalResult { error: None, status: b'I', rows: vec![] }, 1).is_err());
        let e = crate::error::PgError::fatal(crate::error::SqlState::CANNOT_CONNECT_NOW, "the database system is starting up");
        let err = parse(&InternalResult { error: Some(e), status: b'I', rows: vec![] }, 1).unwrap_err().to_string();
        assert!(err.contains("starting up"), "{err}");
    }
}
