//! Failed logins per client address: [`AuthFailures`] counts them per IP address (a
//! wrong password and an unknown user alike); `auth_failure_limit` of them within
//! `auth_failure_window` ban the address for one window. A successful login clears
//! its address's count. Memory is bounded: expired entries are pruned by the proxy's
//! upkeep, and at [`MAX_TRACKED`] addresses the least recently failed tenth goes.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Most addresses tracked at once.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Failures since `since`.
    count: u32,
    since: Instant,
    last: Instant,
    banned_until: Option<Instant>,
}

/// Failed logins per client address.
#[derive(Debug)]
pub struct AuthFailures {
    map: DashMap<IpAddr, Entry>,
    cap: usize,
}

impl Default for AuthFailures {
    fn default() -> Self {
        Self::with_cap(MAX_TRACKED)
    }
}

impl AuthFailures {
    pub fn with_cap(cap: usize) -> Self {
        AuthFailures { map: DashMap::new(), cap: cap.max(10) }
    }

    /// Whether `ip` is banned now.
    pub fn banned(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.map.get(&ip.to_canonical()).and_then(|e| e.banned_until).is_some_and(|t| t > now)
    }

    /// Counts a failed login; returns true when this failure starts a ban.
    pub fn failed(&self, ip: IpAddr, limit: u32, window: Duration) -> bool {
        if limit == 0 {
            return false;
        }
        let ip = ip.to_canonical();
        let now = Instant::now();
        if !self.map.contains_key(&ip) && self.map.len() >= self.cap {
            self.make_room(now, window);
        }
        let mut e = self.map.entry(ip).or_insert(Entry { count: 0, since: now, last: now, banned_until: None });
        if e.banned_until.is_some_and(|t| t > now) {
            return false;
        }
        if e.banned_until.is_some() || now.duration_since(e.since) >= window {
            *e = Entry { count: 0, since: now, last: now, banned_until: None };
        }
        e.count += 1;
        e.last = now;
        if e.count >= limit {
            e.banned_until = Some(now + window);
            return true;
        }
        false
    }

    /// A successful login clears its address's count.
    pub fn succeeded(&self, ip: IpAddr) {
        self.map.remove(&ip.to_canonical());
    }

    /// Forgets counts whose window and bans that have passed (the proxy's upkeep).
    pub fn prune(&self, window: Duration) {
        let now = Instant::now();
        self.map.retain(|_, e| match e.banned_until {
            Some(t) => t > now,
            None => now.duration_since(e.since) < window,
        });
    }

    /// Addresses tracked now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// At the cap: prune, and if still full drop the least recently failed tenth.
    fn make_room(&self, now: Instant, window: Duration) {
        self.prune(window);
        if self.map.len() < self.cap {
            return;
        }
        let mut ages: Vec<(Duration, IpAddr)> = self.map.iter().map(|e| (now.duration_since(e.last), *e.key())).collect();
        let k = ages.len() / 10;
        ages.select_nth_unstable_by(k, |a, b| b.0.cmp(&a.0));
        for (_, ip) in &ages[..=k] {
            self.map.remove(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn limit_bans_for_a_window_and_success_clears() {
        let f = AuthFailures::default();
        let w = Duration::from_millis(200);
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert!(!f.failed(a, 3, w) && !f.failed(a, 3, w));
        assert!(!f.failed(b, 3, w));
        assert!(!f.banned(a));
        f.succeeded(a);
        assert!(!f.failed(a, 3, w) && !f.failed(a, 3, w), "success cleared a's count");
        assert!(f.failed(a, 3, w), "third failure starts the ban");
        assert!(f.banned(a) && !f.banned(b), "b's count is its own");
        assert!(f.banned(ip("::ffff:10.0.0.1")), "IPv4-mapped is the same address");
        std::thread::sleep(w + Duration::from_millis(20));
        assert!(!f.banned(a));
        assert!(!f.failed(a, 3, w), "a fresh count after the ban");
        f.prune(w);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn old_failures_fall_out_of_the_window() {
        let f = AuthFailures::default();
        let w = Duration::from_millis(100);
        let a = ip("::1");
        f.failed(a, 2, w);
        std::thread::sleep(w + Duration::from_millis(10));
        assert!(!f.failed(a, 2, w), "the first failure's window has passed");
        assert!(f.failed(a, 2, w));
        assert!(!f.failed(a, 0, w), "limit 0: off");
    }

    #[test]
    fn memory_is_bounded() {
        let f = AuthFailures::with_cap(100);
        let w = Duration::from_secs(60);
        for i in 0..1000u32 {
            f.failed(IpAddr::from(i.to_be_bytes()), 5, w);
        }
        assert!(f.len() <= 100, "{}", f.len());
        assert!(f.len() >= 80, "{}", f.len());
    }
}
