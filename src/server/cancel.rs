//! Cancelling what a server connection runs: its address and BackendKeyData, and
//! the CancelRequest that goes to it on a connection of its own. A server that
//! speaks protocol 3.2 (PostgreSQL 18) gives a longer secret (32 bytes there, up to
//! 256 allowed); older ones 4 bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The secret of a server's BackendKeyData: 4 bytes (protocol 3.0) or longer (3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSecret {
    Short([u8; 4]),
    /// Shared, so that lending the key to a client costs a reference count.
    Long(Arc<[u8]>),
}

impl ServerSecret {
    pub fn from_bytes(b: &[u8]) -> ServerSecret {
        match <[u8; 4]>::try_from(b) {
            Ok(short) => ServerSecret::Short(short),
            Err(_) => ServerSecret::Long(b.into()),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ServerSecret::Short(b) => b,
            ServerSecret::Long(b) => b,
        }
    }
}

/// A server connection's cancel key: where it is and its BackendKeyData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub pid: i32,
    pub secret: ServerSecret,
}

impl CancelTarget {
    /// Sends a CancelRequest (a new connection, as the protocol requires).
    pub async fn send(&self) -> std::io::Result<()> {
        let pkt = crate::protocol::frontend::cancel_request(self.pid, self.secret.as_bytes());
        let mut s = tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(self.addr)).await??;
        s.write_all(&pkt).await?;
        s.shutdown().await?;
        Ok(())
    }

    /// Sends it from a task of its own: the caller goes on at once.
    pub fn send_later(self: Arc<Self>) {
        tokio::spawn(async move {
            let addr = self.addr;
            if let Err(e) = self.send().await {
                tracing::debug!(server = %addr, error = %e, "cancel request not delivered");
            }
        });
    }
}
