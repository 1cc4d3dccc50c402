//! Prometheus metrics: what pgmux counts, and how it is rendered.
//!
//! One [`Metrics`] per process, owned by the proxy (no global recorder): a
//! `metrics-exporter-prometheus` recorder used directly. Hot-path figures are
//! counters and histograms registered once per pool ([`PoolMetrics`]) and bumped once
//! per transaction; gauges (clients, servers, saturation) are read from the pools at
//! scrape time ([`collect`]), so keeping them costs nothing in between. Histograms
//! have real buckets (not summaries), so they can be summed across instances.
//! Replica and routing figures are rendered from the topologies ([`replicas`]), the
//! connection-limit gauges from the proxy's limits ([`limits`]).
//! The HTTP endpoint is in [`http`].

pub mod http;
pub mod limits;
pub mod replicas;

use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::proxy::Proxy;

/// Bucket bounds (seconds) for waits and query durations: 100 µs to 60 s.
const BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

static METADATA: Metadata<'static> = Metadata::new("pgmux", metrics::Level::INFO, None);

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Refused client connections, by reason.
    pub rejected: Rejected,
    pub config_reloads_ok: Counter,
    pub config_reloads_failed: Counter,
}

/// `pgmux_client_connections_rejected_total{reason}`.
pub struct Rejected {
    pub too_many_clients: Counter,
    pub auth_failed: Counter,
    pub unknown_database: Counter,
    pub startup_timeout: Counter,
    pub protocol: Counter,
    pub server_unavailable: Counter,
    /// Refused by the `hba:` rules.
    pub hba: Counter,
    /// Refused while the address is banned after too many failed logins.
    pub auth_failure_limit: Counter,
}

/// Per-pool handles, registered once: labels `database`, `user`, `server`, `role`.
/// Histograms are recorded live; counters are copied from the pool's own atomic
/// counters at scrape time (one source of truth for SHOW STATS and /metrics).
pub struct PoolMetrics {
    pub wait: Histogram,
    pub query_duration: Histogram,
    counters: PoolCounterHandles,
    gauges: PoolGauges,
}

struct PoolCounterHandles {
    transactions: Counter,
    queries: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    checkout_timeouts: Counter,
    connects: Counter,
    connect_failures: Counter,
}

struct PoolGauges {
    size: Gauge,
    saturation: Gauge,
    servers_active: Gauge,
    servers_idle: Gauge,
    clients_active: Gauge,
    clients_waiting: Gauge,
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs.iter().map(|(k, v)| Label::new(*k, v.to_string())).collect()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let counter =
            |name: &'static str, l: &[(&'static str, &str)]| recorder.register_counter(&Key::from_parts(name, labels(l)), &METADATA);
        let rejected = |reason| counter("pgmux_client_connections_rejected_total", &[("reason", reason)]);
        let rejected = Rejected {
            too_many_clients: rejected("too_many_clients"),
            auth_failed: rejected("auth_failed"),
            unknown_database: rejected("unknown_database"),
            startup_timeout: rejected("startup_timeout"),
            protocol: rejected("protocol"),
            server_unavailable: rejected("server_unavailable"),
            hba: rejected("hba"),
            auth_failure_limit: rejected("auth_failure_limit"),
        };
        let config_reloads_ok = counter("pgmux_config_reloads_total", &[("result", "ok")]);
        let config_reloads_failed = counter("pgmux_config_reloads_total", &[("result", "failed")]);
        Metrics { recorder, handle, rejected, config_reloads_ok, config_reloads_failed }
    }

    fn counter(&self, name: &'static str, l: &[(&'static str, &str)]) -> Counter {
        self.recorder.register_counter(&Key::from_parts(name, labels(l)), &METADATA)
    }

    fn gauge(&self, name: &'static str, l: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&Key::from_parts(name, labels(l)), &METADATA)
    }

    fn histogram(&self, name: &'static str, l: &[(&'static str, &str)]) -> Histogram {
        self.recorder.register_histogram(&Key::from_parts(name, labels(l)), &METADATA)
    }

    /// Handles for one pool.
    pub fn pool(&self, database: &str, user: &str, server: &str, role: &str) -> PoolMetrics {
        let l = [("database", database), ("user", user), ("server", server), ("role", role)];
        let client = [("database", database), ("user", user), ("server", server), ("role", role)];
        let with = |state: &'static str| {
            let mut v = l.to_vec();
            v.push(("state", state));
            v
        };
        let with_client = |state: &'static str| {
            let mut v = client.to_vec();
            v.push(("state", state));
            v
        };
        PoolMetrics {
            counters: PoolCounterHandles {
                transactions: self.counter("pgmux_transactions_total", &l),
                queries: self.counter("pgmux_queries_total", &l),
                bytes_in: self.counter("pgmux_client_bytes_received_total", &l),
                bytes_out: self.counter("pgmux_client_bytes_sent_total", &l),
                checkout_timeouts: self.counter("pgmux_pool_checkout_timeouts_total", &l),
                connects: self.counter("pgmux_server_connects_total", &l),
                connect_failures: self.counter("pgmux_server_connect_failures_total", &l),
            },
            wait: self.histogram("pgmux_pool_wait_seconds", &l),
            query_duration: self.histogram("pgmux_query_duration_seconds", &l),
            gauges: PoolGauges {
                size: self.gauge("pgmux_pool_size", &l),
                saturation: self.gauge("pgmux_pool_saturation", &l),
                servers_active: self.gauge("pgmux_servers", &with("active")),
                servers_idle: self.gauge("pgmux_servers", &with("idle")),
                clients_active: self.gauge("pgmux_clients", &with_client("active")),
                clients_waiting: self.gauge("pgmux_clients", &with_client("waiting")),
            },
        }
    }

    /// Periodic housekeeping of the recorder (drains histogram samples).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The text exposition, after refreshing the gauges from `proxy`; the replica
    /// and routing families are appended from the topologies ([`replicas`]), the
    /// limit gauges from the proxy's limits ([`limits`]).
    pub fn render(&self, proxy: &Proxy) -> String {
        collect(self, proxy);
        self.handle.run_upkeep();
        let mut out = self.handle.render();
        replicas::render(&proxy.topologies(), &mut out);
        limits::render(&proxy.limits, &proxy.config(), &mut out);
        out
    }
}

