//! A server connection lent to one client.

use std::sync::Arc;

use super::Pool;
use crate::server::ServerConn;

/// A checked-out connection. Dropping it without [`Lease::release`] discards the
/// connection (closes it and frees its slot): the safe default for any path that
/// does not know the connection's state.
pub struct Lease {
    pool: Arc<Pool>,
    conn: Option<ServerConn>,
}

impl Lease {
    pub(super) fn new(pool: Arc<Pool>, conn: ServerConn) -> Lease {
        Lease { pool, conn: Some(conn) }
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

    /// Returns a clean connection (idle, no transaction, nothing unread) for reuse.
    pub fn release(mut self) {
        let conn = self.conn.take().expect("lease consumed once");
        self.pool.put_back(conn);
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
