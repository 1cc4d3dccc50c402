//! Named and unnamed prepared statements in transaction mode: each client's
//! statements work on whatever server connection it gets, names never collide
//! between clients, and the server's statement cache stays bounded.

mod common;

use common::mt;

use std::time::Duration;

use bytes::BytesMut;
use common::raw::{self, bind_execute, Msg, Raw};
use common::{cluster, direct, sqlstate, Setup};
use postgres_protocol::message::frontend;

#[test]
fn tokio_postgres_prepared_statements_across_transactions() {
    let px = Setup { pool_size: 2, checkout_timeout: "20s", ..Default::default() }.start();
    mt().block_on(async {
        let mut tasks = vec![];
        for i in 0..20i32 {
            let url = px.conn_str("app", "app", "app");
            tasks.push(tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                // Prepared once, executed in many transactions on whatever server is free.
                let add = c.prepare("select $1::int4 + $2::int4").await.unwrap();
                let echo = c.prepare(&format!("select $1::text || '-{i}'")).await.unwrap();
                for j in 0..25i32 {
                    let r: i32 = c.query_one(&add, &[&i, &j]).await.unwrap().get(0);
                    assert_eq!(r, i + j);
                    let s: String = c.query_one(&echo, &[&j.to_string()]).await.unwrap().get(0);
                    assert_eq!(s, format!("{j}-{i}"));
                    // The plain query API prepares a statement on every call.
                    let r = c.query("select $1::int8 * 2", &[&(j as i64)]).await.unwrap();
                    assert_eq!(r[0].get::<_, i64>(0), j as i64 * 2);
                }
                // Inside an explicit transaction too.
                let mut c = c;
                let tx = c.transaction().await.unwrap();
                let r: i32 = tx.query_one(&add, &[&1, &2]).await.unwrap().get(0);
                tx.commit().await.unwrap();
                r
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 3);
        }
    });
}

#[test]
fn same_statement_name_different_sql_in_two_clients() {
    let px = Setup { pool_size: 1, ..Default::default() }.start();
    mt().block_on(async {
        let mut a = Raw::connect(px.port, "app", "app", "app").await;
        let mut b = Raw::connect(px.port, "app", "app", "app").await;
        let mut out = BytesMut::new();
        frontend::parse("S_1", "select 'from a', $1::int", std::iter::empty(), &mut out).unwrap();
        frontend::sync(&mut out);
        a.send(&out).await;
        a.until_ready(1).await;
        out.clear();
        frontend::parse("S_1", "select 'from b', $1::int * 10", std::iter::empty(), &mut out).unwrap();
        frontend::sync(&mut out);
        b.send(&out).await;
        b.until_ready(1).await;
        for i in 0..5 {
            for (c, want) in [(&mut a, format!("from a {i}")), (&mut b, format!("from b {}", i * 10))] {
                let mut out = BytesMut::new();
                bind_execute(&mut out, "S_1", &[&i.to_string()]);
                frontend::sync(&mut out);
                c.send(&out).await;
                let msgs = c.until_ready(1).await;
                let row = &raw::rows(&msgs)[0];
                assert_eq!(format!("{} {}", row[0].as_deref().unwrap(), row[1].as_deref().unwrap()), want);
            }
        }
        // Closing a's S_1 leaves b's alone; a's is gone for a.
        let mut out = BytesMut::new();
        frontend::close(b'S', "S_1", &mut out).unwrap();
        frontend::sync(&mut out);
        a.send(&out).await;
        a.until_ready(1).await;
        let mut out = BytesMut::new();
        bind_execute(&mut out, "S_1", &["7"]);
        frontend::sync(&mut out);
        b.send(&out).await;
        assert_eq!(raw::rows(&b.until_ready(1).await)[0][1].as_deref(), Some("70"));
        a.send(&out).await;
        assert_eq!(raw::errors(&a.until_ready(1).await), vec!["26000".to_string()]);
    });
}

#[test]
fn unnamed_statement_parsed_in_one_transaction_bound_in_the_next() {
    let px = Setup { pool_size: 1, ..Default::default() }.start();
    mt().block_on(async {
        let mut a = Raw::connect(px.port, "app", "app", "app").await;
        let mut b = Raw::connect(px.port, "app", "app", "app").await;
        // a: Parse + Describe + Sync (as sqlx does), then b uses the server's unnamed slot.
        let mut out = BytesMut::new();
        frontend::parse("", "select 'a:' || $1::text", std::iter::empty(), &mut out).unwrap();
        frontend::describe(b'S', "", &mut out).unwrap();
        frontend::sync(&mut out);
        a.send(&out).await;
        a.until_ready(1).await;
        let mut out = BytesMut::new();
        raw::extended(&mut out, "select 'b'", &[]);
        frontend::sync(&mut out);
        b.send(&out).await;
        b.until_ready(1).await;
        // a's Bind of the unnamed statement still means a's SQL.
        let mut out = BytesMut::new();
        bind_execute(&mut out, "", &["x"]);
        frontend::sync(&mut out);
        a.send(&out).await;
        let msgs = a.until_ready(1).await;
        assert_eq!(raw::rows(&msgs), vec![vec![Some("a:x".to_string())]], "{msgs:?}");
    });
}

