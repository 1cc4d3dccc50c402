//! One client connection, from accept to close.
//!
//! - [`login`]: first packets, authentication, greeting.
//! - [`session`]: the loop between transactions: checkout, settings sync, release.
//! - [`relay`]: the hot path forwarding bytes during a transaction.
//! - [`txn`]: the protocol bookkeeping that says when a transaction is over.

pub mod login;
pub mod relay;
pub mod session;
pub mod txn;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::protocol::backend;
use crate::protocol::frame::Framer;
use crate::proxy::Proxy;
use login::Refusal;
use session::{Session, SessionEnd};

/// Serves one accepted client connection to the end.
pub async fn serve(mut stream: TcpStream, proxy: Arc<Proxy>) {
    let _count = proxy.client_guard();
    let key = proxy.cancel.register();
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let span = tracing::info_span!("client", id = key.entry.pid, %peer);
    async {
        let timeout = proxy.config.startup_timeout.0;
        let logged_in = match tokio::time::timeout(timeout, login::login(&mut stream, &proxy, &key.entry)).await {
            Ok(Ok(l)) => l,
            Ok(Err(Refusal::Error(e))) => {
                tracing::info!(error = %e, "login refused");
                let mut out = BytesMut::new();
                backend::error(&mut out, &e);
                let _ = stream.write_all(&out).await;
                return;
            }
            Ok(Err(Refusal::Silent)) => return,
            Err(_) => {
                tracing::info!("startup timed out");
                return;
            }
        };
        tracing::debug!(user = %logged_in.user, database = %logged_in.database, "logged in");
        let mut session = Session {
            proxy: &proxy,
            stream,
            login: logged_in,
            cancel: key.entry.clone(),
            cbuf: BytesMut::new(),
            cframer: Framer::default(),
        };
        match session.run().await {
            SessionEnd::ClientLeft | SessionEnd::Shutdown => tracing::debug!("client left"),
            SessionEnd::Error(e) => tracing::info!(error = %e, "session ended with an error"),
        }
    }
    .instrument(span)
    .await
}
