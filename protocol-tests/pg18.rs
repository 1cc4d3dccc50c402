//! What PostgreSQL 17 and 18 change on the wire, against PostgreSQL 18 whatever
//! `PGMUX_TEST_PG` says (this binary asks for 18; `scripts/install-pg 18`, which
//! `scripts/test` runs, installs it):
//!
//! - 18 reports `search_path` as a ParameterStatus: it must neither break SET
//!   tracking nor leak between clients sharing a server connection;
//! - 18 may offer SASL OAUTHBEARER only: pgmux says so by name;
//! - 17's `transaction_timeout` is a setting like any other: it follows its client and
//!   ends only that client's transaction;
//! - libpq 18 with `sslnegotiation=direct` (17's direct TLS) and protocol 3.2 over TLS.

mod common;

use std::time::{Duration, Instant};

use common::raw::{Msg, Raw};
use common::{cluster, mt, scalar, Setup};

/// Every test here runs against PostgreSQL 18.
fn pg18() -> &'static pgmux::cluster::Cluster {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("PGMUX_TEST_PG", "18"));
    let c = cluster();
    assert_eq!(c.major(), 18, "this binary runs against PostgreSQL 18");
    c
}

fn parameters(msgs: &[Msg], name: &str) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Parameter { name: n, value } if n == name => Some(value.clone()),
            _ => None,
        })
        .collect()
}

/// A client's `SET search_path` is reported to it (as PostgreSQL 18 does), kept on
/// every server connection it gets, and never seen by the next client of the same
/// server connection (who gets the default, and no ParameterStatus of the other's).
#[test]
fn search_path_reported_as_a_parameter_stays_with_its_client() {
    pg18().psql(cluster().primary.port, "app", "create schema if not exists s18; grant usage on schema s18 to app;").unwrap();
    let px = Setup { pool_size: 1, ..Default::default() }.start();
    mt().block_on(async {
        let mut a = Raw::connect(px.port, "app", "app", "app").await;
        let mut b = Raw::connect(px.port, "app", "app", "app").await;
        let msgs = a.simple("set search_path = s18, public").await;
        assert_eq!(parameters(&msgs, "search_path"), ["s18, public"], "18 reports it: {msgs:?}");
        // b takes the one server connection next: the default, and nothing of a's.
        let msgs = b.simple("show search_path").await;
        assert_eq!(common::raw::rows(&msgs), [[Some("\"$user\", public".to_string())]], "{msgs:?}");
        assert!(parameters(&msgs, "search_path").iter().all(|v| !v.contains("s18")), "a's setting leaked: {msgs:?}");
        // a keeps its own, on whatever connection it gets.
        let msgs = a.simple("show search_path").await;
        assert_eq!(common::raw::rows(&msgs), [[Some("s18, public".to_string())]], "{msgs:?}");
        let msgs = a.simple("reset search_path").await;
        assert_eq!(parameters(&msgs, "search_path"), ["\"$user\", public"], "{msgs:?}");
        let msgs = b.simple("show search_path").await;
        assert_eq!(common::raw::rows(&msgs), [[Some("\"$user\", public".to_string())]]);
    });
}

