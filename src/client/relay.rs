//! The hot path: shuttle bytes between a client and its server connection.
//!
//! Both sockets are driven by readiness (`poll_read_ready`/`poll_write_ready` + `try_read`/
//! `try_write`) in one task, so neither direction can block the other: a client
//! writing a large pipeline while the server writes large results never deadlocks.
//! Bytes are forwarded as read, in one write per read; the [`Framer`] only looks at
//! message headers (and the status byte of ReadyForQuery) to feed the
//! [`TxnTracker`]. Row data is never decoded or copied.
//!
//! A run is a loop of small steps over explicit state, one part per direction
//! ([`ToServer`]: the client's messages, moved to the server's `to_server` buffer by
//! [`super::to_server`]; [`ToClient`]: the server's answers in its `to_client` buffer,
//! scanned by [`super::to_client`] and written to the client) and the request [`Clock`]: [`Relay::flush`]
//! writes what each socket takes, [`Relay::at_rest`] decides whether the run is over
//! when nothing is due, [`Relay::deadline`] and [`Relay::wait`] wait for the next
//! event, and each event has its handler.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::BytesMut;

use super::responses::Edits;
use super::retry::Retry;
use super::txn::TxnTracker;
use crate::clients::{Kill, KillWatch};
use crate::error::{ProtocolError, ServerFailure};
use crate::net::buffers::Buffers;
use crate::net::Stream;
use crate::pool::Pool;
use crate::prepared::{ClientStatements, Registry};
use crate::protocol::codes;
use crate::protocol::frame::{BadLength, Framer};
use crate::router::classify::ClassifyConfig;
use crate::server::{consume, ServerConn};
use crate::shutdown::Shutdown;
use crate::sql::SessionEffects;
use crate::state::Counters;

/// Size the client read buffer grows by.
pub const CLIENT_READ_BUF: usize = Buffers::Client.size();

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

/// What the relay works with: both ends and what it tells about them.
pub struct Relay<'a> {
    pub client: &'a Stream,
    /// What the client sent that is not forwarded yet.
    pub from_client: &'a mut BytesMut,
    pub client_framer: &'a mut Framer,
    pub server: &'a mut ServerConn,
    pub txn: &'a mut TxnTracker,
    /// Transaction mode: the client's statements, rewritten onto shared server names,
    /// and what its queries do to its session.
    pub statements: Option<TxnRewrite<'a>>,
    pub max_message: usize,
    pub counters: &'a Counters,
    pub pool: &'a Pool,
    pub timeouts: Timeouts,
    /// Signalled by the admin console to end this client's session now (and at a
    /// shutdown, which `stopping` tells apart), with what the client's task has seen of it.
    pub kill: (&'a Kill, &'a mut KillWatch),
    pub stopping: &'a Shutdown,
    /// On a replica: only requests the classifier calls reads are sent; the relay
    /// ends with [`RelayEnd::Reroute`] before any other.
    pub reads_only: Option<&'a ClassifyConfig>,
    /// The transaction may still move to the primary: a request that opens a named
    /// portal (a cursor, which a move would lose) inside the block ends the relay with
    /// [`RelayEnd::Reroute`] too, so that the transaction moves before it.
    pub movable: bool,
    /// Transaction mode: the server's NotificationResponses are not forwarded (a
    /// listening client gets them from the hub between transactions); those of a
    /// transaction that LISTENs are kept here (`client::listen`).
    pub notifications: Option<&'a mut Vec<std::sync::Arc<crate::notify::Notification>>>,
}

/// What transaction mode needs to rewrite a client's messages.
pub struct TxnRewrite<'a> {
    pub client: &'a mut ClientStatements,
    pub registry: &'a Registry,
    pub effects: &'a mut SessionEffects,
    pub reject_session_features: bool,
}

/// The client-to-server direction: the client's messages, moved (rewritten, vetted)
/// from its buffer to the server's `to_server` buffer, then written.
#[derive(Default)]
pub(super) struct ToServer {
    /// The client said Terminate: nothing more will come from it.
    pub(super) done: bool,
    /// Reads-only: a request that is not a read waits at the front of the client
    /// buffer; nothing more is read from the client.
    pub(super) held: bool,
    /// Bytes read from the client.
    bytes: u64,
}

