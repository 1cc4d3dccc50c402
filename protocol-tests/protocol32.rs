//! Protocol 3.2 (PostgreSQL 18's): clients that ask for it get it, with a 32-byte
//! cancel key; 3.0 clients keep 4-byte keys; pgmux speaks 3.2 to servers that offer it
//! (PostgreSQL 18) and 3.0 to older ones; and a cancel reaches the right backend in
//! every combination. Which server side is tested depends on the cluster's version
//! (`PGMUX_TEST_PG`: CI runs this file on 15 and on 18). libpq 18 itself is driven
//! through `protocol-tests/libpq/libpq_client.py` when the version matrix's cache has
//! it (`scripts/install-pg 18`, which `scripts/test` runs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::raw::{self, Msg, Raw, PROTOCOL_3_0, PROTOCOL_3_2};
use common::{cluster, mt, Pgmux, Setup};
use postgres_protocol::message::frontend;

const ROUTING: &str = "routing:\n  read_write_split: true\n  monitor_interval: 100ms\n";

/// Sends a `pg_sleep` as a simple query, without waiting for its answer.
async fn start_sleep(c: &mut Raw, seconds: u32) {
    let mut out = BytesMut::new();
    frontend::query(&format!("select pg_sleep({seconds})"), &mut out).unwrap();
    c.send(&out).await;
}

/// Reads the answer to a running query: the SQLSTATE it ended with (None: success),
/// and how long it took from `since`.
async fn outcome(c: &mut Raw, since: Instant) -> (Option<String>, Duration) {
    let msgs = c.until_ready(1).await;
    (raw::errors(&msgs).into_iter().next(), since.elapsed())
}

#[test]
fn a_client_gets_the_protocol_it_asks_for_and_a_key_to_match() {
    let px = Setup::default().start();
    mt().block_on(async {
        let c = Raw::connect_version(px.port, "app", "app", "app", PROTOCOL_3_2).await;
        assert_eq!(c.negotiated, None, "3.2 is spoken: nothing to negotiate");
        assert_eq!(c.key.1.len(), 32, "a protocol 3.2 client gets a 32-byte secret");
        let c = Raw::connect_version(px.port, "app", "app", "app", PROTOCOL_3_0).await;
        assert_eq!((c.negotiated, c.key.1.len()), (None, 4), "a 3.0 client sees no change");
        let c = Raw::connect_version(px.port, "app", "app", "app", (3 << 16) | 5).await;
        assert_eq!(c.negotiated, Some(PROTOCOL_3_2), "a newer minor is told 3.2, as PostgreSQL 18 does");
        assert_eq!(c.key.1.len(), 32);
        let c = Raw::connect_version(px.port, "app", "app", "app", (3 << 16) | 1).await;
        assert_eq!((c.negotiated, c.key.1.len()), (Some(PROTOCOL_3_0), 4), "3.1 was never a protocol: 3.0");
    });
}

/// A cancel reaches the running query whatever the client's protocol and the
/// server's: a 3.0 client on a 3.2 server connection and the other way round (the
/// cluster's version decides the server side).
#[test]
fn a_cancel_reaches_the_query_with_either_protocol_on_either_side() {
    let px = Setup::default().start();
    mt().block_on(async {
        for version in [PROTOCOL_3_0, PROTOCOL_3_2] {
            let mut c = Raw::connect_version(px.port, "app", "app", "app", version).await;
            let t0 = Instant::now();
            start_sleep(&mut c, 30).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            raw::cancel(px.port, &c.key).await;
            let (state, took) = outcome(&mut c, t0).await;
            assert_eq!(state.as_deref(), Some("57014"), "protocol {version:x}: the query was cancelled");
            assert!(took < Duration::from_secs(5), "protocol {version:x}: cancelled in {took:?}");
        }
    });
}

/// A forged key cancels nothing: the right pid with a wrong secret, a 3.2 key with a
/// bad MAC, a 3.0-length key for a 3.2 client, and the key of a client that left.
#[test]
fn forged_and_stale_keys_cancel_nothing() {
    let px = Setup::default().start();
    mt().block_on(async {
        let mut c = Raw::connect_version(px.port, "app", "app", "app", PROTOCOL_3_2).await;
        let gone = Raw::connect_version(px.port, "app", "app", "app", PROTOCOL_3_2).await;
        let gone_key = gone.key.clone();
        drop(gone);
        let t0 = Instant::now();
        start_sleep(&mut c, 2).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut flipped = c.key.1.clone();
        flipped[31] ^= 1;
        for key in [(c.key.0, vec![7u8; 32]), (c.key.0, flipped), (c.key.0, c.key.1[..4].to_vec()), gone_key] {
            raw::cancel(px.port, &key).await;
        }
        let (state, took) = outcome(&mut c, t0).await;
        assert_eq!(state, None, "nothing was cancelled");
        assert!(took >= Duration::from_secs(2), "{took:?}");
    });
}

