//! What the router knows about one database's servers: which is the primary now,
//! which replicas may take reads, and how far behind each one is.
//!
//! The replica monitor (`crate::monitor`) writes it; clients read it on every
//! routed request, so it is all atomics: no lock on the read path. Node 0 is the
//! configured primary, nodes 1.. the configured replicas, in config order (the
//! same order as `crate::state::DbPools::node`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::config::ServerAddr;

/// One server of a database, as last seen by the monitor.
#[derive(Debug)]
pub struct Node {
    pub addr: ServerAddr,
    /// Answered its last checks (its circuit breaker is closed).
    pub up: AtomicBool,
    /// `pg_is_in_recovery()` said true (a standby). Configured replicas start as
    /// standbys, the configured primary as a primary.
    pub in_recovery: AtomicBool,
    /// May take reads now: up, a standby, within both lag bounds (with hysteresis).
    pub readable: AtomicBool,
    /// Replay position (a standby) or current WAL position (a primary), as a u64 LSN.
    pub lsn: AtomicU64,
    /// How far behind the primary it is, in WAL bytes and in time (µs; counted only
    /// while it is behind).
    pub lag_bytes: AtomicU64,
    pub lag_micros: AtomicU64,
    /// How long the last check took (µs), and whether one has completed yet.
    pub check_micros: AtomicU64,
    pub checked: AtomicBool,
}

impl Node {
    fn new(addr: ServerAddr, replica: bool) -> Node {
        Node {
            addr,
            up: AtomicBool::new(!replica),
            in_recovery: AtomicBool::new(replica),
            readable: AtomicBool::new(false),
            lsn: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            lag_micros: AtomicU64::new(0),
            check_micros: AtomicU64::new(0),
            checked: AtomicBool::new(false),
        }
    }

    pub fn is_readable(&self) -> bool {
        self.readable.load(Relaxed)
    }

    /// `primary` or `replica` as the last check found it; `unknown` before one.
    pub fn role(&self) -> &'static str {
        match (self.checked.load(Relaxed), self.in_recovery.load(Relaxed)) {
            (false, _) => "unknown",
            (true, true) => "replica",
            (true, false) => "primary",
        }
    }

    /// The time lag, in seconds.
    pub fn lag_seconds(&self) -> f64 {
        self.lag_micros.load(Relaxed) as f64 / 1e6
    }
}

/// The servers of one configured database.
#[derive(Debug)]
pub struct Topology {
    pub database: String,
    pub nodes: Vec<Node>,
    /// Index of the node writes go to (changes on failover).
    primary: AtomicUsize,
    /// Round-robin cursor over the replicas.
    next: AtomicUsize,
    /// Routing decisions, by [`Routed`] (index `Routed as usize`).
    pub routed: [AtomicU64; Routed::ALL.len()],
    /// The primary's WAL position at the monitor's last check, and when (µs since
    /// `epoch`) that check began: read-your-writes needs a position read after a
    /// client's write, and gets it without a round trip of its own.
    primary_lsn: AtomicU64,
    primary_lsn_at: AtomicU64,
    epoch: std::time::Instant,
}

/// A routing decision, for `pgmux_routed_total{target,reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// A read, to a replica.
    ReplicaRead,
    /// A `pgmux:replica` hint, `SET pgmux.route = replica` or a user's `route: replica`.
    ReplicaHint,
    /// A write (or anything not provably read-only), to the primary.
    PrimaryWrite,
    /// A `pgmux:primary` hint, `pgmux.route = primary`, or a user's `route: primary`.
    PrimaryHint,
    /// A read, to the primary: every up replica is past a lag bound.
    PrimaryLagging,
    /// A read, to the primary: no replica has replayed the client's last write yet.
    PrimaryReadYourWrites,
    /// A read, to the primary: no replica is up (or a replica connection failed).
    PrimaryFallback,
    /// A read that opens a cursor (a named portal) in a transaction that could move
    /// to the primary at a write, which would lose the cursor: to the primary.
    PrimaryCursor,
}

impl Routed {
    pub const ALL: [Routed; 8] = [
        Routed::ReplicaRead,
        Routed::ReplicaHint,
        Routed::PrimaryWrite,
        Routed::PrimaryHint,
        Routed::PrimaryLagging,
        Routed::PrimaryReadYourWrites,
        Routed::PrimaryFallback,
        Routed::PrimaryCursor,
    ];

