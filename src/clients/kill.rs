//! The signal that ends one client's session from outside its task: the admin
//! console's KILL / KILL_CLIENT, and the wake-up a graceful shutdown sends every
//! client (which tells the two apart by the shutdown flag). It lives in the client's
//! entry in the [client registry](super). [`Kill::wake`] only wakes the task (a
//! listening client's notifications arrived): its watch reports no firing.
//!
//! It is polled on every turn of the client's hot loop, so watching it costs one
//! atomic load: the task's waker is stored once (again only if the task's waker
//! changes), not registered and unregistered at each wait as a `Notify` would be.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

/// The sending side, shared (it lives in the client's registry entry).
#[derive(Debug, Default)]
pub struct Kill {
    /// How many times it was fired.
    fired: AtomicU32,
    waker: Mutex<Option<Waker>>,
}

impl Kill {
    /// Wakes the client's task; its watch reports the signal once.
    pub fn fire(&self) {
        self.fired.fetch_add(1, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            w.wake_by_ref();
        }
    }
}

impl Kill {
    /// Wakes the client's task without firing: the task looks at what it waits for.
    pub fn wake(&self) {
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            w.wake_by_ref();
        }
    }
}

/// The client task's side: which firings it has seen, and the waker it stored.
#[derive(Debug, Default)]
pub struct KillWatch {
    seen: u32,
    registered: Option<Waker>,
}

impl KillWatch {
    /// Ready once per firing not yet seen. A firing before the first poll is seen
    /// then (like a stored `Notify` permit).
    pub fn poll(&mut self, kill: &Kill, cx: &mut Context<'_>) -> Poll<()> {
        if !self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            *kill.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(w.clone());
            self.registered = Some(w);
        }
        // After the store: a firing this load misses wakes the stored waker.
        let now = kill.fired.load(Ordering::SeqCst);
        if now != self.seen {
            self.seen = now;
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Waits for the next firing.
    #[cfg(test)]
    pub async fn fired(&mut self, kill: &Kill) {
        std::future::poll_fn(|cx| self.poll(kill, cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn each_firing_is_seen_once() {
        let kill = Arc::new(Kill::default());
        let mut watch = KillWatch::default();
        kill.fire();
        // Fired before the first wait: seen at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), watch.fired(&kill)).await.expect("seen");
        // Not again.
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), watch.fired(&kill)).await.is_err());
        // A firing from another task wakes the waiting one.
        let k = kill.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            k.fire();
        });
        tokio::time::timeout(std::time::Duration::from_secs(2), watch.fired(&kill)).await.expect("woken");
    }
}
