//! The single writer: appends with group commit.
//!
//! Publishes queue here; the writer takes everything queued (up to a bound)
//! and appends it in one transaction, then hands the committed events to the
//! hub in id order. One writer per node keeps the hub's feed gap-free in the
//! common case; a gap (another node appended in between) is filled from
//! storage before ingesting. Invariant: a publish is answered only after its
//! transaction committed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::hub::{Hub, feed_key};
use crate::event::{Event, now_ms};
use crate::metrics::Metrics;
use crate::storage::{AppendOutcome, AppendRequest, Storage, StorageError};

/// Most publish requests in one transaction.
const MAX_BATCH_REQUESTS: usize = 512;
/// Most events in one transaction.
const MAX_BATCH_EVENTS: usize = 8192;

/// Why an append got no outcome.
#[derive(Debug, Clone, Copy)]
pub enum AppendFailed {
    /// The database could not be reached: 503.
    Unavailable,
    /// The database refused the batch: 500.
    Failed,
}

pub struct AppendJob {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<AppendOutcome, AppendFailed>>,
}

pub async fn run(
    mut queue: mpsc::Receiver<AppendJob>,
    storage: Arc<dyn Storage>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = queue.recv().await {
        let mut events_queued = first.request.events.len();
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH_REQUESTS && events_queued < MAX_BATCH_EVENTS {
            match queue.try_recv() {
                Ok(job) => {
                    events_queued += job.request.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let (mut requests, replies): (Vec<AppendRequest>, Vec<_>) =
            jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        for request in &mut requests {
            let mut keys: Vec<String> = request
                .events
                .iter()
                .map(|e| feed_key(&request.tenant, e.channel.as_str()))
                .collect();
            keys.dedup();
            request.recipients = hub.count_streams(&keys);
        }
        match storage.append(&requests, now_ms()).await {
            Ok(outcomes) => {
                let appended: Vec<Arc<Event>> = outcomes
                    .iter()
                    .filter_map(|o| match o {
                        AppendOutcome::Appended { events, .. } => Some(events.iter().cloned()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                metrics.events_appended(appended.len() as u64);
                ingest(&hub, storage.as_ref(), &appended).await;
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                metrics.storage_error();
                let failed = if e.is_unavailable() {
                    AppendFailed::Unavailable
                } else {
                    AppendFailed::Failed
                };
                tracing::error!(error = %e, requests = replies.len(), "append failed");
                for reply in replies {
                    let _ = reply.send(Err(failed));
                }
            }
        }
    }
    tracing::debug!("writer stopped: queue closed and drained");
}

/// Hands `events` to the hub, filling any gap before them from storage.
pub async fn ingest(hub: &Hub, storage: &dyn Storage, events: &[Arc<Event>]) {
    let Some(last) = events.last() else { return };
    if let Err(gap) = hub.ingest(events) {
        match storage.read_range(gap.after, last.id).await {
            Ok(missing) => {
                if let Err(gap) = hub.ingest(&missing) {
                    tracing::warn!(
                        after = gap.after,
                        "log gap persists after refill; readers will catch up from storage"
                    );
                }
            }
            Err(e) => report_refill_error(e),
        }
    }
}

fn report_refill_error(e: StorageError) {
    tracing::warn!(error = %e, "could not refill the hub from storage; readers will catch up from storage");
}
