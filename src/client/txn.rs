//! When may a server connection go back to the pool? [`TxnTracker`] follows the
//! messages in both directions and answers that, per PostgreSQL's protocol:
//!
//! - every Query, FunctionCall and Sync sent is answered by exactly one
//!   ReadyForQuery (also after an error: the server skips to the next Sync);
//! - extended-protocol messages after the last Sync (Parse/Bind/.../Flush) keep the
//!   server attached until their Sync: results may be pending behind a Flush;
//! - the transaction ends only at a ReadyForQuery with status `I`.
//!
//! COPY FROM STDIN has one twist: the server ignores Sync messages while in copy-in
//! mode, and drivers send one right after the Execute that starts the COPY, before
//! they know a COPY started (B/E/S, CopyData..., CopyDone, S). So Syncs sent after
//! the last Execute/Query and before CopyDone are counted in a window, and dropped
//! from `pending` when the CopyInResponse shows they were ignored.

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
    /// Syncs sent since the last Execute/Query and before a CopyDone/CopyFail.
    copy_window: u32,
    /// The client ended a COPY since the last Execute/Query.
    copy_ended: bool,
    /// The client sent a Describe in this transaction (it will learn result shapes).
    pub described: bool,
    /// An ErrorResponse came since the last ReadyForQuery: the server skips the
    /// client's messages up to its next Sync.
    pub failed: bool,
    /// A portal was suspended (Execute with a row limit) since the last ReadyForQuery:
    /// the client may resume it before its Sync.
    pub suspended: bool,
}

impl Default for TxnTracker {
    fn default() -> Self {
        TxnTracker {
            pending: 0,
            unsynced: false,
            status: TXN_IDLE,
            copy_in: false,
            copy_window: 0,
            copy_ended: false,
            described: false,
            failed: false,
            suspended: false,
        }
    }
}

impl TxnTracker {
    /// A message the client sent on to the server.
    #[inline]
    /// Returns false for a Sync the server will ignore (sent during COPY IN).
    pub fn client_sent(&mut self, tag: u8) -> bool {
        match tag {
            QUERY => {
                self.pending += 1;
                self.copy_window = 0;
                self.copy_ended = false;
            }
            FUNCTION_CALL => self.pending += 1,
            SYNC => {
                if self.copy_in {
                    return false;
                }
                self.pending += 1;
                self.unsynced = false;
                if !self.copy_ended {
                    self.copy_window += 1;
                }
            }
            EXECUTE => {
                self.unsynced = true;
                self.copy_window = 0;
                self.copy_ended = false;
            }
            DESCRIBE => {
                self.unsynced = true;
                self.described = true;
            }
            PARSE | BIND | CLOSE => self.unsynced = true,
            // A Flush only asks for output; alone (psycopg sends Sync, Flush) it
            // opens nothing.
            COPY_DONE | COPY_FAIL => {
                self.copy_in = false;
                self.copy_ended = true;
            }
            _ => {}
        }
        true
    }

    /// A message the server sent; `body` is its body when complete (always for Z).
    /// Returns how many earlier Syncs a CopyInResponse shows to be ignored.
    #[inline]
    pub fn server_sent(&mut self, tag: u8, body: &[u8]) -> u32 {
        match tag {
            READY_FOR_QUERY => {
                self.pending = self.pending.saturating_sub(1);
                self.status = body.first().copied().unwrap_or(TXN_IDLE);
                self.copy_in = false;
                self.failed = false;
                self.suspended = false;
                0
            }
            ERROR_RESPONSE => {
                self.failed = true;
                0
            }
            PORTAL_SUSPENDED => {
                self.suspended = true;
                0
            }
            COPY_IN_RESPONSE | COPY_BOTH_RESPONSE => {
                let ignored = self.copy_window;
                self.pending = self.pending.saturating_sub(ignored);
                self.copy_window = 0;
                self.copy_in = !self.copy_ended;
                ignored
            }
            _ => 0,
        }
    }

    /// Nothing in flight and no transaction open: the server may serve someone else.
    #[inline]
    pub fn at_boundary(&self) -> bool {
        self.pending == 0 && !self.unsynced && self.status == TXN_IDLE && !self.copy_in
    }

    /// Nothing in flight, but maybe inside a transaction block: a ROLLBACK cleans it.
    pub fn quiescent(&self) -> bool {
        self.pending == 0 && !self.unsynced && !self.copy_in
    }

    /// Every answer is in (no Sync or Query awaits one, no COPY runs), though
    /// extended-protocol messages may still wait for their Sync.
    pub fn answered(&self) -> bool {
        self.pending == 0 && !self.copy_in
    }

    /// Only extended-protocol messages without their Sync keep the server, they went
    /// well, and no portal waits to be resumed: a Sync of pgmux's own ends them with
    /// nothing lost (an implicit transaction commits what it read; a transaction
    /// block stays open). After an error the client counts on the server skipping
    /// to its own Sync, so that case is not syncable.
    pub fn syncable(&self) -> bool {
        self.answered() && self.unsynced && !self.failed && !self.suspended
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
    fn extended_copy_ignores_the_sync_sent_before_the_data() {
        let mut t = TxnTracker::default();
        for tag in [PARSE, BIND, EXECUTE, SYNC, COPY_DATA, COPY_DONE, SYNC] {
            assert!(t.client_sent(tag));
        }
        assert_eq!(t.server_sent(COPY_IN_RESPONSE, b""), 1);
        assert!(!t.copy_in, "the client already ended the copy");
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(t.at_boundary());
    }

    #[test]
    fn sync_during_copy_in_is_ignored() {
        let mut t = TxnTracker::default();
        t.client_sent(QUERY);
        assert_eq!(t.server_sent(COPY_IN_RESPONSE, b""), 0);
        assert!(!t.client_sent(SYNC));
        t.client_sent(COPY_DONE);
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(t.at_boundary());
    }

    #[test]
    fn a_flush_after_sync_opens_nothing() {
        let mut t = TxnTracker::default();
        for tag in [PARSE, BIND, EXECUTE, SYNC, FLUSH] {
            t.client_sent(tag);
        }
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(t.at_boundary());
    }

    #[test]
    fn copy_in_mode_holds_the_server_even_with_no_answer_due() {
        let mut t = TxnTracker::default();
        for tag in [BIND, EXECUTE, SYNC] {
            t.client_sent(tag);
        }
        assert_eq!(t.server_sent(COPY_IN_RESPONSE, b""), 1);
        assert_eq!(t.pending, 0);
        assert!(!t.at_boundary(), "the client still owes copy data");
        t.client_sent(COPY_DONE);
        t.client_sent(SYNC);
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(t.at_boundary());
    }

    #[test]
    fn a_prepare_before_a_flush_is_syncable_unless_it_failed() {
        let mut t = TxnTracker::default();
        for tag in [PARSE, DESCRIBE, FLUSH] {
            t.client_sent(tag);
        }
        assert!(t.answered() && t.syncable() && !t.quiescent());
        t.server_sent(ERROR_RESPONSE, b"");
        assert!(!t.syncable(), "the client counts on the server skipping to its Sync");
        t.client_sent(SYNC);
        t.server_sent(READY_FOR_QUERY, b"I");
        assert!(t.at_boundary() && !t.failed);
        for tag in [BIND, EXECUTE, FLUSH] {
            t.client_sent(tag);
        }
        t.server_sent(PORTAL_SUSPENDED, b"");
        assert!(!t.syncable(), "the client may resume the portal");
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