#[test]
fn sqlx_statement_cache_in_transaction_mode() {
    use sqlx::Row;
    let px = Setup { pool_size: 2, checkout_timeout: "20s", ..Default::default() }.start();
    mt().block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(10).connect(&px.url()).await.unwrap();
        let mut tasks = vec![];
        for i in 0..200i64 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let row = sqlx::query("select $1::int8 * 3 as v").bind(i).fetch_one(&pool).await.unwrap();
                assert_eq!(row.get::<i64, _>("v"), i * 3);
                let row = sqlx::query("select $1::text as v").bind(i.to_string()).persistent(false).fetch_one(&pool).await.unwrap();
                assert_eq!(row.get::<String, _>("v"), i.to_string());
                let mut tx = pool.begin().await.unwrap();
                let row = sqlx::query("select $1::int8 + 1 as v").bind(i).fetch_one(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
                row.get::<i64, _>("v")
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), i as i64 + 1);
        }
    });
}

#[test]
fn server_statement_cache_is_bounded_and_evicts_for_real() {
    let px = Setup { pool_size: 1, extra: "max_prepared_statements: 3\n".into(), ..Default::default() }.start();
    mt().block_on(async {
        let c = px.connect_named("tp_evict").await;
        let mut stmts = vec![];
        for i in 0..10 {
            stmts.push(c.prepare(&format!("select {i} + $1::int4")).await.unwrap());
        }
        for round in 0..3 {
            for (i, s) in stmts.iter().enumerate() {
                let r: i32 = c.query_one(s, &[&round]).await.unwrap().get(0);
                assert_eq!(r, i as i32 + round);
            }
        }
        let admin = direct(cluster().primary.port).await;
        // pg_prepared_statements is per backend: ask through pgmux, on the one server connection.
        let n = c.simple_query("select count(*) from pg_prepared_statements where name like 'pgmux_%'").await.unwrap();
        let n: i64 = n
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
                _ => None,
            })
            .unwrap();
        assert!(n <= 3, "{n} statements prepared on the server");
        drop(admin);
    });
}

#[test]
fn pgbench_prepared_mode_runs_clean() {
    let px = Setup { pool_size: 3, checkout_timeout: "20s", ..Default::default() }.start();
    let bindir = pgmux::cluster::pg_bindir();
    let env = [("PGPASSWORD", "app")];
    let init = std::process::Command::new(bindir.join("pgbench"))
        .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", &cluster().primary.port.to_string(), "-U", "app", "app"])
        .envs(env)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    for mode in ["prepared", "extended"] {
        let out = std::process::Command::new(bindir.join("pgbench"))
            .args([
                "-M",
                mode,
                "-S",
                "-c",
                "8",
                "-j",
                "2",
                "-T",
                "2",
                "-n",
                "-h",
                "127.0.0.1",
                "-p",
                &px.port.to_string(),
                "-U",
                "app",
                "app",
            ])
            .envs(env)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "pgbench -M {mode}: {stdout}\n{stderr}");
        assert!(stdout.contains("number of failed transactions: 0"), "{stdout}");
        assert!(!stderr.contains("error"), "{stderr}");
    }
}

