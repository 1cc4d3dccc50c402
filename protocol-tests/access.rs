//! Who may log in: `hba:` rules (first match wins, checked after the StartupMessage
//! and before any authentication exchange) and the failed-login limit per client
//! address, through tokio-postgres against the real cluster; the refusals counted in
//! `/metrics` by reason.

mod common;

use std::time::Duration;

use common::{message, mt, scalar, sqlstate, Pgmux, Setup};

/// PostgreSQL's pg_hba.conf wording, with pgmux's name for the rules.
fn hba_message(user: &str, db: &str) -> String {
    format!("pgmux hba rejects connection for host \"127.0.0.1\", user \"{user}\", database \"{db}\", no encryption")
}

const BANNED: &str = "too many failed login attempts from \"127.0.0.1\"; try again later";

/// Starts pgmux with `extra` top-level YAML and a metrics endpoint; returns it and the endpoint's port.
fn start(extra: &str) -> (Pgmux, u16) {
    let metrics_port = pgmux::cluster::free_port();
    let px = Setup { extra: extra.into(), ..Default::default() }.start_with(|y| format!("metrics_listen: 127.0.0.1:{metrics_port}\n{y}"));
    (px, metrics_port)
}

/// Asserts a login is refused with 28000 and `msg`.
async fn refused(px: &Pgmux, user: &str, pw: &str, db: &str, msg: &str) {
    let e = px.connect_as(user, pw, db).await.err().unwrap_or_else(|| panic!("{user}@{db} was let in"));
    assert_eq!(sqlstate(&e).as_deref(), Some("28000"), "{user}@{db}: {e}");
    assert_eq!(message(&e), msg, "{user}@{db}");
}

async fn logged_in(px: &Pgmux, user: &str, pw: &str, db: &str) -> tokio_postgres::Client {
    px.connect_as(user, pw, db).await.unwrap_or_else(|e| panic!("{user}@{db} refused: {e}"))
}