/// Sets the gauges from the pools' current state.
pub fn collect(m: &Metrics, proxy: &Proxy) {
    for (db, pools) in proxy.pool_sets() {
        let mut busy = 0usize;
        for pool in std::iter::once(&pools.primary).chain(pools.replicas.iter()) {
            let s = pool.status();
            let g = &pool.metrics.gauges;
            let active = s.total - s.idle;
            g.size.set(s.size as f64);
            g.saturation.set(active as f64 / s.size.max(1) as f64);
            g.servers_active.set(active as f64);
            g.servers_idle.set(s.idle as f64);
            g.clients_active.set(active as f64);
            g.clients_waiting.set(s.waiting as f64);
            let (c, h) = (&pool.counters, &pool.metrics.counters);
            h.transactions.absolute(c.transactions.load(Ordering::Relaxed));
            h.queries.absolute(c.queries.load(Ordering::Relaxed));
            h.bytes_in.absolute(c.bytes_in.load(Ordering::Relaxed));
            h.bytes_out.absolute(c.bytes_out.load(Ordering::Relaxed));
            h.checkout_timeouts.absolute(c.timeouts.load(Ordering::Relaxed));
            h.connects.absolute(c.connects.load(Ordering::Relaxed));
            h.connect_failures.absolute(c.connect_failures.load(Ordering::Relaxed));
            busy += active + s.waiting;
        }
        let idle = pools.clients.load(Ordering::Relaxed).saturating_sub(busy);
        m.gauge("pgmux_clients", &[("database", &db), ("user", &pools.user), ("state", "idle")]).set(idle as f64);
    }
    m.gauge("pgmux_client_connections", &[]).set(proxy.clients.connected() as f64);
    m.gauge("pgmux_prepared_statements", &[]).set(proxy.statements.len() as f64);
    let c = &proxy.counters;
    m.gauge("pgmux_pinned_sessions", &[]).set(c.pinned_now.load(Ordering::Relaxed) as f64);
    m.counter("pgmux_pinned_sessions_total", &[]).absolute(c.pinned_sessions.load(Ordering::Relaxed));
    m.counter("pgmux_stale_plan_resets_total", &[]).absolute(c.stale_plans.load(Ordering::Relaxed));
    m.counter("pgmux_stale_plan_retries_total", &[]).absolute(c.stale_plan_retries.load(Ordering::Relaxed));
}
