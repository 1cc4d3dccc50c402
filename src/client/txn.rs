//! When may a server connection go back to the pool? [`TxnTracker`] follows the
//! messages in both directions and answers that, per PostgreSQL's protocol:
//!
//! - every Query, FunctionCall and Sync sent is answered by exactly one
//!   ReadyForQuery (also after an error: the server skips to the next Sync);
//! - extended-protocol messages after the last Sync (Parse/Bind/.../Flush) keep the
//!   server attached until their Sync: results may be pending behind a Flush;
//! - the transaction ends only at a ReadyForQuery with status `I`.
//!
//! COPY needs no special case for release (its ReadyForQuery comes after
//! CopyDone/CopyFail), only for cleanup after a client vanishes mid-COPY.

use crate::protocol::codes::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnTracker {
    /// ReadyForQuery messages still to come.
    pub pending: u32,
    /// Extended-protocol messages sent since the last Sync.
    pub unsynced: bool,
    /// Status of the last ReadyForQuery.
    pub status: u8,
    /// The server is in COPY FROM STDIN, waiting for client data.
    pub copy_in: bool,
}

impl Default for TxnTracker {
    fn default() -> Self {
        TxnTracker { pending: 0, unsynced: false, status: TXN_IDLE, copy_in: false }
    }
}

impl TxnTracker {
    /// A message the client sent on to the server.
    #[inline]
    pub fn client_sent(&mut self, tag: u8) {
        match tag {
            QUERY | FUNCTION_CALL => self.pending += 1,
            SYNC => {
                self.pending += 1;
                self.unsynced = false;
            }
            PARSE | BIND | DESCRIBE | EXECUTE | CLOSE | FLUSH => self.unsynced = true,
            COPY_DONE | COPY_FAIL => self.copy_in = false,
            _ => {}
        }
    }

    /// A message the server sent; `body` is its body when complete (always for Z).
    #[inline]
    pub fn server_sent(&mut self, tag: u8, body: &[u8]) {
        match tag {
            READY_FOR_QUERY => {
                self.pending = self.pending.saturating_sub(1);
                self.status = body.first().copied().unwrap_or(TXN_IDLE);
                self.copy_in = false;
            }
            COPY_IN_RESPONSE | COPY_BOTH_RESPONSE => self.copy_in = true,
            _ => {}
        }
    }

    /// Nothing in flight and no transaction open: the server may serve someone else.
    #[inline]
    pub fn at_boundary(&self) -> bool {
        self.pending == 0 && !self.unsynced && self.status == TXN_IDLE
    }

    /// Nothing in flight, but maybe inside a transaction block: a ROLLBACK cleans it.
    pub fn quiescent(&self) -> bool {
        self.pending == 0 && !self.unsynced && !self.copy_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_query_cycle() {
        let mut t = TxnTracker::default();
        t.client_sent(QUERY);
        assert!(!t.at_boundary());
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(t.at_boundary());
    }

    #[test]
    fn transaction_block_holds_the_server() {
        let mut t = TxnTracker::default();
        t.client_sent(QUERY);
        t.server_sent(READY_FOR_QUERY, b"T");
        assert!(!t.at_boundary());
        assert!(t.quiescent());
        t.client_sent(QUERY);
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(t.at_boundary());
    }

    #[test]
    fn pipeline_waits_for_every_sync() {
        let mut t = TxnTracker::default();
        for tag in [PARSE, BIND, EXECUTE, SYNC, BIND, EXECUTE, SYNC] {
            t.client_sent(tag);
        }
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(!t.at_boundary(), "second sync still pending");
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(t.at_boundary());
    }

    #[test]
    fn flush_without_sync_holds_the_server() {
        let mut t = TxnTracker::default();
        for tag in [PARSE, BIND, EXECUTE, FLUSH] {
            t.client_sent(tag);
        }
        assert!(!t.at_boundary());
        t.client_sent(SYNC);
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(t.at_boundary());
    }

    #[test]
    fn copy_in() {
        let mut t = TxnTracker::default();
        t.client_sent(QUERY);
        t.server_sent(COPY_IN_RESPONSE, b"");
        assert!(t.copy_in && !t.quiescent());
        t.client_sent(COPY_DATA);
        t.client_sent(COPY_DONE);
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(t.at_boundary());
    }
}
