//! Frontend messages pgmux writes to servers by hand, beside those
//! `postgres_protocol::message::frontend` writes: client messages rebuilt from parts
//! of the client's own (renamed statements), and the CancelRequest packet.

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
pub fn cancel_request(pid: i32, secret: i32) -> [u8; 16] {
    let mut pkt = [0u8; 16];
    pkt[..4].copy_from_slice(&16i32.to_be_bytes());
    pkt[4..8].copy_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    pkt[8..12].copy_from_slice(&pid.to_be_bytes());
    pkt[12..].copy_from_slice(&secret.to_be_bytes());
    pkt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_request_is_sixteen_bytes_with_the_key() {
        let pkt = cancel_request(42, -7);
        assert_eq!(&pkt[..8], &[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e]);
        assert_eq!(&pkt[8..], &[0, 0, 0, 42, 0xff, 0xff, 0xff, 0xf9]);
        let mut out = BytesMut::new();
        close_statement(&mut out, "s1");
        assert_eq!(&out[..], b"C\0\0\0\x08Ss1\0");
    }
}
