//! Backend messages that pgmux itself sends to clients, encoded with `pgwire`.
//!
//! These are off the forwarding path (login, errors, admin answers): clarity over
//! speed. Forwarded server messages never pass through here.

use bytes::{Bytes, BytesMut};
use pgwire::messages::response::{ErrorResponse, NoticeResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{Authentication, BackendKeyData, NegotiateProtocolVersion, SecretKey};
use pgwire::messages::Message;

use super::PgError;

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

/// NotificationResponse (`A`): written by hand, as fast as a forwarded one (a
/// burst of notifications goes out this way to every listening client).
pub fn notification(buf: &mut BytesMut, pid: i32, channel: &str, payload: &str) {
    use bytes::BufMut;
    let len = 4 + 4 + channel.len() + 1 + payload.len() + 1;
    buf.reserve(1 + len);
    buf.put_u8(b'A');
    buf.put_i32(len as i32);
    buf.put_i32(pid);
    buf.put_slice(channel.as_bytes());
    buf.put_u8(0);
    buf.put_slice(payload.as_bytes());
    buf.put_u8(0);
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

/// ParameterStatus, written in place (a login sends a dozen: no copies of the strings).
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    use bytes::BufMut;
    let len = 4 + name.len() + 1 + value.len() + 1;
    buf.reserve(1 + len);
    buf.put_u8(b'S');
    buf.put_i32(len as i32);
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
    buf.put_slice(value.as_bytes());
    buf.put_u8(0);
}

/// BackendKeyData: a 4-byte secret (protocol 3.0) or a longer one (3.2).
pub fn backend_key(buf: &mut BytesMut, pid: i32, secret: &[u8]) {
    let key = match <[u8; 4]>::try_from(secret) {
        Ok(b) => SecretKey::I32(i32::from_be_bytes(b)),
        Err(_) => SecretKey::Bytes(bytes::Bytes::copy_from_slice(secret)),
    };
    put(BackendKeyData::new(pid, key), buf);
}

/// A RowDescription of text-format columns; `numeric` columns are typed int8, others text.
pub fn row_description(buf: &mut BytesMut, columns: &[(&str, bool)]) {
    use pgwire::messages::data::{FieldDescription, RowDescription};
    let fields = columns
        .iter()
        .map(|(name, numeric)| {
            let (type_id, size) = if *numeric { (20, 8) } else { (25, -1) };
            FieldDescription::new(name.to_string(), 0, 0, type_id, size, -1, 0)
        })
        .collect();
    put(RowDescription::new(fields), buf);
}

/// A DataRow of text values (`None` is NULL).
pub fn data_row(buf: &mut BytesMut, values: &[Option<String>]) {
    use bytes::BufMut;
    let len: usize = 4 + 2 + values.iter().map(|v| 4 + v.as_ref().map_or(0, |s| s.len())).sum::<usize>();
    buf.reserve(len + 1);
    buf.put_u8(b'D');
    buf.put_i32(len as i32);
    buf.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(s) => {
                buf.put_i32(s.len() as i32);
                buf.put_slice(s.as_bytes());
            }
            None => buf.put_i32(-1),
        }
    }
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    put(pgwire::messages::response::CommandComplete::new(tag.to_string()), buf);
}

/// Tells a client that asked for a minor version pgmux does not speak, or for
/// `_pq_.` options, which version it gets (`(major << 16) | minor`, as PostgreSQL
/// sends it: libpq 18 reads a 0 there as a downgrade to before 3.0 and gives up) and
/// which options are ignored.
pub fn negotiate_protocol(buf: &mut BytesMut, version: i32, unsupported: Vec<String>) {
    put(NegotiateProtocolVersion::new(version, unsupported), buf);
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
    fn negotiation_names_protocol_3_0_and_the_ignored_options() {
        let mut b = BytesMut::new();
        negotiate_protocol(&mut b, 196608, vec!["_pq_.x".into()]);
        assert_eq!(b[0], b'v');
        assert_eq!(&b[5..9], &196608i32.to_be_bytes(), "version 3.0, as (3 << 16) | 0");
        assert_eq!(&b[9..13], &1i32.to_be_bytes());
        assert_eq!(&b[13..], b"_pq_.x\0");
    }

    #[test]
    fn backend_key_data_carries_short_and_long_secrets() {
        let mut b = BytesMut::new();
        backend_key(&mut b, 7, &[1, 2, 3, 4]);
        assert_eq!(&b[..], b"K\0\0\0\x0c\0\0\0\x07\x01\x02\x03\x04");
        let mut b = BytesMut::new();
        backend_key(&mut b, 7, &[9; 32]);
        assert_eq!(i32::from_be_bytes(b[1..5].try_into().unwrap()), 4 + 4 + 32);
        assert_eq!(&b[9..], &[9; 32]);
    }

    #[test]
    fn parameter_status_is_what_pgwire_encodes() {
        for (k, v) in [("client_encoding", "UTF8"), ("application_name", ""), ("TimeZone", "Europe/Zürich")] {
            let (mut ours, mut theirs) = (BytesMut::new(), BytesMut::new());
            parameter_status(&mut ours, k, v);
            put(pgwire::messages::startup::ParameterStatus::new(k.to_string(), v.to_string()), &mut theirs);
            assert_eq!(ours, theirs, "{k}={v}");
        }
        let mut b = BytesMut::new();
        parameter_status(&mut b, "a", "b");
        assert_eq!(&b[..], b"S\0\0\0\x08a\0b\0");
    }

    #[test]
    fn ready_layout() {
        let mut b = BytesMut::new();
        ready(&mut b, b'T');
        assert_eq!(&b[..], b"Z\0\0\0\x05T");
    }
}
