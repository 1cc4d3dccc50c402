//! Rounds of checks applied to a primary + 2 replicas topology, on a fake clock.

use super::*;
use crate::config::ServerAddr;

const TICK: Duration = Duration::from_millis(100);
const LIM: Limits = Limits { interval: TICK, ban_after: 2, max_lag: Duration::from_secs(1), max_bytes: 1000 };

fn topo() -> Topology {
    let a = |p| ServerAddr { host: "127.0.0.1".into(), port: p };
    Topology::new("app", a(5432), vec![a(5433), a(5434)])
}

fn primary(lsn: u64) -> Outcome {
    Outcome::Passed(Probe { in_recovery: false, lsn, insert_lsn: lsn + 8, replay_age: None, started: 7 }, Duration::from_micros(300))
}

fn standby(lsn: u64) -> Outcome {
    standby_aged(lsn, Duration::from_secs(600))
}

fn standby_aged(lsn: u64, age: Duration) -> Outcome {
    Outcome::Passed(Probe { in_recovery: true, lsn, insert_lsn: lsn, replay_age: Some(age), started: 7 }, Duration::from_micros(300))
}

fn failed() -> Outcome {
    Outcome::Failed("connection refused".into(), Duration::from_micros(50))
}

/// A monitor on a fake clock: `round` applies outcomes, skipping nodes whose
/// breaker is waiting (as the real monitor does), and advances the clock one tick.
struct Sim {
    t: Topology,
    m: DbMonitor,
    now: Instant,
}

impl Sim {
    fn new() -> Sim {
        Sim { t: topo(), m: DbMonitor::new(3), now: Instant::now() }
    }

    fn round(&mut self, outcomes: [Outcome; 3]) -> Vec<Event> {
        let outcomes: Vec<Outcome> =
            outcomes.into_iter().enumerate().map(|(i, o)| if self.m.admit(i, self.now) { o } else { Outcome::NotProbed }).collect();
        let ev = self.m.apply(&self.t, &outcomes, self.now, &LIM);
        self.now += TICK;
        ev
    }

    fn readable(&self) -> [bool; 3] {
        [0, 1, 2].map(|i| self.t.nodes[i].is_readable())
    }

    fn lag(&self, i: usize) -> (u64, Duration) {
        let n = &self.t.nodes[i];
        (n.lag_bytes.load(Relaxed), Duration::from_micros(n.lag_micros.load(Relaxed)))
    }
}

#[test]
fn healthy_replicas_take_reads_the_primary_does_not() {
    let mut s = Sim::new();
    assert_eq!(s.readable(), [false, false, false]);
    let ev = s.round([primary(5000), standby(5000), standby(4900)]);
    assert_eq!(s.readable(), [false, true, true]);
    assert_eq!(
        ev,
        vec![Event::Readable { node: 1, bytes: 0, lag: Duration::ZERO }, Event::Readable { node: 2, bytes: 100, lag: Duration::ZERO },]
    );
    // The primary's position is its insert position, also given to read-your-writes.
    assert_eq!(s.t.nodes[0].lsn.load(Relaxed), 5008);
    assert_eq!(s.t.primary_lsn_since(6), Some(5008));
    assert_eq!(s.t.primary_lsn_since(7), None);
    assert_eq!(s.t.nodes[2].lsn.load(Relaxed), 4900);
    assert_eq!(s.t.state(0), "up");
    assert!(s.t.nodes.iter().all(|n| n.checked.load(Relaxed) && n.up.load(Relaxed)));
    // Nothing changes: nothing is logged.
    assert_eq!(s.round([primary(5000), standby(5000), standby(5000)]), vec![]);
}

#[test]
fn byte_lag_bans_at_once_and_readmits_within_half() {
    let mut s = Sim::new();
    s.round([primary(5000), standby(5000), standby(5000)]);
    let ev = s.round([primary(7000), standby(5999), standby(7000)]);
    assert_eq!(s.readable(), [false, false, true]);
    assert!(matches!(ev[..], [Event::Lagging { node: 1, bytes: 1001, .. }]), "{ev:?}");
    assert_eq!(s.t.state(1), "lagging");
    // Back under the bound but not under half: still out (hysteresis), not logged again.
    assert_eq!(s.round([primary(7000), standby(6300), standby(7000)]), vec![]);
    assert_eq!(s.readable(), [false, false, true]);
    let ev = s.round([primary(7000), standby(6600), standby(7000)]);
    assert_eq!(s.readable(), [false, true, true]);
    assert!(matches!(ev[..], [Event::Readable { node: 1, bytes: 400, .. }]), "{ev:?}");
    // Readable again: it stays until it is past the full bound.
    s.round([primary(7000), standby(6100), standby(7000)]);
    assert_eq!(s.readable(), [false, true, true]);
}

