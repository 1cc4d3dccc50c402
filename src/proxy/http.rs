//! The HTTP endpoint on `metrics_listen`: `/metrics` (Prometheus text format),
//! `/healthz` (the process answers) and `/readyz` (every database's current primary
//! is up and pgmux is not shutting down; a JSON body says, per server, its role,
//! state, whether it takes reads, its lag and how long its check took).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::{FleetSample, IdleClients, NotifySample, Snapshot};
use crate::state::{DbPools, State};

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

async fn route(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let sets = state.pools.sets();
            respond(StatusCode::OK, "text/plain; version=0.0.4", state.metrics.render(&snapshot(state, &sets)))
        }
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => readyz(state).await,
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /readyz\n".into()),
    }
}

/// What `/metrics` shows, read from the side now (`sets`: every pool set).
fn snapshot<'a>(state: &State, sets: &'a [Arc<DbPools>]) -> Snapshot<'a> {
    let mut pools = Vec::new();
    let mut idle_clients = Vec::new();
    for set in sets {
        let start = pools.len();
        pools.extend(set.all().map(|p| p.sample()));
        let busy: usize = pools[start..].iter().map(|p| p.total - p.idle + p.waiting).sum();
        let idle = set.clients.load(Ordering::Relaxed).saturating_sub(busy);
        idle_clients.push(IdleClients { database: set.database.to_string(), user: set.user.to_string(), idle });
    }
    let c = &state.counters;
    Snapshot {
        pools,
        idle_clients,
        client_connections: state.clients.connected(),
        prepared_statements: state.statements.len(),
        pinned_now: c.pinned_now.load(Ordering::Relaxed),
        pinned_total: c.pinned_sessions.load(Ordering::Relaxed),
        stale_plans: c.stale_plans.load(Ordering::Relaxed),
        stale_plan_retries: c.stale_plan_retries.load(Ordering::Relaxed),
        limits: state.pools.limits.samples(&state.config.current()),
        topologies: state.topologies.all(),
        fleet: state.fleet.as_ref().map(|f| fleet_sample(state, f)),
        notify: notify_samples(state),
    }
}

fn notify_samples(state: &State) -> Vec<NotifySample> {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    state
        .notify
        .all()
        .into_iter()
        .map(|(database, hub)| {
            let (clients, channels, queued) = hub.counts();
            let st = &hub.stats;
            NotifySample {
                database,
                connected: hub.connected.load(Ordering::Relaxed),
                channels,
                clients,
                queued,
                received: load(&st.received),
                delivered: load(&st.delivered),
                dropped: load(&st.dropped),
                lost: load(&st.lost),
                overflows: load(&st.overflows),
                missed: load(&st.missed),
            }
        })
        .collect()
}

fn fleet_sample(state: &State, f: &crate::fleet::Fleet) -> FleetSample {
    let st = &f.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let shares = state.shares();
    FleetSample {
        instances: f.live(),
        pool_share: shares.of(state.config.current().pool.size),
        settled: shares.settled.as_ref() == Some(&shares.view),
        draining: state.shutdown.draining(),
        heartbeat_failures: load(&st.heartbeat_failures),
        packets_refused: load(&st.packets_refused),
        cancels: [
            ("forwarded", load(&st.cancels_forwarded)),
            ("failed", load(&st.cancels_forward_failed)),
            ("no_owner", load(&st.cancels_no_owner)),
            ("forged", load(&st.cancels_forged)),
            ("received", load(&st.cancels_received)),
        ],
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TCP connect within 1 s: how a server is checked where the monitor has not
/// (a database without replicas, or before the monitor's first answer).
async fn tcp_check(addr: &crate::config::ServerAddr) -> (bool, f64) {
    let t0 = Instant::now();
    let connect = tokio::net::TcpStream::connect((addr.host.as_str(), addr.port));
    let up = matches!(tokio::time::timeout(Duration::from_secs(1), connect).await, Ok(Ok(_)));
    (up, t0.elapsed().as_secs_f64() * 1000.0)
}

/// One server's entry of the body.
struct Entry<'a> {
    database: &'a str,
    server: String,
    role: &'static str,
    state: &'static str,
    readable: bool,
    lag_bytes: u64,
    lag_seconds: f64,
    check_ms: f64,
}

impl Entry<'_> {
    fn json(&self) -> String {
        format!(
            "{{\"database\":{},\"server\":{},\"role\":\"{}\",\"state\":\"{}\",\"readable\":{},\"lag_bytes\":{},\"lag_seconds\":{},\"check_ms\":{:.3}}}",
            json_str(self.database),
            json_str(&self.server),
            self.role,
            self.state,
            self.readable,
            self.lag_bytes,
            self.lag_seconds,
            self.check_ms
        )
    }
}

/// Ready when every database's current primary is up and pgmux is not shutting
/// down. Databases with replicas: as the replica monitor last found them (a TCP
/// check of the primary until its first check); others: a TCP connect (1 s bound).
async fn readyz(state: &State) -> Response<Full<Bytes>> {
    use std::sync::atomic::Ordering::Relaxed;
    let shutting_down = state.shutdown.draining();
    let mut topologies = state.topologies.all();
    topologies.sort_by(|a, b| a.database.cmp(&b.database));
    let mut entries = Vec::new();
    let mut all_primaries_up = true;
    for t in &topologies {
        let primary = t.primary();
        for (i, node) in t.nodes.iter().enumerate() {
            let checked = t.has_replicas() && node.checked.load(Relaxed);
            let mut e = Entry {
                database: &t.database,
                server: node.addr.to_string(),
                role: node.role(),
                state: t.state(i),
                readable: node.is_readable(),
                lag_bytes: node.lag_bytes.load(Relaxed),
                lag_seconds: node.lag_seconds(),
                check_ms: node.check_micros.load(Relaxed) as f64 / 1000.0,
            };
            if !checked {
                // Not (yet) checked by the monitor: only the primary, by TCP.
                if i != primary {
                    entries.push(e.json());
                    continue;
                }
                let (up, ms) = tcp_check(&node.addr).await;
                (e.role, e.state, e.check_ms) = ("primary", if up { "up" } else { "down" }, ms);
            }
            if i == primary && e.state != "up" {
                all_primaries_up = false;
            }
            entries.push(e.json());
        }
    }
    let ready = all_primaries_up && !shutting_down;
    let body = format!("{{\"ready\":{ready},\"shutting_down\":{shutting_down},\"servers\":[{}]}}\n", entries.join(","));
    respond(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, "application/json", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_json() {
        let e = Entry {
            database: "a\"b",
            server: "127.0.0.1:5433".into(),
            role: "replica",
            state: "lagging",
            readable: false,
            lag_bytes: 12,
            lag_seconds: 1.5,
            check_ms: 0.25,
        };
        assert_eq!(
            e.json(),
            r#"{"database":"a\"b","server":"127.0.0.1:5433","role":"replica","state":"lagging","readable":false,"lag_bytes":12,"lag_seconds":1.5,"check_ms":0.250}"#
        );
    }
}