/// The server-to-client direction: the server's answers, read into its `to_client`
/// buffer, scanned (some hidden), then written to the client.
#[derive(Default)]
pub(super) struct ToClient {
    pub(super) framer: Framer,
    pub(super) edits: Edits,
    /// Bytes at the front of the server's `to_client` buffer, scanned and due to the client.
    pub(super) due: usize,
    /// A Sync of pgmux's own awaits its ReadyForQuery (hidden from the client).
    pub(super) own_sync: bool,
    /// Bytes written to the client.
    bytes: u64,
}

/// The request being answered: when it began (durations, slow-query log,
/// `query_timeout`) and the figures recorded at the end of the run.
pub(super) struct Clock {
    /// When the request now being answered was sent.
    pub(super) request_started: Option<Instant>,
    /// When the running request was cancelled for `query_timeout`, and when the
    /// server last sent anything since.
    pub(super) query_cancelled: Option<Instant>,
    pub(super) last_heard: Instant,
    /// Allocated only when a timeout is due, then reset rather than rebuilt.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Text of the request being timed, for the slow-query log (kept only when it is on).
    pub(super) label: Option<String>,
    pub(super) queries: u64,
    pub(super) transactions: u64,
    pub(super) query_micros: u64,
    /// When the last request was answered (its ReadyForQuery read): the end of a
    /// run that ends at a boundary, without reading the clock again.
    pub(super) answered_at: Option<Instant>,
}

/// One run's state.
pub(super) struct Run {
    pub(super) to_server: ToServer,
    pub(super) to_client: ToClient,
    pub(super) clock: Clock,
    pub(super) retry: Retry,
}

/// Bytes due in each direction (on TLS, ciphertext rustls still holds counts too).
#[derive(Clone, Copy)]
struct Due {
    to_server: usize,
    to_client: usize,
}

impl Due {
    fn nothing(self) -> bool {
        self.to_server == 0 && self.to_client == 0
    }
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
    Writable,
}

/// What a step decided.
pub(super) enum Next {
    Go,
    Again,
    End(RelayEnd),
}

impl<'a> Relay<'a> {
    /// Runs until `hold` says stop, from `started` (a fresh clock read: the
    /// checkout's, for a transaction's first run). Returns how it ended, and when.
    /// Borrowed, not consumed: an async fn keeps its arguments for its whole life,
    /// and this state would be kept twice.
    pub async fn run(&mut self, hold: Hold, started: Instant) -> (RelayEnd, Instant) {
        let clock = Clock {
            request_started: Some(started),
            query_cancelled: None,
            last_heard: started,
            timer: None,
            label: None,
            queries: 0,
            transactions: 0,
            query_micros: 0,
            answered_at: None,
        };
        let retry = Retry::new(self.statements.is_some() && hold == Hold::UntilBoundary);
        // The client's first bytes were read before the relay began.
        let to_server = ToServer { bytes: self.from_client.len() as u64, ..ToServer::default() };
        let mut run = Run { to_server, to_client: ToClient::default(), clock, retry };
        self.server.replay.clear();
        let end = self.relay(hold, &mut run).await;
        // At a boundary the last ReadyForQuery ended the run (nothing was read since).
        let ended = match (&end, run.clock.answered_at) {
            (RelayEnd::Boundary, Some(at)) => at,
            _ => Instant::now(),
        };
        self.record(&run, ended.saturating_duration_since(started));
        (end, ended)
    }

