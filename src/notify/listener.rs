//! The listening connections: one per database that has listening clients, to its
//! current primary, of pgmux's own (outside the pools, logged in as the monitor
//! user, `application_name` [`APPLICATION_NAME`]). It LISTENs to the union of the
//! hub's channels and to [`MARKER_CHANNEL`], follows changes of that union at once
//! (the hub's `changed` wake-up; [`Hub::set_listened`] once the LISTENs committed),
//! and hands every notification it reads to [`Hub::deliver`] (markers to
//! [`Hub::marker`]).
//!
//! When it breaks (or the primary changes, or it cannot connect) the hub is told
//! ([`Hub::lost`]: its clients may have missed notifications), and it connects
//! again with backoff (250 ms doubling to 5 s) and LISTENs again. When nobody
//! listens any more it closes; the next LISTEN opens it again. The supervisor
//! ([`run`]) starts one task per hub, when the hub is created.

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::backend::{Message, NotificationResponseBody};

use super::{quote_ident, quote_literal, Hub, Hubs, Notification, APPLICATION_NAME, MARKER_CHANNEL};
use crate::config::ServerAddr;
use crate::server::{login, ServerConn, ServerTarget};

/// Where the listening connections go: given by the proxy from the shared state, so
/// this module needs nothing of it.
pub trait Upstream: Send + Sync {
    /// `database`'s current primary, as the monitor user (None while pgmux has no
    /// usable credentials for it, or the database is gone).
    fn target(&self, database: &str) -> Option<ServerTarget>;
    /// Bounds logging in and each statement of the listening connection.
    fn timeout(&self) -> Duration;
}

/// Starts the listening connection's task of every hub, as hubs are created. Runs
/// until aborted (its tasks with it).
pub async fn run(hubs: Arc<Hubs>, upstream: Arc<dyn Upstream>) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut started = HashSet::new();
    loop {
        let created = hubs.created.notified();
        for (db, hub) in hubs.all() {
            if started.insert(db.clone()) {
                tasks.spawn(serve(db, hub, upstream.clone()));
            }
        }
        created.await;
    }
}

/// Notifications handed out before the clients woken get to run (they write their
/// inboxes out), so that a burst does not pile up in the inboxes.
const YIELD_EVERY: usize = 64;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why a listening connection ended.
enum End {
    /// Nobody listens any more: closed on purpose.
    Idle,
    /// Lost (or moved to a new primary): the clients may have missed notifications.
    Lost(String),
}

