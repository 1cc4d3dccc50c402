//! Connection limits shared by several pools, with PgBouncer's meaning:
//! `max_db_connections` covers every pool of a database on one server (all its users),
//! `max_user_connections` every pool of a user on one server (all its databases).
//!
//! A [`Limit`] counts its member pools' slots: a pool takes a unit of each of its
//! limits whenever its own `total` grows (a connection opened or being opened) and
//! gives it back whenever `total` shrinks, under the pool's lock. The count therefore
//! follows the connections' lifetime exactly and can leak only if `total` does (which
//! the pool's guards prevent). Units are atomics: taking one is a compare-and-swap,
//! never a lock, so limits need no lock ordering with the pools.
//!
//! A client whose pool has room by its size but whose limit is full waits in its
//! pool's FIFO queue. [`wake`] runs when units may have come back (a connection
//! closed, a limit raised, a client queued behind a full limit): member pools' waiters
//! get the room there is, oldest waiter first across pools, and while a limit stays
//! full, idle connections of other member pools are closed to make room, as PgBouncer
//! does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use dashmap::DashMap;

use super::Pool;
use crate::config::{Config, ServerAddr};
use crate::metrics::LimitSample;

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// `max_db_connections`: the pools of one database.
    Database,
    /// `max_user_connections`: the pools of one user.
    User,
}

impl LimitKind {
    /// Its name in reports (`kind` label): `database` or `user`.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Database => "database",
            LimitKind::User => "user",
        }
    }

    /// The configured maximum for the database or user `name` (0: no limit).
    pub fn max_in(self, config: &Config, name: &str) -> usize {
        match self {
            LimitKind::Database => config.max_db_connections(name),
            LimitKind::User => config.max_user_connections(name),
        }
    }
}

/// A limit's maximum when this instance may open no connection at all under it (its
/// share of a fleet's total is 0 for now).
pub const CLOSED: usize = usize::MAX;

/// The maximum of a limit configured at `total` (0: none) of which this instance
/// gets `share(total)`.
pub fn shared_max(total: usize, share: super::Share<'_>) -> usize {
    match (total, share(total)) {
        (0, _) => 0,
        (_, 0) => CLOSED,
        (_, s) => s,
    }
}

/// Server connections of a group of pools on one server.
pub struct Limit {
    pub kind: LimitKind,
    /// The database or user, as configured.
    pub name: String,
    pub server: ServerAddr,
    /// 0: no limit (units are still counted, so a reload can set one); [`CLOSED`]:
    /// none at all (a fleet's share of 0).
    max: AtomicUsize,
    /// Slots of member pools: connections open or being opened.
    used: AtomicUsize,
    /// Member pools with clients in their queue (when 0, nobody can be held back).
    waiting: AtomicUsize,
    members: Mutex<Vec<Weak<Pool>>>,
}

impl Limit {
    pub fn new(kind: LimitKind, name: &str, server: &ServerAddr, max: usize) -> Arc<Limit> {
        Arc::new(Limit {
            kind,
            name: name.to_string(),
            server: server.clone(),
            max: AtomicUsize::new(max),
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            members: Mutex::new(Vec::new()),
        })
    }

    /// The maximum now (0: no limit, or none at all while [`CLOSED`]).
    pub fn max(&self) -> usize {
        match self.max.load(Ordering::Acquire) {
            CLOSED => 0,
            m => m,
        }
    }

    /// Server connections counted now (open or being opened).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub(super) fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
    }

    /// Takes a unit if the limit has room.
    pub(super) fn try_take(&self) -> bool {
        let max = self.max.load(Ordering::Acquire);
        if max == CLOSED {
            return false;
        }
        if max == 0 {
            self.used.fetch_add(1, Ordering::AcqRel);
            return true;
        }
        self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| (u < max).then_some(u + 1)).is_ok()
    }

    pub(super) fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn is_full(&self) -> bool {
        let max = self.max.load(Ordering::Acquire);
        max > 0 && self.used() >= max
    }

    /// More connections than a lowered maximum allows.
    pub(super) fn is_over(&self) -> bool {
        let max = self.max.load(Ordering::Acquire);
        max > 0 && (self.used() > max || (max == CLOSED && self.used() > 0))
    }

    /// Full while some member pool has clients waiting: a connection going back idle
    /// should rather make room for them.
    pub(super) fn contended(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0 && self.is_full()
    }

    pub(super) fn has_waiters(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// A member pool's queue became non-empty (`true`) or empty.
    pub(super) fn set_waiting(&self, on: bool) {
        if on {
            self.waiting.fetch_add(1, Ordering::AcqRel);
        } else {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(super) fn join(&self, pool: &Arc<Pool>) {
        let mut m = self.members.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|w| w.strong_count() > 0);
        m.push(Arc::downgrade(pool));
    }

    fn members(&self) -> Vec<Arc<Pool>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect()
    }

    /// Closes idle connections of member pools while over a lowered maximum.
    fn trim(&self) {
        while self.is_over() {
            let pools = self.members();
            let Some(victim) = least_recently_used(&pools) else { return };
            if !victim.evict_idle() {
                return;
            }
        }
    }
}

