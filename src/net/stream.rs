//! [`Stream`]: a client's or server's socket, plain or TLS (or a client's Unix-domain
//! socket, `unix_socket_dir`), with the readiness calls
//! the relay uses (`poll_read_ready`, `read_some`, `poll_write_ready`, `try_write`) and whole
//! writes for everything off the hot path.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::tls::TlsStream;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    /// A client on the Unix socket (never TLS, as in PostgreSQL).
    Unix(UnixStream),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Plain(s)
    }
}

impl Stream {
    /// Moves a plain socket to the reactor of this thread's scheduler (each worker
    /// thread has its own, see [`crate::worker`]), so that its readiness wakes no
    /// other thread; says whether it did. A TLS stream stays where it is, and still
    /// works (its readiness goes through the thread that opened it).
    pub fn rehome(&mut self) -> io::Result<bool> {
        use std::os::fd::AsFd;
        // A duplicate of the descriptor registered here; the old one's registration
        // goes with it (the socket stays open through the duplicate).
        match self {
            Stream::Plain(s) => *s = TcpStream::from_std(s.as_fd().try_clone_to_owned()?.into())?,
            Stream::Unix(s) => *s = UnixStream::from_std(s.as_fd().try_clone_to_owned()?.into())?,
            Stream::Tls(_) => return Ok(false),
        }
        Ok(true)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// `tls-server-end-point` data for SCRAM-SHA-256-PLUS, on a TLS client connection.
    pub fn channel_binding(&self) -> Option<&[u8]> {
        match self {
            Stream::Tls(t) => t.channel_binding(),
            _ => None,
        }
    }

    /// The peer's address; a Unix-socket client has none (an error).
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Plain(s) => s.peer_addr(),
            Stream::Tls(t) => t.tcp.peer_addr(),
            Stream::Unix(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "a Unix-socket peer has no IP address")),
        }
    }

    /// Whether a read may return something (TLS: plaintext may already be buffered),
    /// for a hand-written poll: the socket keeps one reader waker (this task's), so
    /// waiting registers no queue entry to undo afterwards.
    #[inline]
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Stream::Tls(t) = self {
            if t.has_buffered() {
                return Poll::Ready(Ok(()));
            }
        }
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            Stream::Tls(t) => t.tcp.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
        }
    }

    /// Whether the socket takes a write now, for a hand-written poll.
    #[inline]
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_write_ready(cx),
            Stream::Tls(t) => t.tcp.poll_write_ready(cx),
            Stream::Unix(s) => s.poll_write_ready(cx),
        }
    }

    /// Reads what is available into the spare capacity of `buf` (reserve first).
    #[inline]
    pub fn read_some(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => super::read_some(s, buf),
            Stream::Tls(t) => t.read_some(buf),
            Stream::Unix(s) => super::read_some(s, buf),
        }
    }

    /// Writes what the socket takes now. On TLS an empty `buf` sends queued
    /// ciphertext (see [`Stream::out_pending`]).
    #[inline]
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.try_write(buf),
            Stream::Tls(t) => t.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
        }
    }

    /// TLS only: bytes already accepted by [`Stream::try_write`] still wait for the socket.
    #[inline]
    pub fn out_pending(&self) -> bool {
        match self {
            Stream::Tls(t) => t.out_pending(),
            _ => false,
        }
    }

    /// False if an idle connection has data waiting or is closed (either way it is
    /// unusable); reads and drops what is there only then.
    pub fn idle_is_clean(&self) -> bool {
        match self {
            Stream::Plain(s) => {
                if super::quiet(s) {
                    return true;
                }
                let mut probe = [0u8; 1];
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            // TLS records that carry no data (a session ticket) leave it clean.
            Stream::Tls(t) => {
                let mut probe = BytesMut::with_capacity(64);
                matches!(t.read_some(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Unix(s) => {
                if super::quiet(s) {
                    return true;
                }
                let mut probe = [0u8; 1];
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes all of `buf` and waits until the socket has taken it.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            // Boxed: this future sits in every client's task; TLS's is the larger.
            Stream::Tls(t) => Box::pin(t.write_all(buf)).await,
            Stream::Unix(s) => Box::pin(s.write_all(buf)).await,
        }
    }

    /// Closes politely: close_notify on TLS, then FIN.
    pub async fn shutdown(&mut self) {
        if let Stream::Tls(t) = self {
            t.close();
        }
        let _ = match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(t) => t.tcp.shutdown().await,
            Stream::Unix(s) => s.shutdown().await,
        };
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, rb: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, rb),
            Stream::Tls(t) => t.poll_read(cx, rb),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, rb),
        }
    }
}
