//! A logged-in client between transactions.
//!
//! The session waits (holding no buffers and no server) until the client sends
//! something ([`Session::between_transactions`]: where anything delivered to an idle
//! client belongs), then runs the request's transaction ([`super::transaction`]:
//! a server connection, its settings in line with the client's, the relay until the
//! boundary, the connection given back). In session mode the connection stays with
//! the client until it leaves. Whatever way a client leaves, the connection is
//! returned clean (rolled back, reset) or closed.

use std::sync::Arc;

use bytes::BytesMut;

use super::login::LoggedIn;
use super::relay::CLIENT_READ_BUF;
use super::route::RouteState;
use crate::clients::{ClientEntry, ClientState, KillWatch};
use crate::config::PoolMode;
use crate::error::{ClientError, PgError, ProtocolError};
use crate::net::buffers::Buffers;
use crate::net::Stream;
use crate::pool::{Lease, Pool};
use crate::prepared::{ClientStatements, Registry};
use crate::protocol::backend;
use crate::protocol::codes;
use crate::protocol::frame::{Framer, Step};
use crate::shutdown::Shutdown;
use crate::state::{ConfigCache, Counters, Pause, State};

/// What a session reaches of the shared state besides the configuration (as
/// mini-redis's `Handler` gets only its db, its connection and the shutdown signal).
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    /// Every client's named statements (transaction mode).
    pub statements: &'a Registry,
    pub counters: &'a Counters,
    /// PAUSE: no transaction starts in a paused database.
    pub pause: &'a Pause,
    pub shutdown: &'a Shutdown,
    /// Each database's listening clients (transaction mode).
    pub hubs: &'a crate::notify::Hubs,
}

impl<'a> Shared<'a> {
    pub fn of(state: &'a State) -> Shared<'a> {
        Shared {
            statements: &state.statements,
            counters: &state.counters,
            pause: &state.pause,
            shutdown: &state.shutdown,
            hubs: &state.notify,
        }
    }
}

pub struct Session<'a> {
    pub shared: Shared<'a>,
    /// The configuration, looked at once per transaction.
    pub config: ConfigCache<'a>,
    pub stream: Stream,
    pub login: LoggedIn,
    /// Its entry in the client registry (cancel key, state, kill signal).
    pub client: Arc<ClientEntry>,
    /// What the client sent and pgmux has not forwarded yet (a buffer is held only
    /// while the client is active).
    pub from_client: BytesMut,
    pub framer: Framer,
    pub statements: ClientStatements,
    pub route: RouteState,
    /// What this task has seen of its [`crate::clients::Kill`] signal.
    pub kill: KillWatch,
    /// It logged in once a shutdown had begun (the listener's last accepts, or a
    /// login under way) and has not run a transaction yet: it may run one.
    pub late: bool,
    /// Transaction mode: its channels and inbox, once it listens ([`super::listen`]).
    pub listening: Option<Box<crate::notify::Listening>>,
}

/// How long a client that logged in as a shutdown began may take to send its first
/// request (it is served, then told 57P01 at its boundary, as idle clients are).
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What ended an idle wait.
enum Wake {
    /// The client sent something (`false`: its socket failed).
    Readable(bool),
    IdleTimeout,
    Shutdown,
    Killed,
    /// Notifications (or trouble) for a listening client.
    Notified,
}

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The client closed its connection, or said Terminate.
    ClientLeft,
    /// The session was ended on this error (the client was told, where it could be).
    Ended(ClientError),
}

