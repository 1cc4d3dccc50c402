//! The worker threads of `workers: N`, and how accepted clients are spread across
//! them. Worker 0 is the thread that runs `main` (with the listener and every other
//! job); workers 1 to N-1 each run a single-threaded scheduler. The listener hands
//! each accepted socket to the next worker in turn ([`Spread`]): the socket joins
//! that thread's reactor and the client never leaves it, and pools lend it
//! connections its thread opened first (see [`crate::worker`]). A transaction then
//! wakes no other thread, and costs what it costs with one worker, while the pools,
//! their limits and the statistics stay one set.
//!
//! Why not a `SO_REUSEPORT` socket per thread (as this module did first): the
//! kernel then picks the socket by a hash of the client's address, and on this
//! project's CI kernel (6.18) a second listening socket sometimes received no
//! client at all (the test of two workers found 501 clients on one and 0 on the
//! other in about one run in three). Handing over costs one wake-up of the other
//! thread per new client, and spreads them exactly.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::clients::Arrival;
use crate::net::Stream;
use crate::state::State;

/// A socket just accepted, non-blocking and not yet tied to a thread's reactor.
pub enum Accepted {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

/// A client on its way to another worker (counted as arriving already, so that a
/// drain that begins meanwhile waits for it).
type Handoff = (Accepted, Arrival);

/// Where the listener sends the clients it accepts: to each worker in turn.
pub struct Spread {
    /// Workers 1 to N-1 (worker 0 is this thread).
    others: Vec<UnboundedSender<Handoff>>,
    /// `pgmux_clients_accepted_total{worker}`, by worker.
    given: Vec<Counter>,
    next: usize,
}

impl Spread {
    /// Every client served on this thread (`workers: 1`).
    pub fn here(state: &State) -> Spread {
        Spread { others: vec![], given: vec![state.metrics.accepted_by_worker(0)], next: 0 }
    }

    /// Gives `socket` to the next worker (this thread's turn comes too).
    pub fn place(&mut self, socket: Accepted, state: &Arc<State>) {
        let n = self.next;
        self.next = (n + 1) % self.given.len();
        self.given[n].increment(1);
        // Counted now: a drain that begins before the client's task runs waits for it.
        let arrival = state.clients.arriving();
        if n == 0 {
            return serve(socket, arrival, state);
        }
        // A worker whose thread is gone (it could not start its scheduler): here.
        if let Err(e) = self.others[n - 1].send((socket, arrival)) {
            let (socket, arrival) = e.0;
            serve(socket, arrival, state);
        }
    }
}

/// Starts workers 1 to `n - 1`; the [`Spread`] over all `n` for the listener.
pub fn start(state: &Arc<State>, n: usize) -> io::Result<Spread> {
    let mut spread = Spread::here(state);
    for i in 1..n {
        let (tx, rx) = unbounded_channel();
        let worker_state = state.clone();
        std::thread::Builder::new().name(format!("pgmux-worker-{i}")).spawn(move || run(i as u16, rx, worker_state))?;
        spread.others.push(tx);
        spread.given.push(state.metrics.accepted_by_worker(i as u16));
    }
    Ok(spread)
}

/// Starts a task serving `socket` on this thread's scheduler.
fn serve(socket: Accepted, arrival: Arrival, state: &Arc<State>) {
    let stream = match socket {
        Accepted::Tcp(s) => tokio::net::TcpStream::from_std(s).map(Stream::Plain),
        Accepted::Unix(s) => tokio::net::UnixStream::from_std(s).map(Stream::Unix),
    };
    match stream {
        Ok(s) => drop(tokio::spawn(crate::client::serve(s, state.clone(), arrival))),
        // The reactor refused it (out of memory): the client sees the socket close.
        Err(e) => tracing::error!(error = %e, "cannot watch an accepted socket"),
    }
}

/// A worker's thread: serves the clients the listener gives it until shutdown
/// begins, then keeps running theirs until the process exits (the main thread drains).
fn run(n: u16, mut clients: UnboundedReceiver<Handoff>, state: Arc<State>) {
    crate::worker::set(n);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return tracing::error!(worker = n, error = %e, "cannot start a worker's scheduler"),
    };
    rt.block_on(async move {
        let _memory = tokio::spawn(give_back_memory(state.clone()));
        while let Some((socket, arrival)) = clients.recv().await {
            serve(socket, arrival, &state);
        }
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
        let freed = crate::net::buffers::after_tick();
        trim.after_tick(state.clients.connected(), freed);
    }
}
