//! Read/write routing against a real primary and two streaming replicas: where
//! statements land (each server answers `inet_server_port()` with its own port),
//! that every kind of write succeeds (a replica would refuse it with 25006), held-back
//! BEGIN, transactions that move to the primary, hints, `SET pgmux.route`, per-user
//! routes, and read-your-writes against a replica that lags on purpose.
//!
//! The tests change replicas' settings, so they run one at a time.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{cluster, direct, mt, scalar, sqlstate, Pgmux, Setup};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const ROUTING: &str = "routing:\n  read_write_split: true\n  monitor_interval: 100ms\n  write_functions: [bump_counter]\n";

fn start(extra: &str) -> Pgmux {
    Setup { extra: format!("{ROUTING}{extra}"), ..Default::default() }.start()
}

fn primary_port() -> String {
    cluster().primary.port.to_string()
}

/// Waits until a fresh client's read lands on a replica (the monitor has checked them).
async fn replicas_ready(px: &Pgmux) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = px.connect().await;
        if scalar(&c, "select pg_is_in_recovery()").await == "t" {
            return;
        }
        assert!(Instant::now() < deadline, "no read reached a replica within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the test schema on the primary (once) and waits for the replicas.
fn schema() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let c = cluster();
        c.psql(
            c.primary.port,
            "app",
            "create table if not exists routed (id bigint primary key, v text);
             create sequence if not exists routed_seq;
             create or replace function bump_counter() returns bigint language sql as 'select nextval(''routed_seq'')';
             grant all on routed, routed_seq to app;
             do $$ begin create role reporting login password 'reporting'; exception when duplicate_object then null; end $$;
             grant select on routed to reporting;",
        )
        .unwrap();
        c.wait_replicas_caught_up().unwrap();
    });
}

#[test]
fn reads_go_round_robin_to_replicas_and_every_write_to_the_primary() {
    let _s = serial();
    schema();
    let px = start("");
    mt().block_on(async {
        replicas_ready(&px).await;
        let c = px.connect().await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..20 {
            *seen.entry(scalar(&c, "select inet_server_port()").await).or_default() += 1;
        }
        let replicas: Vec<String> = cluster().replicas.iter().map(|r| r.port.to_string()).collect();
        assert_eq!(seen.len(), 2, "reads should alternate over both replicas: {seen:?}");
        for r in &replicas {
            assert_eq!(seen.get(r), Some(&10), "{seen:?}");
        }
        // Extended protocol too.
        let row = c.query_one("select inet_server_port()::text, $1::int", &[&7i32]).await.unwrap();
        assert!(replicas.contains(&row.get::<_, String>(0)));
        // Hints.
        assert!(replicas.contains(&scalar(&c, "-- pgmux:replica\nselect inet_server_port()").await));
        // (A primary hint counts as a write for read-your-writes: it is how one marks
        // a function the classifier does not know.)
        assert_eq!(scalar(&c, "/* pgmux:primary */ select inet_server_port()").await, primary_port());
        // Every kind of write succeeds: on a replica each would fail with 25006.
        let base = 1_000_000 + std::process::id() as i64 * 100;
        let writes = [
            format!("insert into routed values ({base}, 'a') returning inet_server_port()"),
            format!("update routed set v = 'b' where id = {base} returning inet_server_port()"),
            format!("select inet_server_port() from routed where id = {base} for update"),
            format!("select inet_server_port() from routed where id = {base} for no key update"),
            format!("with x as (insert into routed values ({}, 'c') returning id) select inet_server_port() from x", base + 1),
            "select inet_server_port() from (select nextval('routed_seq')) s".to_string(),
            "select inet_server_port() from (select bump_counter()) s".to_string(),
        ];
        for w in &writes {
            assert_eq!(scalar(&c, w).await, primary_port(), "{w}");
        }
        // Prepared (extended protocol) writes too.
        let st = c.prepare("select inet_server_port()::text from (select nextval('routed_seq')) s").await.unwrap();
        assert_eq!(c.query_one(&st, &[]).await.unwrap().get::<_, String>(0), primary_port());
    });
}

