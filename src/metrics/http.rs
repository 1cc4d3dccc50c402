//! The HTTP endpoint on `metrics_listen`: `/metrics` (Prometheus text format),
//! `/healthz` (the process answers) and `/readyz` (a primary of every database is
//! reachable and pgmux is not shutting down; a JSON body says, per server, what was
//! found and how long the check took).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::proxy::Proxy;

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(route(req, &proxy).await) }
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

async fn route(req: Request<Incoming>, proxy: &Proxy) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => respond(StatusCode::OK, "text/plain; version=0.0.4", proxy.metrics.render(proxy)),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => readyz(proxy).await,
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found: try /metrics, /healthz or /readyz\n".into()),
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

/// Checks every configured server with a TCP connect (1 s bound).
async fn readyz(proxy: &Proxy) -> Response<Full<Bytes>> {
    let shutting_down = *proxy.shutdown.borrow();
    let mut entries = Vec::new();
    let mut all_primaries_up = true;
    for (name, db) in &proxy.config().databases {
        let servers = std::iter::once((db.primary_addr(), "primary")).chain(db.replica_addrs().into_iter().map(|a| (a, "replica")));
        for (addr, role) in servers {
            let t0 = Instant::now();
            let up = matches!(
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect((addr.host.as_str(), addr.port))).await,
                Ok(Ok(_))
            );
            if role == "primary" && !up {
                all_primaries_up = false;
            }
            entries.push(format!(
                "{{\"database\":{},\"server\":{},\"role\":\"{role}\",\"state\":\"{}\",\"check_ms\":{:.3}}}",
                json_str(name),
                json_str(&addr.to_string()),
                if up { "up" } else { "down" },
                t0.elapsed().as_secs_f64() * 1000.0
            ));
        }
    }
    let ready = all_primaries_up && !shutting_down;
    let body = format!(
        "{{\"ready\":{ready},\"shutting_down\":{shutting_down},\"servers\":[{}]}}\n",
        entries.join(",")
    );
    respond(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, "application/json", body)
}
