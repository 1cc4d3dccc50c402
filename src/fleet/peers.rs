//! The fleet at run time: greeting every peer each `heartbeat_interval`, answering
//! their greetings, publishing this instance's shares, and forwarding a cancel to the
//! instance whose key it is.
//!
//! A round resolves the peer addresses (the static list, or `peers_dns` every few
//! rounds), then, for every address that is not this instance, connects, sends a
//! heartbeat and reads the peer's heartbeat back. An address that answers with this
//! instance's own nonce is this instance (that is how an instance finds itself in
//! `fleet.peers`, or among the addresses of a headless Service). After the first
//! round the membership is *joined*; after every round the shares are recomputed
//! ([`super::view`]) with the pools' word on whether they are within their targets.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::view::{Membership, Shares, View};
use super::wire::{now_ms, Beat, Packet, PeerState, Signer, FLEET_REQUEST_CODE, MAX_PACKET};
use crate::cancel_key::{KeyMaker, Origin};
use crate::config::FleetConfig;

/// Resolve `peers_dns` again every this many rounds.
const RESOLVE_EVERY: u32 = 5;

/// Whether the pools hold no more than their targets under some shares (set by the
/// pools' owner; without it an instance is always compliant).
pub type Compliance = Box<dyn Fn(&Shares) -> bool + Send + Sync>;

/// Counters for the metrics endpoint and SHOW PEERS.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub heartbeat_failures: AtomicU64,
    pub packets_refused: AtomicU64,
    pub cancels_forwarded: AtomicU64,
    pub cancels_forward_failed: AtomicU64,
    pub cancels_no_owner: AtomicU64,
    pub cancels_forged: AtomicU64,
    pub cancels_received: AtomicU64,
}

/// What became of a CancelRequest this instance could not act on itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Sent to the instance(s) whose id the key carries.
    Forwarded,
    /// No live instance has that id (or it is this one's: the client has left).
    NoOwner,
    /// A long key whose MAC is wrong.
    Forged,
    /// The owner could not be reached.
    Failed,
}

/// What a peer packet asks of this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A heartbeat: write this answer back on the same connection.
    Answer(Vec<u8>),
    /// A cancel forwarded by a peer: act on it here, never forward it again.
    Cancel(i32, Vec<u8>),
    /// A packet refused (bad signature, stale, malformed).
    Nothing,
}

/// One row of SHOW PEERS.
#[derive(Debug, Clone)]
pub struct PeerRow {
    pub addr: Option<SocketAddr>,
    pub nonce: u64,
    pub instance: u16,
    pub state: &'static str,
    pub heard_ms_ago: Option<u64>,
    pub same_view: bool,
    pub compliant: bool,
}

/// This instance's place in the fleet.
pub struct Fleet {
    me: u64,
    keys: KeyMaker,
    signer: Signer,
    config: FleetConfig,
    membership: Mutex<Membership>,
    /// The address each peer answered on (by nonce), and this instance's own.
    addrs: Mutex<(HashMap<u64, SocketAddr>, HashSet<SocketAddr>)>,
    shares: watch::Sender<Shares>,
    draining: AtomicBool,
    compliance: OnceLock<Compliance>,
    pub stats: FleetStats,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("me", &self.me).field("instance", &self.keys.instance()).finish_non_exhaustive()
    }
}

impl Fleet {
    /// This instance's place in the fleet; `keys` are the client registry's (made
    /// with the fleet's secret), so that this instance can check other instances' keys.
    pub fn new(config: &FleetConfig, keys: KeyMaker) -> Arc<Fleet> {
        let me: u64 = rand::thread_rng().gen();
        let initial = if config.share_pools { Membership::new(me, config.peer_timeout.0).update(false) } else { Shares::whole() };
        Arc::new(Fleet {
            me,
            keys,
            signer: Signer::new(config.secret.as_bytes()),
            config: config.clone(),
            membership: Mutex::new(Membership::new(me, config.peer_timeout.0)),
            addrs: Mutex::new(Default::default()),
            shares: watch::channel(initial).0,
            draining: AtomicBool::new(false),
            compliance: OnceLock::new(),
            stats: FleetStats::default(),
        })
    }

    /// The cancel keys this instance issues (they carry its id).
    pub fn keys(&self) -> &KeyMaker {
        &self.keys
    }

    /// Shares to size pools by; changes after heartbeat rounds.
    pub fn shares(&self) -> watch::Receiver<Shares> {
        self.shares.subscribe()
    }

