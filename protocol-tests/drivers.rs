//! Driver compatibility matrix: real drivers run prepared-statement workloads through
//! pgmux in transaction mode, several concurrent clients sharing a pool of 2, so that a
//! client's statements land on different server connections (issue #3).
//!
//! Each workload lives in `protocol-tests/drivers/` and is run as a subprocess with
//! PGMUX_HOST, PGMUX_PORT, PGMUX_USER, PGMUX_PASSWORD, PGMUX_DB (and PGMUX_URL,
//! PGMUX_POOL_SIZE, and PGMUX_EXPECT_SPREAD=1 in transaction mode: then a workload checks
//! that some client's statements ran on more than one server connection). It prints
//! one summary line and exits 0, or exits non-zero with what went wrong on stderr. A
//! driver that is not installed fails its test with how to install it (`scripts/test`
//! installs them all). Each run writes `target/driver-matrix/<driver>.txt` (driver,
//! version, what ran, pass/fail) for the README's compatibility table.
//!
//! For diagnosis, `PGMUX_DRIVERS_TARGET=session` runs the same workloads through pgmux in
//! session mode and `PGMUX_DRIVERS_TARGET=direct` straight against PostgreSQL; those runs
//! write `target/driver-matrix/<driver>.<target>.txt` and leave the default files alone;
//! so do runs against another PostgreSQL major (`PGMUX_TEST_PG=18`: `<driver>.pg18.txt`).

mod common;
#[path = "drivers/notify.rs"]
mod notify;
#[path = "drivers/rust/workloads.rs"]
mod rust_workloads;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cluster, Pgmux, Setup};

/// A workload taking longer than this is killed and fails.
const TIMEOUT: Duration = Duration::from_secs(300);

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/drivers")
}

fn matrix_dir() -> PathBuf {
    let target = match option_env!("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
    };
    target.join("driver-matrix")
}

fn python() -> String {
    std::env::var("PGMUX_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn pgjdbc_jar() -> PathBuf {
    std::env::var_os("PGJDBC_JAR").map(PathBuf::from).unwrap_or_else(|| "/usr/share/java/postgresql.jar".into())
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Transaction,
    Session,
    Direct,
}

impl Target {
    fn from_env() -> Target {
        match std::env::var("PGMUX_DRIVERS_TARGET").as_deref() {
            Err(_) | Ok("") | Ok("transaction") => Target::Transaction,
            Ok("session") => Target::Session,
            Ok("direct") => Target::Direct,
            Ok(other) => panic!("PGMUX_DRIVERS_TARGET={other}: expected transaction, session or direct"),
        }
    }

    /// Appended to the matrix file name: the default (transaction mode) files are the matrix.
    fn file_suffix(self) -> &'static str {
        match self {
            Target::Transaction => "",
            Target::Session => ".session",
            Target::Direct => ".direct",
        }
    }
}

/// Where a workload connects; keeps pgmux running while it lives.
struct Endpoint {
    port: u16,
    /// pgmux's pool size (PGMUX_POOL_SIZE: a workload may check that this many new
    /// clients can each hold a transaction once the others are gone).
    pool_size: usize,
    describe: String,
    file_suffix: &'static str,
    pgmux: Option<Pgmux>,
    expect_spread: bool,
}

fn endpoint() -> Endpoint {
    let target = Target::from_env();
    let file_suffix = target.file_suffix();
    match target {
        Target::Transaction => {
            // With read/write routing on: the drivers' reads go to the replicas.
            let routing = "routing:\n  read_write_split: true\n  monitor_interval: 100ms\n".to_string();
            let px = Setup { pool_size: 2, checkout_timeout: "10s", extra: routing, ..Default::default() }.start();
            Endpoint {
                port: px.port,
                pool_size: 2,
                describe: "pgmux, transaction mode, pool size 2, read/write routing".into(),
                file_suffix,
                pgmux: Some(px),
                expect_spread: true,
            }
        }
        Target::Session => {
            // Every client keeps its server connection for its whole session: the pool must
            // hold all of a workload's concurrent clients.
            let px = Setup { pool_size: 25, mode: "session", checkout_timeout: "30s", ..Default::default() }.start();
            Endpoint {
                port: px.port,
                pool_size: 25,
                describe: "pgmux, session mode, pool size 25".into(),
                file_suffix,
                pgmux: Some(px),
                expect_spread: false,
            }
        }
        Target::Direct => Endpoint {
            port: cluster().primary.port,
            pool_size: 2,
            describe: "PostgreSQL directly (no pgmux)".into(),
            file_suffix,
            pgmux: None,
            expect_spread: false,
        },
    }
}

