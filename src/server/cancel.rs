//! Cancelling what a server connection runs: its address and BackendKeyData, and
//! the CancelRequest that goes to it on a connection of its own.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A server connection's cancel key: where it is and its BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: i32,
}

impl CancelTarget {
    /// Sends a CancelRequest (a new connection, as the protocol requires).
    pub async fn send(self) -> std::io::Result<()> {
        let pkt = crate::protocol::frontend::cancel_request(self.pid, self.secret);
        let mut s = tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(self.addr)).await??;
        s.write_all(&pkt).await?;
        s.shutdown().await?;
        Ok(())
    }

    /// Sends it from a task of its own: the caller goes on at once.
    pub fn send_later(self) {
        tokio::spawn(async move {
            if let Err(e) = self.send().await {
                tracing::debug!(server = %self.addr, error = %e, "cancel request not delivered");
            }
        });
    }
}
