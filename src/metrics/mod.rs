//! Prometheus metrics: what pgmux counts, and how it is rendered.
//!
//! One [`Metrics`] per process, in the shared state (no global recorder): a
//! `metrics-exporter-prometheus` recorder used directly. Hot-path figures are
//! counters and histograms registered once per pool ([`PoolMetrics`]) and bumped once
//! per transaction; gauges (clients, servers, saturation) are read from the pools at
//! scrape time ([`collect`]), so keeping them costs nothing in between. Histograms
//! have real buckets (not summaries), so they can be summed across instances.
//! Replica and routing figures are rendered from the topologies ([`replicas`]), the
//! connection-limit gauges from samples of the limits ([`limits`]). Everything comes
//! in a [`Snapshot`] the caller reads at scrape time: this module imports neither the
//! shared state nor the pools. The HTTP endpoint is the proxy's (`proxy::http`).

pub mod histogram;
pub mod limits;
pub mod replicas;

use std::sync::Arc;

use histogram::{Buckets, Histograms};
use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::error::ErrorKind;
use crate::router::topology::Topology;
pub use limits::LimitSample;

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
    /// The per-pool histograms, kept by pgmux ([`histogram`]).
    histograms: Histograms,
}

/// `pgmux_client_connections_rejected_total{reason}`, one counter per [`ErrorKind`].
pub struct Rejected([Counter; ErrorKind::ALL.len()]);

impl Rejected {
    /// Counts one refused login.
    pub fn count(&self, kind: ErrorKind) {
        self.0[kind as usize].increment(1);
    }
}

/// Per-pool handles, registered once: labels `database`, `user`, `server`, `role`.
/// Histograms are recorded live; counters are copied from the pool's own atomic
/// counters at scrape time (one source of truth for SHOW STATS and /metrics).
pub struct PoolMetrics {
    pub wait: Arc<Buckets>,
    pub query_duration: Arc<Buckets>,
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

/// A label value, escaped as the text format wants.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
        let rejected = Rejected(ErrorKind::ALL.map(|k| counter("pgmux_client_connections_rejected_total", &[("reason", k.label())])));
        let config_reloads_ok = counter("pgmux_config_reloads_total", &[("result", "ok")]);
        let config_reloads_failed = counter("pgmux_config_reloads_total", &[("result", "failed")]);
        Metrics { recorder, handle, rejected, config_reloads_ok, config_reloads_failed, histograms: Histograms::default() }
    }

    /// `pgmux_clients_accepted_total{worker}`: connections worker `worker`'s listener
    /// accepted (with `workers: N`, how the kernel spread clients across threads).
    pub fn accepted_by_worker(&self, worker: u16) -> Counter {
        self.counter("pgmux_clients_accepted_total", &[("worker", &worker.to_string())])
    }

    fn counter(&self, name: &'static str, l: &[(&'static str, &str)]) -> Counter {
        self.recorder.register_counter(&Key::from_parts(name, labels(l)), &METADATA)
    }

    fn gauge(&self, name: &'static str, l: &[(&'static str, &str)]) -> Gauge {
        self.recorder.register_gauge(&Key::from_parts(name, labels(l)), &METADATA)
    }

    fn histogram(&self, name: &'static str, l: &[(&'static str, &str)]) -> Arc<Buckets> {
        self.histograms.register(name, l)
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

    /// The text exposition of a scrape's snapshot: the gauges and counters copied
    /// from it into the recorder, then the replica and routing families
    /// ([`replicas`]) and the limit gauges ([`limits`]) appended.
    pub fn render(&self, s: &Snapshot<'_>) -> String {
        self.collect(s);
        self.handle.run_upkeep();
        let mut out = self.handle.render();
        self.histograms.render(&mut out);
        replicas::render(&s.topologies, &mut out);
        limits::render(&s.limits, &mut out);
        out
    }

    /// Sets the gauges and counters from a snapshot.
    fn collect(&self, s: &Snapshot<'_>) {
        for p in &s.pools {
            let g = &p.metrics.gauges;
            let active = p.total - p.idle;
            g.size.set(p.size as f64);
            g.saturation.set(active as f64 / p.size.max(1) as f64);
            g.servers_active.set(active as f64);
            g.servers_idle.set(p.idle as f64);
            g.clients_active.set(active as f64);
            g.clients_waiting.set(p.waiting as f64);
            let (c, h) = (&p.counts, &p.metrics.counters);
            h.transactions.absolute(c.transactions);
            h.queries.absolute(c.queries);
            h.bytes_in.absolute(c.bytes_in);
            h.bytes_out.absolute(c.bytes_out);
            h.checkout_timeouts.absolute(c.checkout_timeouts);
            h.connects.absolute(c.connects);
            h.connect_failures.absolute(c.connect_failures);
        }
        for c in &s.idle_clients {
            self.gauge("pgmux_clients", &[("database", &c.database), ("user", &c.user), ("state", "idle")]).set(c.idle as f64);
        }
        self.gauge("pgmux_client_connections", &[]).set(s.client_connections as f64);
        self.gauge("pgmux_prepared_statements", &[]).set(s.prepared_statements as f64);
        self.gauge("pgmux_pinned_sessions", &[]).set(s.pinned_now as f64);
        self.counter("pgmux_pinned_sessions_total", &[]).absolute(s.pinned_total);
        self.counter("pgmux_stale_plan_resets_total", &[]).absolute(s.stale_plans);
        self.counter("pgmux_stale_plan_retries_total", &[]).absolute(s.stale_plan_retries);
        for l in &s.notify {
            let db = [("database", l.database.as_str())];
            self.gauge("pgmux_notify_listener_connected", &db).set(f64::from(u8::from(l.connected)));
            self.gauge("pgmux_notify_channels", &db).set(l.channels as f64);
            self.gauge("pgmux_notify_listening_clients", &db).set(l.clients as f64);
            self.gauge("pgmux_notify_queued", &db).set(l.queued as f64);
            self.counter("pgmux_notify_received_total", &db).absolute(l.received);
            self.counter("pgmux_notify_delivered_total", &db).absolute(l.delivered);
            self.counter("pgmux_notify_dropped_total", &db).absolute(l.dropped);
            self.counter("pgmux_notify_listener_lost_total", &db).absolute(l.lost);
            self.counter("pgmux_notify_overflows_total", &db).absolute(l.overflows);
            self.counter("pgmux_notify_missed_total", &db).absolute(l.missed);
        }
        if let Some(f) = &s.fleet {
            self.gauge("pgmux_fleet_instances", &[]).set(f.instances as f64);
            self.gauge("pgmux_fleet_pool_share", &[]).set(f.pool_share as f64);
            self.gauge("pgmux_fleet_settled", &[]).set(f64::from(u8::from(f.settled)));
            self.gauge("pgmux_fleet_draining", &[]).set(f64::from(u8::from(f.draining)));
            self.counter("pgmux_fleet_heartbeat_failures_total", &[]).absolute(f.heartbeat_failures);
            self.counter("pgmux_fleet_packets_refused_total", &[]).absolute(f.packets_refused);
            for (result, n) in f.cancels {
                self.counter("pgmux_fleet_cancels_total", &[("result", result)]).absolute(n);
            }
        }
    }
}

