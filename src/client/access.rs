//! Refusals before authentication: the `hba:` rules, and addresses banned after too
//! many failed logins (counted by [`crate::state::AuthFailures`]).

use std::net::IpAddr;

use crate::config::Config;
use crate::error::{PgError, SqlState};
use crate::state::AuthFailures;

/// Why a client was refused before authentication (the `reason` label of
/// `pgmux_client_connections_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No `hba:` rule allows it.
    Hba,
    /// Its address is banned after too many failed logins.
    TooManyFailures,
}

impl Denial {
    pub fn as_str(self) -> &'static str {
        match self {
            Denial::Hba => "hba",
            Denial::TooManyFailures => "auth_failure_limit",
        }
    }
}

/// Checks the `hba:` rules and the ban list for a login; the error to send if refused.
pub fn check(config: &Config, failures: &AuthFailures, ip: IpAddr, user: &str, database: &str) -> Result<(), (PgError, Denial)> {
    if !config.hba_allows(user, database, ip) {
        let msg = format!("pgmux hba rejects connection for host \"{ip}\", user \"{user}\", database \"{database}\", no encryption");
        return Err((PgError::fatal(SqlState::INVALID_AUTHORIZATION, msg), Denial::Hba));
    }
    if config.auth_failure_limit > 0 && failures.banned(ip) {
        let msg = format!("too many failed login attempts from \"{ip}\"; try again later");
        return Err((PgError::fatal(SqlState::INVALID_AUTHORIZATION, msg), Denial::TooManyFailures));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refusals_use_postgres_wording() {
        let c = Config::parse(
            "hba:\n  - action: deny\n    users: [app]\n    addresses: [127.0.0.1/32]\n  - action: allow\nauth_failure_limit: 1\nusers:\n  - name: app\n    password: app\ndatabases:\n  app:\n    primary: 127.0.0.1:5432\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap();
        let f = AuthFailures::default();
        let (e, why) = check(&c, &f, ip("127.0.0.1"), "app", "app").unwrap_err();
        assert_eq!((&*e.code, why), ("28000", Denial::Hba));
        assert_eq!(e.message, "pgmux hba rejects connection for host \"127.0.0.1\", user \"app\", database \"app\", no encryption");
        check(&c, &f, ip("10.1.1.1"), "app", "app").unwrap();
        f.failed(ip("10.1.1.1"), c.auth_failure_limit, c.auth_failure_window.0);
        let (e, why) = check(&c, &f, ip("10.1.1.1"), "app", "app").unwrap_err();
        assert_eq!((&*e.code, why), ("28000", Denial::TooManyFailures));
        assert_eq!(e.message, "too many failed login attempts from \"10.1.1.1\"; try again later");
    }
}
