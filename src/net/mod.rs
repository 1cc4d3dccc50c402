//! Sockets: [`Stream`] (TCP, TLS over TCP (see [`tls`]), or a Unix-domain socket)
//! and reads that tell tokio when a socket is drained.
//!
//! tokio forgets a socket's readiness only when a read fails with `WouldBlock`, so
//! after an ordinary short read the next wait costs one more `recv` that returns
//! EAGAIN. [`read_some`] treats a short read as "drained" and clears the readiness at
//! once (safe: tokio's readiness ticks keep an event that arrived meanwhile). On the
//! hot path that saves a system call per direction per transaction.

pub mod buffers;
pub mod inbound;
pub mod stream;
pub mod tls;

pub use inbound::Inbound;
pub use stream::Stream;

use std::io;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// A TCP or Unix-domain socket, for the reads below.
pub trait Socket: std::os::fd::AsFd {
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Socket for TcpStream {
    #[inline]
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        TcpStream::try_io(self, interest, f)
    }
    #[inline]
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl Socket for UnixStream {
    #[inline]
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        UnixStream::try_io(self, interest, f)
    }
    #[inline]
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        UnixStream::poll_read_ready(self, cx)
    }
}

/// Reads what is available into the spare capacity of `buf` (reserve first).
/// `Ok(0)` is end of stream; `WouldBlock` means nothing to read yet.
#[inline]
pub fn read_some(stream: &impl Socket, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let want = spare.len();
    let mut got = 0;
    let r = stream.try_io(Interest::READABLE, || {
        let n = socket2::SockRef::from(stream).recv(spare)?;
        got = n;
        if n > 0 && n < want {
            // Short read: the socket is drained; let tokio clear its readiness.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    let n = match r {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => got,
        Err(e) => return Err(e),
    };
    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// True if tokio knows of nothing to read on `stream` (no system call).
pub fn quiet(stream: &impl Socket) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(stream.poll_read_ready(&mut cx), Poll::Pending)
}