/// What a scrape shows, read from the side (pools, registries, topologies) by the
/// caller: the metrics module knows none of them.
pub struct Snapshot<'a> {
    pub pools: Vec<PoolSample<'a>>,
    pub idle_clients: Vec<IdleClients>,
    pub client_connections: usize,
    pub prepared_statements: usize,
    pub pinned_now: i64,
    pub pinned_total: u64,
    pub stale_plans: u64,
    pub stale_plan_retries: u64,
    pub limits: Vec<LimitSample>,
    pub topologies: Vec<Arc<Topology>>,
    /// The fleet, when this instance is part of one.
    pub fleet: Option<FleetSample>,
    /// LISTEN/NOTIFY, per database with listening clients.
    pub notify: Vec<NotifySample>,
}

/// One database's LISTEN/NOTIFY hub at a scrape (`notify::Hub`).
#[derive(Debug, Default, Clone)]
pub struct NotifySample {
    pub database: String,
    pub connected: bool,
    pub channels: usize,
    pub clients: usize,
    pub queued: usize,
    pub received: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub lost: u64,
    pub overflows: u64,
    pub missed: u64,
}

/// The fleet at a scrape.
#[derive(Debug, Default, Clone)]
pub struct FleetSample {
    /// Instances alive, this one included.
    pub instances: usize,
    /// This instance's share of `pool.size` now.
    pub pool_share: usize,
    pub settled: bool,
    pub draining: bool,
    pub heartbeat_failures: u64,
    pub packets_refused: u64,
    /// Cancel requests by what became of them: forwarded, failed, no_owner, forged,
    /// received (from a peer).
    pub cancels: [(&'static str, u64); 5],
}

/// One pool at a scrape: its occupancy and counters, and its registered handles.
pub struct PoolSample<'a> {
    pub metrics: &'a PoolMetrics,
    pub idle: usize,
    pub total: usize,
    pub waiting: usize,
    pub size: usize,
    pub counts: PoolCounts,
}

/// A pool's counters since it was created.
#[derive(Debug, Default, Clone, Copy)]
pub struct PoolCounts {
    pub transactions: u64,
    pub queries: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub checkout_timeouts: u64,
    pub connects: u64,
    pub connect_failures: u64,
}

/// Clients of one (database, user) that hold no server connection and wait for none.
pub struct IdleClients {
    pub database: String,
    pub user: String,
    pub idle: usize,
}
