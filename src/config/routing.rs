//! The `routing:` block: read/write split, replica lag bounds, read-your-writes, and
//! the replica monitor's settings. Also the per-user default route.

use serde::Deserialize;

use super::{ByteSize, Dur};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// `false`: everything goes to the primary.
    #[serde(default = "yes")]
    pub read_write_split: bool,
    /// Replicas whose replay is further behind (in time) get no reads.
    #[serde(default = "defaults::max_replica_lag")]
    pub max_replica_lag: Dur,
    /// Replicas further behind (in WAL bytes) get no reads.
    #[serde(default = "defaults::max_replica_lag_bytes")]
    pub max_replica_lag_bytes: ByteSize,
    /// After a client's write commits, its reads go only to replicas that have
    /// replayed it (else to the primary).
    #[serde(default = "yes")]
    pub read_your_writes: bool,
    /// Functions that write, besides the built-in list (`name` or `schema.name`).
    #[serde(default)]
    pub write_functions: Vec<String>,
    /// How often the monitor checks every server's role, health and lag.
    #[serde(default = "defaults::monitor_interval")]
    pub monitor_interval: Dur,
    /// The configured user the monitor logs in as (default: the first user that is
    /// not an admin).
    #[serde(default)]
    pub monitor_user: Option<String>,
    /// Consecutive failed checks that take a server out of rotation.
    #[serde(default = "defaults::ban_after_failures")]
    pub ban_after_failures: u32,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            read_write_split: true,
            max_replica_lag: defaults::max_replica_lag(),
            max_replica_lag_bytes: defaults::max_replica_lag_bytes(),
            read_your_writes: true,
            write_functions: Vec::new(),
            monitor_interval: defaults::monitor_interval(),
            monitor_user: None,
            ban_after_failures: defaults::ban_after_failures(),
        }
    }
}

/// Where a user's (or a session's) transactions go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// The classifier decides, statement by statement.
    #[default]
    Auto,
    /// Everything to the primary.
    Primary,
    /// Everything to a replica (the primary when none is available), like a
    /// `/* pgmux:replica */` hint on every statement: a write fails there with
    /// SQLSTATE 25006 and nothing is written.
    Replica,
}

impl Route {
    /// Parses a `SET pgmux.route` value.
    pub fn parse(s: &str) -> Option<Route> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "default" => Some(Route::Auto),
            "primary" => Some(Route::Primary),
            "replica" => Some(Route::Replica),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Auto => "auto",
            Route::Primary => "primary",
            Route::Replica => "replica",
        }
    }
}

fn yes() -> bool {
    true
}

mod defaults {
    use super::{ByteSize, Dur};
    use std::time::Duration;
    pub fn max_replica_lag() -> Dur {
        Dur(Duration::from_secs(2))
    }
    pub fn max_replica_lag_bytes() -> ByteSize {
        ByteSize(16 << 20)
    }
    pub fn monitor_interval() -> Dur {
        Dur(Duration::from_millis(250))
    }
    pub fn ban_after_failures() -> u32 {
        2
    }
}
