//! Counters for `/metrics` (Prometheus text) and `/realtime/status`.
//!
//! Plain atomics: a handful of counters and latency histograms
//! ([`histogram`]) does not need a metrics registry. Errors answered are
//! counted by code process-wide ([`error_answered`]): every transport's
//! error rendering calls it, including the socket layer's, which has no
//! handle on this struct.

pub mod histogram;

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::error::ErrorCode;
use histogram::Histogram;

/// Errors answered, by code (index: `code as usize`).
static ERRORS: [AtomicU64; ErrorCode::ALL.len()] =
    [const { AtomicU64::new(0) }; ErrorCode::ALL.len()];

/// Counts one error answered with `code` (an HTTP error body, a WebSocket
/// `error`, a stream's closing error).
pub fn error_answered(code: ErrorCode) {
    ERRORS[code as usize].fetch_add(1, Relaxed);
}

/// Where events are handed to a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Sse,
    WebSocket,
    Poll,
}

impl Delivery {
    const ALL: [Delivery; 3] = [Delivery::Sse, Delivery::WebSocket, Delivery::Poll];

    fn label(self) -> &'static str {
        match self {
            Delivery::Sse => "sse",
            Delivery::WebSocket => "websocket",
            Delivery::Poll => "poll",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Open event streams (SSE, WebSocket).
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
    /// A publish queued until its transaction committed.
    append_latency: Histogram,
    /// An event's append (its timestamp) until a stream or poll answer of
    /// this node took it, per [`Delivery`].
    delivery_latency: [Histogram; 3],
    /// How long long polls waited before they were answered.
    poll_wait: Histogram,
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

    /// A publish took `took` from its queueing to its commit.
    pub fn appended_in(&self, took: Duration) {
        self.append_latency.observe(took);
    }

    /// `events` were handed to a reader over `via` at `now_ms`.
    pub fn delivered(&self, via: Delivery, events: &[Arc<crate::event::Event>], now_ms: i64) {
        self.events_delivered(events.len() as u64);
        let histogram = &self.delivery_latency[via as usize];
        for event in events {
            let took = now_ms.saturating_sub(event.timestamp_ms).max(0) as u64;
            histogram.observe(Duration::from_millis(took));
        }
    }

    /// A long poll waited `took` for its answer.
    pub fn poll_waited(&self, took: Duration) {
        self.poll_wait.observe(took);
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
        let mut histogram = |name: &str, help: &str, series: &[(&str, &Histogram)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (labels, h) in series {
                h.render(&mut out, name, labels);
            }
        };
        histogram(
            "switchyard_append_seconds",
            "From a publish queued to its transaction committed.",
            &[("", &self.append_latency)],
        );
        let labels: Vec<String> = Delivery::ALL
            .iter()
            .map(|d| format!("transport=\"{}\"", d.label()))
            .collect();
        let series: Vec<(&str, &Histogram)> = Delivery::ALL
            .iter()
            .map(|d| {
                (
                    labels[*d as usize].as_str(),
                    &self.delivery_latency[*d as usize],
                )
            })
            .collect();
        histogram(
            "switchyard_delivery_seconds",
            "From an event's append to a stream or poll answer of this node taking it (millisecond resolution).",
            &series,
        );
        histogram(
            "switchyard_poll_wait_seconds",
            "How long long polls waited before they were answered.",
            &[("", &self.poll_wait)],
        );
        let _ = writeln!(
            out,
            "# HELP switchyard_errors_total Errors answered, by code.\n# TYPE switchyard_errors_total counter"
        );
        for code in ErrorCode::ALL {
            let _ = writeln!(
                out,
                "switchyard_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                ERRORS[code as usize].load(Relaxed)
            );
        }
        out
    }
}
