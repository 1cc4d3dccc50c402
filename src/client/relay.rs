//! The hot path: shuttle bytes between a client and its server connection.
//!
//! Both sockets are driven by readiness (`poll_read_ready`/`poll_write_ready` + `try_read`/
//! `try_write`) in one task, so neither direction can block the other: a client
//! writing a large pipeline while the server writes large results never deadlocks.
//! Bytes are forwarded as read, in one write per read; the [`Framer`] only looks at
//! message headers (and the status byte of ReadyForQuery) to feed the
//! [`TxnTracker`]. Row data is never decoded or copied.

use std::convert::Infallible;
use std::io;

use crate::net::Stream;
use bytes::BytesMut;

use super::responses::{drop_ignored_syncs, on_server_message, Edits};
use super::retry::Retry;
use super::txn::TxnTracker;
use crate::prepared::{ClientStatements, Registry};
use std::sync::atomic::Ordering;

use crate::clients::{Kill, KillWatch};
use crate::error::{ProtocolError, ServerFailure};
use crate::pool::Pool;
use crate::protocol::codes;
use crate::protocol::frame::{BadLength, Frame, Framer, Step, HEADER_LEN};
use crate::server::{consume, ServerConn, READ_BUF};
use crate::shutdown::Shutdown;
use crate::sql::SessionEffects;
use crate::state::Counters;

/// Size the client read buffer grows by.
pub const CLIENT_READ_BUF: usize = 8 * 1024;

/// Why the relay stopped.
#[derive(Debug)]
pub enum RelayEnd {
    /// The transaction is over and every byte delivered: the server may go.
    Boundary,
    /// Session mode: shutdown was requested while the session was between transactions.
    Shutdown,
    /// The client closed or sent Terminate.
    ClientGone,
    /// The server connection broke, or sent something impossible (its last words
    /// were forwarded).
    ServerFailed(ServerFailure),
    /// The client sent something impossible.
    ClientFailed(ProtocolError),
    /// The client sat idle inside a transaction past `idle_transaction_timeout`.
    IdleInTransaction,
    /// The admin console killed the client (KILL_CLIENT, KILL db).
    Killed,
    /// On a replica: the client's next request is not a read. Everything before it
    /// is answered; it is still in the client buffer, unsent.
    Reroute,
}

/// Timeouts the relay enforces (None: off).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub idle_transaction: Option<std::time::Duration>,
    pub query: Option<std::time::Duration>,
    /// Requests slower than this are logged (slow-query log).
    pub slow_query: Option<std::time::Duration>,
}

/// Longest query text in the slow-query log.
const SLOW_QUERY_TEXT: usize = 300;

/// The text a slow-query log line shows for a request: never bind parameters, and
/// nothing of a statement that mentions a password.
pub(super) fn loggable(text: &[u8]) -> String {
    let text = &text[..text.len().min(SLOW_QUERY_TEXT)];
    if text.windows(8).any(|w| w.eq_ignore_ascii_case(b"password")) {
        return "<not shown: the statement mentions a password>".into();
    }
    String::from_utf8_lossy(text).into_owned()
}

/// When to hand control back to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Transaction mode: at the first transaction boundary.
    UntilBoundary,
    /// Session mode: only when the client leaves, or at a boundary once shutdown
    /// begins (the shutdown wakes the relay through `kill`).
    Session,
}

pub struct Relay<'a> {
    pub client: &'a Stream,
    pub cbuf: &'a mut BytesMut,
    pub cframer: &'a mut Framer,
    pub server: &'a mut ServerConn,
    pub txn: &'a mut TxnTracker,
    /// Transaction mode: the client's statements, rewritten onto shared server names,
    /// and what its queries do to its session.
    pub statements: Option<TxnRewrite<'a>>,
    pub max_message: usize,
    pub counters: &'a Counters,
    pub pool: &'a Pool,
    pub timeouts: Timeouts,
    /// Text of the request being timed, for the slow-query log (kept only when it is on).
    pub label: Option<String>,
    /// Signalled by the admin console to end this client's session now (and at a
    /// shutdown, which `stopping` tells apart), with what the client's task has seen of it.
    pub kill: (&'a Kill, &'a mut KillWatch),
    pub stopping: &'a Shutdown,
    /// On a replica: only requests the classifier calls reads are sent; the relay
    /// ends with [`RelayEnd::Reroute`] before any other.
    pub reads_only: Option<&'a crate::router::classify::ClassifyConfig>,
}