/// The member pool whose idle connection has been unused longest.
fn least_recently_used(pools: &[Arc<Pool>]) -> Option<&Arc<Pool>> {
    pools.iter().filter_map(|p| p.oldest_idle().map(|t| (t, p))).min_by_key(|v| v.0).map(|v| v.1)
}

/// Lets clients held back by `limits` proceed (called with no pool lock held): the
/// room there is goes to member pools' waiters, oldest first; while a limit stays
/// full and a member pool has waiters and room by its size, the least recently used
/// idle connection of a member pool is closed to make room, as long as that helps
/// someone. A closed connection frees a unit of its pool's other limit too, which is
/// then looked at in turn.
pub(super) fn wake(limits: &[Arc<Limit>]) {
    let mut todo: Vec<Arc<Limit>> = limits.iter().rev().cloned().collect();
    while let Some(limit) = todo.pop() {
        if !limit.has_waiters() {
            continue;
        }
        let pools = limit.members();
        let mut evicted = false;
        loop {
            let mut blocked: Vec<(Instant, &Arc<Pool>)> = pools.iter().filter_map(|p| p.blocked_since().map(|t| (t, p))).collect();
            if blocked.is_empty() {
                break;
            }
            blocked.sort_by_key(|b| b.0);
            let granted: usize = blocked.iter().map(|(_, p)| p.grant()).sum();
            if !limit.is_full() || (evicted && granted == 0) {
                break;
            }
            let Some(victim) = least_recently_used(&pools) else { break };
            if victim.evict_idle() {
                for l in &victim.limits {
                    if !Arc::ptr_eq(l, &limit) && !todo.iter().any(|t| Arc::ptr_eq(t, l)) {
                        todo.push(l.clone());
                    }
                }
            }
            evicted = true;
        }
    }
}

/// Every limit, by what it counts and server; shared by the pools it covers. Limits
/// are never removed (there are at most (databases + users) x servers of them), so
/// two pools of the same group always share one.
#[derive(Default)]
pub struct Limits {
    map: DashMap<(LimitKind, String, ServerAddr), Arc<Limit>>,
}

impl Limits {
    /// The limit of `kind` for `name` on `server`, created from `config` on first use
    /// (this instance's `share` of the configured maximum).
    pub fn get(&self, kind: LimitKind, name: &str, server: &ServerAddr, config: &Config, share: super::Share<'_>) -> Arc<Limit> {
        self.map
            .entry((kind, name.to_string(), server.clone()))
            .or_insert_with(|| Limit::new(kind, name, server, shared_max(kind.max_in(config, name), share)))
            .clone()
    }

    /// Every limit, for reports.
    pub fn all(&self) -> Vec<Arc<Limit>> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }

    /// Once a second (the proxy's upkeep): a safety net for a wake-up missed in a race
    /// (a unit given back by a checkout that took one limit's unit but not the
    /// other's, just as another pool's client queued behind it).
    pub fn upkeep(&self) {
        let waited: Vec<Arc<Limit>> = self.map.iter().filter(|e| e.value().has_waiters()).map(|e| e.value().clone()).collect();
        if !waited.is_empty() {
            wake(&waited);
        }
    }

    /// A reload: every limit takes its new maximum. Waiters proceed where it grew;
    /// idle connections beyond a lowered one are closed (busy ones close as they
    /// come back).
    pub fn apply(&self, config: &Config, share: super::Share<'_>) {
        let all = self.all();
        for l in &all {
            l.set_max(shared_max(l.kind.max_in(config, &l.name), share));
        }
        for l in &all {
            l.trim();
        }
        wake(&all);
    }
}