#[test]
fn transactions_start_where_their_first_statement_goes_and_move_at_a_write() {
    let _s = serial();
    schema();
    let px = start("");
    mt().block_on(async {
        replicas_ready(&px).await;
        let replicas: Vec<String> = cluster().replicas.iter().map(|r| r.port.to_string()).collect();
        let mut c = px.connect().await;
        // BEGIN; SELECT; INSERT; COMMIT: read on a replica, then moved to the primary.
        let id = 2_000_000 + std::process::id() as i64;
        let t = c.transaction().await.unwrap();
        let port: String = t.query_one("select inet_server_port()::text", &[]).await.unwrap().get(0);
        assert!(replicas.contains(&port), "the read of the transaction: {port}");
        t.execute("insert into routed values ($1, 'in a transaction')", &[&id]).await.unwrap();
        let port: String = t.query_one("select inet_server_port()::text", &[]).await.unwrap().get(0);
        assert_eq!(port, primary_port(), "after the write the transaction is on the primary");
        let v: String = t.query_one("select v from routed where id = $1", &[&id]).await.unwrap().get(0);
        assert_eq!(v, "in a transaction", "the transaction sees its own write");
        t.commit().await.unwrap();
        let admin = direct(cluster().primary.port).await;
        let n: i64 = admin.query_one("select count(*) from routed where id = $1", &[&id]).await.unwrap().get(0);
        assert_eq!(n, 1, "the write was committed on the primary");
        // A read-only transaction stays on a replica; a write in it fails as on any
        // server. (A new client: this one's reads follow its write to the primary.)
        let mut c = px.connect().await;
        c.simple_query("begin read only").await.unwrap();
        assert!(replicas.contains(&scalar(&c, "select inet_server_port()").await));
        let e = c.simple_query("insert into routed values (-1, 'x')").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "{e}");
        c.simple_query("rollback").await.unwrap();
        // Repeatable read keeps its snapshot: on the primary from the start.
        c.simple_query("begin isolation level repeatable read").await.unwrap();
        assert_eq!(scalar(&c, "select inet_server_port()").await, primary_port());
        c.simple_query("commit").await.unwrap();
        // An empty transaction is answered by pgmux alone.
        c.simple_query("begin").await.unwrap();
        c.simple_query("commit").await.unwrap();
        // A failed transaction stays failed: no move to the primary after an error.
        c.simple_query("begin").await.unwrap();
        assert!(c.simple_query("select 1/0").await.is_err());
        let e = c.simple_query("insert into routed values (-2, 'x')").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("25P02"), "{e}");
        c.simple_query("rollback").await.unwrap();
        assert_eq!(n, 1);
        let _ = &mut c;
    });
}

#[test]
fn set_pgmux_route_and_per_user_routes() {
    let _s = serial();
    schema();
    let px = Setup { extra: ROUTING.into(), ..Default::default() }
        .start_with(|y| y.replacen("users:\n", "users:\n  - name: reporting\n    password: reporting\n    route: replica\n", 1));
    mt().block_on(async {
        replicas_ready(&px).await;
        let replicas: Vec<String> = cluster().replicas.iter().map(|r| r.port.to_string()).collect();
        let c = px.connect().await;
        assert_eq!(scalar(&c, "show pgmux.route").await, "auto");
        c.simple_query("SET pgmux.route = primary").await.unwrap();
        assert_eq!(scalar(&c, "show pgmux.route").await, "primary");
        for _ in 0..4 {
            assert_eq!(scalar(&c, "select inet_server_port()").await, primary_port());
        }
        c.simple_query("RESET pgmux.route").await.unwrap();
        assert!(replicas.contains(&scalar(&c, "select inet_server_port()").await));
        let e = c.simple_query("set pgmux.route = sideways").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("22023"), "{e}");
        // Another client is not affected by this one's setting.
        c.simple_query("SET pgmux.route = primary").await.unwrap();
        let other = px.connect().await;
        assert!(replicas.contains(&scalar(&other, "select inet_server_port()").await));
        // A user whose route is `replica` reads replicas only; its writes are refused
        // there, never run on the primary.
        let r = px.connect_as("reporting", "reporting", "app").await.unwrap();
        for _ in 0..4 {
            assert!(replicas.contains(&scalar(&r, "select inet_server_port()").await));
        }
        let e = r.simple_query("insert into routed values (-3, 'x')").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("25006"), "{e}");
    });
}

/// Makes every replica apply WAL `delay` late (`recovery_min_apply_delay`).
fn replica_delay(delay: &str) {
    let c = cluster();
    for r in &c.replicas {
        c.psql(r.port, "app", &format!("alter system set recovery_min_apply_delay = '{delay}'")).unwrap();
        c.psql(r.port, "app", "select pg_reload_conf()").unwrap();
    }
}