/// One database's listening connection, for as long as pgmux runs.
async fn serve(db: String, hub: Arc<Hub>, up: Arc<dyn Upstream>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        loop {
            let changed = hub.changed.notified();
            if !hub.channels().0.is_empty() {
                break;
            }
            changed.await;
        }
        let Some(target) = up.target(&db) else {
            tracing::warn!(database = %db, "listening connection: no usable login (monitor user) yet");
            hub.lost();
            tokio::time::sleep(BACKOFF_MAX).await;
            continue;
        };
        let end = match login::connect(&target, up.timeout()).await {
            Ok(conn) => {
                tracing::info!(database = %db, server = %target.addr, pid = conn.pid(), "listening connection open");
                hub.server_pid.store(conn.pid(), Relaxed);
                listen(&hub, conn, &target.addr, &db, &*up).await
            }
            Err(e) => End::Lost(format!("cannot connect: {e}")),
        };
        hub.connected.store(false, Relaxed);
        hub.server_pid.store(0, Relaxed);
        match end {
            End::Idle => {
                tracing::info!(database = %db, "listening connection closed: nobody listens");
                backoff = BACKOFF_MIN;
            }
            End::Lost(why) => {
                tracing::warn!(database = %db, server = %target.addr, error = %why, "listening connection lost; its clients are told they may have missed notifications");
                hub.lost();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Serves one open listening connection until nobody listens or it is lost.
async fn listen(hub: &Hub, mut conn: ServerConn, addr: &ServerAddr, db: &str, up: &dyn Upstream) -> End {
    let mut listening: BTreeSet<Arc<str>> = BTreeSet::new();
    let mut first = true;
    let mut handed = 0;
    loop {
        let (want, g) = hub.channels();
        if want.is_empty() {
            conn.close();
            return End::Idle;
        }
        let want: BTreeSet<Arc<str>> = want.into_iter().collect();
        let sql = changes(&listening, &want, first);
        if !sql.is_empty() {
            match tokio::time::timeout(up.timeout(), exchange(&mut conn, hub, &sql)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return End::Lost(e.to_string()),
                Err(_) => return End::Lost("no answer to LISTEN in time".into()),
            }
            listening = want;
        }
        first = false;
        hub.connected.store(true, Relaxed);
        hub.set_listened(g);
        let changed = hub.changed.notified();
        let read = tokio::select! {
            m = conn.read_message() => Some(m),
            _ = changed => None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if up.target(db).is_none_or(|t| t.addr != *addr) {
                    return End::Lost("the database's primary changed".into());
                }
                None
            }
        };
        match read.map(|m| m.and_then(|m| on_message(hub, m))) {
            Some(Err(e)) => return End::Lost(e.to_string()),
            // The clients woken run before the next notification is handed out: a
            // burst drains as it comes instead of piling up in the inboxes.
            Some(Ok(())) => {
                handed += 1;
                if handed >= YIELD_EVERY || conn.to_client.is_empty() {
                    handed = 0;
                    tokio::task::yield_now().await;
                }
            }
            None => {}
        }
    }
}

/// The statements that take the connection from `have` to `want` (on the first
/// round, naming it and listening for markers too).
fn changes(have: &BTreeSet<Arc<str>>, want: &BTreeSet<Arc<str>>, first: bool) -> String {
    let mut sql = String::new();
    if first {
        sql.push_str(&format!("SET application_name = {}; LISTEN {};", quote_literal(APPLICATION_NAME), quote_ident(MARKER_CHANNEL)));
    }
    for c in want.difference(have) {
        sql.push_str(&format!("LISTEN {};", quote_ident(c)));
    }
    for c in have.difference(want) {
        sql.push_str(&format!("UNLISTEN {};", quote_ident(c)));
    }
    sql
}

/// Runs statements, handing on the notifications that come meanwhile.
async fn exchange(conn: &mut ServerConn, hub: &Hub, sql: &str) -> io::Result<()> {
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query(sql, &mut out)?;
    conn.stream.write_all(&out).await?;
    let mut error = None;
    loop {
        match conn.read_message().await? {
            Message::ReadyForQuery(_) => return error.map_or(Ok(()), Err),
            Message::ErrorResponse(e) => error = Some(io::Error::other(login::to_pg_error(e.fields()).message)),
            m => on_message(hub, m)?,
        }
    }
}

fn on_message(hub: &Hub, m: Message) -> io::Result<()> {
    match m {
        Message::NotificationResponse(n) => {
            let n = notification(&n)?;
            if &*n.channel == MARKER_CHANNEL {
                hub.marker(&n.payload);
            } else {
                hub.deliver(n);
            }
            Ok(())
        }
        Message::ErrorResponse(e) => Err(io::Error::other(login::to_pg_error(e.fields()).message)),
        _ => Ok(()),
    }
}

/// A NotificationResponse's fields.
pub fn notification(n: &NotificationResponseBody) -> io::Result<Notification> {
    Ok(Notification { pid: n.process_id(), channel: n.channel()?.into(), payload: n.message()?.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_follows_the_union_of_channels() {
        let s = |v: &[&str]| v.iter().map(|c| Arc::from(*c)).collect::<BTreeSet<Arc<str>>>();
        assert_eq!(changes(&s(&[]), &s(&["a"]), true), "SET application_name = 'pgmux-listen'; LISTEN \"pgmux.marker\";LISTEN \"a\";");
        assert_eq!(changes(&s(&["a", "b"]), &s(&["b", "C"]), false), "LISTEN \"C\";UNLISTEN \"a\";");
        assert_eq!(changes(&s(&["a"]), &s(&["a"]), false), "");
    }
}
