//! Backend messages that pgmux itself sends to clients, encoded with `pgwire`.
//!
//! These are off the forwarding path (login, errors, admin answers): clarity over
//! speed. Forwarded server messages never pass through here.

use bytes::{Bytes, BytesMut};
use pgwire::messages::response::{ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};
use pgwire::messages::Message;

use crate::error::PgError;

fn put(msg: impl Message, buf: &mut BytesMut) {
    // pgwire only fails for messages above its size limits; ours are small.
    msg.encode(buf).expect("encoding a small backend message");
}

fn fields(e: &PgError) -> Vec<(u8, String)> {
    let mut f = vec![
        (b'S', e.severity.as_str().to_string()),
        (b'V', e.severity.as_str().to_string()),
        (b'C', e.code.to_string()),
        (b'M', e.message.clone()),
    ];
    if let Some(d) = &e.detail {
        f.push((b'D', d.clone()));
    }
    if let Some(h) = &e.hint {
        f.push((b'H', h.clone()));
    }
    f
}

pub fn error(buf: &mut BytesMut, e: &PgError) {
    put(ErrorResponse::new(fields(e)), buf);
}

pub fn notice(buf: &mut BytesMut, e: &PgError) {
    put(NoticeResponse::new(fields(e)), buf);
}

pub fn ready(buf: &mut BytesMut, status: u8) {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    put(ReadyForQuery::new(status), buf);
}

pub fn auth_ok(buf: &mut BytesMut) {
    put(Authentication::Ok, buf);
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    put(Authentication::MD5Password(salt.to_vec()), buf);
}

pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    put(Authentication::SASL(mechanisms.iter().map(|m| m.to_string()).collect()), buf);
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    put(Authentication::SASLContinue(Bytes::copy_from_slice(data)), buf);
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    put(Authentication::SASLFinal(Bytes::copy_from_slice(data)), buf);
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put(ParameterStatus::new(name.to_string(), value.to_string()), buf);
}

pub fn backend_key(buf: &mut BytesMut, pid: i32, secret: i32) {
    put(BackendKeyData::new(pid, SecretKey::I32(secret)), buf);
}

/// Tells a client asking for protocol 3.x (x > 0) that pgmux speaks 3.0, and which
/// `_pq_.` options it ignores.
pub fn negotiate_protocol(buf: &mut BytesMut, unsupported: Vec<String>) {
    put(NegotiateProtocolVersion::new(0, unsupported), buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{PgError, SqlState};

    #[test]
    fn error_layout() {
        let mut b = BytesMut::new();
        error(&mut b, &PgError::fatal(SqlState::INVALID_PASSWORD, "nope"));
        assert_eq!(b[0], b'E');
        let len = i32::from_be_bytes(b[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, b.len());
        assert!(b.windows(6).any(|w| w == b"C28P01"));
        assert_eq!(*b.last().unwrap(), 0);
    }

    #[test]
    fn ready_layout() {
        let mut b = BytesMut::new();
        ready(&mut b, b'T');
        assert_eq!(&b[..], b"Z\0\0\0\x05T");
    }
}
