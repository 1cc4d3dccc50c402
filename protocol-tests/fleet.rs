//! Three pgmux processes on loopback in front of one primary (with its replicas
//! configured), acting as one pooler: a CancelRequest sent to any instance reaches
//! the query; with `share_pools` the server budget is the fleet's, and stays within
//! it as instances die and come back; a rolling restart loses nothing; and a new
//! process on the same port (SO_REUSEPORT) takes over with no refused connection.

mod common;
#[path = "faults/workload.rs"]
#[allow(dead_code)]
mod workload;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::raw::{self, Raw, PROTOCOL_3_0, PROTOCOL_3_2};
use common::{cluster, direct, mt, spawn_on, start_on, Pgmux, Setup};
use pgmux::cluster::free_port;
use workload::Workload;

const SECRET: &str = "the-fleet-secret-of-the-tests";

/// The tests stop and start instances and count the primary's backends: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fleet's ports, and the config of each instance.
struct Fleet {
    ports: Vec<u16>,
    extra: String,
    pool_extra: String,
    pool_size: usize,
}

impl Fleet {
    fn new(n: usize, share: bool, pool_size: usize, extra: &str) -> Fleet {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        Fleet { ports, extra: format!("{extra}fleet:\n  peers: [PEERS]\n  secret: {SECRET}\n  share_pools: {share}\n  heartbeat_interval: 200ms\n  peer_timeout: 1s\n"), pool_extra: String::new(), pool_size }
    }

    fn yaml(&self, i: usize) -> String {
        let peers: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let extra = self.extra.replace("PEERS", &peers.join(", "));
        let setup =
            Setup { pool_size: self.pool_size, checkout_timeout: "30s", extra, pool_extra: self.pool_extra.clone(), ..Default::default() };
        setup.yaml(self.ports[i])
    }

    fn start(&self, i: usize) -> Pgmux {
        start_on(self.ports[i], &self.yaml(i))
    }

    fn start_all(&self) -> Vec<Pgmux> {
        (0..self.ports.len()).map(|i| self.start(i)).collect()
    }
}

