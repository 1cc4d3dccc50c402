//! The connection-limit gauges, written at scrape time from the proxy's [`Limits`]
//! and the configuration, like the replica families ([`super::replicas`]):
//!
//! - `pgmux_limit_connections{kind,name,server}`: server connections a limit counts
//!   now (open or being opened), for every (database, server) and (user, server) of
//!   the configuration, and for a limit of a database or user a reload removed while
//!   it still counts connections;
//! - `pgmux_limit_max_connections{kind,name,server}`: its configured maximum
//!   (`max_db_connections` / `max_user_connections`), only where one is set.
//!
//! `kind` is `database` or `user`; `server` is `host:port` as configured.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::config::Config;
use crate::pool::{LimitKind, Limits};

fn kind_label(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Database => "database",
        LimitKind::User => "user",
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// (kind, name, server) -> (current, max), sorted.
fn samples(limits: &Limits, config: &Config) -> BTreeMap<(&'static str, String, String), (usize, usize)> {
    let mut out = BTreeMap::new();
    let servers: Vec<String> = {
        let mut s: Vec<String> = config
            .databases
            .values()
            .flat_map(|d| std::iter::once(d.primary_addr()).chain(d.replica_addrs()))
            .map(|a| a.to_string())
            .collect();
        s.sort();
        s.dedup();
        s
    };
    for (name, db) in &config.databases {
        let max = config.max_db_connections(name);
        for a in std::iter::once(db.primary_addr()).chain(db.replica_addrs()) {
            out.insert(("database", name.clone(), a.to_string()), (0, max));
        }
    }
    for u in &config.users {
        let max = config.max_user_connections(&u.name);
        for server in &servers {
            out.insert(("user", u.name.clone(), server.clone()), (0, max));
        }
    }
    for l in limits.all() {
        let key = (kind_label(l.kind), l.name.clone(), l.server.to_string());
        match out.get_mut(&key) {
            Some(v) => v.0 = l.used(),
            // No longer configured (a reload removed it): shown while it counts.
            None if l.used() > 0 => {
                out.insert(key, (l.used(), l.max()));
            }
            None => {}
        }
    }
    out
}

/// Appends both families to `out`.
pub fn render(limits: &Limits, config: &Config, out: &mut String) {
    let samples = samples(limits, config);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let families: [(&str, &str, bool); 2] = [
        (
            "pgmux_limit_connections",
            "Server connections counted by a max_db_connections / max_user_connections limit now, per server",
            false,
        ),
        ("pgmux_limit_max_connections", "Configured max_db_connections / max_user_connections per server (only where set)", true),
    ];
    for (name, help, max) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for ((kind, n, server), (current, limit)) in &samples {
            let value = if max { *limit } else { *current };
            if max && *limit == 0 {
                continue;
            }
            let (n, server) = (escape(n), escape(server));
            let _ = writeln!(out, "{name}{{kind=\"{kind}\",name=\"{n}\",server=\"{server}\"}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerAddr;

    #[test]
    fn every_configured_limit_and_the_maxima_that_are_set() {
        let yaml = "pool:\n  max_db_connections: 4\nusers:\n  - name: app\n    password: app\n    max_user_connections: 3\n  - name: other\n    password: other\ndatabases:\n  app:\n    primary: 10.0.0.1:5432\n    replicas: [10.0.0.2:5432]\n";
        let c = Config::parse(yaml, std::path::Path::new("t.yaml")).unwrap();
        let limits = Limits::default();
        let primary = ServerAddr { host: "10.0.0.1".into(), port: 5432 };
        // Limits of pools created so far (counts move with pools: protocol-tests/admin.rs),
        // and one of a database no longer configured, with nothing to count: not shown.
        limits.get(LimitKind::Database, "app", &primary, &c);
        limits.get(LimitKind::Database, "older", &primary, &c);
        let mut out = String::from("pgmux_clients 1");
        render(&limits, &c, &mut out);
        let has = |line: &str| out.lines().any(|l| l == line);
        assert!(out.starts_with("pgmux_clients 1\n# HELP pgmux_limit_connections"), "{out}");
        assert!(has("pgmux_limit_connections{kind=\"database\",name=\"app\",server=\"10.0.0.1:5432\"} 0"), "{out}");
        assert!(has("pgmux_limit_connections{kind=\"database\",name=\"app\",server=\"10.0.0.2:5432\"} 0"), "{out}");
        assert!(has("pgmux_limit_connections{kind=\"user\",name=\"other\",server=\"10.0.0.2:5432\"} 0"), "{out}");
        assert!(!out.contains("older"), "{out}");
        assert!(has("pgmux_limit_max_connections{kind=\"database\",name=\"app\",server=\"10.0.0.2:5432\"} 4"), "{out}");
        assert!(has("pgmux_limit_max_connections{kind=\"user\",name=\"app\",server=\"10.0.0.1:5432\"} 3"), "{out}");
        assert!(!out.contains("pgmux_limit_max_connections{kind=\"user\",name=\"other\""), "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("pgmux_limit_connections{")).count(), 2 + 2 * 2);
    }
}