/// Runs `cmd` (its output captured) with a deadline; returns (success, stdout, stderr, how it ended).
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (bool, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    cmd.stdin(Stdio::null()).stdout(std::fs::File::create(&out_path).unwrap()).stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (false, String::new(), String::new(), format!("could not start {cmd:?}: {e}")),
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(s) => (s.success(), stdout, stderr, format!("{s}")),
        None => (false, stdout, stderr, format!("killed after {}s", timeout.as_secs())),
    }
}

/// Output of a probe command, or None if it could not run or failed.
fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn write_matrix(key: &str, suffix: &str, lines: &[(&str, String)]) {
    let dir = matrix_dir();
    let _ = std::fs::create_dir_all(&dir);
    let text: String = lines.iter().map(|(k, v)| format!("{k}: {}\n", v.replace('\n', " "))).collect();
    // The README's table is the default server's (Debian's 15): runs on another major
    // (PGMUX_TEST_PG, scripts/pg-matrix) write `<driver>[.<target>].pg<major>.txt` instead.
    let major = match pgmux::cluster::wanted_major() {
        Ok(Some(m)) if m != 15 => format!(".pg{m}"),
        _ => String::new(),
    };
    let path = dir.join(format!("{key}{suffix}{major}.txt"));
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("could not write {}: {e}", path.display());
    }
}

fn not_installed(key: &str, driver: &str, hint: &str) -> ! {
    write_matrix(
        key,
        Target::from_env().file_suffix(),
        &[("driver", driver.into()), ("version", "-".into()), ("result", "not installed".into()), ("summary", hint.into())],
    );
    panic!("{driver} is not installed, so the driver matrix cannot run it: {hint}");
}

/// Runs one driver workload against the endpoint, records it, and fails the test on error.
fn run_driver(key: &str, driver: &str, version: &str, what: &str, mut cmd: Command) {
    let ep = endpoint();
    for var in ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGOPTIONS", "PGSERVICE"] {
        cmd.env_remove(var);
    }
    cmd.env("PGMUX_HOST", "127.0.0.1")
        .env("PGMUX_PORT", ep.port.to_string())
        .env("PGMUX_USER", "app")
        .env("PGMUX_PASSWORD", "app")
        .env("PGMUX_DB", "app")
        .env("PGMUX_URL", format!("postgres://app:app@127.0.0.1:{}/app", ep.port))
        .env("PGMUX_POOL_SIZE", ep.pool_size.to_string())
        .env("PGMUX_EXPECT_SPREAD", if ep.expect_spread { "1" } else { "0" })
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    // pgmux's admin console (user `admin`, database `pgbouncer`), for workloads that check
    // what pgmux holds; absent when the workload talks to PostgreSQL directly.
    if ep.pgmux.is_some() {
        cmd.env("PGMUX_ADMIN_USER", "admin").env("PGMUX_ADMIN_PASSWORD", "admin");
    } else {
        cmd.env_remove("PGMUX_ADMIN_USER").env_remove("PGMUX_ADMIN_PASSWORD");
    }
    let t0 = Instant::now();
    let (ok, stdout, stderr, ended) = run_with_timeout(cmd, TIMEOUT);
    let secs = t0.elapsed().as_secs_f64();
    let summary = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no output)").to_string();
    record(key, driver, version, what, &ep, Ran { ok, summary, stdout, stderr, ended, secs });
}

/// How a workload ended.
struct Ran {
    ok: bool,
    /// The workload's summary line (its last line of output).
    summary: String,
    stdout: String,
    /// Its failures, one `FAIL` line each (then details).
    stderr: String,
    ended: String,
    secs: f64,
}

/// Writes the matrix file of a run, prints its summary, and fails the test if it failed.
fn record(key: &str, driver: &str, version: &str, what: &str, ep: &Endpoint, ran: Ran) {
    let Ran { ok, summary, stdout, stderr, ended, secs } = ran;
    let mut lines = vec![
        ("driver", driver.to_string()),
        ("version", version.to_string()),
        ("workload", what.to_string()),
        ("through", ep.describe.clone()),
        ("result", if ok { "pass".into() } else { "fail".into() }),
        ("summary", summary.clone()),
        ("seconds", format!("{secs:.1}")),
    ];
    if !ok {
        let first_error = stderr
            .lines()
            .find(|l| l.contains("FAIL"))
            .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or(&ended)
            .to_string();
        lines.push(("error", first_error));
    }
    write_matrix(key, ep.file_suffix, &lines);
    println!("{driver} {version} via {}: {summary} ({secs:.1}s)", ep.describe);
    if !ok {
        let log = match &ep.pgmux {
            Some(p) if !p.log_text().trim().is_empty() => p.log_text(),
            Some(_) => "(empty)".to_string(),
            None => "(no pgmux: direct to PostgreSQL)".to_string(),
        };
        let log_tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "{driver} {version} failed through {} ({ended}).\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- pgmux log (tail) ---\n{}",
            ep.describe,
            log_tail.join("\n")
        );
    }
}

