//! Whether pgmux is shutting down: one flag, set once (SIGTERM, the admin console's
//! SHUTDOWN), read at every transaction boundary and watched by the listener, the
//! signal handler and `/readyz`.
//!
//! Clients are not woken through it (an idle client waits on its own socket and its
//! [`crate::clients::Kill`] signal alone): the state fires every client's kill
//! signal when the flag is set, and each client, seeing the flag, says goodbye at
//! its next boundary.
//!
//! A SIGTERM drains in two phases: first *draining* (`/readyz` says 503 and peers
//! hear so, but clients are still accepted and served, for `drain_delay`, while load
//! balancers take the instance out), then the shutdown proper (no longer accepting;
//! running transactions finish; idle clients are told 57P01).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

#[derive(Debug)]
pub struct Shutdown {
    begun: watch::Sender<bool>,
    draining: AtomicBool,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown { begun: watch::Sender::new(false), draining: AtomicBool::new(false) }
    }
}

impl Shutdown {
    /// Not ready any more (the first phase of a drain); true the first time.
    pub fn drain(&self) -> bool {
        !self.draining.swap(true, Ordering::Relaxed)
    }

    /// Draining or shutting down: `/readyz` says 503.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || self.begun()
    }

    /// Sets the flag; true the first time.
    pub fn begin(&self) -> bool {
        !self.begun.send_replace(true)
    }

    /// Whether a shutdown has begun (one read of the flag).
    #[inline]
    pub fn begun(&self) -> bool {
        *self.begun.borrow()
    }

    /// Waits until a shutdown begins (at once if it has).
    pub async fn wait(&self) {
        let mut rx = self.begun.subscribe();
        let _ = rx.wait_for(|b| *b).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_flag_is_set_once_and_seen_by_waiters() {
        let s = std::sync::Arc::new(Shutdown::default());
        assert!(!s.begun());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        assert!(s.begin());
        assert!(!s.begin(), "already begun");
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.expect("woken").unwrap();
        assert!(s.begun() && s.draining());
        let d = Shutdown::default();
        assert!(d.drain() && !d.drain());
        assert!(d.draining() && !d.begun(), "draining: not ready, still accepting");
    }
}
