//! A client waiting in a pool's FIFO queue for a connection or a slot.
//!
//! Grants are sent only under the pool's lock, and a waiter is queued under the same
//! lock hold in which its checkout found no room, so no grant can be missed. A waiter
//! dropped at any point (timeout, the client's task gone) hands back a grant sent to
//! it meanwhile and removes its entry from the queue: neither slots nor limit units
//! can leak, and the queue length is the number of clients really waiting.

use std::time::Instant;

use tokio::sync::oneshot;

use super::{Grant, Pool, PoolSettings, Room, State};
use crate::error::ClientError;

pub(super) struct Waiter<'a> {
    pool: &'a Pool,
    rx: oneshot::Receiver<Grant>,
    started: Instant,
    /// Its sender is still in the queue (no grant took it out).
    queued: bool,
}

impl<'a> Waiter<'a> {
    /// Queues a waiter; `st` is the pool's state, locked.
    pub(super) fn enqueue(pool: &'a Pool, st: &mut State) -> Waiter<'a> {
        let (tx, rx) = oneshot::channel();
        let started = Instant::now();
        st.waiters.push_back((started, tx));
        pool.sync_waiting(st);
        Waiter { pool, rx, started, queued: true }
    }

    /// Waits for a grant until `deadline`; after `reserve_pool_timeout`, takes a
    /// reserve slot if the reserve (and the limits) have room.
    pub(super) async fn wait(mut self, deadline: Instant) -> Result<Grant, ClientError> {
        let settings = self.pool.settings().clone();
        let reserve_at = self.started + settings.reserve_timeout;
        if settings.reserve_size > 0 && reserve_at < deadline {
            if let Ok(r) = tokio::time::timeout_at(reserve_at.into(), &mut self.rx).await {
                return self.received(r);
            }
            if let Some(g) = self.try_reserve(&settings) {
                return Ok(g);
            }
        }
        match tokio::time::timeout_at(deadline.into(), &mut self.rx).await {
            Ok(r) => self.received(r),
            Err(_) => {
                // A grant may have arrived just as the timer fired: take it.
                self.rx.close();
                match self.rx.try_recv() {
                    Ok(g) => {
                        self.queued = false;
                        Ok(g)
                    }
                    Err(_) => {
                        self.pool.counters.timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Err(ClientError::CheckoutTimeout {
                            pool: self.pool.name.clone(),
                            timeout: self.pool.settings().checkout_timeout,
                        })
                    }
                }
            }
        }
    }

    fn received(&mut self, r: Result<Grant, oneshot::error::RecvError>) -> Result<Grant, ClientError> {
        // Whoever sent took the entry out (or the pool dropped its queue).
        self.queued = false;
        r.map_err(|_| self.pool.unavailable("pool closed"))
    }

    fn try_reserve(&mut self, settings: &PoolSettings) -> Option<Grant> {
        let mut st = self.pool.lock();
        // Grants are sent under the lock: one sent before it was taken is here now.
        if let Ok(g) = self.rx.try_recv() {
            self.queued = false;
            return Some(g);
        }
        if self.pool.take_slot(&mut st, settings.size + settings.reserve_size) != Room::Taken {
            return None;
        }
        // Its queue entry is stale now: removed when the waiter is dropped.
        self.rx.close();
        Some(Grant::Slot)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(g) = self.rx.try_recv() {
            self.queued = false;
            self.pool.take_back(g);
        }
        if self.queued {
            let mut st = self.pool.lock();
            st.waiters.retain(|(_, w)| !w.is_closed());
            self.pool.sync_waiting(&mut st);
        }
    }
}
