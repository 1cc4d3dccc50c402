//! Who listens to what, and the notifications waiting for each listener.
//!
//! One [`Hub`] per database: a table from channel to the clients listening on it, and
//! for each listening client an [`Inbox`], a bounded queue of notifications that the
//! client's task empties between its transactions. The hub's listening connection
//! (see `notify::listener`) LISTENs to the union of the channels and hands every
//! notification to [`Hub::deliver`], which puts it in the inbox of each client
//! listening on its channel and wakes that client. Nothing here does I/O.
//!
//! An inbox that is full when a notification arrives is marked *overflowed* and takes
//! nothing more: the client is told and disconnected, rather than pgmux's memory
//! growing without bound behind a client that stopped reading. When the listening
//! connection breaks, every inbox is marked *missed*: notifications sent while it was
//! down are lost, and the clients are told so.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
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
    /// Wakes the client's task (it then looks at the queue).
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

    pub fn trouble(&self) -> Trouble {
        match self.trouble.load(Relaxed) {
            1 => Trouble::Overflowed,
            2 => Trouble::Missed,
            _ => Trouble::None,
        }
    }

    /// Queues a notification; false (and the inbox overflowed) when it is full.
    fn push(&self, n: &Arc<Notification>) -> bool {
        let mut q = self.queue.lock().unwrap();
        if self.trouble.load(Relaxed) == Trouble::Overflowed as u8 {
            return false;
        }
        if q.len() >= self.cap {
            self.trouble.store(Trouble::Overflowed as u8, Relaxed);
            drop(q);
            (self.wake)();
            return false;
        }
        q.push_back(n.clone());
        drop(q);
        (self.wake)();
        true
    }

    fn missed(&self) {
        let _ = self.trouble.compare_exchange(Trouble::None as u8, Trouble::Missed as u8, Relaxed, Relaxed);
        (self.wake)();
    }
}

/// Counters for the metrics endpoint and SHOW LISTENERS.
#[derive(Debug, Default)]
pub struct HubStats {
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
}

/// channel -> (client id -> inbox)
type Channels = BTreeMap<Arc<str>, BTreeMap<u64, Arc<Inbox>>>;

/// Listeners of one database.
#[derive(Debug, Default)]
pub struct Hub {
    channels: Mutex<Channels>,
    /// Bumped at every change of the set of channels (the listener catches up).
    pub generation: AtomicU64,
    pub stats: HubStats,
}

impl Hub {
    /// `client` listens on `channel` from now on.
    pub fn listen(&self, channel: &str, client: u64, inbox: &Arc<Inbox>) {
        let mut c = self.channels.lock().unwrap();
        let subs = c.entry(Arc::from(channel)).or_default();
        let new_channel = subs.is_empty();
        subs.insert(client, inbox.clone());
        if new_channel {
            self.generation.fetch_add(1, Relaxed);
        }
    }

    /// `client` stops listening on `channel`.
    pub fn unlisten(&self, channel: &str, client: u64) {
        let mut c = self.channels.lock().unwrap();
        if let Some(subs) = c.get_mut(channel) {
            subs.remove(&client);
            if subs.is_empty() {
                c.remove(channel);
                self.generation.fetch_add(1, Relaxed);
            }
        }
    }

    /// `client` stops listening on every channel (UNLISTEN *, or it left).
    pub fn unlisten_all(&self, client: u64, channels: &BTreeSet<Arc<str>>) {
        for ch in channels {
            self.unlisten(ch, client);
        }
    }

    /// The channels someone listens on, for the listening connection.
    pub fn channels(&self) -> Vec<Arc<str>> {
        self.channels.lock().unwrap().keys().cloned().collect()
    }

    /// Clients listening now, and channels.
    pub fn counts(&self) -> (usize, usize) {
        let c = self.channels.lock().unwrap();
        let clients: BTreeSet<u64> = c.values().flat_map(|s| s.keys().copied()).collect();
        (clients.len(), c.len())
    }

