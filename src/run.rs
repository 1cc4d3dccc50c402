//! Running the proxy as a process: bind, serve, and react to signals
//! (SIGTERM: drain then exit; SIGINT: exit now; SIGHUP: reload the config file).

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::proxy::{self, Proxy};

/// Serves until a signal says stop.
pub async fn run(config: Config, path: std::path::PathBuf) -> Result<(), String> {
    let listener = proxy::bind(&config).await.map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    tracing::info!(listen = %config.listen, mode = ?config.pool.mode, "pgmux started");
    let metrics_listener = match &config.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} (metrics_listen): {e}"))?),
        None => None,
    };
    let proxy = Proxy::with_path(config, Some(path));
    let server = tokio::spawn(proxy.clone().serve(listener));
    if let Some(l) = metrics_listener {
        tokio::spawn(crate::metrics::http::serve(l, proxy.clone()));
    }
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut shutdown = proxy.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let _ = proxy.reload();
                continue;
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM: no new clients; waiting for running transactions");
            }
            // SHUTDOWN from the admin console.
            _ = shutdown.wait_for(|s| *s) => {
                tracing::info!("SHUTDOWN: no new clients; waiting for running transactions");
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: closing now");
                server.abort();
                return Ok(());
            }
        }
        let left = proxy.drain().await;
        tracing::info!(clients_left = left, "shut down");
        break;
    }
    server.abort();
    Ok(())
}
