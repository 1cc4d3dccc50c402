//! `auth_user` / `auth_query`: users that exist only in PostgreSQL log in through
//! pgmux with their own passwords, and a password changed in PostgreSQL applies at
//! the next login.

mod common;

use common::*;

fn setup() -> Setup {
    // `admin` is a superuser in the test cluster: it may read pg_shadow.
    Setup { extra: "auth_user: admin\n".into(), ..Setup::default() }
}

async fn create_role(name: &str, password: &str) {
    let su = direct(cluster().primary.port).await;
    su.batch_execute(&format!("DROP ROLE IF EXISTS {name}; CREATE ROLE {name} LOGIN PASSWORD '{password}'")).await.unwrap();
}

#[test]
fn users_found_by_auth_query() {
    let p = setup().start();
    mt().block_on(async {
        create_role("dyn_user", "dyn-pw").await;
        let c = p.connect_as("dyn_user", "dyn-pw", "app").await.expect("a user known only to PostgreSQL logs in");
        // pgmux logged in to PostgreSQL as that user, with the keys of its SCRAM proof.
        assert_eq!(scalar(&c, "SELECT current_user").await, "dyn_user");
        // Several transactions, on server connections of the user's own pool.
        for i in 0..5 {
            assert_eq!(scalar(&c, &format!("SELECT {i}")).await, i.to_string());
        }
        let e = p.connect_as("dyn_user", "wrong", "app").await.map(|_| ()).expect_err("wrong password refused");
        assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
        // A user PostgreSQL does not have: the same answer as a wrong password.
        let e = p.connect_as("nobody_here", "x", "app").await.map(|_| ()).expect_err("unknown user refused");
        assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
        // A quote in the name is data ($1), not SQL.
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1").port(p.port).user("x' OR '1'='1").password("x").dbname("app");
        let e = cfg.connect(tokio_postgres::NoTls).await.map(|_| ()).expect_err("refused");
        assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
        // Configured users are not looked up and still log in.
        let app = p.connect().await;
        assert_eq!(scalar(&app, "SELECT current_user").await, "app");
    });
}

#[test]
fn password_changed_in_postgres() {
    let p = setup().start();
    mt().block_on(async {
        create_role("dyn_change", "first").await;
        let before = p.connect_as("dyn_change", "first", "app").await.expect("login");
        assert_eq!(scalar(&before, "SELECT 1").await, "1");
        let su = direct(cluster().primary.port).await;
        su.batch_execute("ALTER ROLE dyn_change PASSWORD 'second'").await.unwrap();
        let e = p.connect_as("dyn_change", "first", "app").await.map(|_| ()).expect_err("the old password no longer works");
        assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
        let after = p.connect_as("dyn_change", "second", "app").await.expect("the new password works at once");
        assert_eq!(scalar(&after, "SELECT current_user").await, "dyn_change");
        // A dropped role can no longer log in.
        drop(after);
        drop(before);
        su.batch_execute("DROP OWNED BY dyn_change; DROP ROLE dyn_change").await.unwrap_or(());
        let e = p.connect_as("dyn_change", "second", "app").await.map(|_| ()).expect_err("a dropped role is refused");
        assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
    });
}

#[test]
fn auth_query_errors_are_reported() {
    let p = setup().start_with(|y| y + "auth_query: SELECT usename, passwd FROM no_such_table WHERE usename = $1\n");
    mt().block_on(async {
        let e = p.connect_as("someone", "x", "app").await.map(|_| ()).expect_err("refused");
        assert_eq!(sqlstate(&e).as_deref(), Some("42P01"), "{e}");
        assert!(message(&e).contains("auth_query"), "{}", message(&e));
    });
    let (ok, out) = check_config(&setup().yaml(1).replace("auth_user: admin", "auth_user: ghost"));
    assert!(!ok && out.contains("auth_user") && out.contains("ghost"), "{out}");
}