#[test]
fn time_lag_grows_while_replay_is_stuck_and_not_while_the_primary_is_idle() {
    let mut s = Sim::new();
    // Idle primary: replicas caught up, their last replayed transaction 10 min old.
    for _ in 0..20 {
        s.round([primary(100), standby(100), standby(100)]);
    }
    assert_eq!((s.lag(1), s.readable()), ((0, Duration::ZERO), [false, true, true]));
    // The first write after the idle period: replica 2 a tick behind, not 10 minutes.
    s.round([primary(200), standby(200), standby(100)]);
    assert_eq!(s.lag(2), (100, Duration::ZERO));
    s.round([primary(300), standby(300), standby(200)]);
    assert_eq!(s.lag(2), (100, Duration::ZERO));
    assert!(s.readable()[2]);
    // Replica 1 stops replaying at 300 while the primary keeps writing (small amounts).
    let mut lagging_at = None;
    for k in 1..=15u64 {
        let ev = s.round([primary(300 + k * 10), standby(300), standby(300 + k * 10)]);
        if ev.iter().any(|e| matches!(e, Event::Lagging { node: 1, .. })) {
            lagging_at = Some(k);
        }
    }
    // The first position it lacks was seen 1 tick after it stopped: past 1 s at tick 12.
    assert_eq!(lagging_at, Some(12));
    assert_eq!(s.lag(1), (150, TICK * 14));
    assert_eq!(s.readable(), [false, false, true]);
    // Replay resumes: readable as soon as both lags are within half.
    let ev = s.round([primary(460), standby(460), standby(460)]);
    assert!(matches!(ev[..], [Event::Readable { node: 1, bytes: 0, .. }]), "{ev:?}");
}

#[test]
fn time_lag_is_capped_by_the_replay_timestamp_age() {
    let mut s = Sim::new();
    for k in 0..10 {
        s.round([primary(100 + k), standby(100), standby(100 + k)]);
    }
    let (_, lag) = s.lag(1);
    assert_eq!(lag, TICK * 8);
    s.round([primary(200), standby_aged(100, Duration::from_millis(150)), standby(200)]);
    assert_eq!(s.lag(1), (100, Duration::from_millis(150)));
}

#[test]
fn a_replica_that_stops_answering_is_banned_then_probed_with_backoff() {
    let mut s = Sim::new();
    s.round([primary(10), standby(10), standby(10)]);
    // One failure: still in rotation.
    assert_eq!(s.round([primary(10), failed(), standby(10)]), vec![]);
    assert_eq!(s.readable(), [false, true, true]);
    let ev = s.round([primary(10), failed(), standby(10)]);
    assert_eq!(ev, vec![Event::Down { node: 1, error: "connection refused".into() }]);
    assert_eq!(s.readable(), [false, false, true]);
    assert_eq!((s.t.state(1), s.t.nodes[1].up.load(Relaxed)), ("down", false));
    // Probed after one interval, then after 2, then 4 (each failed probe doubles the wait).
    let probed: Vec<bool> = (0..8)
        .map(|_| {
            let before = s.m.nodes[1].breaker;
            s.round([primary(10), failed(), standby(10)]);
            before != s.m.nodes[1].breaker
        })
        .collect();
    assert_eq!(probed, [true, false, true, false, false, false, true, false]);
    assert_eq!(s.m.nodes[1].breaker, Breaker::Open { until: s.now + TICK * 6, backoff: TICK * 8 });
}

#[test]
fn a_replica_back_from_down_logs_up_and_readable_once() {
    let mut s = Sim::new();
    s.round([primary(10), standby(10), standby(10)]);
    s.round([primary(10), failed(), standby(10)]);
    s.round([primary(10), failed(), standby(10)]);
    let mut all = vec![];
    for _ in 0..5 {
        all.extend(s.round([primary(10), standby(10), standby(10)]));
    }
    assert_eq!(all, vec![Event::Up { node: 1 }, Event::Readable { node: 1, bytes: 0, lag: Duration::ZERO }]);
}

#[test]
fn half_open_replica_takes_no_reads() {
    let mut s = Sim::new();
    s.round([primary(10), failed(), standby(10)]);
    s.round([primary(10), failed(), standby(10)]);
    s.round([primary(10), standby(10), standby(10)]); // the first probe passes
    assert_eq!((s.t.state(1), s.readable()[1]), ("down", false));
}

