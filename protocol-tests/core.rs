//! The core proxy against a real PostgreSQL: pooling, the protocol, cancel,
//! cleanup after vanished clients, refusals, shutdown.

mod common;

use common::{mt, scalar};

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::raw::{self, Msg, Raw};
use common::{app_backends, cluster, direct, http_get, message, sqlstate, Setup};
use postgres_protocol::message::frontend;
use tokio_postgres::types::Type;

#[test]
fn five_hundred_clients_share_a_pool_of_five() {
    five_hundred_clients(None);
}

/// The same with `workers: 2`: two threads, each with its own scheduler, sharing
/// one pool of 5; the listener gives each half of the clients, and both serve them.
#[test]
fn five_hundred_clients_share_a_pool_of_five_on_two_worker_threads() {
    five_hundred_clients(Some(2));
}

/// CPU time (clock ticks) of each of the process's threads, by thread name.
fn thread_cpu(pid: u32) -> Vec<(String, u64)> {
    let mut out = vec![];
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_string();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
        let ticks =
            rest.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0) + rest.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0);
        out.push((comm, ticks));
    }
    out
}

/// `pgmux_clients_accepted_total` by worker, from the metrics endpoint.
async fn accepted_by_worker(metrics_port: u16) -> Vec<(String, u64)> {
    let (status, body) = http_get(metrics_port, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .filter_map(|l| l.strip_prefix("pgmux_clients_accepted_total{worker=\""))
        .filter_map(|l| l.split_once("\"} ").map(|(w, n)| (w.to_string(), n.trim().parse::<f64>().unwrap_or(0.0) as u64)))
        .collect()
}

fn five_hundred_clients(workers: Option<usize>) {
    let setup = Setup { pool_size: 5, checkout_timeout: "30s", ..Default::default() };
    let metrics_port = pgmux::cluster::free_port();
    let px = match workers {
        Some(n) => setup.start_with(|y| format!("workers: {n}\nmetrics_listen: 127.0.0.1:{metrics_port}\n{y}")),
        None => setup.start(),
    };
    // Each variant's server connections, told apart by application_name.
    let app: &'static str = if workers.is_some() { "tp_500_mt" } else { "tp_500" };
    mt().block_on(async {
        let admin = direct(cluster().primary.port).await;
        let sampler = {
            tokio::spawn(async move {
                let mut max = 0;
                for _ in 0..100 {
                    max = max.max(app_backends(&admin, app, None).await);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                max
            })
        };
        let mut tasks = vec![];
        for i in 0..500i32 {
            let url = format!("{} application_name={app}", px.conn_str("app", "app", "app"));
            tasks.push(tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                for j in 0..3i32 {
                    let v = scalar(&c, &format!("select {i} * 1000 + {j}")).await;
                    assert_eq!(v, (i * 1000 + j).to_string());
                    let row = c.query_typed("select $1::int4 + 1", &[(&(i + j), Type::INT4)]).await.unwrap();
                    assert_eq!(row[0].get::<_, i32>(0), i + j + 1);
                }
                c.simple_query("begin").await.unwrap();
                let v = scalar(&c, &format!("select {i}")).await;
                c.simple_query("commit").await.unwrap();
                v
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), i.to_string());
        }
        let max = sampler.await.unwrap();
        assert!(max <= 5, "pool of 5 opened {max} server connections");
        assert!(max >= 1);
    });
    if workers.is_some() {
        // Both workers served clients.
        let accepted = mt().block_on(accepted_by_worker(metrics_port));
        let threads = thread_cpu(px.pid());
        assert!(threads.iter().any(|(name, _)| name == "pgmux-worker-1"), "no worker thread: {threads:?}");
        // 500 clients, and the harness's readiness probes.
        assert!(accepted.iter().map(|(_, n)| n).sum::<u64>() >= 500, "{accepted:?}");
        // The listener hands clients to each worker in turn.
        let (least, most) = (accepted.iter().map(|a| a.1).min(), accepted.iter().map(|a| a.1).max());
        assert!(accepted.len() == 2 && most.zip(least).is_some_and(|(m, l)| m - l <= 1), "clients per worker {accepted:?}");
        let worker_1 = threads.iter().find(|(name, _)| name == "pgmux-worker-1").map_or(0, |t| t.1);
        assert!(worker_1 > 0, "worker 1 used no CPU: {threads:?}");
    }
}

#[test]
fn checkout_timeout_is_an_error_and_the_client_keeps_its_connection() {
    let px = Setup { pool_size: 1, checkout_timeout: "500ms", ..Default::default() }.start();
    mt().block_on(async {
        let holder = px.connect().await;
        holder.simple_query("begin; select 1").await.unwrap();
        let waiter = px.connect().await;
        let t0 = Instant::now();
        let err = waiter.simple_query("select 1").await.unwrap_err();
        let waited = t0.elapsed();
        assert_eq!(sqlstate(&err).as_deref(), Some("53300"), "{err}");
        assert!(message(&err).contains("no server connection available"), "{err}");
        assert!(waited >= Duration::from_millis(450) && waited < Duration::from_secs(3), "{waited:?}");
        // Extended protocol gets the same error, and the connection stays usable.
        let err = waiter.query_typed("select 1", &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("53300"));
        holder.simple_query("commit").await.unwrap();
        assert_eq!(scalar(&waiter, "select 42").await, "42");
    });
}

#[test]
fn pipelined_extended_protocol_with_an_error_in_the_middle() {
    let px = Setup { pool_size: 2, ..Default::default() }.start();
    mt().block_on(async {
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        let mut out = BytesMut::new();
        for i in 0..20 {
            raw::extended(&mut out, "select $1::int * 2", &[&i.to_string()]);
            frontend::sync(&mut out);
        }
        // One failing batch: the server skips to its Sync, the next batches run.
        raw::extended(&mut out, "select 1/0", &[]);
        raw::extended(&mut out, "select 'skipped'", &[]);
        frontend::sync(&mut out);
        raw::extended(&mut out, "select 'after'", &[]);
        frontend::sync(&mut out);
        c.send(&out).await;
        let msgs = c.until_ready(22).await;
        let rows = raw::rows(&msgs);
        let want: Vec<Vec<Option<String>>> =
            (0..20).map(|i| vec![Some((i * 2).to_string())]).chain([vec![Some("after".to_string())]]).collect();
        assert_eq!(rows, want);
        assert_eq!(raw::errors(&msgs), vec!["22012".to_string()]);

        // Flush without Sync: results arrive, the server stays attached until Sync.
        out.clear();
        raw::extended(&mut out, "select 7", &[]);
        frontend::flush(&mut out);
        c.send(&out).await;
        let mut got = vec![];
        while !matches!(got.last(), Some(Msg::Complete(_))) {
            got.push(c.next().await);
        }
        assert_eq!(raw::rows(&got), vec![vec![Some("7".to_string())]]);
        out.clear();
        frontend::sync(&mut out);
        c.send(&out).await;
        assert_eq!(c.next().await, Msg::Ready(b'I'));
    });
}

#[test]
fn tokio_postgres_pipelining_and_transactions() {
    let px = Setup { pool_size: 2, ..Default::default() }.start();
    mt().block_on(async {
        let c = px.connect().await;
        let (a, b, d) = tokio::join!(
            c.query_typed("select $1::text", &[(&"a", Type::TEXT)]),
            c.query_typed("select $1::int8 * 2", &[(&21i64, Type::INT8)]),
            c.query_typed("select 1/0", &[]),
        );
        assert_eq!(a.unwrap()[0].get::<_, &str>(0), "a");
        assert_eq!(b.unwrap()[0].get::<_, i64>(0), 42);
        assert_eq!(sqlstate(&d.unwrap_err()).as_deref(), Some("22012"));

        c.simple_query("create table if not exists tp_txn (id int)").await.unwrap();
        c.simple_query("begin").await.unwrap();
        c.simple_query("insert into tp_txn values (1)").await.unwrap();
        let e = c.simple_query("select 1/0").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("22012"));
        let e = c.simple_query("select 1").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "failed transaction stays on its server");
        c.simple_query("rollback").await.unwrap();
        assert_eq!(scalar(&c, "select count(*) from tp_txn").await, "0");
    });
}

