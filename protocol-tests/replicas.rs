//! The replica monitor as an operator sees it: SHOW REPLICAS, /readyz, /metrics and
//! the log, while replicas lag, go down, come back, and a replica is promoted.
//!
//! Each test has its own cluster (a primary and two replicas): they stop, pause and
//! promote servers.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{http_get, mt, start_config, Pgmux};
use pgmux::cluster::{free_port, Cluster, ClusterSpec};
use tokio_postgres::SimpleQueryMessage;

fn own_cluster() -> Cluster {
    let spec = ClusterSpec {
        replicas: 2,
        users: vec![("app".into(), "app".into(), false), ("admin".into(), "admin".into(), true)],
        databases: vec!["app".into()],
    };
    Cluster::start(&spec).expect("start PostgreSQL cluster")
}

/// pgmux in front of `c`, checking every 100 ms, replicas out of reads past 1 s of lag.
fn start(c: &Cluster, metrics_port: u16) -> Pgmux {
    let (p, r1, r2) = (c.primary.port, c.replicas[0].port, c.replicas[1].port);
    start_config(|port| {
        format!(
            "listen: 127.0.0.1:{port}\nmetrics_listen: 127.0.0.1:{metrics_port}\n\
             routing:\n  monitor_interval: 100ms\n  max_replica_lag: 1s\n\
             users:\n  - name: app\n    password: app\n  - name: admin\n    password: admin\n    admin: true\n\
             databases:\n  app:\n    primary: 127.0.0.1:{p}\n    replicas: [127.0.0.1:{r1}, 127.0.0.1:{r2}]\n"
        )
    })
}

/// SHOW REPLICAS, one map per row, keyed by server port.
async fn show_replicas(console: &tokio_postgres::Client) -> HashMap<u16, HashMap<String, String>> {
    let mut rows = HashMap::new();
    for m in console.simple_query("SHOW REPLICAS").await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            let row: HashMap<String, String> =
                r.columns().iter().enumerate().map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("NULL").to_string())).collect();
            let port = row["server"].rsplit_once(':').unwrap().1.parse().unwrap();
            rows.insert(port, row);
        }
    }
    rows
}

