//! Pools and shared limits against a fake server that logs anyone in and answers
//! empty queries, counting its open connections.

use super::*;
use crate::config::ServerAddr;
use affinity::AFFINITY_SLACK;
use std::sync::atomic::AtomicUsize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A fake PostgreSQL: trust login, `EmptyQueryResponse` to any query. `open` counts
/// connections it has not seen closed; with `hang`, it never answers the login.
struct Fake {
    addr: ServerAddr,
    open: Arc<AtomicUsize>,
}

async fn fake(hang: bool) -> Fake {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = ServerAddr { host: "127.0.0.1".into(), port: l.local_addr().unwrap().port() };
    let open = Arc::new(AtomicUsize::new(0));
    let count = open.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let count = count.clone();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = serve(&mut s, hang).await;
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Fake { addr, open }
}

async fn serve(s: &mut tokio::net::TcpStream, hang: bool) -> std::io::Result<()> {
    let len = s.read_u32().await? as usize;
    let mut startup = vec![0; len - 4];
    s.read_exact(&mut startup).await?;
    if hang {
        let mut sink = [0u8; 64];
        while s.read(&mut sink).await? > 0 {}
        return Ok(());
    }
    s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'K', 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 2, b'Z', 0, 0, 0, 5, b'I']).await?;
    loop {
        let tag = s.read_u8().await?;
        let len = s.read_u32().await? as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await?;
        match tag {
            b'Q' => s.write_all(&[b'I', 0, 0, 0, 4, b'Z', 0, 0, 0, 5, b'I']).await?,
            b'X' => return Ok(()),
            _ => {}
        }
    }
}

fn settings(size: usize) -> PoolSettings {
    PoolSettings {
        size,
        checkout_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(600),
        lifetime: Duration::from_secs(3600),
        connect_timeout: Duration::from_secs(2),
        check_delay: Duration::from_secs(30),
        max_prepared_statements: 8,
        min_size: 0,
        reserve_size: 0,
        reserve_timeout: Duration::from_secs(5),
    }
}

fn pool(addr: &ServerAddr, db: &str, user: &str, settings: PoolSettings, limits: &[&Arc<Limit>]) -> Arc<Pool> {
    let target = ServerTarget {
        addr: addr.clone(),
        dbname: db.into(),
        user: user.into(),
        password: None,
        keys: Default::default(),
        tls: Default::default(),
        application_name: None,
    };
    let metrics = crate::metrics::Metrics::new().pool(db, user, &addr.to_string(), "primary");
    Pool::new(target, settings, metrics, "primary", limits.iter().map(|l| (*l).clone()).collect())
}

fn db_limit(f: &Fake, max: usize) -> Arc<Limit> {
    Limit::new(LimitKind::Database, "d", &f.addr, max)
}

fn user_limit(f: &Fake, name: &str, max: usize) -> Arc<Limit> {
    Limit::new(LimitKind::User, name, &f.addr, max)
}

/// Waits until `cond` holds (the fake server sees closes a moment later).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn is_waiting(p: &Arc<Pool>) {
    eventually("a client waits", || p.status().waiting == 1).await;
}

#[tokio::test]
async fn a_database_limit_holds_clients_of_another_user_until_a_connection_goes_idle() {
    let f = fake(false).await;
    let d = db_limit(&f, 2);
    let (a, b) = (pool(&f.addr, "d", "a", settings(5), &[&d]), pool(&f.addr, "d", "b", settings(5), &[&d]));
    let (l1, l2) = (a.checkout().await.unwrap(), a.checkout().await.unwrap());
    assert_eq!((d.used(), f.open.load(Ordering::SeqCst)), (2, 2));
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.checkout().await.map(|l| l.release()) });
    is_waiting(&b).await;
    assert!(d.contended());
    // A connection going idle in a's pool is closed to make room for b's client.
    l1.release();
    waiter.await.unwrap().unwrap();
    assert_eq!((a.status().total, b.status().total, d.used()), (1, 1, 2));
    assert_eq!((b.status().waiting, d.contended()), (0, false));
    l2.release();
    eventually("server sees 2", || f.open.load(Ordering::SeqCst) == 2).await;
}

