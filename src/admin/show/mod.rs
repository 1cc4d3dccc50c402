//! The SHOW commands, with PgBouncer's columns and meanings, one file per group:
//! [`pools`] (POOLS, STATS, LISTS), [`clients`] (CLIENTS, SERVERS), [`databases`]
//! (DATABASES, USERS, REPLICAS), [`config`] (CONFIG), [`peers`] (PEERS), [`listeners`]
//! (LISTENERS, CHANNELS).

mod clients;
mod config;
mod databases;
mod listeners;
mod peers;
mod pools;

use super::{n, ResultSet};
use crate::state::State;

/// What SHOW can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Pools,
    Stats,
    Clients,
    Servers,
    Databases,
    Users,
    Config,
    Lists,
    Version,
    Replicas,
    Peers,
    Listeners,
    Channels,
    Help,
}

impl Show {
    /// The item named (lower-case).
    pub fn parse(what: &str) -> Option<Show> {
        Some(match what {
            "pools" => Show::Pools,
            "stats" => Show::Stats,
            "clients" => Show::Clients,
            "servers" => Show::Servers,
            "databases" => Show::Databases,
            "users" => Show::Users,
            "config" => Show::Config,
            "lists" => Show::Lists,
            "version" => Show::Version,
            "replicas" => Show::Replicas,
            "peers" => Show::Peers,
            "listeners" => Show::Listeners,
            "channels" => Show::Channels,
            "help" => Show::Help,
            _ => return None,
        })
    }

    /// Its result set now.
    pub fn rows(self, state: &State) -> ResultSet {
        match self {
            Show::Pools => pools::pools(state),
            Show::Stats => pools::stats(state),
            Show::Clients => clients::clients(state),
            Show::Servers => clients::servers(state),
            Show::Databases => databases::databases(state),
            Show::Users => databases::users(state),
            Show::Config => config::config(&state.config.current()),
            Show::Lists => pools::lists(state),
            Show::Version => {
                ResultSet { columns: vec![("version", false)], rows: vec![vec![n(format!("pgmux {}", env!("CARGO_PKG_VERSION")))]] }
            }
            Show::Replicas => databases::replicas(state),
            Show::Peers => peers::peers(state),
            Show::Listeners => listeners::listeners(state),
            Show::Channels => listeners::channels(state),
            Show::Help => ResultSet { columns: vec![("command", false)], rows: super::HELP.iter().map(|c| vec![n(c)]).collect() },
        }
    }
}

/// The admin console's name in the rows PgBouncer lists for it.
const ADMIN_DB: &str = crate::config::ADMIN_DATABASES[0];

/// The pool mode, as SHOW POOLS, DATABASES and USERS show it.
fn pool_mode(state: &State) -> &'static str {
    state.config.current().pool.mode.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (cols, rows) = text(&Show::Databases.rows(&state));
        assert_eq!(cols, "name host port database force_user pool_size min_pool_size reserve_pool server_lifetime pool_mode max_connections current_connections paused disabled");
        assert_eq!(
            rows,
            [
                "app 127.0.0.1 5432 app NULL 5 1 0 3600 transaction 4 0 0 0",
                "big 127.0.0.1 5432 big NULL 8 1 2 3600 transaction 0 0 1 0",
                "pgbouncer NULL 6432 pgbouncer pgbouncer 2 0 0 0 statement 0 0 0 0",
            ]
        );
        let (_, rows) = text(&Show::Stats.rows(&state));
        let dbs: Vec<&str> = rows.iter().map(|r| r.split(' ').next().unwrap()).collect();
        assert_eq!(dbs, ["app", "big", "pgbouncer"], "a row for every database before any client came");
        let (_, rows) = text(&Show::Pools.rows(&state));
        assert_eq!(rows, ["pgbouncer pgbouncer 0 0 0 0 0 0 0 0 0 0 0 0 0 statement"]);
        let (cols, rows) = text(&Show::Users.rows(&state));
        assert_eq!(cols, "name pool_size pool_mode max_user_connections current_connections");
        assert_eq!(rows, ["app 2 transaction 3 0", "other NULL transaction 0 0"]);
    }
}
