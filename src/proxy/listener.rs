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
    /// Binds `listen`.
    pub async fn bind(config: &Config) -> io::Result<Listener> {
        let addr = config.listen_addr();
        let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        sock.set_reuseaddr(true)?;
        sock.bind(addr)?;
        Ok(Listener { tcp: sock.listen(4096)? })
    }

    /// Accepts clients until shutdown begins.
    pub async fn serve(self, state: Arc<State>) {
        loop {
            tokio::select! {
                r = self.tcp.accept() => match r {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(crate::client::serve(stream, state.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = state.shutdown.wait() => break,
            }
        }
    }
}
