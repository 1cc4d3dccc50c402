//! The worker threads of `workers: N` (N > 1): worker 0 is the thread that runs
//! `main` (with the listener [`Proxy::start`](super::Proxy::start) serves and every
//! other job); workers 1 to N-1 each run a single-threaded scheduler with a TCP
//! listening socket of their own on the same address (`SO_REUSEPORT`: the kernel
//! spreads new clients across the N sockets). A client stays on the thread that
//! accepted it, and pools lend it connections its thread opened first (see
//! [`crate::worker`]): a transaction wakes no other thread, and costs what it costs
//! with one worker, while the pools, their limits and the statistics stay one set.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::Listener;
use crate::state::State;

/// Starts workers 1 to `n - 1`, each listening on `listener`'s address. Returns
/// when each has its socket (an error if one could not bind it).
pub fn start(state: &Arc<State>, listener: &Listener, n: usize) -> io::Result<()> {
    let addr = listener.local_addr()?;
    for i in 1..n {
        let socket = Listener::reuse_port_socket(addr)?;
        let state = state.clone();
        std::thread::Builder::new().name(format!("pgmux-worker-{i}")).spawn(move || run(i as u16, socket, state))?;
    }
    Ok(())
}

/// A worker's thread: serves the clients its socket accepts until shutdown begins,
/// then keeps running theirs until the process exits (the main thread drains).
fn run(n: u16, socket: std::net::TcpListener, state: Arc<State>) {
    crate::worker::set(n);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(worker = n, error = %e, "cannot start a worker's scheduler"),
    };
    rt.block_on(async move {
        let listener = match Listener::from_std(socket) {
            Ok(l) => l,
            Err(e) => return tracing::error!(worker = n, error = %e, "cannot listen"),
        };
        let _memory = tokio::spawn(give_back_memory(state.clone()));
        listener.serve(state).await;
        std::future::pending::<()>().await
    });
}

/// This thread's part of the upkeep: the spare read buffers no client took in
/// the last second are freed, and memory given back after a wave of clients.
pub(super) async fn give_back_memory(state: Arc<State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trim = crate::memory::Trim::default();
    loop {
        tick.tick().await;
        let freed = crate::client::buffers::after_tick();
        trim.after_tick(state.clients.connected(), freed);
    }
}
