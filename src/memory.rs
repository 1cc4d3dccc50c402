//! Giving memory back to the operating system after a wave of clients leaves.
//!
//! Freed client buffers and task memory go back to the allocator, and glibc's
//! malloc keeps most of it: after 10,000 idle clients disconnect, RSS stays at
//! its peak (PgBouncer, PgCat and PgDog behave the same). The upkeep task calls
//! [`Trim::after_tick`] once a second; when the number of clients has fallen well
//! below the peak since the last trim, or a burst's spare read buffers were just
//! freed, it asks the allocator to return free pages (mimalloc: `mi_collect`, glibc:
//! `malloc_trim`), which costs a few milliseconds and happens only after such a drop.

/// When to trim: tracks the peak client count since the last trim.
#[derive(Debug, Default)]
pub struct Trim {
    peak: usize,
}

/// Clients that must have left (from the peak) before a trim is worth it.
const MIN_DROP: usize = 256;

/// Bytes of spare read buffers freed in a tick that are worth a trim (32 buffers).
const MIN_FREED: usize = 256 * 1024;

impl Trim {
    /// Called once a second with the number of connected clients and the bytes of
    /// spare read buffers just freed (glibc keeps those too unless asked).
    pub fn after_tick(&mut self, clients: usize, freed_buffers: usize) {
        if self.due(clients) || freed_buffers >= MIN_FREED {
            release_free_memory();
        }
    }

    /// Whether enough clients left since the peak; resets the peak when so.
    fn due(&mut self, clients: usize) -> bool {
        self.peak = self.peak.max(clients);
        if self.peak - clients >= MIN_DROP && clients <= self.peak / 2 {
            self.peak = clients;
            return true;
        }
        false
    }
}

/// Returns free heap pages to the operating system: mimalloc's `mi_collect(true)` for
/// this thread's heap (the default allocator: a burst of queries leaves freed buffer
/// pages committed otherwise), glibc's `malloc_trim` without it; elsewhere a no-op.
fn release_free_memory() {
    #[cfg(feature = "mimalloc")]
    {
        // The allocator's crate, so that its library (which has mi_collect) is linked.
        use mimalloc as _;
        extern "C" {
            fn mi_collect(force: bool);
        }
        // SAFETY: mi_collect has no preconditions; it frees what this thread's heap
        // no longer uses.
        unsafe { mi_collect(true) };
    }
    #[cfg(all(not(feature = "mimalloc"), target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only walks the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_large_drop() {
        let mut t = Trim::default();
        assert!(!t.due(10_000));
        assert!(!t.due(9_900), "a small drop is not worth it");
        assert!(t.due(100));
        assert!(!t.due(100), "once per drop");
        assert!(!t.due(50), "fewer than MIN_DROP left since");
    }
}