/// Write-then-read pairs through one client; returns how many reads missed the write
/// and how many reads a replica answered.
async fn write_then_read(px: &Pgmux, pairs: i64, base: i64) -> (usize, usize) {
    let c = px.connect().await;
    let insert = c.prepare("insert into routed values ($1, 'ryw')").await.unwrap();
    let read = c.prepare("select count(*), pg_is_in_recovery() from routed where id = $1").await.unwrap();
    let (mut stale, mut on_replica) = (0, 0);
    for i in 0..pairs {
        c.execute(&insert, &[&(base + i)]).await.unwrap();
        let row = c.query_one(&read, &[&(base + i)]).await.unwrap();
        if row.get::<_, i64>(0) != 1 {
            stale += 1;
        }
        if row.get::<_, bool>(1) {
            on_replica += 1;
        }
    }
    (stale, on_replica)
}

#[test]
fn read_your_writes_against_lagging_replicas() {
    let _s = serial();
    schema();
    replica_delay("300ms");
    let run = || {
        let px = start("  read_your_writes: true\n  max_replica_lag: 5s\n");
        mt().block_on(async {
            replicas_ready(&px).await;
            // The replicas lag, yet take reads: a client that has not written reads there.
            let fresh = px.connect().await;
            assert_eq!(scalar(&fresh, "select pg_is_in_recovery()").await, "t");
            let base = 3_000_000 + (std::process::id() as i64 % 1000) * 10_000;
            write_then_read(&px, 1000, base).await
        })
    };
    let (stale, _) = run();
    replica_delay("0");
    assert_eq!(stale, 0, "with read_your_writes every read saw the client's own write");
}

#[test]
fn without_read_your_writes_a_lagging_replica_returns_stale_reads() {
    // The control for the test above: the same workload does see stale data when
    // read_your_writes is off, so the test above can fail.
    let _s = serial();
    schema();
    replica_delay("300ms");
    let px = Setup {
        extra: "routing:\n  read_write_split: true\n  monitor_interval: 100ms\n  read_your_writes: false\n  max_replica_lag: 5s\n".into(),
        ..Default::default()
    }
    .start();
    let (stale, on_replica) = mt().block_on(async {
        replicas_ready(&px).await;
        let base = 4_000_000 + (std::process::id() as i64 % 1000) * 10_000;
        write_then_read(&px, 50, base).await
    });
    replica_delay("0");
    assert!(on_replica > 0 && stale > 0, "stale {stale}, on a replica {on_replica}");
}

/// A pipeline that parses a write after reads, with Flushes between, while its
/// transaction sits on a replica (psycopg's pipeline mode does this): the Bind is
/// judged by what the client just parsed, not by its previous unnamed statement, so
/// the write moves the transaction to the primary instead of failing there (25006).
#[test]
fn a_write_parsed_in_a_pipeline_after_reads_goes_to_the_primary() {
    use bytes::BytesMut;
    use common::raw::{self, Raw};
    use postgres_protocol::message::frontend;
    let _s = serial();
    schema();
    let px = start("");
    mt().block_on(async {
        replicas_ready(&px).await;
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        // The client's unnamed statement is a read.
        let mut out = BytesMut::new();
        raw::extended(&mut out, "select 1", &[]);
        frontend::sync(&mut out);
        c.send(&out).await;
        c.until_ready(1).await;
        for round in 0..20i64 {
            c.simple("begin").await;
            let mut out = BytesMut::new();
            // A read: the transaction begins on a replica.
            raw::extended(&mut out, "select pg_is_in_recovery()", &[]);
            frontend::flush(&mut out);
            // The unnamed statement becomes a write...
            let id = 900_000 + round;
            frontend::parse("", &format!("insert into routed (id, v) values ({id}, 'pipelined')"), std::iter::empty(), &mut out).unwrap();
            frontend::flush(&mut out);
            // ...and runs.
            raw::bind(&mut out, "", &[]);
            frontend::execute("", 0, &mut out).unwrap();
            frontend::sync(&mut out);
            c.send(&out).await;
            let msgs = c.until_ready(1).await;
            assert!(raw::errors(&msgs).is_empty(), "round {round}: {msgs:?}");
            let msgs = c.simple("commit").await;
            assert!(raw::errors(&msgs).is_empty(), "round {round}: {msgs:?}");
        }
        let on_primary = direct(cluster().primary.port).await;
        let n: i64 = on_primary.query_one("select count(*) from routed where v = 'pipelined'", &[]).await.unwrap().get(0);
        assert_eq!(n, 20);
    });
}

/// Everything up to and including the next message of type `tag`.
async fn until(c: &mut common::raw::Raw, tag: fn(&common::raw::Msg) -> bool) -> Vec<common::raw::Msg> {
    let mut v = vec![];
    loop {
        let m = c.next().await;
        let stop = tag(&m);
        v.push(m);
        if stop {
            return v;
        }
    }
}

