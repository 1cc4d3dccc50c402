//! The commands that act: PAUSE, KILL, KILL_CLIENT, RELOAD (RESUME, RECONNECT and
//! SHUTDOWN are one call each, in [`super::command`]).

use std::time::{Duration, Instant};

use crate::error::{PgError, SqlState};
use crate::state::State;

/// Pauses, and returns once running transactions are done (as PgBouncer does), or
/// after `shutdown_timeout`.
pub(super) async fn pause(state: &State, db: Option<&str>) {
    state.pause.pause(db);
    let deadline = Instant::now() + state.config.current().shutdown_timeout.0;
    while busy_servers(state, db) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Server connections lent out, for one database or all.
fn busy_servers(state: &State, db: Option<&str>) -> usize {
    state.pools.sets_of(db).iter().flat_map(|p| p.all().map(|pool| pool.status()).collect::<Vec<_>>()).map(|s| s.total - s.idle).sum()
}

/// Like PgBouncer: the database is paused, its clients and idle servers dropped now.
pub(super) fn kill_database(state: &State, db: &str) {
    state.pause.pause(Some(db));
    state.clients.kill(|c| c.info.get().is_some_and(|i| *i.database == *db));
    state.pools.close_idle(Some(db));
}

/// Ends the session of the client with this id.
pub(super) fn kill_client(state: &State, id: &str) -> Result<(), PgError> {
    match id.parse::<i32>().ok().and_then(|id| state.clients.get(id)) {
        Some(client) => {
            client.kill.fire();
            Ok(())
        }
        None => Err(PgError::error(
            SqlState::INVALID_PARAMETER_VALUE,
            format!("pgmux: no client with id {id} (see SHOW CLIENTS, column remote_pid)"),
        )),
    }
}

/// Reads the configuration file again and applies it whole, or changes nothing.
pub(super) fn reload(state: &State) -> Result<(), PgError> {
    state.reload().map_err(|e| PgError::error(SqlState::CONFIG_FILE_ERROR, format!("pgmux: configuration not reloaded: {e}")))
}
