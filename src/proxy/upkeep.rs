//! The once-a-second upkeep job: pools warmed to `min_pool_size`, idle server
//! connections past their idle timeout or lifetime closed, pools under pressure
//! warned about (rate-limited), failed-login counts whose window has passed
//! forgotten, histogram samples folded, memory given back after a wave of clients.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pool::Pool;
use crate::state::State;

/// How often a pool under pressure is warned about, at most.
const PRESSURE_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Runs until aborted (at shutdown).
pub async fn run(state: Arc<State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warned: HashMap<String, Instant> = HashMap::new();
    // This thread's share (worker 0's), as every worker thread does its own.
    let _memory = super::Job(tokio::spawn(super::workers::give_back_memory(state.clone())));
    loop {
        tick.tick().await;
        // Folds recorded histogram samples into their buckets (bounded memory
        // even when nobody scrapes).
        state.metrics.upkeep();
        let config = state.config.current();
        // min_pool_size: only primaries carry traffic until routing exists.
        for set in state.pools.sets() {
            if set.primary.settings().min_size > 0 {
                let p = set.primary.clone();
                tokio::spawn(async move { p.warm().await });
            }
        }
        state.pools.limits.upkeep();
        state.auth_failures.prune(config.auth_failure_window.0);
        let pressure = (config.pool_pressure_waiting, config.pool_pressure_wait.nonzero());
        for p in state.pools.all() {
            p.reap();
            warn_if_pressed(&p, pressure, &mut last_warned);
        }
    }
}

/// Warns when a pool has `pool_pressure_waiting` clients waiting, or one waiting
/// `pool_pressure_wait` (each 0: off), at most every [`PRESSURE_WARNING_EVERY`].
fn warn_if_pressed(p: &Pool, (max_waiting, max_wait): (usize, Option<Duration>), last_warned: &mut HashMap<String, Instant>) {
    if max_waiting == 0 && max_wait.is_none() {
        return;
    }
    let s = p.status();
    let pressed = (max_waiting > 0 && s.waiting >= max_waiting) || max_wait.is_some_and(|w| s.max_wait >= w);
    let due = last_warned.get(&p.name).is_none_or(|t| t.elapsed() >= PRESSURE_WARNING_EVERY);
    if pressed && due {
        last_warned.insert(p.name.clone(), Instant::now());
        tracing::warn!(
            pool = %p.name,
            waiting = s.waiting,
            longest_wait_ms = s.max_wait.as_millis() as u64,
            in_use = s.total - s.idle,
            size = s.size,
            "pool pressure: clients are waiting for server connections"
        );
    }
}
