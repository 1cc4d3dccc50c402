//! Who may log in: the `hba:` rules (an ordered list, first match wins, like
//! `pg_hba.conf` without its methods) and the failed-login limit per client address
//! (`auth_failure_limit` failures within `auth_failure_window` ban the address for a
//! window). Parsing, validation with located keys (`hba[2].addresses`), and the pure
//! rule check; the failure counts themselves live in `client::access`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, Dur};

/// One `hba:` rule. A missing list matches everything.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HbaRule {
    pub action: HbaAction,
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// Database names as clients ask for them (`pgbouncer`/`pgmux`: the admin console).
    #[serde(default)]
    pub databases: Option<Vec<String>>,
    /// CIDRs (`10.0.0.0/8`, `::1/128`) or single addresses.
    #[serde(default)]
    pub addresses: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HbaAction {
    Allow,
    Deny,
}

/// An address range: an address and a prefix length (host bits ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `::1/128`, or a bare address (one host).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(u32::from(net) as u128, u32::from(ip) as u128, 32, self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(u128::from(net), u128::from(ip), 128, self.prefix),
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (a >> shift) == (b >> shift)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl HbaRule {
    /// Whether the rule applies to this login.
    pub fn matches(&self, user: &str, database: &str, ip: IpAddr) -> bool {
        let named = |list: &Option<Vec<String>>, v: &str| list.as_ref().is_none_or(|l| l.iter().any(|n| n == v));
        named(&self.users, user)
            && named(&self.databases, database)
            && self.addresses.as_ref().is_none_or(|l| l.iter().any(|a| Cidr::parse(a).is_some_and(|c| c.contains(ip))))
    }
}

impl fmt::Display for HbaRule {
    /// One line, as SHOW CONFIG shows it: `allow users=app databases=app addresses=10.0.0.0/8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.action {
            HbaAction::Allow => "allow",
            HbaAction::Deny => "deny",
        })?;
        for (k, v) in [("users", &self.users), ("databases", &self.databases), ("addresses", &self.addresses)] {
            if let Some(v) = v {
                write!(f, " {k}={}", v.join(","))?;
            }
        }
        Ok(())
    }
}

pub fn default_auth_failure_limit() -> u32 {
    20
}

/// PgBouncer's default `auth_query`.
pub fn default_auth_query() -> String {
    "SELECT usename, passwd FROM pg_shadow WHERE usename = $1".into()
}

pub fn default_auth_failure_window() -> Dur {
    Dur(Duration::from_secs(60))
}

impl Config {
    /// Whether the `hba:` rules let `user` log in to `database` from `ip`: the first
    /// matching rule decides; with no match, allowed only when there are no rules.
    pub fn hba_allows(&self, user: &str, database: &str, ip: IpAddr) -> bool {
        match self.hba.iter().find(|r| r.matches(user, database, ip)) {
            Some(r) => r.action == HbaAction::Allow,
            None => self.hba.is_empty(),
        }
    }

