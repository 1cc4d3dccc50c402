//! The admin console's commands: parsed from a statement's text ([`Command::parse`]),
//! then applied to the shared state ([`Command::apply`]). SHOW lists ([`super::show`]);
//! the others act ([`super::control`]).

use super::show::Show;
use super::{control, Outcome, HELP};
use crate::error::{PgError, SqlState};
use crate::state::State;

/// One admin command (names are lower-cased, as PgBouncer reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    /// Wait for running transactions to end; start no new ones (in one database, or all).
    Pause(Option<String>),
    Resume(Option<String>),
    /// Pause a database and drop its clients and idle servers now.
    Kill(String),
    /// End one client's session (its id as typed: SHOW CLIENTS' `remote_pid`).
    KillClient(String),
    /// Close idle server connections (of one database, or all).
    Reconnect(Option<String>),
    Reload,
    Shutdown,
    /// An empty statement.
    Empty,
}

impl Command {
    /// Reads one statement (without its `;`).
    pub fn parse(text: &str) -> Result<Command, PgError> {
        let words: Vec<String> = text.split_whitespace().map(|w| w.to_ascii_lowercase()).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let db = |w: Option<&&str>| w.map(|d| d.to_string());
        Ok(match words.as_slice() {
            ["show", what] => Command::Show(Show::parse(what).ok_or_else(|| {
                PgError::error(SqlState::FEATURE_NOT_SUPPORTED, format!("pgmux: unknown SHOW item \"{what}\"")).with_hint("Try SHOW HELP.")
            })?),
            ["reconnect"] | ["reconnect", _] => Command::Reconnect(db(words.get(1))),
            ["pause"] | ["pause", _] => Command::Pause(db(words.get(1))),
            ["resume"] | ["resume", _] => Command::Resume(db(words.get(1))),
            ["kill", d] => Command::Kill(d.to_string()),
            ["kill_client", id] => Command::KillClient(id.to_string()),
            ["reload"] => Command::Reload,
            ["shutdown"] | ["shutdown", "wait_for_clients"] => Command::Shutdown,
            [] => Command::Empty,
            _ => return Err(unsupported(text)),
        })
    }

    /// Runs it (PAUSE waits for running transactions).
    pub async fn apply(self, state: &State) -> Outcome {
        let done = |tag: &str| Outcome::Done(tag.to_string());
        match self {
            Command::Show(what) => Outcome::Rows(what.rows(state), "SHOW".into()),
            Command::Pause(db) => {
                control::pause(state, db.as_deref()).await;
                done("PAUSE")
            }
            Command::Resume(db) => {
                state.pause.resume(db.as_deref());
                done("RESUME")
            }
            Command::Kill(db) => {
                control::kill_database(state, &db);
                done("KILL")
            }
            Command::KillClient(id) => control::kill_client(state, &id).map_or_else(Outcome::Error, |()| done("KILL_CLIENT")),
            Command::Reconnect(db) => {
                state.pools.close_idle(db.as_deref());
                done("RECONNECT")
            }
            Command::Reload => control::reload(state).map_or_else(Outcome::Error, |()| done("RELOAD")),
            Command::Shutdown => {
                state.begin_shutdown();
                done("SHUTDOWN")
            }
            Command::Empty => done(""),
        }
    }
}

fn unsupported(command: &str) -> PgError {
    PgError::error(SqlState::FEATURE_NOT_SUPPORTED, format!("pgmux: \"{command}\" is not supported yet"))
        .with_hint(format!("Supported: {}.", HELP.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_as_pgbouncer_reads_them() {
        assert_eq!(Command::parse("SHOW  Pools").unwrap(), Command::Show(Show::Pools));
        assert_eq!(Command::parse("pause App").unwrap(), Command::Pause(Some("app".into())));
        assert_eq!(Command::parse("RESUME").unwrap(), Command::Resume(None));
        assert_eq!(Command::parse("shutdown wait_for_clients").unwrap(), Command::Shutdown);
        assert_eq!(Command::parse("").unwrap(), Command::Empty);
        let e = Command::parse("SHOW nothing").unwrap_err();
        assert_eq!((&*e.code, e.message.as_str()), ("0A000", "pgmux: unknown SHOW item \"nothing\""));
        let e = Command::parse("SET x = 1").unwrap_err();
        assert_eq!(e.message, "pgmux: \"SET x = 1\" is not supported yet");
        assert_eq!(e.hint.as_deref(), Some("Supported: SHOW POOLS|STATS|CLIENTS|SERVERS|DATABASES|USERS|CONFIG|LISTS|VERSION|REPLICAS|PEERS|LISTENERS|CHANNELS|HELP, PAUSE [db], RESUME [db], KILL db, KILL_CLIENT id, RECONNECT [db], RELOAD, SHUTDOWN."));
    }
}
