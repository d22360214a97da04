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
use crate::clock::now_ms;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::storage::{AppendOutcome, AppendRequest, Storage};

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
                .flat_map(|e| std::iter::once(&e.channel).chain(&e.also))
                .map(|channel| feed_key(&request.tenant, channel.as_str()))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            request.recipients = hub.count_streams(&keys);
        }
        let requests: Arc<[AppendRequest]> = requests.into();
        let mut result = storage.append(requests.clone(), now_ms()).await;
        if let Err(e) = &result
            && !e.is_unavailable()
            && requests.len() > 1
        {
            // One bad request must not fail the others batched with it:
            // append them one by one so only the culprit fails.
            tracing::warn!(error = %e, requests = requests.len(), "batch append failed; retrying requests one by one");
            result = append_one_by_one(storage.as_ref(), &requests).await;
        }
        match result {
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

/// Appends each request in its own transaction. A request that fails gets
/// [`AppendOutcome::Failed`]; the others are answered normally.
async fn append_one_by_one(
    storage: &dyn Storage,
    requests: &[AppendRequest],
) -> crate::storage::Result<Vec<AppendOutcome>> {
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        match storage.append(Arc::from([request.clone()]), now_ms()).await {
            Ok(mut one) => outcomes.push(one.remove(0)),
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "append failed");
                outcomes.push(AppendOutcome::Failed);
            }
        }
    }
    Ok(outcomes)
}

/// Hands `events` to the hub, filling any gap before them from storage.
pub async fn ingest(hub: &Hub, storage: &dyn Storage, events: &[Arc<Event>]) {
    let Some(last) = events.last() else { return };
    if hub.ingest(events).is_err() {
        catch_up(hub, storage, last.id).await;
    }
}

/// Most events read from storage per refill round trip.
pub const MAX_REFILL: u64 = 4096;

/// Brings the hub to `head` by reading what it is missing from storage, a
/// bounded range at a time. Skipping ahead instead would wake every reader
/// on this node to catch up from storage at once (thousands of reads when a
/// node holds thousands of streams, which then starve the pool): ingesting
/// keeps only events of followed channels, so reading everything costs
/// time, not memory. Only ids that are gone (pruned) are jumped.
pub async fn catch_up(hub: &Hub, storage: &dyn Storage, head: u64) {
    loop {
        let from = hub.head();
        if head <= from {
            return;
        }
        let to = head.min(from + MAX_REFILL);
        match storage.read_range(from, to).await {
            Ok(missing) => {
                if hub.ingest(&missing).is_err() || hub.head() < to {
                    // Ids below `to` that are gone (pruned) leave a hole: jump it.
                    hub.skip_to(to);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not refill the hub from storage; will retry");
                return;
            }
        }
    }
}

/// Follows appends made by other processes (other nodes): on each
/// notification, and every `every` as a safety net for lost ones.
pub async fn follow(
    storage: Arc<dyn Storage>,
    hub: Arc<Hub>,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let (tx, mut heads) = mpsc::channel(64);
    let listener = tokio::spawn({
        let storage = storage.clone();
        let shutdown = shutdown.clone();
        async move { storage.listen(tx, shutdown).await }
    });
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Backends without notifications return from `listen` at once: then only
    // the tick is left (a closed channel would otherwise answer every poll).
    let mut listening = true;
    loop {
        let hinted = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => 0,
            head = heads.recv(), if listening => match head {
                Some(head) => head,
                None => {
                    listening = false;
                    continue;
                }
            },
        };
        if hinted != 0 {
            // A notification carries the new head: no need to ask for it.
            if hinted > hub.head() {
                catch_up(&hub, storage.as_ref(), hinted).await;
            }
            continue;
        }
        match storage.head().await {
            Ok(head) => catch_up(&hub, storage.as_ref(), head).await,
            Err(e) => tracing::debug!(error = %e, "log head unavailable; will retry"),
        }
    }
    listener.abort();
}
