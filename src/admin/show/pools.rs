//! SHOW POOLS, SHOW STATS and SHOW LISTS: the pools' occupancy and counters.

use std::sync::atomic::Ordering;

use super::{pool_mode, ADMIN_DB};
use crate::admin::{n, ResultSet};
use crate::state::State;

/// One row per (database, user), the primary's and replicas' pools together.
pub(super) fn pools(state: &State) -> ResultSet {
    let cols = [
        ("database", false),
        ("user", false),
        ("cl_active", true),
        ("cl_waiting", true),
        ("cl_active_cancel_req", true),
        ("cl_waiting_cancel_req", true),
        ("sv_active", true),
        ("sv_active_cancel", true),
        ("sv_being_canceled", true),
        ("sv_idle", true),
        ("sv_used", true),
        ("sv_tested", true),
        ("sv_login", true),
        ("maxwait", true),
        ("maxwait_us", true),
        ("pool_mode", false),
    ];
    let mut rows = Vec::new();
    for p in state.pools.sets() {
        let (mut active, mut idle, mut waiting, mut max_wait) = (0, 0, 0, std::time::Duration::ZERO);
        for pool in p.all() {
            let s = pool.status();
            active += s.total - s.idle;
            idle += s.idle;
            waiting += s.waiting;
            max_wait = max_wait.max(s.max_wait);
        }
        // PgBouncer's cl_active: logged-in clients that are not waiting (holding a
        // server connection, or idle between transactions).
        let clients = p.clients.load(Ordering::Relaxed).saturating_sub(waiting);
        rows.push(vec![
            n(&p.database),
            n(&p.user),
            n(clients),
            n(waiting),
            n(0),
            n(0),
            n(active),
            n(0),
            n(0),
            n(idle),
            n(0),
            n(0),
            n(0),
            n(max_wait.as_secs()),
            n(max_wait.subsec_micros()),
            n(pool_mode(state)),
        ]);
    }
    // The admin console's own pool, as PgBouncer lists it from the start.
    let mut admin = vec![n(ADMIN_DB), n(ADMIN_DB)];
    admin.extend((0..13).map(|_| n(0)));
    admin.push(n("statement"));
    rows.push(admin);
    ResultSet { columns: cols.to_vec(), rows }
}

/// Totals since start and per-second averages over the uptime.
pub(super) fn stats(state: &State) -> ResultSet {
    let cols = [
        ("database", false),
        ("total_xact_count", true),
        ("total_query_count", true),
        ("total_received", true),
        ("total_sent", true),
        ("total_xact_time", true),
        ("total_query_time", true),
        ("total_wait_time", true),
        ("avg_xact_count", true),
        ("avg_query_count", true),
        ("avg_recv", true),
        ("avg_sent", true),
        ("avg_xact_time", true),
        ("avg_query_time", true),
        ("avg_wait_time", true),
    ];
    let secs = state.started.elapsed().as_secs().max(1);
    // A row for every configured database and the admin console from the start, as
    // PgBouncer shows them: exporters index rows by database.
    let mut per_db: std::collections::BTreeMap<String, [u64; 7]> =
        state.config.current().databases.keys().chain(std::iter::once(&ADMIN_DB.to_string())).map(|db| (db.clone(), [0; 7])).collect();
    for p in state.pools.sets() {
        let t = per_db.entry(p.database.to_string()).or_default();
        for pool in p.all() {
            let c = &pool.counters;
            for (i, v) in
                [&c.transactions, &c.queries, &c.bytes_in, &c.bytes_out, &c.xact_micros, &c.query_micros, &c.wait_micros].iter().enumerate()
            {
                t[i] += v.load(Ordering::Relaxed);
            }
        }
    }
    let rows = per_db
        .into_iter()
        .map(|(db, t)| {
            let per = |total: u64, count: u64| total.checked_div(count).unwrap_or(0);
            vec![
                n(db),
                n(t[0]),
                n(t[1]),
                n(t[2]),
                n(t[3]),
                n(t[4]),
                n(t[5]),
                n(t[6]),
                n(t[0] / secs),
                n(t[1] / secs),
                n(t[2] / secs),
                n(t[3] / secs),
                n(per(t[4], t[0])),
                n(per(t[5], t[1])),
                n(per(t[6], t[0])),
            ]
        })
        .collect();
    ResultSet { columns: cols.to_vec(), rows }
}

pub(super) fn lists(state: &State) -> ResultSet {
    let pools = state.pools.all();
    let (mut used, mut free) = (0, 0);
    for p in &pools {
        let s = p.status();
        used += s.total - s.idle;
        free += s.idle;
    }
    let clients = state.clients.connected();
    let items = [
        ("databases", state.config.current().databases.len()),
        ("users", state.config.current().users.len()),
        ("pools", pools.len()),
        ("free_clients", 0),
        ("used_clients", clients),
        ("login_clients", 0),
        ("free_servers", free),
        ("used_servers", used),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ];
    ResultSet { columns: vec![("list", false), ("items", true)], rows: items.iter().map(|(k, v)| vec![n(k), n(v)]).collect() }
}
