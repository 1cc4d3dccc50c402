//! The pools of every (database, user) in use: a primary's and each replica's,
//! created at the first login, dropped when a reload changes their database or
//! user (their clients keep them and drain), and the connection limits they share.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use dashmap::DashMap;

use crate::pool::{Limits, Pool};
use crate::router::topology::Topology;

/// The pools of one (database, user): the primary's and each replica's.
pub struct DbPools {
    /// Shared with the clients' registry entries (`ClientInfo`), not copied.
    pub database: Arc<str>,
    pub user: Arc<str>,
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

    /// The pool writes go to now (the configured primary may be gone after a failover).
    pub fn current_primary(&self) -> &Arc<Pool> {
        self.node(self.topology.primary())
    }

    /// Every pool of the set: the primary's, then the replicas'.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Pool>> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }
}

/// Every pool set created so far, by (database, user), and the limits they share.
#[derive(Default)]
pub struct PoolRegistry {
    sets: DashMap<(String, String), Arc<DbPools>>,
    /// `max_db_connections` / `max_user_connections` per server, shared by pools.
    pub limits: Limits,
}

impl PoolRegistry {
    /// The pool set of a (database, user), if created.
    pub fn get(&self, database: &str, user: &str) -> Option<Arc<DbPools>> {
        self.sets.get(&(database.to_string(), user.to_string())).map(|p| p.clone())
    }

    /// Keeps `pools` as the set of its (database, user), unless another was kept
    /// meanwhile; returns the one kept.
    pub fn insert(&self, pools: DbPools) -> Arc<DbPools> {
        let key = (pools.database.to_string(), pools.user.to_string());
        self.sets.entry(key).or_insert_with(|| Arc::new(pools)).clone()
    }

    /// Every pool set, for reports and upkeep.
    pub fn sets(&self) -> Vec<Arc<DbPools>> {
        self.sets.iter().map(|e| e.value().clone()).collect()
    }

    /// The pool sets of one database, or of all.
    pub fn sets_of(&self, database: Option<&str>) -> Vec<Arc<DbPools>> {
        self.sets.iter().filter(|e| database.is_none_or(|d| d == e.key().0)).map(|e| e.value().clone()).collect()
    }

    /// Every pool created so far.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.sets.iter().flat_map(|e| e.value().all().cloned().collect::<Vec<_>>()).collect()
    }

    /// Keeps the sets `keep` says yes to; the others drain with their clients.
    pub fn retain(&self, mut keep: impl FnMut(&DbPools) -> bool) {
        self.sets.retain(|_, p| keep(p));
    }

    /// Closes the idle connections of a database's pools, or of every pool.
    pub fn close_idle(&self, database: Option<&str>) {
        for set in self.sets_of(database) {
            set.all().for_each(|p| p.close_idle());
        }
    }
}