    /// `(target, reason)` label values.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            Routed::ReplicaRead => ("replica", "read"),
            Routed::ReplicaHint => ("replica", "hint"),
            Routed::PrimaryWrite => ("primary", "write"),
            Routed::PrimaryHint => ("primary", "hint"),
            Routed::PrimaryLagging => ("primary", "lagging"),
            Routed::PrimaryReadYourWrites => ("primary", "read_your_writes"),
            Routed::PrimaryFallback => ("primary", "fallback"),
            Routed::PrimaryCursor => ("primary", "cursor"),
        }
    }

    pub fn to_replica(self) -> bool {
        matches!(self, Routed::ReplicaRead | Routed::ReplicaHint)
    }
}

/// Why a read did not get a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReplica {
    /// No replica is up (or none is configured, or none checked yet).
    NoneHealthy,
    /// Replicas are up but all are past a lag bound.
    Lagging,
    /// Replicas within bounds have not yet replayed the client's last write.
    BehindClient,
}

impl Topology {
    pub fn new(database: &str, primary: ServerAddr, replicas: Vec<ServerAddr>) -> Topology {
        let nodes = std::iter::once(Node::new(primary, false)).chain(replicas.into_iter().map(|a| Node::new(a, true))).collect();
        Topology {
            database: database.to_string(),
            nodes,
            primary: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            routed: Default::default(),
            primary_lsn: AtomicU64::new(0),
            primary_lsn_at: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    /// Now, in this topology's clock (µs; never 0).
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// The monitor read the primary's WAL position `lsn` in a check that began at
    /// `started` (from [`Topology::now`]).
    pub fn record_primary_lsn(&self, lsn: u64, started: u64) {
        // Position first: a reader that sees the new time sees this position or a later one.
        self.primary_lsn.store(lsn, std::sync::atomic::Ordering::Release);
        self.primary_lsn_at.store(started, std::sync::atomic::Ordering::Release);
    }

    /// The primary's WAL position as read by a check that began after `since`, if
    /// the monitor has made one yet.
    pub fn primary_lsn_since(&self, since: u64) -> Option<u64> {
        let at = self.primary_lsn_at.load(std::sync::atomic::Ordering::Acquire);
        (at > since).then(|| self.primary_lsn.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Counts a routing decision.
    pub fn count(&self, r: Routed) {
        self.routed[r as usize].fetch_add(1, Relaxed);
    }

    /// The node writes go to.
    pub fn primary(&self) -> usize {
        self.primary.load(Relaxed)
    }

    /// Makes `i` the node writes go to (failover).
    pub fn set_primary(&self, i: usize) {
        debug_assert!(i < self.nodes.len());
        self.primary.store(i, Relaxed);
    }

    /// What an operator is told about node `i` (SHOW REPLICAS, /readyz):
    /// `unchecked` before its first check, `down` (its breaker is open), `lagging`
    /// (a standby that answers but takes no reads: past a lag bound, or not yet back
    /// within half of both), else `up`.
    pub fn state(&self, i: usize) -> &'static str {
        let node = &self.nodes[i];
        if !node.checked.load(Relaxed) {
            "unchecked"
        } else if !node.up.load(Relaxed) {
            "down"
        } else if i != self.primary() && node.in_recovery.load(Relaxed) && !node.is_readable() {
            "lagging"
        } else {
            "up"
        }
    }

    /// The role node `i` has in the config: node 0 is the configured primary.
    pub fn configured_role(i: usize) -> &'static str {
        if i == 0 {
            "primary"
        } else {
            "replica"
        }
    }

    /// Whether any replica is configured (routing has something to do).
    pub fn has_replicas(&self) -> bool {
        self.nodes.len() > 1
    }

    /// Whether some replica takes reads now.
    pub fn any_readable(&self) -> bool {
        let primary = self.primary();
        self.nodes.iter().enumerate().any(|(i, n)| i != primary && n.is_readable())
    }

    /// The next readable replica in round-robin order whose replay position has
    /// reached `min_lsn` (0: any), skipping those in `skip` (a bitmask of node
    /// indexes already tried).
    pub fn pick_replica(&self, min_lsn: u64, skip: u64) -> Result<usize, NoReplica> {
        let n = self.nodes.len();
        let primary = self.primary();
        let start = self.next.load(Relaxed);
        let mut why = NoReplica::NoneHealthy;
        for k in 0..n {
            let i = (start + k) % n;
            if i == primary || (i < 64 && skip & (1 << i) != 0) {
                continue;
            }
            let node = &self.nodes[i];
            if !node.is_readable() {
                if node.up.load(Relaxed) && node.in_recovery.load(Relaxed) && why == NoReplica::NoneHealthy {
                    why = NoReplica::Lagging;
                }
                continue;
            }
            if min_lsn != 0 && node.lsn.load(Relaxed) < min_lsn {
                why = NoReplica::BehindClient;
                continue;
            }
            self.next.store(i + 1, Relaxed);
            return Ok(i);
        }
        Err(why)
    }
}

impl NoReplica {
    /// The decision to record when a read goes to the primary for this reason.
    pub fn routed(self) -> Routed {
        match self {
            NoReplica::NoneHealthy => Routed::PrimaryFallback,
            NoReplica::Lagging => Routed::PrimaryLagging,
            NoReplica::BehindClient => Routed::PrimaryReadYourWrites,
        }
    }
}

/// Parses PostgreSQL's `X/Y` LSN text.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// Formats an LSN as PostgreSQL does.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(replicas: usize) -> Topology {
        let a = |p| ServerAddr { host: "127.0.0.1".into(), port: p };
        Topology::new("app", a(5432), (0..replicas).map(|i| a(5433 + i as u16)).collect())
    }