/// A transaction that began on a replica and moved to the primary at its first write:
/// the client's key follows it, so a cancel reaches the primary's backend.
#[test]
fn a_cancel_follows_a_transaction_that_moved_to_the_primary() {
    cluster().psql(cluster().primary.port, "app", "create table if not exists p32 (id int); grant all on p32 to app;").unwrap();
    cluster().wait_replicas_caught_up().unwrap();
    let px = Setup { extra: ROUTING.into(), ..Default::default() }.start();
    mt().block_on(async {
        for version in [PROTOCOL_3_0, PROTOCOL_3_2] {
            let mut c = Raw::connect_version(px.port, "app", "app", "app", version).await;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                // A read first, on a replica once the monitor has seen them.
                c.simple("begin").await;
                let rows = raw::rows(&c.simple("select pg_is_in_recovery()::text").await);
                if rows == [[Some("true".to_string())]] {
                    break;
                }
                c.simple("rollback").await;
                assert!(Instant::now() < deadline, "no read reached a replica");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let msgs = c.simple("insert into p32 values (1)").await;
            assert!(raw::errors(&msgs).is_empty(), "the write moved the transaction: {msgs:?}");
            let t0 = Instant::now();
            start_sleep(&mut c, 30).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            raw::cancel(px.port, &c.key).await;
            let (state, took) = outcome(&mut c, t0).await;
            assert_eq!(state.as_deref(), Some("57014"), "protocol {version:x}");
            assert!(took < Duration::from_secs(5), "{took:?}");
            let msgs = c.simple("rollback").await;
            assert_eq!(msgs.last(), Some(&Msg::Ready(b'I')));
        }
    });
}

/// pgmux asks servers for 3.2: PostgreSQL 18 gives its connections a long key (SHOW
/// SERVERS says 3.2); older servers negotiate 3.0.
#[test]
fn server_connections_speak_the_newest_protocol_the_server_offers() {
    let px = Setup::default().start();
    mt().block_on(async {
        let c = px.connect().await;
        common::scalar(&c, "select 1").await;
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let (cols, servers) = common::show(&console, "SHOW SERVERS").await;
        assert!(cols.iter().any(|c| c == "protocol"), "{cols:?}");
        let want = if cluster().major() >= 18 { "3.2" } else { "3.0" };
        assert!(!servers.is_empty());
        for s in &servers {
            assert_eq!(s["protocol"], want, "PostgreSQL {}: {s:?}", cluster().major());
        }
        let (_, clients) = common::show(&console, "SHOW CLIENTS").await;
        assert!(clients.iter().all(|c| c["protocol"] == "3.0"), "tokio-postgres speaks 3.0: {clients:?}");
    });
}

fn libpq18() -> Option<PathBuf> {
    pgmux::cluster::packaged_libpq(18)
}

/// Runs the ctypes libpq client; returns its JSON line.
fn libpq_client(libpq: &Path, cmd: &str, conninfo: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/libpq/libpq_client.py");
    let out = Command::new("python3").arg(script).arg(cmd).arg(conninfo).env("LIBPQ", libpq).output().unwrap();
    assert!(out.status.success(), "libpq client {cmd} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// libpq 18 with `max_protocol_version=3.2` logs in with 3.2 through pgmux, whatever
/// the server's version, and its own cancel (PQcancelBlocking, the long key) stops a
/// `pg_sleep`; with `max_protocol_version=3.0` the same with 3.0.
#[test]
fn libpq_18_speaks_3_2_through_pgmux_and_its_cancel_works() {
    let Some(libpq) = libpq18() else {
        panic!("libpq 18 is missing: run scripts/install-pg 18 (scripts/test does)");
    };
    let px: Pgmux = Setup::default().start();
    for (max, want) in [("3.2", "30002"), ("3.0", "30000")] {
        let conninfo = format!("{} max_protocol_version={max}", px.conn_str("app", "app", "app"));
        let info = libpq_client(&libpq, "info", &conninfo);
        assert!(info.contains(&format!("\"protocol\": {want}")), "max_protocol_version={max}: {info}");
        assert!(info.contains("\"select\": \"1\""), "{info}");
        let cancel = libpq_client(&libpq, "cancel", &conninfo);
        assert!(cancel.contains("\"sqlstate\": \"57014\""), "max_protocol_version={max}: {cancel}");
        assert!(cancel.contains("\"cancel_sent\": true"), "{cancel}");
    }
}
