//! LISTEN/NOTIFY in transaction mode without pinning: listening clients hold no
//! server connection between transactions; one connection of pgmux's own per
//! database listens to the union of their channels and fans notifications out.
//!
//! - [`hub`]: who listens to what, each listener's bounded inbox, and the gates that
//!   cut a new subscription over from the client's server connection to the hub.
//! - [`listener`]: the listening connection of each database (to its current
//!   primary, as the monitor user, `application_name` `pgmux-listen`).
//! - [`Hubs`]: the hubs by database, created when a client first listens there.

pub mod hub;
pub mod listener;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

pub use hub::{Gate, Hub, Inbox, Notification, Trouble};

/// The channel pgmux's marker notifications travel on (see [`hub`]). Clients may
/// listen on it too; pgmux delivers nothing of it.
pub const MARKER_CHANNEL: &str = "pgmux.marker";

/// `application_name` of the listening connections.
pub const APPLICATION_NAME: &str = "pgmux-listen";

/// Every database's hub, created at the first LISTEN there.
#[derive(Debug, Default)]
pub struct Hubs {
    map: Mutex<HashMap<String, Arc<Hub>>>,
    /// Wakes the listener's supervisor: a hub was created.
    pub created: tokio::sync::Notify,
}

impl Hubs {
    /// The hub of a configured database (created now if it has none).
    pub fn hub(&self, database: &str) -> Arc<Hub> {
        let mut m = self.map.lock().unwrap();
        if let Some(h) = m.get(database) {
            return h.clone();
        }
        let h = Arc::new(Hub::default());
        m.insert(database.to_string(), h.clone());
        drop(m);
        self.created.notify_one();
        h
    }

    /// Every hub, by database name (sorted).
    pub fn all(&self) -> Vec<(String, Arc<Hub>)> {
        let mut v: Vec<(String, Arc<Hub>)> = self.map.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// A listening client's place in its database's hub (a client's session keeps it
/// while it listens; dropped, the client listens no more).
#[derive(Debug)]
pub struct Listening {
    pub hub: Arc<Hub>,
    pub inbox: Arc<Inbox>,
    /// The channels it listens on, as its last transaction committed them.
    pub channels: BTreeSet<Arc<str>>,
    /// The client's id in the hub.
    pub id: u64,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.hub.unlisten_all(self.id, &self.channels);
    }
}

/// A channel name as an SQL identifier: double-quoted, inner quotes doubled (a name
/// as PostgreSQL stores it, so it is used exactly, case and all).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string as an SQL literal (standard-conforming: quotes doubled).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A marker token nobody else makes: this process's, this client's, this moment's.
pub fn marker_token(client: u64) -> String {
    use rand::Rng;
    format!("{:016x}-{client:x}", rand::thread_rng().gen::<u64>())
}

/// Sends the marker `token` on a client's server connection (listening for markers
/// there, so that it sees where its own stream of notifications is cut).
pub fn marker_sql(token: &str) -> String {
    format!("LISTEN {}; SELECT pg_notify({}, {})", quote_ident(MARKER_CHANNEL), quote_literal(MARKER_CHANNEL), quote_literal(token))
}

/// `LISTEN "a"; LISTEN "b"; ...` for a set of channels.
pub fn listen_sql<'a>(channels: impl IntoIterator<Item = &'a Arc<str>>) -> String {
    channels.into_iter().map(|c| format!("LISTEN {};", quote_ident(c))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("Jobs \"x\""), "\"Jobs \"\"x\"\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        let chs: Vec<Arc<str>> = vec!["a".into(), "B".into()];
        assert_eq!(listen_sql(&chs), "LISTEN \"a\";LISTEN \"B\";");
        assert_ne!(marker_token(1), marker_token(1));
    }
}