#[tokio::test]
async fn idle_connections_of_other_pools_are_closed_at_once_for_a_waiter() {
    let f = fake(false).await;
    let d = db_limit(&f, 2);
    let (a, b) = (pool(&f.addr, "d", "a", settings(5), &[&d]), pool(&f.addr, "d", "b", settings(5), &[&d]));
    let (l1, l2) = (a.checkout().await.unwrap(), a.checkout().await.unwrap());
    l1.release();
    l2.release();
    assert_eq!((a.status().idle, d.used()), (2, 2));
    let t0 = Instant::now();
    let (m1, m2) = (b.checkout().await.unwrap(), b.checkout().await.unwrap());
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!((a.status().total, b.status().total, d.used()), (0, 2, 2));
    drop((m1, m2));
    assert_eq!(d.used(), 0, "dropped leases give their units back");
    eventually("server sees none", || f.open.load(Ordering::SeqCst) == 0).await;
}

#[tokio::test]
async fn a_discarded_connection_lets_the_other_pools_waiter_open_one() {
    let f = fake(false).await;
    let u = user_limit(&f, "u", 1);
    let (a, b) = (pool(&f.addr, "d1", "u", settings(3), &[&u]), pool(&f.addr, "d2", "u", settings(3), &[&u]));
    let held = a.checkout().await.unwrap();
    let b2 = b.clone();
    let waiter = tokio::spawn(async move { b2.checkout().await });
    is_waiting(&b).await;
    held.discard();
    let lease = waiter.await.unwrap().unwrap();
    assert_eq!((a.status().total, b.status().total, u.used()), (0, 1, 1));
    drop(lease);
    assert_eq!(u.used(), 0);
}

#[tokio::test]
async fn waiters_time_out_with_53300_and_nothing_leaks() {
    let f = fake(false).await;
    let d = db_limit(&f, 1);
    let mut s = settings(4);
    s.checkout_timeout = Duration::from_millis(200);
    let (a, b) = (pool(&f.addr, "d", "a", s.clone(), &[&d]), pool(&f.addr, "d", "b", s, &[&d]));
    let held = a.checkout().await.unwrap();
    let t0 = Instant::now();
    let e = b.checkout().await.err().expect("times out");
    assert!(matches!(e, ClientError::CheckoutTimeout { .. }), "{e:?}");
    assert!(t0.elapsed() >= Duration::from_millis(190));
    // A client whose task goes away while waiting leaves no entry behind.
    let b2 = b.clone();
    let gone = tokio::spawn(async move { b2.checkout().await.map(drop) });
    is_waiting(&b).await;
    gone.abort();
    let _ = gone.await;
    assert_eq!((b.status().waiting, b.status().total, d.used()), (0, 0, 1));
    assert!(!d.contended());
    drop(held);
    assert_eq!(d.used(), 0);
}

/// Waits for a checkout of `p` in a task; the time from `t0` to its timeout.
fn timed_checkout(p: &Arc<Pool>, t0: Instant) -> tokio::task::JoinHandle<Option<Duration>> {
    let p = p.clone();
    tokio::spawn(async move {
        match p.checkout().await {
            Err(ClientError::CheckoutTimeout { .. }) => Some(t0.elapsed()),
            _ => None,
        }
    })
}

