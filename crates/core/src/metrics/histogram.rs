//! A latency histogram in Prometheus' form: fixed buckets of seconds,
//! counted with atomics (no lock on the paths that observe), rendered as
//! cumulative `_bucket{le=...}` lines with `_sum` and `_count`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (`+Inf` is implied).
pub const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros().min(u64::MAX as u128) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Observes the same value `n` times.
    pub fn observe_n(&self, took: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let seconds = took.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BOUNDS.len());
        self.buckets[bucket].fetch_add(n, Relaxed);
        self.sum_micros.fetch_add(
            (took.as_micros().min(u64::MAX as u128) as u64).saturating_mul(n),
            Relaxed,
        );
        self.count.fetch_add(n, Relaxed);
    }

    /// The sample lines of `name` with `labels` (e.g. `transport="sse"`,
    /// or empty); the caller writes `# HELP` and `# TYPE` once per name.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in BOUNDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BOUNDS.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {}", self.count.load(Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe_n(Duration::from_secs(20), 2);
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "transport=\"sse\"");
        assert!(
            out.contains("x_seconds_bucket{transport=\"sse\",le=\"0.0005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{transport=\"sse\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{transport=\"sse\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{transport=\"sse\",le=\"+Inf\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_count{transport=\"sse\"} 4\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_sum{transport=\"sse\"} 40.0033\n"),
            "{out}"
        );
        let mut plain = String::new();
        Histogram::default().render(&mut plain, "y", "");
        assert!(
            plain.contains("y_bucket{le=\"+Inf\"} 0\n") && plain.contains("y_count 0\n"),
            "{plain}"
        );
    }
}
