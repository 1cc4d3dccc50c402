//! Who listens to what, and the notifications waiting for each listener.
//!
//! One [`Hub`] per database: a table from channel to the clients listening on it, and
//! for each listening client an [`Inbox`], a bounded queue of notifications that the
//! client's task empties between its transactions. The database's listening
//! connection (`notify::listener`) LISTENs to the union of the channels and hands
//! every notification to [`Hub::deliver`], which puts it in the inbox of each client
//! listening on its channel and wakes that client. Nothing here does I/O.
//!
//! A client that starts listening on a channel gets that channel's notifications
//! from two sources, cut at one point of the server's notification order: from the
//! server connection its LISTEN ran on, up to a marker notification pgmux sends
//! there, and from the hub after the listening connection has read that marker. The
//! subscription waits behind a [`Gate`] until then ([`Hub::listen_gated`],
//! [`Hub::marker`], [`Hub::merge`]); so nothing is missed or delivered twice.
//!
//! An inbox that is full when a notification arrives is marked *overflowed* and takes
//! nothing more: the client is told and disconnected, rather than pgmux's memory
//! growing without bound behind a client that stopped reading. When the listening
//! connection breaks, every inbox is marked *missed*: notifications sent while it was
//! down are lost, and the clients are told so.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// One notification, as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The process id of the server backend that sent it.
    pub pid: i32,
    pub channel: Arc<str>,
    pub payload: Arc<str>,
}

/// What happened to an inbox besides notifications arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    None = 0,
    /// It was full when a notification came: that one and what followed are lost.
    Overflowed = 1,
    /// The listening connection broke: notifications may have been missed.
    Missed = 2,
}

/// A listening client's queue of notifications.
pub struct Inbox {
    queue: Mutex<VecDeque<Arc<Notification>>>,
    cap: usize,
    trouble: AtomicU8,
    /// Wakes the client's task (it then looks at the queue). Called when the queue
    /// stops being empty or trouble comes, not at every notification.
    wake: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("len", &self.len()).field("cap", &self.cap).finish_non_exhaustive()
    }
}

impl Inbox {
    pub fn new(cap: usize, wake: Box<dyn Fn() + Send + Sync>) -> Arc<Inbox> {
        Arc::new(Inbox { queue: Mutex::new(VecDeque::new()), cap: cap.max(1), trouble: AtomicU8::new(0), wake })
    }

    /// Takes everything queued (in the order the server sent it).
    pub fn drain(&self) -> Vec<Arc<Notification>> {
        self.queue.lock().unwrap().drain(..).collect()
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Something for the client: notifications, or trouble to tell.
    pub fn has_news(&self) -> bool {
        self.trouble.load(Relaxed) != 0 || !self.is_empty()
    }

    pub fn trouble(&self) -> Trouble {
        match self.trouble.load(Relaxed) {
            1 => Trouble::Overflowed,
            2 => Trouble::Missed,
            _ => Trouble::None,
        }
    }

    /// Queues notifications; false (and the inbox overflowed) when it is full.
    pub fn push_all(&self, ns: &[Arc<Notification>]) -> bool {
        let mut q = self.queue.lock().unwrap();
        if self.trouble.load(Relaxed) == Trouble::Overflowed as u8 {
            return false;
        }
        let was_empty = q.is_empty();
        if q.len() + ns.len() > self.cap {
            self.trouble.store(Trouble::Overflowed as u8, Relaxed);
            drop(q);
            (self.wake)();
            return false;
        }
        q.extend(ns.iter().cloned());
        drop(q);
        if was_empty && !ns.is_empty() {
            (self.wake)();
        }
        true
    }

    fn push(&self, n: &Arc<Notification>) -> bool {
        self.push_all(std::slice::from_ref(n))
    }

    /// Drops queued notifications of `channels` (the client stopped listening on them:
    /// PostgreSQL delivers nothing of a channel after UNLISTEN, not even what was
    /// sent before and not yet read).
    pub fn purge(&self, channels: &BTreeSet<Arc<str>>) {
        self.queue.lock().unwrap().retain(|n| !channels.contains(&n.channel));
    }

    /// The listening connection broke (or could not be had in time).
    pub fn missed(&self) {
        let _ = self.trouble.compare_exchange(Trouble::None as u8, Trouble::Missed as u8, Relaxed, Relaxed);
        (self.wake)();
    }
}

/// Counters for the metrics endpoint and SHOW LISTENS.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Notifications the listening connection received.
    pub received: AtomicU64,
    /// Notifications put in an inbox (one per listening client).
    pub delivered: AtomicU64,
    /// Notifications lost to a full inbox.
    pub dropped: AtomicU64,
    /// Times the listening connection was lost (clients told they may have missed some).
    pub lost: AtomicU64,
    /// Clients disconnected because their inbox overflowed (`54000`).
    pub overflows: AtomicU64,
    /// Clients disconnected because the listening connection was lost (`08006`).
    pub missed: AtomicU64,
}

