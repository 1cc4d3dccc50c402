//! Per-database and per-user pool overrides, and the connection limits shared by
//! several pools (`max_db_connections`, `max_user_connections`): the effective values
//! with PgBouncer's precedence (a user's `pool_size` wins over its database's, which
//! wins over `pool:`), and what validation checks about them.

use super::Config;

/// The sizes of the pools of one (database, user), overrides applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSizes {
    pub size: usize,
    /// Capped at `size` (a user's smaller `pool_size` wins).
    pub min_pool_size: usize,
    pub reserve_pool_size: usize,
}

impl Config {
    /// Size, minimum and reserve of the pools of `database` for `user`.
    pub fn pool_sizes(&self, database: &str, user: &str) -> PoolSizes {
        let db = self.databases.get(database);
        let size = self.user(user).and_then(|u| u.pool_size).or(db.and_then(|d| d.pool_size)).unwrap_or(self.pool.size);
        self.sizes_of(database, size)
    }

    /// The database's own values (`databases.<name>.*`, else `pool:`), before any
    /// user's `pool_size`: what PgBouncer's SHOW DATABASES reports.
    pub fn database_pool_sizes(&self, database: &str) -> PoolSizes {
        let size = self.databases.get(database).and_then(|d| d.pool_size).unwrap_or(self.pool.size);
        self.sizes_of(database, size)
    }

    /// `database`'s minimum and reserve for pools of `size`.
    fn sizes_of(&self, database: &str, size: usize) -> PoolSizes {
        let db = self.databases.get(database);
        let min = db.and_then(|d| d.min_pool_size).unwrap_or(self.pool.min_pool_size);
        let reserve = db.and_then(|d| d.reserve_pool_size).unwrap_or(self.pool.reserve_pool_size);
        PoolSizes { size, min_pool_size: min.min(size), reserve_pool_size: reserve }
    }

    /// Server connections allowed to `database` on each server (0: no limit).
    pub fn max_db_connections(&self, database: &str) -> usize {
        self.databases.get(database).and_then(|d| d.max_db_connections).unwrap_or(self.pool.max_db_connections)
    }

    /// Server connections allowed to `user` on each server (0: no limit).
    pub fn max_user_connections(&self, user: &str) -> usize {
        self.user(user).and_then(|u| u.max_user_connections).unwrap_or(self.pool.max_user_connections)
    }

    /// The override keys: sizes of at least 1, and a database's minimum within its size.
    pub(super) fn validate_pool_overrides(&self) -> Result<(), (String, String)> {
        let err = |k: String, m: String| Err((k, m));
        for u in &self.users {
            if u.pool_size == Some(0) {
                return err(format!("users.{}.pool_size", u.name), "must be at least 1".into());
            }
        }
        for (name, db) in &self.databases {
            let key = format!("databases.{name}");
            if db.pool_size == Some(0) {
                return err(format!("{key}.pool_size"), "must be at least 1".into());
            }
            let size = db.pool_size.unwrap_or(self.pool.size);
            match (db.min_pool_size, db.pool_size) {
                (Some(min), Some(_)) if min > size => {
                    return err(format!("{key}.min_pool_size"), format!("must not exceed {key}.pool_size ({size})"));
                }
                (Some(min), None) if min > size => {
                    return err(format!("{key}.min_pool_size"), format!("must not exceed pool.size ({size})"));
                }
                (None, Some(_)) if self.pool.min_pool_size > size => {
                    let min = self.pool.min_pool_size;
                    return err(
                        format!("{key}.pool_size"),
                        format!("is smaller than pool.min_pool_size ({min}): set {key}.min_pool_size too"),
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = "pool:\n  size: 10\n  min_pool_size: 2\n  reserve_pool_size: 1\n  max_db_connections: 30\nusers:\n  - name: app\n    password: app\n  - name: big\n    password: big\n    pool_size: 40\n    max_user_connections: 7\ndatabases:\n  app:\n    primary: 127.0.0.1:5432\n  small:\n    primary: 127.0.0.1:5432\n    pool_size: 3\n    min_pool_size: 1\n    reserve_pool_size: 0\n    max_db_connections: 0\n";

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(text, Path::new("pgmux.yaml"))
    }

    #[test]
    fn user_wins_over_database_which_wins_over_pool() {
        let c = parse(BASE).unwrap();
        let s = |db, user| c.pool_sizes(db, user);
        assert_eq!(s("app", "app"), PoolSizes { size: 10, min_pool_size: 2, reserve_pool_size: 1 });
        assert_eq!(s("small", "app"), PoolSizes { size: 3, min_pool_size: 1, reserve_pool_size: 0 });
        assert_eq!(s("small", "big"), PoolSizes { size: 40, min_pool_size: 1, reserve_pool_size: 0 });
        assert_eq!(s("app", "big").size, 40);
        assert_eq!((c.max_db_connections("app"), c.max_db_connections("small")), (30, 0));
        assert_eq!((c.max_user_connections("app"), c.max_user_connections("big")), (0, 7));
        assert_eq!(c.database_pool_sizes("small"), PoolSizes { size: 3, min_pool_size: 1, reserve_pool_size: 0 });
        assert_eq!(c.database_pool_sizes("app"), PoolSizes { size: 10, min_pool_size: 2, reserve_pool_size: 1 });
    }

    #[test]
    fn defaults_are_unlimited() {
        let c = parse("users:\n  - name: a\n    password: a\ndatabases:\n  d:\n    primary: h:1\n").unwrap();
        assert_eq!((c.pool.max_db_connections, c.pool.max_user_connections), (0, 0));
        assert_eq!(c.pool_sizes("d", "a"), PoolSizes { size: 10, min_pool_size: 0, reserve_pool_size: 0 });
    }

    #[test]
    fn a_minimum_is_capped_by_a_smaller_user_pool() {
        let c = parse(&BASE.replace("pool_size: 40", "pool_size: 1")).unwrap();
        assert_eq!(c.pool_sizes("app", "big"), PoolSizes { size: 1, min_pool_size: 1, reserve_pool_size: 1 });
    }

    #[test]
    fn bad_overrides_are_located() {
        let e = parse(&BASE.replace("pool_size: 40", "pool_size: 0")).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("users.big.pool_size", Some(11)), "{e}");
        let e = parse(&BASE.replace("    pool_size: 3", "    pool_size: 0")).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("databases.small.pool_size", Some(18)), "{e}");
        let e = parse(&BASE.replace("min_pool_size: 1", "min_pool_size: 4")).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("databases.small.min_pool_size", Some(19)), "{e}");
        assert!(e.message.contains("databases.small.pool_size (3)"), "{e}");
        let e = parse(&BASE.replace("    min_pool_size: 1\n", "").replace("min_pool_size: 2", "min_pool_size: 5")).unwrap_err();
        assert_eq!(e.key, "databases.small.pool_size", "{e}");
        assert!(e.message.contains("pool.min_pool_size (5)"), "{e}");
        let e = parse(&BASE.replace("    pool_size: 3\n", "").replace("min_pool_size: 1", "min_pool_size: 11")).unwrap_err();
        assert_eq!(e.message, "must not exceed pool.size (10)", "{e}");
        let e = parse(&BASE.replace("max_user_connections: 7", "max_user_connections: -1")).unwrap_err();
        assert_eq!(e.line, Some(12), "{e}");
    }
}
