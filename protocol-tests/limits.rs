//! PgBouncer's connection limits against a real PostgreSQL: `max_db_connections`
//! over several users' pools, `max_user_connections` over several databases' pools,
//! per-database and per-user `pool_size`, and a reload that raises a limit while
//! clients wait.
//!
//! Each test logs in with roles of its own (created here as superuser) and counts the
//! primary's backends of those roles in `pg_stat_activity`: tests run in parallel on
//! one cluster, and a role is a mark every server connection carries from its login
//! on (an `application_name` is applied only when a client first uses it).
//! `routing.read_write_split` is off, so everything goes to the primary.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster, direct, mt, scalar, Pgmux, Setup};

/// Everything to the primary; the replica monitor logs in as `app`, not as a test's role.
const NO_SPLIT: &str = "routing:\n  read_write_split: false\n  monitor_user: app\n";

/// Creates login roles (password = name) that may connect to `app` (and `extra_db`).
/// One test at a time: concurrent GRANTs on one database collide ("tuple concurrently
/// updated").
fn roles(names: &[&str], extra_db: Option<&str>) {
    static DDL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = DDL.lock().unwrap_or_else(|p| p.into_inner());
    let c = cluster();
    let port = c.primary.port;
    if let Some(db) = extra_db {
        let exists = c.psql(port, "postgres", &format!("select count(*) from pg_database where datname = '{db}'")).unwrap();
        if exists == "0" {
            c.psql(port, "postgres", &format!("create database {db}")).unwrap();
        }
    }
    for n in names {
        let create = format!("do $$ begin create role {n} login password '{n}'; exception when duplicate_object then null; end $$");
        c.psql(port, "app", &create).unwrap();
        for db in std::iter::once("app").chain(extra_db) {
            c.psql(port, "app", &format!("grant connect on database {db} to {n}")).unwrap();
        }
    }
}

/// YAML for the `users:` entries of `names` (password = name), each with `extra` lines.
fn users_yaml(names: &[(&str, &str)]) -> String {
    names.iter().map(|(n, extra)| format!("  - name: {n}\n    password: {n}\n{extra}")).collect()
}

fn start(pool_extra: &str, users: &[(&str, &str)], app_db_extra: &str, more_dbs: &str) -> Pgmux {
    let setup =
        Setup { pool_size: 5, checkout_timeout: "20s", pool_extra: pool_extra.into(), extra: NO_SPLIT.into(), ..Default::default() };
    let (users, db_extra, more) = (users_yaml(users), app_db_extra.to_string(), more_dbs.to_string());
    setup.start_with(move |y| {
        let primary = format!("127.0.0.1:{}", cluster().primary.port);
        let more = more.replace("PRIMARY", &primary);
        y.replacen("users:\n", &format!("users:\n{users}"), 1).replacen(
            "databases:\n  app:\n",
            &format!("databases:\n{more}  app:\n{db_extra}"),
            1,
        )
    })
}

/// Samples the primary's backends in use (not idle) of `users`, per user and in total, until stopped;
/// returns the largest counts seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(i64, Vec<i64>)>,
}