    /// Hands a notification to every client listening on its channel.
    pub fn deliver(&self, n: Notification) {
        self.stats.received.fetch_add(1, Relaxed);
        let n = Arc::new(n);
        let subs: Vec<Arc<Inbox>> = match self.channels.lock().unwrap().get(&*n.channel) {
            Some(s) => s.values().cloned().collect(),
            None => return,
        };
        for inbox in subs {
            let counter = if inbox.push(&n) { &self.stats.delivered } else { &self.stats.dropped };
            counter.fetch_add(1, Relaxed);
        }
    }

    /// The listening connection broke: every listener may have missed notifications.
    pub fn lost(&self) {
        let all: Vec<Arc<Inbox>> = self.channels.lock().unwrap().values().flat_map(|s| s.values().cloned()).collect();
        for inbox in all {
            inbox.missed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn inbox(cap: usize) -> (Arc<Inbox>, Arc<AtomicUsize>) {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        (
            Inbox::new(
                cap,
                Box::new(move || {
                    w.fetch_add(1, Relaxed);
                }),
            ),
            woken,
        )
    }

    fn note(channel: &str, payload: &str) -> Notification {
        Notification { pid: 1, channel: channel.into(), payload: payload.into() }
    }

    #[test]
    fn each_listener_gets_its_channels_in_order_once() {
        let hub = Hub::default();
        let (a, woken_a) = inbox(10);
        let (b, _) = inbox(10);
        hub.listen("jobs", 1, &a);
        hub.listen("jobs", 2, &b);
        hub.listen("other", 2, &b);
        assert_eq!(hub.channels().len(), 2);
        assert_eq!(hub.counts(), (2, 2));
        for i in 0..3 {
            hub.deliver(note("jobs", &i.to_string()));
        }
        hub.deliver(note("other", "x"));
        hub.deliver(note("nobody", "y"));
        let got: Vec<String> = a.drain().iter().map(|n| n.payload.to_string()).collect();
        assert_eq!(got, ["0", "1", "2"]);
        assert_eq!(b.drain().len(), 4);
        assert!(a.is_empty() && b.is_empty());
        assert_eq!(woken_a.load(Relaxed), 3);
        assert_eq!(hub.stats.delivered.load(Relaxed), 7);
    }

    #[test]
    fn the_channel_set_changes_only_when_a_channel_gains_its_first_or_loses_its_last_listener() {
        let hub = Hub::default();
        let (a, _) = inbox(10);
        let (b, _) = inbox(10);
        hub.listen("jobs", 1, &a);
        let g = hub.generation.load(Relaxed);
        hub.listen("jobs", 2, &b);
        hub.unlisten("jobs", 1);
        assert_eq!(hub.generation.load(Relaxed), g);
        hub.unlisten_all(2, &[Arc::from("jobs")].into_iter().collect());
        assert_eq!(hub.generation.load(Relaxed), g + 1);
        assert!(hub.channels().is_empty());
    }

    #[test]
    fn a_full_inbox_overflows_and_takes_nothing_more() {
        let hub = Hub::default();
        let (a, _) = inbox(2);
        hub.listen("c", 1, &a);
        for i in 0..5 {
            hub.deliver(note("c", &i.to_string()));
        }
        assert_eq!(a.trouble(), Trouble::Overflowed);
        assert_eq!(a.len(), 2, "bounded");
        assert_eq!(hub.stats.dropped.load(Relaxed), 3);
        a.drain();
        hub.deliver(note("c", "later"));
        assert!(a.is_empty(), "an overflowed client is on its way out");
    }

    #[test]
    fn a_lost_listening_connection_marks_every_listener() {
        let hub = Hub::default();
        let (a, woken) = inbox(2);
        hub.listen("c", 1, &a);
        hub.lost();
        assert_eq!(a.trouble(), Trouble::Missed);
        assert_eq!(woken.load(Relaxed), 1);
    }
}