#[test]
fn failover_follows_the_node_that_answers_as_primary() {
    let mut s = Sim::new();
    s.round([primary(1000), standby(1000), standby(1000)]);
    // The primary dies; replica 1 is promoted. One failed check is not enough.
    let ev = s.round([failed(), primary(1100), standby(1000)]);
    assert!(matches!(ev[..], [Event::Role { node: 1, in_recovery: false }]), "{ev:?}");
    assert_eq!(s.t.primary(), 0);
    let ev = s.round([failed(), primary(1200), standby(1150)]);
    assert_eq!(ev, vec![Event::Down { node: 0, error: "connection refused".into() }, Event::Failover { from: 0, to: 1 }]);
    assert_eq!(s.t.primary(), 1);
    assert_eq!(s.readable(), [false, false, true]);
    assert_eq!(s.lag(2).0, 50, "lag against the new primary");
    assert_eq!((s.t.nodes[1].role(), s.t.state(1)), ("primary", "up"));
    // The old primary comes back as a standby of the new one: a readable replica.
    let mut ev = vec![];
    for _ in 0..6 {
        ev.extend(s.round([standby(1200), primary(1200), standby(1200)]));
    }
    assert_eq!(
        ev,
        vec![Event::Role { node: 0, in_recovery: true }, Event::Up { node: 0 }, Event::Readable { node: 0, bytes: 0, lag: Duration::ZERO },]
    );
    assert_eq!(s.readable(), [true, false, true]);
    assert_eq!(s.t.primary(), 1);
}

#[test]
fn a_demoted_primary_hands_over_at_once() {
    let mut s = Sim::new();
    s.round([primary(1000), standby(1000), standby(1000)]);
    let ev = s.round([standby(1000), primary(1000), standby(1000)]);
    assert!(ev.contains(&Event::Failover { from: 0, to: 1 }), "{ev:?}");
    assert_eq!(s.t.primary(), 1);
}

#[test]
fn two_primaries_keep_the_current_one_and_warn_once() {
    let mut s = Sim::new();
    s.round([primary(1000), standby(1000), standby(1000)]);
    let mut ev = vec![];
    for _ in 0..5 {
        ev.extend(s.round([primary(1000), primary(1000), standby(1000)]));
    }
    assert_eq!(ev, vec![Event::Role { node: 1, in_recovery: false }, Event::TwoPrimaries { current: 0, other: 1 }]);
    assert_eq!(s.t.primary(), 0);
    assert_eq!(s.readable(), [false, false, true]);
}

#[test]
fn a_primary_in_recovery_with_no_other_primary_is_kept_and_warned_once() {
    let mut s = Sim::new();
    let mut ev = vec![];
    for _ in 0..4 {
        ev.extend(s.round([standby(1000), standby(1000), standby(1000)]));
    }
    assert_eq!(ev, vec![Event::Role { node: 0, in_recovery: true }, Event::NoPrimary { current: 0 }]);
    assert_eq!(s.t.primary(), 0);
    // Without a primary position there is no lag to judge: replicas take no reads yet.
    assert_eq!(s.readable(), [false, false, false]);
}

#[test]
fn a_missed_primary_check_keeps_what_is_known() {
    let mut s = Sim::new();
    s.round([primary(1000), standby(1000), standby(900)]);
    assert_eq!(s.round([failed(), standby(1000), standby(950)]), vec![]);
    assert_eq!(s.readable(), [false, true, true]);
    assert_eq!(s.lag(2).0, 100, "lag kept from the last round with a primary position");
    assert_eq!(s.t.nodes[2].lsn.load(Relaxed), 950);
}

#[test]
fn zero_bounds_are_off() {
    let lim = Limits { max_lag: Duration::ZERO, max_bytes: 0, ..LIM };
    assert_eq!(Lag::Unknown.next(u64::MAX, Duration::from_secs(3600), &lim), Lag::Within);
    assert_eq!(Lag::Within.next(1001, Duration::ZERO, &LIM), Lag::Over);
    assert_eq!(Lag::Over.next(501, Duration::ZERO, &LIM), Lag::Over);
    assert_eq!(Lag::Over.next(500, Duration::from_millis(500), &LIM), Lag::Within);
    assert_eq!(Lag::Within.next(0, Duration::from_millis(1001), &LIM), Lag::Over);
}

#[test]
fn history_stays_bounded() {
    let mut m = DbMonitor::new(1);
    let t0 = Instant::now();
    for k in 0..100_000u64 {
        m.remember(t0 + Duration::from_millis(k), k + 1, &LIM);
    }
    assert!(m.history.len() <= 1030, "{}", m.history.len());
    // Behind everything remembered: behind since at least the window's start.
    assert!(behind(&m.history, 0, t0 + Duration::from_millis(100_000)) >= Duration::from_millis(2200));
}