#[tokio::test]
async fn each_waiter_expires_after_its_own_timeout_and_a_reload_shortens_it() {
    let f = fake(false).await;
    let mut s = settings(1);
    s.checkout_timeout = Duration::from_millis(300);
    let p = pool(&f.addr, "d", "a", s.clone(), &[]);
    let held = p.checkout().await.unwrap();
    let t0 = Instant::now();
    let first = timed_checkout(&p, t0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = timed_checkout(&p, t0);
    let a = first.await.unwrap().expect("the first waiter times out");
    let b = second.await.unwrap().expect("the second waiter times out");
    assert!(a >= Duration::from_millis(300) && a < Duration::from_millis(700), "{a:?}");
    assert!(b >= Duration::from_millis(450) && b < Duration::from_millis(850), "{b:?}");
    // A reload that shortens the timeout applies to clients already waiting.
    s.checkout_timeout = Duration::from_secs(30);
    p.update_settings(s.clone());
    let t1 = Instant::now();
    let third = timed_checkout(&p, t1);
    is_waiting(&p).await;
    s.checkout_timeout = Duration::from_millis(100);
    p.update_settings(s);
    let c = third.await.unwrap().expect("the third waiter times out");
    assert!(c < Duration::from_secs(2), "{c:?}");
    assert_eq!((p.status().waiting, p.counters.timeouts.load(Ordering::Relaxed)), (0, 3));
    drop(held);
}

#[tokio::test]
async fn a_checkout_abandoned_during_login_frees_its_slot() {
    let f = fake(true).await;
    let d = db_limit(&f, 1);
    let a = pool(&f.addr, "d", "a", settings(2), &[&d]);
    let a2 = a.clone();
    let t = tokio::spawn(async move { a2.checkout().await.map(drop) });
    eventually("logging in", || d.used() == 1).await;
    t.abort();
    let _ = t.await;
    assert_eq!((a.status().total, d.used()), (0, 0));
}

#[tokio::test]
async fn a_pool_blocked_by_both_limits_gets_room_from_both() {
    let f = fake(false).await;
    let (d, d2) = (db_limit(&f, 1), Limit::new(LimitKind::Database, "d2", &f.addr, 0));
    let (u, u2) = (user_limit(&f, "u", 1), user_limit(&f, "u2", 0));
    // (d, u2) holds d's unit, (d2, u) holds u's unit, both idle; (d, u) wants one.
    let x = pool(&f.addr, "d", "u2", settings(2), &[&d, &u2]);
    let y = pool(&f.addr, "d2", "u", settings(2), &[&d2, &u]);
    let want = pool(&f.addr, "d", "u", settings(2), &[&d, &u]);
    x.checkout().await.unwrap().release();
    y.checkout().await.unwrap().release();
    let lease = tokio::time::timeout(Duration::from_secs(2), want.checkout()).await.expect("no wait").unwrap();
    assert_eq!((x.status().total, y.status().total, d.used(), u.used()), (0, 0, 1, 1));
    drop(lease);
}

#[tokio::test]
async fn raising_a_limit_lets_waiters_proceed_and_lowering_one_shrinks() {
    let f = fake(false).await;
    let d = db_limit(&f, 1);
    let a = pool(&f.addr, "d", "a", settings(5), &[&d]);
    let held = a.checkout().await.unwrap();
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let a2 = a.clone();
        waiters.push(tokio::spawn(async move { a2.checkout().await }));
    }
    eventually("two wait", || a.status().waiting == 2).await;
    d.set_max(3);
    limit::wake(std::slice::from_ref(&d));
    let mut leases = Vec::new();
    for w in waiters {
        leases.push(w.await.unwrap().unwrap());
    }
    assert_eq!((a.status().total, d.used()), (3, 3));
    // Lowered: connections coming back close until the limit holds.
    d.set_max(1);
    leases.into_iter().for_each(Lease::release);
    assert_eq!((a.status().total, a.status().idle, d.used()), (1, 0, 1));
    held.release();
    assert_eq!((a.status().idle, d.used()), (1, 1));
}

#[tokio::test]
async fn a_grown_pool_size_is_still_bounded_by_the_limit() {
    let f = fake(false).await;
    let d = db_limit(&f, 2);
    let a = pool(&f.addr, "d", "a", settings(1), &[&d]);
    let held = a.checkout().await.unwrap();
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let a2 = a.clone();
        waiters.push(tokio::spawn(async move { a2.checkout().await }));
    }
    eventually("two wait", || a.status().waiting == 2).await;
    a.update_settings(settings(5));
    let first = waiters.remove(0).await.unwrap().unwrap();
    assert_eq!((a.status().total, a.status().waiting, d.used()), (2, 1, 2));
    drop(first);
    waiters.remove(0).await.unwrap().unwrap().release();
    held.release();
    assert_eq!((a.status().total, d.used()), (2, 2));
}

