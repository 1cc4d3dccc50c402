//! The hot path: shuttle bytes between a client and its server connection.
//!
//! Both sockets are driven by readiness (`readable`/`writable` + `try_read`/
//! `try_write`) in one task, so neither direction can block the other: a client
//! writing a large pipeline while the server writes large results never deadlocks.
//! Bytes are forwarded as read, in one write per read; the [`Framer`] only looks at
//! message headers (and the status byte of ReadyForQuery) to feed the
//! [`TxnTracker`]. Row data is never decoded or copied.

use std::convert::Infallible;
use std::io;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::responses::{drop_ignored_syncs, on_server_message, Edits};
use super::rewrite::Rewriter;
use super::txn::TxnTracker;
use crate::prepared::{ClientStatements, Registry};
use crate::sql::SessionEffects;
use crate::protocol::codes;
use crate::protocol::frame::{BadLength, Frame, Framer, Step, HEADER_LEN};
use crate::server::{consume, ServerConn, READ_BUF};

/// Size the client read buffer grows by.
pub const CLIENT_READ_BUF: usize = 8 * 1024;

/// Why the relay stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// The transaction is over and every byte delivered: the server may go.
    Boundary,
    /// Session mode: shutdown was requested while the session was between transactions.
    Shutdown,
    /// The client closed or sent Terminate.
    ClientGone,
    /// The server connection broke (its last words were forwarded).
    ServerGone(String),
    /// The client sent something impossible.
    ClientProtocol(String),
    /// The server sent something impossible.
    ServerProtocol(String),
}

/// When to hand control back to the session.
pub enum Hold<'a> {
    /// Transaction mode: at the first transaction boundary.
    UntilBoundary,
    /// Session mode: only when the client leaves, or at a boundary once shutdown begins.
    Session(&'a mut watch::Receiver<bool>),
}

pub struct Relay<'a> {
    pub client: &'a TcpStream,
    pub cbuf: &'a mut BytesMut,
    pub cframer: &'a mut Framer,
    pub server: &'a mut ServerConn,
    pub txn: &'a mut TxnTracker,
    /// Transaction mode: the client's statements, rewritten onto shared server names,
    /// and what its queries do to its session.
    pub statements: Option<TxnRewrite<'a>>,
    pub max_message: usize,
}

/// What transaction mode needs to rewrite a client's messages.
pub struct TxnRewrite<'a> {
    pub client: &'a mut ClientStatements,
    pub registry: &'a Registry,
    pub effects: &'a mut SessionEffects,
    pub reject_session_features: bool,
}

enum Event {
    ServerReadable,
    ClientReadable,
    ClientWritable,
    ServerWritable,
    Shutdown,
}

#[inline]
fn server_inspect(tag: u8) -> usize {
    match tag {
        codes::READY_FOR_QUERY => 1,
        // Errors are read whole (they are small) to notice stale cached plans.
        codes::ERROR_RESPONSE => 8192,
        _ => 0,
    }
}

