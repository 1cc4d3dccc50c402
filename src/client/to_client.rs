//! The server-to-client direction of the [`Relay`]: the server's answers read into
//! its `to_client` buffer, framed (only headers, and the few messages pgmux must
//! see whole), followed by the transaction tracker and the request clock, some
//! hidden (pgmux's own answers, a request being retried), then due to the client.

use std::convert::Infallible;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::relay::{bad_length, Clock, Next, Relay, RelayEnd, Run};
use super::responses::{drop_ignored_syncs, on_server_message, Edits};
use super::retry::Retry;
use super::txn::TxnTracker;
use crate::error::{ProtocolError, ServerFailure};
use crate::notify::Notification;
use crate::pool::Pool;
use crate::prepared::{Expect, ServerStatements};
use crate::protocol::codes;
use crate::protocol::frame::{Frame, Step, HEADER_LEN};

#[inline]
fn server_inspect(tag: u8) -> usize {
    match tag {
        codes::READY_FOR_QUERY => 1,
        // Errors (and notices) are read whole (they are small) to notice stale cached
        // plans and to be able to hide them during a retry.
        codes::ERROR_RESPONSE | codes::NOTICE_RESPONSE => 8192,
        // Small (a payload is under 8000 bytes): seen whole, to be hidden or kept.
        codes::NOTIFICATION_RESPONSE => 16 * 1024,
        _ => 0,
    }
}

impl Relay<'_> {
    /// Reads the server's bytes and scans them: what is due to the client, what is
    /// hidden, and whether a stale-plan retry is due.
    #[inline]
    pub(super) fn on_server_readable(&mut self, run: &mut Run) -> Next {
        self.server.make_room();
        match self.server.stream.read_some(&mut self.server.to_client) {
            Ok(0) => return Next::End(RelayEnd::ServerFailed(ServerFailure::Closed)),
            Ok(_) if run.clock.query_cancelled.is_some() => run.clock.last_heard = Instant::now(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Go,
            Err(e) => return Next::End(RelayEnd::ServerFailed(e.into())),
        }
        if let Err(e) = self.scan_server(run) {
            return Next::End(RelayEnd::ServerFailed(ServerFailure::Protocol(e)));
        }
        if run.retry.due() {
            tracing::info!(server = %self.server.cancel.addr, "stale cached plan: statements prepared again, request retried");
            self.counters.stale_plan_retries.fetch_add(1, Ordering::Relaxed);
            if let Err(end) = self.replay(&mut run.retry) {
                return Next::End(end);
            }
        }
        Next::Go
    }

    /// Frames the server's unscanned bytes, following the transaction and hiding
    /// pgmux's own answers; sets what is due to the client.
    #[inline]
    fn scan_server(&mut self, run: &mut Run) -> Result<(), ProtocolError> {
        let server = &mut *self.server;
        let mut scan = ServerScan {
            txn: &mut *self.txn,
            clock: &mut run.clock,
            retry: &mut run.retry,
            own_sync: &mut run.to_client.own_sync,
            edits: &mut run.to_client.edits,
            rewriting: self.statements.is_some(),
            expect: &mut server.expect,
            statements: &mut server.statements,
            pool: self.pool,
            slow: self.timeouts.slow_query,
            peer: server.cancel.addr,
            partial_hidden: false,
            keep_notes: self.statements.as_ref().is_some_and(|t| t.effects.listen),
            notes: self.notifications.as_deref_mut(),
        };
        let buf = &mut server.to_client;
        let scanned = run.to_client.framer.scan::<Infallible>(buf, self.max_message, server_inspect, |f| Ok(scan.message(f)));
        if scan.partial_hidden {
            return Err(ProtocolError::LargeDuringRetry);
        }
        let n = match scanned {
            Ok(Ok(n)) => n,
            Ok(Err(bad)) => return Err(bad_length(bad)),
            Err(never) => match never {},
        };
        let edits = &mut run.to_client.edits;
        run.to_client.due = if edits.is_empty() { n } else { edits.apply(buf, n) };
        Ok(())
    }
}

