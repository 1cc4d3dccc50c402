//! LISTEN/NOTIFY in transaction mode without pinning (issue #16): listening clients
//! hold no server connection between transactions, one connection of pgmux's own
//! (`application_name` pgmux-listen) listens to the union of their channels, and each
//! notification reaches every client listening on its channel, between its
//! transactions, once, in the server's order. Tested through tokio-postgres and raw
//! protocol clients here, and through psycopg 3, asyncpg, node-postgres, pgjdbc and a
//! job-queue library (procrastinate) in `notify_drivers`.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::raw::{Msg, Raw};
use common::{direct, mt, scalar, show, Pgmux, Setup};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// A notification as a tokio-postgres listener saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Note {
    channel: String,
    payload: String,
}

/// A client through pgmux whose notifications arrive on the receiver (its connection
/// task forwards them); the receiver ends when the connection does, and the error
/// that ended it (if any) is sent last as a channel named `!error` with its SQLSTATE.
async fn listener(px: &Pgmux, app_name: &str) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<Note>) {
    let (client, mut conn) =
        tokio_postgres::connect(&format!("{} application_name={app_name}", px.conn_str("app", "app", "app")), tokio_postgres::NoTls)
            .await
            .expect("connect through pgmux");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send(Note { channel: n.channel().to_string(), payload: n.payload().to_string() });
                }
                Ok(_) => {}
                Err(e) => {
                    let code = common::sqlstate(&e).unwrap_or_default();
                    let _ = tx.send(Note { channel: "!error".into(), payload: code });
                    return;
                }
            }
        }
    });
    (client, rx)
}

/// The next notification within `wait`, or None.
async fn next(rx: &mut mpsc::UnboundedReceiver<Note>, wait: Duration) -> Option<Note> {
    tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
}

fn note(channel: &str, payload: &str) -> Note {
    Note { channel: channel.into(), payload: payload.into() }
}

/// Server connections of user app on the primary, by application_name (pgmux-listen,
/// pgmux-monitor and the clients' own names).
async fn app_backends(admin: &tokio_postgres::Client) -> HashMap<String, i64> {
    let rows = admin.query("select application_name, count(*) from pg_stat_activity where usename = 'app' group by 1", &[]).await.unwrap();
    rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1))).collect()
}