impl Relay<'_> {
    pub async fn run(mut self, mut hold: Hold<'_>) -> RelayEnd {
        let mut sframer = Framer::default();
        let mut edits = Edits::default();
        // Server bytes at the front of rbuf that are scanned and due to the client.
        let mut s_out = 0usize;
        // The client's first message(s) are already buffered.
        let mut client_done = match self.scan_client() {
            Ok(r) => r,
            Err(e) => return e,
        };
        loop {
            let mut c_out = self.server.wbuf.len();
            if c_out > 0 {
                match self.server.stream.try_write(&self.server.wbuf) {
                    Ok(w) => {
                        consume(&mut self.server.wbuf, w);
                        c_out -= w;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return RelayEnd::ServerGone(e.to_string()),
                }
            }
            if s_out > 0 {
                match self.client.try_write(&self.server.rbuf[..s_out]) {
                    Ok(w) => {
                        consume(&mut self.server.rbuf, w);
                        s_out -= w;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return RelayEnd::ClientGone,
                }
            }
            if s_out == 0 && c_out == 0 {
                if client_done && self.txn.quiescent() {
                    return RelayEnd::ClientGone;
                }
                if self.txn.at_boundary() {
                    match &hold {
                        Hold::UntilBoundary => return RelayEnd::Boundary,
                        Hold::Session(rx) if *rx.borrow() => return RelayEnd::Shutdown,
                        Hold::Session(_) => {}
                    }
                }
            }
            let session_idle = c_out == 0 && s_out == 0 && self.txn.at_boundary();
            let ev = {
                let shutdown = async {
                    match &mut hold {
                        Hold::Session(rx) => {
                            let _ = rx.changed().await;
                        }
                        Hold::UntilBoundary => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    biased;
                    r = self.server.stream.readable(), if s_out == 0 => r.map(|_| Event::ServerReadable),
                    r = self.client.readable(), if c_out == 0 && !client_done => r.map(|_| Event::ClientReadable),
                    r = self.client.writable(), if s_out > 0 => r.map(|_| Event::ClientWritable),
                    r = self.server.stream.writable(), if c_out > 0 => r.map(|_| Event::ServerWritable),
                    _ = shutdown, if session_idle => Ok(Event::Shutdown),
                }
            };
            match ev {
                Err(e) => return RelayEnd::ServerGone(e.to_string()),
                Ok(Event::ClientWritable | Event::ServerWritable | Event::Shutdown) => {}
                Ok(Event::ServerReadable) => {
                    let rbuf = &mut self.server.rbuf;
                    if rbuf.capacity() - rbuf.len() < 1024 {
                        rbuf.reserve(READ_BUF);
                    }
                    match crate::net::read_some(&self.server.stream, rbuf) {
                        Ok(0) => return RelayEnd::ServerGone("server closed the connection".into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return RelayEnd::ServerGone(e.to_string()),
                    }
                    let txn = &mut *self.txn;
                    let rewriting = self.statements.is_some();
                    let (statements, expect) = (&mut self.server.statements, &mut self.server.expect);
                    let scanned = sframer.scan::<Infallible>(rbuf, self.max_message, server_inspect, |f| {
                        let (tag, at, body, ignored) = match f {
                            Frame::Whole { tag, body, at } => (tag, at, body, txn.server_sent(tag, body)),
                            Frame::Streaming { tag, at, .. } => (tag, at, &[][..], txn.server_sent(tag, &[])),
                        };
                        if rewriting {
                            on_server_message(tag, at, body, expect, statements, &mut edits);
                            if ignored > 0 {
                                drop_ignored_syncs(expect, ignored);
                            }
                        }
                        Ok(Step::Continue)
                    });
                    match scanned {
                        Ok(Ok(n)) if edits.is_empty() => s_out = n,
                        Ok(Ok(n)) => s_out = edits.apply(rbuf, n),
                        Ok(Err(bad)) => return RelayEnd::ServerProtocol(describe_bad(bad)),
                        Err(never) => match never {},
                    }
                }
                Ok(Event::ClientReadable) => {
                    if self.cbuf.capacity() - self.cbuf.len() < 1024 {
                        self.cbuf.reserve(CLIENT_READ_BUF);
                    }
                    match crate::net::read_some(self.client, self.cbuf) {
                        Ok(0) => return RelayEnd::ClientGone,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(_) => return RelayEnd::ClientGone,
                    }
                    match self.scan_client() {
                        Ok(done) => client_done = done,
                        Err(e) => return e,
                    }
                }
            }
        }
    }

    /// Moves the complete client messages in `cbuf` to the server's write buffer,
    /// rewritten in transaction mode; returns whether the client said Terminate
    /// (which is not forwarded).
    fn scan_client(&mut self) -> Result<bool, RelayEnd> {
        let txn = &mut *self.txn;
        let ServerConn { wbuf, statements, expect, .. } = &mut *self.server;
        let mut rewriter = self
            .statements
            .as_mut()
            .map(|t| Rewriter {
                client: &mut *t.client,
                server: statements,
                registry: t.registry,
                expect,
                effects: &mut *t.effects,
                reject_session_features: t.reject_session_features,
            });
        let buf = &self.cbuf[..];
        let max = self.max_message;
        let mut copied = 0;
        let mut terminated = false;
        let mut malformed = None;
        // Whole messages are needed to rewrite them; only COPY data streams through.
        let inspect = |tag: u8| if tag == codes::COPY_DATA { 0 } else { max };
        let r = self.cframer.scan::<Infallible>(buf, max, inspect, |f| {
            if let Frame::Whole { tag, body, at } = f {
                wbuf.extend_from_slice(&buf[copied..at]);
                let end = at + HEADER_LEN + body.len();
                copied = end;
                if tag == codes::TERMINATE {
                    terminated = true;
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
            Ok(Err(bad)) => return Err(RelayEnd::ClientProtocol(describe_bad(bad))),
            Err(never) => match never {},
        };
        if let Some(m) = malformed {
            return Err(RelayEnd::ClientProtocol(m.to_string()));
        }
        if !terminated {
            wbuf.extend_from_slice(&buf[copied..n]);
        }
        consume(self.cbuf, n);
        Ok(terminated)
    }
}

fn describe_bad(b: BadLength) -> String {
    format!("invalid message length {} for message type \"{}\"", b.len, b.tag.escape_ascii())
}
