//! The `fleet:` block: the other pgmux instances this one works with, the secret
//! they share, and whether they divide the server budget.

use std::path::PathBuf;

use serde::Deserialize;

use super::Dur;

/// Shortest `fleet.secret` accepted: it authenticates cancels and heartbeats.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// Every instance's client address (`host:port`), this one included.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Instead of `peers`: a name (`host:port`) re-resolved every few seconds, each
    /// address it resolves to a peer (a Kubernetes headless Service).
    #[serde(default)]
    pub peers_dns: Option<String>,
    /// Shared by the fleet; authenticates what peers say to each other.
    #[serde(default)]
    pub secret: String,
    /// Instead of `secret`: a file holding it (a mounted Kubernetes Secret), read
    /// when the config is read; surrounding whitespace is ignored.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Pool sizes and connection limits are the fleet's totals, divided among the
    /// instances that are alive.
    #[serde(default)]
    pub share_pools: bool,
    /// How often each instance greets every peer.
    #[serde(default = "defaults::heartbeat_interval")]
    pub heartbeat_interval: Dur,
    /// A peer not heard from for this long is gone (its share is taken over).
    #[serde(default = "defaults::peer_timeout")]
    pub peer_timeout: Dur,
}

impl FleetConfig {
    /// Reads `secret_file` into `secret`; errors name the key.
    pub fn read_secret_file(&mut self) -> Result<(), (String, String)> {
        let Some(path) = &self.secret_file else { return Ok(()) };
        if !self.secret.is_empty() {
            return Err(("fleet.secret_file".into(), "give either secret or secret_file, not both".into()));
        }
        match std::fs::read_to_string(path) {
            Ok(text) => self.secret = text.trim().to_string(),
            Err(e) => return Err(("fleet.secret_file".into(), format!("cannot read \"{}\": {e}", path.display()))),
        }
        Ok(())
    }

    /// Checks what types cannot; errors name the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: String| Err((format!("fleet.{k}"), m));
        match (self.peers.is_empty(), &self.peers_dns) {
            (true, None) => return err("peers", "give the instances' addresses, or peers_dns".into()),
            (false, Some(_)) => return err("peers_dns", "give either peers or peers_dns, not both".into()),
            _ => {}
        }
        for p in self.peers.iter().chain(self.peers_dns.iter()) {
            let ok = p.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                let key = if self.peers_dns.is_some() { "peers_dns" } else { "peers" };
                return err(key, format!("invalid address \"{p}\" (expected host:port)"));
            }
        }
        if self.secret.is_empty() {
            return err("secret", "required (or secret_file)".into());
        }
        if self.secret.len() < MIN_SECRET_LEN {
            return err("secret", format!("must be at least {MIN_SECRET_LEN} characters"));
        }
        if self.heartbeat_interval.0.is_zero() {
            return err("heartbeat_interval", "must be more than 0".into());
        }
        if self.peer_timeout.0 < self.heartbeat_interval.0 * 2 {
            return err("peer_timeout", "must be at least twice heartbeat_interval".into());
        }
        Ok(())
    }
}

mod defaults {
    use super::Dur;
    use std::time::Duration;
    pub fn heartbeat_interval() -> Dur {
        Dur(Duration::from_secs(1))
    }
    pub fn peer_timeout() -> Dur {
        Dur(Duration::from_secs(3))
    }
}