/// Polls SHOW REPLICAS until `ok` holds; returns the rows and how long it took.
async fn wait_for(
    console: &tokio_postgres::Client,
    what: &str,
    limit: Duration,
    ok: impl Fn(&HashMap<u16, HashMap<String, String>>) -> bool,
) -> (HashMap<u16, HashMap<String, String>>, Duration) {
    let t0 = Instant::now();
    loop {
        let rows = show_replicas(console).await;
        if ok(&rows) {
            return (rows, t0.elapsed());
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}; SHOW REPLICAS: {rows:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn field<'a>(rows: &'a HashMap<u16, HashMap<String, String>>, port: u16, col: &str) -> &'a str {
    rows[&port][col].as_str()
}

/// The value of one sample in a Prometheus scrape (`series` written as rendered).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Log lines with `message` about server `port`.
fn log_lines(px: &Pgmux, message: &str, port: u16) -> usize {
    let server = format!("127.0.0.1:{port}");
    px.log_text().lines().filter(|l| l.contains(message) && l.contains(&server)).count()
}

#[test]
fn lagging_and_stopped_replicas_leave_reads_and_come_back() {
    let c = own_cluster();
    let (p, r1, r2) = (c.primary.port, c.replicas[0].port, c.replicas[1].port);
    let metrics_port = free_port();
    let px = start(&c, metrics_port);
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let (rows, _) = wait_for(&console, "both replicas readable", Duration::from_secs(5), |r| {
            field(r, r1, "readable") == "true" && field(r, r2, "readable") == "true"
        })
        .await;
        for (port, configured) in [(p, "primary"), (r1, "replica"), (r2, "replica")] {
            assert_eq!(field(&rows, port, "configured_role"), configured);
            assert_eq!(field(&rows, port, "role"), configured, "{rows:#?}");
            assert_eq!(field(&rows, port, "state"), "up", "{rows:#?}");
            assert!(field(&rows, port, "lsn").contains('/'), "{rows:#?}");
            assert!(field(&rows, port, "check_ms").parse::<f64>().unwrap() > 0.0, "{rows:#?}");
        }
        assert_eq!(field(&rows, p, "readable"), "false", "the primary takes no replica reads");

        let (status, body) = http_get(metrics_port, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("\"server\":\"127.0.0.1:{r1}\",\"role\":\"replica\",\"state\":\"up\",\"readable\":true")), "{body}");
        let (_, scrape) = http_get(metrics_port, "/metrics").await;
        let m = |s: String| sample(&scrape, &s).unwrap_or_else(|| panic!("no {s} in\n{scrape}"));
        assert_eq!(m(format!("pgmux_replica_up{{database=\"app\",server=\"127.0.0.1:{p}\",role=\"primary\"}}")), 1.0);
        assert_eq!(m(format!("pgmux_replica_up{{database=\"app\",server=\"127.0.0.1:{r1}\",role=\"replica\"}}")), 1.0);
        assert_eq!(m(format!("pgmux_replica_readable{{database=\"app\",server=\"127.0.0.1:{r2}\"}}")), 1.0);
        assert_eq!(m(format!("pgmux_replica_readable{{database=\"app\",server=\"127.0.0.1:{p}\"}}")), 0.0);
        assert!(m("pgmux_routed_total{database=\"app\",target=\"replica\",reason=\"read\"}".into()) >= 0.0);

        // Replay paused on replica 1, a few writes on the primary: out of reads once
        // it is more than 1 s behind (in time: the writes are small).
        c.psql(r1, "app", "SELECT pg_wal_replay_pause()").unwrap();
        c.psql(p, "app", "SET synchronous_commit = on; CREATE TABLE lag_probe (x int); INSERT INTO lag_probe VALUES (1); INSERT INTO lag_probe VALUES (2)").unwrap();
        let (rows, took) = wait_for(&console, "replica 1 lagging", Duration::from_secs(2), |r| field(r, r1, "state") == "lagging").await;
        assert_eq!(field(&rows, r1, "readable"), "false");
        assert!(field(&rows, r1, "lag_bytes").parse::<u64>().unwrap() > 0, "{rows:#?}");
        assert!(field(&rows, r1, "lag_seconds").parse::<f64>().unwrap() > 1.0, "{rows:#?}");
        assert!(took > Duration::from_millis(800), "banned after {took:?}: before the 1 s bound was passed");
        assert_eq!((field(&rows, r2, "readable"), field(&rows, r2, "state")), ("true", "up"), "replica 2 keeps replaying");
        let (_, scrape) = http_get(metrics_port, "/metrics").await;
        let lag = sample(&scrape, &format!("pgmux_replica_lag_seconds{{database=\"app\",server=\"127.0.0.1:{r1}\"}}")).unwrap();
        assert!(lag > 1.0, "{scrape}");
        // It stays out while paused (the lag only grows), and is logged once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rows = show_replicas(&console).await;
        assert_eq!(field(&rows, r1, "state"), "lagging");
        assert_eq!(log_lines(&px, "replica lagging", r1), 1, "{}", px.log_text());

        c.psql(r1, "app", "SELECT pg_wal_replay_resume()").unwrap();
        let (rows, _) = wait_for(&console, "replica 1 readable again", Duration::from_secs(2), |r| field(r, r1, "readable") == "true").await;
        assert_eq!((field(&rows, r1, "state"), field(&rows, r1, "lag_bytes")), ("up", "0"), "{rows:#?}");

        // Replica 2 stopped: reads go on without a client error (its pooled
        // connections are found dead, a read that cannot get it tries the next node).
        let reader = px.connect_as("app", "app", "app").await.unwrap();
        for _ in 0..6 {
            reader.simple_query("SELECT 1").await.unwrap();
        }
        c.stop_node(r2).unwrap();
        for i in 0..40 {
            let rows = reader.simple_query("SELECT inet_server_port()::text").await.unwrap_or_else(|e| panic!("read {i} after the stop: {e}"));
            let port = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            });
            assert_ne!(port, Some(r2.to_string()), "a read reached the stopped replica");
        }
        // Down within ~2 s, still ready (the primary is up).
        let (rows, _) = wait_for(&console, "replica 2 down", Duration::from_secs(2), |r| field(r, r2, "state") == "down").await;
        assert_eq!(field(&rows, r2, "readable"), "false");
        let (status, body) = http_get(metrics_port, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("\"server\":\"127.0.0.1:{r2}\",\"role\":\"replica\",\"state\":\"down\",\"readable\":false")), "{body}");
        let (_, scrape) = http_get(metrics_port, "/metrics").await;
        assert_eq!(sample(&scrape, &format!("pgmux_replica_up{{database=\"app\",server=\"127.0.0.1:{r2}\",role=\"replica\"}}")), Some(0.0));
        // Probed with backoff while down; back in reads after it restarts.
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.start_node(r2).unwrap();
        wait_for(&console, "replica 2 back", Duration::from_secs(15), |r| {
            field(r, r2, "state") == "up" && field(r, r2, "readable") == "true"
        })
        .await;
        assert_eq!(log_lines(&px, "server down", r2), 1, "{}", px.log_text());
        assert_eq!(log_lines(&px, "server answers its checks again", r2), 1, "{}", px.log_text());
        assert!(log_lines(&px, "replica takes reads", r1) >= 2, "first check and after the lag: {}", px.log_text());
    });
}

