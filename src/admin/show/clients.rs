//! SHOW CLIENTS and SHOW SERVERS: the client registry's entries and the pools'
//! idle connections, in PgBouncer's columns.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::admin::{n, ResultSet};
use crate::state::State;

fn unix_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}", d.as_secs())
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
        // pgmux's own: the protocol version on this connection (3.2 with a long key).
        ("protocol", false),
    ]
}

/// A connection's protocol version, told by the length of its cancel key.
fn protocol(long_key: bool) -> Option<String> {
    n(if long_key { "3.2" } else { "3.0" })
}

pub(super) fn clients(state: &State) -> ResultSet {
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
                protocol(e.secret().is_some_and(|s| s.as_bytes().len() > 4)),
            ])
        })
        .collect();
    ResultSet { columns: client_columns(), rows }
}

pub(super) fn servers(state: &State) -> ResultSet {
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
                protocol(matches!(t.secret, crate::server::ServerSecret::Long(_))),
            ]);
        }
    }
    for p in state.pools.sets() {
        for pool in p.all() {
            for (pid, created, used, long_key) in pool.idle_servers() {
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
                    protocol(long_key),
                ]);
            }
        }
    }
    ResultSet { columns: client_columns(), rows }
}
