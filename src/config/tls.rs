//! Validation of the `tls:` (clients to pgmux) and `server_tls:` (pgmux to PostgreSQL)
//! blocks, whose types are [`crate::tls`]'s. Validation reads the files, so a wrong path or a key that does not match its
//! certificate is reported at load (and a RELOAD with one changes nothing).

use super::Config;
use crate::tls::{ClientTlsMode, ServerTlsMode};

impl Config {
    pub(super) fn validate_tls(&self) -> Result<(), (String, String)> {
        let t = &self.tls;
        if t.mode != ClientTlsMode::Disable || t.cert.is_some() || t.key.is_some() {
            match (&t.cert, &t.key) {
                (Some(_), Some(_)) => {
                    if let Err(e) = crate::tls::Acceptor::load(t) {
                        return Err((e.key.into(), e.message));
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
        if let Err(e) = crate::tls::Upstream::load(s) {
            return Err((e.key.into(), e.message));
        }
        Ok(())
    }
}
