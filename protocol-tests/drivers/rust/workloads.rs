//! The Rust drivers' workloads, tokio-postgres and sqlx, run inside the test process by
//! `drivers.rs` (the other drivers' workloads are subprocesses). Like those, several
//! clients share pgmux's pool of 2 with read/write routing on, each client's writes run
//! outside explicit transactions as well as inside, every result is checked, every
//! committed row is read back on the primary (directly, not through pgmux), and a client
//! must have run on more than one server connection when `expect_spread` is set.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;
use tokio_postgres::types::ToSql;

/// Where a workload connects.
#[derive(Clone)]
pub struct Where {
    pub port: u16,
    pub pool_size: usize,
    pub expect_spread: bool,
}

impl Where {
    fn conn_str(&self, app: &str) -> String {
        format!("host=127.0.0.1 port={} user=app password=app dbname=app connect_timeout=10 application_name={app}", self.port)
    }

    fn url(&self, app: &str) -> String {
        format!("postgres://app:app@127.0.0.1:{}/app?application_name={app}", self.port)
    }
}

/// What a workload found: the summary line, and failures (empty if it passed).
pub struct Found {
    pub summary: String,
    pub failures: Vec<String>,
}

/// Collects failures from tasks, counts queries, remembers the backend pids of each client.
#[derive(Default)]
struct Report {
    queries: AtomicUsize,
    failures: Mutex<Vec<String>>,
    pids: Mutex<HashMap<String, HashSet<i32>>>,
    /// (client, what) -> (rows, sum of v) committed.
    committed: Mutex<HashMap<(i32, String), (i64, i64)>>,
}

impl Report {
    fn count(&self, n: usize) {
        self.queries.fetch_add(n, Ordering::Relaxed);
    }

    fn saw_pid(&self, client: &str, pid: i32) {
        self.pids.lock().unwrap().entry(client.to_string()).or_default().insert(pid);
    }

    fn failed(&self, place: &str, e: impl Display) {
        self.failures.lock().unwrap().push(format!("{place}: {e}"));
    }

    fn committed(&self, client: i32, how: &str, v: i64) {
        let mut c = self.committed.lock().unwrap();
        let e = c.entry((client, how.to_string())).or_default();
        e.0 += 1;
        e.1 += v;
    }

    fn spread(&self) -> (usize, usize) {
        let pids = self.pids.lock().unwrap();
        let counts: Vec<usize> = pids.values().map(HashSet::len).collect();
        (counts.iter().copied().min().unwrap_or(0), counts.iter().copied().max().unwrap_or(0))
    }

    fn finish(&self, at: &Where, summary: String) -> Found {
        let (lo, hi) = self.spread();
        let mut failures = self.failures.lock().unwrap().clone();
        if failures.is_empty() && at.expect_spread && hi < 2 {
            failures.push(format!(
                "no client saw more than one server connection (backends per client {lo}..{hi}): \
                 the workload did not exercise statement reuse across server connections"
            ));
        }
        let queries = self.queries.load(Ordering::Relaxed);
        Found { summary: format!("{summary}: {queries} queries ok; backends per client {lo}..{hi}"), failures }
    }
}

fn expect<T: PartialEq + std::fmt::Debug>(got: T, want: T, what: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, expected {want:?}"))
    }
}

/// A tokio-postgres error with its SQLSTATE.
fn pg_err(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}: {} (SQLSTATE {})", d.severity(), d.code().code(), d.message(), d.code().code()),
        None => e.to_string(),
    }
}

/// A superuser connection straight to the primary: where committed rows are counted.
async fn primary() -> tokio_postgres::Client {
    crate::common::direct(crate::common::cluster().primary.port).await
}

async fn connect(at: &Where, app: &str) -> Result<tokio_postgres::Client, String> {
    let (c, conn) = tokio_postgres::connect(&at.conn_str(app), tokio_postgres::NoTls).await.map_err(pg_err)?;
    tokio::spawn(conn);
    Ok(c)
}

