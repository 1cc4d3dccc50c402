//! A client's LISTENs in transaction mode: what the session does so that a
//! listening client holds no server connection between transactions.
//!
//! The client's LISTEN and UNLISTEN statements run on the server like any other, so
//! PostgreSQL decides what they mean (errors, rollbacks, savepoints, `UNLISTEN *`).
//! pgmux learns the outcome from the server, at the transaction's end:
//!
//! - before a transaction on the primary, a listening client's channels are LISTENed
//!   on the connection it got, outside its transaction ([`Session::listen_before`]),
//!   so its statements see them (`pg_listening_channels()`, `UNLISTEN x`);
//! - meanwhile the relay forwards no NotificationResponse (the hub delivers every
//!   notification once, between transactions); those of a transaction that ran
//!   LISTEN or UNLISTEN are kept;
//! - at the boundary ([`Session::listen_after`]) the connection's channels are read
//!   back (`SELECT pg_listening_channels()`): what the transaction committed. Channels
//!   dropped leave the hub (and the inbox). Channels added are cut over at a marker:
//!   the hub's subscription waits behind a gate until the listening connection has
//!   read the marker notification that pgmux then sends on this connection; what
//!   this connection received before the marker (kept) is the client's, what comes
//!   after is the hub's. The connection returns to the pool after `UNLISTEN *`.
//! - between transactions the inbox is written to the client ([`Session::deliver`]),
//!   in the order the server sent the notifications; an overflowed inbox or a lost
//!   listening connection ends the session with a FATAL error.
//!
//! A client that never listens pays nothing of this: one `Option` is looked at per
//! transaction, and its connection is never asked anything.

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;

use super::session::{Session, SessionEnd};
use crate::error::ClientError;
use crate::notify::{listen_sql, marker_sql, marker_token, quote_ident, Inbox, Listening, Notification, Trouble, MARKER_CHANNEL};
use crate::pool::Lease;
use crate::protocol::backend;
use crate::server::{InternalError, ServerConn};

type Notes = Vec<Arc<Notification>>;