#[tokio::test]
async fn min_pool_size_stops_at_the_limit_and_a_dropped_pool_gives_its_units_back() {
    let f = fake(false).await;
    let d = db_limit(&f, 2);
    let mut s = settings(5);
    s.min_size = 4;
    let a = pool(&f.addr, "d", "a", s, &[&d]);
    a.warm().await;
    assert_eq!((a.status().idle, d.used()), (2, 2));
    drop(a);
    assert_eq!(d.used(), 0);
    eventually("server sees none", || f.open.load(Ordering::SeqCst) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_of_three_pools_never_exceed_the_limit_and_nothing_leaks() {
    let f = fake(false).await;
    let d = db_limit(&f, 3);
    let pools: Vec<Arc<Pool>> = ["a", "b", "c"].iter().map(|u| pool(&f.addr, "d", u, settings(3), &[&d])).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let (d, stop) = (d.clone(), stop.clone());
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.load(Ordering::SeqCst) {
                max = max.max(d.used());
                tokio::task::yield_now().await;
            }
            max
        })
    };
    let mut tasks = Vec::new();
    for i in 0..30usize {
        let p = pools[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            let mut served = 0;
            for j in 0..20usize {
                let hold = Duration::from_micros(((i * 7 + j * 13) % 5) as u64 * 300);
                match (i + j) % 7 {
                    // A client that gives up waiting (its task goes away).
                    0 => {
                        let _ = tokio::time::timeout(Duration::from_millis(1), p.checkout()).await;
                    }
                    1 => {
                        let l = p.checkout().await.unwrap();
                        tokio::time::sleep(hold).await;
                        l.discard();
                        served += 1;
                    }
                    _ => {
                        let l = p.checkout().await.unwrap();
                        tokio::time::sleep(hold).await;
                        l.release();
                        served += 1;
                    }
                }
            }
            served
        }));
    }
    let mut served = 0;
    for t in tasks {
        served += t.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    assert!(watch.await.unwrap() <= 3);
    assert!(served > 400, "{served}");
    let totals: usize = pools.iter().map(|p| p.status().total).sum();
    assert_eq!(d.used(), totals, "units follow the connections");
    assert!(pools.iter().all(|p| p.status().waiting == 0));
    assert!(!d.has_waiters());
    assert_eq!(pools.iter().map(|p| p.status().idle).sum::<usize>(), totals, "nothing lent out or opening");
}

#[tokio::test]
async fn clients_failing_to_connect_at_once_are_one_failed_attempt() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let p = pool(&ServerAddr { host: "127.0.0.1".into(), port }, "d", "a", settings(10), &[]);
    let tries: Vec<_> = (0..10)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.checkout().await.map(drop) })
        })
        .collect();
    for t in tries {
        assert!(matches!(t.await.unwrap(), Err(ClientError::ServerUnavailable { .. })));
    }
    // The next attempt comes after the first step of the backoff, not the tenth.
    let st = p.lock();
    let down = st.down.as_ref().unwrap();
    assert_eq!(down.failures, 1);
    assert!(down.retry_at <= Instant::now() + BACKOFF_START);
}

/// Checks out on `p` as a client of worker `w` would (the worker number is
/// per thread, and these tests run on one).
async fn checkout_as(p: &Arc<Pool>, w: u16) -> Lease {
    crate::worker::set(w);
    let l = p.checkout().await.unwrap();
    crate::worker::set(0);
    l
}

