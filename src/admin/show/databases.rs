//! SHOW DATABASES, SHOW USERS and SHOW REPLICAS: the configured databases, users
//! and servers, with the limits' counts and what the replica monitor found.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::{pool_mode, ADMIN_DB};
use crate::admin::{n, ResultSet};
use crate::pool::limit::LimitKind;
use crate::router::topology::{format_lsn, Topology};
use crate::state::State;

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
pub(super) fn databases(state: &State) -> ResultSet {
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
pub(super) fn users(state: &State) -> ResultSet {
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

/// pgmux's own: every configured server of every database, with what the replica
/// monitor last found (databases without replicas are not monitored: `unchecked`).
pub(super) fn replicas(state: &State) -> ResultSet {
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
}