/// Creates `table` through the endpoint; waits until new clients see it (a new client's
/// read may go to a replica that has not replayed the creation yet).
async fn create_table(at: &Where, table: &str) -> Result<(), String> {
    let c = connect(at, "drv_setup").await?;
    c.batch_execute(&format!(
        "drop table if exists {table}; create table {table} (client int not null, i int not null, v int8 not null, how text not null)"
    ))
    .await
    .map_err(pg_err)?;
    // Reads go round robin over the replicas: 6 new clients in a row must see it.
    let mut seen = 0;
    for _ in 0..200 {
        let c = connect(at, "drv_setup").await?;
        let row = c.query_one("select to_regclass($1) is not null", &[&table]).await.map_err(pg_err)?;
        seen = if row.get::<_, bool>(0) { seen + 1 } else { 0 };
        if seen >= 6 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("table {table} not visible to new connections after 10 s"))
}

/// Every write the report counted is on the primary, committed exactly once; nothing else.
async fn check_committed(report: &Report, table: &str) -> Result<(), String> {
    let rows = primary()
        .await
        .query(&format!("select client, how, count(*), sum(v)::int8 from {table} group by client, how"), &[])
        .await
        .map_err(pg_err)?;
    let got: HashMap<(i32, String), (i64, i64)> = rows.iter().map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3)))).collect();
    let want = report.committed.lock().unwrap().clone();
    let mut keys: Vec<_> = got.keys().chain(want.keys()).cloned().collect::<HashSet<_>>().into_iter().collect();
    keys.sort();
    for k in keys {
        expect(got.get(&k), want.get(&k), &format!("rows committed on the primary by client {} ({}) [count, sum]", k.0, k.1))?;
    }
    report.count(1);
    Ok(())
}

/// After the workload, with every client gone, `pool_size` new clients each get a
/// transaction at once: no server connection was kept by a client that left.
async fn pool_is_whole(at: &Where, report: &Report) -> Result<(), String> {
    let mut conns = vec![];
    for _ in 0..at.pool_size {
        conns.push(connect(at, "drv_after").await?);
    }
    let mut pids = HashSet::new();
    for (k, c) in conns.iter().enumerate() {
        let pid = tokio::time::timeout(Duration::from_secs(3), async {
            c.batch_execute("begin").await?;
            c.query_one("select pg_backend_pid()", &[]).await
        })
        .await
        .map_err(|_| format!("new client {} of {} got no transaction within 3 s", k + 1, at.pool_size))?
        .map_err(pg_err)?;
        pids.insert(pid.get::<_, i32>(0));
        report.count(1);
    }
    expect(pids.len(), at.pool_size, &format!("{} new clients each in a transaction: distinct server connections", at.pool_size))?;
    for c in &conns {
        c.batch_execute("commit").await.map_err(pg_err)?;
    }
    Ok(())
}

const CLIENTS: i32 = 4;
const ITERATIONS: i32 = 30;
const COPY_ROWS: i64 = 20;

const TP_TABLE: &str = "drv_tokio_postgres";

