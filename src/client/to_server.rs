//! The client-to-server direction of the [`Relay`]: complete client messages
//! moved to the server's `to_server` buffer (rewritten in transaction mode, vetted on a
//! replica, kept for a stale-plan retry).

use std::convert::Infallible;

use super::relay::{bad_length, loggable, Relay, RelayEnd, Run, TxnRewrite};
use super::retry::Retry;
use super::rewrite::Rewriter;
use super::txn::TxnTracker;
use crate::error::ProtocolError;
use crate::protocol::codes;
use crate::protocol::frame::{cstr, Frame, Framer, Step, HEADER_LEN};
use crate::server::{consume, ServerConn};

impl Relay<'_> {
    /// Moves the complete client messages in its buffer to the server's `to_server`
    /// buffer, rewritten in transaction mode; notes whether the client said Terminate
    /// (which is not forwarded), and on a replica whether a request that is not a
    /// read is held back. While a stale-plan retry is still possible, the client's
    /// bytes are kept for it.
    pub(super) fn scan_client(&mut self, run: &mut Run) -> Result<(), RelayEnd> {
        loop {
            let (limit, more) = match self.reads_only {
                Some(cfg) => {
                    let (n, stop, more) = self.vetted(cfg);
                    run.to_server.held |= stop;
                    (n, more)
                }
                None => (self.from_client.len(), false),
            };
            let before = self.from_client.len();
            let terminated = self.forward_client(limit, run)?;
            if terminated || !more || self.from_client.len() == before {
                run.to_server.done = terminated;
                return Ok(());
            }
        }
    }

    fn forward_client(&mut self, limit: usize, run: &mut Run) -> Result<bool, RelayEnd> {
        let label = match self.timeouts.slow_query {
            Some(_) if run.clock.label.is_none() => Some(&mut run.clock.label),
            _ => None,
        };
        let (n, terminated) = forward_client_bytes(
            &self.from_client[..limit],
            self.client_framer,
            self.txn,
            self.server,
            self.statements.as_mut(),
            self.max_message,
            label,
        )?;
        run.retry.keep(&mut self.server.replay, &self.from_client[..n]);
        consume(self.from_client, n);
        Ok(terminated)
    }

    /// Reads-only on a replica: how many bytes at the front of the client buffer are
    /// whole requests that only read; whether a request that does more follows; and
    /// whether to vet again once these are forwarded (a request parsed or closed
    /// statements that later ones may use: the client's statements must know them).
    fn vetted(&self, cfg: &crate::router::classify::ClassifyConfig) -> (usize, bool, bool) {
        use crate::router::request::{next_request, Scan};
        let Some(statements) = self.statements.as_ref().map(|t| &*t.client) else { return (self.from_client.len(), false, false) };
        let mut at = 0;
        loop {
            match next_request(&self.from_client[at..], self.max_message, cfg, statements) {
                Scan::Complete(r) if r.read && r.hint != Some(crate::router::classify::Hint::Primary) && !self.loses_cursor(&r) => {
                    at += r.len;
                    if r.defines && at < self.from_client.len() {
                        return (at, false, true);
                    }
                }
                Scan::Complete(_) => return (at, true, false),
                Scan::Incomplete => return (at, false, false),
                // Let the framer report it.
                Scan::Malformed => return (self.from_client.len(), false, false),
            }
        }
    }

    /// A request that opens a named portal in a transaction that may still move to
    /// the primary: moving later would lose the portal (34000), so it moves first.
    fn loses_cursor(&self, r: &crate::router::request::Request) -> bool {
        r.cursor && self.movable && self.txn.status == codes::TXN_IN_BLOCK
    }

    /// Queues a Sync of pgmux's own (its ReadyForQuery is hidden by the relay).
    pub(super) fn sync_own(&mut self) {
        postgres_protocol::message::frontend::sync(&mut self.server.to_server);
        self.txn.client_sent(codes::SYNC);
        if self.statements.is_some() {
            self.server.expect.push_back(crate::prepared::Expect::Ready);
        }
    }

    /// Sends the kept request again after "cached plan must not change result type":
    /// first `DEALLOCATE ALL` (its answer hidden), then the client's bytes, rewritten
    /// afresh so that every statement is prepared again.
    pub(super) fn replay(&mut self, retry: &mut Retry) -> Result<(), RelayEnd> {
        let server = &mut *self.server;
        postgres_protocol::message::frontend::query("DEALLOCATE ALL", &mut server.to_server).expect("short query");
        self.txn.client_sent(codes::QUERY);
        server.statements.clear();
        server.expect.clear();
        retry.replaying();
        let bytes = std::mem::take(&mut server.replay);
        let r = forward_client_bytes(&bytes, &mut Framer::default(), self.txn, server, self.statements.as_mut(), self.max_message, None);
        self.server.replay = bytes;
        self.server.replay.clear();
        r.map(|_| ())
    }
}

