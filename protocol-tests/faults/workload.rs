//! The counting workload of the fault suite: writers insert globally unique ids
//! through pgmux and remember which inserts were acknowledged; readers run reads.
//! Every client-visible error is recorded with when it happened; a client whose
//! connection broke connects again.
//!
//! [`check`] then compares the table on the primary (read directly, not through
//! pgmux) with what the clients were told.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// Longer than any timeout of the suite's pgmux configs: an operation that takes
/// this long is a hang.
pub const HANG: Duration = Duration::from_secs(20);
/// A client waits this long after an error before it goes on.
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(50);

/// What an operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Connect,
    Write,
    Read,
}

/// One client-visible error.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: Instant,
    pub op: Op,
    /// SQLSTATE and message, or the driver's error.
    pub what: String,
    /// How long the failed operation took.
    pub took: Duration,
    /// It came inside a transaction the client had begun (after its BEGIN).
    pub in_transaction: bool,
}

impl Failure {
    /// The operation did not finish within [`HANG`].
    pub fn hang(&self) -> bool {
        self.took >= HANG
    }
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Ids whose INSERT (or whose transaction's COMMIT) succeeded.
    pub acked: Vec<i64>,
    /// Ids sent whose outcome the client does not know (an error came).
    pub in_doubt: Vec<i64>,
    pub failures: Vec<Failure>,
    /// Statements and transactions that succeeded.
    pub ok_ops: u64,
    /// The slowest successful operation, and what it was.
    pub slowest: (Duration, &'static str),
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.acked.extend(o.acked);
        self.in_doubt.extend(o.in_doubt);
        self.failures.extend(o.failures);
        self.ok_ops += o.ok_ops;
        self.slowest = self.slowest.max(o.slowest);
    }

    /// Failures of kind `op`.
    pub fn failed(&self, op: Op) -> usize {
        self.failures.iter().filter(|f| f.op == op).count()
    }

    /// Failures of operations that did not overlap `[from, to]` (ended before it or
    /// began after it), described. An operation in flight while the fault lasted
    /// may fail because of it after `to`: a login begun on a frozen server times out
    /// (server_connect_timeout) after it is thawed and the workload is back.
    pub fn failed_outside(&self, from: Instant, to: Instant) -> Vec<String> {
        self.failures.iter().filter(|f| f.at < from || f.at - f.took > to).map(|f| format!("{:?} {}", f.op, f.what)).collect()
    }

    /// The longest any operation took, failed or not.
    pub fn longest(&self) -> Duration {
        self.failures.iter().map(|f| f.took).fold(self.slowest.0, Duration::max)
    }

    pub fn hangs(&self) -> Vec<String> {
        self.failures.iter().filter(|f| f.hang()).map(|f| format!("{:?} {}", f.op, f.what)).collect()
    }

    /// A few failures, for assertion messages.
    pub fn sample(&self) -> String {
        let mut kinds: Vec<String> = self.failures.iter().map(|f| format!("{:?} {}", f.op, f.what)).collect();
        kinds.sort();
        kinds.dedup();
        kinds.truncate(8);
        kinds.join("\n  ")
    }
}

/// Counters the test watches while the workload runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub acked: AtomicU64,
    pub reads: AtomicU64,
    pub failures: AtomicU64,
}

pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    pub progress: Arc<Progress>,
}

/// What a client task does.
#[derive(Clone)]
struct Spec {
    conn: String,
    table: String,
    ids: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
}

impl Workload {
    /// `writers` + `readers` clients of pgmux (`conn`: a libpq connection string)
    /// against `table` (`id bigint, worker int`).
    pub fn start(conn: String, table: &str, writers: usize, readers: usize) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::default());
        let spec = Spec { conn, table: table.into(), ids: Arc::new(AtomicI64::new(1)), stop: stop.clone(), progress: progress.clone() };
        let mut tasks = Vec::new();
        for w in 0..writers {
            tasks.push(tokio::spawn(writer(spec.clone(), w as i32)));
        }
        for _ in 0..readers {
            tasks.push(tokio::spawn(reader(spec.clone())));
        }
        Workload { stop, tasks, progress }
    }

    /// Waits until `n` more inserts are acknowledged (panics after `limit`).
    pub async fn wait_acks(&self, n: u64, limit: Duration) {
        let goal = self.acked() + n;
        let t0 = Instant::now();
        while self.acked() < goal {
            assert!(t0.elapsed() < limit, "the workload did not get {n} more acknowledged inserts within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn acked(&self) -> u64 {
        self.progress.acked.load(Ordering::Relaxed)
    }

    pub fn reads(&self) -> u64 {
        self.progress.reads.load(Ordering::Relaxed)
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Tally::default();
        for t in self.tasks {
            all.merge(t.await.expect("workload task panicked"));
        }
        all
    }
}

/// A client connection, or the failure to get one.
async fn connect(spec: &Spec, tally: &mut Tally) -> Option<Client> {
    let t0 = Instant::now();
    let r = tokio::time::timeout(HANG, tokio_postgres::connect(&spec.conn, tokio_postgres::NoTls)).await;
    let what = match r {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            return Some(client);
        }
        Ok(Err(e)) => describe(&e),
        Err(_) => "connect: no answer".into(),
    };
    fail(spec, tally, Op::Connect, what, t0).await;
    None
}

/// A client with `sql` prepared, or the failure to get one (counted as `op`).
async fn connect_prepared(spec: &Spec, tally: &mut Tally, op: Op, sql: &str) -> Option<(Client, tokio_postgres::Statement)> {
    let c = connect(spec, tally).await?;
    let t0 = Instant::now();
    match tokio::time::timeout(HANG, c.prepare(sql)).await {
        Ok(Ok(st)) => return Some((c, st)),
        Ok(Err(e)) => fail(spec, tally, op, format!("prepare: {}", describe(&e)), t0).await,
        Err(_) => fail(spec, tally, op, "prepare: no answer".into(), t0).await,
    }
    None
}

