//! Operating pgmux like PgBouncer: the admin console's SHOW commands under a known
//! load, and the Prometheus endpoint scraped over HTTP and parsed.

mod common;

use common::{mt, scalar};

use std::collections::HashMap;
use std::time::Duration;

use common::{http_get, message, show as admin, sqlstate, Setup};

/// For tests that count connections and clients under a known load on one server:
/// reads stay on the primary (routing has its own tests).
const PRIMARY_ONLY: &str = "routing:\n  read_write_split: false\n";

/// Parses the Prometheus text format: (name, labels, value) per sample.
fn parse_metrics(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = vec![];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || !line.starts_with("pgmux_") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n.to_string(), rest.trim_end_matches('}')),
            None => (series.to_string(), ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push((name, labels, value));
    }
    out
}

fn sum(samples: &[(String, HashMap<String, String>, f64)], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && label.is_none_or(|(k, v)| l.get(k).map(String::as_str) == Some(v)))
        .map(|(_, _, v)| v)
        .sum()
}

/// Waits up to 5 s for app's SHOW POOLS row to show (cl_waiting, cl_active, sv_active).
async fn pool_row_becomes(console: &tokio_postgres::Client, want: (&str, &str, &str)) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, pools) = admin(console, "SHOW POOLS").await;
        let app = pools.iter().find(|r| r["database"] == "app").unwrap().clone();
        if (app["cl_waiting"].as_str(), app["cl_active"].as_str(), app["sv_active"].as_str()) == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{app:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn admin_console_and_metrics_under_load() {
    let metrics_port = pgmux::cluster::free_port();
    let px = Setup { pool_size: 2, checkout_timeout: "20s", extra: PRIMARY_ONLY.into(), ..Default::default() }
        .start_with(|y| format!("metrics_listen: 127.0.0.1:{metrics_port}\n{y}"));
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let (_, version) = admin(&console, "SHOW VERSION").await;
        assert!(version[0]["version"].starts_with("pgmux"));

        // 20 clients, 2 server connections: 18 wait.
        let mut load = vec![];
        for _ in 0..20 {
            let c = px.connect().await;
            load.push(tokio::spawn(async move { c.simple_query("select pg_sleep(0.6)").await.unwrap() }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (cols, pools) = admin(&console, "SHOW POOLS").await;
        for want in [
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "sv_active",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode",
        ] {
            assert!(cols.iter().any(|c| c == want), "SHOW POOLS lacks {want}: {cols:?}");
        }
        let app = pools.iter().find(|r| r["database"] == "app" && r["user"] == "app").expect("a row for app/app");
        assert_eq!(app["cl_active"], "2", "{app:?}");
        assert_eq!(app["sv_active"], "2");
        assert!(app["cl_waiting"].parse::<i32>().unwrap() >= 15, "{app:?}");
        assert_eq!(app["pool_mode"], "transaction");

        let (status, body) = http_get(metrics_port, "/metrics").await;
        assert_eq!(status, 200);
        let m = parse_metrics(&body);
        assert!(sum(&m, "pgmux_clients", Some(("state", "waiting"))) >= 15.0, "{body}");
        assert_eq!(sum(&m, "pgmux_clients", Some(("state", "active"))), 2.0);
        assert_eq!(sum(&m, "pgmux_pool_size", Some(("role", "primary"))), 2.0);
        assert_eq!(sum(&m, "pgmux_pool_saturation", Some(("role", "primary"))), 1.0);
        let (_, clients) = admin(&console, "SHOW CLIENTS").await;
        assert!(clients.iter().filter(|r| r["user"] == "app").count() >= 20);
        assert!(clients.iter().any(|r| r["state"] == "waiting"));

        for t in load {
            t.await.unwrap();
        }
        // cl_active counts logged-in clients that do not wait, as PgBouncer's does: one
        // idle client is active; once the load's clients are gone, only it.
        let idle = px.connect().await;
        idle.simple_query("select 1").await.unwrap();
        pool_row_becomes(&console, ("0", "1", "0")).await;
        let (_, stats) = admin(&console, "SHOW STATS").await;
        let app = stats.iter().find(|r| r["database"] == "app").unwrap();
        assert!(app["total_xact_count"].parse::<u64>().unwrap() >= 20, "{app:?}");
        assert!(app["total_wait_time"].parse::<u64>().unwrap() > 1_000_000, "18 clients waited 0.6 to 5.4 s: {app:?}");

        let (status, body) = http_get(metrics_port, "/metrics").await;
        assert_eq!(status, 200);
        let m = parse_metrics(&body);
        assert_eq!(sum(&m, "pgmux_clients", Some(("state", "waiting"))), 0.0);
        assert!(sum(&m, "pgmux_transactions_total", None) >= 20.0);
        // A real histogram: cumulative buckets, the slowest waits above 1 s.
        let count = sum(&m, "pgmux_pool_wait_seconds_count", None);
        let under_1s = sum(&m, "pgmux_pool_wait_seconds_bucket", Some(("le", "1")));
        let inf = sum(&m, "pgmux_pool_wait_seconds_bucket", Some(("le", "+Inf")));
        assert!(count >= 20.0 && inf == count && under_1s < count, "count {count}, le=1 {under_1s}, +Inf {inf}");

        for cmd in ["SHOW SERVERS", "SHOW DATABASES", "SHOW USERS", "SHOW CONFIG", "SHOW LISTS", "SHOW REPLICAS"] {
            let (cols, rows) = admin(&console, cmd).await;
            assert!(!cols.is_empty() && !rows.is_empty(), "{cmd}: {cols:?} {rows:?}");
        }
        let e = console.simple_query("SHOW NONSENSE").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"));
        let e = console.simple_query("KILL_CLIENTS app").await.unwrap_err();
        assert!(message(&e).contains("not supported yet"), "{e}");

        let (status, _) = http_get(metrics_port, "/healthz").await;
        assert_eq!(status, 200);
        let (status, body) = http_get(metrics_port, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"ready\":true") && body.contains("\"role\":\"primary\""), "{body}");

        // Only admins get the console.
        let e = px.connect_as("app", "app", "pgbouncer").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("28000"), "{e}");
    });
}

