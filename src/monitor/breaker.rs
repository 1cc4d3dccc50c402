//! The replica monitor's circuit breaker, one per server: a pure state machine (no
//! I/O, no clock of its own) so every transition is unit-tested.
//!
//! - `Closed { failures }`: checked every tick; `ban_after_failures` consecutive
//!   failed checks open it.
//! - `Open { until, backoff }`: the server is down and not checked until `until`.
//!   The first wait is one monitor interval; every failed probe doubles it, up to
//!   [`MAX_BACKOFF`].
//! - `HalfOpen { passes, backoff }`: probed every tick again; [`CLOSE_AFTER`]
//!   consecutive passing probes close it, one failure opens it again (longer wait).

use std::time::{Duration, Instant};

/// The longest wait between probes of a server that stays down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Consecutive passing probes that close a half-open breaker.
pub const CLOSE_AFTER: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant, backoff: Duration },
    HalfOpen { passes: u32, backoff: Duration },
}

/// A transition worth telling the operator about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Closed -> Open: the server is taken out of rotation.
    Opened,
    /// HalfOpen -> Closed: it is back.
    Closed,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::Closed { failures: 0 }
    }
}

impl Breaker {
    /// The server answers its checks (it may take traffic).
    pub fn is_closed(&self) -> bool {
        matches!(self, Breaker::Closed { .. })
    }

    /// Whether the server is to be checked at `now`. An open breaker whose wait is
    /// over becomes half-open (this check is its first probe).
    pub fn admit(&mut self, now: Instant) -> bool {
        match *self {
            Breaker::Open { until, backoff } if now >= until => {
                *self = Breaker::HalfOpen { passes: 0, backoff };
                true
            }
            Breaker::Open { .. } => false,
            _ => true,
        }
    }

    /// Records the result of a check made after [`Breaker::admit`] said yes.
    /// `interval` is the monitor interval (the first wait once open).
    pub fn record(&mut self, ok: bool, now: Instant, interval: Duration, ban_after: u32) -> Option<Change> {
        match *self {
            Breaker::Closed { .. } if ok => {
                *self = Breaker::Closed { failures: 0 };
                None
            }
            Breaker::Closed { failures } => {
                let failures = failures + 1;
                if failures >= ban_after.max(1) {
                    *self = Breaker::Open { until: now + interval, backoff: interval };
                    Some(Change::Opened)
                } else {
                    *self = Breaker::Closed { failures };
                    None
                }
            }
            Breaker::HalfOpen { passes, backoff } if ok => {
                if passes + 1 >= CLOSE_AFTER {
                    *self = Breaker::Closed { failures: 0 };
                    Some(Change::Closed)
                } else {
                    *self = Breaker::HalfOpen { passes: passes + 1, backoff };
                    None
                }
            }
            Breaker::HalfOpen { backoff, .. } => {
                let backoff = (backoff * 2).min(MAX_BACKOFF.max(interval));
                *self = Breaker::Open { until: now + backoff, backoff };
                None
            }
            // Not admitted: nothing was checked.
            Breaker::Open { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(250);

    #[test]
    fn opens_after_consecutive_failures_only() {
        let (mut b, t) = (Breaker::default(), Instant::now());
        assert_eq!(b.record(false, t, TICK, 2), None);
        assert!(b.is_closed());
        // A pass in between resets the count.
        assert_eq!(b.record(true, t, TICK, 2), None);
        assert_eq!(b.record(false, t, TICK, 2), None);
        assert_eq!(b.record(false, t, TICK, 2), Some(Change::Opened));
        assert_eq!(b, Breaker::Open { until: t + TICK, backoff: TICK });
        assert!(!b.is_closed());
    }

    #[test]
    fn ban_after_one_opens_at_once() {
        let mut b = Breaker::default();
        assert_eq!(b.record(false, Instant::now(), TICK, 1), Some(Change::Opened));
    }

    #[test]
    fn open_is_not_probed_until_its_wait_is_over() {
        let (mut b, t) = (Breaker::default(), Instant::now());
        b.record(false, t, TICK, 1);
        assert!(!b.admit(t));
        assert!(!b.admit(t + TICK / 2));
        // Recording without admission changes nothing.
        assert_eq!(b.record(true, t, TICK, 1), None);
        assert!(matches!(b, Breaker::Open { .. }));
        assert!(b.admit(t + TICK));
        assert_eq!(b, Breaker::HalfOpen { passes: 0, backoff: TICK });
    }

    #[test]
    fn half_open_closes_after_two_passes() {
        let (mut b, t) = (Breaker::default(), Instant::now());
        b.record(false, t, TICK, 1);
        assert!(b.admit(t + TICK));
        assert_eq!(b.record(true, t + TICK, TICK, 1), None);
        assert!(!b.is_closed(), "one pass is not enough");
        assert!(b.admit(t + TICK * 2));
        assert_eq!(b.record(true, t + TICK * 2, TICK, 1), Some(Change::Closed));
        assert_eq!(b, Breaker::Closed { failures: 0 });
    }

    #[test]
    fn failed_probes_double_the_wait_up_to_ten_seconds() {
        let (mut b, mut t) = (Breaker::default(), Instant::now());
        b.record(false, t, TICK, 1);
        let mut waits = vec![];
        for _ in 0..8 {
            let Breaker::Open { until, .. } = b else { panic!("{b:?}") };
            waits.push(until - t);
            t = until;
            assert!(b.admit(t));
            assert_eq!(b.record(false, t, TICK, 1), None, "still down: no new change");
        }
        let ms: Vec<u128> = waits.iter().map(|w| w.as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
        // A pass then a failure while half-open: open again, with the longest wait.
        assert!(b.admit(t + MAX_BACKOFF));
        b.record(true, t, TICK, 1);
        b.record(false, t, TICK, 1);
        assert_eq!(b, Breaker::Open { until: t + MAX_BACKOFF, backoff: MAX_BACKOFF });
    }
}
