//! The `tls:` (clients to pgmux) and `server_tls:` (pgmux to PostgreSQL) blocks of
//! the configuration file, as the TLS module reads them.

use std::path::PathBuf;

use serde::Deserialize;

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