    /// The `hba:` rules and the failed-login limit.
    pub(super) fn validate_access(&self) -> Result<(), (String, String)> {
        let err = |k: String, m: String| Err((k, m));
        for (i, rule) in self.hba.iter().enumerate() {
            let key = |k: &str| format!("hba[{i}].{k}");
            for (k, list) in [("users", &rule.users), ("databases", &rule.databases), ("addresses", &rule.addresses)] {
                if list.as_ref().is_some_and(|l| l.is_empty()) {
                    return err(key(k), "an empty list matches nothing; leave the key out to match all".into());
                }
            }
            for u in rule.users.iter().flatten() {
                if self.user(u).is_none() {
                    return err(key("users"), format!("user \"{u}\" is not in users"));
                }
            }
            for d in rule.databases.iter().flatten() {
                if !self.databases.contains_key(d) && !super::is_admin_database(d) {
                    return err(
                        key("databases"),
                        format!("database \"{d}\" is not in databases (nor the admin console's pgbouncer/pgmux)"),
                    );
                }
            }
            for a in rule.addresses.iter().flatten() {
                if Cidr::parse(a).is_none() {
                    return err(key("addresses"), format!("invalid CIDR \"{a}\" (expected address/prefix, e.g. 10.0.0.0/8 or ::1/128)"));
                }
            }
        }
        if let Some(name) = &self.auth_user {
            match self.user(name) {
                None => return err("auth_user".into(), format!("user \"{name}\" is not in users")),
                Some(u) if u.password.starts_with("SCRAM-SHA-256$") => {
                    return err(
                        "auth_user".into(),
                        format!("user \"{name}\" needs a plaintext password: pgmux logs in as it before any client has"),
                    )
                }
                Some(_) => {}
            }
            if !self.auth_query.contains("$1") {
                return err("auth_query".into(), "must take the user name as $1".into());
            }
        }
        if self.auth_failure_limit > 0 && self.auth_failure_window.0.is_zero() {
            return err("auth_failure_window".into(), "must be more than 0 while auth_failure_limit is set".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = "users:\n  - name: app\n    password: app\n  - name: admin\n    password: admin\n    admin: true\ndatabases:\n  app:\n    primary: 127.0.0.1:5432\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "an IPv4-mapped address is IPv4");
        assert!(!c.contains(ip("::1")));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("192.168.1.1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("10.1.2.3/8").unwrap().contains(ip("10.9.9.9")), "host bits are ignored");
        for bad in ["x", "10.0.0.0/33", "::1/129", "10.0.0.0/", "10.0.0.0/+8", "10.0.0/8", "/8", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    fn config(hba: &str) -> Result<Config, super::super::ConfigError> {
        Config::parse(&format!("{hba}{BASE}"), Path::new("t.yaml"))
    }

    #[test]
    fn first_match_wins_and_no_rules_allow() {
        let open = config("").unwrap();
        assert!(open.hba_allows("app", "app", ip("10.0.0.1")));
        let c = config(
            "hba:\n  - action: allow\n    users: [admin]\n    databases: [pgbouncer]\n  - action: deny\n    users: [admin]\n  - action: deny\n    addresses: [127.0.0.1/32]\n    databases: [app]\n  - action: allow\n    addresses: [10.0.0.0/8, \"::1/128\"]\n",
        )
        .unwrap();
        assert!(c.hba_allows("admin", "pgbouncer", ip("192.0.2.1")));
        assert!(!c.hba_allows("admin", "pgmux", ip("10.0.0.1")));
        assert!(!c.hba_allows("admin", "app", ip("10.0.0.1")));
        assert!(!c.hba_allows("app", "app", ip("127.0.0.1")));
        assert!(c.hba_allows("app", "app", ip("10.2.3.4")));
        assert!(c.hba_allows("app", "app", ip("::1")));
        assert!(!c.hba_allows("app", "app", ip("192.0.2.1")), "no rule matches: deny");
        assert_eq!(c.hba[2].to_string(), "deny databases=app addresses=127.0.0.1/32");
    }

    #[test]
    fn bad_rules_are_located() {
        let e = config("hba:\n  - action: allow\n    users: [app]\n  - action: deny\n  - action: deny\n    users: [app]\n    addresses: [10.0.0.0/8, x]\n").unwrap_err();
        assert_eq!(e.key, "hba[2].addresses");
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.to_string().starts_with("t.yaml:7: hba[2].addresses: invalid CIDR \"x\""), "{e}");

        let e = config("hba:\n  - action: allow\n    users: [nobody]\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("hba[0].users", Some(3)), "{e}");
        let e = config("hba:\n  - action: deny\n  - action: allow\n    databases: [nope]\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("hba[1].databases", Some(4)), "{e}");
        let e = config("hba:\n  - action: allow\n    users: []\n").unwrap_err();
        assert_eq!(e.key, "hba[0].users", "{e}");
        let e = config("hba:\n  - action: maybe\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        config("hba:\n  - action: allow\n    databases: [pgmux, pgbouncer, app]\n").unwrap();
    }

    #[test]
    fn failure_limit_defaults_and_checks() {
        let c = config("").unwrap();
        assert_eq!((c.auth_failure_limit, c.auth_failure_window.0), (20, Duration::from_secs(60)));
        let e = config("auth_failure_window: 0\n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("auth_failure_window", Some(1)), "{e}");
        config("auth_failure_limit: 0\nauth_failure_window: 0\n").unwrap();
    }
}
