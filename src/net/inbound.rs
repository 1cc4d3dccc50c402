//! [`Inbound`]: a client's bytes read ahead, for the paths that read whole messages
//! one at a time (the login, the admin console). One `recv` takes a whole message,
//! or several, where reading a length and then a body took two or three.
//!
//! What is read ahead belongs to the client: whoever reads next takes it
//! ([`Inbound::into_rest`]): the session after a login (a client that sent its
//! first query without waiting), or the TLS handshake after a direct TLS
//! connection's first byte. Bytes read ahead of an `SSLRequest` are refused by the
//! caller, as PostgreSQL refuses them (they were sent in the clear).

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use super::Stream;

/// Read ahead at most this much at a time (a startup packet is about 100 bytes,
/// a SCRAM message about 100; a longer message takes more reads).
const READ_AHEAD: usize = 512;

/// Bytes read from a client and not yet consumed.
#[derive(Default)]
pub struct Inbound {
    buf: BytesMut,
}

impl Inbound {
    /// Reads until at least `n` bytes are buffered; end of stream is an error.
    async fn fill(&mut self, stream: &mut Stream, n: usize) -> io::Result<()> {
        while self.buf.len() < n {
            self.buf.reserve((n - self.buf.len()).max(READ_AHEAD));
            if stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// The next byte, not consumed.
    pub async fn peek_u8(&mut self, stream: &mut Stream) -> io::Result<u8> {
        self.fill(stream, 1).await?;
        Ok(self.buf[0])
    }

    /// The next 4 bytes as a big-endian `i32`, not consumed.
    pub async fn peek_i32(&mut self, stream: &mut Stream, at: usize) -> io::Result<i32> {
        self.fill(stream, at + 4).await?;
        Ok(i32::from_be_bytes(self.buf[at..at + 4].try_into().expect("4 bytes")))
    }

    /// The next `n` bytes, consumed.
    pub async fn take(&mut self, stream: &mut Stream, n: usize) -> io::Result<BytesMut> {
        self.fill(stream, n).await?;
        Ok(self.buf.split_to(n))
    }

    /// Drops the next `n` bytes (already buffered).
    pub fn skip(&mut self, n: usize) {
        self.buf.advance(n);
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// What was read ahead and not consumed (nothing allocated when empty).
    pub fn into_rest(self) -> BytesMut {
        if self.buf.is_empty() {
            BytesMut::new()
        } else {
            self.buf
        }
    }
}
