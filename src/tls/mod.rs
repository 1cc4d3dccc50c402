//! TLS settings built from the config: the [`Acceptor`] for clients and the
//! [`Upstream`] connector for servers. Both are rebuilt from their files on every
//! RELOAD and swapped in whole; connections already open keep the ones they began with.
//!
//! rustls with the *ring* provider. The byte-moving side is `net::tls`.

pub mod certs;
mod settings;
mod upstream;

use std::io;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::net::{tls::TlsStream, Stream};
pub use settings::{ClientTlsConfig, ClientTlsMode, ServerTlsConfig, ServerTlsMode};
pub use upstream::{Upstream, UpstreamHandle};

/// A TLS setting that cannot be used: the key at fault (`tls.cert`, `server_tls.ca`
/// ...) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl TlsError {
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> TlsError {
        TlsError { key, message: message.into() }
    }
}

/// The ALPN protocol PostgreSQL 17 requires with direct TLS negotiation.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS for clients: a certificate, its key, and the channel binding it implies.
pub struct Acceptor {
    config: Arc<rustls::ServerConfig>,
    /// `tls-server-end-point` data; `None` if the certificate's signature has no hash.
    channel_binding: Option<Arc<[u8]>>,
}

impl Acceptor {
    /// Builds from `tls:`; errors name the key (`tls.cert`, `tls.key`) at fault.
    pub fn load(c: &ClientTlsConfig) -> Result<Acceptor, TlsError> {
        let (Some(cert), Some(key)) = (&c.cert, &c.key) else {
            return Err(TlsError::new("tls.cert", "TLS for clients needs both cert and key"));
        };
        let chain = certs::load_certs(cert).map_err(|m| TlsError::new("tls.cert", m))?;
        let private = certs::load_key(key).map_err(|m| TlsError::new("tls.key", m))?;
        let channel_binding = certs::end_point_hash(&chain[0]).map(Arc::from);
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("tls.cert", e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| TlsError::new("tls.key", format!("does not fit the certificate: {e}")))?;
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Acceptor { config: Arc::new(config), channel_binding })
    }

    /// Runs the handshake on a client socket. `early`: bytes already read from it
    /// (the start of a ClientHello, with direct negotiation).
    pub async fn accept(&self, tcp: TcpStream, early: &[u8]) -> io::Result<Stream> {
        let conn = rustls::ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        let tls = TlsStream::new(tcp, rustls::Connection::Server(conn), early, self.channel_binding.clone())?;
        tls.handshake().await?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// Direct negotiation: the client must have said "postgresql" by ALPN.
    pub fn alpn_ok(stream: &Stream) -> bool {
        match stream {
            Stream::Tls(t) => t.alpn_protocol().as_deref() == Some(ALPN_POSTGRESQL),
            Stream::Plain(_) | Stream::Unix(_) => false,
        }
    }
}

/// What the client side uses, as one swappable value.
pub struct ClientTls {
    pub mode: ClientTlsMode,
    /// `None`: TLS off for clients (mode disable, or no certificate configured).
    pub acceptor: Option<Acceptor>,
}

impl ClientTls {
    /// From the `tls:` block.
    pub fn from_settings(t: &ClientTlsConfig) -> Result<ClientTls, TlsError> {
        let acceptor = match (t.mode, &t.cert) {
            (ClientTlsMode::Disable, _) | (_, None) => None,
            _ => Some(Acceptor::load(t)?),
        };
        Ok(ClientTls { mode: t.mode, acceptor })
    }
}
