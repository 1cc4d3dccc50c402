//! The SHOW commands, with PgBouncer's columns and meanings.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{n, ResultSet};
use crate::pool::limit::LimitKind;
use crate::router::topology::{format_lsn, Topology};
use crate::state::State;

fn unix_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}", d.as_secs())
}

pub fn show(state: &State, what: &str) -> Option<ResultSet> {
    Some(match what {
        "pools" => pools(state),
        "stats" => stats(state),
        "clients" => clients(state),
        "servers" => servers(state),
        "databases" => databases(state),
        "users" => users(state),
        "config" => super::show_config::config(&state.config.current()),
        "lists" => lists(state),
        "version" => ResultSet { columns: vec![("version", false)], rows: vec![vec![n(format!("pgmux {}", env!("CARGO_PKG_VERSION")))]] },
        "replicas" => replicas(state),
        "help" => ResultSet {
            columns: vec![("command", false)],
            rows: [
                "SHOW POOLS|STATS|CLIENTS|SERVERS|DATABASES|USERS|CONFIG|LISTS|VERSION|REPLICAS|HELP",
                "PAUSE [db]",
                "RESUME [db]",
                "KILL db",
                "KILL_CLIENT id",
                "RECONNECT [db]",
                "RELOAD",
                "SHUTDOWN",
            ]
            .iter()
            .map(|c| vec![n(c)])
            .collect(),
        },
        _ => return None,
    })
}

/// The admin console's name in the rows PgBouncer lists for it.
const ADMIN_DB: &str = crate::config::ADMIN_DATABASES[0];

fn pool_mode(state: &State) -> &'static str {
    match state.config.current().pool.mode {
        crate::config::PoolMode::Transaction => "transaction",
        crate::config::PoolMode::Session => "session",
    }
}