#[test]
fn pause_holds_new_transactions_and_resume_releases_them() {
    let px = Setup { pool_size: 2, ..Default::default() }.start();
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgmux").await.unwrap();
        let c = px.connect().await;
        // PAUSE waits for a running transaction to end.
        let busy = px.connect().await;
        busy.simple_query("begin").await.unwrap();
        let paused = {
            let console = &console;
            async move { console.simple_query("PAUSE app").await.unwrap() }
        };
        let commit = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            busy.simple_query("commit").await.unwrap();
        };
        let t0 = std::time::Instant::now();
        tokio::join!(paused, commit);
        assert!(t0.elapsed() >= Duration::from_millis(250), "PAUSE returned before the transaction ended");
        // New transactions wait until RESUME.
        let q = tokio::spawn(async move { c.simple_query("select 1").await.map(|_| std::time::Instant::now()) });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!q.is_finished(), "a query ran while paused");
        let resumed_at = std::time::Instant::now();
        console.simple_query("RESUME app").await.unwrap();
        let done_at = q.await.unwrap().unwrap();
        assert!(done_at >= resumed_at);

        // KILL_CLIENT ends an idle client's session.
        let victim = px.connect_named("tp_victim").await;
        let (_, clients) = admin(&console, "SHOW CLIENTS").await;
        let id = clients.iter().find(|r| r["application_name"] == "tp_victim").unwrap()["remote_pid"].clone();
        console.simple_query(&format!("KILL_CLIENT {id}")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(victim.simple_query("select 1").await.is_err());
        let e = console.simple_query("KILL_CLIENT 12345").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("22023"));
    });
}

fn config_value(rows: &[HashMap<String, String>], key: &str) -> String {
    rows.iter().find(|r| r["key"] == key).map(|r| r["value"].clone()).unwrap_or_default()
}

