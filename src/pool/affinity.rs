//! Worker affinity (`workers: N`, see [`crate::worker`]): which idle connection a
//! client gets, and which waiter a returned connection goes to, so that a
//! connection stays with the worker thread whose reactor watches its socket
//! unless that would keep a client waiting much longer than FIFO order would.
//! With one worker both are the plain LIFO idle list and FIFO queue.

use std::time::Duration;

use super::wait::Queued;
use super::State;
use crate::server::ServerConn;

/// How much longer than the longest waiter another may have waited and still be
/// handed a connection first because it is of the same worker thread (whose I/O
/// then wakes no other thread): the most a client is passed over for it.
pub(super) const AFFINITY_SLACK: Duration = Duration::from_millis(20);

impl State {
    /// The most recently used idle connection of worker `me`, else the most recently
    /// used of all.
    pub(super) fn pop_idle(&mut self, me: u16) -> Option<Box<ServerConn>> {
        if self.idle.back()?.home == me {
            return self.idle.pop_back();
        }
        match self.idle.iter().rposition(|c| c.home == me) {
            Some(i) => self.idle.remove(i),
            None => self.idle.pop_back(),
        }
    }

    /// Who a connection of worker `home` goes to: the longest waiter of that worker
    /// if it began waiting within [`AFFINITY_SLACK`] of the longest waiter of all,
    /// else the longest waiter.
    pub(super) fn next_waiter(&mut self, home: u16) -> Option<Queued> {
        let first = self.waiters.front()?;
        if first.worker == home {
            return self.waiters.pop_front();
        }
        let first = first.since;
        let i = self.waiters.iter().take_while(|q| q.since <= first + AFFINITY_SLACK).position(|q| q.worker == home);
        self.waiters.remove(i.unwrap_or(0))
    }
}
