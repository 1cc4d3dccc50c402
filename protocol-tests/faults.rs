//! The fault suite (issue #6): a counting workload runs through pgmux (writers
//! inserting globally unique ids, readers reading them back through the replicas)
//! while one fault is injected: a replica killed, the primary restarted, a replica
//! frozen (it stops answering but its sockets stay open), a burst of clients leaving
//! in the middle of transactions, 10,000 clients on a pool of 20.
//!
//! Afterwards, what a user would check: every acknowledged insert is in the table
//! (read on the primary directly), no id is there twice (the id column has no
//! unique constraint, so a statement pgmux ran twice would show), nothing is there
//! that no client sent, pgmux is up and serving, its memory is bounded, and clients
//! saw errors only for what the fault could have touched. Each test prints a
//! `faults:` line with its figures.
//!
//! The tests share one cluster (a primary, two replicas) and run one at a time:
//! each starts by putting the cluster back together.

mod common;
#[path = "faults/procs.rs"]
mod procs;
#[path = "faults/workload.rs"]
mod workload;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{cluster, direct, mt, scalar, show, Pgmux, Setup};
use pgmux::cluster::Cluster;
use workload::{Checked, Op, Tally, Workload};

const WRITERS: usize = 24;
const READERS: usize = 8;
/// Short timeouts: a silent server is given up quickly.
const POOL_TIMEOUTS: &str = "  server_connect_timeout: 1s\n  query_timeout: 1s\n";
/// Reads go to the replicas (routing is on); the monitor checks every 100 ms.
const ROUTING: &str = "routing:\n  monitor_interval: 100ms\n";
/// pgmux may grow by this much during a fault.
const RSS_GROWTH_KIB: u64 = 64 << 10;

/// No test of the suite takes longer (the 10,000 clients take about a minute on two busy cores).
const TEST_LIMIT: Duration = Duration::from_secs(240);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs a test's body on a two-worker runtime; fails it if it does not finish
/// within [`TEST_LIMIT`].
fn bounded(body: impl std::future::Future<Output = ()>) {
    mt().block_on(async { tokio::time::timeout(TEST_LIMIT, body).await.expect("the test did not finish within TEST_LIMIT") });
}

/// The cluster for one test, every node up and the replicas streaming, with a new,
/// empty `table`.
fn take_cluster(table: &str) -> (MutexGuard<'static, ()>, &'static Cluster) {
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster();
    for n in c.nodes() {
        if c.psql(n.port, "postgres", "SELECT 1").is_err() {
            c.start_node(n.port).unwrap();
        }
    }
    // The cluster runs with synchronous_commit off, which may lose acknowledged
    // commits when a server crashes: not what this suite is about.
    let sql = format!(
        "ALTER ROLE app SET synchronous_commit = on; DROP TABLE IF EXISTS {table}; \
         CREATE TABLE {table} (id bigint NOT NULL, worker int, at timestamptz NOT NULL DEFAULT clock_timestamp()); \
         CREATE INDEX ON {table} (id); GRANT ALL ON {table} TO app"
    );
    c.psql(c.primary.port, "app", &sql).unwrap();
    c.wait_replicas_caught_up().unwrap();
    (one, c)
}

/// pgmux with a pool of 20 and the suite's short timeouts: 1,000 clients at most,
/// 5 s to wait for a connection.
fn start_pgmux() -> Pgmux {
    start_pgmux_with(1000, "5s", POOL_TIMEOUTS)
}

fn start_pgmux_with(max_clients: usize, checkout_timeout: &'static str, pool_timeouts: &str) -> Pgmux {
    Setup { pool_size: 20, checkout_timeout, max_clients, pool_extra: pool_timeouts.into(), extra: ROUTING.into(), ..Default::default() }
        .start()
}

fn workload(px: &Pgmux, table: &str, writers: usize, readers: usize) -> Workload {
    Workload::start(px.conn_str("app", "app", "app"), table, writers, readers)
}

async fn console(px: &Pgmux) -> tokio_postgres::Client {
    px.connect_as("admin", "admin", "pgbouncer").await.unwrap()
}

