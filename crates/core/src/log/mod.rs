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

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use reader::Reader;

use crate::channel::Channel;
use crate::error::{Error, ErrorCode};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::storage::{AppendOutcome, AppendRequest, CursorExpired, Storage};
use hub::{Hub, Retention};
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
}

/// Where a new reader starts.
pub struct Opened {
    pub reader: Reader,
    /// Set when the cursor pointed before pruned events (or past the end).
    pub reset: Option<CursorExpired>,
}

impl EventLog {
    /// Starts the writer over `storage`, whose migrations must have run, and
    /// a follower of other nodes' appends that stops at `shutdown`, when
    /// every reader is woken.
    pub async fn start(
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        retention: Retention,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let head = storage.head().await?;
        let hub = Arc::new(Hub::with_retention(head, retention));
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
            shutdown.clone(),
        ));
        // Streams wait for events and nothing else: at shutdown every
        // reader is woken to see it.
        let woken = hub.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            woken.wake_all();
        });
        Ok(Arc::new(Self {
            storage,
            hub,
            metrics,
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        }))
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The highest id this node has taken in: every event at or below it
    /// has been through the observer.
    pub fn head(&self) -> u64 {
        self.hub.head()
    }

    /// Sets the one observer of every event this node takes in (its own
    /// appends and other nodes'), in id order.
    pub fn observe(&self, observer: hub::Observer) {
        self.hub.set_observer(observer);
    }

    /// Appends one publish; answers once it is committed.
    pub async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, Error> {
        let queue = self.queue.lock().expect("queue lock").clone();
        let Some(queue) = queue else {
            return Err(Error::new(
                ErrorCode::Unavailable,
                "The server is shutting down",
            ));
        };
        let (reply, answer) = oneshot::channel();
        let queued = std::time::Instant::now();
        queue
            .send(AppendJob { request, reply })
            .await
            .map_err(|_| Error::new(ErrorCode::Unavailable, "The server is shutting down"))?;
        let outcome = committed(answer.await);
        if outcome.is_ok() {
            self.metrics.appended_in(queued.elapsed());
        }
        outcome
    }

    /// Hands this node's readers events committed outside the writer (an
    /// edit batch appends its events in its own transaction), in id order.
    pub async fn ingest_committed(&self, events: &[Arc<Event>]) {
        self.metrics.events_appended(events.len() as u64);
        writer::ingest(&self.hub, self.storage.as_ref(), events).await;
    }

    /// Up to `max` events of `channels` in `tenant` after `cursor`, when
    /// memory holds every one of them and there is at least one: a long
    /// poll with events waiting is answered without a reader (no storage
    /// read, no registration). `None`: open a [`Self::reader`].
    pub fn recent(
        &self,
        tenant: &str,
        channels: &[Channel],
        cursor: u64,
        max: usize,
    ) -> Option<Vec<Arc<Event>>> {
        let keys: Vec<String> = channels
            .iter()
            .map(|c| hub::feed_key(tenant, c.as_str()))
            .collect();
        self.hub.peek(&keys, cursor, max).map(|(events, _)| events)
    }

    /// A reader of `channels` in `tenant`, from `cursor` (exclusive) or,
    /// without one, from the current end of the log.
    pub async fn reader(
        &self,
        tenant: &str,
        channels: &[Channel],
        cursor: Option<u64>,
    ) -> Result<Opened, Error> {
        let (mut reader, head, covered) = Reader::register(
            self.hub.clone(),
            self.storage.clone(),
            tenant,
            channels,
            cursor,
        );
        let mut reset = None;
        if let Some(cursor) = cursor {
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
                    .expired_cursor(tenant, &names(channels), cursor)
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
    ) -> Result<Vec<Arc<Event>>, Error> {
        Ok(self
            .storage
            .read_since(tenant, &names(channels), since_ms, limit)
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

/// Channels' names, as storage takes them.
fn names(channels: &[Channel]) -> Vec<String> {
    channels.iter().map(|c| c.as_str().to_string()).collect()
}

/// What the writer's answer to one append means for its caller.
fn committed(
    answer: Result<Result<AppendOutcome, AppendFailed>, oneshot::error::RecvError>,
) -> Result<AppendOutcome, Error> {
    match answer {
        Ok(Ok(AppendOutcome::Failed)) => Err(Error::new(
            ErrorCode::ServerError,
            "The event could not be stored",
        )),
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(AppendFailed::Unavailable)) => Err(Error::new(
            ErrorCode::Unavailable,
            "Storage is unavailable, retry shortly",
        )),
        Ok(Err(AppendFailed::Failed)) | Err(_) => Err(Error::new(
            ErrorCode::ServerError,
            "The event could not be stored",
        )),
    }
}