/// tokio-postgres: statements prepared once and reused (Parse/Describe/Sync, then
/// Bind/Execute/Sync), statements prepared by each call, pipelined requests (several on
/// the wire before the first answer), transactions and COPY FROM STDIN; writes outside
/// explicit transactions throughout.
pub async fn tokio_postgres(at: Where) -> Found {
    let report = Arc::new(Report::default());
    match create_table(&at, TP_TABLE).await {
        Err(e) => report.failed("setup", e),
        Ok(()) => {
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|t| {
                    let (at, report) = (at.clone(), report.clone());
                    tokio::spawn(async move {
                        if let Err(e) = tokio_postgres_client(&at, &report, t).await {
                            report.failed(&format!("client {t}"), e);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            if report.failures.lock().unwrap().is_empty() {
                if let Err(e) = check_committed(&report, TP_TABLE).await {
                    report.failed("after the workload", e);
                }
                if let Err(e) = pool_is_whole(&at, &report).await {
                    report.failed("after the workload, with every client gone", e);
                }
            }
        }
    }
    report.finish(
        &at,
        format!(
            "tokio-postgres: {CLIENTS} clients x {ITERATIONS} iterations of prepared and per-call statements, pipelined \
             writes and reads outside transactions, transactions, COPY FROM STDIN"
        ),
    )
}

async fn tokio_postgres_client(at: &Where, report: &Report, t: i32) -> Result<(), String> {
    let name = format!("client {t}");
    let mut c = connect(at, &format!("drv_tokio_postgres_{t}")).await?;
    let ins_sql = format!("insert into {TP_TABLE} (client, i, v, how) values ($1, $2, $3, $4)");
    let add_sql = "select $1::int4 + $2::int4, pg_backend_pid()";
    // A different first-prepared statement on alternate clients: tokio-postgres's names
    // (s0, s1, ...) mean different SQL on different clients.
    let (ins, add) = if t % 2 == 0 {
        let ins = c.prepare(&ins_sql).await.map_err(pg_err)?;
        (ins, c.prepare(add_sql).await.map_err(pg_err)?)
    } else {
        let add = c.prepare(add_sql).await.map_err(pg_err)?;
        (c.prepare(&ins_sql).await.map_err(pg_err)?, add)
    };
    for i in 0..ITERATIONS {
        let label = format!("client {t} iteration {i}");
        let v = i64::from(i);
        // A prepared write and a prepared read, outside any transaction.
        expect(c.execute(&ins, &[&t, &i, &v, &"prepared"]).await.map_err(pg_err)?, 1, &format!("{label}: prepared insert"))?;
        report.committed(t, "prepared", v);
        let row = c.query_one(&add, &[&i, &t]).await.map_err(pg_err)?;
        expect(row.get::<_, i32>(0), i + t, &format!("{label}: prepared read"))?;
        report.saw_pid(&name, row.get(1));
        // Prepared by the call itself (then closed by tokio-postgres).
        let n = c
            .execute(&format!("insert into {TP_TABLE} (client, i, v, how) values ($1, $2, $3, 'per call')"), &[&t, &i, &(v + 100)])
            .await
            .map_err(pg_err)?;
        expect(n, 1, &format!("{label}: insert prepared by the call"))?;
        report.committed(t, "per call", v + 100);
        // Pipelined: three requests sent before the first answer, writes and a read.
        let (v200, v300, one) = (v + 200, v + 300, 1i32);
        let first: [&(dyn ToSql + Sync); 4] = [&t, &i, &v200, &"pipelined"];
        let read: [&(dyn ToSql + Sync); 2] = [&i, &one];
        let second: [&(dyn ToSql + Sync); 4] = [&t, &i, &v300, &"pipelined"];
        let (a, row, b) =
            futures_util::try_join!(c.execute(&ins, &first), c.query_one(&add, &read), c.execute(&ins, &second)).map_err(pg_err)?;
        expect((a, b, row.get::<_, i32>(0)), (1, 1, i + 1), &format!("{label}: pipelined writes and read"))?;
        report.committed(t, "pipelined", v + 200);
        report.committed(t, "pipelined", v + 300);
        report.saw_pid(&name, row.get(1));
        report.count(6);
        if i % 3 == 0 {
            let rollback = i % 9 == 6;
            let tx = c.transaction().await.map_err(pg_err)?;
            tx.execute(&ins, &[&t, &i, &(v + 1000), &"transaction"]).await.map_err(pg_err)?;
            let n: i64 = tx
                .query_one(&format!("select count(*) from {TP_TABLE} where client = $1 and i = $2 and how = 'transaction'"), &[&t, &i])
                .await
                .map_err(pg_err)?
                .get(0);
            expect(n, 1, &format!("{label}: the transaction sees its write"))?;
            if rollback {
                tx.rollback().await.map_err(pg_err)?;
            } else {
                tx.commit().await.map_err(pg_err)?;
                report.committed(t, "transaction", v + 1000);
            }
            report.count(2);
        }
        if i % 5 == 4 {
            let sink = c.copy_in(&format!("copy {TP_TABLE} (client, i, v, how) from stdin")).await.map_err(pg_err)?;
            let mut sink = Box::pin(sink);
            let data: String = (0..COPY_ROWS).map(|k| format!("{t}\t{i}\t{k}\tcopy\n")).collect();
            sink.send(bytes::Bytes::from(data)).await.map_err(pg_err)?;
            let n = sink.as_mut().finish().await.map_err(pg_err)?;
            expect(n, COPY_ROWS as u64, &format!("{label}: COPY FROM STDIN rows"))?;
            for k in 0..COPY_ROWS {
                report.committed(t, "copy", k);
            }
            report.count(1);
        }
    }
    Ok(())
}

const SQLX_TABLE: &str = "drv_sqlx";
const SQLX_POOL: u32 = 6;
const SQLX_POOL_TASKS: i32 = 60;

fn sqlx_err(e: sqlx::Error) -> String {
    match e.as_database_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().unwrap_or_default()),
        None => e.to_string(),
    }
}

/// sqlx: its statement cache (named statements; a capacity of 2 on some clients, so it
/// closes the statements it evicts), `persistent(false)` (the unnamed statement),
/// transactions and `copy_in_raw` on connections of their own; then a pool of
/// SQLX_POOL connections under load mixing writes and reads. Writes outside explicit
/// transactions throughout.
pub async fn sqlx(at: Where) -> Found {
    let report = Arc::new(Report::default());
    match create_table(&at, SQLX_TABLE).await {
        Err(e) => report.failed("setup", e),
        Ok(()) => {
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|t| {
                    let (at, report) = (at.clone(), report.clone());
                    tokio::spawn(async move {
                        if let Err(e) = sqlx_client(&at, &report, t).await {
                            report.failed(&format!("client {t}"), e);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            if let Err(e) = sqlx_pool(&at, &report).await {
                report.failed("pool", e);
            }
            if report.failures.lock().unwrap().is_empty() {
                if let Err(e) = check_committed(&report, SQLX_TABLE).await {
                    report.failed("after the workload", e);
                }
                if let Err(e) = pool_is_whole(&at, &report).await {
                    report.failed("after the workload, with every client gone", e);
                }
            }
        }
    }
    report.finish(
        &at,
        format!(
            "sqlx: {CLIENTS} connections x {ITERATIONS} iterations (statement cache, cache of 2, persistent(false), \
             transactions, copy_in_raw), writes outside transactions; a pool of {SQLX_POOL}: {SQLX_POOL_TASKS} tasks \
             of writes and reads"
        ),
    )
}

async fn sqlx_client(at: &Where, report: &Report, t: i32) -> Result<(), String> {
    use sqlx::{Connection, Row};
    let name = format!("client {t}");
    let mut opts: sqlx::postgres::PgConnectOptions = at.url(&format!("drv_sqlx_{t}")).parse().map_err(sqlx_err)?;
    if t % 2 == 1 {
        opts = opts.statement_cache_capacity(2);
    }
    let mut c = sqlx::postgres::PgConnection::connect_with(&opts).await.map_err(sqlx_err)?;
    let ins = format!("insert into {SQLX_TABLE} (client, i, v, how) values ($1, $2, $3, $4)");
    let reads = ["select $1::int4 + $2::int4 as v, pg_backend_pid() as pid", "select $1::int4 * $2::int4 as v, pg_backend_pid() as pid"];
    for i in 0..ITERATIONS {
        let label = format!("client {t} iteration {i}");
        let v = i64::from(i);
        // Cached (named) statements, outside any transaction.
        let r = sqlx::query(&ins).bind(t).bind(i).bind(v).bind("cached").execute(&mut c).await.map_err(sqlx_err)?;
        expect(r.rows_affected(), 1, &format!("{label}: cached insert"))?;
        report.committed(t, "cached", v);
        let read = reads[((i + t) % 2) as usize];
        let row = sqlx::query(read).bind(i).bind(3).fetch_one(&mut c).await.map_err(sqlx_err)?;
        let want = if read.contains('+') { i + 3 } else { i * 3 };
        expect(row.get::<i32, _>("v"), want, &format!("{label}: cached read"))?;
        report.saw_pid(&name, row.get("pid"));
        // The unnamed statement.
        let r =
            sqlx::query(&ins).bind(t).bind(i).bind(v + 100).bind("unnamed").persistent(false).execute(&mut c).await.map_err(sqlx_err)?;
        expect(r.rows_affected(), 1, &format!("{label}: unnamed insert"))?;
        report.committed(t, "unnamed", v + 100);
        let row = sqlx::query("select $1::text || '!' as v, pg_backend_pid() as pid")
            .bind(label.clone())
            .persistent(false)
            .fetch_one(&mut c)
            .await
            .map_err(sqlx_err)?;
        expect(row.get::<String, _>("v"), format!("{label}!"), &format!("{label}: unnamed read"))?;
        report.saw_pid(&name, row.get("pid"));
        report.count(4);
        if i % 3 == 0 {
            let rollback = i % 9 == 6;
            let mut tx = c.begin().await.map_err(sqlx_err)?;
            sqlx::query(&ins).bind(t).bind(i).bind(v + 1000).bind("transaction").execute(&mut *tx).await.map_err(sqlx_err)?;
            let n: i64 =
                sqlx::query_scalar(&format!("select count(*) from {SQLX_TABLE} where client = $1 and i = $2 and how = 'transaction'"))
                    .bind(t)
                    .bind(i)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(sqlx_err)?;
            expect(n, 1, &format!("{label}: the transaction sees its write"))?;
            if rollback {
                tx.rollback().await.map_err(sqlx_err)?;
            } else {
                tx.commit().await.map_err(sqlx_err)?;
                report.committed(t, "transaction", v + 1000);
            }
            report.count(2);
        }
        if i % 5 == 4 {
            let mut copy = c.copy_in_raw(&format!("copy {SQLX_TABLE} (client, i, v, how) from stdin")).await.map_err(sqlx_err)?;
            let data: String = (0..COPY_ROWS).map(|k| format!("{t}\t{i}\t{k}\tcopy\n")).collect();
            copy.send(data.into_bytes()).await.map_err(sqlx_err)?;
            expect(copy.finish().await.map_err(sqlx_err)?, COPY_ROWS as u64, &format!("{label}: copy_in_raw rows"))?;
            for k in 0..COPY_ROWS {
                report.committed(t, "copy", k);
            }
            report.count(1);
        }
    }
    c.close().await.map_err(sqlx_err)?;
    Ok(())
}

async fn sqlx_pool(at: &Where, report: &Arc<Report>) -> Result<(), String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(SQLX_POOL)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&at.url("drv_sqlx_pool"))
        .await
        .map_err(sqlx_err)?;
    let ins = format!("insert into {SQLX_TABLE} (client, i, v, how) values ($1, $2, $3, $4)");
    let tasks: Vec<_> = (0..SQLX_POOL_TASKS)
        .map(|k| {
            let (pool, report, ins) = (pool.clone(), report.clone(), ins.clone());
            tokio::spawn(async move {
                let run = async {
                    for j in 0..4i32 {
                        let v = i64::from(k * 10 + j);
                        if (k + j) % 2 == 0 {
                            let r = sqlx::query(&ins).bind(-1).bind(k).bind(v).bind("pool").execute(&pool).await.map_err(sqlx_err)?;
                            expect(r.rows_affected(), 1, &format!("pool task {k} write {j}"))?;
                            report.committed(-1, "pool", v);
                        } else {
                            let got: i64 = sqlx::query_scalar("select $1::int8 * 2").bind(v).fetch_one(&pool).await.map_err(sqlx_err)?;
                            expect(got, v * 2, &format!("pool task {k} read {j}"))?;
                        }
                        report.count(1);
                    }
                    Ok::<(), String>(())
                };
                if let Err(e) = run.await {
                    report.failed(&format!("pool task {k}"), e);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    pool.close().await;
    Ok(())
}
