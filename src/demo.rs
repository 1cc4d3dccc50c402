//! `pgmux demo`: a throwaway primary and streaming replicas from the installed
//! PostgreSQL binaries, pgmux in front of them, the URL to use, and a clean exit on
//! Ctrl-C (servers stopped, temp dir removed).

use std::path::Path;

use tokio::signal::unix::{signal, SignalKind};

use crate::cluster::{Cluster, ClusterSpec};
use crate::config::Config;
use crate::proxy::{Listener, Proxy};
use crate::run::StartError;
use crate::state::State;

pub async fn run(port: u16, metrics_port: u16, replicas: usize) -> Result<(), StartError> {
    eprintln!("starting a throwaway PostgreSQL primary and {replicas} replica(s)...");
    let spec = ClusterSpec {
        replicas,
        users: vec![("app".into(), "app".into(), false), ("admin".into(), "admin".into(), true)],
        databases: vec!["app".into()],
    };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&spec)).await?.map_err(StartError::Cluster)?;
    let replica_list: Vec<String> = cluster.replicas.iter().map(|r| format!("127.0.0.1:{}", r.port)).collect();
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nmetrics_listen: 127.0.0.1:{metrics_port}\npool:\n  mode: transaction\n  size: 10\nusers:\n  - name: app\n    password: app\n  - name: admin\n    password: admin\n    admin: true\ndatabases:\n  app:\n    primary: 127.0.0.1:{}\n    replicas: [{}]\n",
        cluster.primary.port,
        replica_list.join(", ")
    );
    let config = Config::parse(&yaml, Path::new("<demo>"))?;
    let listener = Listener::bind(&config).map_err(StartError::listen(format!("127.0.0.1:{port}"), " (try --port)"))?;
    let metrics = tokio::net::TcpListener::bind(("127.0.0.1", metrics_port))
        .await
        .map_err(StartError::listen(format!("127.0.0.1:{metrics_port}"), " (try --metrics-port)"))?;
    let state = State::new(config);
    let spread = crate::proxy::workers::Spread::here(&state);
    let proxy = Proxy::start(state, listener, spread, Some(metrics));

    println!("pgmux is listening. Point your application at it:\n");
    println!("  DATABASE_URL=postgres://app:app@127.0.0.1:{port}/app\n");
    println!("  psql postgres://app:app@127.0.0.1:{port}/app");
    println!("  admin console: psql postgres://admin:admin@127.0.0.1:{port}/pgbouncer  (SHOW POOLS;)");
    println!("  metrics: http://127.0.0.1:{metrics_port}/metrics");
    println!("  primary:  127.0.0.1:{} (superuser postgres/postgres)", cluster.primary.port);
    for r in &replica_list {
        println!("  replica:  {r}");
    }
    println!("  data in {}\n\nCtrl-C stops pgmux and the servers and removes the data.", cluster.dir().display());

    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("\nstopping...");
    proxy.state.begin_shutdown();
    proxy.stop();
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    eprintln!("done: servers stopped, data removed");
    Ok(())
}
