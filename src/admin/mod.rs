//! The admin console: `psql -p 6432 -U admin pgbouncer` (or database `pgmux`).
//!
//! PgBouncer-compatible: the same SHOW commands with PgBouncer's column names, so
//! existing exporters and runbooks keep working, plus `SHOW REPLICAS`. Only the
//! simple query protocol is spoken, as in PgBouncer. [`show`] builds the result sets;
//! this module reads commands and dispatches them.

mod show;
mod show_config;

use std::sync::Arc;

use crate::net::Stream;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use crate::error::{PgError, SqlState};
use crate::protocol::{backend, codes};
use crate::state::State;

/// A result set: columns (name, numeric?) and rows.
pub struct ResultSet {
    pub columns: Vec<(&'static str, bool)>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// A result set's value.
pub(crate) fn n(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// What a command produced.
enum Outcome {
    Rows(ResultSet, String),
    Done(String),
    Error(PgError),
}

/// Greets an admin and serves commands until the client leaves.
pub async fn serve(mut stream: Stream, state: Arc<State>, key_pid: i32, key_secret: i32) {
    let mut out = BytesMut::new();
    backend::auth_ok(&mut out);
    for (k, v) in [
        ("server_version", "15.0 (pgmux admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        backend::parameter_status(&mut out, k, v);
    }
    backend::backend_key(&mut out, key_pid, key_secret);
    backend::ready(&mut out, codes::TXN_IDLE);
    if stream.write_all(&out).await.is_err() {
        return;
    }
    loop {
        let Ok(tag) = stream.read_u8().await else { return };
        let Ok(len) = stream.read_i32().await else { return };
        if !(4..=1 << 20).contains(&len) {
            let mut out = BytesMut::new();
            backend::error(&mut out, &PgError::fatal(SqlState::PROTOCOL_VIOLATION, format!("invalid message length {len}")));
            let _ = stream.write_all(&out).await;
            return;
        }
        let mut body = vec![0u8; len as usize - 4];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut out = BytesMut::new();
        match tag {
            codes::TERMINATE => return,
            codes::QUERY => {
                let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
                for command in sql.split(';').map(str::trim).filter(|c| !c.is_empty()) {
                    tracing::info!(client = key_pid, command, "admin command");
                    match execute(&state, command).await {
                        Outcome::Rows(rs, tag) => {
                            backend::row_description(&mut out, &rs.columns);
                            for row in &rs.rows {
                                backend::data_row(&mut out, row);
                            }
                            backend::command_complete(&mut out, &tag);
                        }
                        Outcome::Done(tag) => backend::command_complete(&mut out, &tag),
                        Outcome::Error(e) => {
                            backend::error(&mut out, &e);
                            break;
                        }
                    }
                }
                backend::ready(&mut out, codes::TXN_IDLE);
            }
            _ => {
                // Like PgBouncer: the console speaks the simple protocol only.
                backend::error(
                    &mut out,
                    &PgError::error(SqlState::FEATURE_NOT_SUPPORTED, "the admin console supports only simple queries"),
                );
                if tag == codes::SYNC {
                    backend::ready(&mut out, codes::TXN_IDLE);
                }
            }
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Server connections lent out, for one database or all.
fn busy_servers(state: &State, db: Option<&str>) -> usize {
    state.pools.sets_of(db).iter().flat_map(|p| p.all().map(|pool| pool.status()).collect::<Vec<_>>()).map(|s| s.total - s.idle).sum()
}

fn unsupported(command: &str) -> Outcome {
    Outcome::Error(
        PgError::error(SqlState::FEATURE_NOT_SUPPORTED, format!("pgmux: \"{command}\" is not supported yet"))
            .with_hint("Supported: SHOW POOLS|STATS|CLIENTS|SERVERS|DATABASES|USERS|CONFIG|LISTS|VERSION|REPLICAS|HELP, PAUSE [db], RESUME [db], KILL db, KILL_CLIENT id, RECONNECT [db], RELOAD, SHUTDOWN."),
    )
}

async fn execute(state: &State, command: &str) -> Outcome {
    let words: Vec<String> = command.split_whitespace().map(|w| w.to_ascii_lowercase()).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["show", what] => match show::show(state, what) {
            Some(rs) => Outcome::Rows(rs, "SHOW".into()),
            None => Outcome::Error(
                PgError::error(SqlState::FEATURE_NOT_SUPPORTED, format!("pgmux: unknown SHOW item \"{what}\"")).with_hint("Try SHOW HELP."),
            ),
        },
        ["reconnect"] | ["reconnect", _] => {
            state.pools.close_idle(words.get(1).copied());
            Outcome::Done("RECONNECT".into())
        }
        ["pause"] | ["pause", _] => {
            let db = words.get(1).copied();
            state.pause.pause(db);
            // Like PgBouncer, PAUSE returns once running transactions are done.
            let deadline = std::time::Instant::now() + state.config.current().shutdown_timeout.0;
            while busy_servers(state, db) > 0 && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Outcome::Done("PAUSE".into())
        }
        ["resume"] | ["resume", _] => {
            state.pause.resume(words.get(1).copied());
            Outcome::Done("RESUME".into())
        }
        ["kill", db] => {
            // Like PgBouncer: the database is paused, its clients and servers dropped now.
            state.pause.pause(Some(db));
            state.clients.kill(|c| c.info.get().is_some_and(|i| i.database == *db));
            state.pools.close_idle(Some(db));
            Outcome::Done("KILL".into())
        }
        ["kill_client", id] => match id.parse::<i32>().ok().and_then(|id| state.clients.get(id)) {
            Some(client) => {
                client.kill.fire();
                Outcome::Done("KILL_CLIENT".into())
            }
            None => Outcome::Error(PgError::error(
                SqlState::INVALID_PARAMETER_VALUE,
                format!("pgmux: no client with id {id} (see SHOW CLIENTS, column remote_pid)"),
            )),
        },
        ["reload"] => match state.reload() {
            Ok(()) => Outcome::Done("RELOAD".into()),
            Err(e) => Outcome::Error(PgError::error(SqlState::CONFIG_FILE_ERROR, format!("pgmux: configuration not reloaded: {e}"))),
        },
        ["shutdown"] | ["shutdown", "wait_for_clients"] => {
            state.begin_shutdown();
            Outcome::Done("SHUTDOWN".into())
        }
        [] => Outcome::Done("".into()),
        _ => unsupported(command),
    }
}
