//! Who is in the fleet, and how much of each server budget this instance may use.
//!
//! With `fleet.share_pools`, every connection limit (`pool.size`, `min_pool_size`,
//! the reserve, `max_db_connections`, `max_user_connections` and their overrides) is
//! a total for the fleet, divided among the instances that are alive: with `n`
//! instances, the one of rank `r` (instances ordered by their random nonce) gets
//! `total / n`, plus one if `r < total % n`. The shares of one view add up to the
//! total.
//!
//! Instances learn of each other by heartbeats, so views differ for a moment when one
//! joins or leaves. The rule that keeps the sum of server connections within the
//! budget all the same: **a share shrinks at once, and grows only once every member
//! of the new view says it sees the same view and holds no more than its share in it
//! (it is *compliant*)**. Until then an instance keeps the smaller of its share in
//! the last view that everyone confirmed (*settled*) and its share in the new one. An
//! instance that has just started has no settled view: it takes nothing until its
//! first view settles, which happens once it has heard from (or given up on) every
//! peer address, and every instance it heard from confirms it. So a newcomer waits
//! while the others give up connections at transaction boundaries.
//!
//! This module is the bookkeeping only: no sockets, no clock of its own (callers
//! pass `now`), so every transition is unit-tested.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::Beat;

/// A set of live instances, identified by their nonces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Sorted nonces, this instance's included.
    members: Vec<u64>,
    hash: u64,
}