/// A NotificationResponse's body: pid, channel, payload.
fn parse_notification(body: &[u8]) -> Option<Notification> {
    let pid = i32::from_be_bytes(body.get(..4)?.try_into().ok()?);
    let (channel, rest) = crate::protocol::frame::cstr(&body[4..])?;
    let (payload, _) = crate::protocol::frame::cstr(rest)?;
    let text = |b: &[u8]| Arc::<str>::from(String::from_utf8_lossy(b));
    Some(Notification { pid, channel: text(channel), payload: text(payload) })
}

/// One scan of server bytes: what each message does to the transaction, the clock,
/// the statements' bookkeeping and a retry.
struct ServerScan<'s> {
    txn: &'s mut TxnTracker,
    clock: &'s mut Clock,
    retry: &'s mut Retry,
    own_sync: &'s mut bool,
    edits: &'s mut Edits,
    rewriting: bool,
    expect: &'s mut std::collections::VecDeque<Expect>,
    statements: &'s mut ServerStatements,
    pool: &'s Pool,
    slow: Option<std::time::Duration>,
    peer: std::net::SocketAddr,
    /// A message being hidden was too large to be seen whole.
    partial_hidden: bool,
    /// Transaction mode: NotificationResponses are hidden (the hub delivers them
    /// between transactions), and kept here while `keep_notes` (this transaction
    /// ran LISTEN or UNLISTEN: see `client::listen`).
    notes: Option<&'s mut Vec<Arc<Notification>>>,
    keep_notes: bool,
}

impl ServerScan<'_> {
    #[inline]
    fn message(&mut self, f: Frame<'_>) -> Step {
        let streaming = matches!(f, Frame::Streaming { .. });
        let (tag, at, body, ignored) = match f {
            Frame::Whole { tag, body, at } => (tag, at, body, self.txn.server_sent(tag, body)),
            Frame::Streaming { tag, at, .. } => (tag, at, &[][..], self.txn.server_sent(tag, &[])),
        };
        if tag == codes::READY_FOR_QUERY {
            self.ready_for_query();
        }
        let len = HEADER_LEN + body.len();
        if tag == codes::NOTIFICATION_RESPONSE && !streaming {
            if let Some(notes) = self.notes.as_deref_mut() {
                self.edits.hide.push((at, len));
                if self.keep_notes {
                    notes.extend(parse_notification(body).map(Arc::new));
                }
                return Step::Continue;
            }
        }
        if *self.own_sync && tag == codes::READY_FOR_QUERY && self.txn.pending == 0 {
            // The answer to pgmux's own Sync: the client did not ask.
            *self.own_sync = false;
            self.clock.queries -= 1;
            if self.rewriting {
                on_server_message(tag, at, body, self.expect, self.statements, self.edits);
            }
            self.edits.hide.push((at, len));
        } else if self.retry.hiding() {
            self.partial_hidden |= streaming;
            self.edits.hide.push((at, len));
            self.retry.server_message(tag, body, self.txn);
        } else if self.rewriting {
            let hidden = on_server_message(tag, at, body, self.expect, self.statements, self.edits);
            if ignored > 0 {
                drop_ignored_syncs(self.expect, ignored);
            }
            if !hidden && self.retry.server_message(tag, body, self.txn) {
                self.edits.hide.push((at, len));
            }
        }
        Step::Continue
    }

    /// A request answered: counted, and when nothing more is pending, timed.
    #[inline]
    fn ready_for_query(&mut self) {
        let clock = &mut *self.clock;
        clock.queries += 1;
        if self.txn.status == codes::TXN_IDLE {
            clock.transactions += 1;
        }
        if self.txn.pending != 0 {
            return;
        }
        clock.query_cancelled = None;
        let now = Instant::now();
        clock.answered_at = Some(now);
        let Some(t) = clock.request_started.take() else { return };
        let took = now.saturating_duration_since(t);
        self.pool.metrics.query_duration.record(took);
        clock.query_micros += took.as_micros() as u64;
        if self.slow.is_some_and(|s| took >= s) {
            tracing::warn!(
                duration_ms = took.as_millis() as u64,
                server = %self.peer,
                role = %self.pool.role,
                query = %clock.label.as_deref().unwrap_or_default(),
                "slow query"
            );
        }
        clock.label = None;
    }
}
