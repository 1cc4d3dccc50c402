//! PAUSE and RESUME: databases (or all) where no new transaction starts until resumed.

use std::collections::BTreeSet;

use tokio::sync::watch;

/// What PAUSE holds back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paused {
    pub all: bool,
    pub databases: BTreeSet<String>,
}

impl Paused {
    pub fn holds(&self, database: &str) -> bool {
        self.all || self.databases.contains(database)
    }
}

/// The paused databases, watched by clients about to start a transaction.
#[derive(Debug)]
pub struct Pause {
    paused: watch::Sender<Paused>,
}

impl Default for Pause {
    fn default() -> Self {
        Pause { paused: watch::Sender::new(Paused::default()) }
    }
}

impl Pause {
    /// Pauses one database (`Some`) or all.
    pub fn pause(&self, database: Option<&str>) {
        self.paused.send_modify(|p| match database {
            Some(d) => {
                p.databases.insert(d.to_string());
            }
            None => p.all = true,
        });
    }

    /// Resumes one database (`Some`), or everything.
    pub fn resume(&self, database: Option<&str>) {
        self.paused.send_modify(|p| match database {
            Some(d) => {
                p.databases.remove(d);
            }
            None => *p = Paused::default(),
        });
    }

    /// Whether `database` is paused now.
    #[inline]
    pub fn holds(&self, database: &str) -> bool {
        self.paused.borrow().holds(database)
    }

    /// Waits while `database` is paused (returns at once when it is not).
    pub async fn wait_unpaused(&self, database: &str) {
        if !self.holds(database) {
            return;
        }
        let mut rx = self.paused.subscribe();
        let _ = rx.wait_for(|p| !p.holds(database)).await;
    }
}