/// A client waiting on `p` as a client of worker `w`, queued when this returns;
/// when it gets a connection it writes `w` in `order` and gives it back.
async fn wait_as(p: &Arc<Pool>, w: u16, order: &Arc<Mutex<Vec<u16>>>) -> tokio::task::JoinHandle<()> {
    let before = p.status().waiting;
    crate::worker::set(w);
    let (p2, order) = (p.clone(), order.clone());
    let h = tokio::spawn(async move {
        let l = p2.checkout().await.unwrap();
        order.lock().unwrap().push(w);
        l.release();
    });
    // The task reads the worker number when it queues, on this same thread (no
    // sleeping here: the slack between the two waiters is the test's to set).
    for _ in 0..1000 {
        if p.status().waiting == before + 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(p.status().waiting, before + 1, "queued");
    crate::worker::set(0);
    h
}

#[tokio::test]
async fn a_client_is_lent_a_connection_of_its_own_worker_first() {
    let f = fake(false).await;
    let p = pool(&f.addr, "d", "a", settings(2), &[]);
    let (one, two) = (checkout_as(&p, 1).await, checkout_as(&p, 2).await);
    assert_eq!((one.conn().home, two.conn().home), (1, 2));
    one.release();
    two.release();
    // Worker 2's is the most recently used, but worker 1's client gets its own.
    let again = checkout_as(&p, 1).await;
    assert_eq!(again.conn().home, 1);
    // A worker with none idle takes another's, and its socket moves to that worker.
    let mut other = checkout_as(&p, 3).await;
    assert_eq!((other.conn().home, p.status().total), (3, 2));
    other.conn_mut().run_checked("", Duration::from_secs(2), crate::server::After::Idle).await.expect("works after the move");
    again.release();
    other.release();
}

#[tokio::test]
async fn a_returned_connection_goes_to_a_waiter_of_its_worker_unless_another_waited_much_longer() {
    let f = fake(false).await;
    let p = pool(&f.addr, "d", "a", settings(1), &[]);
    let order = Arc::new(Mutex::new(Vec::new()));
    let held = checkout_as(&p, 1).await;
    let (of_2, of_1) = (wait_as(&p, 2, &order).await, wait_as(&p, 1, &order).await);
    // Worker 1's waiter came second, but within the slack: it gets worker 1's connection.
    held.release();
    of_1.await.unwrap();
    of_2.await.unwrap();
    assert_eq!(*order.lock().unwrap(), [1, 2]);
    // Once the first waiter has waited past the slack, order wins.
    order.lock().unwrap().clear();
    let held = checkout_as(&p, 1).await;
    let of_2 = wait_as(&p, 2, &order).await;
    tokio::time::sleep(AFFINITY_SLACK * 3).await;
    let of_1 = wait_as(&p, 1, &order).await;
    held.release();
    of_2.await.unwrap();
    of_1.await.unwrap();
    assert_eq!(*order.lock().unwrap(), [2, 1], "the longest waiter first");
    assert_eq!(p.status().waiting, 0);
}

#[tokio::test]
async fn a_connection_idle_for_a_second_frees_its_read_buffer_and_reads_again_when_lent() {
    let f = fake(false).await;
    let p = pool(&f.addr, "d", "a", settings(2), &[]);
    let lease = p.checkout().await.unwrap();
    lease.release_at(Instant::now() - Duration::from_secs(5));
    let read_buffers = || p.lock().idle.iter().map(|c| c.to_client.capacity()).collect::<Vec<_>>();
    assert!(read_buffers()[0] > 0, "a fresh connection has its login's read buffer");
    p.reap();
    assert_eq!(read_buffers(), [0], "idle for 5 s: the buffer is given back");
    let mut lease = p.checkout().await.unwrap();
    let conn = lease.conn_mut();
    conn.make_room();
    assert_eq!(conn.to_client.capacity(), crate::net::buffers::Buffers::Server.size(), "a spare buffer when it reads again");
    let done = conn.run_internal("", Duration::from_secs(2)).await;
    assert!(done.is_ok(), "the connection still answers: {:?}", done.err());
    lease.release();
    p.reap();
    assert!(read_buffers()[0] > 0, "just used: the buffer stays");
}
