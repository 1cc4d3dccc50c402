use super::*;
use std::time::Duration;

const CONTRACT: &str = include_str!("../../configs/pgmux.yaml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("pgmux.yaml"))
}

#[test]
fn contract_file_is_accepted_as_written() {
    let c = parse(CONTRACT).unwrap();
    assert_eq!(c.listen_addr().port(), 6432);
    assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9930"));
    assert_eq!(c.max_client_connections, 5000);
    assert_eq!(c.pool.mode, PoolMode::Transaction);
    assert_eq!(c.pool.size, 10);
    assert_eq!(c.pool.checkout_timeout.0, Duration::from_secs(5));
    assert_eq!(c.pool.server_idle_timeout.0, Duration::from_secs(600));
    assert_eq!(c.pool.server_lifetime.0, Duration::from_secs(3600));
    assert!(c.user("admin").unwrap().admin);
    assert!(!c.user("app").unwrap().admin);
    let app = &c.databases["app"];
    assert_eq!(app.primary_addr(), ServerAddr { host: "127.0.0.1".into(), port: 5432 });
    assert_eq!(app.replica_addrs().len(), 2);
}

#[test]
fn unknown_key_is_an_error_with_its_line() {
    let text = CONTRACT.replace("  size: 10 ", "  sise: 10 ");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.message.contains("sise"), "{e}");
}

#[test]
fn duplicate_key_is_an_error() {
    let text = CONTRACT.replace("  size: 10 ", "  size: 10\n  size: 20 ");
    let e = parse(&text).unwrap_err();
    assert!(e.message.to_lowercase().contains("duplicate"), "{e}");
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn bad_values_are_located() {
    let e = parse(&CONTRACT.replace("primary: 127.0.0.1:5432", "primary: nowhere")).unwrap_err();
    assert_eq!(e.key, "databases.app.primary");
    assert_eq!(e.line, Some(19), "{e}");
    assert!(e.to_string().starts_with("pgmux.yaml:19: databases.app.primary: invalid address"), "{e}");

    let e = parse(&CONTRACT.replace("checkout_timeout: 5s", "checkout_timeout: soon")).unwrap_err();
    assert!(e.message.contains("invalid duration"), "{e}");
    assert_eq!(e.line, Some(8), "{e}");

    let e = parse(&CONTRACT.replace("size: 10", "size: 0")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("pool.size", Some(7)));

    let e = parse(&CONTRACT.replace("mode: transaction", "mode: statement")).unwrap_err();
    assert!(e.line == Some(6), "{e}");
}

#[test]
fn verifier_passwords() {
    let v = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=:dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=";
    let ok = CONTRACT.replace("password: app ", &format!("password: \"{v}\" "));
    parse(&ok).unwrap();
    let bad = CONTRACT.replace("password: app ", "password: SCRAM-SHA-256$broken ");
    let e = parse(&bad).unwrap_err();
    assert_eq!(e.key, "users.app.password");
    assert_eq!(e.line, Some(13), "{e}");
}

#[test]
fn tls_files_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let with = |block: &str| CONTRACT.replace("users:\n", &format!("{block}users:\n"));
    let e = parse(&with(&format!("tls:\n  cert: {0}\n  key: {0}\n", missing.display()))).unwrap_err();
    assert_eq!(e.key, "tls.cert");
    assert!(e.message.contains("cannot read"), "{e}");
    let e = parse(&with("tls:\n  mode: require\n")).unwrap_err();
    assert_eq!(e.key, "tls.cert");
    let e = parse(&with("server_tls:\n  mode: verify-full\n")).unwrap_err();
    assert_eq!(e.key, "server_tls.ca");
    let e = parse(&with("server_tls:\n  mode: sometimes\n")).unwrap_err();
    assert!(e.message.contains("sometimes"), "{e}");
    // A file that is not PEM.
    std::fs::write(&missing, "hello").unwrap();
    let e = parse(&with(&format!("tls:\n  cert: {0}\n  key: {0}\n", missing.display()))).unwrap_err();
    assert_eq!(e.key, "tls.cert", "{e}");
    // The contract file has no TLS block and stays valid.
    let c = parse(CONTRACT).unwrap();
    assert_eq!((c.tls.mode, c.tls.cert.is_none()), (ClientTlsMode::Allow, true));
}

#[test]
fn fleet_block_is_checked() {
    let base = "users:\n  - name: app\n    password: app\ndatabases:\n  app:\n    primary: 127.0.0.1:5432\n";
    let ok = format!(
        "{base}fleet:\n  peers: [127.0.0.1:6441, 127.0.0.1:6442]\n  secret: change-me-to-a-long-random-string\n  share_pools: true\n"
    );
    let c = Config::parse(&ok, Path::new("t.yaml")).unwrap();
    let f = c.fleet.as_ref().unwrap();
    assert!(f.share_pools);
    assert_eq!(f.peer_timeout.0, std::time::Duration::from_secs(3));
    for (yaml, want) in [
        ("fleet:\n  secret: change-me-to-a-long-random-string\n", "fleet.peers"),
        ("fleet:\n  peers: [a:1]\n  peers_dns: b:2\n  secret: change-me-to-a-long-random-string\n", "fleet.peers_dns"),
        ("fleet:\n  peers: [nohost]\n  secret: change-me-to-a-long-random-string\n", "fleet.peers"),
        ("fleet:\n  peers: [a:1]\n  secret: short\n", "fleet.secret"),
        ("fleet:\n  peers: [a:1]\n", "fleet.secret: required"),
        ("fleet:\n  peers: [a:1]\n  secret_file: /nonexistent/secret\n", "fleet.secret_file"),
        ("fleet:\n  peers: [a:1]\n  secret: change-me-to-a-long-random-string\n  peer_timeout: 1s\n", "fleet.peer_timeout"),
    ] {
        let e = Config::parse(&format!("{base}{yaml}"), Path::new("t.yaml")).unwrap_err().to_string();
        assert!(e.contains(want), "{yaml}: {e}");
    }
}

#[test]
fn fleet_secret_comes_from_a_file() {
    let dir = std::env::temp_dir().join(format!("pgmux-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "a-secret-of-the-whole-fleet\n").unwrap();
    let yaml = format!(
        "users:\n  - name: app\n    password: app\ndatabases:\n  app:\n    primary: 127.0.0.1:5432\nfleet:\n  peers: [a:1]\n  secret_file: {}\n",
        file.display()
    );
    let c = Config::parse(&yaml, Path::new("t.yaml")).unwrap();
    assert_eq!(c.fleet.unwrap().secret, "a-secret-of-the-whole-fleet");
    let both = format!("{yaml}  secret: change-me-to-a-long-random-string\n");
    let e = Config::parse(&both, Path::new("t.yaml")).unwrap_err().to_string();
    assert!(e.contains("not both"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
