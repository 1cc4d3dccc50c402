//! LISTEN/NOTIFY through real drivers (issue #16), part of the driver matrix: each
//! workload has several listening connections on pgmux's pool of 2 in transaction
//! mode, runs queries and transactions on them between notifications, and checks
//! that every notification arrives once and in order (`protocol-tests/notify.rs` has
//! the protocol-level tests). Plus a job queue built on LISTEN/NOTIFY, procrastinate,
//! whose worker only hears of new jobs in time through its LISTEN.

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use super::{node_pg, node_workload, not_installed, pgjdbc_compile, pgjdbc_jar, probe, python_driver, python_workload, run_driver};

/// These workloads take turns (one at a time beside the rest of the matrix): together
/// they load the machine enough to slow the replicas' replay, which the other
/// workloads' table-visibility waits are sensitive to.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn psycopg_notifies() {
    let _turn = turn();
    let version = python_driver("psycopg-notify", "psycopg");
    run_driver(
        "psycopg-notify",
        "psycopg",
        &version,
        "LISTEN/NOTIFY: 6 autocommit connections LISTEN (half on two channels) and read conn.notifies() between queries; \
         100 transactions of 2 pg_notify each; a LISTEN in a rolled-back transaction",
        python_workload("notify_psycopg.py"),
    );
}

#[test]
fn asyncpg_add_listener() {
    let _turn = turn();
    let version = python_driver("asyncpg-notify", "asyncpg");
    run_driver(
        "asyncpg-notify",
        "asyncpg",
        &version,
        "LISTEN/NOTIFY: 6 connections with add_listener running prepared transactions meanwhile, 200 NOTIFYs; remove_listener",
        python_workload("notify_asyncpg.py"),
    );
}

#[test]
fn node_postgres_on_notification() {
    let _turn = turn();
    let version = node_pg("node-postgres-notify");
    run_driver(
        "node-postgres-notify",
        "node-postgres",
        &version,
        "LISTEN/NOTIFY: 6 clients with client.on('notification') running transactions meanwhile, 200 NOTIFYs",
        node_workload("notify.js"),
    );
}

#[test]
fn pgjdbc_get_notifications() {
    let _turn = turn();
    let hint = "run scripts/test, or install Debian's libpostgresql-jdbc-java and a JDK (javac)";
    if !pgjdbc_jar().exists() || probe(Command::new("javac").arg("-version")).is_none() {
        not_installed("pgjdbc-notify", "pgjdbc", hint);
    }
    let (_classes, classpath, version) = pgjdbc_compile("pgjdbc-notify", "JdbcNotify", hint);
    let mut cmd = Command::new("java");
    cmd.args(["-cp", &classpath, "JdbcNotify"]);
    run_driver(
        "pgjdbc-notify",
        "pgjdbc",
        &version,
        "LISTEN/NOTIFY: 6 connections poll PGConnection.getNotifications(500) between queries, 200 NOTIFYs; a LISTEN \
         rolled back with autocommit off",
        cmd,
    );
}

#[test]
fn procrastinate_worker_woken_by_notify() {
    let _turn = turn();
    let version = python_driver("procrastinate", "procrastinate");
    run_driver(
        "procrastinate",
        "procrastinate",
        &version,
        "job queue: a worker (concurrency 4, polling every 120 s, so only its LISTEN tells it of new jobs) processes 5 \
         bursts of 40 jobs, each once",
        python_workload("notify_procrastinate.py"),
    );
}
