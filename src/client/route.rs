//! Choosing a server for a client's next request (transaction mode, with replicas
//! and `routing.read_write_split` on).
//!
//! Before a server is taken, the session reads the client's first request whole
//! ([`crate::router::request`]) and asks [`crate::router::decide`] where it goes.
//! Besides that:
//!
//! - `SET pgmux.route = auto|primary|replica`, `RESET pgmux.route` and `SHOW
//!   pgmux.route` are answered here and change only this client's routing;
//! - a simple Query that is a lone plain `BEGIN` is answered here and held back: the
//!   transaction goes where its first statement goes, and the `BEGIN` is sent there
//!   first (only while some replica takes reads: else it would go to the primary
//!   anyway). A lone `COMMIT`/`ROLLBACK` right after it is answered here too, and
//!   `pool.idle_transaction_timeout` applies while the client sits in it;
//! - a read that cannot get a replica connection tries the other replicas, then the
//!   primary, before anything is sent to the client;
//! - read-your-writes: when a client's write ends on the primary, its reads go to
//!   the primary until the replica monitor has read the primary's WAL position again
//!   (a check that began after the write), and from then on only to replicas that
//!   have replayed that far. No query of its own is added anywhere.
//!
//! On a replica the relay runs reads-only: only reads are sent. When a request
//! that is not a read comes inside a transaction that began with a plain `BEGIN`
//! and has only read, the replica's transaction is rolled back and the transaction
//! continues on the primary (`BEGIN` there, then the request). In read committed
//! each statement takes a fresh snapshot anyway, so the reads already answered stay
//! valid; a `REPEATABLE READ` or `READ ONLY` transaction is never moved, and a
//! write there fails as PostgreSQL would fail it on a standby (25006).

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::relay::CLIENT_READ_BUF;
use crate::config::Route;
use crate::error::{ClientError, PgError, SqlState};
use crate::net::Stream;
use crate::pool::Lease;
use crate::prepared::ClientStatements;
use crate::protocol::{backend, codes};
use crate::router::request::{next_request, Begin, Request, Scan};
use crate::router::topology::{Routed, Topology};
use crate::router::{decide, route_command, Decision, RouteCommand};
use crate::server::After;
use crate::state::Running;

/// One client's routing state.
#[derive(Debug, Default)]
pub struct RouteState {
    /// `pgmux.route` now; `default` is the user's `route`.
    pub route: Route,
    pub default: Route,
    /// A `BEGIN` to send before the next request: held back (the client was told it
    /// succeeded), or to restart a transaction that moved to the primary.
    pub pending_begin: Option<Box<str>>,
    /// The pending `BEGIN` moves the transaction to the primary.
    pub to_primary: bool,
    /// Read-your-writes: replicas must have replayed this far.
    min_lsn: u64,
    /// When the client's last write ended (topology clock; 0: none pending).
    wrote_at: u64,
}

impl RouteState {
    pub fn new(default: Route) -> Self {
        RouteState { route: default, default, ..Default::default() }
    }

    /// A write of this client ended now.
    pub fn wrote(&mut self, topo: &Topology) {
        self.wrote_at = topo.now();
    }

    /// How far a replica must have replayed to serve this client's reads.
    fn min_lsn(&mut self, topo: &Topology) -> u64 {
        if self.wrote_at != 0 {
            match topo.primary_lsn_since(self.wrote_at) {
                Some(lsn) => {
                    self.min_lsn = self.min_lsn.max(lsn);
                    self.wrote_at = 0;
                }
                None => return u64::MAX,
            }
        }
        self.min_lsn
    }
}

/// Where a request goes and how the relay must treat it there.
#[derive(Debug, Clone, Copy)]
pub struct Routing {
    pub decision: Decision,
    /// On a replica: send only reads (see the module doc).
    pub reads_only: bool,
    /// The transaction may move to the primary when a write comes.
    pub movable: bool,
    /// The request, as classified, reads only.
    pub read: bool,
}

/// What became of the client's next request.
pub enum Destination {
    /// Take a server as decided.
    Route(Routing),
    /// pgmux answered it; wait for the next one.
    Answered,
}

