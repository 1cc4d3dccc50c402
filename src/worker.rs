//! Which worker thread this is.
//!
//! With `workers: N` (N > 1), pgmux runs N threads, each with a single-threaded
//! scheduler, started by `proxy::workers`; the listener gives new clients to each in
//! turn, and a client never leaves the thread it was given. A socket is watched by the reactor of the thread that
//! opened it, so a server connection remembers its thread (`ServerConn::home`) and a
//! pool lends a client a connection of the client's own thread first: then a
//! transaction's I/O wakes no other thread. The thread that runs `main` is worker 0.

use std::cell::Cell;

thread_local! {
    static ID: Cell<u16> = const { Cell::new(0) };
}

/// This thread's worker number (0 on any thread not started as a worker).
pub fn id() -> u16 {
    ID.with(Cell::get)
}

/// Marks this thread as worker `n` (at its start).
pub fn set(n: u16) {
    ID.with(|c| c.set(n));
}

/// The number of workers `workers: n` means: `n`, or one per CPU for 0.
pub fn count(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}