/// Figures gathered during one relay run, recorded once at its end.
#[derive(Default)]
struct Stats {
    bytes_in: u64,
    bytes_out: u64,
    queries: u64,
    transactions: u64,
    query_micros: u64,
}

/// What transaction mode needs to rewrite a client's messages.
pub struct TxnRewrite<'a> {
    pub client: &'a mut ClientStatements,
    pub registry: &'a Registry,
    pub effects: &'a mut SessionEffects,
    pub reject_session_features: bool,
}

#[derive(Debug, Clone, Copy)]
enum Timeout {
    IdleInTransaction,
    Query,
    /// The server said nothing for `query_timeout` after the cancel.
    Silent,
}

enum Event {
    Timeout(Timeout),
    Killed,
    ServerReadable,
    ClientReadable,
    ClientWritable,
    ServerWritable,
}

#[inline]
fn server_inspect(tag: u8) -> usize {
    match tag {
        codes::READY_FOR_QUERY => 1,
        // Errors (and notices) are read whole (they are small) to notice stale cached
        // plans and to be able to hide them during a retry.
        codes::ERROR_RESPONSE | codes::NOTICE_RESPONSE => 8192,
        _ => 0,
    }
}

impl Relay<'_> {
    /// Runs until `hold` says stop. Borrowed, not consumed: an async fn keeps its
    /// arguments for its whole life, and this state would be kept twice.
    pub async fn run(&mut self, hold: Hold) -> RelayEnd {
        let pool = self.pool;
        // The client's first bytes were read before the relay began.
        let mut stats = Stats { bytes_in: self.cbuf.len() as u64, ..Stats::default() };
        let started = std::time::Instant::now();
        let end = self.relay(hold, &mut stats, started).await;
        let c = &pool.counters;
        c.bytes_in.fetch_add(stats.bytes_in, Ordering::Relaxed);
        c.bytes_out.fetch_add(stats.bytes_out, Ordering::Relaxed);
        c.queries.fetch_add(stats.queries, Ordering::Relaxed);
        c.transactions.fetch_add(stats.transactions, Ordering::Relaxed);
        c.query_micros.fetch_add(stats.query_micros, Ordering::Relaxed);
        c.xact_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        end
    }

    async fn relay(&mut self, hold: Hold, stats: &mut Stats, started: std::time::Instant) -> RelayEnd {
        // When the request now being answered was sent (for the duration histogram).
        let mut request_started = Some(started);
        // When the running request was cancelled for query_timeout, and when the
        // server last sent anything.
        let mut query_cancelled: Option<std::time::Instant> = None;
        let mut last_heard = started;
        let mut sframer = Framer::default();
        let mut edits = Edits::default();
        let mut retry = Retry::new(self.statements.is_some() && matches!(hold, Hold::UntilBoundary));
        // Allocated only when a timeout is due, then reset rather than rebuilt.
        let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        self.server.replay.clear();
        // Server bytes at the front of rbuf that are scanned and due to the client.
        let mut s_out = 0usize;
        // The client's first message(s) are already buffered.
        let mut reroute = false;
        // A Sync of pgmux's own awaits its ReadyForQuery (hidden from the client).
        let mut own_sync = false;
        let mut client_done = match self.scan_client(&mut retry, &mut reroute) {
            Ok(r) => r,
            Err(e) => return e,
        };
        loop {
            // Bytes due to the server (`c_out`) and to the client (`s_out`); on TLS,
            // ciphertext rustls still holds counts as due as well.
            let mut c_out = self.server.wbuf.len();
            if c_out > 0 || self.server.stream.out_pending() {
                match self.server.stream.try_write(&self.server.wbuf) {
                    Ok(w) => {
                        consume(&mut self.server.wbuf, w);
                        c_out -= w;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return RelayEnd::ServerFailed(e.into()),
                }
            }
            if s_out > 0 || self.client.out_pending() {
                match self.client.try_write(&self.server.rbuf[..s_out]) {
                    Ok(w) => {
                        stats.bytes_out += w as u64;
                        consume(&mut self.server.rbuf, w);
                        s_out -= w;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return RelayEnd::ClientGone,
                }
            }
            let c_out = c_out + self.server.stream.out_pending() as usize;
            let s_out_due = s_out + self.client.out_pending() as usize;
            if s_out_due == 0 && c_out == 0 {
                // A client gone after messages without their Sync (asyncpg's prepare
                // and close) leaves nothing to wait for: the session ends them.
                if client_done && self.txn.answered() {
                    return RelayEnd::ClientGone;
                }
                if self.txn.at_boundary() {
                    match hold {
                        Hold::UntilBoundary => return RelayEnd::Boundary,
                        Hold::Session if self.stopping.begun() => return RelayEnd::Shutdown,
                        Hold::Session => {}
                    }
                }
                // Nothing awaited. Messages a Flush left without their Sync are ended
                // first with a Sync of pgmux's own, once their answers are in, so that
                // they do not decide where the next request runs: in an implicit
                // transaction the server is then free to go.
                if reroute && self.txn.answered() {
                    if self.txn.syncable() {
                        self.sync_own();
                        own_sync = true;
                        continue;
                    }
                    return RelayEnd::Reroute;
                }
            }
            // Timeouts: a client idle inside a transaction, or a request running too long.
            let idle_in_txn = c_out == 0 && s_out_due == 0 && self.txn.quiescent() && self.txn.status != codes::TXN_IDLE;
            let deadline = match (idle_in_txn, self.timeouts.idle_transaction, request_started, self.timeouts.query) {
                (true, Some(t), _, _) => Some((std::time::Instant::now() + t, Timeout::IdleInTransaction)),
                (false, _, Some(started), Some(t)) if self.txn.pending > 0 => match query_cancelled {
                    None => Some((started + t, Timeout::Query)),
                    // A server that neither answers the cancel nor sends anything else
                    // (stopped, or cut off without a reset) is given up.
                    Some(at) => Some((at.max(last_heard) + t, Timeout::Silent)),
                },
                _ => None,
            };
            if let Some((at, _)) = deadline {
                match timer.as_mut() {
                    Some(t) => t.as_mut().reset(at.into()),
                    None => timer = Some(Box::pin(tokio::time::sleep_until(at.into()))),
                }
            }
            // Polled by hand, in this order: socket readiness keeps one waker per
            // direction and the kill signal one load, so a wait builds nothing.
            let (server, client, (kill, watch)) = (&self.server.stream, self.client, &mut self.kill);
            let want_client = c_out == 0 && !client_done && !reroute;
            let ev = std::future::poll_fn(|cx| {
                use std::future::Future;
                use std::task::Poll;
                let ready = |p: Poll<io::Result<()>>, ev: Event| p.map(|r| r.map(|()| ev));
                if s_out == 0 {
                    if let r @ Poll::Ready(_) = ready(server.poll_read_ready(cx), Event::ServerReadable) {
                        return r;
                    }
                }
                if want_client {
                    if let r @ Poll::Ready(_) = ready(client.poll_read_ready(cx), Event::ClientReadable) {
                        return r;
                    }
                }
                if s_out_due > 0 {
                    if let r @ Poll::Ready(_) = ready(client.poll_write_ready(cx), Event::ClientWritable) {
                        return r;
                    }
                }
                if c_out > 0 {
                    if let r @ Poll::Ready(_) = ready(server.poll_write_ready(cx), Event::ServerWritable) {
                        return r;
                    }
                }
                if let (Some((_, which)), Some(t)) = (deadline, timer.as_mut()) {
                    if t.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Ok(Event::Timeout(which)));
                    }
                }
                watch.poll(kill, cx).map(|()| Ok(Event::Killed))
            })
            .await;
            match ev {
                Err(e) => return RelayEnd::ServerFailed(e.into()),
                Ok(Event::ClientWritable | Event::ServerWritable) => {}
                Ok(Event::Timeout(Timeout::IdleInTransaction)) => return RelayEnd::IdleInTransaction,
                // A shutdown wakes every client this way: a transaction runs on; a
                // session-mode client between transactions is let go above.
                Ok(Event::Killed) if self.stopping.begun() => {}
                Ok(Event::Killed) => return RelayEnd::Killed,
                Ok(Event::Timeout(Timeout::Query)) => {
                    // Like statement_timeout: cancel it; the server's 57014 reaches the client.
                    query_cancelled = Some(std::time::Instant::now());
                    self.server.cancel_target().send_later();
                    tracing::info!(server = %self.server.peer, "query_timeout: query cancelled");
                }
                Ok(Event::Timeout(Timeout::Silent)) => {
                    tracing::warn!(server = %self.server.peer, "query_timeout: no answer from the server after the cancel; connection closed");
                    return RelayEnd::ServerFailed(ServerFailure::Silent);
                }
                Ok(Event::ServerReadable) => {
                    let rbuf = &mut self.server.rbuf;
                    if rbuf.capacity() - rbuf.len() < 1024 {
                        rbuf.reserve(READ_BUF);
                    }
                    match self.server.stream.read_some(rbuf) {
                        Ok(0) => return RelayEnd::ServerFailed(ServerFailure::Closed),
                        Ok(_) if query_cancelled.is_some() => last_heard = std::time::Instant::now(),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return RelayEnd::ServerFailed(e.into()),
                    }
                    let txn = &mut *self.txn;
                    let metrics = &self.pool.metrics;
                    let slow = self.timeouts.slow_query;
                    let (peer, role) = (self.server.peer, self.pool.role);
                    let label = &mut self.label;
                    let rewriting = self.statements.is_some();
                    let (statements, expect) = (&mut self.server.statements, &mut self.server.expect);
                    let mut partial_hidden = false;
                    let scanned = sframer.scan::<Infallible>(rbuf, self.max_message, server_inspect, |f| {
                        let f_is_streaming = matches!(f, Frame::Streaming { .. });
                        let (tag, at, body, ignored) = match f {
                            Frame::Whole { tag, body, at } => (tag, at, body, txn.server_sent(tag, body)),
                            Frame::Streaming { tag, at, .. } => (tag, at, &[][..], txn.server_sent(tag, &[])),
                        };
                        if tag == codes::READY_FOR_QUERY {
                            stats.queries += 1;
                            if txn.status == codes::TXN_IDLE {
                                stats.transactions += 1;
                            }
                            if txn.pending == 0 {
                                query_cancelled = None;
                                if let Some(t) = request_started.take() {
                                    let took = t.elapsed();
                                    metrics.query_duration.record(took.as_secs_f64());
                                    stats.query_micros += took.as_micros() as u64;
                                    if slow.is_some_and(|s| took >= s) {
                                        tracing::warn!(
                                            duration_ms = took.as_millis() as u64,
                                            server = %peer,
                                            role = %role,
                                            query = %label.as_deref().unwrap_or_default(),
                                            "slow query"
                                        );
                                    }
                                    *label = None;
                                }
                            }
                        }
                        let len = HEADER_LEN + body.len();
                        if own_sync && tag == codes::READY_FOR_QUERY && txn.pending == 0 {
                            // The answer to pgmux's own Sync: the client did not ask.
                            own_sync = false;
                            stats.queries -= 1;
                            if rewriting {
                                on_server_message(tag, at, body, expect, statements, &mut edits);
                            }
                            edits.hide.push((at, len));
                            return Ok(Step::Continue);
                        }
                        if retry.hiding() {
                            if f_is_streaming {
                                partial_hidden = true;
                            }
                            edits.hide.push((at, len));
                            retry.server_message(tag, body, txn);
                        } else if rewriting {
                            let hidden = on_server_message(tag, at, body, expect, statements, &mut edits);
                            if ignored > 0 {
                                drop_ignored_syncs(expect, ignored);
                            }
                            if !hidden && retry.server_message(tag, body, txn) {
                                edits.hide.push((at, len));
                            }
                        }
                        Ok(Step::Continue)
                    });
                    if partial_hidden {
                        // Only small messages come between the error and its ReadyForQuery.
                        return RelayEnd::ServerFailed(ServerFailure::Protocol(ProtocolError::LargeDuringRetry));
                    }
                    match scanned {
                        Ok(Ok(n)) if edits.is_empty() => s_out = n,
                        Ok(Ok(n)) => s_out = edits.apply(rbuf, n),
                        Ok(Err(bad)) => return RelayEnd::ServerFailed(ServerFailure::Protocol(bad_length(bad))),
                        Err(never) => match never {},
                    }
                    if retry.due() {
                        tracing::info!(server = %self.server.peer, "stale cached plan: statements prepared again, request retried");
                        self.counters.stale_plan_retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Err(e) = self.replay(&mut retry) {
                            return e;
                        }
                    }
                }
                Ok(Event::ClientReadable) => {
                    if self.cbuf.capacity() - self.cbuf.len() < 1024 {
                        self.cbuf.reserve(CLIENT_READ_BUF);
                    }
                    match self.client.read_some(self.cbuf) {
                        Ok(0) => return RelayEnd::ClientGone,
                        Ok(n) => {
                            stats.bytes_in += n as u64;
                            if request_started.is_none() {
                                request_started = Some(std::time::Instant::now());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(_) => return RelayEnd::ClientGone,
                    }
                    match self.scan_client(&mut retry, &mut reroute) {
                        Ok(done) => client_done = done,
                        Err(e) => return e,
                    }
                }
            }
        }
    }
}

pub(super) fn bad_length(b: BadLength) -> ProtocolError {
    ProtocolError::BadLength { tag: b.tag, len: b.len }
}
