//! TLS on a socket driven by readiness, as the relay drives plain sockets.
//!
//! The relay waits for `readable`/`writable` and then calls non-blocking reads and
//! writes; [`TlsStream`] offers the same calls over a rustls connection, so the hot
//! path is one loop for plain and TLS peers alike. Ciphertext the socket did not take
//! stays inside rustls; [`TlsStream::out_pending`] tells the caller to wait for
//! `writable` and call [`TlsStream::try_write`] (with nothing) until it is sent.
//!
//! The rustls state sits behind a mutex only because the relay holds the stream by
//! shared reference while it waits on both directions; one task uses it at a time, so
//! the lock is never contended.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;

/// A TCP socket carrying TLS, client or server side.
pub struct TlsStream {
    pub(crate) tcp: TcpStream,
    conn: Mutex<rustls::Connection>,
    /// `tls-server-end-point` channel binding data (server side: a hash of our certificate).
    channel_binding: Option<Arc<[u8]>>,
}

/// `io::Read` over a non-blocking socket (WouldBlock clears tokio's readiness).
struct TcpReader<'a>(&'a TcpStream);

impl Read for TcpReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

struct TcpWriter<'a>(&'a TcpStream);

impl Write for TcpWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    /// Wraps a socket whose TLS handshake has not started; `early` holds bytes
    /// already read from it (a ClientHello sent without SSLRequest).
    pub fn new(tcp: TcpStream, conn: rustls::Connection, early: &[u8], channel_binding: Option<Arc<[u8]>>) -> io::Result<TlsStream> {
        let mut conn = conn;
        let mut fed = early;
        while !fed.is_empty() {
            conn.read_tls(&mut fed)?;
        }
        // Whole records among them (a ClientHello read ahead) are processed now:
        // the handshake would otherwise wait for bytes the client already sent.
        if !early.is_empty() {
            conn.process_new_packets().map_err(tls_error)?;
        }
        Ok(TlsStream { tcp, conn: Mutex::new(conn), channel_binding })
    }

    fn lock(&self) -> MutexGuard<'_, rustls::Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn channel_binding(&self) -> Option<&[u8]> {
        self.channel_binding.as_deref()
    }

    /// The protocol agreed by ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<Vec<u8>> {
        self.lock().alpn_protocol().map(<[u8]>::to_vec)
    }

    /// Runs the handshake to its end.
    pub async fn handshake(&self) -> io::Result<()> {
        loop {
            let (handshaking, wants_read) = {
                let c = self.lock();
                (c.is_handshaking(), c.wants_read())
            };
            while self.out_pending() {
                self.tcp.writable().await?;
                match self.try_write(&[]) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if !handshaking {
                return Ok(());
            }
            if !wants_read {
                continue;
            }
            self.tcp.readable().await?;
            let mut c = self.lock();
            match c.read_tls(&mut TcpReader(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = c.process_new_packets() {
                // rustls queued an alert saying why: send it, best effort.
                let _ = c.write_tls(&mut TcpWriter(&self.tcp));
                return Err(tls_error(e));
            }
        }
    }

    /// Ciphertext is waiting for the socket to take it.
    pub fn out_pending(&self) -> bool {
        self.lock().wants_write()
    }

    /// True if a read will return at once: plaintext (or an error, or the end of
    /// the stream) is buffered.
    pub fn has_buffered(&self) -> bool {
        Self::buffered(&mut self.lock())
    }

    fn buffered(c: &mut rustls::Connection) -> bool {
        c.process_new_packets().map_or(true, |s| s.plaintext_bytes_to_read() > 0 || s.peer_has_closed())
    }

    /// Sends queued ciphertext until the socket would block.
    fn flush(&self, c: &mut rustls::Connection) -> io::Result<()> {
        while c.wants_write() {
            c.write_tls(&mut TcpWriter(&self.tcp))?;
        }
        Ok(())
    }

    /// Encrypts and sends what it can of `buf`; with an empty `buf` only sends what
    /// is queued. `WouldBlock` while earlier ciphertext is still queued.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut c = self.lock();
        match self.flush(&mut c) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !buf.is_empty() => return Err(e),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = c.writer().write(buf)?;
        match self.flush(&mut c) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Writes all of `buf` and waits until the socket has taken it.
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let mut rest = buf;
        while !rest.is_empty() || self.out_pending() {
            match self.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads plaintext into the spare capacity of `buf` (reserve first). `Ok(0)` is
    /// end of stream; `WouldBlock`: nothing yet.
    pub fn read_some(&self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            // No room would read as the end of the stream.
            buf.reserve(4096);
        }
        let start = buf.len();
        let room = buf.capacity() - start;
        buf.resize(start + room, 0);
        let r = self.read_plain(&mut buf[start..]);
        buf.truncate(start + *r.as_ref().unwrap_or(&0));
        r
    }

    fn read_plain(&self, out: &mut [u8]) -> io::Result<usize> {
        let mut c = self.lock();
        loop {
            match c.reader().read(out) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if c.read_tls(&mut TcpReader(&self.tcp))? == 0 {
                // End of stream: the reader now says clean close or not.
                let _ = c.process_new_packets();
                continue;
            }
            if let Err(e) = c.process_new_packets() {
                let _ = self.flush(&mut c);
                return Err(tls_error(e));
            }
            // Post-handshake messages (session tickets, key updates) may want out.
            match self.flush(&mut c) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn poll_read(&self, cx: &mut Context<'_>, rb: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.read_plain(rb.initialize_unfilled()) {
                Ok(n) => {
                    rb.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Self::buffered(&mut self.lock()) {
                        continue;
                    }
                    ready!(self.tcp.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends close_notify, best effort.
    pub fn close(&self) {
        let mut c = self.lock();
        c.send_close_notify();
        let _ = self.flush(&mut c);
    }
}

impl tokio::io::AsyncRead for &TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, rb: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        TlsStream::poll_read(self.get_mut(), cx, rb)
    }
}