/// Runs an in-process (Rust) workload against the endpoint, like `run_driver` runs a
/// subprocess: recorded in the matrix, the test failing with every failure.
fn run_rust_driver<F>(key: &str, driver: &str, package: &str, what: &str, workload: impl FnOnce(rust_workloads::Where) -> F)
where
    F: std::future::Future<Output = rust_workloads::Found>,
{
    let ep = endpoint();
    let version = locked_version(package);
    let at = rust_workloads::Where { port: ep.port, pool_size: ep.pool_size, expect_spread: ep.expect_spread };
    let t0 = Instant::now();
    let found = common::mt().block_on(async { tokio::time::timeout(TIMEOUT, workload(at)).await });
    let secs = t0.elapsed().as_secs_f64();
    let (ok, summary, stderr, ended) = match found {
        Ok(f) if f.failures.is_empty() => (true, f.summary, String::new(), "finished".to_string()),
        Ok(f) => {
            let first = f.failures[0].lines().next().unwrap_or("").to_string();
            let mut err: String = f.failures.iter().take(10).map(|e| format!("{driver}: FAIL: {e}\n")).collect();
            if f.failures.len() > 10 {
                err.push_str(&format!("{driver}: ... and {} more failures\n", f.failures.len() - 10));
            }
            (false, format!("{driver}: FAILED ({} failures); first: {first}", f.failures.len()), err, "failed".to_string())
        }
        Err(_) => (false, "(timed out)".to_string(), String::new(), format!("stopped after {}s", TIMEOUT.as_secs())),
    };
    record(key, driver, &version, what, &ep, Ran { ok, stdout: summary.clone(), summary, stderr, ended, secs });
}

/// The version of a Rust package in Cargo.lock.
fn locked_version(package: &str) -> String {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).unwrap_or_default();
    lock.split("[[package]]")
        .find(|p| p.lines().any(|l| l.trim() == format!("name = \"{package}\"")))
        .and_then(|p| p.lines().find_map(|l| l.trim().strip_prefix("version = \"")?.strip_suffix('"').map(str::to_string)))
        .unwrap_or_else(|| "?".into())
}

fn python_driver(key: &str, module: &str) -> String {
    let py = python();
    let code = format!("import {module}; print({module}.__version__)");
    probe(Command::new(&py).args(["-c", &code])).unwrap_or_else(|| {
        let hint = format!(
            "`{py} -c 'import {module}'` failed. Run scripts/test (it installs the driver matrix's packages), or: \
             {py} -m pip install -r protocol-tests/drivers/requirements.txt"
        );
        not_installed(key, module, &hint)
    })
}

fn python_workload(script: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(drivers_dir().join("python").join(script)).current_dir(drivers_dir().join("python"));
    cmd
}

fn node_pg(key: &str) -> String {
    let node_dir = drivers_dir().join("node");
    if probe(Command::new("node").arg("--version")).is_none() {
        not_installed(
            key,
            "node-postgres",
            "Node.js is missing: install Node.js 18 or later (apt-get install nodejs npm), then run scripts/test",
        );
    }
    probe(Command::new("node").args(["-e", "console.log(require('pg/package.json').version)"]).current_dir(&node_dir)).unwrap_or_else(
        || not_installed(key, "node-postgres", "the `pg` package is missing: run scripts/test, or `npm ci` in protocol-tests/drivers/node"),
    )
}

fn node_workload(script: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(script).current_dir(drivers_dir().join("node"));
    cmd
}

#[test]
fn psycopg_prepare_threshold_0() {
    let version = python_driver("psycopg", "psycopg");
    let mut cmd = python_workload("psycopg_workload.py");
    cmd.env("PSYCOPG_PARTS", "prepared,evict,autocommit");
    run_driver(
        "psycopg",
        "psycopg",
        &version,
        "prepare_threshold=0 (every query server-prepared): 4 threads x 50 transactions, every 10th rolled back \
         (psycopg then deallocates all); prepared_max=2 (evicted statements closed); autocommit: INSERTs with parameters, \
         executemany and COPY outside transactions, read back on the primary",
        cmd,
    );
}

