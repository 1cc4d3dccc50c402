//! The replica and routing metrics, written straight from the databases'
//! [`Topology`]s at scrape time and appended to the recorder's exposition.
//!
//! They are not registered in the recorder because it cannot forget a series: after
//! a failover `pgmux_replica_up{role}` changes label, and after a reload a removed
//! server's series would stay forever. Rendered here, every scrape shows exactly the
//! configured databases and servers, with the roles the last checks found.
//! Server series cover databases with replicas (the monitor checks only those);
//! `pgmux_routed_total` covers every database.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::escape;
use crate::router::topology::{Routed, Topology};

/// Appends the families to `out` (a complete exposition; families are not split).
pub fn render(topologies: &[Arc<Topology>], out: &mut String) {
    let mut topologies: Vec<&Arc<Topology>> = topologies.iter().collect();
    topologies.sort_by(|a, b| a.database.cmp(&b.database));
    let monitored: Vec<&Arc<Topology>> = topologies.iter().copied().filter(|t| t.has_replicas()).collect();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    // (name, help, value of node i of t: label suffix and value)
    type Sample = fn(&Topology, usize) -> (String, String);
    let families: [(&str, &str, Sample); 4] = [
        ("pgmux_replica_lag_bytes", "WAL bytes a server's replay is behind the primary (0 for the primary)", |t, i| {
            (String::new(), t.nodes[i].lag_bytes.load(Relaxed).to_string())
        }),
        ("pgmux_replica_lag_seconds", "How long a server's replay has been behind the primary (0 when caught up)", |t, i| {
            (String::new(), t.nodes[i].lag_seconds().to_string())
        }),
        ("pgmux_replica_up", "1 if the server answers the monitor's checks; role as the last check found it", |t, i| {
            let role = if t.nodes[i].in_recovery.load(Relaxed) { "replica" } else { "primary" };
            (format!(",role=\"{role}\""), u8::from(t.nodes[i].up.load(Relaxed)).to_string())
        }),
        ("pgmux_replica_readable", "1 if the server takes reads now", |t, i| {
            (String::new(), u8::from(t.nodes[i].is_readable()).to_string())
        }),
    ];
    for (name, help, sample) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for t in &monitored {
            for (i, node) in t.nodes.iter().enumerate() {
                let (extra, value) = sample(t, i);
                let (db, server) = (escape(&t.database), escape(&node.addr.to_string()));
                let _ = writeln!(out, "{name}{{database=\"{db}\",server=\"{server}\"{extra}}} {value}");
            }
        }
    }
    let name = "pgmux_routed_total";
    let _ = writeln!(out, "# HELP {name} Routing decisions, by target and reason\n# TYPE {name} counter");
    for t in &topologies {
        for r in Routed::ALL {
            let (target, reason) = r.labels();
            let value = t.routed[r as usize].load(Relaxed);
            let db = escape(&t.database);
            let _ = writeln!(out, "{name}{{database=\"{db}\",target=\"{target}\",reason=\"{reason}\"}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerAddr;

    fn a(p: u16) -> ServerAddr {
        ServerAddr { host: "10.0.0.1".into(), port: p }
    }

    #[test]
    fn series_per_configured_server_with_the_checked_role() {
        let with = Arc::new(Topology::new("app", a(5432), vec![a(5433)]));
        let alone = Arc::new(Topology::new("solo\"db", a(6000), vec![]));
        let n = &with.nodes[1];
        n.up.store(true, Relaxed);
        n.readable.store(true, Relaxed);
        n.lag_bytes.store(4096, Relaxed);
        n.lag_micros.store(250_000, Relaxed);
        with.count(Routed::ReplicaRead);
        with.count(Routed::ReplicaRead);
        alone.count(Routed::PrimaryWrite);
        let mut out = String::from("pgmux_clients 1");
        render(&[alone.clone(), with.clone()], &mut out);
        let has = |line: &str| out.lines().any(|l| l == line);
        assert!(out.starts_with("pgmux_clients 1\n# HELP pgmux_replica_lag_bytes"), "{out}");
        assert!(has("pgmux_replica_lag_bytes{database=\"app\",server=\"10.0.0.1:5433\"} 4096"), "{out}");
        assert!(has("pgmux_replica_lag_seconds{database=\"app\",server=\"10.0.0.1:5433\"} 0.25"), "{out}");
        assert!(has("pgmux_replica_up{database=\"app\",server=\"10.0.0.1:5432\",role=\"primary\"} 1"), "{out}");
        assert!(has("pgmux_replica_up{database=\"app\",server=\"10.0.0.1:5433\",role=\"replica\"} 1"), "{out}");
        assert!(has("pgmux_replica_readable{database=\"app\",server=\"10.0.0.1:5432\"} 0"), "{out}");
        assert!(has("pgmux_replica_readable{database=\"app\",server=\"10.0.0.1:5433\"} 1"), "{out}");
        assert!(has("pgmux_routed_total{database=\"app\",target=\"replica\",reason=\"read\"} 2"), "{out}");
        assert!(has("pgmux_routed_total{database=\"solo\\\"db\",target=\"primary\",reason=\"write\"} 1"), "{out}");
        // No server series for a database without replicas; one family header each.
        assert!(!out.contains("10.0.0.1:6000"), "{out}");
        assert_eq!(out.matches("# TYPE pgmux_replica_up gauge").count(), 1);
        assert_eq!(out.lines().filter(|l| l.starts_with("pgmux_routed_total")).count(), 2 * Routed::ALL.len());
        // After a failover the role label follows: no stale series.
        with.nodes[0].in_recovery.store(true, Relaxed);
        with.nodes[1].in_recovery.store(false, Relaxed);
        let mut out = String::new();
        render(&[with], &mut out);
        assert!(out.contains("server=\"10.0.0.1:5432\",role=\"replica\"}"), "{out}");
        assert!(!out.contains("server=\"10.0.0.1:5432\",role=\"primary\"}"), "{out}");
    }
}