impl Session<'_> {
    /// The client's server connection is its database's current primary (the only
    /// server where LISTEN runs: a standby refuses it).
    pub(super) fn on_primary(&self, lease: &Lease) -> bool {
        Arc::ptr_eq(lease.pool(), self.login.pools.current_primary())
    }

    /// Before a transaction: a listening client's channels LISTENed on its connection
    /// (outside its transaction). True when the connection now listens.
    pub(super) async fn listen_before(&mut self, lease: &mut Lease) -> Result<bool, ClientError> {
        let Some(l) = self.listening.as_deref().filter(|l| !l.channels.is_empty()) else { return Ok(false) };
        if !self.on_primary(lease) {
            return Ok(false);
        }
        let timeout = lease.pool().settings().connect_timeout;
        lease.conn_mut().run_checked(&listen_sql(&l.channels), timeout, crate::server::After::Idle).await?;
        Ok(true)
    }

    /// At the boundary of a transaction whose connection listens (`dirty`) or that ran
    /// LISTEN/UNLISTEN (`touched`): the client's channels as committed, taken over by
    /// the hub, and the connection listening on nothing again. `kept`: the
    /// notifications the relay kept. An error leaves the connection to be closed.
    pub(super) async fn listen_after(&mut self, lease: &mut Lease, touched: bool, kept: Notes) -> Result<(), InternalError> {
        let t = lease.pool().settings().connect_timeout;
        let conn = lease.conn_mut();
        if !touched {
            exchange(conn, "UNLISTEN *", &mut Vec::new(), None, t).await?;
            return Ok(());
        }
        let mut notes = kept;
        let (rows, _) = exchange(conn, "SELECT pg_listening_channels()", &mut notes, None, t).await?;
        let now: BTreeSet<Arc<str>> = rows.into_iter().map(Arc::from).collect();
        let before = self.listening.as_ref().map(|l| l.channels.clone()).unwrap_or_default();
        let removed: BTreeSet<Arc<str>> = before.difference(&now).cloned().collect();
        let added: BTreeSet<Arc<str>> = now.difference(&before).cloned().collect();
        if let Some(l) = self.listening.as_deref_mut().filter(|_| !removed.is_empty()) {
            l.hub.unlisten_all(l.id, &removed);
            l.inbox.purge(&removed);
            l.channels.retain(|c| !removed.contains(c));
        }
        if added.is_empty() {
            exchange(conn, "UNLISTEN *", &mut Vec::new(), None, t).await?;
            if self.listening.as_ref().is_some_and(|l| l.channels.is_empty() && !l.inbox.has_news()) {
                self.listening = None;
            }
            return Ok(());
        }
        self.listen_added(lease, added, notes).await
    }

    /// New channels: the hub's subscription behind a gate, the marker sent on this
    /// connection, and what came here before the marker merged in first.
    async fn listen_added(&mut self, lease: &mut Lease, added: BTreeSet<Arc<str>>, mut notes: Notes) -> Result<(), InternalError> {
        let t = lease.pool().settings().connect_timeout;
        let l = self.listening();
        let token = marker_token(l.id);
        let (gate, generation) = l.hub.listen_gated(&added, l.id, &l.inbox, token.clone());
        l.channels.extend(added.iter().cloned());
        let (hub, inbox) = (l.hub.clone(), l.inbox.clone());
        if tokio::time::timeout(t, hub.listened(generation)).await.is_err() {
            // The listening connection is not there: the client is told.
            inbox.missed();
        }
        let conn = lease.conn_mut();
        let marker = marker_sql(&token);
        let (_, cut) = exchange(conn, &marker, &mut notes, Some(&token), t).await?;
        notes.truncate(cut);
        exchange(conn, "UNLISTEN *", &mut Vec::new(), None, t).await?;
        if tokio::time::timeout(t, gate.passed()).await.is_err() {
            inbox.missed();
            hub.marker(&token);
        }
        notes.retain(|n| added.contains(&n.channel));
        hub.merge(&gate, &notes, &inbox);
        Ok(())
    }

    /// The client is pinned to its connection from now on (a session-only feature):
    /// its notifications come from the server there, as in session mode. The hub's
    /// subscriptions end at a marker sent on the connection: what the hub queued
    /// before it, then what the connection received (kept by the relay, and since),
    /// go to the client now; the relay forwards the rest.
    pub(super) async fn listen_pinned(&mut self, lease: &mut Lease, kept: Notes) -> Result<(), ClientError> {
        let t = lease.pool().settings().connect_timeout;
        let conn = lease.conn_mut();
        let mut notes = kept;
        let Some(l) = self.listening.take() else {
            self.send_notes(&notes).await;
            return Ok(());
        };
        let token = marker_token(l.id);
        let gate = l.hub.close_gated(&l.channels, l.id, token.clone());
        let marker = marker_sql(&token);
        let (_, cut) = exchange(conn, &marker, &mut notes, Some(&token), t).await?;
        exchange(conn, &format!("UNLISTEN {}", quote_ident(MARKER_CHANNEL)), &mut notes, None, t).await?;
        if tokio::time::timeout(t, gate.passed()).await.is_err() {
            l.inbox.missed();
        }
        l.hub.unlisten_all(l.id, &l.channels);
        // Before the marker the hub had the channels the client listened on then.
        let mut before: Notes = notes.drain(..cut).filter(|n| !l.channels.contains(&n.channel)).collect();
        let trouble = l.inbox.trouble();
        let mut all = l.inbox.drain();
        all.append(&mut before);
        all.append(&mut notes);
        match trouble {
            Trouble::None => {
                self.send_notes(&all).await;
                Ok(())
            }
            Trouble::Overflowed => Err(ClientError::NotifyOverflow(self.config.load().pool.notify_queue_size)),
            Trouble::Missed => Err(ClientError::NotifyMissed),
        }
    }

    /// Writes notifications to the client (a client gone is noticed by the relay next).
    async fn send_notes(&mut self, notes: &[Arc<Notification>]) {
        let mut out = BytesMut::new();
        for n in notes {
            backend::notification(&mut out, n.pid, &n.channel, &n.payload);
        }
        if !out.is_empty() {
            let _ = self.stream.write_all(&out).await;
        }
    }

    /// The client's place in the hub, made at its first LISTEN.
    fn listening(&mut self) -> &mut Listening {
        let (hubs, database, cap) = (self.shared.hubs, &self.login.pools.database, self.config.load().pool.notify_queue_size);
        let entry = self.client.clone();
        let id = u64::from(entry.pid as u32);
        self.listening.get_or_insert_with(|| {
            let wake = Box::new(move || entry.kill.wake());
            Box::new(Listening { hub: hubs.hub(database), inbox: Inbox::new(cap, wake), channels: BTreeSet::new(), id })
        })
    }

    /// Between transactions: writes the notifications queued for the client, in the
    /// server's order. An inbox that overflowed, or whose listening connection was
    /// lost, ends the session: what was queued and the FATAL error are written first,
    /// as far as the client takes them within [`TELL_GRACE`].
    pub(super) async fn deliver(&mut self) -> Option<SessionEnd> {
        let l = self.listening.as_deref()?;
        let trouble = l.inbox.trouble();
        let mut out = BytesMut::new();
        for n in l.inbox.drain() {
            backend::notification(&mut out, n.pid, &n.channel, &n.payload);
        }
        let inbox = l.inbox.clone();
        let end = match trouble {
            Trouble::None => self.write_watching(&out, &inbox).await.err(),
            Trouble::Overflowed => Some((Some(ClientError::NotifyOverflow(self.config.load().pool.notify_queue_size)), 0)),
            Trouble::Missed => Some((Some(ClientError::NotifyMissed), 0)),
        };
        match end? {
            (None, _) => Some(SessionEnd::ClientLeft),
            (Some(e), at) => {
                if let Some(l) = self.listening.as_deref() {
                    count_end(&l.hub, &e);
                }
                tracing::info!(client = self.client.pid, error = %e, "listening client disconnected");
                let mut rest = BytesMut::from(&out[at..]);
                backend::error(&mut rest, &e.to_pg());
                let _ = tokio::time::timeout(TELL_GRACE, self.stream.write_all(&rest)).await;
                Some(SessionEnd::Ended(e))
            }
        }
    }

    /// Writes `out` to the client, also watching the inbox: a client that stops
    /// reading cannot keep its task waiting while its inbox overflows. An error says
    /// why it stopped (None: the client is gone) and how much of `out` was written.
    async fn write_watching(&mut self, out: &[u8], inbox: &Inbox) -> Result<(), (Option<ClientError>, usize)> {
        let mut at = 0;
        loop {
            if at < out.len() || self.stream.out_pending() {
                match self.stream.try_write(&out[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Err((None, at)),
                }
            }
            if at == out.len() && !self.stream.out_pending() {
                return Ok(());
            }
            let (stream, kill, watch) = (&self.stream, &self.client.kill, &mut self.kill);
            let killed = std::future::poll_fn(|cx| {
                if stream.poll_write_ready(cx).is_ready() {
                    return std::task::Poll::Ready(false);
                }
                if watch.poll(kill, cx).is_ready() {
                    return std::task::Poll::Ready(true);
                }
                if inbox.trouble() == Trouble::Overflowed {
                    return std::task::Poll::Ready(false);
                }
                std::task::Poll::Pending
            })
            .await;
            if inbox.trouble() == Trouble::Overflowed {
                return Err((Some(ClientError::NotifyOverflow(self.config.load().pool.notify_queue_size)), at));
            }
            if killed && !self.shared.shutdown.begun() {
                return Err((Some(ClientError::Killed), at));
            }
        }
    }
}

