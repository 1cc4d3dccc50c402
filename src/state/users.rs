//! The users pgmux knows: those of the configuration (swapped whole on reload) and
//! those `auth_query` found, each with what pgmux needs to check its password and to
//! log in to PostgreSQL as it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::auth::scram::{ScramKeys, ScramSecret};
use crate::config::Config;

/// A user, with what pgmux needs to check its password.
pub struct UserAuth {
    pub name: String,
    /// The password entry as written in the config (to notice changes on reload).
    configured: String,
    pub scram: ScramSecret,
    pub plaintext: Option<String>,
    /// With only a verifier configured: the SCRAM keys of the first client login,
    /// used to log in to PostgreSQL as this user.
    pub keys: Arc<OnceLock<ScramKeys>>,
    pub admin: bool,
}

impl UserAuth {
    /// From a password: plaintext, or a SCRAM-SHA-256 verifier.
    pub fn new(name: &str, password: &str, admin: bool) -> UserAuth {
        let (scram, plaintext) = match ScramSecret::parse_verifier(password) {
            Some(s) => (s, None),
            None => (ScramSecret::from_password(password), Some(password.to_string())),
        };
        UserAuth { name: name.to_string(), configured: password.to_string(), scram, plaintext, keys: Default::default(), admin }
    }
}

/// What `auth_query` said about a user, against what pgmux knew.
pub enum LookedUp {
    /// No usable secret: the login fails as for an unknown user.
    Unknown,
    /// The secret pgmux had: nothing changes.
    Same(Arc<UserAuth>),
    /// A new user, or a changed secret: pools built with the old one must go.
    Changed(Arc<UserAuth>),
}

pub struct Users {
    configured: ArcSwap<HashMap<String, Arc<UserAuth>>>,
    /// Users found by `auth_query`, with the secret each had at its last login.
    looked_up: DashMap<String, Arc<UserAuth>>,
}

impl Users {
    pub fn new(config: &Config) -> Users {
        Users { configured: ArcSwap::from_pointee(build(config, &HashMap::new())), looked_up: DashMap::new() }
    }

    /// A configured user, or one `auth_query` found.
    pub fn get(&self, name: &str) -> Option<Arc<UserAuth>> {
        self.configured(name).or_else(|| self.looked_up.get(name).map(|u| u.clone()))
    }

    pub fn configured(&self, name: &str) -> Option<Arc<UserAuth>> {
        self.configured.load().get(name).cloned()
    }

    /// Records what `auth_query` returned for `name` (`None`: no such user).
    pub fn looked_up(&self, name: &str, secret: Option<&str>) -> LookedUp {
        let Some(secret) = secret else {
            self.looked_up.remove(name);
            return LookedUp::Unknown;
        };
        if let Some(u) = self.looked_up.get(name).filter(|u| u.configured == secret) {
            return LookedUp::Same(u.clone());
        }
        let auth = Arc::new(UserAuth::new(name, secret, false));
        self.looked_up.insert(name.to_string(), auth.clone());
        LookedUp::Changed(auth)
    }

    /// The users of a reloaded config, keeping the state of those whose password did
    /// not change (their SCRAM salt, and keys recovered from client logins).
    pub fn reload(&self, config: &Config) {
        let users = build(config, &self.configured.load());
        self.configured.store(Arc::new(users));
    }
}

fn build(config: &Config, old: &HashMap<String, Arc<UserAuth>>) -> HashMap<String, Arc<UserAuth>> {
    config
        .users
        .iter()
        .map(|u| {
            let kept = old.get(&u.name).filter(|o| o.configured == u.password && o.admin == u.admin);
            let auth = match kept {
                Some(o) => o.clone(),
                None => Arc::new(UserAuth::new(&u.name, &u.password, u.admin)),
            };
            (u.name.clone(), auth)
        })
        .collect()
}
