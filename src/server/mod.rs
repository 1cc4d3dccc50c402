//! One connection from pgmux to a PostgreSQL server.
//!
//! [`ServerConn`] owns the socket, the buffer of bytes read from it, the server's
//! cancel key, and the session settings pgmux has applied to it. It is opened by
//! [`login`], lent to one client at a time by the pool, and used directly only for
//! pgmux's own short queries ([`ServerConn::run_internal`]): health checks, session
//! sync, rollbacks, resets. Client traffic goes through `client::relay`.

mod cancel;
pub mod login;

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net::buffers::Buffers;
use crate::net::Stream;
use bytes::{Buf, BytesMut};
use postgres_protocol::message::{backend, frontend};

use crate::error::{ClientError, PgError, ServerFailure};
use crate::prepared::{Expect, ServerStatements};
use crate::protocol::codes;
use crate::settings::SessionParams;

pub use cancel::{CancelTarget, ServerSecret};
pub use login::ServerTarget;

/// Size the server read buffer starts at.
pub const READ_BUF: usize = Buffers::Server.size();

/// An open, logged-in server connection.
pub struct ServerConn {
    pub stream: Stream,
    /// Bytes read from the server, on their way to the client (pgmux's own queries
    /// read their answers from here too).
    pub to_client: BytesMut,
    /// Client messages (possibly rewritten), on their way to the server.
    pub to_server: BytesMut,
    /// Named statements prepared here (transaction mode).
    pub statements: ServerStatements,
    /// Answers still due for messages pgmux rewrote or added.
    pub expect: VecDeque<Expect>,
    /// The current request's client bytes, kept for a stale-plan retry.
    pub replay: BytesMut,
    /// Where to send a CancelRequest for this connection: its address and
    /// BackendKeyData (the secret is 4 bytes in protocol 3.0, longer in 3.2). Shared
    /// with the client it is lent to (its registry entry), not copied.
    pub cancel: Arc<CancelTarget>,
    /// Settings pgmux applied on top of the server's defaults.
    pub session: Arc<SessionParams>,
    /// ParameterStatus values the server reported at login.
    pub params: Arc<Vec<(String, String)>>,
    pub created: Instant,
    pub last_used: Instant,
    /// The worker thread whose reactor watches the socket (see [`crate::worker`]).
    pub home: u16,
}

/// The transaction status one of pgmux's own statements must leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// No transaction (`I`).
    Idle,
    /// In a transaction block (`T`).
    InTransaction,
    /// Whatever it was.
    Any,
}

/// Why one of pgmux's own statements failed.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    /// The connection broke or the statement timed out: it is unusable.
    #[error("{0}")]
    Lost(#[from] io::Error),
    /// The server answered with an error.
    #[error("{}", .0.message)]
    Refused(PgError),
    /// It left another transaction status than wanted.
    #[error("unexpected transaction status {0}")]
    Status(u8),
}

impl From<InternalError> for ClientError {
    fn from(e: InternalError) -> ClientError {
        match e {
            InternalError::Lost(e) => ClientError::ServerLost(ServerFailure::Io(e)),
            InternalError::Refused(e) => ClientError::ServerRefused(e),
            InternalError::Status(s) => ClientError::ServerLost(ServerFailure::Status(s)),
        }
    }
}

/// Outcome of one internal query.
pub struct InternalResult {
    pub error: Option<PgError>,
    /// Transaction status of the final ReadyForQuery.
    pub status: u8,
    /// Rows, as text (pgmux's internal queries use the simple protocol).
    pub rows: Vec<Vec<Option<String>>>,
}

impl ServerConn {
    /// Makes worker thread `me` (this one) the connection's home (see
    /// [`crate::worker`]), if its socket can move.
    #[inline]
    pub fn adopt(&mut self, me: u16) {
        if self.home != me && matches!(self.stream.rehome(), Ok(true)) {
            self.home = me;
        }
    }

    /// Returns false if the idle connection has data waiting or is closed: a server
    /// that terminated the backend sends a FATAL and closes; either way it is unusable.
    pub fn idle_is_clean(&self) -> bool {
        self.stream.idle_is_clean()
    }