impl View {
    pub fn new(mut members: Vec<u64>) -> View {
        members.sort_unstable();
        members.dedup();
        // FNV-1a: the same value in every pgmux version, so mixed versions agree.
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for b in members.iter().flat_map(|m| m.to_be_bytes()) {
            hash = (hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        View { members, hash }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn contains(&self, nonce: u64) -> bool {
        self.members.binary_search(&nonce).is_ok()
    }

    /// `me`'s part of `total` in this view (0 if `me` is not in it).
    pub fn share(&self, me: u64, total: usize) -> usize {
        let Ok(rank) = self.members.binary_search(&me) else { return 0 };
        let n = self.members.len();
        total / n + usize::from(rank < total % n)
    }
}

/// What this instance last heard from one peer.
#[derive(Debug, Clone)]
pub struct Peer {
    pub beat: Beat,
    pub heard: Instant,
}

/// This instance's picture of the fleet.
#[derive(Debug)]
pub struct Membership {
    me: u64,
    timeout: Duration,
    peers: BTreeMap<u64, Peer>,
    /// Every peer address has answered or been given up on once.
    joined: bool,
    /// The last view every member confirmed.
    settled: Option<View>,
}

/// How this instance may size its pools now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shares {
    /// The view it believes in now.
    pub view: View,
    /// The last settled view (None: none yet, the instance takes nothing).
    pub settled: Option<View>,
    me: u64,
}

impl Shares {
    /// The part of a fleet-wide `total` this instance may use now.
    pub fn of(&self, total: usize) -> usize {
        match &self.settled {
            Some(s) if *s == self.view => s.share(self.me, total),
            Some(s) => s.share(self.me, total).min(self.view.share(self.me, total)),
            None => 0,
        }
    }

    /// The part of `total` this instance must hold no more than to be compliant.
    pub fn target(&self, total: usize) -> usize {
        self.view.share(self.me, total)
    }

    /// Shares under `view` with nothing settled: only [`Shares::target`] is of use
    /// (to ask the pools whether they are within it).
    pub fn probe(view: View, me: u64) -> Shares {
        Shares { view, settled: None, me }
    }

    /// A single instance, or sharing off: everything.
    pub fn whole() -> Shares {
        let view = View::new(vec![0]);
        Shares { settled: Some(view.clone()), view, me: 0 }
    }
}

impl Membership {
    pub fn new(me: u64, timeout: Duration) -> Membership {
        Membership { me, timeout, peers: BTreeMap::new(), joined: false, settled: None }
    }

    /// A heartbeat (or a heartbeat's answer) from a peer.
    pub fn heard(&mut self, beat: Beat, now: Instant) {
        if beat.nonce != self.me {
            self.peers.insert(beat.nonce, Peer { beat, heard: now });
        }
    }

    /// Every peer address has been tried once: the view is as complete as it gets.
    pub fn joined(&mut self) {
        self.joined = true;
    }

    /// Forgets peers not heard from within the timeout (they are gone).
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.timeout;
        self.peers.retain(|_, p| now.duration_since(p.heard) <= timeout);
    }

    /// Live peers, by nonce.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// The instances this one counts as alive, itself included.
    pub fn view(&self) -> View {
        View::new(std::iter::once(self.me).chain(self.peers.keys().copied()).collect())
    }

    /// Recomputes the shares; `compliant`: this instance holds no more than its
    /// share in the current view. Returns the shares to use.
    pub fn update(&mut self, compliant: bool) -> Shares {
        let view = self.view();
        let confirmed = self.joined && compliant && self.peers.values().all(|p| p.beat.view == view.hash() && p.beat.compliant);
        if confirmed {
            self.settled = Some(view.clone());
        }
        Shares { view, settled: self.settled.clone(), me: self.me }
    }

    /// Live peers whose cancel keys carry `instance`.
    pub fn with_instance(&self, instance: u16) -> impl Iterator<Item = &Peer> {
        self.peers.values().filter(move |p| p.beat.instance == instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fleet::wire::PeerState;

    fn beat(nonce: u64, view: &View, compliant: bool) -> Beat {
        Beat { nonce, instance: nonce as u16, state: PeerState::Ready, view: view.hash(), compliant }
    }

    #[test]
    fn shares_of_a_view_add_up_to_the_total() {
        for n in 1..8u64 {
            let v = View::new((1..=n).collect());
            for total in [0, 1, 5, 10, 12, 13, 100] {
                let sum: usize = (1..=n).map(|m| v.share(m, total)).sum();
                assert_eq!(sum, total, "{n} instances, total {total}");
            }
        }
        assert_eq!(View::new(vec![3, 1, 2]), View::new(vec![1, 2, 3]), "order does not matter");
        assert_eq!(View::new(vec![1]).share(2, 10), 0, "not a member");
    }

    #[test]
    fn a_newcomer_takes_nothing_until_its_view_settles() {
        let t0 = Instant::now();
        let mut c = Membership::new(3, Duration::from_secs(3));
        assert_eq!(c.update(true).of(12), 0, "before it has heard from its peers");
        let old = View::new(vec![1, 2]);
        c.heard(beat(1, &old, true), t0);
        c.heard(beat(2, &old, true), t0);
        c.joined();
        let s = c.update(true);
        assert_eq!((s.of(12), s.target(12)), (0, 4), "the others still see only themselves");
        let new = View::new(vec![1, 2, 3]);
        c.heard(beat(1, &new, false), t0);
        c.heard(beat(2, &new, true), t0);
        assert_eq!(c.update(true).of(12), 0, "instance 1 still holds more than 4");
        c.heard(beat(1, &new, true), t0);
        assert_eq!(c.update(true).of(12), 4);
    }

    #[test]
    fn a_share_shrinks_at_once_and_grows_only_when_everyone_agrees() {
        let t0 = Instant::now();
        let mut a = Membership::new(1, Duration::from_secs(3));
        let all = View::new(vec![1, 2, 3]);
        a.heard(beat(2, &all, true), t0);
        a.heard(beat(3, &all, true), t0);
        a.joined();
        assert_eq!(a.update(true).of(12), 4);
        // Instance 3 dies: its heartbeats stop.
        a.heard(beat(2, &all, true), t0 + Duration::from_secs(3));
        a.expire(t0 + Duration::from_secs(4));
        let two = View::new(vec![1, 2]);
        let s = a.update(true);
        assert_eq!((s.view.clone(), s.of(12), s.target(12)), (two.clone(), 4, 6), "waits for 2 to see it too");
        a.heard(beat(2, &two, true), t0 + Duration::from_secs(4));
        assert_eq!(a.update(true).of(12), 6, "settled: the dead one's share is taken over");
        // A new instance joins: the share shrinks before it is confirmed.
        a.heard(beat(4, &two, true), t0 + Duration::from_secs(5));
        let s = a.update(false);
        assert_eq!((s.of(12), s.target(12)), (4, 4));
    }

    #[test]
    fn a_draining_peer_keeps_its_share_until_it_is_gone() {
        let t0 = Instant::now();
        let mut a = Membership::new(1, Duration::from_secs(3));
        let both = View::new(vec![1, 2]);
        // A draining instance still shrinks like the others, and says so.
        a.heard(Beat { state: PeerState::Draining, ..beat(2, &both, false) }, t0);
        a.joined();
        assert_eq!(a.update(true).of(10), 0, "not confirmed: the draining peer may hold more than 5");
        a.heard(Beat { state: PeerState::Draining, ..beat(2, &both, true) }, t0);
        assert_eq!(a.update(true).of(10), 5, "it keeps its part while it drains");
        a.expire(t0 + Duration::from_secs(4));
        let s = a.update(true);
        assert_eq!(s.of(10), 10, "alone once it is gone");
    }

    #[test]
    fn cancel_keys_find_their_instance() {
        let mut a = Membership::new(1, Duration::from_secs(3));
        let v = View::new(vec![1, 2]);
        a.heard(beat(2, &v, true), Instant::now());
        assert_eq!(a.with_instance(2).count(), 1);
        assert_eq!(a.with_instance(5).count(), 0);
    }
}