/// asyncpg runs every statement in two round trips: Parse/Describe/Flush, then
/// Bind/Execute/Sync. A write prepared so (named or unnamed, on a fresh connection,
/// outside a transaction) runs on the primary instead of failing on a replica (25006).
#[test]
fn a_write_prepared_before_a_flush_runs_on_the_primary() {
    use bytes::BytesMut;
    use common::raw::{self, Msg, Raw};
    use postgres_protocol::message::frontend;
    let _s = serial();
    schema();
    let px = start("");
    mt().block_on(async {
        replicas_ready(&px).await;
        for (round, name) in ["__asyncpg_stmt_1__", ""].into_iter().enumerate() {
            let mut c = Raw::connect(px.port, "app", "app", "app").await;
            let mut out = BytesMut::new();
            let sql = "insert into routed (id, v) values ($1::bigint, $2) returning inet_server_port()::text";
            frontend::parse(name, sql, std::iter::empty(), &mut out).unwrap();
            frontend::describe(b'S', name, &mut out).unwrap();
            frontend::flush(&mut out);
            c.send(&out).await;
            // ParseComplete, ParameterDescription, RowDescription: the answer to the Flush.
            let msgs = until(&mut c, |m| *m == Msg::Other(b'T')).await;
            assert_eq!(msgs, [Msg::Other(b'1'), Msg::Other(b't'), Msg::Other(b'T')]);
            let mut out = BytesMut::new();
            let id = (910_000 + round).to_string();
            raw::bind_execute(&mut out, name, &[&id, "flush-prepared"]);
            frontend::sync(&mut out);
            c.send(&out).await;
            let msgs = c.until_ready(1).await;
            assert!(raw::errors(&msgs).is_empty(), "statement {name:?}: {msgs:?}");
            assert_eq!(raw::rows(&msgs), [[Some(primary_port())]], "statement {name:?} ran on the primary");
        }
    });
}

/// Messages a Flush left without their Sync on a replica (a read already executed,
/// then a write prepared) do not keep the client there: pgmux ends them with a Sync
/// of its own, hidden from the client, and the write runs on the primary. The client
/// sees every answer it asked for, and exactly one ReadyForQuery.
#[test]
fn a_request_left_unsynced_on_a_replica_does_not_decide_where_a_write_runs() {
    use bytes::BytesMut;
    use common::raw::{self, Msg, Raw};
    use postgres_protocol::message::frontend;
    let _s = serial();
    schema();
    let px = start("");
    mt().block_on(async {
        replicas_ready(&px).await;
        let replicas: Vec<String> = cluster().replicas.iter().map(|r| r.port.to_string()).collect();
        for round in 0..10i64 {
            let mut c = Raw::connect(px.port, "app", "app", "app").await;
            // A read, executed before a Flush: it runs on a replica, its rows arrive.
            let mut out = BytesMut::new();
            raw::extended(&mut out, "select inet_server_port()::text", &[]);
            frontend::flush(&mut out);
            c.send(&out).await;
            let msgs = until(&mut c, |m| matches!(m, Msg::Complete(_))).await;
            let rows = raw::rows(&msgs);
            assert!(replicas.contains(rows[0][0].as_ref().unwrap()), "round {round}: the read ran on a replica: {msgs:?}");
            // A write, prepared before a Flush, then executed: sent in one go.
            let mut out = BytesMut::new();
            let sql = "insert into routed (id, v) values ($1::bigint, 'after-unsynced') returning inet_server_port()::text";
            frontend::parse("w", sql, std::iter::empty(), &mut out).unwrap();
            frontend::describe(b'S', "w", &mut out).unwrap();
            frontend::flush(&mut out);
            raw::bind_execute(&mut out, "w", &[&(920_000 + round).to_string()]);
            frontend::sync(&mut out);
            c.send(&out).await;
            let msgs = c.until_ready(1).await;
            assert!(raw::errors(&msgs).is_empty(), "round {round}: {msgs:?}");
            assert_eq!(raw::rows(&msgs), [[Some(primary_port())]], "round {round}: {msgs:?}");
            // Nothing more: the hidden Sync's ReadyForQuery did not reach the client.
            let msgs = c.simple("select 'next'").await;
            assert_eq!(raw::rows(&msgs), [[Some("next".to_string())]], "round {round}: {msgs:?}");
        }
        let on_primary = direct(cluster().primary.port).await;
        let n: i64 = on_primary.query_one("select count(*) from routed where v = 'after-unsynced'", &[]).await.unwrap().get(0);
        assert_eq!(n, 10);
    });
}