/// The pgmux-listen backends on the primary (of every pgmux the tests run).
async fn listen_pids(admin: &tokio_postgres::Client) -> Vec<i32> {
    let rows = admin.query("select pid from pg_stat_activity where application_name = 'pgmux-listen'", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// The heavy tests (500 listeners, 100 MB to a slow client) and the latency figure
/// take turns: measured alongside the others, the latency is the machine's.
fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn setup(pool_size: usize, pool_extra: &str) -> Setup {
    Setup { pool_size, checkout_timeout: "10s", pool_extra: pool_extra.to_string(), extra: String::new(), ..Default::default() }
}

/// Fifty clients LISTEN on a pool of 2: none of them holds a server connection, the
/// pool still serves everyone else, one pgmux-listen connection listens for all, and a
/// NOTIFY from another client reaches every one of them.
#[test]
fn listening_clients_hold_no_server_connection() {
    let px = setup(2, "").start();
    mt().block_on(async {
        let mut listeners = vec![];
        for _ in 0..50 {
            let (c, rx) = listener(&px, "nfy_nopin").await;
            c.batch_execute("LISTEN nopin_jobs").await.unwrap();
            listeners.push((c, rx));
        }
        // Others still get served, 30 at once, on the 2 server connections.
        let others: Vec<_> = futures_util::future::join_all((0..30).map(|_| px.connect_named("nfy_nopin_other"))).await;
        let answers = futures_util::future::join_all(others.iter().map(|o| o.simple_query("select pg_sleep(0.05)"))).await;
        assert!(answers.iter().all(|a| a.is_ok()), "the pool serves other clients while 50 listen");
        let adm = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let (_, pools) = show(&adm, "SHOW POOLS").await;
        let app = pools.iter().find(|r| r["database"] == "app" && r["user"] == "app").expect("app's pool");
        let servers: i64 = ["sv_active", "sv_idle", "sv_used"].iter().map(|k| app[*k].parse::<i64>().unwrap()).sum();
        assert!(servers <= 2, "SHOW POOLS: {app:?}");
        // cl_active counts logged-in clients that do not wait (as PgBouncer): all 80.
        assert_eq!((app["cl_active"].as_str(), app["cl_waiting"].as_str()), ("80", "0"), "{app:?}");
        let su = direct(common::cluster().primary.port).await;
        let b = app_backends(&su).await;
        assert!(b.get("nfy_nopin").copied().unwrap_or(0) + b.get("nfy_nopin_other").copied().unwrap_or(0) <= 2, "{b:?}");
        assert!(b.get("pgmux-listen").copied().unwrap_or(0) >= 1, "a listening connection: {b:?}");
        // A NOTIFY by another client reaches all fifty, once.
        others[0].batch_execute("NOTIFY nopin_jobs, 'job 1'").await.unwrap();
        others[1].batch_execute("select pg_notify('nopin_jobs', 'job 2')").await.unwrap();
        for (_, rx) in listeners.iter_mut() {
            assert_eq!(next(rx, Duration::from_secs(10)).await, Some(note("nopin_jobs", "job 1")));
            assert_eq!(next(rx, Duration::from_secs(10)).await, Some(note("nopin_jobs", "job 2")));
        }
        for (_, rx) in listeners.iter_mut() {
            assert_eq!(next(rx, Duration::from_millis(20)).await, None, "each notification once");
        }
        // SHOW LISTENERS counts them.
        let (_, rows) = show(&adm, "SHOW LISTENERS").await;
        let r = rows.iter().find(|r| r["database"] == "app").expect("a row for app");
        assert_eq!(r["clients"], "50", "{r:?}");
        assert!(r["delivered"].parse::<u64>().unwrap() >= 100, "{r:?}");
        assert_eq!(r["connected"], "1", "{r:?}");
        let (_, rows) = show(&adm, "SHOW CHANNELS").await;
        assert!(rows.iter().any(|r| r["channel"] == "nopin_jobs" && r["clients"] == "50"), "{rows:?}");
    });
}

/// LISTEN and UNLISTEN take effect at commit, as PostgreSQL says: a LISTEN rolled back
/// listens to nothing, UNLISTEN stops delivery (even of what was queued), and
/// `pg_listening_channels()` shows the client's own channels on any connection.
#[test]
fn listen_follows_commit_and_rollback() {
    let px = setup(2, "").start();
    mt().block_on(async {
        let (c, mut rx) = listener(&px, "nfy_txn").await;
        let sender = px.connect().await;
        c.batch_execute("BEGIN; LISTEN txn_rolled; ROLLBACK").await.unwrap();
        c.batch_execute("LISTEN txn_kept").await.unwrap();
        c.batch_execute("BEGIN; LISTEN txn_later; SAVEPOINT s; LISTEN txn_sp; ROLLBACK TO s; COMMIT").await.unwrap();
        let chans = scalar(&c, "select string_agg(c, ',' order by c) from pg_listening_channels() c").await;
        assert_eq!(chans, "txn_kept,txn_later");
        sender
            .batch_execute("NOTIFY txn_rolled, 'no'; NOTIFY txn_sp, 'no'; NOTIFY txn_kept, 'yes 1'; NOTIFY txn_later, 'yes 2'")
            .await
            .unwrap();
        assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("txn_kept", "yes 1")));
        assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("txn_later", "yes 2")));
        // Not inside a transaction: only once it is over.
        c.batch_execute("BEGIN").await.unwrap();
        sender.batch_execute("NOTIFY txn_kept, 'after commit'").await.unwrap();
        c.batch_execute("select 1").await.unwrap();
        assert_eq!(next(&mut rx, Duration::from_millis(300)).await, None, "nothing inside a transaction");
        c.batch_execute("COMMIT").await.unwrap();
        assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("txn_kept", "after commit")));
        // UNLISTEN one channel, then all.
        c.batch_execute("UNLISTEN txn_kept").await.unwrap();
        sender.batch_execute("NOTIFY txn_kept, 'no'; NOTIFY txn_later, 'yes 3'").await.unwrap();
        assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("txn_later", "yes 3")));
        c.batch_execute("BEGIN; UNLISTEN *; ROLLBACK").await.unwrap();
        sender.batch_execute("NOTIFY txn_later, 'yes 4'").await.unwrap();
        assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("txn_later", "yes 4")), "UNLISTEN * rolled back");
        c.batch_execute("UNLISTEN *").await.unwrap();
        assert_eq!(scalar(&c, "select count(*) from pg_listening_channels()").await, "0");
        sender.batch_execute("NOTIFY txn_later, 'no'; NOTIFY txn_kept, 'no'").await.unwrap();
        assert_eq!(next(&mut rx, Duration::from_millis(500)).await, None);
        // A notification sent by the client itself comes back to it, as from PostgreSQL.
        c.batch_execute("LISTEN txn_self; NOTIFY txn_self, 'mine'").await.unwrap();
        assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("txn_self", "mine")));
        assert_eq!(next(&mut rx, Duration::from_millis(200)).await, None, "once");
    });
}