impl Session<'_> {
    pub async fn run(&mut self) -> SessionEnd {
        loop {
            // A listening client's notifications, between its transactions.
            if self.listening.as_ref().is_some_and(|l| l.inbox.has_news()) {
                if let Some(end) = Box::pin(self.deliver()).await {
                    return end;
                }
            }
            // Idle: no server, no buffer unless the client pipelined ahead.
            if self.from_client.len() < 5 {
                if let Some(end) = self.between_transactions().await {
                    return end;
                }
                continue;
            }
            if self.from_client[0] == codes::TERMINATE {
                return SessionEnd::ClientLeft;
            }
            // Boxed: an idle client's task keeps only the idle wait; the state of a
            // transaction (routing, checkout, relay) lives while it runs.
            if let Some(end) = Box::pin(self.transaction()).await {
                return end;
            }
            self.late = false;
            self.client.set_state(ClientState::Idle);
            if self.from_client.is_empty() {
                Buffers::Client.give_back(std::mem::take(&mut self.from_client));
            }
        }
    }

    /// Waits, idle, until the client sends something (read into its buffer), or an
    /// event ends the session (`Some`).
    async fn between_transactions(&mut self) -> Option<SessionEnd> {
        // In a held-back transaction the client is idle in a transaction: a shutdown
        // lets it finish, as any running transaction.
        let in_txn = self.route.pending_begin.is_some() && !self.route.to_primary;
        let stopping = self.shared.shutdown.begun() && !in_txn;
        if stopping && !self.late {
            return Some(Box::pin(self.end_with(ClientError::AdminShutdown)).await);
        }
        let pool = &self.config.load().pool;
        let idle_limit = match (stopping, in_txn) {
            (true, _) => Some(FIRST_REQUEST_GRACE),
            (false, true) => pool.idle_transaction_timeout.nonzero(),
            (false, false) => pool.client_idle_timeout.nonzero(),
        };
        match self.idle_wait(idle_limit).await {
            Wake::Readable(true) => {}
            Wake::Readable(false) => return Some(SessionEnd::ClientLeft),
            Wake::Shutdown => return None,
            Wake::IdleTimeout if stopping => return Some(Box::pin(self.end_with(ClientError::AdminShutdown)).await),
            Wake::IdleTimeout if in_txn => return Some(Box::pin(self.end_with(ClientError::IdleInTransactionTimeout)).await),
            Wake::IdleTimeout => return Some(Box::pin(self.end_with(ClientError::IdleSessionTimeout)).await),
            Wake::Killed => return Some(Box::pin(self.end_with(ClientError::Killed)).await),
            Wake::Notified => return Box::pin(self.deliver()).await,
        }
        if self.from_client.capacity() == 0 {
            self.from_client = Buffers::Client.take();
        }
        match self.stream.read_some(&mut self.from_client) {
            Ok(0) => Some(SessionEnd::ClientLeft),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // A wake-up with nothing to read: the readiness left over from the
                // login's last read (tokio keeps it until a read fails with
                // WouldBlock), so every client that logs in and waits would otherwise
                // hold a read buffer (8 KiB) until its first query.
                if self.from_client.is_empty() {
                    Buffers::Client.give_back(std::mem::take(&mut self.from_client));
                }
                None
            }
            Err(_) => Some(SessionEnd::ClientLeft),
        }
    }

    /// Waits, idle, for the client's next bytes or an event. This is what an idle
    /// client's task holds, so it is kept small: the idle timer is allocated only
    /// when a timeout is configured, and nothing is registered but the socket's
    /// waker (see [`crate::clients::kill`]).
    async fn idle_wait(&mut self, limit: Option<std::time::Duration>) -> Wake {
        use std::future::Future;
        use std::task::Poll;
        let mut timer = limit.map(|t| Box::pin(tokio::time::sleep(t)));
        let (stream, kill, watch) = (&self.stream, &self.client.kill, &mut self.kill);
        let inbox = self.listening.as_ref().map(|l| &*l.inbox);
        let wake = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = stream.poll_read_ready(cx) {
                return Poll::Ready(Some(Wake::Readable(r.is_ok())));
            }
            if let Some(t) = timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Wake::IdleTimeout));
                }
            }
            // Also how a shutdown reaches idle clients (see `State::begin_shutdown`),
            // and how a listening client's inbox wakes it (`Kill::wake`).
            if watch.poll(kill, cx).is_ready() {
                return Poll::Ready(None);
            }
            if inbox.is_some_and(|i| i.has_news()) {
                return Poll::Ready(Some(Wake::Notified));
            }
            Poll::Pending
        })
        .await;
        wake.unwrap_or_else(|| if self.shared.shutdown.begun() { Wake::Shutdown } else { Wake::Killed })
    }

    /// Whether this client's requests are routed (else all go to the primary).
    pub(super) fn routes(&mut self) -> bool {
        if !self.login.pools.topology.has_replicas() {
            return false;
        }
        let c = self.config.load();
        c.pool.mode == PoolMode::Transaction && c.routing.read_write_split
    }

    /// Takes a server connection; tells the client with a NOTICE when the wait passes
    /// `pool.wait_notice` (it keeps waiting, up to `checkout_timeout`).
    pub(super) async fn checkout_from(&mut self, pool: Arc<Pool>) -> Result<Lease, ClientError> {
        let Some(after) = self.config.load().pool.wait_notice.nonzero() else {
            return pool.checkout().await;
        };
        let mut checkout = Box::pin(pool.checkout());
        tokio::select! {
            r = &mut checkout => return r,
            _ = tokio::time::sleep(after) => {}
        }
        let s = pool.status();
        let notice = PgError::new(
            crate::error::Severity::Notice,
            "00000",
            format!("pgmux: waiting for a server connection ({} of {} in use, {} clients waiting)", s.total - s.idle, s.size, s.waiting),
        );
        let mut out = BytesMut::new();
        backend::notice(&mut out, &notice);
        let _ = self.stream.write_all(&out).await;
        checkout.await
    }

    /// Answers the client's pending request with an error, as a server would: the
    /// error at once, then everything up to its Sync skipped, then ReadyForQuery. A
    /// fatal error ends the session.
    pub(super) async fn refuse_request(&mut self, e: ClientError) -> Option<SessionEnd> {
        tracing::info!(client = self.client.pid, error = %e, "request refused");
        if e.is_fatal() {
            return Some(self.end_with(e).await);
        }
        self.send_error(&e.to_pg()).await;
        let max = self.config.load().max_message_size.0 as usize;
        loop {
            let mut end_found = false;
            let r = self.framer.scan::<std::convert::Infallible>(
                &self.from_client,
                max,
                |_| 0,
                |f| {
                    if matches!(f.tag(), codes::QUERY | codes::FUNCTION_CALL | codes::SYNC) {
                        end_found = true;
                        return Ok(Step::Stop);
                    }
                    Ok(Step::Continue)
                },
            );
            let n = match r {
                Ok(Ok(n)) => n,
                Ok(Err(bad)) => return Some(SessionEnd::Ended(ProtocolError::BadLength { tag: bad.tag, len: bad.len }.into())),
                Err(never) => match never {},
            };
            crate::server::consume(&mut self.from_client, n);
            if end_found {
                let mut out = BytesMut::new();
                backend::ready(&mut out, codes::TXN_IDLE);
                return self.stream.write_all(&out).await.err().map(|_| SessionEnd::ClientLeft);
            }
            self.from_client.reserve(CLIENT_READ_BUF);
            match tokio::io::AsyncReadExt::read_buf(&mut self.stream, &mut self.from_client).await {
                Ok(0) | Err(_) => return Some(SessionEnd::ClientLeft),
                Ok(_) => {}
            }
        }
    }

    /// Tells the client why its session ends (a FATAL error), and ends it.
    pub(super) async fn end_with(&mut self, e: ClientError) -> SessionEnd {
        self.send_error(&e.to_pg()).await;
        SessionEnd::Ended(e)
    }

    async fn send_error(&mut self, e: &PgError) {
        let mut out = BytesMut::new();
        backend::error(&mut out, e);
        let _ = self.stream.write_all(&out).await;
    }
}
