//! The `tls:` (clients to pgmux) and `server_tls:` (pgmux to PostgreSQL) blocks.
//! Validation reads the files, so a wrong path or a key that does not match its
//! certificate is reported at load (and a RELOAD with one changes nothing).

use std::path::PathBuf;

use serde::Deserialize;

use super::Config;

/// `tls:`: TLS for clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsConfig {
    /// `disable`, `allow` (default: TLS for clients that ask) or `require`.
    #[serde(default)]
    pub mode: ClientTlsMode,
    /// PEM certificate chain, leaf first.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// Answer SSLRequest with 'N'.
    Disable,
    /// TLS for clients that ask; plain for the others.
    #[default]
    Allow,
    /// Refuse plain clients (28000), as a `hostssl`-only pg_hba.conf does.
    Require,
}

/// `server_tls:`: TLS to PostgreSQL, with libpq's `sslmode` names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    #[serde(default)]
    pub mode: ServerTlsMode,
    /// PEM CA certificates that sign the servers' certificates (verify-ca, verify-full).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// A client certificate and key to present to the servers (optional).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ServerTlsMode {
    #[serde(rename = "disable")]
    Disable,
    /// TLS if the server offers it, without checking its certificate (libpq's default).
    #[default]
    #[serde(rename = "prefer")]
    Prefer,
    /// TLS or no connection; the certificate is not checked.
    #[serde(rename = "require")]
    Require,
    /// TLS with a certificate signed by `ca`.
    #[serde(rename = "verify-ca")]
    VerifyCa,
    /// As verify-ca, and the certificate names the host pgmux connected to.
    #[serde(rename = "verify-full")]
    VerifyFull,
}

impl Config {
    pub(super) fn validate_tls(&self) -> Result<(), (String, String)> {
        let t = &self.tls;
        if t.mode != ClientTlsMode::Disable || t.cert.is_some() || t.key.is_some() {
            match (&t.cert, &t.key) {
                (Some(_), Some(_)) => {
                    if let Err((key, msg)) = crate::tls::Acceptor::load(t) {
                        return Err((format!("tls.{key}"), msg));
                    }
                }
                (None, _) if t.mode == ClientTlsMode::Require || t.key.is_some() => {
                    return Err(("tls.cert".into(), "TLS for clients needs both cert and key".into()));
                }
                (Some(_), None) => return Err(("tls.key".into(), "TLS for clients needs both cert and key".into())),
                _ => {}
            }
        }
        let s = &self.server_tls;
        if matches!(s.mode, ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull) && s.ca.is_none() {
            return Err(("server_tls.ca".into(), "verify-ca and verify-full need the CA that signs the servers' certificates".into()));
        }
        if s.cert.is_some() != s.key.is_some() {
            return Err(("server_tls.cert".into(), "a client certificate needs both cert and key".into()));
        }
        if let Err((key, msg)) = crate::tls::Upstream::load(s) {
            return Err((format!("server_tls.{key}"), msg));
        }
        Ok(())
    }
}
