//! Every configured database's servers as the router sees them ([`Topology`]): one
//! per database, kept across reloads where its servers did not change (with what the
//! replica monitor learned), new where they did.

use std::sync::Arc;

use dashmap::DashMap;

use crate::config::{Config, ServerAddr};
use crate::router::topology::Topology;

#[derive(Default)]
pub struct Topologies {
    map: DashMap<String, Arc<Topology>>,
}

impl Topologies {
    pub fn new(config: &Config) -> Topologies {
        let t = Topologies::default();
        t.sync(config);
        t
    }

    /// What the router knows about a database's servers.
    pub fn get(&self, database: &str) -> Option<Arc<Topology>> {
        self.map.get(database).map(|t| t.clone())
    }

    /// Every database's topology.
    pub fn all(&self) -> Vec<Arc<Topology>> {
        self.map.iter().map(|t| t.value().clone()).collect()
    }

    /// Makes the map hold one topology per configured database.
    pub fn sync(&self, config: &Config) {
        self.map.retain(|name, t| {
            config.databases.get(name).is_some_and(|db| {
                let addrs: Vec<ServerAddr> = std::iter::once(db.primary_addr()).chain(db.replica_addrs()).collect();
                addrs.len() == t.nodes.len() && addrs.iter().zip(&t.nodes).all(|(a, n)| *a == n.addr)
            })
        });
        for (name, db) in &config.databases {
            if !self.map.contains_key(name) {
                self.map.insert(name.clone(), Arc::new(Topology::new(name, db.primary_addr(), db.replica_addrs())));
            }
        }
    }
}
