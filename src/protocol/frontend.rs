//! Frontend messages pgmux writes to servers by hand, beside those
//! `postgres_protocol::message::frontend` writes: client messages rebuilt from parts
//! of the client's own (renamed statements), the StartupMessage (with the protocol
//! version pgmux asks for) and the CancelRequest packet.

use bytes::{BufMut, BytesMut};

use super::codes::CLOSE;
use super::startup::CANCEL_REQUEST_CODE;

/// A message of type `tag` whose body is `parts`, in order.
#[inline]
pub fn message(out: &mut BytesMut, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 4;
    out.reserve(len + 1);
    out.put_u8(tag);
    out.put_i32(len as i32);
    for p in parts {
        out.put_slice(p);
    }
}

/// Close of the prepared statement `name`.
#[inline]
pub fn close_statement(out: &mut BytesMut, name: &str) {
    message(out, CLOSE, &[b"S", name.as_bytes(), b"\0"]);
}

/// A CancelRequest for the backend with this key (sent on a connection of its own).
pub fn cancel_request(pid: i32, secret: &[u8]) -> Vec<u8> {
    let mut pkt = Vec::with_capacity(12 + secret.len());
    pkt.extend_from_slice(&((12 + secret.len()) as i32).to_be_bytes());
    pkt.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    pkt.extend_from_slice(&pid.to_be_bytes());
    pkt.extend_from_slice(secret);
    pkt
}

/// A StartupMessage asking for protocol `version` (`(major << 16) | minor`).
pub fn startup_message(version: i32, params: &[(&str, &str)], out: &mut BytesMut) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&version.to_be_bytes());
    for (k, v) in params {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&[0]);
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(&[0]);
    }
    out.extend_from_slice(&[0]);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_request_carries_the_whole_key() {
        let pkt = cancel_request(42, &(-7i32).to_be_bytes());
        assert_eq!(&pkt[..8], &[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]);
        assert_eq!(&pkt[8..], &[0, 0, 0, 42, 0xff, 0xff, 0xff, 0xf9]);
        let long = cancel_request(42, &[9; 32]);
        assert_eq!(long.len(), 44);
        assert_eq!(&long[..4], &44i32.to_be_bytes(), "protocol 3.2: a longer key, a longer packet");
        let mut out = BytesMut::new();
        startup_message(196610, &[("user", "u")], &mut out);
        assert_eq!(&out[..], b"\0\0\0\x10\0\x03\0\x02user\0u\0\0");
        let mut out = BytesMut::new();
        close_statement(&mut out, "s1");
        assert_eq!(&out[..], b"C\0\0\0\x08Ss1\0");
    }
}
