//! Named prepared statements in transaction mode.
//!
//! Clients name statements as they like (`S_1`, `__asyncpg_stmt_3__`); the same name
//! may mean different SQL to different clients, and a client's next transaction may
//! run on another server connection. So pgmux keeps, per client, a map from the
//! client's names to [`StmtDef`]s, and gives every distinct statement (query text +
//! parameter types) one pgmux-wide server name, `pgmux_<id>`, from the [`Registry`].
//! Each server connection remembers which of those it has prepared
//! ([`ServerStatements`], a bounded LRU); a statement is prepared lazily on whatever
//! connection a client gets. The message rewriting lives in `client::rewrite`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;

/// One distinct statement: its server-side name and Parse body after the name.
#[derive(Debug)]
pub struct StmtDef {
    pub id: u64,
    pub server_name: String,
    /// `query\0`, parameter count and types, as in the client's Parse.
    pub body: Bytes,
    /// The router's verdict on it, kept here so that it is classified once (on first
    /// use, and again if a reload changes `routing.write_functions`): an opaque word
    /// that only the router reads and writes (`router::request::CachedVerdict`).
    pub route: AtomicU64,
}

/// All distinct statements seen, shared by every client.
#[derive(Default)]
pub struct Registry {
    map: DashMap<Bytes, Arc<StmtDef>>,
    next_id: AtomicU64,
    next_client: AtomicU64,
}

impl Registry {
    /// The statement for a Parse body, created on first sight.
    pub fn intern(&self, body: &[u8]) -> Arc<StmtDef> {
        if let Some(d) = self.map.get(body) {
            return d.clone();
        }
        let body = Bytes::copy_from_slice(body);
        self.map
            .entry(body.clone())
            .or_insert_with(|| {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
                Arc::new(StmtDef { id, server_name: server_name(id), body, route: Default::default() })
            })
            .clone()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// A process-unique id for a client (owner tags for the unnamed statement).
    pub fn client_uid(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed) + 1
    }
}

pub fn server_name(id: u64) -> String {
    format!("pgmux_{id}")
}

/// One client's statements, by the names it gave them.
#[derive(Debug, Default)]
pub struct ClientStatements {
    pub uid: u64,
    pub named: HashMap<Box<[u8]>, Arc<StmtDef>>,
    /// Body of the client's last unnamed Parse, and how many it has sent.
    pub unnamed: Option<Bytes>,
    pub unnamed_gen: u64,
}

impl ClientStatements {
    pub fn new(uid: u64) -> Self {
        ClientStatements { uid, ..Default::default() }
    }
}

/// What to do with one future server answer to a message pgmux sent on a server
/// connection (kept in order with the connection: see `client::responses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A ParseComplete. `id`: the registry statement (None: the unnamed one);
    /// `hidden`: pgmux's own Parse, not shown to the client.
    Parse { id: Option<u64>, hidden: bool },
    /// A CloseComplete. `hidden`: pgmux's own Close (of `evicted`, when the LRU
    /// made room).
    Close { hidden: bool, evicted: Option<u64> },
    /// A ReadyForQuery (after Sync, Query or FunctionCall).
    Ready,
}

/// Default number of statements kept prepared per server connection.
pub const DEFAULT_CACHE: usize = 256;

/// Statements prepared on one server connection: an LRU of registry ids.
#[derive(Debug)]
pub struct ServerStatements {
    entries: HashMap<u64, u64>,
    tick: u64,
    cap: usize,
    /// Whose unnamed statement the server holds: (client uid, parse generation).
    pub unnamed_owner: Option<(u64, u64)>,
    /// A statement here hit "cached plan must not change result type": drop them all.
    pub stale: bool,
}

impl Default for ServerStatements {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CACHE)
    }
}

impl ServerStatements {
    pub fn with_capacity(cap: usize) -> Self {
        ServerStatements { entries: HashMap::new(), tick: 0, cap: cap.max(1), unnamed_owner: None, stale: false }
    }

    /// True if prepared here; marks it recently used.
    pub fn touch(&mut self, id: u64) -> bool {
        self.tick += 1;
        match self.entries.get_mut(&id) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records a statement as prepared; returns the one evicted to make room.
    pub fn insert(&mut self, id: u64) -> Option<u64> {
        self.tick += 1;
        let mut evicted = None;
        if self.entries.len() >= self.cap && !self.entries.contains_key(&id) {
            let (&old, _) = self.entries.iter().min_by_key(|(_, &t)| t).expect("cap >= 1");
            self.entries.remove(&old);
            evicted = Some(old);
        }
        self.entries.insert(id, self.tick);
        evicted
    }

    pub fn remove(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    /// The server forgot everything (DISCARD ALL, DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.unnamed_owner = None;
        self.stale = false;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_body_same_statement() {
        let r = Registry::default();
        let a = r.intern(b"select 1\0\0\0");
        let b = r.intern(b"select 1\0\0\0");
        let c = r.intern(b"select 2\0\0\0");
        assert!(Arc::ptr_eq(&a, &b));
        assert_ne!(a.id, c.id);
        assert_eq!(a.server_name, format!("pgmux_{}", a.id));
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut s = ServerStatements::with_capacity(2);
        assert_eq!(s.insert(1), None);
        assert_eq!(s.insert(2), None);
        assert!(s.touch(1));
        assert_eq!(s.insert(3), Some(2));
        assert!(s.touch(1) && s.touch(3) && !s.touch(2));
    }
}
