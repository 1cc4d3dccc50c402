//! The limits and timeouts of one pool, resolved from the config for its
//! (database, user): per-database and per-user overrides applied.

use std::time::Duration;

use crate::config::{Config, PoolConfig};

/// Limits and timeouts of one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSettings {
    pub size: usize,
    pub checkout_timeout: Duration,
    pub idle_timeout: Duration,
    pub lifetime: Duration,
    pub connect_timeout: Duration,
    pub check_delay: Duration,
    pub max_prepared_statements: usize,
    /// Connections kept open even when idle (opened by the upkeep task).
    pub min_size: usize,
    /// Extra connections for clients that waited `reserve_timeout` (closed again
    /// when they come back).
    pub reserve_size: usize,
    pub reserve_timeout: Duration,
}

impl From<&PoolConfig> for PoolSettings {
    fn from(c: &PoolConfig) -> Self {
        PoolSettings {
            size: c.size,
            checkout_timeout: c.checkout_timeout.0,
            idle_timeout: c.server_idle_timeout.0,
            lifetime: c.server_lifetime.0,
            connect_timeout: c.server_connect_timeout.0,
            check_delay: c.server_check_delay.0,
            max_prepared_statements: crate::prepared::DEFAULT_CACHE,
            min_size: c.min_pool_size.min(c.size),
            reserve_size: c.reserve_pool_size,
            reserve_timeout: c.reserve_pool_timeout.0,
        }
    }
}

/// The part of a configured total this instance may use: all of it, unless a fleet
/// divides its budget (`fleet.share_pools`), where it may be 0 for a while.
pub type Share<'a> = &'a dyn Fn(usize) -> usize;

/// No fleet sharing: every total is this instance's.
#[cfg(test)]
pub fn whole(total: usize) -> usize {
    total
}

impl PoolSettings {
    /// The settings of the pools of `database` for `user` (`pool:`, then the
    /// database's overrides, then the user's), each size this instance's `share`.
    pub fn resolve(config: &Config, database: &str, user: &str, share: Share<'_>) -> PoolSettings {
        let sizes = config.pool_sizes(database, user);
        let size = share(sizes.size);
        PoolSettings {
            size,
            min_size: share(sizes.min_pool_size).min(size),
            reserve_size: share(sizes.reserve_pool_size),
            max_prepared_statements: config.max_prepared_statements,
            ..PoolSettings::from(&config.pool)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn overrides_reach_the_pool() {
        let yaml = "max_prepared_statements: 9\npool:\n  size: 4\n  min_pool_size: 1\n  checkout_timeout: 2s\nusers:\n  - name: a\n    password: a\n  - name: b\n    password: b\n    pool_size: 7\ndatabases:\n  d:\n    primary: h:1\n    pool_size: 2\n    reserve_pool_size: 3\n";
        let c = Config::parse(yaml, Path::new("x")).unwrap();
        let a = PoolSettings::resolve(&c, "d", "a", &whole);
        assert_eq!((a.size, a.min_size, a.reserve_size, a.max_prepared_statements), (2, 1, 3, 9));
        assert_eq!(a.checkout_timeout, Duration::from_secs(2));
        let b = PoolSettings::resolve(&c, "d", "b", &whole);
        assert_eq!((b.size, b.min_size, b.reserve_size), (7, 1, 3));
        let third = |t: usize| t / 3;
        let b = PoolSettings::resolve(&c, "d", "b", &third);
        assert_eq!((b.size, b.min_size, b.reserve_size), (2, 0, 1), "a fleet's share of each");
    }
}
