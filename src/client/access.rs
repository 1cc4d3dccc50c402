//! Refusals before authentication: the `hba:` rules, and addresses banned after too
//! many failed logins (counted by [`crate::state::AuthFailures`]).

use std::net::IpAddr;

use crate::config::Config;
use crate::error::ClientError;
use crate::state::AuthFailures;

/// Checks the `hba:` rules and the ban list for a login ([`ClientError::Hba`],
/// [`ClientError::Banned`] if refused).
pub fn check(config: &Config, failures: &AuthFailures, ip: IpAddr, user: &str, database: &str) -> Result<(), ClientError> {
    if !config.hba_allows(user, database, ip) {
        return Err(ClientError::Hba { host: ip, user: user.to_string(), database: database.to_string() });
    }
    if config.auth_failure_limit > 0 && failures.banned(ip) {
        return Err(ClientError::Banned(ip));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

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
        let (e, why) = check(&c, &f, ip("127.0.0.1"), "app", "app").map_err(|e| (e.to_pg(), e.kind())).unwrap_err();
        assert_eq!((&*e.code, why), ("28000", ErrorKind::Hba));
        assert_eq!(e.message, "pgmux hba rejects connection for host \"127.0.0.1\", user \"app\", database \"app\", no encryption");
        check(&c, &f, ip("10.1.1.1"), "app", "app").unwrap();
        f.failed(ip("10.1.1.1"), c.auth_failure_limit, c.auth_failure_window.0);
        let (e, why) = check(&c, &f, ip("10.1.1.1"), "app", "app").map_err(|e| (e.to_pg(), e.kind())).unwrap_err();
        assert_eq!((&*e.code, why), ("28000", ErrorKind::AuthFailureLimit));
        assert_eq!(e.message, "too many failed login attempts from \"10.1.1.1\"; try again later");
    }
}
