//! The client registry: every connected client, by the cancel key pgmux gave it.
//!
//! This is the one place that issues cancel keys and resolves them. Each client gets
//! a random pid and a secret in BackendKeyData: 4 bytes for a protocol 3.0 client, 32
//! for 3.2, made by [`KeyMaker`] (they carry this instance's id, see
//! [`crate::cancel_key`]). While the client holds a server connection, its entry
//! points at that server's real key ([`CancelTarget`]). A CancelRequest (which
//! arrives on a new connection) with a matching key is sent on to that server; with
//! no server attached, nothing happens, as in PostgreSQL. A key this instance did
//! not issue is another instance's business ([`Cancel::NotMine`]).
//!
//! An entry is also the client's row in SHOW CLIENTS (who it is, what it does now)
//! and carries the [`Kill`] signal that ends its session from outside.

pub mod kill;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use dashmap::DashMap;

use crate::cancel_key::{KeyMaker, Secret};
use crate::server::CancelTarget;
pub use kill::{Kill, KillWatch};

/// What the admin console shows about a client (set once it has logged in).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The pool set's names (one copy for all its clients).
    pub user: Arc<str>,
    pub database: Arc<str>,
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
    /// The BackendKeyData pgmux gives the client (the pid is also its id in the
    /// logs; the secret is issued at the greeting, once the protocol version is known).
    pub pid: i32,
    secret: OnceLock<Secret>,
    server: Mutex<Option<Arc<CancelTarget>>>,
    pub info: OnceLock<ClientInfo>,
    state: AtomicU8,
    /// KILL_CLIENT, KILL db, and a shutdown's wake-up.
    pub kill: Kill,
}

impl ClientEntry {
    /// The client now uses this server connection (cancel requests go to it).
    pub fn attach(&self, t: Arc<CancelTarget>) {
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }

    /// The client gave its server connection back.
    pub fn detach(&self) {
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The server this client is using, if any.
    pub fn server(&self) -> Option<Arc<CancelTarget>> {
        self.server.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The secret of its BackendKeyData, once issued.
    pub fn secret(&self) -> Option<&Secret> {
        self.secret.get()
    }

    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn state(&self) -> ClientState {
        ClientState::from_u8(self.state.load(Ordering::Relaxed))
    }
}

/// Every connected client, by its pgmux pid.
pub struct ClientRegistry {
    map: DashMap<i32, Arc<ClientEntry>>,
    /// Clients connected now (in the map or about to be).
    connected: AtomicUsize,
    keys: KeyMaker,
}

/// What a CancelRequest found here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The client's query was cancelled (the request sent to its server).
    Sent,
    /// The key is this instance's, and the client runs nothing (or has left).
    Idle,
    /// No client of this instance has this key: another instance's, or nobody's.
    NotMine,
}

/// A client counted by [`ClientRegistry::arriving`], to be registered by its task.
#[must_use]
pub struct Arrival(());

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
    /// A registry issuing keys with `keys` (this instance's id inside).
    pub fn new(keys: KeyMaker) -> ClientRegistry {
        ClientRegistry { map: DashMap::new(), connected: AtomicUsize::new(0), keys }
    }

    /// Counts a client accepted but not yet registered (its task has not run yet):
    /// a drain waits for it too. Its [`Arrival`] registers it.
    pub fn arriving(&self) -> Arrival {
        self.connected.fetch_add(1, Ordering::Relaxed);
        Arrival(())
    }

    /// Counts a new client and gives it a fresh, unique pid (its secret comes at the
    /// greeting, see [`ClientRegistry::issue_secret`]).
    #[cfg(test)]
    pub fn register(&self) -> Registration<'_> {
        self.register_arrived(self.arriving())
    }

    /// Registers a client counted at its arrival: a fresh, unique pid (its secret
    /// comes at the greeting, see [`ClientRegistry::issue_secret`]).
    pub fn register_arrived(&self, _arrival: Arrival) -> Registration<'_> {
        let mut rng = rand::thread_rng();
        loop {
            let pid = KeyMaker::pid(&mut rng);
            let entry = Arc::new(ClientEntry {
                pid,
                secret: OnceLock::new(),
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

    /// Issues the client's secret: `long` (32 bytes) for a protocol 3.2 client.
    pub fn issue_secret<'e>(&self, entry: &'e ClientEntry, long: bool) -> &'e Secret {
        entry.secret.get_or_init(|| self.keys.secret(entry.pid, long, &mut rand::thread_rng()))
    }

    /// Clients connected now (logging in, or logged in).
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// The client with this id (its pgmux pid), for KILL_CLIENT.
    pub fn get(&self, pid: i32) -> Option<Arc<ClientEntry>> {
        self.map.get(&pid).map(|e| e.clone())
    }

    /// The client this key belongs to, if any (the whole secret compared in
    /// constant time).
    fn owner(&self, pid: i32, secret: &[u8]) -> Option<Arc<ClientEntry>> {
        let entry = self.map.get(&pid)?.clone();
        let issued = entry.secret()?;
        crate::auth::ct_eq(issued.as_bytes(), secret).then_some(entry)
    }

    /// The server to cancel for a client's key, if the key is right and the client busy.
    #[cfg(test)]
    pub fn resolve(&self, pid: i32, secret: &[u8]) -> Option<Arc<CancelTarget>> {
        self.owner(pid, secret)?.server()
    }

    /// Answers a CancelRequest here: cancels what the client with this key runs.
    pub async fn cancel(&self, pid: i32, secret: &[u8]) -> Cancel {
        let Some(entry) = self.owner(pid, secret) else { return Cancel::NotMine };
        let Some(target) = entry.server() else { return Cancel::Idle };
        if let Err(e) = target.send().await {
            tracing::warn!(error = %e, "forwarding cancel request failed");
        }
        Cancel::Sent
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
        let reg = ClientRegistry::new(KeyMaker::new(7, None));
        let g = reg.register();
        let pid = g.entry.pid;
        assert_eq!(reg.resolve(pid, &[0; 4]), None, "no secret issued yet: no key matches");
        let secret = reg.issue_secret(&g.entry, false).as_bytes().to_vec();
        assert_eq!(secret.len(), 4);
        assert_eq!(reg.resolve(pid, &secret), None, "idle client: nothing to cancel");
        let t = Arc::new(CancelTarget {
            addr: "127.0.0.1:5432".parse().unwrap(),
            pid: 42,
            secret: crate::server::ServerSecret::Short([0, 0, 0, 7]),
        });
        g.entry.attach(t.clone());
        assert_eq!(reg.resolve(pid, &secret), Some(t));
        let mut wrong = secret.clone();
        wrong[3] ^= 1;
        assert_eq!(reg.resolve(pid, &wrong), None);
        assert_eq!(reg.connected(), 1);
        let g2 = reg.register();
        let long = reg.issue_secret(&g2.entry, true).as_bytes().to_vec();
        assert_eq!(long.len(), 32, "a protocol 3.2 client's key");
        assert_eq!(reg.resolve(g2.entry.pid, &long[..4]), None, "a part of a long key is not the key");
        drop(g2);
        drop(g);
        assert!(reg.is_empty());
        assert_eq!(reg.connected(), 0);
    }
}