/// 500 listening clients on 3 channels (each on one or two), 10,000 notifications from
/// 3 senders in bursts: every client gets exactly its channels' notifications, each
/// once, each sender's in order; pgmux holds no more server connections than its pool
/// and one listening connection.
#[test]
fn five_hundred_listeners_ten_thousand_notifications() {
    let _turn = heavy();
    let px = setup(4, "").start();
    mt().block_on(async {
        const CLIENTS: usize = 500;
        const PER_SENDER: usize = 3334;
        let chans = ["fan_a", "fan_b", "fan_c"];
        let mut listeners = vec![];
        for i in 0..CLIENTS {
            let (c, rx) = listener(&px, "nfy_fan").await;
            // Client i listens on channel i%3, and every other client on the next one too.
            let mut mine = vec![chans[i % 3]];
            if i % 2 == 0 {
                mine.push(chans[(i + 1) % 3]);
            }
            let sql: String = mine.iter().map(|ch| format!("LISTEN {ch};")).collect();
            c.batch_execute(&sql).await.unwrap();
            listeners.push((c, rx, mine));
        }
        let su = direct(common::cluster().primary.port).await;
        let b = app_backends(&su).await;
        assert!(b.get("nfy_fan").copied().unwrap_or(0) <= 4, "{b:?}");
        // Sender s sends on channel s, in bursts of transactions of 250.
        let started = Instant::now();
        let sends = (0..3).map(|s| {
            let px = &px;
            async move {
                let c = px.connect().await;
                let mut seq = 0;
                while seq < PER_SENDER {
                    let n = 250.min(PER_SENDER - seq);
                    let sql =
                        format!("select count(pg_notify('{}', '{s}:' || g)) from generate_series({seq}, {}) g", chans[s], seq + n - 1);
                    c.batch_execute(&sql).await.unwrap();
                    seq += n;
                }
            }
        });
        futures_util::future::join_all(sends).await;
        let sent = started.elapsed();
        let mut total = 0usize;
        for (i, (_, rx, mine)) in listeners.iter_mut().enumerate() {
            let want = mine.len() * PER_SENDER;
            let mut next_seq: HashMap<String, usize> = HashMap::new();
            for k in 0..want {
                let n = next(rx, Duration::from_secs(30)).await.unwrap_or_else(|| panic!("client {i}: only {k} of {want}"));
                assert!(mine.contains(&n.channel.as_str()), "client {i} got {n:?}, listens on {mine:?}");
                let (s, seq) = n.payload.split_once(':').unwrap();
                let seq: usize = seq.parse().unwrap();
                let expect = next_seq.entry(s.to_string()).or_insert(0);
                assert_eq!(seq, *expect, "client {i}: sender {s} out of order or lost");
                *expect += 1;
            }
            total += want;
        }
        let received = started.elapsed();
        for (i, (_, rx, _)) in listeners.iter_mut().enumerate() {
            assert_eq!(next(rx, Duration::from_millis(2)).await, None, "client {i}: a duplicate or a stray");
        }
        let b = app_backends(&su).await;
        assert!(b.get("nfy_fan").copied().unwrap_or(0) <= 4, "{b:?}");
        eprintln!(
            "{CLIENTS} listeners, {} notifications sent in {:.2}s, {total} deliveries all received after {:.2}s",
            3 * PER_SENDER,
            sent.as_secs_f64(),
            received.as_secs_f64()
        );
    });
}