/// What the slow-query log shows of a request, from its first Query, Parse or Bind.
fn label_of(tag: u8, body: &[u8]) -> Option<String> {
    match tag {
        codes::QUERY => Some(loggable(body.strip_suffix(&[0]).unwrap_or(body))),
        codes::PARSE => cstr(body).and_then(|(_, rest)| cstr(rest)).map(|(q, _)| loggable(q)),
        codes::BIND => cstr(body)
            .and_then(|(_, rest)| cstr(rest))
            .map(|(s, _)| format!("<execute of prepared statement \"{}\">", String::from_utf8_lossy(s))),
        _ => None,
    }
}

/// Frames client bytes and appends them (rewritten when `statements` is given) to the
/// server's write buffer. Returns how many bytes were used and whether a Terminate
/// was met.
fn forward_client_bytes(
    buf: &[u8],
    framer: &mut Framer,
    txn: &mut TxnTracker,
    server: &mut ServerConn,
    statements: Option<&mut TxnRewrite<'_>>,
    max: usize,
    mut label: Option<&mut Option<String>>,
) -> Result<(usize, bool), RelayEnd> {
    let ServerConn { to_server: wbuf, statements: server_statements, expect, .. } = server;
    let mut rewriter = statements.map(|t| Rewriter {
        client: &mut *t.client,
        server: server_statements,
        registry: t.registry,
        expect,
        effects: &mut *t.effects,
        reject_session_features: t.reject_session_features,
    });
    let mut copied = 0;
    let mut terminated = false;
    let mut malformed = None;
    let mut bad_type = None;
    // Whole messages are needed to rewrite them; only COPY data streams through.
    let inspect = |tag: u8| if tag == codes::COPY_DATA { 0 } else { max };
    let r = framer.scan::<Infallible>(buf, max, inspect, |f| {
        if let Frame::Whole { tag, body, at } = f {
            wbuf.extend_from_slice(&buf[copied..at]);
            let end = at + HEADER_LEN + body.len();
            copied = end;
            if tag == codes::TERMINATE {
                terminated = true;
                return Ok(Step::Stop);
            }
            if let Some(l) = label.as_mut().filter(|l| l.is_none()) {
                **l = label_of(tag, body);
            }
            if !codes::is_frontend(tag) {
                // PostgreSQL would answer FATAL and hang up; so does pgmux, without
                // passing it on (the server would close a pooled connection).
                bad_type = Some(tag);
                return Ok(Step::Stop);
            }
            if !txn.client_sent(tag) {
                // A Sync during COPY IN: the server ignores it; so do we.
                wbuf.extend_from_slice(&buf[at..end]);
                return Ok(Step::Continue);
            }
            match rewriter.as_mut() {
                Some(rw) => {
                    if let Err(m) = rw.message(tag, body, &buf[at..end], wbuf) {
                        malformed = Some(m);
                        return Ok(Step::Stop);
                    }
                }
                None => wbuf.extend_from_slice(&buf[at..end]),
            }
        } else {
            txn.client_sent(f.tag());
        }
        Ok(Step::Continue)
    });
    let n = match r {
        Ok(Ok(n)) => n,
        Ok(Err(bad)) => return Err(RelayEnd::ClientFailed(bad_length(bad))),
        Err(never) => match never {},
    };
    if let Some(m) = malformed {
        return Err(RelayEnd::ClientFailed(ProtocolError::Malformed(m)));
    }
    if let Some(t) = bad_type {
        return Err(RelayEnd::ClientFailed(ProtocolError::BadType(t)));
    }
    if !terminated {
        wbuf.extend_from_slice(&buf[copied..n]);
    }
    Ok((n, terminated))
}