/// Waits until every instance's SHOW PEERS lists `n` live instances.
async fn wait_peers(instances: &[&Pgmux], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for px in instances {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        loop {
            let (_, rows) = common::show(&console, "SHOW PEERS").await;
            if rows.len() == n {
                break;
            }
            assert!(Instant::now() < deadline, "instance on {} sees {} instances, not {n}: {rows:?}", px.port, rows.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn start_sleep(c: &mut Raw) -> Instant {
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("select pg_sleep(30)", &mut out).unwrap();
    c.send(&out).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Instant::now()
}

/// A client of instance A runs `pg_sleep(30)`; its CancelRequest, sent to B or to C
/// (as a load balancer would), cancels it within a second, for 3.0 and 3.2 clients.
/// A forged key and the key of a client that has left cancel nothing.
#[test]
fn a_cancel_sent_to_any_instance_reaches_the_query() {
    let _s = serial();
    let fleet = Fleet::new(3, false, 5, "");
    let px = fleet.start_all();
    mt().block_on(async {
        wait_peers(&[&px[0], &px[1], &px[2]], 3).await;
        let mut took = Vec::new();
        for version in [PROTOCOL_3_0, PROTOCOL_3_2] {
            for via in [0, 1, 2] {
                let mut c = Raw::connect_version(px[0].port, "app", "app", "app", version).await;
                let sent = start_sleep(&mut c).await;
                raw::cancel(px[via].port, &c.key).await;
                let msgs = c.until_ready(1).await;
                let elapsed = sent.elapsed();
                assert_eq!(raw::errors(&msgs), ["57014"], "protocol {version:x}, cancel via instance {via}");
                assert!(elapsed < Duration::from_secs(1), "protocol {version:x} via {via}: {elapsed:?}");
                took.push((version, via, elapsed));
            }
        }
        eprintln!("fleet: cancel latency (protocol, via instance, time): {took:?}");
        // Forged and stale keys, sent to another instance: the query runs to its end.
        let mut c = Raw::connect_version(px[0].port, "app", "app", "app", PROTOCOL_3_2).await;
        let gone = Raw::connect_version(px[0].port, "app", "app", "app", PROTOCOL_3_2).await;
        let gone_key = gone.key.clone();
        drop(gone);
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::query("select pg_sleep(1.5)", &mut out).unwrap();
        c.send(&out).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut forged = c.key.clone();
        forged.1[20] ^= 1;
        let short = Raw::connect_version(px[0].port, "app", "app", "app", PROTOCOL_3_0).await.key;
        for key in [forged, gone_key, (short.0, vec![short.1[0], short.1[1], 0, 0])] {
            raw::cancel(px[1].port, &key).await;
            raw::cancel(px[2].port, &key).await;
        }
        let msgs = c.until_ready(1).await;
        assert!(raw::errors(&msgs).is_empty(), "nothing was cancelled: {msgs:?}");
    });
}

/// Server connections of user `fleet` on the primary now (pgmux's own, named
/// `pgmux-*`, aside).
async fn fleet_backends(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "select count(*) from pg_stat_activity where usename = 'fleet' and backend_type = 'client backend' and application_name not like 'pgmux-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// 300 clients over three instances sharing a budget of 12 (`pool.size` with
/// `share_pools`): the primary never sees more than 12 of their server connections
/// (sampled every 100 ms); with one instance killed (-9) the two others soon use the
/// whole budget; started again, the sum still never passes 12.
#[test]
fn three_instances_share_a_budget_of_twelve() {
    let _s = serial();
    let c = cluster();
    c.psql(c.primary.port, "app", "do $$ begin create role fleet login password 'fleet'; exception when duplicate_object then null; end $$; grant all on database app to fleet;").unwrap();
    let users = "users:\n  - name: fleet\n    password: fleet\n";
    let fleet = Fleet::new(3, true, 12, "");
    let yaml = |i: usize| fleet.yaml(i).replace("users:\n", users);
    let mut px: Vec<Pgmux> = (0..3).map(|i| start_on(fleet.ports[i], &yaml(i))).collect();
    mt().block_on(async {
        wait_peers(&[&px[0], &px[1], &px[2]], 3).await;
        let admin = direct(c.primary.port).await;
        let stop = Arc::new(AtomicBool::new(false));
        let max_seen = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (stop, max_seen) = (stop.clone(), max_seen.clone());
            let admin = direct(c.primary.port).await;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = fleet_backends(&admin).await as usize;
                    max_seen.fetch_max(n, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let mut load = Vec::new();
        for k in 0..300 {
            let port = fleet.ports[k % 3];
            let stop = stop.clone();
            load.push(tokio::spawn(async move {
                let conn = format!("host=127.0.0.1 port={port} user=fleet password=fleet dbname=app application_name=fleet_load connect_timeout=5");
                while !stop.load(Ordering::Relaxed) {
                    let Ok((client, conn)) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    tokio::spawn(conn);
                    while !stop.load(Ordering::Relaxed) && client.simple_query("select pg_sleep(0.05)").await.is_ok() {}
                }
            }));
        }
        let wait_for = |want: i64, limit: Duration| {
            let admin = &admin;
            async move {
                let t0 = Instant::now();
                loop {
                    let n = fleet_backends(admin).await;
                    if n == want {
                        return t0.elapsed();
                    }
                    assert!(t0.elapsed() < limit, "server connections stayed at {n}, not {want}, for {limit:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let full = wait_for(12, Duration::from_secs(10)).await;
        // One instance dies: its connections go with it (the server sees them close);
        // the others take its share once they miss its heartbeats.
        px[2].kill9();
        let killed = Instant::now();
        while fleet_backends(&admin).await == 12 {
            assert!(killed.elapsed() < Duration::from_secs(5), "the killed instance's connections stayed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        wait_for(12, Duration::from_secs(10)).await;
        let took_over = killed.elapsed();
        // It comes back: the others give up connections before it takes any.
        px[2] = start_on(fleet.ports[2], &yaml(2));
        wait_peers(&[&px[0], &px[1], &px[2]], 3).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let console = px[2].connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let (_, rows) = common::show(&console, "SHOW PEERS").await;
        stop.store(true, Ordering::Relaxed);
        for l in load {
            let _ = l.await;
        }
        sampler.await.unwrap();
        let max = max_seen.load(Ordering::Relaxed);
        eprintln!("fleet: budget 12 over 3 instances: full in {full:?}, taken over in {took_over:?} after a kill -9, most seen {max}; SHOW PEERS after the restart: {rows:?}");
        assert!(max <= 12, "the primary saw {max} server connections of the fleet, over its budget of 12");
        assert!(rows.iter().all(|r| r["pool_size_share"] == "4"), "each instance's share of 12 is 4 again: {rows:?}");
    });
}

/// A rolling restart of the three instances, one after another (SIGTERM with a
/// drain delay, then a new process on the same port), under the fault suite's
/// counting workload whose clients reconnect (to any instance) on 57P01 and on a
/// refused connection: every acknowledged insert is committed exactly once, and no
/// error comes inside a transaction.
#[test]
fn a_rolling_restart_loses_nothing() {
    let _s = serial();
    let c = cluster();
    let table = "fleet_rolling";
    c.psql(
        c.primary.port,
        "app",
        &format!("drop table if exists {table}; create table {table} (id bigint, worker int); grant all on {table} to app;"),
    )
    .unwrap();
    let fleet = Fleet::new(3, false, 5, "drain_delay: 500ms\nshutdown_timeout: 10s\n");
    let mut px = fleet.start_all();
    mt().block_on(async {
        wait_peers(&[&px[0], &px[1], &px[2]], 3).await;
        let ports: Vec<String> = fleet.ports.iter().map(|p| p.to_string()).collect();
        let conn = format!(
            "host=127.0.0.1,127.0.0.1,127.0.0.1 port={} user=app password=app dbname=app load_balance_hosts=random connect_timeout=5",
            ports.join(",")
        );
        let w = Workload::start(conn, table, 24, 0);
        w.wait_acks(300, Duration::from_secs(10)).await;
        let t0 = Instant::now();
        for (i, instance) in px.iter_mut().enumerate() {
            instance.signal(libc::SIGTERM);
            let status = instance.wait_exit(Duration::from_secs(15)).expect("the instance drains and exits");
            assert!(status.success(), "{status:?}");
            *instance = fleet.start(i);
            w.wait_acks(200, Duration::from_secs(10)).await;
        }
        let restart = t0.elapsed();
        let tally = w.stop().await;
        let checked = workload::check(&direct(c.primary.port).await, table, &tally).await;
        let in_txn: Vec<&workload::Failure> = tally.failures.iter().filter(|f| f.in_transaction).collect();
        eprintln!(
            "fleet: rolling restart of 3 instances in {restart:?}: acked {}, client-visible errors {} ({}), in doubt {} (committed {})",
            tally.acked.len(),
            tally.failures.len(),
            tally.sample(),
            tally.in_doubt.len(),
            checked.in_doubt_committed
        );
        assert!(checked.lost.is_empty(), "acknowledged ids lost: {:?}", &checked.lost[..checked.lost.len().min(20)]);
        assert_eq!(checked.rows, checked.distinct, "an insert committed twice");
        assert!(checked.unexpected.is_empty(), "ids no client sent: {:?}", checked.unexpected);
        assert!(in_txn.is_empty(), "errors inside a transaction: {in_txn:?}");
        assert!(tally.hangs().is_empty(), "{:?}", tally.hangs());
    });
}

/// SO_REUSEPORT: a new pgmux process starts on the port of a running one, then the
/// old one gets SIGTERM; clients connecting all the while (a new connection and one
/// query each) are not refused (but for the kernel's window at the old listener's
/// close, below), and every query fails only with the old process's 57P01 (a
/// reconnect signal).
#[test]
fn a_new_process_on_the_same_port_takes_over_with_no_refused_connection() {
    let _s = serial();
    let port = free_port();
    let yaml = Setup { extra: "drain_delay: 300ms\n".into(), ..Default::default() }.yaml(port);
    let mut old = start_on(port, &yaml);
    mt().block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, told, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::<String>::new())));
        let mut hammer = Vec::new();
        for _ in 0..8 {
            let (stop, ok, told, failed) = (stop.clone(), ok.clone(), told.clone(), failed.clone());
            hammer.push(tokio::spawn(async move {
                let conn = format!("host=127.0.0.1 port={port} user=app password=app dbname=app connect_timeout=5");
                while !stop.load(Ordering::Relaxed) {
                    // A failed connection or login is a refusal; once logged in, being
                    // told 57P01 (or closed: the FATAL came before the query) by the old
                    // process is a reconnect signal.
                    let client = match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
                        Ok((client, conn)) => {
                            tokio::spawn(conn);
                            client
                        }
                        Err(e) => {
                            failed.lock().unwrap().push(format!("connect: {e}"));
                            continue;
                        }
                    };
                    match client.simple_query("select 1").await {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.is_closed() || common::sqlstate(&e).as_deref() == Some("57P01") => {
                            told.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failed.lock().unwrap().push(format!("query: {e}")),
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let new = spawn_on(port, &yaml);
        tokio::time::sleep(Duration::from_millis(500)).await;
        old.signal(libc::SIGTERM);
        let status = old.wait_exit(Duration::from_secs(10)).expect("the old process exits");
        assert!(status.success());
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        for h in hammer {
            h.await.unwrap();
        }
        let failed = failed.lock().unwrap().clone();
        eprintln!(
            "fleet: SO_REUSEPORT takeover: {} connections served, {} told to reconnect after login, {} refused or failed",
            ok.load(Ordering::Relaxed),
            told.load(Ordering::Relaxed),
            failed.len()
        );
        // The kernel resets a connection whose handshake completes in the
        // microseconds between the old process's last accept and its close, unless
        // net.ipv4.tcp_migrate_req moves it to the new listener (README, the fleet).
        let migrates = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1");
        let allowed = if migrates { 0 } else { 1 };
        assert!(
            failed.len() <= allowed && failed.iter().all(|f| f.starts_with("connect: ")),
            "connections failed during the takeover: {failed:?}"
        );
        drop(new);
    });
}

/// `unix_socket_dir`: pgmux also listens on `<dir>/.s.PGSQL.<port>`, so `psql -h
/// <dir> -p <port>` reaches it (sidecar deployments), and the file goes with pgmux.
#[test]
fn psql_reaches_pgmux_over_its_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("unix_socket_dir: {}\n", dir.path().display());
    let mut px = Setup { extra, ..Default::default() }.start();
    let socket = dir.path().join(format!(".s.PGSQL.{}", px.port));
    assert!(socket.exists(), "{}", socket.display());
    let out = std::process::Command::new(pgmux::cluster::pg_bindir().join("psql"))
        .args([
            "-h",
            &dir.path().to_string_lossy(),
            "-p",
            &px.port.to_string(),
            "-U",
            "app",
            "-d",
            "app",
            "-XAtc",
            "select 'over the socket'",
        ])
        .env("PGPASSWORD", "app")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over the socket");
    mt().block_on(async {
        // tokio-postgres too, and SHOW CLIENTS knows it.
        let (c, conn) = tokio_postgres::connect(
            &format!("host={} port={} user=app password=app dbname=app application_name=unix_client", dir.path().display(), px.port),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        assert_eq!(common::scalar(&c, "select 1").await, "1");
    });
    px.signal(libc::SIGTERM);
    px.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!socket.exists(), "the socket file is removed at exit");
}