#[test]
fn reload_applies_a_valid_file_atomically_and_rejects_a_bad_one() {
    let setup = Setup { pool_size: 1, extra: PRIMARY_ONLY.into(), ..Default::default() };
    let px = setup.start();
    let yaml = std::fs::read_to_string(&px.config).unwrap();
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let before = px.connect().await;
        assert_eq!(scalar(&before, "select 1").await, "1");

        // A bigger pool and a new database, by RELOAD.
        let grown = yaml.replace("  size: 1\n", "  size: 3\n").replacen(
            "databases:\n",
            &format!("databases:\n  app2:\n    primary: 127.0.0.1:{}\n    dbname: app\n", common::cluster().primary.port),
            1,
        );
        std::fs::write(&px.config, &grown).unwrap();
        console.simple_query("RELOAD").await.unwrap();
        let (_, cfg) = admin(&console, "SHOW CONFIG").await;
        assert_eq!(config_value(&cfg, "pool.size"), "3");
        let clients: Vec<_> = futures_util::future::join_all((0..3).map(|_| px.connect())).await;
        futures_util::future::join_all(clients.iter().map(|c| c.simple_query("select pg_sleep(0.5)"))).await;
        let (_, pools) = admin(&console, "SHOW POOLS").await;
        let app = pools.iter().find(|r| r["database"] == "app").unwrap();
        assert_eq!(app["sv_idle"], "3", "the pool grew in place: {app:?}");
        let app2 = px.connect_as("app", "app", "app2").await.unwrap();
        assert_eq!(scalar(&app2, "select current_database()").await, "app");
        assert_eq!(scalar(&before, "select 'still connected'").await, "still connected");

        // A bad file changes nothing and says why.
        std::fs::write(&px.config, grown.replace("  size: 3\n", "  sise: 5\n")).unwrap();
        let e = console.simple_query("RELOAD").await.unwrap_err();
        assert_eq!(sqlstate(&e).as_deref(), Some("F0000"), "{e}");
        assert!(message(&e).contains("sise"), "{e}");
        let (_, cfg) = admin(&console, "SHOW CONFIG").await;
        assert_eq!(config_value(&cfg, "pool.size"), "3");

        // SIGHUP does the same as RELOAD.
        std::fs::write(&px.config, grown.replace("  size: 3\n", "  size: 2\n")).unwrap();
        px.signal(libc::SIGHUP);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, cfg) = admin(&console, "SHOW CONFIG").await;
        assert_eq!(config_value(&cfg, "pool.size"), "2");
        assert_eq!(scalar(&before, "select 'after sighup'").await, "after sighup");
    });
}

#[test]
fn json_logs_slow_queries_and_pool_pressure() {
    let px = Setup { pool_size: 1, checkout_timeout: "10s", extra: PRIMARY_ONLY.into(), ..Default::default() }
        .start_with(|y| format!("log_format: json\nslow_query_threshold: 250ms\npool_pressure_waiting: 2\n{y}"));
    mt().block_on(async {
        let c = px.connect_named("tp_slow").await;
        c.simple_query("select pg_sleep(0.4) as slow_one").await.unwrap();
        c.simple_query("select 'fast'").await.unwrap();
        c.simple_query("select pg_sleep(0.3), 'my password is hunter2'").await.unwrap();
        let waiters: Vec<_> = futures_util::future::join_all((0..4).map(|_| px.connect())).await;
        futures_util::future::join_all(waiters.iter().map(|w| w.simple_query("select pg_sleep(0.5)"))).await;
    });
    let log = px.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.iter().all(|l| l.starts_with('{') && l.ends_with('}')), "not JSON lines:\n{log}");
    let slow: Vec<&&str> = lines.iter().filter(|l| l.contains("\"slow query\"")).collect();
    assert!(slow.iter().any(|l| l.contains("slow_one") && l.contains("\"role\":\"primary\"")), "{log}");
    assert!(!slow.iter().any(|l| l.contains("'fast'")), "{log}");
    assert!(!log.contains("hunter2"), "a statement mentioning a password was logged:\n{log}");
    assert!(lines.iter().any(|l| l.contains("pool pressure")), "{log}");
}