    /// Runs one simple query of pgmux's own and reads its answer to ReadyForQuery,
    /// discarding rows. Used only while no client traffic is in flight.
    pub async fn run_internal(&mut self, sql: &str, timeout: Duration) -> io::Result<InternalResult> {
        // A simple query destroys the unnamed statement.
        self.statements.unnamed_owner = None;
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out)?;
        match tokio::time::timeout(timeout, self.exchange(out)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "internal query timed out")),
        }
    }

    /// Runs one of pgmux's own statements and checks its outcome: no error, and the
    /// transaction status `after` wants.
    pub async fn run_checked(&mut self, sql: &str, timeout: Duration, after: After) -> Result<InternalResult, InternalError> {
        let r = self.run_internal(sql, timeout).await?;
        if let Some(e) = r.error {
            return Err(InternalError::Refused(e));
        }
        let wanted = match after {
            After::Idle => codes::TXN_IDLE,
            After::InTransaction => codes::TXN_IN_BLOCK,
            After::Any => r.status,
        };
        if r.status != wanted {
            return Err(InternalError::Status(r.status));
        }
        Ok(r)
    }

    /// Runs one query with one text parameter (`$1`) by the extended protocol, so the
    /// parameter is never part of the SQL text.
    pub async fn run_with_param(&mut self, sql: &str, param: &str, timeout: Duration) -> io::Result<InternalResult> {
        self.statements.unnamed_owner = None;
        let mut out = BytesMut::new();
        frontend::parse("", sql, std::iter::empty(), &mut out)?;
        let put = |p: &str, buf: &mut BytesMut| {
            buf.extend_from_slice(p.as_bytes());
            Ok(postgres_protocol::IsNull::No)
        };
        frontend::bind("", "", Some(0i16), Some(param), put, Some(0i16), &mut out)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bind"))?;
        frontend::execute("", 0, &mut out)?;
        frontend::sync(&mut out);
        match tokio::time::timeout(timeout, self.exchange(out)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "internal query timed out")),
        }
    }

    /// Ends the extended-protocol messages a client left without their Sync (every
    /// answer to them already read): sends a Sync and reads to its ReadyForQuery.
    /// An implicit transaction ends with it; an open transaction block stays open.
    pub async fn sync(&mut self, timeout: Duration) -> io::Result<InternalResult> {
        self.expect.clear();
        let mut out = BytesMut::new();
        frontend::sync(&mut out);
        match tokio::time::timeout(timeout, self.exchange(out)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "internal sync timed out")),
        }
    }

    async fn exchange(&mut self, out: BytesMut) -> io::Result<InternalResult> {
        self.stream.write_all(&out).await?;
        let mut error = None;
        let mut rows = Vec::new();
        loop {
            match self.read_message().await? {
                backend::Message::ReadyForQuery(b) => {
                    return Ok(InternalResult { error, status: b.status(), rows });
                }
                backend::Message::ErrorResponse(body) => error = Some(login::to_pg_error(body.fields())),
                backend::Message::DataRow(row) => {
                    use fallible_iterator::FallibleIterator;
                    let buf = row.buffer();
                    let values = row.ranges().map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()))).collect()?;
                    rows.push(values);
                }
                _ => {}
            }
        }
    }

    /// Reads one whole message (internal use only: login and internal queries).
    pub(crate) async fn read_message(&mut self) -> io::Result<backend::Message> {
        read_message(&mut self.stream, &mut self.to_client).await
    }

    /// Where to send a CancelRequest for what this connection runs.
    pub fn cancel_target(&self) -> Arc<CancelTarget> {
        self.cancel.clone()
    }

    /// The server process's pid (its BackendKeyData).
    pub fn pid(&self) -> i32 {
        self.cancel.pid
    }

    /// Closes politely: Terminate if the socket takes it now, then drop.
    pub fn close(self) {
        let _ = self.stream.try_write(&[codes::TERMINATE, 0, 0, 0, 4]);
    }

    /// Releases memory held for a burst: called when going back to the pool idle.
    pub fn shrink(&mut self) {
        if self.to_client.is_empty() && self.to_client.capacity() > 4 * READ_BUF {
            self.to_client = BytesMut::new();
        }
        if self.to_server.is_empty() && self.to_server.capacity() > 4 * READ_BUF {
            self.to_server = BytesMut::new();
        }
        self.expect.clear();
        if self.replay.capacity() > 4 * READ_BUF {
            self.replay = BytesMut::new();
        }
    }

    /// Gives the read buffer back to the spare ones ([`Buffers`]), if nothing is left
    /// in it: the pool's upkeep does this for a connection idle for a while (an idle
    /// pool of 20 held 320 KiB), not every time one goes idle between transactions.
    /// The next read after it is lent takes a spare one ([`ServerConn::make_room`]);
    /// those nobody takes are freed within two upkeep ticks.
    pub fn release_read_buffer(&mut self) {
        if self.to_client.is_empty() && self.to_client.capacity() > 0 {
            Buffers::Server.give_back(std::mem::take(&mut self.to_client));
        }
    }

    /// Makes room in the read buffer for a read: a spare buffer if the connection
    /// gave its own back while idle.
    #[inline]
    pub fn make_room(&mut self) {
        let buf = &mut self.to_client;
        if buf.capacity() == 0 {
            *buf = Buffers::Server.take();
        } else if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUF);
        }
    }
}

/// Reads one backend message from `stream`, buffering in `buf`.
pub(crate) async fn read_message(stream: &mut Stream, buf: &mut BytesMut) -> io::Result<backend::Message> {
    use tokio::io::AsyncReadExt;
    loop {
        if buf.len() >= 5 {
            let len = i32::from_be_bytes(buf[1..5].try_into().unwrap());
            if !(4..=(64 << 20)).contains(&len) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("invalid message length {len} from server")));
            }
        }
        if let Some(m) = backend::Message::parse(buf)? {
            return Ok(m);
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
        }
    }
}

/// Drops the first `n` bytes of a read buffer, resetting it when empty.
pub fn consume(buf: &mut BytesMut, n: usize) {
    if n == buf.len() {
        buf.clear();
    } else {
        buf.advance(n);
    }
}