    /// The run's figures, added to the pool's counters once.
    #[inline]
    fn record(&self, run: &Run, took: std::time::Duration) {
        let c = &self.pool.counters;
        c.bytes_in.fetch_add(run.to_server.bytes, Ordering::Relaxed);
        c.bytes_out.fetch_add(run.to_client.bytes, Ordering::Relaxed);
        c.queries.fetch_add(run.clock.queries, Ordering::Relaxed);
        c.transactions.fetch_add(run.clock.transactions, Ordering::Relaxed);
        c.query_micros.fetch_add(run.clock.query_micros, Ordering::Relaxed);
        c.xact_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    async fn relay(&mut self, hold: Hold, run: &mut Run) -> RelayEnd {
        // The client's first message(s) are already buffered.
        if let Err(end) = self.scan_client(run) {
            return end;
        }
        loop {
            let due = match self.flush(run) {
                Ok(due) => due,
                Err(end) => return end,
            };
            if due.nothing() {
                match self.at_rest(hold, run) {
                    Next::Go => {}
                    Next::Again => continue,
                    Next::End(end) => return end,
                }
            }
            let timeout = self.deadline(run, due);
            let event = self.wait(run, due, timeout).await;
            let next = match event {
                Err(e) => Next::End(RelayEnd::ServerFailed(e.into())),
                Ok(Event::Writable) => Next::Go,
                Ok(Event::Killed) => self.on_killed(),
                Ok(Event::Timeout(which)) => self.on_timeout(which, run),
                Ok(Event::ServerReadable) => self.on_server_readable(run),
                Ok(Event::ClientReadable) => self.on_client_readable(run),
            };
            if let Next::End(end) = next {
                return end;
            }
        }
    }

    /// Writes what each socket takes now; returns what is still due.
    #[inline]
    fn flush(&mut self, run: &mut Run) -> Result<Due, RelayEnd> {
        let server = &mut *self.server;
        if !server.to_server.is_empty() || server.stream.out_pending() {
            match server.stream.try_write(&server.to_server) {
                Ok(w) => consume(&mut server.to_server, w),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(RelayEnd::ServerFailed(e.into())),
            }
        }
        let out = &mut run.to_client;
        if out.due > 0 || self.client.out_pending() {
            match self.client.try_write(&server.to_client[..out.due]) {
                Ok(w) => {
                    out.bytes += w as u64;
                    consume(&mut server.to_client, w);
                    out.due -= w;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Err(RelayEnd::ClientGone),
            }
        }
        Ok(Due {
            to_server: server.to_server.len() + server.stream.out_pending() as usize,
            to_client: out.due + self.client.out_pending() as usize,
        })
    }

    /// Nothing is due either way: whether the run is over, or a Sync of pgmux's own
    /// must go first.
    #[inline]
    fn at_rest(&mut self, hold: Hold, run: &mut Run) -> Next {
        // A client gone after messages without their Sync (asyncpg's prepare
        // and close) leaves nothing to wait for: the session ends them.
        if run.to_server.done && self.txn.answered() {
            return Next::End(RelayEnd::ClientGone);
        }
        if self.txn.at_boundary() {
            match hold {
                Hold::UntilBoundary => return Next::End(RelayEnd::Boundary),
                Hold::Session if self.stopping.begun() => return Next::End(RelayEnd::Shutdown),
                Hold::Session => {}
            }
        }
        // Nothing awaited. Messages a Flush left without their Sync are ended first
        // with a Sync of pgmux's own, once their answers are in, so that they do not
        // decide where the next request runs: in an implicit transaction the server
        // is then free to go.
        if run.to_server.held && self.txn.answered() {
            if self.txn.syncable() {
                self.sync_own();
                run.to_client.own_sync = true;
                return Next::Again;
            }
            return Next::End(RelayEnd::Reroute);
        }
        Next::Go
    }

    /// The timeout due now, if any, with its timer set: a client idle inside a
    /// transaction, or a request running too long.
    #[inline]
    fn deadline(&self, run: &mut Run, due: Due) -> Option<Timeout> {
        let clock = &mut run.clock;
        let idle_in_txn = due.nothing() && self.txn.quiescent() && self.txn.status != codes::TXN_IDLE;
        let (at, which) = match (idle_in_txn, self.timeouts.idle_transaction, clock.request_started, self.timeouts.query) {
            (true, Some(t), _, _) => (Instant::now() + t, Timeout::IdleInTransaction),
            (false, _, Some(started), Some(t)) if self.txn.pending > 0 => match clock.query_cancelled {
                None => (started + t, Timeout::Query),
                // A server that neither answers the cancel nor sends anything else
                // (stopped, or cut off without a reset) is given up.
                Some(at) => (at.max(clock.last_heard) + t, Timeout::Silent),
            },
            _ => return None,
        };
        match clock.timer.as_mut() {
            Some(t) => t.as_mut().reset(at.into()),
            None => clock.timer = Some(Box::pin(tokio::time::sleep_until(at.into()))),
        }
        Some(which)
    }

    /// Waits for the next event. Polled by hand, in this order: socket readiness
    /// keeps one waker per direction and the kill signal one load, so a wait builds
    /// nothing.
    #[inline]
    fn wait<'w>(
        &'w mut self,
        run: &'w mut Run,
        due: Due,
        timeout: Option<Timeout>,
    ) -> impl std::future::Future<Output = io::Result<Event>> + use<'w, 'a> {
        use std::future::Future;
        use std::task::Poll;
        let (server, client, (kill, watch)) = (&self.server.stream, self.client, &mut self.kill);
        let read_server = run.to_client.due == 0;
        let read_client = due.to_server == 0 && !run.to_server.done && !run.to_server.held;
        let timer = &mut run.clock.timer;
        std::future::poll_fn(move |cx| {
            let ready = |p: Poll<io::Result<()>>, ev: Event| p.map(|r| r.map(|()| ev));
            if read_server {
                if let r @ Poll::Ready(_) = ready(server.poll_read_ready(cx), Event::ServerReadable) {
                    return r;
                }
            }
            if read_client {
                if let r @ Poll::Ready(_) = ready(client.poll_read_ready(cx), Event::ClientReadable) {
                    return r;
                }
            }
            if due.to_client > 0 {
                if let r @ Poll::Ready(_) = ready(client.poll_write_ready(cx), Event::Writable) {
                    return r;
                }
            }
            if due.to_server > 0 {
                if let r @ Poll::Ready(_) = ready(server.poll_write_ready(cx), Event::Writable) {
                    return r;
                }
            }
            if let (Some(which), Some(t)) = (timeout, timer.as_mut()) {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Event::Timeout(which)));
                }
            }
            watch.poll(kill, cx).map(|()| Ok(Event::Killed))
        })
    }

    /// The kill signal: a shutdown wakes every client this way (a transaction runs
    /// on; a session-mode client between transactions is let go at rest).
    #[inline]
    fn on_killed(&self) -> Next {
        if self.stopping.begun() {
            Next::Go
        } else {
            Next::End(RelayEnd::Killed)
        }
    }

    #[inline]
    fn on_timeout(&mut self, which: Timeout, run: &mut Run) -> Next {
        match which {
            Timeout::IdleInTransaction => Next::End(RelayEnd::IdleInTransaction),
            Timeout::Query => {
                // Like statement_timeout: cancel it; the server's 57014 reaches the client.
                run.clock.query_cancelled = Some(Instant::now());
                self.server.cancel_target().send_later();
                tracing::info!(server = %self.server.cancel.addr, "query_timeout: query cancelled");
                Next::Go
            }
            Timeout::Silent => {
                tracing::warn!(server = %self.server.cancel.addr, "query_timeout: no answer from the server after the cancel; connection closed");
                Next::End(RelayEnd::ServerFailed(ServerFailure::Silent))
            }
        }
    }

    /// Reads the client's bytes and moves its complete messages on.
    #[inline]
    fn on_client_readable(&mut self, run: &mut Run) -> Next {
        if self.from_client.capacity() - self.from_client.len() < 1024 {
            self.from_client.reserve(CLIENT_READ_BUF);
        }
        match self.client.read_some(self.from_client) {
            Ok(0) => return Next::End(RelayEnd::ClientGone),
            Ok(n) => {
                run.to_server.bytes += n as u64;
                if run.clock.request_started.is_none() {
                    run.clock.request_started = Some(Instant::now());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Go,
            Err(_) => return Next::End(RelayEnd::ClientGone),
        }
        match self.scan_client(run) {
            Ok(()) => Next::Go,
            Err(end) => Next::End(end),
        }
    }
}

pub(super) fn bad_length(b: BadLength) -> ProtocolError {
    ProtocolError::BadLength { tag: b.tag, len: b.len }
}