/// Records a failure of an operation begun at `t0`, then pauses.
async fn fail(spec: &Spec, tally: &mut Tally, op: Op, what: String, t0: Instant) {
    spec.progress.failures.fetch_add(1, Ordering::Relaxed);
    tally.failures.push(Failure { at: Instant::now(), op, what, took: t0.elapsed(), in_transaction: false });
    tokio::time::sleep(PAUSE_AFTER_ERROR).await;
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// Inserts: two of three alone, every third pair in a transaction.
async fn writer(spec: Spec, worker: i32) -> Tally {
    let sql = format!("INSERT INTO {} (id, worker) VALUES ($1, $2)", spec.table);
    let mut tally = Tally::default();
    let mut client: Option<(Client, tokio_postgres::Statement)> = None;
    let mut n = 0u64;
    while !spec.stop.load(Ordering::Relaxed) {
        if client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            client = connect_prepared(&spec, &mut tally, Op::Write, &sql).await;
            continue;
        }
        let (c, insert) = client.as_ref().unwrap();
        n += 1;
        let pair = n % 3 == 0;
        let ids: Vec<i64> = (0..if pair { 2 } else { 1 }).map(|_| spec.ids.fetch_add(1, Ordering::Relaxed)).collect();
        let t0 = Instant::now();
        // The error, and whether it came after the transaction's BEGIN.
        let work = async {
            if pair {
                c.batch_execute("BEGIN").await.map_err(|e| (e, false))?;
                for id in &ids {
                    c.execute(insert, &[id, &worker]).await.map_err(|e| (e, true))?;
                }
                c.batch_execute("COMMIT").await.map_err(|e| (e, true))
            } else {
                c.execute(insert, &[&ids[0], &worker]).await.map(drop).map_err(|e| (e, false))
            }
        };
        match tokio::time::timeout(HANG, work).await {
            Ok(Ok(())) => {
                tally.slowest = tally.slowest.max((t0.elapsed(), if pair { "insert transaction" } else { "insert" }));
                tally.ok_ops += 1;
                spec.progress.acked.fetch_add(ids.len() as u64, Ordering::Relaxed);
                tally.acked.extend(ids);
            }
            Ok(Err((e, in_transaction))) => {
                tally.in_doubt.extend(ids);
                if pair && !c.is_closed() {
                    let _ = tokio::time::timeout(HANG, c.batch_execute("ROLLBACK")).await;
                }
                fail(&spec, &mut tally, Op::Write, describe(&e), t0).await;
                tally.failures.last_mut().expect("just pushed").in_transaction = in_transaction;
            }
            Err(_) => {
                tally.in_doubt.extend(ids);
                client = None;
                fail(&spec, &mut tally, Op::Write, format!("no answer within {HANG:?}"), t0).await;
            }
        }
    }
    tally
}

/// Reads of ids written so far (routed to replicas when routing is on).
async fn reader(spec: Spec) -> Tally {
    let sql = format!("SELECT count(*) FROM {} WHERE id = $1", spec.table);
    let mut tally = Tally::default();
    let mut client: Option<(Client, tokio_postgres::Statement)> = None;
    let mut n = 0i64;
    while !spec.stop.load(Ordering::Relaxed) {
        if client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            client = connect_prepared(&spec, &mut tally, Op::Read, &sql).await;
            continue;
        }
        let (c, select) = client.as_ref().unwrap();
        n += 7919;
        let id = n % spec.ids.load(Ordering::Relaxed).max(1);
        let t0 = Instant::now();
        match tokio::time::timeout(HANG, c.query_one(select, &[&id])).await {
            Ok(Ok(_)) => {
                tally.slowest = tally.slowest.max((t0.elapsed(), "read"));
                tally.ok_ops += 1;
                spec.progress.reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => fail(&spec, &mut tally, Op::Read, describe(&e), t0).await,
            Err(_) => {
                client = None;
                fail(&spec, &mut tally, Op::Read, format!("no answer within {HANG:?}"), t0).await;
            }
        }
    }
    tally
}

/// What the table holds, compared with what clients were told.
#[derive(Debug)]
pub struct Checked {
    pub rows: i64,
    pub distinct: i64,
    /// Acknowledged ids not in the table.
    pub lost: Vec<i64>,
    /// Ids in the table no client sent (or whose transaction was not acknowledged
    /// nor in doubt).
    pub unexpected: Vec<i64>,
    /// In-doubt ids that were committed after all.
    pub in_doubt_committed: usize,
}

/// Reads `table` on the primary (`admin`: a direct superuser connection).
pub async fn check(admin: &Client, table: &str, tally: &Tally) -> Checked {
    let row = admin.query_one(&format!("SELECT count(*), count(DISTINCT id) FROM {table}"), &[]).await.unwrap();
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    let ids: HashSet<i64> = admin.query(&format!("SELECT id FROM {table}"), &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let acked: HashSet<i64> = tally.acked.iter().copied().collect();
    let doubt: HashSet<i64> = tally.in_doubt.iter().copied().collect();
    let mut lost: Vec<i64> = acked.difference(&ids).copied().collect();
    lost.sort();
    let mut unexpected: Vec<i64> = ids.iter().filter(|i| !acked.contains(i) && !doubt.contains(i)).copied().collect();
    unexpected.sort();
    let in_doubt_committed = doubt.intersection(&ids).count();
    Checked { rows, distinct, lost, unexpected, in_doubt_committed }
}
