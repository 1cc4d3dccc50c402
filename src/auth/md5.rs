//! PostgreSQL's md5 password challenge: `"md5" + md5(md5(password + user) + salt)`,
//! in hex. Computed into fixed arrays: a login allocates and formats nothing here.

use ::md5::{Digest, Md5};

/// Length of a response: `"md5"` and 32 hex digits.
const RESPONSE_LEN: usize = 35;

/// Writes `digest` as lowercase hex into `out` (twice its length).
fn to_hex(digest: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in digest.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

/// The response a client must send for `salt`.
pub fn expected_response(user: &str, password: &str, salt: [u8; 4]) -> [u8; RESPONSE_LEN] {
    let mut inner = [0u8; 32];
    to_hex(&Md5::new().chain_update(password).chain_update(user).finalize(), &mut inner);
    let mut out = [0u8; RESPONSE_LEN];
    out[..3].copy_from_slice(b"md5");
    to_hex(&Md5::new().chain_update(inner).chain_update(salt).finalize(), &mut out[3..]);
    out
}

/// Checks a client's md5 response in constant time.
pub fn verify(user: &str, password: &str, salt: [u8; 4], response: &[u8]) -> bool {
    super::ct_eq(&expected_response(user, password, salt), response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_libpq() {
        // What libpq sends (postgres-protocol's md5_hash, the same algorithm).
        for (user, pw, salt) in [("alice", "secret", [1, 2, 3, 4]), ("", "", [0, 0, 0, 0]), ("bob", "pässwörd", [255, 0, 127, 9])] {
            let expected = postgres_protocol::authentication::md5_hash(user.as_bytes(), pw.as_bytes(), salt);
            assert_eq!(super::expected_response(user, pw, salt), expected.as_bytes(), "{user}/{pw}");
        }
    }

    #[test]
    fn known_vector() {
        let r = super::expected_response("alice", "secret", [1, 2, 3, 4]);
        assert!(r.starts_with(b"md5") && r.len() == 35);
        assert!(super::verify("alice", "secret", [1, 2, 3, 4], &r));
        assert!(!super::verify("alice", "wrong", [1, 2, 3, 4], &r));
        assert!(!super::verify("alice", "secret", [1, 2, 3, 4], &r[..34]), "a short response");
    }
}