/// Latency from a NOTIFY's commit to a listener's receipt, through pgmux and directly.
#[test]
fn notification_latency_through_pgmux_and_direct() {
    let _turn = heavy();
    let px = setup(2, "").start();
    mt().block_on(async {
        let (c, mut rx) = listener(&px, "nfy_lat").await;
        c.batch_execute("LISTEN lat_chan").await.unwrap();
        let sender = direct(common::cluster().primary.port).await;
        let via = latencies(&sender, &mut rx, "lat_chan").await;
        let (dc, mut conn) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=app password=app dbname=app", common::cluster().primary.port),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        let (tx, mut drx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = m {
                    let _ = tx.send(Note { channel: n.channel().into(), payload: n.payload().into() });
                }
            }
        });
        dc.batch_execute("LISTEN lat_direct").await.unwrap();
        let dir = latencies(&sender, &mut drx, "lat_direct").await;
        let pct = |v: &[Duration], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_micros();
        eprintln!(
            "notification latency (NOTIFY sent, by a direct connection, to receipt; 500 samples): pgmux p50 {} us p99 {} us; direct p50 {} us p99 {} us",
            pct(&via, 0.5),
            pct(&via, 0.99),
            pct(&dir, 0.5),
            pct(&dir, 0.99)
        );
        assert!(pct(&via, 0.5) < pct(&dir, 0.5) + 5_000, "p50 within 5 ms of a direct connection's");
        assert!(pct(&via, 0.99) < 100_000, "p99 under 100 ms");
    });
}

/// From the moment the sender sends its NOTIFY to the listener's receipt, sorted.
async fn latencies(sender: &tokio_postgres::Client, rx: &mut mpsc::UnboundedReceiver<Note>, chan: &str) -> Vec<Duration> {
    let mut v = vec![];
    for i in 0..500 {
        let t = Instant::now();
        let receipt = async { (next(rx, Duration::from_secs(5)).await, t.elapsed()) };
        let sql = format!("NOTIFY {chan}, '{i}'");
        let (sent, (n, took)) = tokio::join!(sender.batch_execute(&sql), receipt);
        sent.unwrap();
        assert_eq!(n.expect("a notification").payload, i.to_string());
        v.push(took);
    }
    v.sort();
    v
}

/// pg_terminate_backend on the pgmux-listen connection: its listening clients get
/// `FATAL 08006` (notifications may have been missed) and are disconnected; pgmux
/// connects again, and clients that LISTEN again get what is sent afterwards.
#[test]
fn a_terminated_listening_connection_is_reported_and_replaced() {
    let px = setup(2, "").start();
    mt().block_on(async {
        let su = direct(common::cluster().primary.port).await;
        let (c, mut rx) = listener(&px, "nfy_term").await;
        c.batch_execute("LISTEN term_chan").await.unwrap();
        let sender = px.connect().await;
        sender.batch_execute("NOTIFY term_chan, 'before'").await.unwrap();
        assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("term_chan", "before")));
        // This pgmux's listening connection, as SHOW LISTENERS names it.
        let adm = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let (_, rows) = show(&adm, "SHOW LISTENERS").await;
        let pid: i32 = rows.iter().find(|r| r["database"] == "app").unwrap()["server_pid"].parse().unwrap();
        assert!(listen_pids(&su).await.contains(&pid), "server_pid {pid} is a pgmux-listen backend");
        assert!(su.query_one("select pg_terminate_backend($1)", &[&pid]).await.unwrap().get::<_, bool>(0));
        // The client is told and disconnected.
        let told = next(&mut rx, Duration::from_secs(10)).await;
        assert_eq!(told, Some(note("!error", "08006")), "the listening client is told");
        assert!(c.is_closed() || c.simple_query("select 1").await.is_err());
        // pgmux listens again for clients that come back.
        let (c2, mut rx2) = listener(&px, "nfy_term").await;
        c2.batch_execute("LISTEN term_chan").await.unwrap();
        sender.batch_execute("NOTIFY term_chan, 'after'").await.unwrap();
        assert_eq!(next(&mut rx2, Duration::from_secs(10)).await, Some(note("term_chan", "after")));
        let (_, rows) = show(&adm, "SHOW LISTENERS").await;
        let r = rows.iter().find(|r| r["database"] == "app").unwrap();
        assert_ne!(r["server_pid"], pid.to_string(), "a new listening connection: {r:?}");
        assert_eq!(r["missed_clients"], "1", "{r:?}");
        assert!(r["lost"].parse::<u64>().unwrap() >= 1, "{r:?}");
    });
}