/// One row per (database, user), the primary's and replicas' pools together.
fn pools(state: &State) -> ResultSet {
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
        rows.push(vec![
            n(&p.database),
            n(&p.user),
            n(active),
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
fn stats(state: &State) -> ResultSet {
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
        let t = per_db.entry(p.database.clone()).or_default();
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
            let per = |total: u64, count: u64| if count == 0 { 0 } else { total / count };
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

fn client_columns() -> Vec<(&'static str, bool)> {
    vec![
        ("type", false),
        ("user", false),
        ("database", false),
        ("state", false),
        ("addr", false),
        ("port", true),
        ("local_addr", false),
        ("local_port", true),
        ("connect_time", false),
        ("request_time", false),
        ("wait", true),
        ("wait_us", true),
        ("close_needed", true),
        ("ptr", false),
        ("link", false),
        ("remote_pid", true),
        ("tls", false),
        ("application_name", false),
    ]
}

fn clients(state: &State) -> ResultSet {
    let listen = state.config.current().listen_addr();
    let rows = state
        .clients
        .entries()
        .into_iter()
        .filter_map(|e| {
            let info = e.info.get()?;
            let st = e.state().as_str();
            let link = e.server().map(|t| format!("{:x}", t.pid as u32));
            Some(vec![
                n("C"),
                n(&info.user),
                n(&info.database),
                n(st),
                n(info.addr.ip()),
                n(info.addr.port()),
                n(listen.ip()),
                n(listen.port()),
                n(unix_time(info.connected)),
                n(unix_time(info.connected)),
                n(0),
                n(0),
                n(0),
                n(format!("{:x}", e.pid as u32)),
                link,
                n(e.pid),
                n(""),
                n(&info.application_name),
            ])
        })
        .collect();
    ResultSet { columns: client_columns(), rows }
}

fn servers(state: &State) -> ResultSet {
    let mut rows = Vec::new();
    let now = Instant::now();
    let wall = SystemTime::now();
    let at = |t: Instant| unix_time(wall - now.duration_since(t));
    // Lent connections, as seen by the clients that hold them.
    for e in state.clients.entries() {
        if let (Some(t), Some(info)) = (e.server(), e.info.get()) {
            rows.push(vec![
                n("S"),
                n(&info.user),
                n(&info.database),
                n("active"),
                n(t.addr.ip()),
                n(t.addr.port()),
                n(""),
                n(0),
                n(""),
                n(""),
                n(0),
                n(0),
                n(0),
                n(format!("{:x}", t.pid as u32)),
                n(format!("{:x}", e.pid as u32)),
                n(t.pid),
                n(""),
                n(&info.application_name),
            ]);
        }
    }
    for p in state.pools.sets() {
        for pool in p.all() {
            for (pid, created, used) in pool.idle_servers() {
                rows.push(vec![
                    n("S"),
                    n(&p.user),
                    n(&p.database),
                    n("idle"),
                    n(&pool.target.addr.host),
                    n(pool.target.addr.port),
                    n(""),
                    n(0),
                    n(at(created)),
                    n(at(used)),
                    n(0),
                    n(0),
                    n(0),
                    n(format!("{:x}", pid as u32)),
                    None,
                    n(pid),
                    n(""),
                    n(""),
                ]);
            }
        }
    }
    ResultSet { columns: client_columns(), rows }
}

/// Server connections (open or being opened) of every `kind` limit, by name, summed
/// over the servers: PgBouncer's `current_connections`.
fn current_connections(state: &State, kind: LimitKind) -> BTreeMap<String, usize> {
    let mut current = BTreeMap::new();
    for l in state.pools.limits.all().into_iter().filter(|l| l.kind == kind) {
        *current.entry(l.name.clone()).or_default() += l.used();
    }
    current
}

/// PgBouncer 1.23's columns. `pool_size`, `min_pool_size`, `reserve_pool`: the
/// database's own values (a user's `pool_size` may override the first for its pools);
/// `max_connections`: `max_db_connections` on each server (0: no limit);
/// `current_connections`: its server connections now, on all its servers.
fn databases(state: &State) -> ResultSet {
    let cols = [
        ("name", false),
        ("host", false),
        ("port", true),
        ("database", false),
        ("force_user", false),
        ("pool_size", true),
        ("min_pool_size", true),
        ("reserve_pool", true),
        ("server_lifetime", true),
        ("pool_mode", false),
        ("max_connections", true),
        ("current_connections", true),
        ("paused", true),
        ("disabled", true),
    ];
    let config = state.config.current();
    let current = current_connections(state, LimitKind::Database);

    let rows = config
        .databases
        .iter()
        .map(|(name, db)| {
            let a = db.primary_addr();
            let sizes = config.database_pool_sizes(name);
            vec![
                n(name),
                n(a.host),
                n(a.port),
                n(db.dbname.clone().unwrap_or_else(|| name.clone())),
                None,
                n(sizes.size),
                n(sizes.min_pool_size),
                n(sizes.reserve_pool_size),
                n(config.pool.server_lifetime.0.as_secs()),
                n(pool_mode(state)),
                n(config.max_db_connections(name)),
                n(current.get(name).copied().unwrap_or(0)),
                n(u8::from(state.pause.holds(name))),
                n(0),
            ]
        })
        .chain(std::iter::once(admin_database_row(config.listen.parse::<std::net::SocketAddr>().map_or(6432, |a| a.port()))))
        .collect();
    ResultSet { columns: cols.to_vec(), rows }
}

/// The admin console's row in SHOW DATABASES, as PgBouncer shows it.
fn admin_database_row(port: u16) -> Vec<Option<String>> {
    let mut row = vec![n(ADMIN_DB), None, n(port), n(ADMIN_DB), n(ADMIN_DB), n(2), n(0), n(0), n(0), n("statement")];
    row.extend((0..4).map(|_| n(0)));
    row
}

/// PgBouncer 1.23's columns: `pool_size` is the user's own (NULL when not set),
/// `max_user_connections` applies on each server (0: no limit), `current_connections`
/// counts the user's server connections now, on all servers.
fn users(state: &State) -> ResultSet {
    let cols = [("name", false), ("pool_size", true), ("pool_mode", false), ("max_user_connections", true), ("current_connections", true)];
    let config = state.config.current();
    let current = current_connections(state, LimitKind::User);
    let rows = config
        .users
        .iter()
        .map(|u| {
            vec![
                n(&u.name),
                u.pool_size.map(|s| s.to_string()),
                n(pool_mode(state)),
                n(config.max_user_connections(&u.name)),
                n(current.get(&u.name).copied().unwrap_or(0)),
            ]
        })
        .collect();
    ResultSet { columns: cols.to_vec(), rows }
}

fn lists(state: &State) -> ResultSet {
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

/// pgmux's own: every configured server of every database, with what the replica
/// monitor last found (databases without replicas are not monitored: `unchecked`).
fn replicas(state: &State) -> ResultSet {
    let cols = [
        ("database", false),
        ("server", false),
        ("configured_role", false),
        ("role", false),
        ("state", false),
        ("readable", false),
        ("lag_bytes", true),
        ("lag_seconds", false),
        ("lsn", false),
        ("check_ms", false),
    ];
    let mut topologies = state.topologies.all();
    topologies.sort_by(|a, b| a.database.cmp(&b.database));
    let mut rows = Vec::new();
    for t in &topologies {
        for (i, node) in t.nodes.iter().enumerate() {
            let checked = node.checked.load(Ordering::Relaxed);
            let lsn = node.lsn.load(Ordering::Relaxed);
            rows.push(vec![
                n(&t.database),
                n(&node.addr),
                n(Topology::configured_role(i)),
                n(node.role()),
                n(t.state(i)),
                n(node.is_readable()),
                n(node.lag_bytes.load(Ordering::Relaxed)),
                n(format!("{:.3}", node.lag_seconds())),
                if checked && lsn != 0 { n(format_lsn(lsn)) } else { None },
                if checked { n(format!("{:.3}", node.check_micros.load(Ordering::Relaxed) as f64 / 1000.0)) } else { None },
            ]);
        }
    }
    ResultSet { columns: cols.to_vec(), rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_replicas_lists_every_configured_server() {
        let yaml = "users:\n  - name: app\n    password: app\ndatabases:\n  app:\n    primary: 127.0.0.1:5432\n    replicas: [127.0.0.1:5433]\n  solo:\n    primary: 127.0.0.1:6000\n";
        let state = State::new(crate::config::Config::parse(yaml, std::path::Path::new("t.yaml")).unwrap());
        let t = state.topologies.get("app").unwrap();
        let r = &t.nodes[1];
        for (flag, v) in [(&r.checked, true), (&r.up, true), (&r.readable, true)] {
            flag.store(v, Ordering::Relaxed);
        }
        r.lsn.store(0x3000148, Ordering::Relaxed);
        r.lag_bytes.store(100, Ordering::Relaxed);
        r.lag_micros.store(1_234_567, Ordering::Relaxed);
        r.check_micros.store(412, Ordering::Relaxed);
        let rs = replicas(&state);
        let names: Vec<&str> = rs.columns.iter().map(|c| c.0).collect();
        assert_eq!(
            names,
            ["database", "server", "configured_role", "role", "state", "readable", "lag_bytes", "lag_seconds", "lsn", "check_ms"]
        );
        let text = |row: &Vec<Option<String>>| row.iter().map(|v| v.clone().unwrap_or_else(|| "NULL".into())).collect::<Vec<_>>().join(" ");
        let rows: Vec<String> = rs.rows.iter().map(text).collect();
        assert_eq!(
            rows,
            [
                "app 127.0.0.1:5432 primary unknown unchecked false 0 0.000 NULL NULL",
                "app 127.0.0.1:5433 replica replica up true 100 1.235 0/3000148 0.412",
                "solo 127.0.0.1:6000 primary unknown unchecked false 0 0.000 NULL NULL",
            ]
        );
    }
    #[test]
    fn show_databases_and_users_have_pgbouncers_limit_columns() {
        let yaml = "pool:\n  size: 5\n  min_pool_size: 1\n  max_db_connections: 4\nusers:\n  - name: app\n    password: app\n    max_user_connections: 3\n    pool_size: 2\n  - name: other\n    password: other\ndatabases:\n  app:\n    primary: 127.0.0.1:5432\n  big:\n    primary: 127.0.0.1:5432\n    pool_size: 8\n    reserve_pool_size: 2\n    max_db_connections: 0\n";
        let state = State::new(crate::config::Config::parse(yaml, std::path::Path::new("t.yaml")).unwrap());
        state.pause.pause(Some("big"));
        let text = |rs: &ResultSet| {
            let cols: Vec<&str> = rs.columns.iter().map(|c| c.0).collect();
            let rows: Vec<String> = rs
                .rows
                .iter()
                .map(|r| r.iter().map(|v| v.clone().unwrap_or_else(|| "NULL".into())).collect::<Vec<_>>().join(" "))
                .collect();
            (cols.join(" "), rows)
        };
        let (cols, rows) = text(&databases(&state));
        assert_eq!(cols, "name host port database force_user pool_size min_pool_size reserve_pool server_lifetime pool_mode max_connections current_connections paused disabled");
        assert_eq!(
            rows,
            [
                "app 127.0.0.1 5432 app NULL 5 1 0 3600 transaction 4 0 0 0",
                "big 127.0.0.1 5432 big NULL 8 1 2 3600 transaction 0 0 1 0",
                "pgbouncer NULL 6432 pgbouncer pgbouncer 2 0 0 0 statement 0 0 0 0",
            ]
        );
        let (_, rows) = text(&stats(&state));
        let dbs: Vec<&str> = rows.iter().map(|r| r.split(' ').next().unwrap()).collect();
        assert_eq!(dbs, ["app", "big", "pgbouncer"], "a row for every database before any client came");
        let (_, rows) = text(&pools(&state));
        assert_eq!(rows, ["pgbouncer pgbouncer 0 0 0 0 0 0 0 0 0 0 0 0 0 statement"]);
        let (cols, rows) = text(&users(&state));
        assert_eq!(cols, "name pool_size pool_mode max_user_connections current_connections");
        assert_eq!(rows, ["app 2 transaction 3 0", "other NULL transaction 0 0"]);
    }
}