/// `pgmux_client_connections_rejected_total{reason}` from /metrics.
async fn rejected(metrics_port: u16, reason: &str) -> f64 {
    let (status, text) = common::http_get(metrics_port, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let series = format!("pgmux_client_connections_rejected_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).unwrap_or_else(|| panic!("no {series} in {text}")).trim().parse().unwrap()
}

#[test]
fn deny_rule_refuses_before_authentication() {
    let (px, metrics) = start("hba:\n  - action: deny\n    users: [app]\n    addresses: [127.0.0.1/32]\n  - action: allow\n");
    mt().block_on(async {
        refused(&px, "app", "app", "app", &hba_message("app", "app")).await;
        // The rule is checked before the password: a wrong one gets the same answer.
        refused(&px, "app", "wrong", "app", &hba_message("app", "app")).await;
        // Other users are let in by the second rule.
        let admin = logged_in(&px, "admin", "admin", "pgbouncer").await;
        admin.simple_query("SHOW VERSION").await.unwrap();
        assert_eq!(rejected(metrics, "hba").await, 2.0);
        assert_eq!(rejected(metrics, "auth_failed").await, 0.0, "an hba refusal is not a failed password");
        assert!(px.log_text().contains("login refused before authentication"), "{}", px.log_text());
    });
}

#[test]
fn allow_a_database_then_deny_all() {
    let (px, metrics) = start("hba:\n  - action: allow\n    databases: [app]\n  - action: deny\n");
    mt().block_on(async {
        let c = logged_in(&px, "app", "app", "app").await;
        assert_eq!(scalar(&c, "select 'in'").await, "in");
        // The admin console is a database like any other: denied by the catch-all.
        refused(&px, "admin", "admin", "pgbouncer", &hba_message("admin", "pgbouncer")).await;
        refused(&px, "admin", "admin", "pgmux", &hba_message("admin", "pgmux")).await;
        // Even a database that does not exist: the rules come first.
        refused(&px, "app", "app", "nowhere", &hba_message("app", "nowhere")).await;
        assert_eq!(rejected(metrics, "hba").await, 3.0);
        assert_eq!(rejected(metrics, "unknown_database").await, 0.0);
    });
}

#[test]
fn admin_only_to_the_console() {
    let (px, _) = start(
        "hba:\n  - action: allow\n    users: [admin]\n    databases: [pgbouncer]\n  - action: deny\n    users: [admin]\n  - action: allow\n    addresses: [\"127.0.0.0/8\", \"::1/128\"]\n",
    );
    mt().block_on(async {
        let console = logged_in(&px, "admin", "admin", "pgbouncer").await;
        console.simple_query("SHOW POOLS").await.unwrap();
        refused(&px, "admin", "admin", "pgmux", &hba_message("admin", "pgmux")).await;
        refused(&px, "admin", "admin", "app", &hba_message("admin", "app")).await;
        let c = logged_in(&px, "app", "app", "app").await;
        assert_eq!(scalar(&c, "select 'app'").await, "app");
    });
}

#[test]
fn reload_applies_new_rules_to_new_connections() {
    let (px, metrics) = start("");
    mt().block_on(async {
        let before = logged_in(&px, "app", "app", "app").await;
        let yaml = std::fs::read_to_string(&px.config).unwrap();
        std::fs::write(&px.config, format!("{yaml}hba:\n  - action: allow\n    users: [admin]\n")).unwrap();
        px.signal(libc::SIGHUP);
        tokio::time::sleep(Duration::from_millis(300)).await;
        refused(&px, "app", "app", "app", &hba_message("app", "app")).await;
        assert_eq!(scalar(&before, "select 'still here'").await, "still here", "a client already in stays");
        logged_in(&px, "admin", "admin", "pgbouncer").await;
        assert_eq!(rejected(metrics, "hba").await, 1.0);
    });
}

#[test]
fn failed_login_limit_bans_the_address_for_a_window() {
    let (px, metrics) = start("auth_failure_limit: 3\nauth_failure_window: 2s\n");
    mt().block_on(async {
        let wrong = |user: &'static str| {
            let px = &px;
            async move {
                let e = px.connect_as(user, "wrong", "app").await.map(|_| ()).expect_err("a wrong password was accepted");
                assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
            }
        };
        // A successful login clears the address's count: 2 + 2 failures ban nobody.
        wrong("app").await;
        wrong("app").await;
        logged_in(&px, "app", "app", "app").await;
        wrong("app").await;
        wrong("nobody").await; // an unknown user counts like a wrong password
        logged_in(&px, "app", "app", "app").await;
        assert_eq!(rejected(metrics, "auth_failure_limit").await, 0.0);

        // Three in a row: the address is banned; even the right password is refused,
        // and so is the admin console.
        for _ in 0..3 {
            wrong("app").await;
        }
        refused(&px, "app", "app", "app", BANNED).await;
        refused(&px, "admin", "admin", "pgbouncer", BANNED).await;
        assert_eq!(rejected(metrics, "auth_failure_limit").await, 2.0);
        assert_eq!(rejected(metrics, "auth_failed").await, 7.0);
        assert!(px.log_text().contains("address banned"), "{}", px.log_text());

        // After the window, welcome back.
        tokio::time::sleep(Duration::from_millis(2300)).await;
        let c = logged_in(&px, "app", "app", "app").await;
        assert_eq!(scalar(&c, "select 'back'").await, "back");
    });
}

#[test]
fn failed_login_limit_off() {
    let (px, metrics) = start("auth_failure_limit: 0\n");
    mt().block_on(async {
        for _ in 0..25 {
            let e = px.connect_as("app", "wrong", "app").await.map(|_| ()).expect_err("a wrong password was accepted");
            assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
        }
        logged_in(&px, "app", "app", "app").await;
        assert_eq!(rejected(metrics, "auth_failure_limit").await, 0.0);
    });
}