/// How a gate changes a client's subscriptions at its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateKind {
    /// New channels: the hub delivers them from the marker on.
    Open,
    /// The client leaves the hub (it is pinned to its connection): nothing after the marker.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the marker.
    Waiting,
    /// The marker came: an opening gate keeps what arrives until [`Hub::merge`].
    Passed,
    /// Merged: the subscription is an ordinary one.
    Merged,
}

/// A subscription change that takes effect at a marker notification.
#[derive(Debug)]
pub struct Gate {
    pub token: String,
    pub kind: GateKind,
    state: Mutex<(Phase, Vec<Arc<Notification>>)>,
    passed: tokio::sync::Notify,
}

impl Gate {
    /// Waits until the listening connection has read the marker (or was lost).
    pub async fn passed(&self) {
        loop {
            let wait = self.passed.notified();
            if self.state.lock().unwrap().0 != Phase::Waiting {
                return;
            }
            wait.await;
        }
    }

    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        if s.0 == Phase::Waiting {
            s.0 = Phase::Passed;
        }
        drop(s);
        self.passed.notify_waiters();
    }
}

/// One client on one channel.
#[derive(Debug, Clone)]
struct Sub {
    inbox: Arc<Inbox>,
    gate: Option<Arc<Gate>>,
}

/// channel -> (client id -> subscription)
type Channels = BTreeMap<Arc<str>, BTreeMap<u64, Sub>>;

/// Listeners of one database.
#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<Channels>,
    gates: Mutex<HashMap<String, Arc<Gate>>>,
    /// Bumped at every change of the set of channels (the listener catches up).
    pub generation: AtomicU64,
    /// The generation the listening connection listens to now (LISTENs committed).
    listened: Mutex<u64>,
    listened_changed: tokio::sync::Notify,
    /// Wakes the listening connection's task: the channels changed.
    pub changed: tokio::sync::Notify,
    /// The listening connection is up.
    pub connected: AtomicBool,
    /// Its server process id (0 while there is none): to find it in `pg_stat_activity`.
    pub server_pid: AtomicI32,
    pub stats: HubStats,
}

impl Hub {
    fn bump(&self) {
        self.generation.fetch_add(1, Relaxed);
        self.changed.notify_one();
    }

    /// `client` listens on `channel` from now on.
    pub fn listen(&self, channel: &str, client: u64, inbox: &Arc<Inbox>) {
        self.subscribe(channel, client, Sub { inbox: inbox.clone(), gate: None });
    }

    fn subscribe(&self, channel: &str, client: u64, sub: Sub) {
        let mut c = self.channels.lock().unwrap();
        let subs = c.entry(Arc::from(channel)).or_default();
        let new_channel = subs.is_empty();
        subs.insert(client, sub);
        drop(c);
        if new_channel {
            self.bump();
        }
    }

    /// `client` listens on `channels` from the marker `token` on: what comes before
    /// it is the client's server connection's to deliver. Returns the gate and the
    /// generation the listening connection must reach before the marker is sent.
    pub fn listen_gated(&self, channels: &BTreeSet<Arc<str>>, client: u64, inbox: &Arc<Inbox>, token: String) -> (Arc<Gate>, u64) {
        let gate = self.gate(token, GateKind::Open);
        for ch in channels {
            self.subscribe(ch, client, Sub { inbox: inbox.clone(), gate: Some(gate.clone()) });
        }
        (gate, self.generation.load(Relaxed))
    }

    /// `client`'s subscriptions end at the marker `token`.
    pub fn close_gated(&self, channels: &BTreeSet<Arc<str>>, client: u64, token: String) -> Arc<Gate> {
        let gate = self.gate(token, GateKind::Close);
        let mut c = self.channels.lock().unwrap();
        for ch in channels {
            if let Some(sub) = c.get_mut(ch).and_then(|s| s.get_mut(&client)) {
                sub.gate = Some(gate.clone());
            }
        }
        gate
    }

    fn gate(&self, token: String, kind: GateKind) -> Arc<Gate> {
        let gate = Arc::new(Gate {
            token: token.clone(),
            kind,
            state: Mutex::new((Phase::Waiting, Vec::new())),
            passed: tokio::sync::Notify::new(),
        });
        self.gates.lock().unwrap().insert(token, gate.clone());
        gate
    }

    /// The listening connection read a marker notification.
    pub fn marker(&self, token: &str) {
        if let Some(g) = self.gates.lock().unwrap().remove(token) {
            g.pass();
        }
    }

