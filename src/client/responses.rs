//! Server answers on their way to the client, matched against what pgmux sent.
//!
//! Every ParseComplete, CloseComplete and ReadyForQuery answers one [`Expect`] queued
//! by `client::rewrite`, in order. An ErrorResponse in the extended protocol makes
//! the server skip to the next Sync, so the expectations up to it are dropped, and
//! the statements they would have prepared are recorded as not prepared.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::prepared::{Expect, ServerStatements};
use crate::protocol::codes::*;

const PARSE_COMPLETE: u8 = b'1';
const CLOSE_COMPLETE: u8 = b'3';

/// Changes to make to the scanned server bytes before they go to the client.
#[derive(Debug, Default)]
pub struct Edits {
    /// (offset, length) of messages to remove: pgmux's own Parse/Close answers, and
    /// the answer to a request that is being retried.
    pub hide: Vec<(usize, usize)>,
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.hide.is_empty()
    }

    /// Applies the edits to `buf[..len]`; returns the new length of that prefix.
    pub fn apply(&mut self, buf: &mut BytesMut, len: usize) -> usize {
        let mut len = len;
        for &(at, n) in self.hide.iter().rev() {
            buf.copy_within(at + n.., at);
            buf.truncate(buf.len() - n);
            len -= n;
        }
        self.hide.clear();
        len
    }
}

/// Handles one server message (header at `at`) against the expectations; returns
/// true if it is to be hidden from the client.
#[inline]
pub fn on_server_message(
    tag: u8,
    at: usize,
    body: &[u8],
    expect: &mut VecDeque<Expect>,
    server: &mut ServerStatements,
    edits: &mut Edits,
) -> bool {
    match tag {
        PARSE_COMPLETE | CLOSE_COMPLETE => match expect.pop_front() {
            Some(Expect::Parse { hidden, .. } | Expect::Close { hidden, .. }) => {
                if hidden {
                    edits.hide.push((at, 5));
                }
                return hidden;
            }
            Some(Expect::Ready) => expect.push_front(Expect::Ready),
            None => {}
        },
        ERROR_RESPONSE => {
            if is_stale_plan(body) {
                // A table changed under a prepared statement: every statement here
                // may be stale; they are dropped at the end of the transaction.
                server.stale = true;
            }
            // The server skips everything up to the next Sync.
            while let Some(e) = expect.front().copied() {
                match e {
                    Expect::Ready => break,
                    Expect::Parse { id: Some(id), .. } => server.remove(id),
                    Expect::Parse { id: None, .. } => server.unnamed_owner = None,
                    Expect::Close { evicted: Some(id), .. } => {
                        // Not closed after all: still prepared there.
                        let _ = server.insert(id);
                    }
                    Expect::Close { .. } => {}
                }
                expect.pop_front();
            }
        }
        READY_FOR_QUERY if expect.front() == Some(&Expect::Ready) => {
            expect.pop_front();
        }
        _ => {}
    }
    false
}

/// The error PostgreSQL raises when a prepared statement's result columns changed
/// (`ALTER TABLE` under a `SELECT *`): SQLSTATE 0A000, "cached plan must not change
/// result type".
pub fn is_stale_plan(body: &[u8]) -> bool {
    let has = |field: &[u8]| body.windows(field.len()).any(|w| w == field);
    has(b"C0A000\0") && has(b"cached plan must not change result type")
}

/// A CopyInResponse showed that the next `ignored` Syncs get no answer.
pub fn drop_ignored_syncs(expect: &mut VecDeque<Expect>, mut ignored: u32) {
    let mut i = 0;
    while ignored > 0 && i < expect.len() {
        if expect[i] == Expect::Ready {
            expect.remove(i);
            ignored -= 1;
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_pgmux_own_answers() {
        let mut buf = BytesMut::from(&b"1\0\0\0\x043\0\0\0\x042\0\0\0\x04Z\0\0\0\x05I"[..]);
        let mut expect: VecDeque<Expect> =
            [Expect::Parse { id: Some(1), hidden: true }, Expect::Close { hidden: false, evicted: None }, Expect::Ready].into();
        let mut server = ServerStatements::default();
        let mut edits = Edits::default();
        for (tag, at) in [(b'1', 0), (b'3', 5), (b'2', 10), (b'Z', 15)] {
            on_server_message(tag, at, b"", &mut expect, &mut server, &mut edits);
        }
        let len = edits.apply(&mut buf, 21);
        assert_eq!(len, 16);
        assert_eq!(&buf[..], b"3\0\0\0\x042\0\0\0\x04Z\0\0\0\x05I");
        assert!(expect.is_empty());
    }

    #[test]
    fn error_drops_expectations_until_sync() {
        let mut server = ServerStatements::default();
        server.insert(7);
        let mut expect: VecDeque<Expect> =
            [Expect::Parse { id: Some(7), hidden: true }, Expect::Close { hidden: true, evicted: Some(3) }, Expect::Ready, Expect::Ready]
                .into();
        let mut edits = Edits::default();
        on_server_message(b'E', 0, b"SERROR\0C0A000\0Mcached plan must not change result type\0\0", &mut expect, &mut server, &mut edits);
        assert!(server.stale);
        assert_eq!(expect.len(), 2);
        assert!(!server.touch(7), "the failed Parse did not prepare it");
        assert!(server.touch(3), "the skipped Close did not close it");
    }
}
