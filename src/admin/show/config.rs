//! `SHOW CONFIG`: every key of the running configuration with its value, PgBouncer's
//! columns (`key`, `value`, `default`, `changeable`). Global keys first (`pool.*`,
//! `routing.*` under their YAML paths), then each database's and each user's keys as
//! `databases.<name>.<key>` / `users.<name>.<key>`: an override that is not set has an
//! empty value and, as default, what applies instead (for `users.<name>.pool_size`,
//! `pool.size`; a database's `pool_size` wins over it). Passwords are never shown.
//! `changeable` is `yes` for what RELOAD (or SIGHUP) applies.

use std::time::Duration;

use crate::admin::{n, ResultSet};
use crate::config::{AuthType, ClientTlsMode, Config, Dur, LogFormat, ServerTlsMode, SessionFeatures};

/// Written as in the config file: `0` (off), `250ms`, `5s`.
fn dur(d: Dur) -> String {
    if d.0.is_zero() {
        "0".into()
    } else {
        format!("{:?}", d.0)
    }
}

fn secs(s: u64) -> String {
    dur(Dur(Duration::from_secs(s)))
}

fn opt(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Keys that need a restart; everything else is applied by RELOAD.
const RESTART_ONLY: &[&str] = &[
    "listen",
    "metrics_listen",
    "log_format",
    "unix_socket_dir",
    "fleet.peers",
    "fleet.peers_dns",
    "fleet.share_pools",
    "fleet.heartbeat_interval",
    "fleet.peer_timeout",
    "fleet.secret",
    "fleet.secret_file",
];

/// A SHOW CONFIG row: key, value, default.
type Item = (String, String, String);

fn s(v: &str) -> String {
    v.to_string()
}

/// (key, value, default) of every key, in the README's order.
pub fn items(c: &Config) -> Vec<Item> {
    let p = &c.pool;
    let mut items = top_level(c);
    items.extend(fleet(c));
    items.extend(pool(c));
    items.extend(routing(c));
    for (name, db) in &c.databases {
        let key = |k: &str| format!("databases.{name}.{k}");
        let sizes = c.database_pool_sizes(name);
        items.extend([
            (key("primary"), db.primary.clone(), s("")),
            (key("replicas"), db.replicas.join(","), s("")),
            (key("dbname"), opt(db.dbname.as_ref()), name.clone()),
            (key("pool_size"), opt(db.pool_size), p.size.to_string()),
            (key("min_pool_size"), opt(db.min_pool_size), p.min_pool_size.min(sizes.size).to_string()),
            (key("reserve_pool_size"), opt(db.reserve_pool_size), p.reserve_pool_size.to_string()),
            (key("max_db_connections"), opt(db.max_db_connections), p.max_db_connections.to_string()),
            (
                key("session_features"),
                s(match db.session_features {
                    SessionFeatures::Pin => "pin",
                    SessionFeatures::Reject => "reject",
                }),
                s("pin"),
            ),
        ]);
    }
    for u in &c.users {
        let key = |k: &str| format!("users.{}.{k}", u.name);
        items.extend([
            (key("admin"), u.admin.to_string(), s("false")),
            (key("route"), s(u.route.as_str()), s("auto")),
            (key("pool_size"), opt(u.pool_size), p.size.to_string()),
            (key("max_user_connections"), opt(u.max_user_connections), p.max_user_connections.to_string()),
        ]);
    }
    items
}

/// The top-level keys.
fn top_level(c: &Config) -> Vec<Item> {
    vec![
        (s("listen"), c.listen.clone(), s("127.0.0.1:6432")),
        (s("metrics_listen"), opt(c.metrics_listen.as_ref()), s("")),
        (s("workers"), c.workers.to_string(), s("1")),
        (s("max_client_connections"), c.max_client_connections.to_string(), s("5000")),
        (
            s("auth_type"),
            s(match c.auth_type {
                AuthType::ScramSha256 => "scram-sha-256",
                AuthType::Md5 => "md5",
            }),
            s("scram-sha-256"),
        ),
        (
            s("tls.mode"),
            s(match c.tls.mode {
                ClientTlsMode::Disable => "disable",
                ClientTlsMode::Allow => "allow",
                ClientTlsMode::Require => "require",
            }),
            s("allow"),
        ),
        (s("tls.cert"), opt(c.tls.cert.as_ref().map(|p| p.display())), s("")),
        (s("tls.key"), opt(c.tls.key.as_ref().map(|p| p.display())), s("")),
        (
            s("server_tls.mode"),
            s(match c.server_tls.mode {
                ServerTlsMode::Disable => "disable",
                ServerTlsMode::Prefer => "prefer",
                ServerTlsMode::Require => "require",
                ServerTlsMode::VerifyCa => "verify-ca",
                ServerTlsMode::VerifyFull => "verify-full",
            }),
            s("prefer"),
        ),
        (s("server_tls.ca"), opt(c.server_tls.ca.as_ref().map(|p| p.display())), s("")),
        (s("server_tls.cert"), opt(c.server_tls.cert.as_ref().map(|p| p.display())), s("")),
        (s("server_tls.key"), opt(c.server_tls.key.as_ref().map(|p| p.display())), s("")),
        (s("hba"), c.hba.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "), s("")),
        (s("auth_user"), opt(c.auth_user.as_ref()), s("")),
        (s("auth_query"), c.auth_query.clone(), crate::config::default_auth_query()),
        (s("auth_failure_limit"), c.auth_failure_limit.to_string(), s("20")),
        (s("auth_failure_window"), dur(c.auth_failure_window), secs(60)),
        (s("max_prepared_statements"), c.max_prepared_statements.to_string(), s("256")),
        (s("max_message_size"), c.max_message_size.0.to_string(), (256u64 << 20).to_string()),
        (s("startup_timeout"), dur(c.startup_timeout), secs(15)),
        (
            s("log_format"),
            s(match c.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            }),
            s("text"),
        ),
        (s("slow_query_threshold"), dur(c.slow_query_threshold), s("0")),
        (s("pool_pressure_waiting"), c.pool_pressure_waiting.to_string(), s("0")),
        (s("pool_pressure_wait"), dur(c.pool_pressure_wait), s("0")),
        (s("shutdown_timeout"), dur(c.shutdown_timeout), secs(30)),
        (s("drain_delay"), dur(c.drain_delay), s("0")),
        (s("unix_socket_dir"), opt(c.unix_socket_dir.as_ref().map(|p| p.display())), s("")),
    ]
}

/// The `fleet.*` keys (empty values when there is no fleet block).
fn fleet(c: &Config) -> Vec<Item> {
    vec![
        (s("fleet.peers"), c.fleet.as_ref().map(|f| f.peers.join(",")).unwrap_or_default(), s("")),
        (s("fleet.peers_dns"), opt(c.fleet.as_ref().and_then(|f| f.peers_dns.as_ref())), s("")),
        (s("fleet.share_pools"), c.fleet.as_ref().is_some_and(|f| f.share_pools).to_string(), s("false")),
        (s("fleet.heartbeat_interval"), c.fleet.as_ref().map(|f| dur(f.heartbeat_interval)).unwrap_or_default(), secs(1)),
        (s("fleet.peer_timeout"), c.fleet.as_ref().map(|f| dur(f.peer_timeout)).unwrap_or_default(), secs(3)),
        // Never shown: whether it is set is all SHOW CONFIG says.
        (s("fleet.secret"), if c.fleet.is_some() { s("(hidden)") } else { s("") }, s("")),
        (s("fleet.secret_file"), opt(c.fleet.as_ref().and_then(|f| f.secret_file.as_ref()).map(|p| p.display())), s("")),
    ]
}

/// The `pool.*` keys.
fn pool(c: &Config) -> Vec<Item> {
    let p = &c.pool;
    vec![
        (s("pool.mode"), s(p.mode.as_str()), s("transaction")),
        (s("pool.size"), p.size.to_string(), s("10")),
        (s("pool.min_pool_size"), p.min_pool_size.to_string(), s("0")),
        (s("pool.reserve_pool_size"), p.reserve_pool_size.to_string(), s("0")),
        (s("pool.reserve_pool_timeout"), dur(p.reserve_pool_timeout), secs(5)),
        (s("pool.max_db_connections"), p.max_db_connections.to_string(), s("0")),
        (s("pool.max_user_connections"), p.max_user_connections.to_string(), s("0")),
        (s("pool.checkout_timeout"), dur(p.checkout_timeout), secs(5)),
        (s("pool.server_idle_timeout"), dur(p.server_idle_timeout), secs(600)),
        (s("pool.server_lifetime"), dur(p.server_lifetime), secs(3600)),
        (s("pool.server_connect_timeout"), dur(p.server_connect_timeout), secs(5)),
        (s("pool.server_check_delay"), dur(p.server_check_delay), secs(30)),
        (s("pool.server_reset_query"), p.server_reset_query.clone(), s("DISCARD ALL")),
        (s("pool.idle_transaction_timeout"), dur(p.idle_transaction_timeout), s("0")),
        (s("pool.client_idle_timeout"), dur(p.client_idle_timeout), s("0")),
        (s("pool.wait_notice"), dur(p.wait_notice), s("0")),
        (s("pool.query_timeout"), dur(p.query_timeout), s("0")),
        (s("pool.notify_queue_size"), p.notify_queue_size.to_string(), s("10000")),
    ]
}

/// The `routing.*` keys.
fn routing(c: &Config) -> Vec<Item> {
    let r = &c.routing;
    vec![
        (s("routing.read_write_split"), r.read_write_split.to_string(), s("true")),
        (s("routing.max_replica_lag"), dur(r.max_replica_lag), secs(2)),
        (s("routing.max_replica_lag_bytes"), r.max_replica_lag_bytes.0.to_string(), (16u64 << 20).to_string()),
        (s("routing.read_your_writes"), r.read_your_writes.to_string(), s("true")),
        (s("routing.write_functions"), r.write_functions.join(","), s("")),
        (s("routing.monitor_interval"), dur(r.monitor_interval), dur(Dur(Duration::from_millis(250)))),
        (s("routing.monitor_user"), opt(r.monitor_user.as_ref()), opt(c.monitor_user().map(|u| &u.name))),
        (s("routing.ban_after_failures"), r.ban_after_failures.to_string(), s("2")),
    ]
}

pub fn config(c: &Config) -> ResultSet {
    let rows = items(c)
        .into_iter()
        .map(|(k, v, d)| {
            let changeable = if RESTART_ONLY.contains(&k.as_str()) { "no" } else { "yes" };
            vec![n(k), n(v), n(d), n(changeable)]
        })
        .collect();
    ResultSet { columns: vec![("key", false), ("value", false), ("default", false), ("changeable", false)], rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_with_its_value_and_no_password() {
        let yaml = "hba:\n  - action: allow\n    users: [admin]\n    databases: [pgbouncer]\n  - action: deny\n    users: [admin]\npool:\n  max_db_connections: 4\n  min_pool_size: 1\nrouting:\n  write_functions: [audit.log, bump]\nusers:\n  - name: app\n    password: s3cret-app\n    max_user_connections: 3\n  - name: admin\n    password: s3cret-admin\n    admin: true\ndatabases:\n  app:\n    primary: 127.0.0.1:5432\n    replicas: [127.0.0.1:5433]\n    pool_size: 4\n";
        let c = Config::parse(yaml, std::path::Path::new("t.yaml")).unwrap();
        let rs = config(&c);
        let get = |k: &str| {
            let row = rs.rows.iter().find(|r| r[0].as_deref() == Some(k)).unwrap_or_else(|| panic!("no key {k}"));
            row.iter().skip(1).map(|v| v.clone().unwrap()).collect::<Vec<_>>().join(" | ")
        };
        assert_eq!(get("pool.max_db_connections"), "4 | 0 | yes");
        assert_eq!(get("pool.max_user_connections"), "0 | 0 | yes");
        assert_eq!(get("pool.idle_transaction_timeout"), "0 | 0 | yes");
        assert_eq!(get("pool.server_idle_timeout"), "600s | 600s | yes");
        assert_eq!(get("auth_type"), "scram-sha-256 | scram-sha-256 | yes");
        assert_eq!(get("hba"), "allow users=admin databases=pgbouncer; deny users=admin |  | yes");
        assert_eq!(get("auth_failure_window"), "60s | 60s | yes");
        assert_eq!(get("listen"), "127.0.0.1:6432 | 127.0.0.1:6432 | no");
        assert_eq!(get("routing.read_write_split"), "true | true | yes");
        assert_eq!(get("routing.max_replica_lag_bytes"), "16777216 | 16777216 | yes");
        assert_eq!(get("routing.monitor_interval"), "250ms | 250ms | yes");
        assert_eq!(get("routing.write_functions"), "audit.log,bump |  | yes");
        assert_eq!(get("routing.monitor_user"), " | app | yes");
        assert_eq!(get("databases.app.replicas"), "127.0.0.1:5433 |  | yes");
        assert_eq!(get("databases.app.pool_size"), "4 | 10 | yes");
        assert_eq!(get("databases.app.max_db_connections"), " | 4 | yes");
        assert_eq!(get("users.app.max_user_connections"), "3 | 0 | yes");
        assert_eq!(get("users.admin.admin"), "true | false | yes");
        let text = format!("{:?}", rs.rows);
        assert!(!text.contains("s3cret") && !text.contains("password"), "{text}");
        // Every top-level, pool and routing key of the README's table is listed.
        let readme = include_str!("../../../README.md");
        let table = &readme[readme.find("## Configuration").unwrap()..readme.find("### From PgBouncer").unwrap()];
        for line in table.lines().filter(|l| l.starts_with("| `")) {
            let key = line[3..].split('`').next().unwrap();
            if key.starts_with("users[]") || key.starts_with("databases.") {
                continue;
            }
            assert!(rs.rows.iter().any(|r| r[0].as_deref() == Some(key)), "SHOW CONFIG lacks {key}");
        }
    }
}