    /// Whether pool sizes are fleet totals.
    pub fn share_pools(&self) -> bool {
        self.config.share_pools
    }

    /// Sets how the pools say whether they are within their targets.
    pub fn set_compliance(&self, f: Compliance) {
        let _ = self.compliance.set(f);
    }

    /// From now on, tell peers this instance is draining.
    pub fn set_draining(&self) {
        self.draining.store(true, Relaxed);
    }

    fn beat(&self) -> Beat {
        let shares = self.shares.borrow();
        let compliant = self.compliance.get().is_none_or(|f| f(&shares));
        Beat {
            nonce: self.me,
            instance: self.keys.instance(),
            state: if self.draining.load(Relaxed) { PeerState::Draining } else { PeerState::Ready },
            view: shares.view.hash(),
            compliant,
        }
    }

    /// Greets the peers until the process ends.
    pub async fn run(self: Arc<Self>) {
        let mut round = 0u32;
        let mut addrs = Vec::new();
        let mut tick = tokio::time::interval(self.config.heartbeat_interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if round % RESOLVE_EVERY == 0 || addrs.is_empty() {
                addrs = self.resolve().await;
            }
            self.round(&addrs).await;
            round = round.wrapping_add(1);
        }
    }

    /// Every peer address, resolved now (names that do not resolve are skipped).
    async fn resolve(&self) -> Vec<SocketAddr> {
        let names: Vec<&String> = self.config.peers.iter().chain(self.config.peers_dns.iter()).collect();
        let mut out = Vec::new();
        for name in names {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(a) => out.extend(a),
                Err(e) => tracing::warn!(peer = %name, error = %e, "fleet: peer address does not resolve"),
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// One heartbeat round; then the shares are recomputed and published.
    async fn round(self: &Arc<Self>, addrs: &[SocketAddr]) {
        let beat = self.beat();
        let own = self.addrs.lock().unwrap().1.clone();
        let targets: Vec<SocketAddr> = addrs.iter().copied().filter(|a| !own.contains(a)).collect();
        let mut exchanges = tokio::task::JoinSet::new();
        for addr in targets {
            let (me, beat) = (self.clone(), beat.clone());
            exchanges.spawn(async move { (addr, me.exchange(addr, beat).await) });
        }
        let results = exchanges.join_all().await;
        let now = Instant::now();
        {
            let mut m = self.membership.lock().unwrap();
            let mut book = self.addrs.lock().unwrap();
            for (addr, r) in &results {
                let addr = *addr;
                match r {
                    Ok(b) if b.nonce == self.me => {
                        book.1.insert(addr);
                    }
                    Ok(b) => {
                        book.0.insert(b.nonce, addr);
                        m.heard(b.clone(), now);
                    }
                    Err(e) => {
                        self.stats.heartbeat_failures.fetch_add(1, Relaxed);
                        tracing::debug!(peer = %addr, error = %e, "fleet: heartbeat failed");
                    }
                }
            }
            m.joined();
            m.expire(now);
        }
        self.recompute();
    }

    /// Recomputes the shares from the membership and publishes them if they changed.
    fn recompute(&self) {
        if !self.config.share_pools {
            return;
        }
        let mut m = self.membership.lock().unwrap();
        let probe = Shares::probe(m.view(), self.me);
        let compliant = self.compliance.get().is_none_or(|f| f(&probe));
        let shares = m.update(compliant);
        drop(m);
        self.shares.send_if_modified(|s| {
            let changed = *s != shares;
            *s = shares;
            changed
        });
    }

    /// Sends a heartbeat to `addr` and reads the peer's back.
    async fn exchange(&self, addr: SocketAddr, beat: Beat) -> std::io::Result<Beat> {
        let timeout = self.config.heartbeat_interval.0.max(Duration::from_millis(200));
        let io = async {
            let mut s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            s.write_all(&self.signer.encode(&Packet::Heartbeat(beat), now_ms())).await?;
            let body = read_packet(&mut s).await?;
            match self.signer.decode(&body, now_ms()) {
                Ok(Packet::Heartbeat(b)) => Ok(b),
                Ok(_) => Err(std::io::Error::other("peer answered a heartbeat with something else")),
                Err(e) => Err(std::io::Error::other(e)),
            }
        };
        tokio::time::timeout(timeout, io).await.map_err(|_| std::io::Error::other("peer did not answer in time"))?
    }

    /// A peer packet that arrived on the client port (its body after the request
    /// code): what to do about it.
    pub fn on_packet(&self, body: &[u8]) -> Received {
        let packet = match self.signer.decode(body, now_ms()) {
            Ok(p) => p,
            Err(e) => {
                self.stats.packets_refused.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "fleet: peer packet refused");
                return Received::Nothing;
            }
        };
        match packet {
            Packet::Heartbeat(b) => {
                if b.nonce != self.me {
                    self.membership.lock().unwrap().heard(b, Instant::now());
                }
                Received::Answer(self.signer.encode(&Packet::Heartbeat(self.beat()), now_ms()))
            }
            Packet::Cancel { pid, secret } => {
                self.stats.cancels_received.fetch_add(1, Relaxed);
                Received::Cancel(pid, secret)
            }
        }
    }

    /// A CancelRequest whose key this instance does not hold: sends it to the
    /// instance whose id it carries (at most once: the receiver never forwards).
    pub async fn forward_cancel(&self, pid: i32, secret: &[u8]) -> Forward {
        let outcome = match self.keys.origin(pid, secret) {
            Origin::Forged => Forward::Forged,
            Origin::Instance(id) if id == self.keys.instance() => Forward::NoOwner,
            Origin::Instance(id) => {
                let targets: Vec<SocketAddr> = {
                    let m = self.membership.lock().unwrap();
                    let book = self.addrs.lock().unwrap();
                    m.with_instance(id).filter_map(|p| book.0.get(&p.beat.nonce).copied()).collect()
                };
                if targets.is_empty() {
                    Forward::NoOwner
                } else {
                    let packet = self.signer.encode(&Packet::Cancel { pid, secret: secret.to_vec() }, now_ms());
                    let mut ok = false;
                    // Usually one: two only when two live instances drew the same id.
                    for a in targets {
                        ok |= send(a, &packet).await.is_ok();
                    }
                    if ok {
                        Forward::Forwarded
                    } else {
                        Forward::Failed
                    }
                }
            }
        };
        let counter = match outcome {
            Forward::Forwarded => &self.stats.cancels_forwarded,
            Forward::NoOwner => &self.stats.cancels_no_owner,
            Forward::Forged => &self.stats.cancels_forged,
            Forward::Failed => &self.stats.cancels_forward_failed,
        };
        counter.fetch_add(1, Relaxed);
        outcome
    }

    /// SHOW PEERS: this instance first, then every live peer.
    pub fn rows(&self) -> Vec<PeerRow> {
        let m = self.membership.lock().unwrap();
        let book = self.addrs.lock().unwrap();
        let view = m.view();
        let now = Instant::now();
        let me = self.beat();
        let mut rows = vec![PeerRow {
            addr: book.1.iter().next().copied(),
            nonce: self.me,
            instance: self.keys.instance(),
            state: if me.state == PeerState::Draining { "self, draining" } else { "self" },
            heard_ms_ago: None,
            same_view: true,
            compliant: me.compliant,
        }];
        rows.extend(m.peers().map(|p| PeerRow {
            addr: book.0.get(&p.beat.nonce).copied(),
            nonce: p.beat.nonce,
            instance: p.beat.instance,
            state: if p.beat.state == PeerState::Draining { "draining" } else { "ready" },
            heard_ms_ago: Some(now.duration_since(p.heard).as_millis() as u64),
            same_view: p.beat.view == view.hash(),
            compliant: p.beat.compliant,
        }));
        rows
    }

    /// Live instances, this one included.
    pub fn live(&self) -> usize {
        self.membership.lock().unwrap().view().len()
    }

    /// The view the published shares use.
    pub fn view(&self) -> View {
        self.shares.borrow().view.clone()
    }
}

/// Reads one startup-style packet: length, the fleet request code, then the body.
async fn read_packet(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = s.read_i32().await?;
    if !(8..=MAX_PACKET as i32).contains(&len) {
        return Err(std::io::Error::other("peer packet of impossible length"));
    }
    let code = s.read_i32().await?;
    if code != FLEET_REQUEST_CODE {
        return Err(std::io::Error::other("not a peer packet"));
    }
    let mut body = vec![0; len as usize - 8];
    s.read_exact(&mut body).await?;
    Ok(body)
}

/// Sends one packet on a new connection.
async fn send(addr: SocketAddr, packet: &[u8]) -> std::io::Result<()> {
    let io = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(packet).await?;
        s.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(5), io).await.map_err(|_| std::io::Error::other("peer did not take the cancel in time"))?
}
