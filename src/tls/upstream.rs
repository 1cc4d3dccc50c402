//! TLS from pgmux to PostgreSQL: SSLRequest, then a rustls client handshake checked
//! as libpq's `sslmode` says (`prefer` and `require` take any certificate, `verify-ca`
//! checks the chain, `verify-full` the chain and the host name).

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{certs, provider, ServerTlsConfig, ServerTlsMode, TlsError};
use crate::net::{tls::TlsStream, Stream};

/// How to reach servers; `config` is `None` when the mode is `disable`.
pub struct Upstream {
    pub mode: ServerTlsMode,
    config: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upstream({:?})", self.mode)
    }
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream { mode: ServerTlsMode::Disable, config: None }
    }
}

/// The current [`Upstream`], shared by every pool and swapped on RELOAD.
pub type UpstreamHandle = Arc<arc_swap::ArcSwap<Upstream>>;

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl Upstream {
    /// Builds from `server_tls:`; errors name the key at fault.
    pub fn load(c: &ServerTlsConfig) -> Result<Upstream, TlsError> {
        if c.mode == ServerTlsMode::Disable {
            return Ok(Upstream::default());
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("server_tls.mode", e.to_string()))?;
        let builder = match (c.mode, &c.ca) {
            (ServerTlsMode::VerifyFull, Some(ca)) => {
                builder.with_root_certificates(certs::load_roots(ca).map_err(|m| TlsError::new("server_tls.ca", m))?)
            }
            (ServerTlsMode::VerifyCa, Some(ca)) => {
                let roots = Arc::new(certs::load_roots(ca).map_err(|m| TlsError::new("server_tls.ca", m))?);
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| TlsError::new("server_tls.ca", e.to_string()))?;
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyName(inner)))
            }
            (ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull, None) => {
                return Err(TlsError::new("server_tls.ca", "verify-ca and verify-full need the CA that signs the servers' certificates"))
            }
            _ => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCert(provider()))),
        };
        let config = match (&c.cert, &c.key) {
            (Some(cert), Some(key)) => {
                let chain = certs::load_certs(cert).map_err(|m| TlsError::new("server_tls.cert", m))?;
                let private = certs::load_key(key).map_err(|m| TlsError::new("server_tls.key", m))?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| TlsError::new("server_tls.key", format!("does not fit the certificate: {e}")))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Upstream { mode: c.mode, config: Some(Arc::new(config)) })
    }

    /// Asks a freshly connected server for TLS and runs the handshake; a plain
    /// stream when the mode allows it.
    pub async fn connect(&self, mut tcp: TcpStream, host: &str) -> io::Result<Stream> {
        let Some(config) = &self.config else {
            return Ok(Stream::Plain(tcp));
        };
        tcp.write_all(&SSL_REQUEST).await?;
        // One byte and no more: anything sent after 'S' before the handshake would
        // be an attacker's (CVE-2021-23222).
        match tcp.read_u8().await? {
            b'S' => {}
            b'N' if self.mode == ServerTlsMode::Prefer => return Ok(Stream::Plain(tcp)),
            b'N' => {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "server does not support SSL, but server_tls requires it"))
            }
            other => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected answer to SSLRequest: {:?}", other as char)))
            }
        }
        let name = match ServerName::try_from(host.to_string()) {
            Ok(n) => n,
            Err(_) if self.mode != ServerTlsMode::VerifyFull => ServerName::IpAddress(tcp.peer_addr()?.ip().into()),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("\"{host}\" is not a valid server name: {e}"))),
        };
        let conn = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        let tls = TlsStream::new(tcp, rustls::Connection::Client(conn), &[], None)?;
        tls.handshake().await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// `prefer`/`require`: any certificate, but the handshake signatures still checked.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the CA; the name is not checked.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        mid: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end, mid, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            r => r,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