impl Sampler {
    async fn start(users: &[&str]) -> Sampler {
        let admin = direct(cluster().primary.port).await;
        let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut total, mut each) = (0, vec![0; users.len()]);
            while !flag.load(Ordering::SeqCst) {
                // One snapshot for all users; backends in use only: a connection pgmux
                // has just closed (to make room) can linger idle for a moment while its
                // backend exits.
                let rows = admin
                    .query(
                        "select usename::text, count(*) from pg_stat_activity where usename = any($1) and state <> 'idle' group by usename",
                        &[&users],
                    )
                    .await
                    .unwrap();
                let mut sum = 0;
                for r in rows {
                    let (u, n): (String, i64) = (r.get(0), r.get(1));
                    let i = users.iter().position(|x| *x == u).unwrap();
                    each[i] = each[i].max(n);
                    sum += n;
                }
                total = total.max(sum);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (total, each)
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> (i64, Vec<i64>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// A client of `px` as `user` (password = name) that runs `txns` transactions each
/// holding its server connection for `hold`.
async fn worker(px_port: u16, user: &str, db: &str, txns: usize, hold: Duration) -> usize {
    let url = format!("host=127.0.0.1 port={px_port} user={user} password={user} dbname={db} application_name=limits_{user}");
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    for i in 0..txns {
        c.simple_query("begin").await.unwrap();
        assert_eq!(scalar(&c, &format!("select {i} from pg_sleep({})", hold.as_secs_f64())).await, i.to_string());
        c.simple_query("commit").await.unwrap();
    }
    txns
}

#[test]
fn max_db_connections_is_shared_by_the_users_of_a_database() {
    // The database's own key wins over pool.max_db_connections.
    let px = start("  max_db_connections: 1\n", &[("lim_db_a", ""), ("lim_db_b", "")], "    max_db_connections: 2\n", "");
    mt().block_on(async {
        roles(&["lim_db_a", "lim_db_b"], None);
        let sampler = Sampler::start(&["lim_db_a", "lim_db_b"]).await;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..6 {
            let user = if i % 2 == 0 { "lim_db_a" } else { "lim_db_b" };
            tasks.push(tokio::spawn(worker(px.port, user, "app", 2, Duration::from_millis(250))));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 2);
        }
        let elapsed = t0.elapsed();
        let (total, each) = sampler.finish().await;
        assert_eq!(total, 2, "at most 2 server connections to the database, and the limit was reached ({each:?})");
        assert!(each.iter().all(|n| *n >= 1), "both users got connections: {each:?}");
        // 12 transactions of 250 ms on 2 connections: at least 1.5 s (5 per user would take 0.75 s).
        assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    });
}

#[test]
fn max_user_connections_is_shared_by_the_databases_of_a_user() {
    // The user's own key wins over pool.max_user_connections.
    let px =
        start("  max_user_connections: 1\n", &[("lim_user", "    max_user_connections: 2\n")], "", "  lim_other:\n    primary: PRIMARY\n");
    mt().block_on(async {
        roles(&["lim_user"], Some("lim_other"));
        let sampler = Sampler::start(&["lim_user"]).await;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..6 {
            let db = if i % 2 == 0 { "app" } else { "lim_other" };
            tasks.push(tokio::spawn(worker(px.port, "lim_user", db, 2, Duration::from_millis(250))));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 2);
        }
        let elapsed = t0.elapsed();
        let (total, _) = sampler.finish().await;
        assert_eq!(total, 2, "at most 2 server connections for the user, and the limit was reached");
        assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
        let admin = direct(cluster().primary.port).await;
        let dbs: i64 =
            admin.query_one("select count(distinct datname) from pg_stat_activity where usename = 'lim_user'", &[]).await.unwrap().get(0);
        assert!(dbs >= 1);
    });
}

#[test]
fn pool_size_per_database_and_per_user() {
    // pool.size 5; the database says 2; lim_ps_big's own pool_size 3 wins over it.
    let px = start("", &[("lim_ps", ""), ("lim_ps_big", "    pool_size: 3\n")], "    pool_size: 2\n", "");
    mt().block_on(async {
        roles(&["lim_ps", "lim_ps_big"], None);
        let sampler = Sampler::start(&["lim_ps", "lim_ps_big"]).await;
        let mut tasks = Vec::new();
        for i in 0..10 {
            let user = if i % 2 == 0 { "lim_ps" } else { "lim_ps_big" };
            tasks.push(tokio::spawn(worker(px.port, user, "app", 2, Duration::from_millis(200))));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 2);
        }
        let (_, each) = sampler.finish().await;
        assert_eq!(each, [2, 3], "the database's pool_size, and the user's that wins over it");
    });
}

#[test]
fn a_reload_that_raises_a_limit_lets_waiters_proceed() {
    let px = start("", &[("lim_reload", "")], "    max_db_connections: 1\n", "");
    mt().block_on(async {
        roles(&["lim_reload"], None);
        let connect = || async {
            let url = format!("host=127.0.0.1 port={} user=lim_reload password=lim_reload dbname=app", px.port);
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            c
        };
        let holder = connect().await;
        holder.simple_query("begin").await.unwrap();
        assert_eq!(scalar(&holder, "select 'held'").await, "held");
        let mut waiters = Vec::new();
        for i in 0..2 {
            let c = connect().await;
            waiters.push(tokio::spawn(async move {
                let v = scalar(&c, &format!("select {i}")).await;
                (v, Instant::now())
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()), "the limit of 1 holds them back");
        let text = std::fs::read_to_string(&px.config).unwrap();
        std::fs::write(&px.config, text.replace("max_db_connections: 1", "max_db_connections: 3")).unwrap();
        let reloaded = Instant::now();
        px.signal(libc::SIGHUP);
        for (i, w) in waiters.into_iter().enumerate() {
            let (v, at) = w.await.unwrap();
            assert_eq!(v, i.to_string());
            assert!(at.duration_since(reloaded) < Duration::from_secs(3), "waiters proceed after the reload");
        }
        // The holder's transaction was not disturbed.
        assert_eq!(scalar(&holder, "select 'still here'").await, "still here");
        holder.simple_query("commit").await.unwrap();
        let admin = direct(cluster().primary.port).await;
        let n: i64 = admin.query_one("select count(*) from pg_stat_activity where usename = 'lim_reload'", &[]).await.unwrap().get(0);
        assert!((2..=3).contains(&n), "{n} server connections after the reload");
    });
}
