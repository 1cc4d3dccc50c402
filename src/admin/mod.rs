//! The admin console: `psql -p 6432 -U admin pgbouncer` (or database `pgmux`).
//!
//! PgBouncer-compatible: the same SHOW commands with PgBouncer's column names, so
//! existing exporters and runbooks keep working, plus `SHOW REPLICAS`. Only the
//! simple query protocol is spoken, as in PgBouncer. This module reads statements and
//! writes results; [`command`] parses and applies them ([`show`] lists, [`control`] acts).

mod command;
mod control;
mod show;

use std::sync::Arc;

use crate::net::{Inbound, Stream};
use bytes::BytesMut;

use crate::error::{PgError, SqlState};
use crate::protocol::{backend, codes};
use crate::state::State;
use command::Command;

/// Every command, as SHOW HELP lists them.
pub const HELP: [&str; 8] = [
    "SHOW POOLS|STATS|CLIENTS|SERVERS|DATABASES|USERS|CONFIG|LISTS|VERSION|REPLICAS|PEERS|LISTENERS|CHANNELS|HELP",
    "PAUSE [db]",
    "RESUME [db]",
    "KILL db",
    "KILL_CLIENT id",
    "RECONNECT [db]",
    "RELOAD",
    "SHUTDOWN",
];

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
pub enum Outcome {
    Rows(ResultSet, String),
    Done(String),
    Error(PgError),
}

/// Greets an admin and serves commands until the client leaves.
pub async fn serve(mut stream: Stream, mut inbound: Inbound, state: Arc<State>, key: Arc<crate::clients::ClientEntry>) {
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
    backend::backend_key(&mut out, key.pid, key.secret().map_or(&[0; 4][..], |s| s.as_bytes()));
    backend::ready(&mut out, codes::TXN_IDLE);
    if stream.write_all(&out).await.is_err() {
        return;
    }
    loop {
        let Ok(tag) = inbound.peek_u8(&mut stream).await else { return };
        let Ok(len) = inbound.peek_i32(&mut stream, 1).await else { return };
        if !(4..=1 << 20).contains(&len) {
            let mut out = BytesMut::new();
            backend::error(&mut out, &PgError::fatal(SqlState::PROTOCOL_VIOLATION, format!("invalid message length {len}")));
            let _ = stream.write_all(&out).await;
            return;
        }
        inbound.skip(5);
        let Ok(body) = inbound.take(&mut stream, len as usize - 4).await else { return };
        let mut out = BytesMut::new();
        match tag {
            codes::TERMINATE => return,
            codes::QUERY => {
                let sql = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
                for command in sql.split(';').map(str::trim).filter(|c| !c.is_empty()) {
                    tracing::info!(client = key.pid, command, "admin command");
                    let outcome = match Command::parse(command) {
                        Ok(c) => c.apply(&state).await,
                        Err(e) => Outcome::Error(e),
                    };
                    match outcome {
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