    #[test]
    fn lsn_round_trip() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(format_lsn(parse_lsn("A/FF").unwrap()), "A/FF");
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn replicas_unchecked_take_no_reads() {
        let t = topo(2);
        assert_eq!(t.pick_replica(0, 0), Err(NoReplica::NoneHealthy));
    }

    #[test]
    fn round_robin_over_readable_replicas() {
        let t = topo(2);
        for n in &t.nodes[1..] {
            n.readable.store(true, Relaxed);
            n.up.store(true, Relaxed);
        }
        let picks: Vec<_> = (0..6).map(|_| t.pick_replica(0, 0).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 3, "{picks:?}");
        assert_eq!(picks.iter().filter(|&&i| i == 2).count(), 3, "{picks:?}");
        // A skipped replica is not picked again.
        assert!((0..4).all(|_| t.pick_replica(0, 1 << 1) == Ok(2)));
    }

    #[test]
    fn lagging_and_behind_client() {
        let t = topo(1);
        t.nodes[1].up.store(true, Relaxed);
        assert_eq!(t.pick_replica(0, 0), Err(NoReplica::Lagging));
        t.nodes[1].readable.store(true, Relaxed);
        t.nodes[1].lsn.store(100, Relaxed);
        assert_eq!(t.pick_replica(101, 0), Err(NoReplica::BehindClient));
        assert_eq!(t.pick_replica(100, 0), Ok(1));
    }

    #[test]
    fn primary_lsn_only_from_later_checks() {
        let t = topo(1);
        let wrote = t.now();
        assert_eq!(t.primary_lsn_since(wrote), None);
        t.record_primary_lsn(42, wrote);
        assert_eq!(t.primary_lsn_since(wrote), None, "a check that began with the write may predate it");
        std::thread::sleep(std::time::Duration::from_millis(1));
        t.record_primary_lsn(43, t.now());
        assert_eq!(t.primary_lsn_since(wrote), Some(43));
    }

    #[test]
    fn state_and_role_for_operators() {
        let t = topo(2);
        assert_eq!((t.state(1), t.nodes[1].role()), ("unchecked", "unknown"));
        for n in &t.nodes {
            n.checked.store(true, Relaxed);
        }
        t.nodes[1].up.store(true, Relaxed);
        t.nodes[1].readable.store(true, Relaxed);
        assert_eq!((t.state(0), t.nodes[0].role()), ("up", "primary"));
        assert_eq!((t.state(1), t.nodes[1].role()), ("up", "replica"));
        assert_eq!(t.state(2), "down");
        t.nodes[2].up.store(true, Relaxed);
        assert_eq!(t.state(2), "lagging");
        // A current primary found in recovery is not "lagging": it takes no reads by design.
        t.nodes[0].in_recovery.store(true, Relaxed);
        assert_eq!((t.state(0), t.nodes[0].role()), ("up", "replica"));
        t.nodes[2].lag_micros.store(1_500_000, Relaxed);
        assert_eq!(t.nodes[2].lag_seconds(), 1.5);
        assert_eq!((Topology::configured_role(0), Topology::configured_role(2)), ("primary", "replica"));
    }

    #[test]
    fn after_failover_the_old_primary_may_read() {
        let t = topo(1);
        t.set_primary(1);
        t.nodes[0].readable.store(true, Relaxed);
        assert_eq!(t.pick_replica(0, 0), Ok(0));
    }
}