#[test]
fn psycopg_pipeline_mode() {
    let version = python_driver("psycopg-pipeline", "psycopg");
    let mut cmd = python_workload("psycopg_workload.py");
    cmd.env("PSYCOPG_PARTS", "pipeline");
    run_driver(
        "psycopg-pipeline",
        "psycopg",
        &version,
        "pipeline mode with prepare_threshold=0: 4 connections x 10 pipelines of 20 queries and 4 INSERTs in autocommit, \
         and executemany + queries pipelined inside transactions; every row read back on the primary",
        cmd,
    );
}

#[test]
fn asyncpg_statement_cache_and_a_pool_of_20() {
    let version = python_driver("asyncpg", "asyncpg");
    run_driver(
        "asyncpg",
        "asyncpg",
        &version,
        "default statement cache: 4 connections x 50 transactions of fetch/fetchval/fetchrow; a pool of 20 connections \
         running 2000 concurrent queries",
        python_workload("asyncpg_workload.py"),
    );
}

#[test]
fn node_postgres_named_queries() {
    let version = node_pg("node-postgres");
    run_driver(
        "node-postgres",
        "node-postgres",
        &version,
        "named queries {name, text, values}: 6 workers x 40 iterations on a pg.Pool of 6, in transactions and autocommit, \
         INSERTs with parameters outside transactions (named and unnamed); every row read back on the primary",
        node_workload("named_queries.js"),
    );
}

#[test]
fn two_clients_use_the_same_statement_name_for_different_sql() {
    let version = node_pg("same-statement-name");
    run_driver(
        "same-statement-name",
        "node-postgres",
        &version,
        "4 concurrent clients each using the names drv_shared and drv_shared_2 for their own SQL (different columns and types)",
        node_workload("same_name.js"),
    );
}

