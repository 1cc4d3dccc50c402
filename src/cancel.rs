//! Cancel keys: pgmux's own per client, mapped to the server running its query.
//!
//! Each client gets a random (pid, secret) from pgmux in BackendKeyData. While the
//! client holds a server connection, its entry points at that server's real key.
//! A CancelRequest (which arrives on a new connection) with a matching key is sent
//! on to that server; with no server attached, nothing happens, as in PostgreSQL.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The real key of the server connection a client is using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

/// What the admin console shows about a client (set once it has logged in).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user: String,
    pub database: String,
    pub addr: SocketAddr,
    pub connected: std::time::SystemTime,
    pub application_name: String,
}

/// A client's state, for SHOW CLIENTS and SHOW POOLS.
pub mod state {
    pub const LOGIN: u8 = 0;
    pub const IDLE: u8 = 1;
    pub const WAITING: u8 = 2;
    pub const ACTIVE: u8 = 3;
}

/// One client's cancel entry, which is also its row in SHOW CLIENTS.
#[derive(Debug)]
pub struct CancelEntry {
    pub pid: i32,
    pub secret: i32,
    target: Mutex<Option<CancelTarget>>,
    pub info: std::sync::OnceLock<ClientInfo>,
    pub state: std::sync::atomic::AtomicU8,
    /// KILL_CLIENT, KILL db, and a shutdown's wake-up.
    pub kill: crate::kill::Kill,
}

impl CancelEntry {
    pub fn attach(&self, t: CancelTarget) {
        *self.target.lock().unwrap() = Some(t);
    }
    pub fn detach(&self) {
        *self.target.lock().unwrap() = None;
    }

    /// The server this client is using, if any.
    pub fn target(&self) -> Option<CancelTarget> {
        *self.target.lock().unwrap()
    }

    pub fn set_state(&self, s: u8) {
        self.state.store(s, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct CancelRegistry {
    map: DashMap<i32, Arc<CancelEntry>>,
}

/// Removes the entry when the client goes away.
pub struct CancelGuard<'a> {
    registry: &'a CancelRegistry,
    pub entry: Arc<CancelEntry>,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        self.registry.map.remove(&self.entry.pid);
    }
}

impl CancelRegistry {
    /// Issues a fresh, unique key for a client.
    pub fn register(&self) -> CancelGuard<'_> {
        let mut rng = rand::thread_rng();
        loop {
            let pid = rng.gen_range(1..i32::MAX);
            let entry = Arc::new(CancelEntry {
                pid,
                secret: rng.gen(),
                target: Mutex::new(None),
                info: std::sync::OnceLock::new(),
                state: std::sync::atomic::AtomicU8::new(state::LOGIN),
                kill: Default::default(),
            });
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.map.entry(pid) {
                v.insert(entry.clone());
                return CancelGuard { registry: self, entry };
            }
        }
    }

    /// The client with this id (its pgmux pid), for KILL_CLIENT.
    pub fn get(&self, pid: i32) -> Option<Arc<CancelEntry>> {
        self.map.get(&pid).map(|e| e.clone())
    }

    /// The server to cancel for a client's key, if the key is right and the client busy.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let entry = self.map.get(&pid)?.clone();
        if !crate::auth::ct_eq(&entry.secret.to_be_bytes(), secret) {
            return None;
        }
        let t = *entry.target.lock().unwrap();
        t
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every connected client (for the admin console).
    pub fn entries(&self) -> Vec<Arc<CancelEntry>> {
        self.map.iter().map(|e| e.value().clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Sends a CancelRequest to a server (a new connection, as the protocol requires).
pub async fn send_cancel(t: CancelTarget) -> std::io::Result<()> {
    let mut pkt = [0u8; 16];
    pkt[..4].copy_from_slice(&16i32.to_be_bytes());
    pkt[4..8].copy_from_slice(&crate::protocol::startup::CANCEL_REQUEST_CODE.to_be_bytes());
    pkt[8..12].copy_from_slice(&t.pid.to_be_bytes());
    pkt[12..].copy_from_slice(&t.secret.to_be_bytes());
    let mut s = tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(t.addr)).await??;
    s.write_all(&pkt).await?;
    s.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_needs_right_secret_and_busy_client() {
        let reg = CancelRegistry::default();
        let g = reg.register();
        let (pid, secret) = (g.entry.pid, g.entry.secret);
        assert_eq!(reg.lookup(pid, &secret.to_be_bytes()), None, "idle client: nothing to cancel");
        let t = CancelTarget { addr: "127.0.0.1:5432".parse().unwrap(), pid: 42, secret: 7 };
        g.entry.attach(t);
        assert_eq!(reg.lookup(pid, &secret.to_be_bytes()), Some(t));
        assert_eq!(reg.lookup(pid, &(secret ^ 1).to_be_bytes()), None);
        drop(g);
        assert!(reg.is_empty());
    }
}