#[test]
fn copy_in_and_copy_out() {
    use futures_util::{SinkExt, StreamExt};
    // One server connection: a COPY that did not give it back would starve `other`.
    let px = Setup { pool_size: 1, checkout_timeout: "8s", ..Default::default() }.start();
    mt().block_on(async {
        let c = px.connect().await;
        let other = px.connect().await;
        c.simple_query("drop table if exists tp_copy; create table tp_copy (id int, t text)").await.unwrap();
        let sink = c.copy_in("copy tp_copy from stdin").await.unwrap();
        let mut sink = Box::pin(sink);
        let mut data = String::new();
        for i in 0..50_000 {
            data.push_str(&format!("{i}\trow {i}\n"));
        }
        for chunk in data.as_bytes().chunks(7000) {
            sink.send(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        let n = sink.as_mut().finish().await.unwrap();
        assert_eq!(n, 50_000);
        assert_eq!(scalar(&c, "select sum(id) from tp_copy").await, (49_999i64 * 50_000 / 2).to_string());
        assert_eq!(scalar(&other, "select 'released after COPY IN'").await, "released after COPY IN");

        let stream = c.copy_out("copy (select * from tp_copy order by id) to stdout").await.unwrap();
        let mut stream = Box::pin(stream);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(out, data.as_bytes());
        assert_eq!(scalar(&other, "select 'released after COPY OUT'").await, "released after COPY OUT");

        // A failing COPY FROM STDIN leaves the connection usable.
        let sink = c.copy_in("copy tp_copy from stdin").await.unwrap();
        let mut sink = Box::pin(sink);
        sink.send(bytes::Bytes::from_static(b"not-a-number\tx\n")).await.unwrap();
        let e = sink.as_mut().finish().await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("22P02"));
        assert_eq!(scalar(&c, "select count(*) from tp_copy").await, "50000");
        assert_eq!(scalar(&other, "select 'released after COPY failure'").await, "released after COPY failure");
    });
}

#[test]
fn cancel_reaches_the_running_query_and_nothing_else() {
    let px = Setup { pool_size: 2, ..Default::default() }.start();
    mt().block_on(async {
        let c = px.connect().await;
        let token = c.cancel_token();
        // Cancelling an idle client does nothing.
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        assert_eq!(scalar(&c, "select 1").await, "1");

        let t0 = Instant::now();
        let sleeper = tokio::spawn(async move { c.simple_query("select pg_sleep(20)").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let err = sleeper.await.unwrap().unwrap_err();
        assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    });
}

#[test]
fn a_client_killed_mid_transaction_leaves_no_transaction_and_no_lock() {
    let px = Setup { pool_size: 2, ..Default::default() }.start();
    mt().block_on(async {
        let admin = direct(cluster().primary.port).await;
        admin.simple_query("create table if not exists tp_kill (id int); grant all on tp_kill to app").await.unwrap();
        // Idle in a transaction holding a lock, then the socket just closes.
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        c.simple("set application_name = 'tp_kill'").await;
        let r = c.simple("begin; lock table tp_kill in access exclusive mode; insert into tp_kill values (1)").await;
        assert_eq!(r.last(), Some(&Msg::Ready(b'T')));
        drop(c);
        // Mid-result: a large result, the client reads a little and vanishes.
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        c.simple("set application_name = 'tp_kill'").await;
        let mut out = BytesMut::new();
        frontend::query("select g, repeat('x', 100) from generate_series(1, 5000000) g", &mut out).unwrap();
        c.send(&out).await;
        let _ = c.next().await;
        drop(c);

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let idle_in_txn = app_backends(&admin, "tp_kill", Some("idle in transaction")).await;
            let active = app_backends(&admin, "tp_kill", Some("active")).await;
            if idle_in_txn == 0 && active == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "idle in transaction: {idle_in_txn}, active: {active}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let c = px.connect().await;
        c.simple_query("set lock_timeout = '2s'").await.unwrap();
        c.simple_query("begin; lock table tp_kill in access exclusive mode nowait; rollback").await.unwrap();
        assert_eq!(scalar(&c, "select count(*) from tp_kill").await, "0", "the abandoned insert was rolled back");
    });
}

#[test]
fn pg_terminate_backend_gives_an_error_and_the_pool_recovers() {
    let px = Setup { pool_size: 2, ..Default::default() }.start();
    mt().block_on(async {
        let admin = direct(cluster().primary.port).await;
        // Busy connection terminated: its client gets an error.
        let c = px.connect_named("tp_term").await;
        let busy = tokio::spawn(async move { c.simple_query("select pg_sleep(30)").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(500)).await;
        admin
            .simple_query(
                "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'tp_term' and query like '%pg_sleep(30)%'",
            )
            .await
            .unwrap();
        let err = busy.await.unwrap().unwrap_err();
        assert!(err.as_db_error().is_some() || err.is_closed(), "{err}");

        // Idle pooled connections terminated: the next clients never notice.
        let c = px.connect_named("tp_term").await;
        assert_eq!(scalar(&c, "select 1").await, "1");
        admin.simple_query("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'tp_term'").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..10 {
            assert_eq!(scalar(&c, &format!("select {i}")).await, i.to_string());
        }
    });
}

#[test]
fn refusals_use_postgresql_sqlstates() {
    let px = Setup { max_clients: 3, ..Default::default() }.start();
    mt().block_on(async {
        let e = px.connect_as("app", "app", "nosuchdb").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("3D000"), "{e}");
        assert_eq!(message(&e), "database \"nosuchdb\" does not exist");
        let e = px.connect_as("app", "wrong", "app").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
        assert_eq!(message(&e), "password authentication failed for user \"app\"");
        let e = px.connect_as("mallory", "x", "app").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");

        let _a = px.connect().await;
        let _b = px.connect().await;
        let _c = px.connect().await;
        let e = px.connect_as("app", "app", "app").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{e}");
        assert_eq!(message(&e), "sorry, too many clients already");
    });
}

#[test]
fn startup_parameters_reach_the_server_per_client() {
    let px = Setup { pool_size: 1, ..Default::default() }.start();
    mt().block_on(async {
        let conn = |name: &str, path: &str| {
            format!("{} application_name={name} options='-c search_path={path}'", px.conn_str("app", "app", "app"))
        };
        let (a, ca) = tokio_postgres::connect(&conn("alpha", "a_schema"), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(ca);
        let (b, cb) = tokio_postgres::connect(&conn("beta", "b_schema,public"), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(cb);
        let plain = px.connect().await;
        for _ in 0..3 {
            // One server connection, three clients in turn: each sees only its own.
            assert_eq!(
                scalar(&a, "select current_setting('application_name') || ' ' || current_setting('search_path')").await,
                "alpha a_schema"
            );
            assert_eq!(
                scalar(&b, "select current_setting('application_name') || ' ' || current_setting('search_path')").await,
                "beta b_schema,public"
            );
            assert_eq!(
                scalar(&plain, "select current_setting('application_name') || ' ' || current_setting('search_path')").await,
                " \"$user\", public"
            );
        }
    });
}

#[test]
fn session_mode_keeps_state_and_resets_it_for_the_next_client() {
    let px = Setup { pool_size: 1, mode: "session", checkout_timeout: "10s", ..Default::default() }.start();
    mt().block_on(async {
        let a = px.connect().await;
        a.simple_query("set work_mem = '7MB'").await.unwrap();
        // Unnamed and named statements both work in session mode.
        let st = a.prepare("select current_setting('work_mem')").await.unwrap();
        assert_eq!(a.query_one(&st, &[]).await.unwrap().get::<_, &str>(0), "7MB");
        drop(a);
        let b = px.connect().await;
        assert_eq!(scalar(&b, "show work_mem").await, "4MB");
    });
}

#[test]
fn sqlx_through_pgmux() {
    use sqlx::Row;
    mt().block_on(async {
        // Session mode: sqlx's named-statement cache works as on a direct connection.
        let px = Setup { pool_size: 4, mode: "session", checkout_timeout: "10s", ..Default::default() }.start();
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&px.url()).await.unwrap();
        let mut tasks = vec![];
        for i in 0..40i64 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let row = sqlx::query("select $1::int8 * 3 as v").bind(i).fetch_one(&pool).await.unwrap();
                assert_eq!(row.get::<i64, _>("v"), i * 3);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        pool.close().await;

        // Transaction mode, many clients on a pool of 2, inside transactions.
        let px = Setup { pool_size: 2, ..Default::default() }.start();
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(10).connect(&px.url()).await.unwrap();
        let mut tasks = vec![];
        for i in 0..50i64 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                let row = sqlx::query("select $1::int8 as v").bind(i).persistent(false).fetch_one(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
                row.get::<i64, _>("v")
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), i as i64);
        }
    });
}

#[test]
fn sigterm_lets_running_transactions_finish_then_exits() {
    let mut px = Setup::default().start();
    mt().block_on(async {
        let c = px.connect().await;
        let idle = px.connect().await;
        c.simple_query("begin").await.unwrap();
        px.signal(libc::SIGTERM);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // New clients are refused, the idle one is told to go, the busy one finishes.
        assert!(px.connect_as("app", "app", "app").await.is_err());
        assert!(idle.simple_query("select 1").await.is_err());
        assert_eq!(scalar(&c, "select 5").await, "5");
        c.simple_query("commit").await.unwrap();
    });
    let status = px.wait_exit(Duration::from_secs(10)).expect("pgmux exits after the last transaction");
    assert!(status.success(), "{status:?}");
}

#[test]
fn pgmux_check_reports_located_errors() {
    let good = Setup::default().yaml(6432);
    let (ok, err) = common::check_config(&good);
    assert!(ok, "{err}");
    let (ok, err) = common::check_config(&good.replace("  size: 5", "  sise: 5"));
    assert!(!ok);
    assert!(err.contains(":5") && err.contains("sise"), "{err}");
    let (ok, err) = common::check_config(&good.replace("primary: 127.0.0.1", "primary: "));
    assert!(!ok);
    assert!(err.contains("databases.app.primary"), "{err}");
}

#[test]
fn a_server_that_is_down_gives_a_quick_clean_error() {
    let dead = pgmux::cluster::free_port();
    let extra = format!("  down:\n    primary: 127.0.0.1:{dead}\n    dbname: app\n");
    let px = Setup::default().start_with(|y| format!("{y}{extra}"));
    mt().block_on(async {
        for _ in 0..3 {
            let t0 = Instant::now();
            let e = px.connect_as("app", "app", "down").await.unwrap_err();
            assert_eq!(sqlstate(&e).as_deref(), Some("08001"), "{e}");
            assert!(message(&e).contains(&format!("cannot connect to server 127.0.0.1:{dead}")), "{e}");
            assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        }
        // The other database is unaffected.
        let c = px.connect().await;
        assert_eq!(scalar(&c, "select 1").await, "1");
    });
}

#[test]
fn idle_server_connections_close_after_server_idle_timeout() {
    let setup = Setup { pool_size: 3, pool_extra: "  server_idle_timeout: 1s\n".into(), ..Default::default() };
    let px = setup.start();
    mt().block_on(async {
        let admin = direct(cluster().primary.port).await;
        let clients: Vec<_> = futures_util::future::join_all((0..3).map(|_| px.connect_named("tp_idle"))).await;
        // Three concurrent transactions open three server connections.
        futures_util::future::join_all(clients.iter().map(|c| c.simple_query("select pg_sleep(0.3)"))).await;
        assert_eq!(app_backends(&admin, "tp_idle", None).await, 3);
        let deadline = Instant::now() + Duration::from_secs(6);
        while app_backends(&admin, "tp_idle", None).await > 0 {
            assert!(Instant::now() < deadline, "idle server connections were not closed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // And new ones open on demand.
        assert_eq!(scalar(&clients[0], "select 7").await, "7");
    });
}

#[test]
fn flush_never_strands_a_server_connection() {
    let px = Setup { pool_size: 1, checkout_timeout: "3s", ..Default::default() }.start();
    mt().block_on(async {
        // Sync then Flush (psycopg ends every pipeline so): the transaction is over.
        let mut a = Raw::connect(px.port, "app", "app", "app").await;
        let mut out = BytesMut::new();
        raw::extended(&mut out, "select 1", &[]);
        frontend::sync(&mut out);
        frontend::flush(&mut out);
        a.send(&out).await;
        a.until_ready(1).await;
        let b = px.connect().await;
        assert_eq!(scalar(&b, "select 'b got the server'").await, "b got the server");
        // Execute + Flush, results read, then the client vanishes without a Sync.
        let mut out = BytesMut::new();
        raw::extended(&mut out, "select 2", &[]);
        frontend::flush(&mut out);
        a.send(&out).await;
        while !matches!(a.next().await, Msg::Complete(_)) {}
        drop(a);
        assert_eq!(scalar(&b, "select 'b again'").await, "b again");
    });
}

#[test]
fn idle_and_query_timeouts() {
    let setup = Setup {
        pool_size: 2,
        pool_extra: "  idle_transaction_timeout: 500ms\n  client_idle_timeout: 1500ms\n  query_timeout: 700ms\n".into(),
        ..Default::default()
    };
    let px = setup.start();
    mt().block_on(async {
        let admin = direct(cluster().primary.port).await;
        // A long query is cancelled, like statement_timeout; the client carries on.
        let c = px.connect_named("tp_timeouts").await;
        let t0 = Instant::now();
        let e = c.simple_query("select pg_sleep(10)").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("57014"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert_eq!(scalar(&c, "select 'after the cancel'").await, "after the cancel");
        // Idle inside a transaction: disconnected, rolled back, the server reused.
        let c = px.connect_named("tp_timeouts").await;
        c.simple_query("begin").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let e = c.simple_query("select 1").await.unwrap_err();
        assert!(e.is_closed() || sqlstate(&e).as_deref() == Some("25P03"), "{e}");
        assert_eq!(app_backends(&admin, "tp_timeouts", Some("idle in transaction")).await, 0);
        // Idle between transactions past client_idle_timeout: disconnected.
        let c = px.connect().await;
        assert_eq!(scalar(&c, "select 1").await, "1");
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert!(c.simple_query("select 1").await.is_err());
        let fresh = px.connect().await;
        assert_eq!(scalar(&fresh, "select 2").await, "2");
    });
}

#[test]
fn a_scram_verifier_in_the_config_is_enough_to_log_in_both_ways() {
    // The verifier exactly as PostgreSQL stores it for `app`.
    let verifier = cluster().psql(cluster().primary.port, "app", "select rolpassword from pg_authid where rolname = 'app'").unwrap();
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let px = Setup::default()
        .start_with(|y| y.replacen("  - name: app\n    password: app\n", &format!("  - name: app\n    password: \"{verifier}\"\n"), 1));
    mt().block_on(async {
        // No plaintext anywhere: pgmux checks the client with the verifier and logs in
        // to PostgreSQL with the SCRAM keys the client's proof revealed.
        let c = px.connect().await;
        assert_eq!(scalar(&c, "select current_user").await, "app");
        let e = px.connect_as("app", "wrong", "app").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("28P01"));
    });
}

#[test]
fn a_long_wait_for_a_server_is_announced() {
    let px = Setup { pool_size: 1, pool_extra: "  wait_notice: 200ms\n".into(), ..Default::default() }.start();
    mt().block_on(async {
        let holder = px.connect().await;
        holder.simple_query("begin").await.unwrap();
        let mut waiter = Raw::connect(px.port, "app", "app", "app").await;
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            holder.simple_query("commit").await.unwrap();
        });
        let msgs = waiter.simple("select 'served'").await;
        release.await.unwrap();
        assert!(matches!(&msgs[0], Msg::Notice(m) if m.starts_with("pgmux: waiting for a server connection (1 of 1 in use")), "{msgs:?}");
        assert_eq!(raw::rows(&msgs), vec![vec![Some("served".to_string())]]);
    });
}

#[test]
fn the_reserve_pool_serves_clients_that_waited() {
    let setup = Setup {
        pool_size: 1,
        checkout_timeout: "5s",
        pool_extra: "  reserve_pool_size: 1\n  reserve_pool_timeout: 300ms\n".into(),
        ..Default::default()
    };
    let px = setup.start();
    mt().block_on(async {
        let holder = px.connect().await;
        holder.simple_query("begin").await.unwrap();
        // The pool is full; after 300 ms the reserve connection serves the waiter.
        let waiter = px.connect().await;
        let t0 = Instant::now();
        assert_eq!(scalar(&waiter, "select 'from the reserve'").await, "from the reserve");
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(2), "{waited:?}");
        // The reserve is one connection: a third client waits for the checkout timeout... or a release.
        let third = px.connect().await;
        let q = tokio::spawn(async move { scalar(&third, "select 3").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        holder.simple_query("commit").await.unwrap();
        assert_eq!(q.await.unwrap(), "3");
    });
}

/// Server connections in use for database `app` (every pool, primary and replicas).
async fn app_servers_active(console: &tokio_postgres::Client) -> i64 {
    let (_, rows) = common::show(console, "SHOW POOLS").await;
    rows.iter().filter(|r| r["database"] == "app").map(|r| r["sv_active"].parse::<i64>().unwrap()).sum()
}

/// asyncpg's `prepare()` then `close()`: Parse/Describe/Flush, the answers read, then
/// Terminate (or the socket closed) without a Sync. The client leaves at once and its
/// server connection is back in the pool within a second, so six such clients on a
/// pool of four never exhaust it, and a SIGTERM afterwards has nothing to wait for.
#[test]
fn a_client_that_leaves_after_an_unsynced_prepare_gives_its_server_back_at_once() {
    let routing = "routing:\n  read_write_split: true\n  monitor_interval: 100ms\n".to_string();
    let mut px = Setup { pool_size: 4, checkout_timeout: "2s", extra: routing, ..Default::default() }.start();
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let statements = ["select $1::int + 1", "insert into pg_temp.nothing values ($1)", "select pg_backend_pid()"];
        for i in 0..6 {
            let mut c = Raw::connect(px.port, "app", "app", "app").await;
            let mut out = BytesMut::new();
            frontend::parse("__asyncpg_stmt_1__", statements[i % 3], std::iter::empty(), &mut out).unwrap();
            frontend::describe(b'S', "__asyncpg_stmt_1__", &mut out).unwrap();
            frontend::flush(&mut out);
            c.send(&out).await;
            // The answer to the Flush (or the error of the insert into a missing table).
            let first = tokio::time::timeout(Duration::from_secs(3), c.next())
                .await
                .unwrap_or_else(|_| panic!("client {i} got no server within 3 s"));
            assert!(matches!(first, Msg::Other(b'1') | Msg::Error { .. }), "client {i}: {first:?}");
            if i % 2 == 0 {
                c.send(&[b'X', 0, 0, 0, 4]).await;
                // The rest of the answer, then pgmux closes the connection.
                while let Some(m) = c.try_next().await {
                    assert!(matches!(m, Msg::Other(_)), "client {i}: {m:?}");
                }
            } else {
                drop(c);
            }
            let deadline = Instant::now() + Duration::from_secs(1);
            while app_servers_active(&console).await > 0 {
                assert!(Instant::now() < deadline, "client {i}: its server connection is still in use a second after it left");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // The pool serves as before.
        let c = px.connect().await;
        assert_eq!(scalar(&c, "select 'served'").await, "served");
    });
    let started = Instant::now();
    px.signal(libc::SIGTERM);
    let status = px.wait_exit(Duration::from_secs(5)).expect("pgmux exits at once: no client holds a server");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A client that asks for a minor version pgmux does not speak, or sends `_pq_.`
/// options, gets a NegotiateProtocolVersion naming the version it will speak as a
/// whole version number (196610 for 3.2, 196608 for 3.0, as PostgreSQL sends it; a 0
/// there reads as a downgrade to before 3.0 and libpq 18 gives up) and the options
/// it does not know, then the login goes on.
#[test]
fn a_newer_minor_or_unknown_options_are_answered_with_negotiate_protocol_version() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let px = Setup::default().start();
    mt().block_on(async {
        for (version, option, speaks) in
            [(196613i32, None, 196610), (196610, Some("_pq_.test_option"), 196610), (196608, Some("_pq_.other"), 196608)]
        {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", px.port)).await.unwrap();
            let mut body = version.to_be_bytes().to_vec();
            for (k, v) in [("user", "app"), ("database", "app")].into_iter().chain(option.map(|o| (o, "on"))) {
                body.extend_from_slice(k.as_bytes());
                body.push(0);
                body.extend_from_slice(v.as_bytes());
                body.push(0);
            }
            body.push(0);
            let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
            packet.extend_from_slice(&body);
            s.write_all(&packet).await.unwrap();
            let mut head = [0u8; 5];
            s.read_exact(&mut head).await.unwrap();
            assert_eq!(head[0], b'v', "NegotiateProtocolVersion first ({version}, {option:?})");
            let mut rest = vec![0u8; i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4];
            s.read_exact(&mut rest).await.unwrap();
            assert_eq!(i32::from_be_bytes(rest[0..4].try_into().unwrap()), speaks, "the version it gets");
            let n = i32::from_be_bytes(rest[4..8].try_into().unwrap());
            assert_eq!(n, option.is_some() as i32);
            if let Some(o) = option {
                assert_eq!(&rest[8..], format!("{o}\0").as_bytes());
            }
            // Then the password exchange, as for any 3.0 client.
            s.read_exact(&mut head).await.unwrap();
            assert_eq!(head[0], b'R', "authentication request after the negotiation");
        }
        // A 3.0 client without options sees no NegotiateProtocolVersion.
        let c = px.connect().await;
        assert_eq!(scalar(&c, "select 1").await, "1");
    });
}