/// A login through pgmux shows the server's `search_path` among its ParameterStatus
/// values (18 reports it), with the client's own when its startup options set one.
#[test]
fn the_greeting_carries_search_path_with_the_clients_own_value() {
    pg18();
    let px = Setup::default().start();
    mt().block_on(async {
        let c = px.connect().await;
        assert_eq!(scalar(&c, "show search_path").await, "\"$user\", public");
        let (c, conn) = tokio_postgres::connect(
            &format!("{} options='-c search_path=pg_catalog'", px.conn_str("app", "app", "app")),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        assert_eq!(scalar(&c, "show search_path").await, "pg_catalog");
    });
}

/// A server whose pg_hba.conf asks for OAuth offers SASL OAUTHBEARER only: the client
/// gets an error that names it, instead of a vague authentication failure.
#[test]
fn a_server_that_offers_only_oauthbearer_is_refused_by_name() {
    pg18();
    let spec = pgmux::cluster::ClusterSpec { replicas: 0, users: vec![("app".into(), "app".into(), false)], databases: vec!["app".into()] };
    let oauth = pgmux::cluster::Cluster::start(&spec).unwrap();
    let node = &oauth.primary;
    let hba = node.data_dir.join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all app 127.0.0.1/32 oauth issuer=\"https://issuer.example\" scope=\"openid\"\n{text}")).unwrap();
    // A validator library is only loaded once a client answers; naming one is enough
    // for the server to offer OAUTHBEARER.
    let conf = node.data_dir.join("postgresql.conf");
    let mut c = std::fs::read_to_string(&conf).unwrap();
    c.push_str("\noauth_validator_libraries = 'pgmux_test_none'\n");
    std::fs::write(&conf, c).unwrap();
    oauth.stop_node(node.port).unwrap();
    oauth.start_node(node.port).unwrap();
    let px = common::start_config(|port| {
        format!(
            "listen: 127.0.0.1:{port}\nusers:\n  - name: app\n    password: app\ndatabases:\n  app:\n    primary: 127.0.0.1:{}\n",
            node.port
        )
    });
    mt().block_on(async {
        let e = px.connect_as("app", "app", "app").await.unwrap_err();
        let msg = common::message(&e);
        assert!(msg.contains("OAUTHBEARER"), "{msg}");
        assert_eq!(common::sqlstate(&e).as_deref(), Some("08001"), "{msg}");
    });
}

/// PostgreSQL 17's `transaction_timeout`: set by one client, it ends that client's
/// long transaction (the server's FATAL reaches it), and never the next client's on
/// the same server connection.
#[test]
fn transaction_timeout_follows_its_client_only() {
    pg18();
    let px = Setup { pool_size: 1, ..Default::default() }.start();
    mt().block_on(async {
        let a = px.connect().await;
        a.simple_query("set transaction_timeout = '300ms'").await.unwrap();
        let b = px.connect().await;
        let t0 = Instant::now();
        b.simple_query("begin; select pg_sleep(0.6); commit").await.expect("b has no transaction_timeout");
        assert!(t0.elapsed() >= Duration::from_millis(600));
        let e = a.simple_query("begin; select pg_sleep(2); commit").await.unwrap_err();
        assert_eq!(common::sqlstate(&e).as_deref(), Some("25P04"), "{}", common::message(&e));
        // The pool recovers for everyone else.
        let c = px.connect().await;
        assert_eq!(scalar(&c, "show transaction_timeout").await, "0");
    });
}

/// libpq 18 over TLS: direct negotiation (`sslnegotiation=direct`, ALPN
/// `postgresql`) and protocol 3.2 at once.
#[test]
fn libpq_18_with_direct_tls_and_protocol_3_2() {
    pg18();
    let Some(libpq) = pgmux::cluster::packaged_libpq(18) else {
        panic!("libpq 18 is missing: run scripts/install-pg 18 (scripts/test does)");
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::make_pki(dir.path(), "pg18");
    let tls = format!("tls:\n  mode: require\n  cert: {}\n  key: {}\n", pki.cert.display(), pki.key.display());
    let px = Setup { extra: tls, ..Default::default() }.start();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/libpq/libpq_client.py");
    for negotiation in ["direct", "postgres"] {
        let conninfo = format!(
            "host=localhost port={} user=app password=app dbname=app sslmode=verify-full sslrootcert={} sslnegotiation={negotiation} max_protocol_version=3.2",
            px.port,
            pki.ca.display()
        );
        let out = std::process::Command::new("python3").arg(&script).arg("info").arg(&conninfo).env("LIBPQ", &libpq).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{negotiation}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("\"protocol\": 30002") && text.contains("\"select\": \"1\""), "{negotiation}: {text}");
    }
}