impl RouteState {
    /// Reads the client's next request whole (into `buf`) and decides where it goes,
    /// answering it here when it is about routing or a held-back `BEGIN`. An error:
    /// the client is gone.
    pub async fn next(
        &mut self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        statements: &ClientStatements,
        config: &Running,
        topo: &Topology,
    ) -> io::Result<Destination> {
        let max = config.max_message_size.0 as usize;
        let req = loop {
            match next_request(buf, max, &config.classifier, statements) {
                Scan::Complete(r) => break r,
                // The relay reports it (from the primary: nothing reaches a replica unread).
                Scan::Malformed => return Ok(Destination::Route(Routing::to_primary(topo))),
                Scan::Incomplete => {
                    buf.reserve(CLIENT_READ_BUF);
                    if stream.read_buf(buf).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        };
        if buf[0] == codes::QUERY && self.answer_here(stream, &buf[5..req.len - 1], &req, topo).await? {
            crate::server::consume(buf, req.len);
            return Ok(Destination::Answered);
        }
        let decision = if self.to_primary {
            Decision { node: topo.primary(), routed: Routed::PrimaryWrite }
        } else {
            let min_lsn = if config.routing.read_your_writes { self.min_lsn(topo) } else { 0 };
            decide(topo, req.read, req.hint, self.route, min_lsn, 0)
        };
        let in_plain_block = self.pending_begin.is_some() || req.begin == Some(Begin::Plain);
        // A cursor (named portal) opened in a transaction that could move would be lost
        // by the move: such a transaction starts on the primary.
        if req.cursor && in_plain_block && decision.routed == Routed::ReplicaRead && req.hint.is_none() {
            let decision = Decision { node: topo.primary(), routed: Routed::PrimaryCursor };
            return Ok(Destination::Route(Routing { decision, reads_only: false, movable: false, read: true }));
        }
        let reads_only = decision.routed == Routed::ReplicaRead;
        let movable = reads_only && in_plain_block;
        Ok(Destination::Route(Routing { decision, reads_only, movable, read: req.read }))
    }

    /// Answers a simple Query (`text`) about routing, or a held-back `BEGIN` (and a
    /// lone `COMMIT`/`ROLLBACK` right after it). Returns whether it did.
    async fn answer_here(&mut self, stream: &mut Stream, text: &[u8], req: &Request, topo: &Topology) -> io::Result<bool> {
        let mut out = BytesMut::new();
        let in_block = self.pending_begin.is_some() && !self.to_primary;
        if let Some(cmd) = route_command(text) {
            self.route_command(cmd, &mut out);
            backend::ready(&mut out, if in_block { codes::TXN_IN_BLOCK } else { codes::TXN_IDLE });
        } else if req.lone_begin && self.route == Route::Auto && self.pending_begin.is_none() && topo.any_readable() {
            self.pending_begin = Some(String::from_utf8_lossy(text).into_owned().into_boxed_str());
            backend::command_complete(&mut out, "BEGIN");
            backend::ready(&mut out, codes::TXN_IN_BLOCK);
        } else if let (Some(commit), true) = (req.lone_end, in_block) {
            // Nothing ran: nothing to commit or roll back anywhere.
            self.pending_begin = None;
            backend::command_complete(&mut out, if commit { "COMMIT" } else { "ROLLBACK" });
            backend::ready(&mut out, codes::TXN_IDLE);
        } else {
            return Ok(false);
        }
        stream.write_all(&out).await?;
        Ok(true)
    }

    /// `SET`, `RESET` or `SHOW` of `pgmux.route`, answered (without its ReadyForQuery).
    fn route_command(&mut self, cmd: RouteCommand, out: &mut BytesMut) {
        match cmd {
            RouteCommand::Set(r) => {
                self.route = r;
                backend::command_complete(out, "SET");
            }
            RouteCommand::Reset => {
                self.route = self.default;
                backend::command_complete(out, "RESET");
            }
            RouteCommand::Show => {
                backend::row_description(out, &[("pgmux.route", false)]);
                backend::data_row(out, &[Some(self.route.as_str().to_string())]);
                backend::command_complete(out, "SHOW");
            }
            RouteCommand::Invalid(v) => {
                let e = PgError::error(SqlState::INVALID_PARAMETER_VALUE, format!("invalid value for parameter \"pgmux.route\": \"{v}\""))
                    .with_hint("Available values: auto, primary, replica.");
                backend::error(out, &e);
            }
        }
    }

    /// Sends a pending `BEGIN` (held back, or restarting a moved transaction) on the
    /// connection about to serve the client.
    pub async fn send_pending_begin(&mut self, lease: &mut Lease) -> Result<(), ClientError> {
        let Some(begin) = self.pending_begin.take() else { return Ok(()) };
        self.to_primary = false;
        let timeout = lease.pool().settings().connect_timeout;
        lease.conn_mut().run_checked(&begin, timeout, After::InTransaction).await?;
        Ok(())
    }

    /// A request that is not a read came in a transaction on a replica that has only
    /// read: ends it there and sets up its continuation on the primary.
    pub async fn move_to_primary(&mut self, mut lease: Lease) {
        let timeout = lease.pool().settings().connect_timeout;
        if lease.conn_mut().run_checked("ROLLBACK", timeout, After::Idle).await.is_ok() {
            lease.release();
        } else {
            // The replica (or its connection) failed: closing the connection ends its
            // transaction, which has only read, so the move is as safe as before.
            tracing::debug!("ROLLBACK on the replica failed; its connection is closed and the transaction moves all the same");
            lease.discard();
        }
        self.pending_begin = Some("BEGIN".into());
        self.to_primary = true;
    }
}

impl Routing {
    /// To the primary, as a write (nothing reaches a replica unread).
    fn to_primary(topo: &Topology) -> Routing {
        Routing {
            decision: Decision { node: topo.primary(), routed: Routed::PrimaryWrite },
            reads_only: false,
            movable: false,
            read: false,
        }
    }

    /// The node of the decision could not be had (unreachable, or refusing logins):
    /// the read goes to another replica, or else to the primary. `skip`: the nodes
    /// tried so far.
    pub fn fall_back(&mut self, topo: &Topology, skip: &mut u64) {
        *skip |= 1u64.checked_shl(self.decision.node as u32).unwrap_or(0);
        let d = decide(topo, true, None, Route::Replica, 0, *skip);
        self.decision = if d.routed.to_replica() {
            Decision { node: d.node, routed: self.decision.routed }
        } else {
            Decision { node: topo.primary(), routed: Routed::PrimaryFallback }
        };
        if !self.decision.routed.to_replica() {
            self.reads_only = false;
            self.movable = false;
        }
    }
}