#[test]
fn kill_drops_a_databases_clients_now() {
    let px = Setup { pool_size: 2, ..Default::default() }.start();
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let busy = px.connect().await;
        let idle = px.connect().await;
        let t0 = std::time::Instant::now();
        let running = tokio::spawn(async move { busy.simple_query("select pg_sleep(20)").await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(300)).await;
        console.simple_query("KILL app").await.unwrap();
        assert!(running.await.unwrap().is_err(), "the busy client was dropped");
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(idle.simple_query("select 1").await.is_err(), "the idle client was dropped");
        // The database stays paused until RESUME.
        let later = px.connect().await;
        let q = tokio::spawn(async move { scalar(&later, "select 'resumed'").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!q.is_finished());
        console.simple_query("RESUME app").await.unwrap();
        assert_eq!(q.await.unwrap(), "resumed");
    });
}

#[test]
fn min_pool_size_keeps_connections_open() {
    let setup = Setup {
        pool_size: 3,
        pool_extra: "  min_pool_size: 2\n  server_idle_timeout: 1s\n".into(),
        extra: PRIMARY_ONLY.into(),
        ..Default::default()
    };
    let px = setup.start();
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let c = px.connect().await;
        assert_eq!(scalar(&c, "select 1").await, "1");
        // Within a few upkeep ticks the pool holds two, and idle timeouts keep them.
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (_, pools) = admin(&console, "SHOW POOLS").await;
            let idle: i32 = pools.iter().find(|r| r["database"] == "app").unwrap()["sv_idle"].parse().unwrap();
            if idle == 2 && std::time::Instant::now() > deadline - Duration::from_secs(3) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "sv_idle stayed at {idle}");
        }
    });
}

#[test]
fn limits_in_show_databases_show_users_and_metrics() {
    let metrics_port = pgmux::cluster::free_port();
    let setup = Setup {
        pool_size: 3,
        checkout_timeout: "20s",
        pool_extra: "  max_db_connections: 2\n".into(),
        extra: PRIMARY_ONLY.into(),
        ..Default::default()
    };
    let px = setup.start_with(|y| {
        let y = y.replacen("    password: app\n", "    password: app\n    max_user_connections: 4\n", 1);
        format!("metrics_listen: 127.0.0.1:{metrics_port}\n{y}")
    });
    let primary = format!("127.0.0.1:{}", common::cluster().primary.port);
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        // 4 clients, pools of 3, but 2 connections for the database: 2 run, 2 wait.
        let mut load = vec![];
        for _ in 0..4 {
            let c = px.connect().await;
            load.push(tokio::spawn(async move { c.simple_query("select pg_sleep(1)").await.unwrap() }));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;

        let (cols, dbs) = admin(&console, "SHOW DATABASES").await;
        let want = [
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "min_pool_size",
            "reserve_pool",
            "server_lifetime",
            "pool_mode",
            "max_connections",
            "current_connections",
            "paused",
            "disabled",
        ];
        assert_eq!(cols, want, "PgBouncer's SHOW DATABASES columns, in its order");
        let app = dbs.iter().find(|r| r["name"] == "app").expect("a row for app");
        assert_eq!(
            [&app["pool_size"], &app["min_pool_size"], &app["reserve_pool"], &app["max_connections"], &app["current_connections"]],
            ["3", "0", "0", "2", "2"],
            "{app:?}"
        );
        assert_eq!((app["paused"].as_str(), app["pool_mode"].as_str()), ("0", "transaction"), "{app:?}");

        let (cols, users) = admin(&console, "SHOW USERS").await;
        assert_eq!(cols, ["name", "pool_size", "pool_mode", "max_user_connections", "current_connections"]);
        let user = |name: &str| users.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no row for {name}: {users:?}")).clone();
        let app = user("app");
        assert_eq!((app["max_user_connections"].as_str(), app["current_connections"].as_str()), ("4", "2"), "{app:?}");
        assert_eq!(app["pool_mode"], "transaction");
        let adm = user("admin");
        assert_eq!((adm["max_user_connections"].as_str(), adm["current_connections"].as_str()), ("0", "0"), "{adm:?}");

        let (_, pools) = admin(&console, "SHOW POOLS").await;
        let pool = pools.iter().find(|r| r["database"] == "app" && r["user"] == "app").unwrap();
        assert_eq!((pool["sv_active"].as_str(), pool["cl_waiting"].as_str()), ("2", "2"), "held back by the database's limit: {pool:?}");

        limit_metrics_count_the_connections(metrics_port, &primary).await;

        let (_, cfg) = admin(&console, "SHOW CONFIG").await;
        assert_eq!(config_value(&cfg, "pool.max_db_connections"), "2");
        assert_eq!(config_value(&cfg, "pool.max_user_connections"), "0");
        assert_eq!(config_value(&cfg, "users.app.max_user_connections"), "4");
        assert_eq!(config_value(&cfg, "routing.read_write_split"), "false");
        assert!(cfg.iter().all(|r| !r["key"].contains("password")), "{cfg:?}");

        for t in load {
            t.await.unwrap();
        }
        // The connections stay open, idle: still counted.
        let (_, dbs) = admin(&console, "SHOW DATABASES").await;
        let app = dbs.iter().find(|r| r["name"] == "app").unwrap();
        assert_eq!(app["current_connections"], "2", "{app:?}");
    });
}