/// A client that LISTENs and stops reading: once pgmux cannot write to it and
/// `pool.notify_queue_size` notifications wait for it, it gets `FATAL 54000` and is
/// disconnected; the other listeners get everything, and pgmux's memory does not grow
/// with what the slow client did not read.
#[test]
fn a_client_that_stops_reading_is_disconnected_and_memory_stays_bounded() {
    let _turn = heavy();
    let metrics_port = pgmux::cluster::free_port();
    let px = Setup {
        pool_size: 2,
        checkout_timeout: "10s",
        pool_extra: "  notify_queue_size: 2000\n".into(),
        extra: format!("metrics_listen: 127.0.0.1:{metrics_port}\n"),
        ..Default::default()
    }
    .start();
    mt().block_on(async {
        const BATCHES: usize = 50;
        const PER_BATCH: usize = 1000;
        let mut slow = Raw::connect(px.port, "app", "app", "app").await;
        slow.simple("LISTEN ovf_chan").await;
        let mut slow = Some(slow);
        let (c, mut rx) = listener(&px, "nfy_ovf").await;
        c.batch_execute("LISTEN ovf_chan").await.unwrap();
        let rss_before = px.rss_kib();
        let sender = px.connect().await;
        // 50,000 notifications of 2 KB: 100 MB that the slow client does not read.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while got < BATCHES * PER_BATCH {
                match next(&mut rx, Duration::from_secs(30)).await {
                    Some(n) if n.channel == "ovf_chan" => got += 1,
                    other => panic!("after {got}: {other:?}"),
                }
            }
            got
        });
        let adm = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let (mut rss_max, mut slow_reader) = (0, None);
        for _ in 0..BATCHES {
            sender
                .batch_execute(&format!(
                    "select count(pg_notify('ovf_chan', repeat('x', 2000) || g)) from generate_series(1, {PER_BATCH}) g"
                ))
                .await
                .unwrap();
            rss_max = rss_max.max(px.rss_kib());
            // Once pgmux has given up on it, the slow client reads what it was sent:
            // what fitted in the sockets, then FATAL 54000, then the end.
            let (_, rows) = show(&adm, "SHOW LISTENERS").await;
            if slow_reader.is_none() && rows.iter().any(|r| r["database"] == "app" && r["overflowed_clients"] == "1") {
                let mut slow = slow.take().unwrap();
                slow_reader = Some(tokio::spawn(async move {
                    let (mut notes, mut error) = (0, None);
                    while let Some(m) = slow.try_next().await {
                        match m {
                            Msg::Notification { .. } => notes += 1,
                            Msg::Error { code, message } => error = Some((code, message)),
                            other => panic!("{other:?}"),
                        }
                    }
                    (notes, error)
                }));
            }
        }
        assert_eq!(reader.await.unwrap(), BATCHES * PER_BATCH, "the reading listener gets all");
        let (notes, error) = slow_reader.expect("SHOW LISTENERS: overflowed_clients 1").await.unwrap();
        assert!(notes < BATCHES * PER_BATCH, "{notes}");
        let (code, message) = error.expect("the slow client is told why");
        assert_eq!(code, "54000", "{message}");
        assert!(message.contains("notify_queue_size"), "{message}");
        let grown_mb = rss_max.saturating_sub(rss_before) / 1024;
        eprintln!("slow client: {notes} notifications read, then 54000; pgmux RSS grew {grown_mb} MB at most (100 MB sent)");
        assert!(grown_mb < 40, "pgmux's memory grew {grown_mb} MB");
        let (_, body) = common::http_get(metrics_port, "/metrics").await;
        let metric = |name: &str| -> f64 {
            body.lines()
                .find(|l| l.starts_with(name) && l.contains("database=\"app\""))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {body}"))
        };
        assert!(metric("pgmux_notify_dropped_total") >= 1.0);
        assert_eq!(metric("pgmux_notify_overflows_total"), 1.0);
        assert!(metric("pgmux_notify_delivered_total") >= (BATCHES * PER_BATCH) as f64);
        assert_eq!(metric("pgmux_notify_listening_clients"), 1.0);
        assert_eq!(metric("pgmux_notify_channels"), 1.0);
    });
}

