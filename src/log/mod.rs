//! The event log: the one path every event takes (PROTOCOL §3).
//!
//! [`EventLog`] owns the storage, the single [`writer`] (group commit) and
//! the fan-out [`hub`]; transports append through [`EventLog::append`] and
//! read through a [`Reader`] from [`EventLog::reader`]. Editing appends its
//! events in its own storage transaction (with the document they change)
//! and hands them over with [`EventLog::ingest_committed`]. Invariants: a
//! publish is answered after it is durable; readers see each event of their
//! channels once, in id order, with nothing skipped.

pub mod hub;
pub mod pruner;
pub mod reader;
pub mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use reader::Reader;

use crate::channel::Channel;
use crate::error::{ApiError, ErrorCode};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::storage::{AppendOutcome, AppendRequest, CursorExpired, Storage};
use hub::{Hub, feed_key};
use writer::{AppendFailed, AppendJob};

/// How often a node checks the log head for appends it was not told about.
const FOLLOW_SAFETY_NET: std::time::Duration = std::time::Duration::from_secs(1);

/// Publishes waiting for the writer; past this, publishers wait their turn.
const QUEUE_DEPTH: usize = 8192;

pub struct EventLog {
    storage: Arc<dyn Storage>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// The writer's queue; taken at close so the writer drains and stops.
    queue: Mutex<Option<mpsc::Sender<AppendJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    next_stream_id: AtomicU64,
}

/// Where a new reader starts.
pub struct Opened {
    pub reader: Reader,
    /// Set when the cursor pointed before pruned events (or past the end).
    pub reset: Option<CursorExpired>,
}

impl EventLog {
    /// Starts the writer over `storage`, whose migrations must have run, and
    /// a follower of other nodes' appends that stops at `shutdown`.
    pub async fn start(
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let head = storage.head().await?;
        let hub = Arc::new(Hub::new(head));
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = tokio::spawn(writer::run(
            rx,
            storage.clone(),
            hub.clone(),
            metrics.clone(),
        ));
        tokio::spawn(writer::follow(
            storage.clone(),
            hub.clone(),
            FOLLOW_SAFETY_NET,
            shutdown,
        ));
        Ok(Arc::new(Self {
            storage,
            hub,
            metrics,
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            next_stream_id: AtomicU64::new(1),
        }))
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Appends one publish; answers once it is committed.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, ApiError> {
        let queue = self.queue.lock().expect("queue lock").clone();
        let Some(queue) = queue else {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "The server is shutting down",
            ));
        };
        let (reply, answer) = oneshot::channel();
        queue
            .send(AppendJob { request, reply })
            .await
            .map_err(|_| ApiError::new(ErrorCode::Unavailable, "The server is shutting down"))?;
        committed(answer.await)
    }

    /// Hands this node's readers events committed outside the writer (an
    /// edit batch appends its events in its own transaction), in id order.
    pub async fn ingest_committed(&self, events: &[Arc<Event>]) {
        self.metrics.events_appended(events.len() as u64);
        writer::ingest(&self.hub, self.storage.as_ref(), events).await;
    }

    /// A reader of `channels` in `tenant`, from `cursor` (exclusive) or,
    /// without one, from the current end of the log.
    pub async fn reader(
        &self,
        tenant: &str,
        channels: &[Channel],
        cursor: Option<u64>,
    ) -> Result<Opened, ApiError> {
        let channels: Vec<String> = channels.iter().map(|c| c.as_str().to_string()).collect();
        let keys: Vec<String> = channels.iter().map(|c| feed_key(tenant, c)).collect();
        let stream_id = self.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let (head, covered) =
            self.hub
                .register(stream_id, &keys, &notify, cursor.unwrap_or(u64::MAX));
        let mut reader = Reader {
            hub: self.hub.clone(),
            storage: self.storage.clone(),
            stream_id,
            tenant: tenant.to_string(),
            channels,
            keys,
            notify,
            position: head,
        };
        let mut reset = None;
        if let Some(cursor) = cursor {
            reader.position = cursor;
            if cursor > head && cursor > self.storage.head().await? {
                // A cursor from the future (e.g. a log that was wiped): following it
                // would skip the ids still to come, so the client is told to reload.
                reader.position = head;
                reset = Some(CursorExpired {
                    oldest_id: head + 1,
                });
            } else if cursor > 0 && !(covered && cursor <= head) {
                // When memory holds every event after the cursor, none of
                // them can have been missed: no need to ask storage.
                reset = self
                    .storage
                    .expired_cursor(tenant, &reader.channels, cursor)
                    .await?;
            }
        }
        Ok(Opened { reader, reset })
    }

    /// Events of `channels` stamped at or after `since_ms`.
    pub async fn read_since(
        &self,
        tenant: &str,
        channels: &[Channel],
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, ApiError> {
        let channels: Vec<String> = channels.iter().map(|c| c.as_str().to_string()).collect();
        Ok(self
            .storage
            .read_since(tenant, &channels, since_ms, limit)
            .await?)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Stops taking publishes, lets the writer finish what is queued, and waits for it.
    pub async fn close(&self) {
        drop(self.queue.lock().expect("queue lock").take());
        let writer = self.writer.lock().expect("writer lock").take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

/// What the writer's answer to one append means for its caller.
fn committed(
    answer: Result<Result<AppendOutcome, AppendFailed>, oneshot::error::RecvError>,
) -> Result<AppendOutcome, ApiError> {
    match answer {
        Ok(Ok(AppendOutcome::Failed)) => Err(ApiError::new(
            ErrorCode::ServerError,
            "The event could not be stored",
        )),
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(AppendFailed::Unavailable)) => Err(ApiError::new(
            ErrorCode::Unavailable,
            "Storage is unavailable, retry shortly",
        )),
        Ok(Err(AppendFailed::Failed)) | Err(_) => Err(ApiError::new(
            ErrorCode::ServerError,
            "The event could not be stored",
        )),
    }
}

impl CursorExpired {
    /// The `reset` control message's fields (PROTOCOL §4, §5).
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({ "reason": "cursor_expired", "oldest_id": self.oldest_id })
    }
}