/// The limit families of /metrics while the database's 2 connections are in use
/// (`limits_in_show_databases_show_users_and_metrics`).
async fn limit_metrics_count_the_connections(metrics_port: u16, primary: &str) {
    let (status, body) = http_get(metrics_port, "/metrics").await;
    assert_eq!(status, 200);
    let m = parse_metrics(&body);
    let value = |name: &str, kind: &str, who: &str, server: &str| {
        m.iter().find(|(n, l, _)| n == name && l["kind"] == kind && l["name"] == who && l["server"] == server).map(|s| s.2)
    };
    assert_eq!(value("pgmux_limit_connections", "database", "app", primary), Some(2.0), "{body}");
    assert_eq!(value("pgmux_limit_max_connections", "database", "app", primary), Some(2.0), "{body}");
    assert_eq!(value("pgmux_limit_connections", "user", "app", primary), Some(2.0), "{body}");
    assert_eq!(value("pgmux_limit_max_connections", "user", "app", primary), Some(4.0), "{body}");
    assert_eq!(value("pgmux_limit_connections", "user", "admin", primary), Some(0.0), "{body}");
    assert_eq!(value("pgmux_limit_max_connections", "user", "admin", primary), None, "no limit set: {body}");
    for r in &common::cluster().replicas {
        let replica = format!("127.0.0.1:{}", r.port);
        assert_eq!(value("pgmux_limit_connections", "database", "app", &replica), Some(0.0), "{body}");
        assert_eq!(value("pgmux_limit_max_connections", "database", "app", &replica), Some(2.0), "per server: {body}");
    }
}

/// Exporters index SHOW STATS rows by database: like PgBouncer, a fresh pgmux lists
/// every configured database and the admin console (`pgbouncer`) before any client
/// has used them, with zero counts, and SHOW POOLS and SHOW DATABASES list the admin
/// console too.
#[test]
fn show_stats_pools_and_databases_have_rows_before_any_client() {
    let px = Setup::default().start();
    mt().block_on(async {
        let console = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let (_, stats) = admin(&console, "SHOW STATS").await;
        let names: Vec<&str> = stats.iter().map(|r| r["database"].as_str()).collect();
        assert_eq!(names, ["app", "pgbouncer"]);
        for r in &stats {
            assert_eq!(r["total_xact_count"], "0", "{r:?}");
            assert_eq!(r["avg_query_time"], "0", "{r:?}");
        }
        let (_, pools) = admin(&console, "SHOW POOLS").await;
        let admin_pool = pools.iter().find(|r| r["database"] == "pgbouncer").expect("the admin console's pool");
        assert_eq!((admin_pool["user"].as_str(), admin_pool["pool_mode"].as_str()), ("pgbouncer", "statement"));
        let (_, dbs) = admin(&console, "SHOW DATABASES").await;
        let names: Vec<&str> = dbs.iter().map(|r| r["name"].as_str()).collect();
        assert_eq!(names, ["app", "pgbouncer"]);
        assert_eq!(dbs[1]["port"], px.port.to_string());
        // Once used, the database's row counts its transactions.
        let c = px.connect().await;
        scalar(&c, "select 1").await;
        let (_, stats) = admin(&console, "SHOW STATS").await;
        assert_eq!(stats.iter().find(|r| r["database"] == "app").unwrap()["total_xact_count"], "1");
    });
}
