//! Sessions recorded in batches: streams opening and closing and polls
//! renewing their session queue here, and one task at a time records all
//! that is queued in one transaction (`PresenceStore::write_sessions`),
//! then announces what changed: users' status (compare-and-set, so once
//! across nodes, all in one more transaction) and the rooms they entered
//! (appended together, so the log's writer commits them as one). A node's
//! clients reconnecting at once cost a few transactions per batch, not
//! several per stream.
//!
//! Invariants: writes are recorded in the order they were queued (a
//! stream's close follows its open, which is answered before the stream
//! exists); batches announce in that order too, the next batch being
//! recorded while one announces; a caller that waits is answered only once
//! its batch's announcements are committed, with the batch's error if it
//! failed; while anything is queued exactly one drain task runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::Presence;
use super::queue::{Job, Queued};
use crate::clock::now_ms;
use crate::error::{Error, StorageFault};
use crate::event::NewEvent;
use crate::storage::presence::{SessionWrite, SessionWritten, UserKey, UserPresence};

/// Most writes recorded in one transaction.
const MAX_BATCH: usize = 256;
/// Writes queued from which the next batch is recorded while the one
/// before announces.
const OVERLAP_FROM: usize = MAX_BATCH / 4;

/// Ends a drain: the next drain starts with the next write queued, or at
/// once if one was queued after the last take (or the drain panicked).
struct Draining(Arc<Presence>);

impl Drop for Draining {
    fn drop(&mut self) {
        let mut queued = self.0.sessions.lock();
        queued.draining = false;
        if !queued.jobs.is_empty() {
            start_drain(&self.0, &mut queued);
        }
    }
}

fn start_drain(presence: &Arc<Presence>, queued: &mut Queued) {
    // No runtime: the process is exiting, and the sessions lapse by
    // themselves with the node's heartbeat.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        queued.draining = true;
        runtime.spawn(presence.clone().drain());
    }
}

impl Presence {
    /// Records a write with the next batch and waits for it.
    pub(super) async fn record(self: &Arc<Self>, write: SessionWrite) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job {
            write,
            reply: Some(reply),
        });
        answer
            .await
            .unwrap_or_else(|_| Err(Error::internal("a presence batch ended unanswered")))
    }

    /// Records a write with the next batch; no one waits (a closing stream).
    pub(super) fn record_later(self: &Arc<Self>, write: SessionWrite) {
        self.enqueue(Job { write, reply: None });
    }

    fn enqueue(self: &Arc<Self>, job: Job) {
        let mut queued = self.sessions.lock();
        queued.jobs.push(job);
        if !queued.draining {
            start_drain(self, &mut queued);
        }
    }

    /// Takes what is queued, batch by batch, until nothing is. While many
    /// writes are queued, a batch's announcements are appended while the
    /// next batch is recorded; always after the batch before's, so they
    /// keep their order.
    async fn drain(self: Arc<Self>) {
        let _draining = Draining(self.clone());
        let mut announcing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            // With few writes queued, the batch before finishing first
            // gathers a bigger batch (overlapping them pays where the two
            // stages use different connections, and costs where one writer
            // runs both).
            let queued = self.sessions.lock().jobs.len();
            if queued < OVERLAP_FROM
                && let Some(before) = announcing.take()
            {
                let _ = before.await;
            }
            let jobs: Vec<Job> = {
                let mut queued = self.sessions.lock();
                let n = queued.jobs.len().min(MAX_BATCH);
                queued.jobs.drain(..n).collect()
            };
            if jobs.is_empty() {
                // Done once the last announcements are in (writes queued
                // meanwhile are taken by this drain, not a new one).
                match announcing.take() {
                    Some(last) => {
                        let _ = last.await;
                        continue;
                    }
                    None => return,
                }
            }
            let (writes, replies): (Vec<SessionWrite>, Vec<_>) =
                jobs.into_iter().map(|j| (j.write, j.reply)).unzip();
            let writes: Arc<[SessionWrite]> = writes.into();
            let now = now_ms();
            let recorded = self.record_batch(writes.clone(), now).await;
            let (presence, before) = (self.clone(), announcing.take());
            announcing = Some(tokio::spawn(async move {
                if let Some(before) = before {
                    let _ = before.await;
                }
                let outcome = match recorded {
                    Ok(written) => presence.announce_batch(&writes, &written, now).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &outcome
                    && replies.iter().any(Option::is_none)
                    && !matches!(e, Error::Storage(s) if s.fault == StorageFault::Closed)
                {
                    // Only delays "offline" until the node's heartbeat lapses.
                    tracing::warn!(error = %e, "could not record a closed stream for presence");
                }
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(outcome.clone());
                }
            }));
        }
    }

    /// Records one batch in one transaction.
    async fn record_batch(
        &self,
        writes: Arc<[SessionWrite]>,
        now: i64,
    ) -> Result<Vec<SessionWritten>, Error> {
        let heartbeat = writes.iter().any(|w| w.open).then(|| self.expiry(now));
        Ok(self
            .storage
            .write_sessions(&self.node_id, heartbeat, writes, now)
            .await?)
    }

    /// Appends what a recorded batch announces: each user's status where
    /// it changed, then the rooms they entered.
    async fn announce_batch(
        &self,
        writes: &[SessionWrite],
        written: &[SessionWritten],
        now: i64,
    ) -> Result<(), Error> {
        let mut users: BTreeMap<UserKey, UserPresence> = BTreeMap::new();
        for (w, out) in writes.iter().zip(written) {
            if let Some(p) = &out.presence {
                users.entry(w.user.clone()).or_insert_with(|| p.clone());
            }
        }
        let mut events: BTreeMap<UserKey, Vec<NewEvent>> = self
            .status_events(users.into_iter().collect(), false, now)
            .await?
            .into_iter()
            .collect();
        for (w, out) in writes.iter().zip(written) {
            if out.entered.is_empty() {
                continue;
            }
            let name = w.touch.as_ref().and_then(|t| t.name.as_deref());
            let entered = self.connected_events(&w.user.user_id, name, &out.entered, now)?;
            events.entry(w.user.clone()).or_default().extend(entered);
        }
        self.append_all(events.into_iter().collect()).await
    }
}
