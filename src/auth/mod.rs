//! Authentication primitives, free of I/O.
//!
//! - [`scram`]: SCRAM-SHA-256 secrets (from a plaintext password or a `pg_authid`
//!   verifier) and the server side of the exchange pgmux runs with its clients.
//! - [`md5`]: PostgreSQL's md5 challenge-response.
//!
//! The conversations themselves (which message when) live with the connection that
//! has them: `client::login` faces clients, `server::login` faces PostgreSQL.

pub mod md5;
pub mod scram;

use subtle::ConstantTimeEq;

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
