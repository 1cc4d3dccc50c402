//! What one round of checks means for a database's [`Topology`]: breakers, which
//! node is the primary (following a failover), each standby's lag, which nodes
//! take reads, and the state changes worth a log line. Pure (no I/O, the clock is
//! passed in), so the monitor's decisions are unit-tested here.
//!
//! Lag of a standby: bytes = the primary's flushed WAL position this round minus
//! the standby's replay position (saturating). Time = how long the standby has been
//! missing WAL the primary had: the monitor keeps a short history of the primary's
//! positions and finds the first one the standby has not replayed; capped by the
//! age of the standby's last replayed transaction. Both are 0 when it has replayed
//! everything, so an idle primary does not make lag grow, and the first write after
//! a long idle period does not look like a long lag.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::breaker::{Breaker, Change};
use crate::router::topology::Topology;

/// What a passing check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// `pg_is_in_recovery()`: a standby.
    pub in_recovery: bool,
    /// Replay position (standby) or flushed WAL position (primary: what a standby
    /// can have received; lag is measured against it).
    pub lsn: u64,
    /// A primary's insert position (covers every commit that returned, even
    /// asynchronous ones: read-your-writes needs it); a standby's replay position.
    pub insert_lsn: u64,
    /// Age of the last transaction a standby replayed (None: none yet).
    pub replay_age: Option<Duration>,
    /// When the query was sent, on the topology's clock ([`Topology::now`]).
    pub started: u64,
}

/// One node's result this round.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Its breaker is open and its wait is not over: not checked.
    NotProbed,
    /// Answered, in this long.
    Passed(Probe, Duration),
    /// Did not answer (or answered an error), after this long.
    Failed(String, Duration),
}

/// The settings a round is judged by (from `routing:`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub interval: Duration,
    pub ban_after: u32,
    /// Zero: no time bound.
    pub max_lag: Duration,
    /// Zero: no byte bound.
    pub max_bytes: u64,
}

/// A state change, logged once by the monitor.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The breaker opened: out of rotation.
    Down { node: usize, error: String },
    /// The breaker closed again.
    Up { node: usize },
    /// The node's own role changed (`pg_is_in_recovery()` flipped).
    Role { node: usize, in_recovery: bool },
    /// Writes now go to `to`.
    Failover { from: usize, to: usize },
    /// Another node claims to be a primary while the current one is healthy.
    TwoPrimaries { current: usize, other: usize },
    /// The current primary is in recovery and no node claims to be a primary.
    NoPrimary { current: usize },
    /// A standby went past a lag bound: no more reads.
    Lagging { node: usize, bytes: u64, lag: Duration },
    /// A standby takes reads (again).
    Readable { node: usize, bytes: u64, lag: Duration },
}

/// Where a standby stands against the lag bounds (with hysteresis).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Lag {
    /// Not judged since it (re)joined: needs half of both bounds, like `Over`.
    #[default]
    Unknown,
    Within,
    Over,
}

impl Lag {
    fn next(self, bytes: u64, lag: Duration, lim: &Limits) -> Lag {
        let bytes_bound = (lim.max_bytes > 0).then_some(lim.max_bytes);
        let time_bound = (!lim.max_lag.is_zero()).then_some(lim.max_lag);
        let over = bytes_bound.is_some_and(|b| bytes > b) || time_bound.is_some_and(|t| lag > t);
        let half = bytes_bound.is_none_or(|b| bytes <= b / 2) && time_bound.is_none_or(|t| lag <= t / 2);
        match self {
            _ if over => Lag::Over,
            Lag::Within => Lag::Within,
            _ if half => Lag::Within,
            other => other,
        }
    }
}

#[derive(Debug, Default)]
struct NodeMon {
    breaker: Breaker,
    lag: Lag,
}

