//! A pool's upkeep, off the clients' path: warming to `min_pool_size`, reaping
//! idle and old connections, closing all idle ones, what SHOW SERVERS lists, and
//! what a dropped pool gives back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{limit, Pool, Room, Slot};
use crate::server::ServerConn;

/// How long a connection stays idle before it gives its read buffer back: long enough
/// that a busy pool's connections, idle between transactions, never do.
const BUFFER_IDLE: Duration = Duration::from_secs(1);

impl Pool {
    /// Opens connections until the pool has `min_size` (called by the upkeep task),
    /// as far as the limits allow.
    pub async fn warm(self: &Arc<Self>) {
        loop {
            {
                let mut st = self.lock();
                let min = self.settings().min_size;
                if st.down.as_ref().is_some_and(|d| Instant::now() < d.retry_at) {
                    return;
                }
                if self.take_slot(&mut st, min) != Room::Taken {
                    return;
                }
            }
            let slot = Slot::new(self);
            match self.open().await {
                Ok(conn) => slot.put_back(conn),
                Err(_) => return,
            }
        }
    }

    /// Closes idle connections past `server_idle_timeout` or `server_lifetime`; the
    /// others idle for [`BUFFER_IDLE`] give their read buffers back.
    pub fn reap(&self) {
        let now = Instant::now();
        let settings = self.settings();
        let expired: Vec<Box<ServerConn>> = {
            let mut st = self.lock();
            let mut spare = st.total.saturating_sub(settings.min_size);
            let (keep, gone): (VecDeque<_>, VecDeque<_>) = st.idle.drain(..).partition(|c| {
                let old = now.duration_since(c.created) >= settings.lifetime;
                let idle = now.duration_since(c.last_used) >= settings.idle_timeout;
                // Idle ones beyond min_pool_size go; any past its lifetime goes.
                let go = old || (idle && spare > 0);
                if go && !old {
                    spare -= 1;
                }
                !go
            });
            st.idle = keep;
            st.idle.iter_mut().filter(|c| now.duration_since(c.last_used) >= BUFFER_IDLE).for_each(|c| c.release_read_buffer());
            self.give_slots(&mut st, gone.len());
            gone.into_iter().collect()
        };
        if !expired.is_empty() {
            expired.into_iter().for_each(|c| c.close());
            self.wake_limits();
        }
    }

    /// (pid, created, last used, protocol 3.2) of each idle connection, for SHOW SERVERS.
    pub fn idle_servers(&self) -> Vec<(i32, Instant, Instant, bool)> {
        self.lock()
            .idle
            .iter()
            .map(|c| (c.cancel.pid, c.created, c.last_used, matches!(c.cancel.secret, crate::server::ServerSecret::Long(_))))
            .collect()
    }

    /// Closes every idle connection (shutdown, RECONNECT).
    pub fn close_idle(&self) {
        let idle: Vec<Box<ServerConn>> = {
            let mut st = self.lock();
            let v: Vec<_> = st.idle.drain(..).collect();
            self.give_slots(&mut st, v.len());
            v
        };
        if !idle.is_empty() {
            idle.into_iter().for_each(|c| c.close());
            self.wake_limits();
        }
    }
}

impl Drop for Pool {
    /// A pool goes away with its last client (a reload dropped it from the registry):
    /// its idle connections close and give their units back.
    fn drop(&mut self) {
        // The expiry task, if any, sees the pool gone and ends.
        self.expiry.notify_one();
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let (total, flagged) = (st.total, st.flagged);
        st.idle.drain(..).for_each(|c| c.close());
        for l in &self.limits {
            l.give(total);
            if flagged {
                l.set_waiting(false);
            }
        }
        limit::wake(&self.limits);
    }
}
