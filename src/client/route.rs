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

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::relay::CLIENT_READ_BUF;
use super::session::{Session, SessionEnd};
use crate::config::Route;
use crate::error::{ClientError, PgError, SqlState};
use crate::pool::Lease;
use crate::protocol::{backend, codes};
use crate::router::request::{next_request, Begin, Request, Scan};
use crate::router::topology::{Routed, Topology};
use crate::router::{decide, route_command, Decision, RouteCommand};
use crate::server::After;

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

impl Session<'_> {
    /// Reads the client's next request whole and decides where it goes (answering
    /// it here when it is about routing or a held-back `BEGIN`).
    pub(super) async fn prepare_route(&mut self, topo: &Topology) -> Result<Destination, SessionEnd> {
        let config = self.config.load();
        let max = config.max_message_size.0 as usize;
        let req = loop {
            match next_request(&self.cbuf, max, &config.classifier, &self.statements) {
                Scan::Complete(r) => break r,
                // The relay reports it (from the primary: nothing reaches a replica unread).
                Scan::Malformed => {
                    return Ok(Destination::Route(Routing {
                        decision: Decision { node: topo.primary(), routed: Routed::PrimaryWrite },
                        reads_only: false,
                        movable: false,
                        read: false,
                    }))
                }
                Scan::Incomplete => {
                    self.cbuf.reserve(CLIENT_READ_BUF);
                    match self.stream.read_buf(&mut self.cbuf).await {
                        Ok(0) | Err(_) => return Err(SessionEnd::ClientLeft),
                        Ok(_) => {}
                    }
                }
            }
        };
        if self.cbuf[0] == codes::QUERY && self.answer_here(&req).await? {
            crate::server::consume(&mut self.cbuf, req.len);
            return Ok(Destination::Answered);
        }
        let decision = if self.route.to_primary {
            Decision { node: topo.primary(), routed: Routed::PrimaryWrite }
        } else {
            let min_lsn = if self.config.load().routing.read_your_writes { self.route.min_lsn(topo) } else { 0 };
            decide(topo, req.read, req.hint, self.route.route, min_lsn, 0)
        };
        let reads_only = decision.routed == Routed::ReplicaRead;
        let movable = reads_only && (self.route.pending_begin.is_some() || req.begin == Some(Begin::Plain));
        Ok(Destination::Route(Routing { decision, reads_only, movable, read: req.read }))
    }

    /// Answers a simple Query about routing, or a held-back `BEGIN` (and a lone
    /// `COMMIT`/`ROLLBACK` right after it). Returns whether it did.
    async fn answer_here(&mut self, req: &Request) -> Result<bool, SessionEnd> {
        let text = &self.cbuf[5..req.len - 1];
        let mut out = BytesMut::new();
        let in_block = self.route.pending_begin.is_some() && !self.route.to_primary;
        let status = if in_block { codes::TXN_IN_BLOCK } else { codes::TXN_IDLE };
        if let Some(cmd) = route_command(text) {
            match cmd {
                RouteCommand::Set(r) => {
                    self.route.route = r;
                    backend::command_complete(&mut out, "SET");
                }
                RouteCommand::Reset => {
                    self.route.route = self.route.default;
                    backend::command_complete(&mut out, "RESET");
                }
                RouteCommand::Show => {
                    backend::row_description(&mut out, &[("pgmux.route", false)]);
                    backend::data_row(&mut out, &[Some(self.route.route.as_str().to_string())]);
                    backend::command_complete(&mut out, "SHOW");
                }
                RouteCommand::Invalid(v) => {
                    let e =
                        PgError::error(SqlState::INVALID_PARAMETER_VALUE, format!("invalid value for parameter \"pgmux.route\": \"{v}\""))
                            .with_hint("Available values: auto, primary, replica.");
                    backend::error(&mut out, &e);
                }
            }
        } else if req.lone_begin
            && self.route.route == Route::Auto
            && self.route.pending_begin.is_none()
            && self.login.pools.topology.any_readable()
        {
            let begin = String::from_utf8_lossy(text).into_owned().into_boxed_str();
            self.route.pending_begin = Some(begin);
            backend::command_complete(&mut out, "BEGIN");
            backend::ready(&mut out, codes::TXN_IN_BLOCK);
            return self.reply(&out).await.map(|_| true);
        } else if let (Some(commit), true) = (req.lone_end, in_block) {
            // Nothing ran: nothing to commit or roll back anywhere.
            self.route.pending_begin = None;
            backend::command_complete(&mut out, if commit { "COMMIT" } else { "ROLLBACK" });
            backend::ready(&mut out, codes::TXN_IDLE);
            return self.reply(&out).await.map(|_| true);
        } else {
            return Ok(false);
        }
        backend::ready(&mut out, status);
        self.reply(&out).await.map(|_| true)
    }

    async fn reply(&mut self, out: &[u8]) -> Result<(), SessionEnd> {
        self.stream.write_all(out).await.map_err(|_| SessionEnd::ClientLeft)
    }

    /// Takes a connection as decided; a replica that cannot be reached (or refuses
    /// logins for now) is skipped for the next one, then the primary.
    pub(super) async fn checkout_routed(&mut self, topo: &Topology, routing: &mut Routing) -> Result<Lease, ClientError> {
        let mut skip = 0u64;
        loop {
            let pool = self.login.pools.node(routing.decision.node).clone();
            match self.checkout_from(pool).await {
                Ok(lease) => {
                    topo.count(routing.decision.routed);
                    return Ok(lease);
                }
                Err(e) if routing.decision.routed.to_replica() && e.server_unavailable() => {
                    let server = &topo.nodes[routing.decision.node].addr;
                    tracing::info!(client = self.client.pid, %server, error = %e, "replica unavailable; the read goes elsewhere");
                    skip |= 1u64.checked_shl(routing.decision.node as u32).unwrap_or(0);
                    let d = decide(topo, true, None, Route::Replica, 0, skip);
                    routing.decision = if d.routed.to_replica() {
                        Decision { node: d.node, routed: routing.decision.routed }
                    } else {
                        Decision { node: topo.primary(), routed: Routed::PrimaryFallback }
                    };
                    if !routing.decision.routed.to_replica() {
                        routing.reads_only = false;
                        routing.movable = false;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a pending `BEGIN` (held back, or restarting a moved transaction) on the
    /// connection about to serve the client.
    pub(super) async fn send_pending_begin(&mut self, lease: &mut Lease) -> Result<(), ClientError> {
        let Some(begin) = self.route.pending_begin.take() else { return Ok(()) };
        self.route.to_primary = false;
        let timeout = lease.pool().settings().connect_timeout;
        lease.conn_mut().run_checked(&begin, timeout, After::InTransaction).await?;
        Ok(())
    }

    /// A request that is not a read came in a transaction on a replica that has only
    /// read: ends it there and sets up its continuation on the primary. False if the
    /// connection could not be cleaned (it is then closed).
    pub(super) async fn move_to_primary(&mut self, mut lease: Lease) -> bool {
        let timeout = lease.pool().settings().connect_timeout;
        if lease.conn_mut().run_checked("ROLLBACK", timeout, After::Idle).await.is_err() {
            lease.discard();
            return false;
        }
        lease.release();
        tracing::debug!(client = self.client.pid, "transaction moves from a replica to the primary");
        self.route.pending_begin = Some("BEGIN".into());
        self.route.to_primary = true;
        true
    }
}
