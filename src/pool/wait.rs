//! A client waiting in a pool's FIFO queue for a connection or a slot.
//!
//! Grants are sent only under the pool's lock, and a waiter is queued under the same
//! lock hold in which its checkout found no room, so no grant can be missed. A waiter
//! dropped at any point (timeout, the client's task gone) hands back a grant sent to
//! it meanwhile and removes its entry from the queue: neither slots nor limit units
//! can leak, and the queue length is the number of clients really waiting.
//!
//! `checkout_timeout` is enforced by one task per pool ([`expire_waiters`]), not by
//! a timer per waiter: the queue is FIFO and every waiter has the same timeout, so
//! the longest waiter is always the next to expire, and a busy pool's thousands of
//! short waits each arm and cancel no timer.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::{oneshot, Notify};

use super::{Grant, Pool, Room, State};
use crate::error::ClientError;

/// A waiter's entry in its pool's queue.
pub(super) struct Queued {
    /// When it began to wait.
    pub since: Instant,
    /// Its client's worker thread ([`crate::worker`]).
    pub worker: u16,
    pub tx: oneshot::Sender<Grant>,
}

pub(super) struct Waiter<'a> {
    pool: &'a Pool,
    rx: oneshot::Receiver<Grant>,
    started: Instant,
    /// Its sender is still in the queue (no grant took it out).
    queued: bool,
    /// `reserve_pool_timeout`, when the pool has a reserve.
    reserve_after: Option<std::time::Duration>,
}

impl<'a> Waiter<'a> {
    /// Queues a waiter of worker thread `worker` that began waiting at `started`; `st` is the pool's state,
    /// locked. `again`: it was granted a connection that proved unusable, so it
    /// goes first (it was granted before everyone now queued, so the queue stays
    /// in order of `started`, which the expiry task relies on).
    pub(super) fn enqueue(pool: &'a Pool, st: &mut State, started: Instant, again: bool, worker: u16) -> Waiter<'a> {
        let (tx, rx) = oneshot::channel();
        if st.waiters.is_empty() {
            // The expiry task sleeps without a deadline while nobody waits.
            pool.expiry.notify_one();
        }
        let q = Queued { since: started, worker, tx };
        if again {
            st.waiters.push_front(q);
        } else {
            st.waiters.push_back(q);
        }
        pool.sync_waiting(st);
        let reserve_after = (st.settings.reserve_size > 0).then_some(st.settings.reserve_timeout);
        Waiter { pool, rx, started, queued: true, reserve_after }
    }

    /// Waits for a grant or for [`expire_waiters`] to say `checkout_timeout` has
    /// passed; after `reserve_pool_timeout`, takes a reserve slot if the reserve
    /// (and the limits) have room.
    pub(super) async fn wait(mut self) -> Result<Grant, ClientError> {
        if let Some(reserve_at) = self.reserve_after.map(|t| self.started + t) {
            if let Ok(r) = tokio::time::timeout_at(reserve_at.into(), &mut self.rx).await {
                return self.received(r);
            }
            if let Some(g) = self.try_reserve() {
                return Ok(g);
            }
        }
        let r = (&mut self.rx).await;
        self.received(r)
    }

    fn received(&mut self, r: Result<Grant, oneshot::error::RecvError>) -> Result<Grant, ClientError> {
        // Whoever sent took the entry out (or the pool dropped its queue).
        self.queued = false;
        match r {
            Ok(Grant::Expired) => {
                self.pool.counters.timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(ClientError::CheckoutTimeout { pool: self.pool.name.clone(), timeout: self.pool.settings().checkout_timeout })
            }
            Ok(g) => Ok(g),
            Err(_) => Err(self.pool.unavailable("pool closed")),
        }
    }

    fn try_reserve(&mut self) -> Option<Grant> {
        let mut st = self.pool.lock();
        let cap = st.settings.size + st.settings.reserve_size;
        // Grants are sent under the lock: one sent before it was taken is here now.
        if let Ok(g) = self.rx.try_recv() {
            self.queued = false;
            return Some(g);
        }
        if self.pool.take_slot(&mut st, cap) != Room::Taken {
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
            st.waiters.retain(|q| !q.tx.is_closed());
            self.pool.sync_waiting(&mut st);
        }
    }
}

/// The pool's expiry task: sleeps until the longest waiter's `checkout_timeout`
/// runs out, answers every waiter past it with [`Grant::Expired`], and sleeps again
/// (without a deadline while nobody waits). Ends when the pool is dropped.
pub(super) async fn expire_waiters(pool: Weak<Pool>, wake: Arc<Notify>) {
    let mut timer = Box::pin(tokio::time::sleep(std::time::Duration::ZERO));
    loop {
        let next = match pool.upgrade() {
            Some(p) => p.expire_due(Instant::now()),
            None => return,
        };
        match next {
            Some(at) => {
                timer.as_mut().reset(at.into());
                tokio::select! {
                    _ = &mut timer => {}
                    // A reload may have shortened the timeout; the pool's drop wakes it too.
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

impl Pool {
    /// Answers the waiters whose `checkout_timeout` has run out; returns when the
    /// next one will.
    fn expire_due(&self, now: Instant) -> Option<Instant> {
        let mut st = self.lock();
        let timeout = st.settings.checkout_timeout;
        while let Some(q) = st.waiters.front() {
            let at = q.since + timeout;
            if at > now {
                return Some(at);
            }
            let q = st.waiters.pop_front().expect("looked at it");
            // A waiter gone meanwhile (its receiver closed) needs no answer.
            let _ = q.tx.send(Grant::Expired);
        }
        self.sync_waiting(&mut st);
        None
    }

    /// Starts the expiry task the first time anyone waits.
    pub(super) fn watch_expiry(self: &Arc<Self>) {
        if !self.expiry_started.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tokio::spawn(expire_waiters(Arc::downgrade(self), self.expiry.clone()));
        }
    }
}
