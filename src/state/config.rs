//! The configuration store: the running configuration and the TLS set up from it,
//! each swapped whole by a reload (no global config: readers hold what they loaded).
//!
//! Clients read the configuration through a [`ConfigCache`]: one pointer comparison
//! per look while it is unchanged.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::config::{Config, ConfigError};
use crate::router::classify::ClassifyConfig;
use crate::tls::{ClientTls, TlsError, Upstream, UpstreamHandle};

/// The running configuration, with what the router builds from it (read through
/// it as a [`Config`]).
pub struct Running {
    pub config: Config,
    /// `routing.write_functions`, as the classifier wants them.
    pub classifier: ClassifyConfig,
}

impl Running {
    pub fn new(config: Config) -> Running {
        Running { classifier: ClassifyConfig::from(&config.routing), config }
    }
}

impl std::ops::Deref for Running {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

/// A long-lived reader's view of the configuration (see [`ConfigStore::cache`]).
pub type ConfigCache<'a> = arc_swap::Cache<&'a ArcSwap<Running>, Arc<Running>>;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no configuration file to reload (pgmux demo)")]
    NoFile,
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

/// A configuration read from the file and checked whole, not yet in force.
pub struct Loaded {
    config: Config,
    client_tls: ClientTls,
    upstream: Upstream,
}

impl Loaded {
    pub fn config(&self) -> &Config {
        &self.config
    }
}

pub struct ConfigStore {
    running: ArcSwap<Running>,
    /// Where it was read from (None: built in memory, as by `pgmux demo`).
    path: Option<PathBuf>,
    /// TLS for clients, rebuilt from its files on RELOAD.
    client_tls: ArcSwap<ClientTls>,
    /// TLS to servers, shared by every pool's target, rebuilt on RELOAD.
    upstream: UpstreamHandle,
}

impl ConfigStore {
    /// A store for a configuration already validated (its TLS files were read a
    /// moment ago: should they fail now, that TLS is off, and logged).
    pub fn new(config: Config, path: Option<PathBuf>) -> ConfigStore {
        let client_tls = ClientTls::from_settings(&config.tls).unwrap_or_else(|e| {
            tracing::error!(error = %e, "TLS for clients is off");
            ClientTls { mode: config.tls.mode, acceptor: None }
        });
        let upstream = Upstream::load(&config.server_tls).unwrap_or_else(|e| {
            tracing::error!(error = %e, "server_tls unusable: connecting without TLS");
            Upstream::default()
        });
        ConfigStore {
            running: ArcSwap::from_pointee(Running::new(config)),
            path,
            client_tls: ArcSwap::from_pointee(client_tls),
            upstream: Arc::new(ArcSwap::from_pointee(upstream)),
        }
    }

    /// The configuration now.
    pub fn current(&self) -> Guard<Arc<Running>> {
        self.running.load()
    }

    /// The configuration as a long-lived reader (a client's session) sees it.
    pub fn cache(&self) -> ConfigCache<'_> {
        arc_swap::Cache::new(&self.running)
    }

    /// TLS for clients now.
    pub fn client_tls(&self) -> Guard<Arc<ClientTls>> {
        self.client_tls.load()
    }

    /// TLS to servers, as every pool and the monitor share it.
    pub fn upstream(&self) -> &UpstreamHandle {
        &self.upstream
    }

    /// Reads the file again and checks all of it, certificates included.
    pub fn read(&self) -> Result<Loaded, ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let config = Config::load(path)?;
        // Certificates are read again even when their paths did not change.
        let client_tls = ClientTls::from_settings(&config.tls)?;
        let upstream = Upstream::load(&config.server_tls)?;
        Ok(Loaded { config, client_tls, upstream })
    }

    /// Puts a configuration read by [`ConfigStore::read`] in force.
    pub fn apply(&self, loaded: Loaded) {
        self.client_tls.store(Arc::new(loaded.client_tls));
        self.upstream.store(Arc::new(loaded.upstream));
        self.running.store(Arc::new(Running::new(loaded.config)));
    }
}