/// The monitor's memory of one database (one [`Topology`]).
#[derive(Debug)]
pub struct DbMonitor {
    nodes: Vec<NodeMon>,
    /// The primary's WAL positions over the last rounds: (when, LSN), increasing.
    history: VecDeque<(Instant, u64)>,
    /// A second primary already warned about.
    warned_two: Option<usize>,
    warned_no_primary: bool,
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl DbMonitor {
    pub fn new(nodes: usize) -> DbMonitor {
        DbMonitor {
            nodes: (0..nodes).map(|_| NodeMon::default()).collect(),
            history: VecDeque::new(),
            warned_two: None,
            warned_no_primary: false,
        }
    }

    /// Whether node `i` is to be checked now (its breaker is not waiting).
    pub fn admit(&mut self, i: usize, now: Instant) -> bool {
        self.nodes[i].breaker.admit(now)
    }

    /// Applies one round of `outcomes` (one per node) to `topo`; returns what changed.
    pub fn apply(&mut self, topo: &Topology, outcomes: &[Outcome], now: Instant, lim: &Limits) -> Vec<Event> {
        assert_eq!(outcomes.len(), topo.nodes.len());
        let mut events = Vec::new();
        self.health(topo, outcomes, now, lim, &mut events);
        let primary = self.primary(topo, outcomes, &mut events);
        let primary_lsn = match &outcomes[primary] {
            Outcome::Passed(p, _) if !p.in_recovery => Some(p.lsn),
            _ => None,
        };
        if let Some(lsn) = primary_lsn {
            self.remember(now, lsn, lim);
        }
        if let Outcome::Passed(p, _) = &outcomes[primary] {
            if !p.in_recovery {
                topo.record_primary_lsn(p.insert_lsn, p.started);
            }
        }
        for (i, node) in topo.nodes.iter().enumerate() {
            let was_readable = node.is_readable();
            let probe = match &outcomes[i] {
                Outcome::Passed(p, _) => Some(p),
                _ => None,
            };
            if let Some(p) = probe {
                node.lsn.store(if p.in_recovery { p.lsn } else { p.insert_lsn }, Relaxed);
            }
            let m = &mut self.nodes[i];
            if i == primary || probe.is_some_and(|p| !p.in_recovery) {
                // A primary has no lag and takes no reads here (the router's fallback
                // sends reads to the current one).
                if i == primary || probe.is_some() {
                    node.lag_bytes.store(0, Relaxed);
                    node.lag_micros.store(0, Relaxed);
                }
                m.lag = Lag::Unknown;
                node.readable.store(false, Relaxed);
                continue;
            }
            if let (Some(p), Some(plsn)) = (probe, primary_lsn) {
                let bytes = plsn.saturating_sub(p.lsn);
                let lag =
                    if bytes == 0 { Duration::ZERO } else { behind(&self.history, p.lsn, now).min(p.replay_age.unwrap_or(Duration::MAX)) };
                node.lag_bytes.store(bytes, Relaxed);
                node.lag_micros.store(micros(lag), Relaxed);
                if m.breaker.is_closed() {
                    let next = m.lag.next(bytes, lag, lim);
                    if next == Lag::Over && m.lag != Lag::Over {
                        events.push(Event::Lagging { node: i, bytes, lag });
                    }
                    m.lag = next;
                }
            }
            let readable = m.breaker.is_closed() && node.up.load(Relaxed) && node.in_recovery.load(Relaxed) && m.lag == Lag::Within;
            node.readable.store(readable, Relaxed);
            if readable && !was_readable {
                let lag = Duration::from_micros(node.lag_micros.load(Relaxed));
                events.push(Event::Readable { node: i, bytes: node.lag_bytes.load(Relaxed), lag });
            }
        }
        events
    }

    /// Breakers, `up`, `checked`, `in_recovery`, check latency.
    fn health(&mut self, topo: &Topology, outcomes: &[Outcome], now: Instant, lim: &Limits, events: &mut Vec<Event>) {
        for (i, ((node, m), outcome)) in topo.nodes.iter().zip(&mut self.nodes).zip(outcomes).enumerate() {
            match outcome {
                Outcome::NotProbed => {}
                Outcome::Failed(error, took) => {
                    node.checked.store(true, Relaxed);
                    node.check_micros.store(micros(*took), Relaxed);
                    if m.breaker.record(false, now, lim.interval, lim.ban_after) == Some(Change::Opened) {
                        node.up.store(false, Relaxed);
                        node.readable.store(false, Relaxed);
                        m.lag = Lag::Unknown;
                        events.push(Event::Down { node: i, error: error.clone() });
                    }
                }
                Outcome::Passed(p, took) => {
                    node.checked.store(true, Relaxed);
                    node.check_micros.store(micros(*took), Relaxed);
                    let change = m.breaker.record(true, now, lim.interval, lim.ban_after);
                    if node.in_recovery.swap(p.in_recovery, Relaxed) != p.in_recovery {
                        events.push(Event::Role { node: i, in_recovery: p.in_recovery });
                    }
                    if m.breaker.is_closed() {
                        node.up.store(true, Relaxed);
                    }
                    if change == Some(Change::Closed) {
                        events.push(Event::Up { node: i });
                    }
                }
            }
        }
    }

    /// Follows a failover: the current primary stays while it is up and not in
    /// recovery; else a node that answered as a primary this round takes over.
    fn primary(&mut self, topo: &Topology, outcomes: &[Outcome], events: &mut Vec<Event>) -> usize {
        let cur = topo.primary();
        let claims: Vec<usize> =
            (0..topo.nodes.len()).filter(|&j| j != cur && matches!(&outcomes[j], Outcome::Passed(p, _) if !p.in_recovery)).collect();
        let healthy = self.nodes[cur].breaker.is_closed() && !topo.nodes[cur].in_recovery.load(Relaxed);
        if healthy {
            self.warned_no_primary = false;
            // Another node answering as a primary too: keep the current one, warn once
            // (again only after that node was seen down or in recovery).
            if let Some(w) = self.warned_two {
                if !self.nodes[w].breaker.is_closed() || topo.nodes[w].in_recovery.load(Relaxed) {
                    self.warned_two = None;
                }
            }
            let cur_claims = matches!(&outcomes[cur], Outcome::Passed(p, _) if !p.in_recovery);
            if let (true, Some(&other), None) = (cur_claims, claims.first(), self.warned_two) {
                self.warned_two = Some(other);
                events.push(Event::TwoPrimaries { current: cur, other });
            }
            return cur;
        }
        let to = claims.iter().copied().find(|&j| self.nodes[j].breaker.is_closed()).or(claims.first().copied());
        match to {
            Some(to) => {
                topo.set_primary(to);
                self.history.clear();
                self.warned_two = None;
                self.warned_no_primary = false;
                events.push(Event::Failover { from: cur, to });
                to
            }
            None => {
                let in_recovery = matches!(&outcomes[cur], Outcome::Passed(p, _) if p.in_recovery);
                if in_recovery && !self.warned_no_primary {
                    self.warned_no_primary = true;
                    events.push(Event::NoPrimary { current: cur });
                }
                cur
            }
        }
    }

    /// Adds the primary's position to the history, which keeps one sample from
    /// before its window (so "behind since before the window" stays true) and at
    /// most ~1024 samples in it.
    fn remember(&mut self, now: Instant, lsn: u64, lim: &Limits) {
        let window = (lim.max_lag * 2 + lim.interval * 2).max(Duration::from_secs(1));
        let step = window / 1024;
        match self.history.back() {
            Some(&(_, last)) if lsn <= last => {}
            Some(&(t, _)) if now.saturating_duration_since(t) < step => {}
            _ => self.history.push_back((now, lsn)),
        }
        while self.history.get(1).is_some_and(|&(t, _)| now.saturating_duration_since(t) > window) {
            self.history.pop_front();
        }
    }
}

/// How long a standby at `replay` has been missing WAL the primary had: since the
/// first remembered primary position past `replay` (after the last one not past it).
fn behind(history: &VecDeque<(Instant, u64)>, replay: u64, now: Instant) -> Duration {
    let mut since = now;
    for &(t, lsn) in history.iter().rev() {
        if lsn <= replay {
            break;
        }
        since = t;
    }
    now.saturating_duration_since(since)
}

#[cfg(test)]
mod tests;