    /// An opening gate's subscriptions become ordinary: first what the client's own
    /// connection delivered before the marker (`before`, in the server's order), then
    /// what the hub kept since. False if the inbox overflowed.
    pub fn merge(&self, gate: &Gate, before: &[Arc<Notification>], inbox: &Inbox) -> bool {
        let mut s = gate.state.lock().unwrap();
        let kept = std::mem::take(&mut s.1);
        s.0 = Phase::Merged;
        let ok = inbox.push_all(before) && inbox.push_all(&kept);
        drop(s);
        let mut c = self.channels.lock().unwrap();
        for subs in c.values_mut() {
            for sub in subs.values_mut() {
                if sub.gate.as_ref().is_some_and(|g| std::ptr::eq(&**g, gate)) {
                    sub.gate = None;
                }
            }
        }
        ok
    }

    /// `client` stops listening on `channel`.
    pub fn unlisten(&self, channel: &str, client: u64) {
        let mut c = self.channels.lock().unwrap();
        if let Some(subs) = c.get_mut(channel) {
            subs.remove(&client);
            if subs.is_empty() {
                c.remove(channel);
                drop(c);
                self.bump();
            }
        }
    }

    /// `client` stops listening on every channel (UNLISTEN *, or it left).
    pub fn unlisten_all(&self, client: u64, channels: &BTreeSet<Arc<str>>) {
        for ch in channels {
            self.unlisten(ch, client);
        }
    }

    /// The channels someone listens on, for the listening connection, and the
    /// generation they are of.
    pub fn channels(&self) -> (Vec<Arc<str>>, u64) {
        let c = self.channels.lock().unwrap();
        (c.keys().cloned().collect(), self.generation.load(Relaxed))
    }

    /// The listening connection now listens on the channels of generation `g`.
    pub fn set_listened(&self, g: u64) {
        *self.listened.lock().unwrap() = g;
        self.listened_changed.notify_waiters();
    }

    /// Waits until the listening connection listens on the channels of generation `g`.
    pub async fn listened(&self, g: u64) {
        loop {
            let wait = self.listened_changed.notified();
            if *self.listened.lock().unwrap() >= g {
                return;
            }
            wait.await;
        }
    }

    /// Clients listening now, channels, and notifications queued in their inboxes.
    pub fn counts(&self) -> (usize, usize, usize) {
        let c = self.channels.lock().unwrap();
        let mut clients: BTreeMap<u64, &Arc<Inbox>> = BTreeMap::new();
        for subs in c.values() {
            for (id, sub) in subs {
                clients.insert(*id, &sub.inbox);
            }
        }
        let queued = clients.values().map(|i| i.len()).sum();
        (clients.len(), c.len(), queued)
    }

    /// Each channel with its number of listening clients.
    pub fn per_channel(&self) -> Vec<(Arc<str>, usize)> {
        self.channels.lock().unwrap().iter().map(|(ch, s)| (ch.clone(), s.len())).collect()
    }

    /// Hands a notification to every client listening on its channel.
    pub fn deliver(&self, n: Notification) {
        self.stats.received.fetch_add(1, Relaxed);
        let n = Arc::new(n);
        let subs: Vec<Sub> = match self.channels.lock().unwrap().get(&*n.channel) {
            Some(s) => s.values().cloned().collect(),
            None => return,
        };
        for sub in subs {
            let pushed = match &sub.gate {
                None => sub.inbox.push(&n),
                Some(g) => {
                    let mut s = g.state.lock().unwrap();
                    match (g.kind, s.0) {
                        // Before the marker the client's own connection delivers it.
                        (GateKind::Open, Phase::Waiting) | (GateKind::Close, Phase::Passed) => continue,
                        (GateKind::Open, Phase::Passed) => {
                            s.1.push(n.clone());
                            true
                        }
                        _ => sub.inbox.push(&n),
                    }
                }
            };
            let counter = if pushed { &self.stats.delivered } else { &self.stats.dropped };
            counter.fetch_add(1, Relaxed);
        }
    }

    /// The listening connection broke: every listener may have missed notifications,
    /// and no marker will come through it.
    pub fn lost(&self) {
        self.stats.lost.fetch_add(1, Relaxed);
        let all: Vec<Arc<Inbox>> = self.channels.lock().unwrap().values().flat_map(|s| s.values().map(|s| s.inbox.clone())).collect();
        for inbox in all {
            inbox.missed();
        }
        let gates: Vec<Arc<Gate>> = self.gates.lock().unwrap().drain().map(|(_, g)| g).collect();
        for g in gates {
            g.pass();
        }
    }
}

#[cfg(test)]
mod tests;
