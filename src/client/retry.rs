//! One transparent retry after "cached plan must not change result type".
//!
//! After `ALTER TABLE` changes the columns under a prepared `SELECT *`, PostgreSQL
//! refuses to run the old statement. pgmux shares statements between clients, so a
//! client can meet a statement another client prepared before the migration. If the
//! refusal is the very first thing the server says in the transaction, about the only
//! request in flight, nothing has run and nothing has reached the client: pgmux
//! hides the error, drops the connection's statements (`DEALLOCATE ALL`) and sends
//! the request again, prepared afresh.
//!
//! Only when the request carries a Describe: then the client reads the new row
//! shape from the answer. A request without one (Bind/Execute/Sync of a cached
//! statement) relies on the row description the client cached, and silently sending
//! it rows of another shape is exactly what PostgreSQL's error prevents: that client
//! gets the error (its driver re-prepares, as it would on a direct connection, and
//! the re-prepare really re-prepares). Either way nobody needs to RECONNECT. The request bytes are kept only while a retry is still possible,
//! in a buffer the server connection reuses.

use crate::client::responses::is_stale_plan;
use crate::client::txn::TxnTracker;
use crate::protocol::codes;

/// Largest request kept for a retry.
const MAX_REPLAY: usize = 64 * 1024;

#[derive(Debug)]
enum Phase {
    /// The first answer has not come yet: a retry is still possible.
    Open,
    /// The stale-plan error came: hide everything up to its ReadyForQuery.
    HidingError,
    /// The error's ReadyForQuery came: the caller must replay now.
    Due,
    /// Replayed: hide the answer to DEALLOCATE ALL, then show everything.
    HidingReset,
    Closed,
}

#[derive(Debug)]
pub struct Retry {
    phase: Phase,
}

impl Retry {
    pub fn new(enabled: bool) -> Retry {
        Retry { phase: if enabled { Phase::Open } else { Phase::Closed } }
    }

    /// Keeps consumed client bytes while a retry is possible.
    pub fn keep(&mut self, replay: &mut bytes::BytesMut, bytes: &[u8]) {
        if matches!(self.phase, Phase::Open) {
            if replay.len() + bytes.len() > MAX_REPLAY {
                self.phase = Phase::Closed;
                replay.clear();
            } else {
                replay.extend_from_slice(bytes);
            }
        }
    }

    pub fn hiding(&self) -> bool {
        matches!(self.phase, Phase::HidingError | Phase::HidingReset)
    }

    pub fn due(&self) -> bool {
        matches!(self.phase, Phase::Due)
    }

    pub fn replaying(&mut self) {
        self.phase = Phase::HidingReset;
    }

    /// Sees a server message the client would be shown (or, while hiding, one it
    /// will not). Returns true if this message starts a retry (hide it).
    pub fn server_message(&mut self, tag: u8, body: &[u8], txn: &TxnTracker) -> bool {
        match self.phase {
            Phase::Open => {
                if tag == codes::ERROR_RESPONSE && txn.pending == 1 && !txn.unsynced && txn.described && is_stale_plan(body) {
                    self.phase = Phase::HidingError;
                    return true;
                }
                if !matches!(tag, codes::NOTICE_RESPONSE | codes::PARAMETER_STATUS) {
                    self.phase = Phase::Closed;
                }
                false
            }
            Phase::HidingError if tag == codes::READY_FOR_QUERY => {
                self.phase = Phase::Due;
                false
            }
            Phase::HidingReset if tag == codes::READY_FOR_QUERY => {
                self.phase = Phase::Closed;
                false
            }
            _ => false,
        }
    }
}