/// Compiles a workload against pgjdbc: (its classes' directory, the classpath, pgjdbc's version).
fn pgjdbc_compile(key: &str, class: &str, hint: &str) -> (tempfile::TempDir, String, String) {
    let jar = pgjdbc_jar();
    let classes = tempfile::tempdir().unwrap();
    let out = Command::new("javac")
        .arg("-cp")
        .arg(&jar)
        .arg("-d")
        .arg(classes.path())
        .arg(drivers_dir().join(format!("jdbc/{class}.java")))
        .output()
        .expect("run javac");
    assert!(out.status.success(), "javac {class}.java failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let classpath = format!("{}:{}", jar.display(), classes.path().display());
    let version = probe(Command::new("java").args(["-cp", &classpath, class, "--version"]))
        .unwrap_or_else(|| not_installed(key, "pgjdbc", &format!("`java` cannot load pgjdbc from {}: {hint}", jar.display())));
    (classes, classpath, version)
}

#[test]
fn pgjdbc_prepare_thresholds_0_1_5_with_autocommit_off() {
    let jar = pgjdbc_jar();
    let hint = "run scripts/test (as root it runs `apt-get install libpostgresql-jdbc-java`), or install Debian's \
                libpostgresql-jdbc-java and a JDK (javac); PGJDBC_JAR may point to another pgjdbc jar";
    if !jar.exists() {
        not_installed("pgjdbc", "pgjdbc", &format!("{} is missing: {hint}", jar.display()));
    }
    if probe(Command::new("javac").arg("-version")).is_none() {
        not_installed("pgjdbc", "pgjdbc", &format!("javac is missing: {hint}"));
    }
    let (_classes, classpath, version) = pgjdbc_compile("pgjdbc", "JdbcWorkload", hint);
    let mut cmd = Command::new("java");
    cmd.args(["-cp", &classpath, "JdbcWorkload", "0,1,5"]);
    run_driver(
        "pgjdbc",
        "pgjdbc",
        &version,
        "prepareThreshold=0, 1 and 5: 4 threads x 40 transactions each, autocommit off (pgjdbc server-prepares its own \
         BEGIN/COMMIT), explicit commit and rollback, PreparedStatement reuse, batches; then autocommit on: INSERTs with \
         parameters and batches outside transactions, read back on the primary",
        cmd,
    );
}

#[test]
fn asyncpg_writes_outside_transactions_on_fresh_connections_reach_the_primary() {
    let version = python_driver("asyncpg-writes", "asyncpg");
    python_driver("asyncpg-writes", "psycopg"); // the workload reads pgmux's admin console with it
    let mut cmd = python_workload("asyncpg_writes.py");
    cmd.env("ASYNCPG_PARTS", "writes");
    run_driver(
        "asyncpg-writes",
        "asyncpg",
        &version,
        "fresh connections, no explicit transaction (asyncpg prepares with Parse/Describe/Flush): execute and fetchval of \
         parameterised INSERTs, executemany, copy_records_to_table, with the statement cache and statement_cache_size=0; \
         in a transaction a cursor, an INSERT, then more of the cursor; a pool of 10 mixing those writes with reads; every row read back on the primary",
        cmd,
    );
}

#[test]
fn asyncpg_clients_that_prepare_then_close_leave_pgmux_at_once() {
    let version = python_driver("asyncpg-prepare-close", "asyncpg");
    python_driver("asyncpg-prepare-close", "psycopg");
    let mut cmd = python_workload("asyncpg_writes.py");
    cmd.env("ASYNCPG_PARTS", "close");
    run_driver(
        "asyncpg-prepare-close",
        "asyncpg",
        &version,
        "prepare() then close() on fresh connections, 4x the pool size, with the statement cache and statement_cache_size=0: \
         each close returns within 2 s, then no client left and no server lent (SHOW CLIENTS, SHOW POOLS) and new clients \
         each get a transaction at once",
        cmd,
    );
}

#[test]
fn tokio_postgres_prepared_pipelined_and_copy_writes_outside_transactions() {
    run_rust_driver(
        "tokio-postgres",
        "tokio-postgres",
        "tokio-postgres",
        "4 clients x 30 iterations: statements prepared once and per call, pipelined writes and reads outside transactions, \
         transactions (some rolled back), COPY FROM STDIN; every row read back on the primary",
        rust_workloads::tokio_postgres,
    );
}

#[test]
fn sqlx_statement_cache_unnamed_statements_and_a_pool_writing_outside_transactions() {
    run_rust_driver(
        "sqlx",
        "sqlx",
        "sqlx",
        "4 connections x 30 iterations: statement cache (capacity 2 on some: evictions closed), persistent(false), \
         writes outside transactions, transactions, copy_in_raw; a pool of 6 mixing writes and reads; every row read back \
         on the primary",
        rust_workloads::sqlx,
    );
}

fn php_pdo_pgsql(key: &str) -> String {
    let hint = "run scripts/test (as root it runs `apt-get install php-cli php-pgsql`), or install Debian's php-cli and php-pgsql";
    let version = probe(Command::new("php").args(["-r", "echo PHP_VERSION;"]))
        .unwrap_or_else(|| not_installed(key, "PHP PDO pgsql", &format!("`php` is missing: {hint}")));
    if probe(Command::new("php").args(["-r", "exit(in_array('pgsql', PDO::getAvailableDrivers()) ? 0 : 1);"])).is_none() {
        not_installed(key, "PHP PDO pgsql", &format!("PHP {version} has no PDO pgsql driver: {hint}"));
    }
    version
}

#[test]
fn php_pdo_named_server_statements_reads_writes_and_deallocate() {
    let version = php_pdo_pgsql("pdo-pgsql");
    let mut cmd = Command::new("php");
    cmd.arg(drivers_dir().join("php/pdo_workload.php")).current_dir(drivers_dir().join("php"));
    run_driver(
        "pdo-pgsql",
        "PHP PDO pgsql",
        &version,
        "ATTR_EMULATE_PREPARES=false (named pdo_stmt_* statements, SQL DEALLOCATE when destroyed): 4 processes x 30 \
         iterations of parameterised reads and writes outside and inside transactions, named parameters, DEALLOCATE \
         checked; ATTR_EMULATE_PREPARES=true: 1 process; every row read back on the primary",
        cmd,
    );
}

#[test]
fn ruby_pg_exec_params_prepared_statements_transactions_and_copy() {
    let version = probe(Command::new("ruby").args(["-e", "require 'pg'; print PG::VERSION"])).unwrap_or_else(|| {
        not_installed(
            "ruby-pg",
            "ruby-pg",
            "`ruby -e \"require 'pg'\"` failed: run scripts/test (as root it runs `apt-get install ruby-pg`), or install Debian's ruby-pg",
        )
    });
    let mut cmd = Command::new("ruby");
    cmd.arg(drivers_dir().join("ruby/pg_workload.rb")).current_dir(drivers_dir().join("ruby"));
    run_driver(
        "ruby-pg",
        "ruby-pg",
        &version,
        "4 connections (threads) x 30 iterations: exec_params and prepare/exec_prepared (named statements) reads and \
         INSERTs outside transactions, transactions (some rolled back), copy_data in and out, DEALLOCATE and prepare \
         again; every row read back on the primary",
        cmd,
    );
}
