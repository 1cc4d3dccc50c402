//! Running the proxy as a process: bind, serve, and react to signals
//! (SIGTERM: drain then exit; SIGINT: exit now; SIGHUP: reload the config file).

use tokio::signal::unix::{signal, SignalKind};

use std::io;

use crate::config::{Config, ConfigError};
use crate::proxy::{Listener, Proxy};
use crate::state::State;

/// Why pgmux (or `pgmux demo`) could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}{hint}: {source}")]
    Listen { addr: String, hint: &'static str, source: io::Error },
    #[error("cannot watch signals: {0}")]
    Signals(io::Error),
    #[error("could not start PostgreSQL: {0}")]
    Cluster(io::Error),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

impl StartError {
    pub(crate) fn listen(addr: impl Into<String>, hint: &'static str) -> impl FnOnce(io::Error) -> StartError {
        let addr = addr.into();
        move |source| StartError::Listen { addr, hint, source }
    }
}

/// Serves until a signal says stop.
pub async fn run(config: Config, path: std::path::PathBuf) -> Result<(), StartError> {
    raise_open_files_limit(config.max_client_connections);
    let listener = Listener::bind(&config).map_err(StartError::listen(&config.listen, ""))?;
    tracing::info!(listen = %config.listen, mode = ?config.pool.mode, "pgmux started");
    let metrics_listener = match &config.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(StartError::listen(addr, " (metrics_listen)"))?),
        None => None,
    };
    let workers = crate::worker::count(config.workers);
    let state = State::with_path(config, Some(path));
    let spread = crate::proxy::workers::start(&state, workers).map_err(StartError::listen(&state.config.current().listen, " (workers)"))?;
    let proxy = Proxy::start(state, listener, spread, metrics_listener);
    let state = proxy.state.clone();
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(StartError::Signals)?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = state.reload();
                continue;
            }
            _ = term.recv() => {
                // Not ready first, still accepting for drain_delay; SIGINT cuts it short.
                tokio::select! {
                    _ = proxy.stop_being_ready() => {}
                    _ = int.recv() => {
                        tracing::info!("SIGINT: closing now");
                        proxy.stop();
                        return Ok(());
                    }
                }
                tracing::info!("SIGTERM: no new clients; waiting for running transactions");
            }
            // SHUTDOWN from the admin console.
            _ = state.shutdown.wait() => {
                tracing::info!("SHUTDOWN: no new clients; waiting for running transactions");
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: closing now");
                proxy.stop();
                return Ok(());
            }
        }
        let left = proxy.drain().await;
        tracing::info!(clients_left = left, "shut down");
        break;
    }
    proxy.stop();
    Ok(())
}

/// Raises the soft limit on open files to the hard one: every client and server
/// connection is a descriptor, and the usual soft default (1024) is far below
/// `max_client_connections`. Warns when even the hard limit is below it (clients
/// past the limit are refused: accept fails).
fn raise_open_files_limit(max_clients: usize) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let soft = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above. On failure (a hard limit the kernel caps lower) the soft one stays.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            tracing::info!(from = soft, to = lim.rlim_cur, "open files limit raised");
        } else {
            lim.rlim_cur = soft;
        }
    }
    // Room for the server connections, listeners and files besides the clients.
    let needed = max_clients as libc::rlim_t + 256;
    if lim.rlim_cur < needed {
        tracing::warn!(
            limit = lim.rlim_cur,
            max_client_connections = max_clients,
            "the open files limit (ulimit -n) is too low for max_client_connections: clients past it are refused"
        );
    }
}
