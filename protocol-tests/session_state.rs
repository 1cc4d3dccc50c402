//! Session state in transaction mode: each client keeps its own settings (and only
//! its own) whatever server connection it gets; session-only features pin the
//! client to its connection, or are refused when the database says so.

mod common;

use common::{mt, scalar};

use common::raw::{Msg, Raw};
use common::{sqlstate, Setup};

const SHOW: &str = "select current_setting('search_path') || '|' || current_setting('statement_timeout') || '|' || current_user";

#[test]
fn settings_stay_with_their_client_on_a_shared_connection() {
    let px = Setup { pool_size: 1, ..Default::default() }.start();
    mt().block_on(async {
        let admin_conn = px.connect_as("admin", "admin", "app").await.unwrap();
        admin_conn.simple_query("create schema if not exists s_a; grant usage on schema s_a to app; grant app to admin").await.unwrap();
        let a = px.connect().await;
        let b = px.connect().await;
        a.simple_query("set search_path = s_a, public").await.unwrap();
        a.simple_query("SET statement_timeout TO '7s'").await.unwrap();
        admin_conn.simple_query("set role app").await.unwrap();
        for _ in 0..3 {
            // One server connection serves all three in turn.
            assert_eq!(scalar(&a, SHOW).await, "s_a, public|7s|app");
            assert_eq!(scalar(&b, SHOW).await, "\"$user\", public|0|app");
            assert_eq!(scalar(&admin_conn, SHOW).await, "\"$user\", public|0|app");
        }
        admin_conn.simple_query("reset role").await.unwrap();
        assert_eq!(scalar(&admin_conn, "select current_user").await, "admin");
        // Rolled back and LOCAL settings are not kept.
        b.simple_query("begin; set statement_timeout = '9s'; rollback").await.unwrap();
        b.simple_query("begin; set local statement_timeout = '8s'; commit").await.unwrap();
        assert_eq!(scalar(&b, "show statement_timeout").await, "0");
        // RESET ALL goes back to the startup settings.
        a.simple_query("reset all").await.unwrap();
        assert_eq!(scalar(&a, SHOW).await, "\"$user\", public|0|app");
        let e = b.simple_query("set statement_timeout = 'bogus'").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("22023"));
        assert_eq!(scalar(&b, "show statement_timeout").await, "0");
    });
}

#[test]
fn listen_notify_through_a_pinned_session() {
    // The listener holds no connection (notify.rs); the temp table's client is pinned
    // below, and the other connections serve everyone else.
    let px = Setup { pool_size: 3, ..Default::default() }.start();
    mt().block_on(async {
        let mut listener = Raw::connect(px.port, "app", "app", "app").await;
        listener.simple("LISTEN pgmux_chan").await;
        let sender = px.connect().await;
        for i in 0..3 {
            sender.simple_query(&format!("NOTIFY pgmux_chan, 'hello {i}'")).await.unwrap();
        }
        let mut got = vec![];
        while got.len() < 3 {
            if let Some(Msg::Notification { channel, payload }) = listener.try_next().await {
                assert_eq!(channel, "pgmux_chan");
                got.push(payload);
            }
        }
        assert_eq!(got, ["hello 0", "hello 1", "hello 2"]);
        // A temporary table lives on in the pinned session.
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        c.simple("create temp table t_pin (x int); insert into t_pin values (1)").await;
        for _ in 0..3 {
            let other = px.connect().await;
            assert_eq!(scalar(&other, "select 1").await, "1");
            let r = c.simple("select count(*) from t_pin").await;
            assert_eq!(common::raw::rows(&r), vec![vec![Some("1".to_string())]]);
        }
    });
}

#[test]
fn session_features_can_be_refused() {
    let setup = Setup { pool_size: 1, ..Default::default() };
    let yaml_extra = "    session_features: reject\n";
    let px = Setup { extra: String::new(), ..setup }.start_with(|y| y.replace("    replicas:", &format!("{yaml_extra}    replicas:")));
    mt().block_on(async {
        let c = px.connect().await;
        // LISTEN is no session-only feature in transaction mode (protocol-tests/notify.rs).
        c.simple_query("LISTEN chan").await.unwrap();
        let e = c.simple_query("create temp table t (x int)").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"));
        assert_eq!(scalar(&c, "select 'still usable'").await, "still usable");
    });
}