#[test]
fn discard_all_and_deallocate_in_transaction_mode() {
    let px = Setup { pool_size: 1, ..Default::default() }.start();
    mt().block_on(async {
        let c = px.connect().await;
        let s = c.prepare("select 41 + $1::int4").await.unwrap();
        assert_eq!(c.query_one(&s, &[&1]).await.unwrap().get::<_, i32>(0), 42);
        // Another client wipes the server's statements; c's statement still works.
        let other = px.connect().await;
        other.simple_query("deallocate all").await.unwrap();
        assert_eq!(c.query_one(&s, &[&2]).await.unwrap().get::<_, i32>(0), 43);
        other.simple_query("discard all").await.unwrap();
        assert_eq!(c.query_one(&s, &[&3]).await.unwrap().get::<_, i32>(0), 44);
        let e = other.simple_query("select 1/0").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("22012"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    });
}

#[test]
fn a_migration_under_a_prepared_select_star_heals() {
    let px = Setup { pool_size: 1, ..Default::default() }.start();
    mt().block_on(async {
        let c = px.connect().await;
        c.simple_query("drop table if exists tp_mig; create table tp_mig (a int); insert into tp_mig values (1)").await.unwrap();
        let s = c.prepare("select * from tp_mig").await.unwrap();
        assert_eq!(c.query_one(&s, &[]).await.unwrap().len(), 1);
        let other = px.connect().await;
        let s_other = other.prepare("select * from tp_mig").await.unwrap();
        c.simple_query("alter table tp_mig add column b int default 2").await.unwrap();
        // PostgreSQL refuses the stale statement once...
        let e = c.query_one(&s, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
        // ...and the driver's re-prepare really re-prepares on the server, for everyone.
        let s2 = c.prepare("select * from tp_mig").await.unwrap();
        let row = c.query_one(&s2, &[]).await.unwrap();
        assert_eq!((row.len(), row.get::<_, i32>(1)), (2, 2));
        let s_other2 = other.prepare("select * from tp_mig").await.unwrap();
        assert_eq!(other.query_one(&s_other2, &[]).await.unwrap().len(), 2);
        drop(s_other);
    });
}

#[test]
fn a_stale_plan_is_retried_transparently_when_the_client_describes() {
    let px = Setup { pool_size: 1, ..Default::default() }.start();
    mt().block_on(async {
        let setup = px.connect().await;
        setup.simple_query("drop table if exists tp_retry; create table tp_retry (a int); insert into tp_retry values (1)").await.unwrap();
        // Like node-postgres: Parse once, then Bind/Describe(portal)/Execute/Sync each time.
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        let mut out = BytesMut::new();
        frontend::parse("q", "select * from tp_retry", std::iter::empty(), &mut out).unwrap();
        frontend::sync(&mut out);
        c.send(&out).await;
        c.until_ready(1).await;
        let msgs = run_described(&mut c, "q").await;
        assert_eq!(raw::rows(&msgs), vec![vec![Some("1".to_string())]]);
        setup.simple_query("alter table tp_retry add column b text default 'new'").await.unwrap();
        // The statement is stale; the client gets the new shape, not an error.
        let msgs = run_described(&mut c, "q").await;
        assert!(raw::errors(&msgs).is_empty(), "{msgs:?}");
        assert_eq!(raw::rows(&msgs), vec![vec![Some("1".to_string()), Some("new".to_string())]]);
        let msgs = run_described(&mut c, "q").await;
        assert_eq!(raw::rows(&msgs), vec![vec![Some("1".to_string()), Some("new".to_string())]]);
    });
}

/// Bind/Describe(portal)/Execute/Sync of a named statement, as node-postgres sends.
async fn run_described(c: &mut Raw, stmt: &str) -> Vec<raw::Msg> {
    let mut out = BytesMut::new();
    bind_execute(&mut out, stmt, &[]);
    let execute_at = out.len() - 10; // Execute: tag, length, "" portal, max rows
    let mut msg = BytesMut::from(&out[..execute_at]);
    frontend::describe(b'P', "", &mut msg).unwrap();
    msg.extend_from_slice(&out[execute_at..]);
    frontend::sync(&mut msg);
    c.send(&msg).await;
    c.until_ready(1).await
}

#[test]
fn sql_deallocate_of_a_protocol_level_statement() {
    // PHP PDO prepares with the protocol and deallocates with SQL.
    let px = Setup { pool_size: 1, ..Default::default() }.start();
    mt().block_on(async {
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        let other = px.connect().await;
        let mut out = BytesMut::new();
        frontend::parse("pdo_stmt_00000001", "select 5", std::iter::empty(), &mut out).unwrap();
        frontend::sync(&mut out);
        c.send(&out).await;
        c.until_ready(1).await;
        let msgs = c.simple("DEALLOCATE pdo_stmt_00000001").await;
        assert!(raw::errors(&msgs).is_empty(), "{msgs:?}");
        assert!(msgs.contains(&Msg::Complete("DEALLOCATE".into())), "{msgs:?}");
        // Gone for the client, as on a direct connection; others are not affected.
        let mut out = BytesMut::new();
        bind_execute(&mut out, "pdo_stmt_00000001", &[]);
        frontend::sync(&mut out);
        c.send(&out).await;
        assert_eq!(raw::errors(&c.until_ready(1).await), vec!["26000".to_string()]);
        assert_eq!(other.query_one("select 6", &[]).await.unwrap().get::<_, i32>(0), 6);
        // A name the client never prepared is PostgreSQL's business.
        let msgs = c.simple("DEALLOCATE nope").await;
        assert_eq!(raw::errors(&msgs), vec!["26000".to_string()]);
    });
}
