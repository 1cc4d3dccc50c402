//! The client registry: every connected client, by the cancel key pgmux gave it.
//!
//! This is the one place that issues cancel keys and resolves them. Each client gets
//! a random (pid, secret) in BackendKeyData. While the client holds a server
//! connection, its entry points at that server's real key ([`CancelTarget`]). A
//! CancelRequest (which arrives on a new connection) with a matching key is sent on
//! to that server; with no server attached, nothing happens, as in PostgreSQL.
//!
//! An entry is also the client's row in SHOW CLIENTS (who it is, what it does now)
//! and carries the [`Kill`] signal that ends its session from outside.

pub mod kill;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use dashmap::DashMap;
use rand::Rng;

use crate::server::CancelTarget;
pub use kill::{Kill, KillWatch};

/// What the admin console shows about a client (set once it has logged in).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user: String,
    pub database: String,
    pub addr: SocketAddr,
    pub connected: std::time::SystemTime,
    pub application_name: String,
}

/// What a client is doing, for SHOW CLIENTS and SHOW POOLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    Login = 0,
    Idle = 1,
    Waiting = 2,
    Active = 3,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Login => "login",
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
            ClientState::Active => "active",
        }
    }

    fn from_u8(v: u8) -> ClientState {
        match v {
            1 => ClientState::Idle,
            2 => ClientState::Waiting,
            3 => ClientState::Active,
            _ => ClientState::Login,
        }
    }
}

/// One connected client: its cancel key, the server it uses now, its row in SHOW CLIENTS.
#[derive(Debug)]
pub struct ClientEntry {
    /// The BackendKeyData pgmux gave the client (the pid is also its id in the logs).
    pub pid: i32,
    pub secret: i32,
    server: Mutex<Option<CancelTarget>>,
    pub info: OnceLock<ClientInfo>,
    state: AtomicU8,
    /// KILL_CLIENT, KILL db, and a shutdown's wake-up.
    pub kill: Kill,
}

impl ClientEntry {
    /// The client now uses this server connection (cancel requests go to it).
    pub fn attach(&self, t: CancelTarget) {
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }

    /// The client gave its server connection back.
    pub fn detach(&self) {
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The server this client is using, if any.
    pub fn server(&self) -> Option<CancelTarget> {
        *self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }
}

/// Every connected client, by its pgmux pid.
#[derive(Default)]
pub struct ClientRegistry {
    map: DashMap<i32, Arc<ClientEntry>>,
    /// Clients connected now (in the map or about to be).
    connected: AtomicUsize,
}

/// A client's place in the registry: counted and findable by its key until dropped.
pub struct Registration<'a> {
    registry: &'a ClientRegistry,
    pub entry: Arc<ClientEntry>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.map.remove(&self.entry.pid);
        self.registry.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientRegistry {
    /// Counts a new client and issues it a fresh, unique cancel key.
    pub fn register(&self) -> Registration<'_> {
        self.connected.fetch_add(1, Ordering::Relaxed);
        let mut rng = rand::thread_rng();
        loop {
            let pid = rng.gen_range(1..i32::MAX);
            let entry = Arc::new(ClientEntry {
                pid,
                secret: rng.gen(),
                server: Mutex::new(None),
                info: OnceLock::new(),
                state: AtomicU8::new(ClientState::Login as u8),
                kill: Kill::default(),
            });
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.map.entry(pid) {
                v.insert(entry.clone());
                return Registration { registry: self, entry };
            }
        }
    }

    /// Clients connected now (logging in, or logged in).
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// The client with this id (its pgmux pid), for KILL_CLIENT.
    pub fn get(&self, pid: i32) -> Option<Arc<ClientEntry>> {
        self.map.get(&pid).map(|e| e.clone())
    }

    /// The server to cancel for a client's key, if the key is right and the client busy.
    pub fn resolve(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let entry = self.map.get(&pid)?.clone();
        if !crate::auth::ct_eq(&entry.secret.to_be_bytes(), secret) {
            return None;
        }
        entry.server()
    }

    /// Answers a CancelRequest: cancels what the client with this key runs, if anything.
    pub async fn cancel(&self, pid: i32, secret: &[u8]) {
        if let Some(target) = self.resolve(pid, secret) {
            if let Err(e) = target.send().await {
                tracing::warn!(error = %e, "forwarding cancel request failed");
            }
        }
    }

    /// Every connected client (for the admin console).
    pub fn entries(&self) -> Vec<Arc<ClientEntry>> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }

    /// Fires the kill signal of every client `which` selects.
    pub fn kill(&self, which: impl Fn(&ClientEntry) -> bool) {
        for e in self.map.iter() {
            if which(e.value()) {
                e.value().kill.fire();
            }
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_needs_right_secret_and_busy_client() {
        let reg = ClientRegistry::default();
        let g = reg.register();
        let (pid, secret) = (g.entry.pid, g.entry.secret);
        assert_eq!(reg.resolve(pid, &secret.to_be_bytes()), None, "idle client: nothing to cancel");
        let t = CancelTarget { addr: "127.0.0.1:5432".parse().unwrap(), pid: 42, secret: 7 };
        g.entry.attach(t);
        assert_eq!(reg.resolve(pid, &secret.to_be_bytes()), Some(t));
        assert_eq!(reg.resolve(pid, &(secret ^ 1).to_be_bytes()), None);
        assert_eq!(reg.connected(), 1);
        drop(g);
        assert!(reg.is_empty());
        assert_eq!(reg.connected(), 0);
    }
}