/// How long a listening client that is to be disconnected (its inbox overflowed, or
/// the listening connection was lost) has to take what was queued and the error.
const TELL_GRACE: Duration = Duration::from_secs(10);

/// Counts a listening client disconnected for falling behind or for a lost listening
/// connection (SHOW LISTENERS, `pgmux_notify_*_total`).
fn count_end(hub: &crate::notify::Hub, e: &ClientError) {
    use std::sync::atomic::Ordering::Relaxed;
    match e {
        ClientError::NotifyOverflow(_) => hub.stats.overflows.fetch_add(1, Relaxed),
        ClientError::NotifyMissed => hub.stats.missed.fetch_add(1, Relaxed),
        _ => 0,
    };
}

/// Runs one of pgmux's own statements on a client's connection, keeping the
/// notifications that come meanwhile in `notes` (also those already buffered after
/// its ReadyForQuery). With `until`, it waits past the statement's end for that marker
/// and returns where in `notes` it came. Returns the first column of each row too.
async fn exchange(
    conn: &mut ServerConn,
    sql: &str,
    notes: &mut Notes,
    until: Option<&str>,
    t: Duration,
) -> Result<(Vec<String>, usize), InternalError> {
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out).map_err(InternalError::Lost)?;
    conn.statements.unnamed_owner = None;
    let run = async {
        conn.stream.write_all(&out).await?;
        let (mut rows, mut error, mut status, mut cut) = (Vec::new(), None, None, until.map(|_| usize::MAX));
        loop {
            let m = conn.read_message().await?;
            take(m, notes, until, &mut cut, &mut rows, &mut error, &mut status)?;
            if let (Some(s), false) = (status, cut == Some(usize::MAX)) {
                // Notifications that came with the answer are this statement's too.
                while let Some(m) = Message::parse(&mut conn.to_client)? {
                    take(m, notes, until, &mut cut, &mut rows, &mut error, &mut status)?;
                }
                return io::Result::Ok((rows, error, s, cut.unwrap_or(notes.len())));
            }
        }
    };
    let (rows, error, status, cut) = match tokio::time::timeout(t, run).await {
        Ok(r) => r?,
        Err(_) => return Err(InternalError::Lost(io::Error::new(io::ErrorKind::TimedOut, "pgmux's own statement timed out"))),
    };
    if let Some(e) = error {
        return Err(InternalError::Refused(e));
    }
    if status != crate::protocol::codes::TXN_IDLE {
        return Err(InternalError::Status(status));
    }
    Ok((rows, cut))
}

/// One message of an [`exchange`].
fn take(
    m: Message,
    notes: &mut Notes,
    until: Option<&str>,
    cut: &mut Option<usize>,
    rows: &mut Vec<String>,
    error: &mut Option<crate::error::PgError>,
    status: &mut Option<u8>,
) -> io::Result<()> {
    match m {
        Message::NotificationResponse(n) => {
            let n = crate::notify::listener::notification(&n)?;
            if &*n.channel != MARKER_CHANNEL {
                notes.push(Arc::new(n));
            } else if until.is_some_and(|tok| &*n.payload == tok) {
                *cut = Some(notes.len());
            }
        }
        Message::DataRow(row) => {
            use fallible_iterator::FallibleIterator;
            let buf = row.buffer();
            let first = row.ranges().next()?.flatten().map(|r| String::from_utf8_lossy(&buf[r]).into_owned());
            rows.extend(first);
        }
        Message::ErrorResponse(e) => *error = Some(crate::server::login::to_pg_error(e.fields())),
        Message::ReadyForQuery(b) => *status = Some(b.status()),
        _ => {}
    }
    Ok(())
}
