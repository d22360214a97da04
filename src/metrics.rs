//! Counters for `/metrics` (Prometheus text) and `/realtime/status`.
//!
//! Plain atomics: a handful of counters does not need a metrics registry.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    /// Open event streams (SSE; WebSocket later).
    streams: AtomicI64,
    /// Long polls waiting for an event.
    polls_waiting: AtomicI64,
    events_appended: AtomicU64,
    events_delivered: AtomicU64,
    storage_errors: AtomicU64,
    /// Edit operations applied, and the transactions that applied them:
    /// their ratio is the mean batch size.
    edit_operations: AtomicU64,
    edit_batches: AtomicU64,
}

/// Decrements a gauge when dropped, however its owner ends.
pub struct GaugeGuard {
    metrics: Arc<Metrics>,
    gauge: fn(&Metrics) -> &AtomicI64,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    fn raise(self: &Arc<Self>, gauge: fn(&Metrics) -> &AtomicI64) -> GaugeGuard {
        gauge(self).fetch_add(1, Relaxed);
        GaugeGuard {
            metrics: self.clone(),
            gauge,
        }
    }

    /// Counts an open stream until the guard drops.
    pub fn stream_opened(self: &Arc<Self>) -> GaugeGuard {
        self.raise(|m| &m.streams)
    }

    /// Counts a waiting poll until the guard drops.
    pub fn poll_waiting(self: &Arc<Self>) -> GaugeGuard {
        self.raise(|m| &m.polls_waiting)
    }

    pub fn streams(&self) -> i64 {
        self.streams.load(Relaxed)
    }

    pub fn events_appended(&self, n: u64) {
        self.events_appended.fetch_add(n, Relaxed);
    }

    pub fn events_delivered(&self, n: u64) {
        self.events_delivered.fetch_add(n, Relaxed);
    }

    pub fn storage_error(&self) {
        self.storage_errors.fetch_add(1, Relaxed);
    }

    /// One edit transaction that applied `operations` operations.
    pub fn edit_batch(&self, operations: u64) {
        self.edit_batches.fetch_add(1, Relaxed);
        self.edit_operations.fetch_add(operations, Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "switchyard_connections",
            "gauge",
            "Open event streams (SSE, WebSocket).",
            self.streams(),
        );
        metric(
            "switchyard_polls_waiting",
            "gauge",
            "Long polls waiting for an event.",
            self.polls_waiting.load(Relaxed),
        );
        metric(
            "switchyard_events_appended_total",
            "counter",
            "Events appended to the log by this node.",
            self.events_appended.load(Relaxed) as i64,
        );
        metric(
            "switchyard_events_delivered_total",
            "counter",
            "Events written to streams and poll answers.",
            self.events_delivered.load(Relaxed) as i64,
        );
        metric(
            "switchyard_storage_errors_total",
            "counter",
            "Appends that failed in storage.",
            self.storage_errors.load(Relaxed) as i64,
        );
        metric(
            "switchyard_edit_operations_total",
            "counter",
            "Edit operations applied by this node.",
            self.edit_operations.load(Relaxed) as i64,
        );
        metric(
            "switchyard_edit_batches_total",
            "counter",
            "Edit transactions run by this node (each applies a batch of operations on one document).",
            self.edit_batches.load(Relaxed) as i64,
        );
        out
    }
}