impl Limits {
    /// Every limit to show at a scrape, sorted by (kind, name, server): each
    /// configured (database, server) and (user, server), counted or not, and a limit
    /// a reload removed while it still counts connections.
    pub fn samples(&self, config: &Config) -> Vec<LimitSample> {
        let mut out = BTreeMap::new();
        let servers: Vec<String> = {
            let mut s: Vec<String> = config
                .databases
                .values()
                .flat_map(|d| std::iter::once(d.primary_addr()).chain(d.replica_addrs()))
                .map(|a| a.to_string())
                .collect();
            s.sort();
            s.dedup();
            s
        };
        for (name, db) in &config.databases {
            let max = config.max_db_connections(name);
            for a in std::iter::once(db.primary_addr()).chain(db.replica_addrs()) {
                out.insert((LimitKind::Database.label(), name.clone(), a.to_string()), (0, max));
            }
        }
        for u in &config.users {
            let max = config.max_user_connections(&u.name);
            for server in &servers {
                out.insert((LimitKind::User.label(), u.name.clone(), server.clone()), (0, max));
            }
        }
        for l in self.all() {
            let key = (l.kind.label(), l.name.clone(), l.server.to_string());
            match out.get_mut(&key) {
                Some(v) => v.0 = l.used(),
                // No longer configured (a reload removed it): shown while it counts.
                None if l.used() > 0 => {
                    out.insert(key, (l.used(), l.max()));
                }
                None => {}
            }
        }
        out.into_iter().map(|((kind, name, server), (current, max))| LimitSample { kind, name, server, current, max }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> ServerAddr {
        ServerAddr { host: "h".into(), port: 1 }
    }

    #[test]
    fn units_are_taken_up_to_the_maximum() {
        let l = Limit::new(LimitKind::Database, "d", &addr(), 2);
        assert!(l.try_take() && l.try_take());
        assert!(!l.try_take() && l.is_full() && !l.is_over());
        l.give(1);
        assert!(!l.is_full() && l.try_take());
        l.set_max(1);
        assert!(l.is_over() && !l.try_take());
        l.set_max(0);
        assert!(l.try_take() && !l.is_full(), "0: no limit, still counted");
        assert_eq!(l.used(), 3);
        assert!(!l.contended());
    }

    #[test]
    fn contended_needs_waiters_and_a_full_limit() {
        let l = Limit::new(LimitKind::User, "u", &addr(), 1);
        l.set_waiting(true);
        assert!(!l.contended());
        assert!(l.try_take());
        assert!(l.contended());
        l.set_waiting(false);
        assert!(!l.contended());
    }

    #[test]
    fn registry_shares_and_reloads() {
        let yaml = "pool:\n  max_db_connections: 3\nusers:\n  - name: u\n    password: u\n    max_user_connections: 5\ndatabases:\n  d:\n    primary: h:1\n";
        let c = Config::parse(yaml, std::path::Path::new("x")).unwrap();
        let r = Limits::default();
        let a = r.get(LimitKind::Database, "d", &addr(), &c, &crate::pool::whole);
        assert!(Arc::ptr_eq(&a, &r.get(LimitKind::Database, "d", &addr(), &c, &crate::pool::whole)));
        let u = r.get(LimitKind::User, "u", &addr(), &c, &crate::pool::whole);
        assert_eq!((a.max(), u.max()), (3, 5));
        let c = Config::parse(&yaml.replace("max_db_connections: 3", "max_db_connections: 9"), std::path::Path::new("x")).unwrap();
        r.apply(&c, &crate::pool::whole);
        assert_eq!((a.max(), u.max()), (9, 5));
        assert_eq!(r.all().len(), 2);
    }

    #[test]
    fn every_configured_limit_and_the_maxima_that_are_set() {
        let yaml = "pool:\n  max_db_connections: 4\nusers:\n  - name: app\n    password: app\n    max_user_connections: 3\n  - name: other\n    password: other\ndatabases:\n  app:\n    primary: 10.0.0.1:5432\n    replicas: [10.0.0.2:5432]\n";
        let c = Config::parse(yaml, std::path::Path::new("t.yaml")).unwrap();
        let limits = Limits::default();
        let primary = ServerAddr { host: "10.0.0.1".into(), port: 5432 };
        // Limits of pools created so far (counts move with pools: protocol-tests/admin.rs),
        // and one of a database no longer configured, with nothing to count: not shown.
        limits.get(LimitKind::Database, "app", &primary, &c, &crate::pool::whole);
        limits.get(LimitKind::Database, "older", &primary, &c, &crate::pool::whole);
        let mut out = String::from("pgmux_clients 1");
        crate::metrics::limits::render(&limits.samples(&c), &mut out);
        let has = |line: &str| out.lines().any(|l| l == line);
        assert!(out.starts_with("pgmux_clients 1\n# HELP pgmux_limit_connections"), "{out}");
        assert!(has("pgmux_limit_connections{kind=\"database\",name=\"app\",server=\"10.0.0.1:5432\"} 0"), "{out}");
        assert!(has("pgmux_limit_connections{kind=\"database\",name=\"app\",server=\"10.0.0.2:5432\"} 0"), "{out}");
        assert!(has("pgmux_limit_connections{kind=\"user\",name=\"other\",server=\"10.0.0.2:5432\"} 0"), "{out}");
        assert!(!out.contains("older"), "{out}");
        assert!(has("pgmux_limit_max_connections{kind=\"database\",name=\"app\",server=\"10.0.0.2:5432\"} 4"), "{out}");
        assert!(has("pgmux_limit_max_connections{kind=\"user\",name=\"app\",server=\"10.0.0.1:5432\"} 3"), "{out}");
        assert!(!out.contains("pgmux_limit_max_connections{kind=\"user\",name=\"other\""), "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("pgmux_limit_connections{")).count(), 2 + 2 * 2);
    }
}