/// Waits until SHOW REPLICAS says each server on `ports` is `readable` (or not).
async fn wait_readable(console: &tokio_postgres::Client, ports: &[u16], readable: bool, limit: Duration) {
    wait_replicas(console, ports, "readable", &readable.to_string(), limit).await
}

/// Waits until SHOW REPLICAS has `value` in `column` for each server on `ports`.
async fn wait_replicas(console: &tokio_postgres::Client, ports: &[u16], column: &str, value: &str, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let (_, rows) = show(console, "SHOW REPLICAS").await;
        let is = |port: u16| rows.iter().any(|r| r["server"].ends_with(&format!(":{port}")) && r[column] == value);
        if ports.iter().all(|&p| is(p)) {
            return;
        }
        assert!(t0.elapsed() < limit, "servers {ports:?} not {column}={value} within {limit:?}: {rows:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the workload has done `n` more reads.
async fn wait_reads(w: &Workload, n: u64, limit: Duration) {
    let (goal, t0) = (w.reads() + n, Instant::now());
    while w.reads() < goal {
        assert!(t0.elapsed() < limit, "the workload did not do {n} more reads within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The workload on `table` through `px`, warm, with both replicas taking reads;
/// returns the admin console, the workload, and pgmux's RSS by then.
async fn under_load(px: &Pgmux, c: &Cluster, table: &str) -> (tokio_postgres::Client, Workload, u64) {
    let console = console(px).await;
    wait_readable(&console, &[c.replicas[0].port, c.replicas[1].port], true, Duration::from_secs(10)).await;
    let w = workload(px, table, WRITERS, READERS);
    w.wait_acks(300, Duration::from_secs(10)).await;
    wait_reads(&w, 300, Duration::from_secs(10)).await;
    (console, w, px.rss_kib())
}

/// After the workload stopped: pgmux up and serving a new client at once, the
/// table checked against what clients were told, the figures printed; nothing lost,
/// duplicated or made up, no client hung, memory bounded.
async fn finish(name: &str, px: &mut Pgmux, c: &Cluster, table: &str, tally: &Tally, rss_before: u64) -> Checked {
    assert!(px.running(), "pgmux exited during {name}: {}", px.log_text());
    let t0 = Instant::now();
    let served = async {
        let client = px.connect().await;
        assert_eq!(scalar(&client, "SELECT 'served'").await, "served");
    };
    tokio::time::timeout(Duration::from_secs(10), served).await.unwrap_or_else(|_| panic!("{name}: a new client is not served"));
    let served_in = t0.elapsed();
    let rss_after = px.rss_kib();
    let checked = workload::check(&direct(c.primary.port).await, table, tally).await;
    eprintln!(
        "faults: {name}: acked {} ({} operations ok), client-visible errors {} (connect {}, write {}, read {}), \
         in doubt {} (committed {}), longest operation {:?}, new client served in {:?}, pgmux RSS {} KiB before, {} KiB after",
        tally.acked.len(),
        tally.ok_ops,
        tally.failures.len(),
        tally.failed(Op::Connect),
        tally.failed(Op::Write),
        tally.failed(Op::Read),
        tally.in_doubt.len(),
        checked.in_doubt_committed,
        tally.longest(),
        served_in,
        rss_before,
        rss_after,
    );
    if !tally.failures.is_empty() {
        eprintln!("faults: {name}: errors seen:\n  {}", tally.sample());
    }
    assert!(
        checked.lost.is_empty(),
        "{name}: {} acknowledged ids are not in the table: {:?}",
        checked.lost.len(),
        &checked.lost[..checked.lost.len().min(20)]
    );
    assert_eq!(checked.rows, checked.distinct, "{name}: ids in the table twice (a statement ran twice)");
    assert!(checked.unexpected.is_empty(), "{name}: ids no client sent: {:?}", checked.unexpected);
    assert!(tally.hangs().is_empty(), "{name}: operations that hung: {:?}", tally.hangs());
    assert!(served_in < Duration::from_secs(2), "{name}: a new client waited {served_in:?}");
    assert!(rss_after < rss_before + RSS_GROWTH_KIB, "{name}: pgmux RSS grew from {rss_before} KiB to {rss_after} KiB");
    checked
}

#[test]
fn a_killed_replica_costs_at_most_the_reads_in_flight_on_it() {
    let table = "acked_replica_killed";
    let (_one, c) = take_cluster(table);
    let (r1, r2) = (c.replicas[0].port, c.replicas[1].port);
    let mut px = start_pgmux();
    bounded(async {
        let (console, w, rss_before) = under_load(&px, c, table).await;

        let fault = Instant::now();
        c.stop_node_mode(r2, "immediate").unwrap();
        // Writes and reads go on while it is down.
        w.wait_acks(300, Duration::from_secs(5)).await;
        wait_reads(&w, 300, Duration::from_secs(5)).await;
        wait_readable(&console, &[r2], false, Duration::from_secs(3)).await;
        let settled = fault.elapsed();
        c.start_node(r2).unwrap();
        wait_readable(&console, &[r1, r2], true, Duration::from_secs(15)).await;
        w.wait_acks(300, Duration::from_secs(5)).await;
        wait_reads(&w, 300, Duration::from_secs(5)).await;
        let tally = w.stop().await;

        finish("replica killed (pg_ctl stop -m immediate)", &mut px, c, table, &tally, rss_before).await;
        assert_eq!(
            (tally.failed(Op::Write), tally.failed(Op::Connect)),
            (0, 0),
            "only reads could be in flight on the replica:\n  {}",
            tally.sample()
        );
        // Each reader had at most one read on it when it died; a read that needed a
        // new connection to it went elsewhere (a login refused with 57P03, "shutting
        // down", is no read in flight).
        assert!(tally.failed(Op::Read) <= READERS, "{} read errors:\n  {}", tally.failed(Op::Read), tally.sample());
        let refused: Vec<&str> = tally.failures.iter().map(|f| f.what.as_str()).filter(|w| w.contains("57P03")).collect();
        assert!(refused.is_empty(), "reads refused by the stopping replica: {refused:?}");
        let late = tally.failed_outside(fault, fault + settled);
        assert!(late.is_empty(), "errors after the replica was out of rotation: {late:?}");
    });
}

/// The primary stopped with `mode`, started again at once: writes fail while it is
/// down (and only then), reads on the replicas go on.
fn primary_restart(mode: &str) {
    let table = format!("acked_primary_restart_{mode}");
    let (_one, c) = take_cluster(&table);
    let p = c.primary.port;
    let mut px = start_pgmux();
    bounded(async {
        let (_console, w, rss_before) = under_load(&px, c, &table).await;

        let fault = Instant::now();
        c.stop_node_mode(p, mode).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.start_node(p).unwrap();
        let up = fault.elapsed();
        w.wait_acks(300, Duration::from_secs(10)).await;
        let recovered = fault.elapsed();
        w.wait_acks(300, Duration::from_secs(5)).await;
        let tally = w.stop().await;

        finish(
            &format!("primary restarted (-m {mode}, down {up:?}, writes back after {recovered:?})"),
            &mut px,
            c,
            &table,
            &tally,
            rss_before,
        )
        .await;
        assert_eq!(
            (tally.failed(Op::Read), tally.failed(Op::Connect)),
            (0, 0),
            "reads on the replicas and logins go on:\n  {}",
            tally.sample()
        );
        // pgmux tries the server again with a backoff that grows per failed retry
        // (not per client that failed meanwhile): writes are back within about the
        // outage's length once it is up.
        assert!(
            recovered - up < up.max(Duration::from_secs(1)) + Duration::from_secs(1),
            "writes back {:?} after the primary was up",
            recovered - up
        );
        let outside = tally.failed_outside(fault, fault + recovered);
        assert!(outside.is_empty(), "errors before the restart or after writes were back: {outside:?}");
        // A writer retries 50 ms after an error: about 20 errors a second each, at most.
        let bound = WRITERS * (recovered.as_millis() as usize / 50 + 2);
        assert!(tally.failures.len() <= bound, "{} errors (bound {bound}):\n  {}", tally.failures.len(), tally.sample());
    });
}

#[test]
fn a_primary_restarted_fast_costs_only_the_writes_while_it_is_down() {
    primary_restart("fast");
}

#[test]
fn a_primary_restarted_immediate_costs_only_the_writes_while_it_is_down() {
    primary_restart("immediate");
}

/// A frozen node: thawed when dropped, whatever happens.
struct Frozen<'a> {
    c: &'a Cluster,
    port: u16,
    pids: Vec<i32>,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        procs::thaw(self.c, self.port, &self.pids);
    }
}

/// A server frozen for 5 s (SIGSTOP: its sockets stay open, the kernel keeps
/// answering TCP and keepalives, nothing else answers). With query_timeout at 1 s,
/// a request on it is cancelled after 1 s and its connection closed 1 s later; a
/// login to it times out after 1 s (server_connect_timeout): nobody waits for the
/// whole silence, and the others are served meanwhile.
fn silent_server(primary: bool) {
    let table = if primary { "acked_primary_silent" } else { "acked_replica_silent" };
    let (_one, c) = take_cluster(table);
    let (p, r1, r2) = (c.primary.port, c.replicas[0].port, c.replicas[1].port);
    let port = if primary { p } else { r1 };
    let mut px = start_pgmux();
    bounded(async {
        let (console, w, rss_before) = under_load(&px, c, table).await;

        let fault = Instant::now();
        let frozen = Frozen { c, port, pids: procs::freeze(c, port) };
        wait_replicas(&console, &[port], "state", "down", Duration::from_secs(4)).await;
        let out_after = fault.elapsed();
        // Served meanwhile: reads on the replicas (and writes, when the primary answers).
        wait_reads(&w, 300, Duration::from_secs(3)).await;
        if !primary {
            w.wait_acks(300, Duration::from_secs(3)).await;
        }
        tokio::time::sleep(Duration::from_secs(5).saturating_sub(fault.elapsed())).await;
        let silent = fault.elapsed();
        drop(frozen);
        wait_readable(&console, &[r1, r2], true, Duration::from_secs(15)).await;
        w.wait_acks(300, Duration::from_secs(10)).await;
        let back = fault.elapsed();
        let tally = w.stop().await;

        let which = if primary { "primary" } else { "replica" };
        finish(&format!("{which} frozen (SIGSTOP) for {silent:?}, seen down after {out_after:?}"), &mut px, c, table, &tally, rss_before)
            .await;
        // At most: 2 s on a frozen connection, then 1 s of a login that times out
        // (server_connect_timeout), and some slack; well short of the 5 s of silence.
        assert!(tally.longest() < Duration::from_secs(4), "a client waited {:?} on the silent {which}", tally.longest());
        assert_eq!(tally.failed(Op::Connect), 0, "logins go on:\n  {}", tally.sample());
        let outside = tally.failed_outside(fault, fault + back);
        assert!(outside.is_empty(), "errors before the freeze or once all was back: {outside:?}");
        if primary {
            assert_eq!(tally.failed(Op::Read), 0, "reads go to the replicas:\n  {}", tally.sample());
        } else {
            assert_eq!(tally.failed(Op::Write), 0, "only reads go to the replica:\n  {}", tally.sample());
            // Reads sent to it before the monitor took it out: about one per reader a second.
            assert!(tally.failed(Op::Read) <= 3 * READERS, "{} read errors:\n  {}", tally.failed(Op::Read), tally.sample());
        }
    });
}

#[test]
fn a_silent_replica_is_given_up_within_the_timeouts() {
    silent_server(false);
}

#[test]
fn a_silent_primary_is_given_up_within_the_timeouts() {
    silent_server(true);
}

/// How a client leaves its transaction.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// After its INSERT is answered, with a Terminate (the driver's goodbye).
    Terminate,
    /// After its INSERT is answered, with a TCP reset.
    Reset,
    /// With a TCP reset while its statement runs.
    ResetMidStatement,
}

/// A client that begins a transaction, inserts `id`, and leaves without COMMIT.
async fn leave_mid_transaction(px: u16, table: &str, id: i64, how: Leave) {
    match how {
        Leave::Terminate => {
            let (client, conn) =
                tokio_postgres::connect(&format!("host=127.0.0.1 port={px} user=app password=app dbname=app"), tokio_postgres::NoTls)
                    .await
                    .unwrap();
            let conn = tokio::spawn(conn);
            client.batch_execute("BEGIN").await.unwrap();
            client.execute(&format!("INSERT INTO {table} (id, worker) VALUES ($1, -1)"), &[&id]).await.unwrap();
            drop(client);
            conn.await.unwrap().unwrap();
        }
        Leave::Reset | Leave::ResetMidStatement => {
            let mut raw = common::raw::Raw::connect(px, "app", "app", "app").await;
            let mut sql = format!("BEGIN; INSERT INTO {table} (id, worker) VALUES ({id}, -2)");
            if matches!(how, Leave::ResetMidStatement) {
                sql += "; SELECT pg_sleep(0.3)";
                let mut out = bytes::BytesMut::new();
                postgres_protocol::message::frontend::query(&sql, &mut out).unwrap();
                raw.send(&out).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            } else {
                let msgs = raw.simple(&sql).await;
                assert_eq!(msgs.last(), Some(&common::raw::Msg::Ready(b'T')), "{msgs:?}");
            }
            socket2::SockRef::from(&raw.stream).set_linger(Some(Duration::ZERO)).unwrap();
        }
    }
}

#[test]
fn clients_that_leave_mid_transaction_leave_nothing_behind() {
    let table = "acked_leavers";
    let (_one, c) = take_cluster(table);
    // No server is at fault here: logins get the time a busy machine may need (200
    // clients arriving at once while the workload runs).
    let mut px = start_pgmux_with(1000, "5s", "  server_connect_timeout: 5s\n  query_timeout: 1s\n");
    bounded(async {
        let (console, w, rss_before) = under_load(&px, c, table).await;

        // 200 clients at once, each leaving in the middle of its transaction.
        let base = 1_000_000_000i64;
        let ways = [Leave::Terminate, Leave::Reset, Leave::ResetMidStatement];
        let leavers: Vec<_> =
            (0..200).map(|i| tokio::spawn(leave_mid_transaction(px.port, table, base + i, ways[i as usize % 3]))).collect();
        for l in leavers {
            l.await.unwrap();
        }
        w.wait_acks(300, Duration::from_secs(5)).await;
        let tally = w.stop().await;
        finish("200 clients leaving mid-transaction", &mut px, c, table, &tally, rss_before).await;
        assert!(tally.failures.is_empty(), "the workload's clients were not disturbed:\n  {}", tally.sample());

        // None of their rows was committed, no transaction of theirs is left open,
        // and every server connection is back in the pool.
        let admin = direct(c.primary.port).await;
        let t0 = Instant::now();
        loop {
            let open: i64 = admin
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state <> 'idle'", &[])
                .await
                .unwrap()
                .get(0);
            let (_, pools) = show(&console, "SHOW POOLS").await;
            let app = pools.iter().find(|r| r["database"] == "app" && r["user"] == "app").expect("the app pool");
            if open == 0 && app["sv_active"] == "0" && app["cl_waiting"] == "0" {
                let idle: usize = app["sv_idle"].parse().unwrap();
                assert!(idle <= 3 * 20, "{app:?}");
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "{open} server backends busy; SHOW POOLS: {app:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left: i64 = admin.query_one(&format!("SELECT count(*) FROM {table} WHERE id >= $1"), &[&base]).await.unwrap().get(0);
        assert_eq!(left, 0, "rows of transactions that were never committed");
    });
}

const CROWD: usize = 10_000;

#[test]
fn ten_thousand_clients_on_a_pool_of_twenty() {
    use futures_util::stream::{self, StreamExt};
    procs::raise_nofile(CROWD as u64 + 1000);
    let table = "acked_crowd";
    let (_one, c) = take_cluster(table);
    // Started with the soft limit of a stock system: pgmux raises its own. The
    // default timeouts: with 10,000 clients busy on two cores, a debug build can take
    // more than the suite's 1 s to schedule a client's task (pgmux's own queries on
    // a server connection, such as a held-back BEGIN, are bounded by
    // server_connect_timeout, and requests by query_timeout).
    let mut px = procs::with_soft_nofile(1024, || start_pgmux_with(CROWD + 500, "60s", ""));
    let limit = procs::open_files_limit(px.pid());
    assert!(limit > CROWD as u64 + 500, "pgmux runs with an open files limit of {limit}");
    bounded(async {
        let w = workload(&px, table, 8, 2);
        w.wait_acks(300, Duration::from_secs(10)).await;
        let rss_before = px.rss_kib();

        let t0 = Instant::now();
        let conn_str = px.conn_str("app", "app", "app");
        let clients: Vec<tokio_postgres::Client> = stream::iter(0..CROWD)
            .map(|_| {
                let s = conn_str.clone();
                async move {
                    let (client, conn) = tokio_postgres::connect(&s, tokio_postgres::NoTls).await.expect("a crowd client logs in");
                    tokio::spawn(conn);
                    client
                }
            })
            .buffer_unordered(200)
            .collect()
            .await;
        let logged_in = t0.elapsed();
        let rss_idle = px.rss_kib();

        // All at once, a few statements each, on 20 server connections per server.
        let t1 = Instant::now();
        let sql = format!("SELECT count(*) FROM {table} WHERE id = $1");
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, client)| {
                let sql = sql.clone();
                tokio::spawn(async move {
                    assert_eq!(scalar(&client, &format!("SELECT {i}")).await, i.to_string());
                    client.query_one(&sql, &[&(i as i64)]).await.expect("a read");
                    client.batch_execute("BEGIN; SELECT 1; COMMIT").await.expect("a transaction");
                    client
                })
            })
            .collect();
        let mut clients = Vec::with_capacity(CROWD);
        for t in tasks {
            clients.push(t.await.expect("every crowd client is served"));
        }
        let served = t1.elapsed();
        let rss_loaded = px.rss_kib();
        drop(clients);
        let console = console(&px).await;
        let t2 = Instant::now();
        loop {
            let (_, lists) = show(&console, "SHOW LISTS").await;
            let used: usize = lists.iter().find(|r| r["list"] == "used_clients").map(|r| r["items"].parse().unwrap()).unwrap_or(0);
            if used < 100 {
                break;
            }
            assert!(t2.elapsed() < Duration::from_secs(10), "{used} clients still connected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // pgmux gives the memory back within a few ticks of its upkeep (once a second).
        let t3 = Instant::now();
        while px.rss_kib() >= rss_before + RSS_GROWTH_KIB && t3.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rss_gone = px.rss_kib();
        let tally = w.stop().await;
        eprintln!(
            "faults: {CROWD} clients: logged in in {logged_in:?}, 3 statements each served in {served:?}; pgmux RSS {rss_before} KiB, \
             {rss_idle} KiB with all idle ({} bytes per idle client), {rss_loaded} KiB after their statements, {rss_gone} KiB after they left",
            (rss_idle.saturating_sub(rss_before) << 10) / CROWD as u64,
        );
        finish(&format!("{CROWD} clients on a pool of 20"), &mut px, c, table, &tally, rss_before).await;
        // A generous bound for a debug build (benches/idle_clients.sh measures release builds).
        let per_client = (rss_idle.saturating_sub(rss_before) << 10) / CROWD as u64;
        assert!(per_client < 16 << 10, "{per_client} bytes of pgmux RSS per idle client");
        assert!(tally.failures.is_empty(), "the workload's clients were not disturbed:\n  {}", tally.sample());
    });
}
