//! A server connection lent to one client, and the slot of one being opened.

use std::sync::Arc;
use std::time::Instant;

use super::Pool;
use crate::server::ServerConn;

/// A checked-out connection. Dropping it without [`Lease::release`] discards the
/// connection (closes it and frees its slot): the safe default for any path that
/// does not know the connection's state.
pub struct Lease {
    pool: Arc<Pool>,
    conn: Option<Box<ServerConn>>,
    /// When it was lent: the clock read of the checkout, reused by the relay as the
    /// start of its run (one clock read fewer per transaction).
    at: Instant,
}

impl Lease {
    /// Lends `conn` to a client of worker thread `me`, its socket moved there if
    /// another worker opened it.
    pub(super) fn new(pool: Arc<Pool>, mut conn: Box<ServerConn>, at: Instant, me: u16) -> Lease {
        conn.adopt(me);
        Lease { pool, conn: Some(conn), at }
    }

    /// When the connection was lent.
    pub fn lent_at(&self) -> Instant {
        self.at
    }

    pub fn conn(&self) -> &ServerConn {
        self.conn.as_ref().expect("lease holds a connection until consumed")
    }

    pub fn conn_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().expect("lease holds a connection until consumed")
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The pool and the connection at once (the relay uses both).
    pub fn parts(&mut self) -> (&Pool, &mut ServerConn) {
        (&self.pool, self.conn.as_mut().expect("lease holds a connection until consumed"))
    }

    /// Returns a clean connection (idle, no transaction, nothing unread) for reuse.
    pub fn release(self) {
        self.release_at(Instant::now());
    }

    /// [`Lease::release`] at `now`, a clock read the caller has just made.
    pub fn release_at(mut self, now: Instant) {
        let conn = self.conn.take().expect("lease consumed once");
        self.pool.put_back(conn, now);
    }

    /// Closes the connection and frees its slot.
    pub fn discard(mut self) {
        self.close_now();
    }

    fn close_now(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close();
            self.pool.forget_one();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.close_now();
    }
}

/// A slot counted in the pool's `total` (and its limits) for a connection being
/// opened. Dropped unfilled (login failed, or the client's task went away during it),
/// it frees the slot.
pub(super) struct Slot<'a> {
    pool: &'a Arc<Pool>,
    armed: bool,
}

impl<'a> Slot<'a> {
    pub(super) fn new(pool: &'a Arc<Pool>) -> Slot<'a> {
        Slot { pool, armed: true }
    }

    /// The connection opened in this slot, lent out.
    pub(super) fn lend(mut self, conn: Box<ServerConn>) -> Lease {
        self.armed = false;
        Lease::new(self.pool.clone(), conn, Instant::now(), crate::worker::id())
    }

    /// The connection opened in this slot, put in the pool.
    pub(super) fn put_back(mut self, conn: Box<ServerConn>) {
        self.armed = false;
        self.pool.put_back(conn, Instant::now());
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.forget_one();
        }
    }
}
