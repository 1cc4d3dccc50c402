//! The connection-limit gauges, written at scrape time from samples of the limits
//! (`pool::Limits::samples`), like the replica families ([`super::replicas`]):
//!
//! - `pgmux_limit_connections{kind,name,server}`: server connections a limit counts
//!   now (open or being opened), for every (database, server) and (user, server) of
//!   the configuration, and for a limit of a database or user a reload removed while
//!   it still counts connections;
//! - `pgmux_limit_max_connections{kind,name,server}`: its configured maximum
//!   (`max_db_connections` / `max_user_connections`), only where one is set.
//!
//! `kind` is `database` or `user`; `server` is `host:port` as configured.

use std::fmt::Write;

use super::escape;

/// One limit at a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSample {
    /// `database` or `user`.
    pub kind: &'static str,
    pub name: String,
    pub server: String,
    /// Server connections it counts now.
    pub current: usize,
    /// Its maximum (0: none).
    pub max: usize,
}

/// Appends both families to `out`.
pub fn render(samples: &[LimitSample], out: &mut String) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let families: [(&str, &str, bool); 2] = [
        (
            "pgmux_limit_connections",
            "Server connections counted by a max_db_connections / max_user_connections limit now, per server",
            false,
        ),
        ("pgmux_limit_max_connections", "Configured max_db_connections / max_user_connections per server (only where set)", true),
    ];
    for (name, help, max) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for LimitSample { kind, name: n, server, current, max: limit } in samples {
            let value = if max { *limit } else { *current };
            if max && *limit == 0 {
                continue;
            }
            let (n, server) = (escape(n), escape(server));
            let _ = writeln!(out, "{name}{{kind=\"{kind}\",name=\"{n}\",server=\"{server}\"}} {value}");
        }
    }
}