/// Waits for both replicas to take reads, stops the primary (checking pgmux is not
/// ready meanwhile), promotes replica 1 and waits for pgmux to follow.
async fn fail_over(c: &Cluster, console: &tokio_postgres::Client, metrics_port: u16) -> HashMap<u16, HashMap<String, String>> {
    let (p, r1, r2) = (c.primary.port, c.replicas[0].port, c.replicas[1].port);
    wait_for(console, "replicas readable", Duration::from_secs(5), |r| {
        field(r, r1, "readable") == "true" && field(r, r2, "readable") == "true"
    })
    .await;
    // The primary stops: not ready while no server answers as a primary.
    c.stop_node(p).unwrap();
    wait_for(console, "primary down", Duration::from_secs(2), |r| field(r, p, "state") == "down").await;
    let (status, body) = http_get(metrics_port, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"ready\":false"), "{body}");
    // Replica 1 is promoted: pgmux follows within a few seconds.
    c.promote(r1).unwrap();
    let (rows, took) = wait_for(console, "replica 1 primary", Duration::from_secs(5), |r| field(r, r1, "role") == "primary").await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    rows
}

#[test]
fn a_promoted_replica_becomes_the_primary() {
    let c = own_cluster();
    let (p, r1) = (c.primary.port, c.replicas[0].port);
    let metrics_port = free_port();
    let px = start(&c, metrics_port);
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let app = px.connect_as("app", "app", "app").await.unwrap();
        app.simple_query("SELECT 1").await.unwrap();
        let rows = fail_over(&c, &console, metrics_port).await;
        assert_eq!((field(&rows, r1, "configured_role"), field(&rows, r1, "state")), ("replica", "up"));
        assert_eq!(field(&rows, r1, "readable"), "false", "the new primary takes no replica reads");
        assert_eq!((field(&rows, p, "configured_role"), field(&rows, p, "state")), ("primary", "down"));
        let t0 = Instant::now();
        loop {
            let (status, body) = http_get(metrics_port, "/readyz").await;
            if status == 200 {
                assert!(body.contains(&format!("\"server\":\"127.0.0.1:{r1}\",\"role\":\"primary\",\"state\":\"up\"")), "{body}");
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(3), "not ready after the failover: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, scrape) = http_get(metrics_port, "/metrics").await;
        let up = format!("pgmux_replica_up{{database=\"app\",server=\"127.0.0.1:{r1}\",role=\"primary\"}}");
        assert_eq!(sample(&scrape, &up), Some(1.0), "{scrape}");
        let stale = format!("pgmux_replica_up{{database=\"app\",server=\"127.0.0.1:{r1}\",role=\"replica\"}}");
        assert_eq!(sample(&scrape, &stale), None, "no stale role series: {scrape}");
        assert_eq!(px.log_text().lines().filter(|l| l.contains("failover followed")).count(), 1, "{}", px.log_text());

        // A connected client's writes now reach the new primary.
        app.simple_query("CREATE TABLE after_failover (x int)").await.unwrap();
        assert_eq!(c.psql(r1, "app", "SELECT count(*) FROM pg_class WHERE relname = 'after_failover'").unwrap(), "1");
    });
}

#[test]
fn a_new_login_after_a_failover_reaches_the_new_primary() {
    let c = own_cluster();
    let metrics_port = free_port();
    let px = start(&c, metrics_port);
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        fail_over(&c, &console, metrics_port).await;
        let app = px.connect_as("app", "app", "app").await.expect("a first login after the failover");
        app.simple_query("CREATE TABLE new_login_after_failover (x int)").await.unwrap();
        assert_eq!(
            c.psql(c.replicas[0].port, "app", "SELECT count(*) FROM pg_class WHERE relname = 'new_login_after_failover'").unwrap(),
            "1"
        );
    });
}
