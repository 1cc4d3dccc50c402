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

use super::txn::TxnTracker;
use crate::protocol::codes;
use crate::protocol::frame::{BadLength, Frame, Framer, Step};
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
    pub max_message: usize,
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
    if tag == codes::READY_FOR_QUERY {
        1
    } else {
        0
    }
}

impl Relay<'_> {
    pub async fn run(mut self, mut hold: Hold<'_>) -> RelayEnd {
        let mut sframer = Framer::default();
        // Bytes at the front of each buffer that are scanned and due to the other side.
        let mut s_out = 0usize;
        // The client's first message(s) are already buffered.
        let (mut c_out, mut client_done) = match self.scan_client() {
            Ok(r) => r,
            Err(e) => return e,
        };
        loop {
            if c_out > 0 {
                match self.server.stream.try_write(&self.cbuf[..c_out]) {
                    Ok(w) => {
                        consume(self.cbuf, w);
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
                    match self.server.stream.try_read_buf(rbuf) {
                        Ok(0) => return RelayEnd::ServerGone("server closed the connection".into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return RelayEnd::ServerGone(e.to_string()),
                    }
                    let txn = &mut *self.txn;
                    let scanned = sframer.scan::<Infallible>(rbuf, self.max_message, server_inspect, |f| {
                        if let Frame::Whole { tag, body } = f {
                            txn.server_sent(tag, body);
                        } else {
                            txn.server_sent(f.tag(), &[]);
                        }
                        Ok(Step::Continue)
                    });
                    match scanned {
                        Ok(Ok(n)) => s_out = n,
                        Ok(Err(bad)) => return RelayEnd::ServerProtocol(describe_bad(bad)),
                        Err(never) => match never {},
                    }
                }
                Ok(Event::ClientReadable) => {
                    if self.cbuf.capacity() - self.cbuf.len() < 1024 {
                        self.cbuf.reserve(CLIENT_READ_BUF);
                    }
                    match self.client.try_read_buf(self.cbuf) {
                        Ok(0) => return RelayEnd::ClientGone,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(_) => return RelayEnd::ClientGone,
                    }
                    match self.scan_client() {
                        Ok((n, done)) => {
                            c_out = n;
                            client_done = done;
                        }
                        Err(e) => return e,
                    }
                }
            }
        }
    }

    /// Scans buffered client bytes; returns how many to forward and whether the
    /// client said Terminate (which is not forwarded).
    fn scan_client(&mut self) -> Result<(usize, bool), RelayEnd> {
        let txn = &mut *self.txn;
        let mut terminated = false;
        let r = self.cframer.scan::<Infallible>(self.cbuf, self.max_message, |_| 0, |f| {
            let tag = f.tag();
            if tag == codes::TERMINATE {
                terminated = true;
                return Ok(Step::Stop);
            }
            txn.client_sent(tag);
            Ok(Step::Continue)
        });
        match r {
            Ok(Ok(n)) if terminated => {
                // Drop the Terminate itself (5 bytes, the last scanned) and what follows.
                self.cbuf.truncate(n);
                Ok((n - 5, true))
            }
            Ok(Ok(n)) => Ok((n, false)),
            Ok(Err(bad)) => Err(RelayEnd::ClientProtocol(describe_bad(bad))),
            Err(never) => match never {},
        }
    }
}

fn describe_bad(b: BadLength) -> String {
    format!("invalid message length {} for message type \"{}\"", b.len, b.tag.escape_ascii())
}
