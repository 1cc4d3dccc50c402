use super::*;
use crate::config::{AuthType, PoolMode};
use std::time::Duration;

fn parse(c: &Conversion) -> Config {
    Config::parse(&c.yaml, Path::new("out.yaml")).unwrap_or_else(|e| panic!("{e}\n{}", c.yaml))
}

fn keys(c: &Conversion) -> Vec<String> {
    c.untranslated.iter().map(|u| if u.value.is_empty() { u.key.clone() } else { format!("{} = {}", u.key, u.value) }).collect()
}

#[test]
fn realistic_config() {
    let ini = include_str!("../../configs/examples/pgbouncer.ini");
    let c = convert(ini, Some(include_str!("../../configs/examples/userlist.txt"))).unwrap();
    let cfg = parse(&c);
    assert_eq!(cfg.listen, "0.0.0.0:6432");
    assert_eq!((cfg.max_client_connections, cfg.max_prepared_statements), (2000, 500));
    assert_eq!((cfg.auth_type, cfg.max_message_size.0), (AuthType::ScramSha256, 1 << 30));
    assert_eq!(cfg.startup_timeout.0, Duration::from_secs(60));
    let p = &cfg.pool;
    assert_eq!((p.mode, p.size, p.server_reset_query.as_str()), (PoolMode::Transaction, 25, "DISCARD ALL"));
    let secs = [p.checkout_timeout, p.server_idle_timeout, p.server_lifetime, p.server_connect_timeout, p.server_check_delay];
    assert_eq!(secs.map(|d| d.0.as_secs()), [30, 300, 3600, 5, 10]);
    for line in ["checkout_timeout: 30s", "server_idle_timeout: 5m", "server_lifetime: 1h", "startup_timeout: 1m"] {
        assert!(c.yaml.contains(line), "{line} in\n{}", c.yaml);
    }
    let users: Vec<_> = cfg.users.iter().map(|u| (u.name.as_str(), u.admin)).collect();
    let expected = [("app", false), ("postgres", true), ("reporting", false), ("monitoring", false), ("pgbadmin", true)];
    assert_eq!(users, expected);
    assert_eq!(cfg.user("app").unwrap().password, "app-password");
    assert!(cfg.user("postgres").unwrap().password.starts_with("CHANGE-ME-"));
    assert!(cfg.user("reporting").unwrap().password.starts_with("SCRAM-SHA-256$4096:"));
    assert_eq!(cfg.user("pgbadmin").unwrap().password, r#"say "hi": #1"#);
    let dbs: Vec<_> = cfg.databases.iter().map(|(n, d)| (n.as_str(), d.primary.as_str(), d.dbname.as_deref())).collect();
    let expected = [("analytics", "127.0.0.1:5432", None), ("orders", "10.0.1.5:5432", Some("orders_prod"))];
    assert_eq!(dbs[..2], expected);
    assert_eq!(dbs[2], ("reports", "replica1.db.internal:5432", Some("orders_prod")));
    let expected = [
        "%include = /etc/pgbouncer/pgbouncer-local.ini",
        "logfile = /var/log/postgresql/pgbouncer.log",
        "pidfile = /var/run/postgresql/pgbouncer.pid",
        "unix_socket_dir = /var/run/postgresql",
        "stats_users = monitoring",
        "ignore_startup_parameters = extra_float_digits",
        "log_connections = 0",
        "stats_period = 60",
        "tcp_keepalive = 1",
        "userlist.txt \"postgres\" = md5 hash",
        "userlist.txt \"reporting\" = SCRAM verifier",
        "users.reporting = pool_mode=session",
        "auth_type = md5",
        "databases.reports = user=reporting",
        "databases.reports = password=***",
        "databases.analytics",
        "databases.* = host=10.0.1.5",
    ];
    assert_eq!(keys(&c), expected);
    assert_eq!(cfg.server_tls.mode, crate::config::ServerTlsMode::Require);
    assert!(c.yaml.contains("server_tls:\n  mode: require\n"), "{}", c.yaml);
    assert_eq!((cfg.pool.max_db_connections, cfg.pool.max_user_connections), (100, 0));
    assert_eq!(cfg.databases["orders"].pool_size, Some(40));
    assert_eq!(cfg.user("reporting").unwrap().max_user_connections, Some(10));
    assert_eq!((cfg.pool.min_pool_size, cfg.pool.reserve_pool_size), (5, 5));
    assert_eq!(cfg.pool.idle_transaction_timeout.0, std::time::Duration::from_secs(600));
    assert!(!format!("{:?}", c.untranslated).contains("s3cr3t"), "no password in the report");
}

#[test]
fn pgbouncer_defaults_and_odd_values() {
    let ini = "[databases]\n\"my db\" = host=::1 port=6000\nx = host=a,b dbname=y\n[pgbouncer]\nlisten_addr = ::1, 10.0.0.1\n\
               server_lifetime = 0\nserver_idle_timeout = 0\nserver_check_delay = 0.25\nquery_wait_timeout = 1.5\nauth_type = HBA\n\
               max_packet_size = 4294967295\nfoo = bar\n";
    let users = "\"yes\" \"123\"\n# comment\n\"a b\" \"'quoted' \\\\ - x\"\n\"yes\" \"no\"\n";
    let c = convert(ini, Some(users)).unwrap();
    let cfg = parse(&c);
    assert_eq!(cfg.listen, "[::1]:6432");
    assert_eq!((cfg.pool.mode, cfg.pool.size, cfg.max_client_connections), (PoolMode::Session, 20, 100));
    assert_eq!(cfg.pool.checkout_timeout.0, Duration::from_millis(1500));
    assert!(c.yaml.contains("server_connect_timeout: 15s  # PgBouncer's default (server_connect_timeout not set)"));
    assert_eq!((cfg.pool.server_lifetime.0, cfg.pool.server_check_delay.0), (Duration::ZERO, Duration::from_millis(250)));
    assert_eq!(cfg.pool.server_idle_timeout.0, Duration::from_secs(600), "0 is reported, the default kept");
    assert_eq!((cfg.auth_type, cfg.max_message_size.0), (AuthType::ScramSha256, 1 << 30));
    assert_eq!(cfg.user("yes").unwrap().password, "no");
    assert_eq!(cfg.user("a b").unwrap().password, "'quoted' \\\\ - x");
    assert_eq!(cfg.databases["my db"].primary, "[::1]:6000");
    assert_eq!((cfg.databases["x"].primary.as_str(), cfg.databases["x"].dbname.as_deref()), ("a:5432", Some("y")));
    assert!(c.yaml.contains("mode: session  # PgBouncer's default (pool_mode not set)"), "{}", c.yaml);
    let expected = [
        "server_idle_timeout = 0",
        "max_packet_size = 4294967295",
        "foo = bar",
        "listen_addr = ::1, 10.0.0.1",
        "userlist.txt \"yes\"",
        "auth_type = hba",
        "databases.x = host=a,b",
    ];
    assert_eq!(keys(&c), expected);
    assert_eq!(c.untranslated[2].reason, "no equivalent in pgmux");
}

#[test]
fn without_userlist_the_result_says_what_is_missing() {
    let c = convert("[databases]\n* = host=db\n[pgbouncer]\nauth_file = users.txt\n", None).unwrap();
    assert!(Config::parse(&c.yaml, Path::new("x")).is_err());
    assert!(c.yaml.contains("checkout_timeout: 2m  # PgBouncer's default (query_wait_timeout not set)"), "{}", c.yaml);
    let text: Vec<String> = c.untranslated.iter().map(|u| u.to_string()).collect();
    assert!(text.iter().any(|t| t.starts_with("auth_file = users.txt: not read")), "{text:?}");
    assert!(text.iter().any(|t| t.starts_with("users: pgmux rejects the result")), "{text:?}");
}

#[test]
fn malformed_input_has_line_numbers() {
    let err = |ini: &str, users: Option<&str>| convert(ini, users).unwrap_err().to_string();
    assert_eq!(err("; c\n[pgbouncer]\nlisten_port\n", None), "pgbouncer.ini:3: expected key = value, not \"listen_port\"");
    assert_eq!(err("x = 1\n", None), "pgbouncer.ini:1: \"x\" is outside any section");
    assert_eq!(err("[pgbouncer\n", None), "pgbouncer.ini:1: unterminated section header \"[pgbouncer\"");
    assert!(err("[pgbouncer]\n\ndefault_pool_size = many\n", None).starts_with("pgbouncer.ini:3: default_pool_size"));
    assert!(err("[databases]\na = host='x\n", None).starts_with("pgbouncer.ini:2: unterminated quote"));
    assert!(err("[databases]\na = port=99999\n", None).starts_with("pgbouncer.ini:2: a: port"));
    assert_eq!(err("[pgbouncer]\n", Some("\"a\" \"b\"\nc d\n")), "userlist.txt:2: expected \"user\" \"password\"");
    assert!(err("[pgbouncer]\n", Some("\"a\" \"SCRAM-SHA-256$1:x\"")).starts_with("userlist.txt:1: malformed"));
}

#[test]
fn formats() {
    assert_eq!([0.0, 0.5, 5.0, 600.0, 90.0, 7200.0].map(duration), ["0s", "500ms", "5s", "10m", "90s", "2h"]);
    assert_eq!([1024, 16 << 20, 1 << 30, 1500].map(bytes), ["1kB", "16MB", "1GB", "1500"]);
    assert_eq!(
        ["app", "10.0.0.1:5432", "yes", "123", "a b", "it's"].map(ys),
        ["app", "10.0.0.1:5432", "'yes'", "'123'", "'a b'", "'it''s'"]
    );
}

#[test]
fn per_database_and_per_user_pool_settings() {
    let ini = "[databases]\na = host=h pool_size=3 min_pool_size=1 reserve_pool=2 max_db_connections=8 pool_mode=session\n\
               b = host=h pool_size=0 reserve_pool_size=4\n[users]\nu = pool_size=6 max_user_connections=9 pool_mode=session\n\
               ghost = pool_size=1\n[pgbouncer]\nlisten_addr = *\nmax_user_connections = 20\nmax_db_connections = 0\n";
    let c = convert(ini, Some("\"u\" \"pw\"\n")).unwrap();
    let cfg = parse(&c);
    let a = &cfg.databases["a"];
    assert_eq!((a.pool_size, a.min_pool_size, a.reserve_pool_size, a.max_db_connections), (Some(3), Some(1), Some(2), Some(8)));
    let b = &cfg.databases["b"];
    assert_eq!((b.pool_size, b.reserve_pool_size), (None, Some(4)));
    let u = cfg.user("u").unwrap();
    assert_eq!((u.pool_size, u.max_user_connections), (Some(6), Some(9)));
    assert_eq!((cfg.pool.max_user_connections, cfg.pool.max_db_connections), (20, 0));
    let expected =
        ["users.u = pool_mode=session", "[users] ghost = pool_size=1", "databases.a = pool_mode=session", "databases.b = pool_size=0"];
    assert_eq!(keys(&c), expected);
    assert!(c.untranslated[3].reason.starts_with("must be at least 1"), "{:?}", c.untranslated[3]);
    let e = convert("[databases]\na = host=h pool_size=many\n", None).unwrap_err();
    assert_eq!(e.to_string(), "pgbouncer.ini:2: databases.a: pool_size \"many\" is not a valid number");
    let e = convert("[users]\nu = max_user_connections=-1\n", Some("\"u\" \"pw\"\n")).unwrap_err();
    assert!(e.to_string().starts_with("pgbouncer.ini:2: users.u: max_user_connections"), "{e}");
}

#[test]
fn tls_settings() {
    let dir = tempfile::tempdir().unwrap();
    let ini = "[databases]\napp = host=127.0.0.1\n[pgbouncer]\nclient_tls_sslmode = verify-full\nclient_tls_ciphers = fast\nserver_tls_sslmode = allow\nserver_tls_ca_file = /etc/ssl/ca.pem\n";
    let c = convert(ini, Some("\"app\" \"pw\"\n")).unwrap();
    assert!(c.yaml.contains("tls:\n  mode: require  # client certificates are not checked\n"), "{}", c.yaml);
    assert!(
        c.yaml.contains("server_tls:\n  mode: prefer  # PgBouncer's allow: pgmux tries TLS first\n  ca: '/etc/ssl/ca.pem'\n"),
        "{}",
        c.yaml
    );
    // Without a certificate, tls.mode require is refused at load, and the report says so.
    assert_eq!(keys(&c), ["client_tls_ciphers = fast", "listen_addr", "tls.cert"]);
    let e = Config::parse(&c.yaml, &dir.path().join("x.yaml")).unwrap_err();
    assert_eq!(e.key, "tls.cert");
}
