//! SHOW LISTENERS and SHOW CHANNELS: LISTEN/NOTIFY in transaction mode (no PgBouncer
//! counterpart). LISTENERS has a row per database with listening clients (since the
//! first LISTEN there): its listening connection and counters; CHANNELS a row per
//! channel listened to now, with its number of listening clients.

use std::sync::atomic::Ordering::Relaxed;

use super::{n, ResultSet};
use crate::state::State;

pub(super) fn listeners(state: &State) -> ResultSet {
    let columns = vec![
        ("database", false),
        ("connected", true),
        ("server_pid", true),
        ("channels", true),
        ("clients", true),
        ("queued", true),
        ("received", true),
        ("delivered", true),
        ("dropped", true),
        ("lost", true),
        ("overflowed_clients", true),
        ("missed_clients", true),
    ];
    let rows = state
        .notify
        .all()
        .into_iter()
        .map(|(db, hub)| {
            let (clients, channels, queued) = hub.counts();
            let st = &hub.stats;
            vec![
                n(db),
                n(u8::from(hub.connected.load(Relaxed))),
                n(hub.server_pid.load(Relaxed)),
                n(channels),
                n(clients),
                n(queued),
                n(st.received.load(Relaxed)),
                n(st.delivered.load(Relaxed)),
                n(st.dropped.load(Relaxed)),
                n(st.lost.load(Relaxed)),
                n(st.overflows.load(Relaxed)),
                n(st.missed.load(Relaxed)),
            ]
        })
        .collect();
    ResultSet { columns, rows }
}

pub(super) fn channels(state: &State) -> ResultSet {
    let columns = vec![("database", false), ("channel", false), ("clients", true)];
    let mut rows = vec![];
    for (db, hub) in state.notify.all() {
        for (channel, clients) in hub.per_channel() {
            rows.push(vec![n(&db), n(&channel), n(clients)]);
        }
    }
    ResultSet { columns, rows }
}