/// A listening client that then uses a session-only feature (a temporary table) is
/// pinned, as before: its notifications then come from its own server connection,
/// each still once and in order, across the switch.
#[test]
fn a_listening_client_pinned_later_keeps_its_notifications() {
    let px = setup(3, "").start();
    mt().block_on(async {
        let (c, mut rx) = listener(&px, "nfy_pin").await;
        let sender = px.connect().await;
        c.batch_execute("LISTEN pin_chan").await.unwrap();
        sender.batch_execute("NOTIFY pin_chan, '1'").await.unwrap();
        assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("pin_chan", "1")));
        let burst = tokio::spawn({
            let sender = px.connect().await;
            async move {
                for i in 2..200 {
                    sender.batch_execute(&format!("NOTIFY pin_chan, '{i}'")).await.unwrap();
                }
            }
        });
        c.batch_execute("create temp table t_pin_listen (x int)").await.unwrap();
        burst.await.unwrap();
        sender.batch_execute("NOTIFY pin_chan, '200'").await.unwrap();
        for i in 2..=200 {
            assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("pin_chan", &i.to_string())));
        }
        assert_eq!(next(&mut rx, Duration::from_millis(200)).await, None);
        assert_eq!(scalar(&c, "select count(*) from t_pin_listen").await, "0");
        let adm = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let (_, rows) = show(&adm, "SHOW CHANNELS").await;
        assert!(!rows.iter().any(|r| r["channel"] == "pin_chan"), "the pinned client left the hub: {rows:?}");
    });
}

/// Session mode passes LISTEN straight through: the client's own server connection
/// listens, and pgmux opens no listening connection.
#[test]
fn session_mode_passes_listen_through() {
    let px = Setup { pool_size: 3, mode: "session", ..Default::default() }.start();
    mt().block_on(async {
        let (c, mut rx) = listener(&px, "nfy_session").await;
        c.batch_execute("LISTEN sess_chan").await.unwrap();
        px.connect().await.batch_execute("NOTIFY sess_chan, 'direct'").await.unwrap();
        assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("sess_chan", "direct")));
        let adm = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
        let (_, rows) = show(&adm, "SHOW LISTENERS").await;
        assert!(rows.is_empty(), "{rows:?}");
    });
}

/// Two pgmux instances in front of one database (a fleet needs nothing more): each
/// keeps its own listening connection, and a NOTIFY through either reaches the
/// listeners of both.
#[test]
fn two_instances_each_deliver_to_their_own_listeners() {
    let (a, b) = (setup(2, "").start(), setup(2, "").start());
    mt().block_on(async {
        let mut rxs = vec![];
        for px in [&a, &b] {
            for _ in 0..5 {
                let (c, rx) = listener(px, "nfy_two").await;
                c.batch_execute("LISTEN two_chan").await.unwrap();
                rxs.push((c, rx));
            }
        }
        a.connect().await.batch_execute("NOTIFY two_chan, 'via a'").await.unwrap();
        b.connect().await.batch_execute("NOTIFY two_chan, 'via b'").await.unwrap();
        for (_, rx) in rxs.iter_mut() {
            assert_eq!(next(rx, Duration::from_secs(5)).await, Some(note("two_chan", "via a")));
            assert_eq!(next(rx, Duration::from_secs(5)).await, Some(note("two_chan", "via b")));
        }
        for px in [&a, &b] {
            let adm = px.connect_as("admin", "admin", "pgbouncer").await.unwrap();
            let (_, rows) = show(&adm, "SHOW LISTENERS").await;
            let r = rows.iter().find(|r| r["database"] == "app").unwrap();
            assert_eq!((r["connected"].as_str(), r["clients"].as_str()), ("1", "5"), "{r:?}");
        }
    });
}

/// With read/write routing, `pg_listening_channels()` is sent to the primary (a
/// replica knows nothing of the client's LISTENs), and so is LISTEN.
#[test]
fn pg_listening_channels_goes_to_the_primary_with_routing_on() {
    let px = Setup { pool_size: 2, extra: "routing:\n  read_write_split: true\n  monitor_interval: 100ms\n".into(), ..Default::default() }
        .start();
    mt().block_on(async {
        let (c, mut rx) = listener(&px, "nfy_route").await;
        c.batch_execute("LISTEN route_chan").await.unwrap();
        for _ in 0..5 {
            assert_eq!(scalar(&c, "select string_agg(c, ',') from pg_listening_channels() c").await, "route_chan");
            assert_eq!(scalar(&c, "select 'a read, maybe on a replica'").await, "a read, maybe on a replica");
        }
        px.connect().await.batch_execute("NOTIFY route_chan, 'routed'").await.unwrap();
        assert_eq!(next(&mut rx, Duration::from_secs(5)).await, Some(note("route_chan", "routed")));
    });
}
