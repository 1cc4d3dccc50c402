//! The two per-pool histograms (`pgmux_pool_wait_seconds`, `pgmux_query_duration_seconds`),
//! kept by pgmux itself: a sample is one relaxed atomic add to its bucket, one to the
//! sum, on the hot path (twice per transaction). The exporter's histograms keep every
//! sample with a clock read (`quanta`) until the upkeep folds them: about 150
//! instructions a sample, against about 20 here. Rendered at scrape time in the
//! exporter's text format, with the same buckets ([`super::BUCKETS`]); registered
//! once per label set and kept for the process's life, as the exporter does, so a
//! pool re-created by a reload continues its series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{escape, BUCKETS};

/// One histogram series: a count per bucket (the last one `+Inf`) and the sum.
#[derive(Debug)]
pub struct Buckets {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Buckets {
    fn new() -> Buckets {
        Buckets { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum_nanos: AtomicU64::new(0) }
    }

    /// Counts one sample.
    #[inline]
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS.iter().position(|&b| secs <= b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Every series, by family name and rendered label set.
#[derive(Default)]
pub struct Histograms {
    series: Mutex<BTreeMap<(&'static str, String), Arc<Buckets>>>,
}

impl Histograms {
    /// The series of `name` with these labels (the same one for the same labels).
    pub fn register(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Arc<Buckets> {
        let mut rendered = String::new();
        for (k, v) in labels {
            let _ = write!(rendered, "{k}=\"{}\",", escape(v));
        }
        let mut series = self.series.lock().unwrap();
        series.entry((name, rendered)).or_insert_with(|| Arc::new(Buckets::new())).clone()
    }

    /// Appends every family, as the exporter renders a histogram.
    pub fn render(&self, out: &mut String) {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        let series = self.series.lock().unwrap();
        let mut family = "";
        for ((name, labels), b) in series.iter() {
            if *name != family {
                family = name;
                let _ = writeln!(out, "# TYPE {name} histogram");
            }
            let mut total = 0;
            for (i, c) in b.counts.iter().enumerate() {
                total += c.load(Ordering::Relaxed);
                match BUCKETS.get(i) {
                    Some(le) => writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {total}"),
                    None => writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {total}"),
                }
                .expect("writing to a String");
            }
            let labels = labels.trim_end_matches(',');
            let sum = b.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let h = Histograms::default();
        let w = h.register("pgmux_pool_wait_seconds", &[("database", "app"), ("user", "u\"1")]);
        w.record(Duration::ZERO);
        w.record(Duration::from_millis(2));
        w.record(Duration::from_secs(100));
        assert!(Arc::ptr_eq(&w, &h.register("pgmux_pool_wait_seconds", &[("database", "app"), ("user", "u\"1")])));
        let mut out = String::new();
        h.render(&mut out);
        let l = r#"database="app",user="u\"1""#;
        assert!(out.starts_with("# TYPE pgmux_pool_wait_seconds histogram\n"), "{out}");
        assert!(out.contains(&format!("pgmux_pool_wait_seconds_bucket{{{l},le=\"0.0001\"}} 1\n")), "{out}");
        assert!(out.contains(&format!("pgmux_pool_wait_seconds_bucket{{{l},le=\"1\"}} 2\n")), "{out}");
        assert!(out.contains(&format!("pgmux_pool_wait_seconds_bucket{{{l},le=\"+Inf\"}} 3\n")), "{out}");
        assert!(out.contains(&format!("pgmux_pool_wait_seconds_sum{{{l}}} 100.002\n")), "{out}");
        assert!(out.contains(&format!("pgmux_pool_wait_seconds_count{{{l}}} 3\n")), "{out}");
    }
}
