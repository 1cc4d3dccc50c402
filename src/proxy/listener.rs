//! Accepting clients: the listening socket, and the loop that hands each accepted
//! connection to a task of its own ([`crate::client::serve`]) until shutdown begins.
//! Every way in (Unix sockets, more than one listener) belongs here.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::State;

/// Where clients connect.
pub struct Listener {
    tcp: TcpListener,
}

impl Listener {
    /// Binds `listen`, with `SO_REUSEPORT`: a new pgmux process started on the same
    /// address takes new clients while an old one drains.
    pub async fn bind(config: &Config) -> io::Result<Listener> {
        let addr = config.listen_addr();
        let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        sock.set_reuseaddr(true)?;
        sock.set_reuseport(true)?;
        sock.bind(addr)?;
        Ok(Listener { tcp: sock.listen(4096)? })
    }

    /// Accepts clients until shutdown begins; then takes, without waiting, those
    /// the kernel already queued (they are told 57P01 at once, as idle clients are,
    /// rather than reset), and closes the socket.
    pub async fn serve(self, state: Arc<State>) {
        loop {
            tokio::select! {
                r = self.tcp.accept() => match r {
                    Ok((stream, _)) => start(stream, &state),
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = state.shutdown.wait() => break,
            }
        }
        // Straight from the socket: the reactor may not have seen the last arrivals.
        let Ok(std) = self.tcp.into_std() else { return };
        while let Ok((stream, _)) = std.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                start(stream, &state);
            }
        }
    }
}

fn start(stream: tokio::net::TcpStream, state: &Arc<State>) {
    let _ = stream.set_nodelay(true);
    // Counted now: a drain that begins before the task runs waits for it.
    let arrival = state.clients.arriving();
    tokio::spawn(crate::client::serve(stream, state.clone(), arrival));
}
