//! A reader: one cursor following a set of channels. Every transport (SSE,
//! long polling, WebSocket) reads through this, so they share one delivery
//! path.
//!
//! Invariants: `position` only moves forward, and only after events up to it
//! were handed out (cancelling a fetch mid-way changes nothing); events come
//! out in id order, each once; a reader that fell behind the hub's memory
//! catches up from storage, so lagging never loses or buffers events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::hub::{Hub, Signal, feed_key};
use super::pruner;
use crate::channel::Channel;
use crate::event::Event;
use crate::storage::{Storage, StorageError};

pub struct Reader {
    pub(super) hub: Arc<Hub>,
    pub(super) storage: Arc<dyn Storage>,
    pub(super) stream_id: u64,
    /// The hub's keys of the channels (`feed_key`): the tenant is their
    /// head and the channels' names their tails, so a reader keeps one copy
    /// of each.
    pub(super) keys: Vec<String>,
    /// Bytes of the tenant at the head of every key.
    pub(super) tenant_len: usize,
    /// Woken by the hub when one of the channels gets an event, with the
    /// feeds that did marked.
    pub(super) signal: Arc<Signal>,
    /// Every event of the channels with `id <= position` has been handed out.
    pub(super) position: u64,
}

/// Ids of readers, unique in the process (a hub knows its readers by them).
static NEXT_READER: AtomicU64 = AtomicU64::new(1);

impl Reader {
    /// A reader of `channels` in `tenant` registered on `hub`, at `cursor`
    /// or, without one, at the hub's head. Also returns the head at
    /// registration and whether memory holds every event of the channels
    /// after `cursor` (see [`Hub::register`]).
    pub fn register(
        hub: Arc<Hub>,
        storage: Arc<dyn Storage>,
        tenant: &str,
        channels: &[Channel],
        cursor: Option<u64>,
    ) -> (Reader, u64, bool) {
        let keys: Vec<String> = channels
            .iter()
            .map(|c| feed_key(tenant, c.as_str()))
            .collect();
        let stream_id = NEXT_READER.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Signal::new());
        let (head, covered) = hub.register(stream_id, &keys, &signal, cursor.unwrap_or(u64::MAX));
        let reader = Reader {
            hub,
            storage,
            stream_id,
            tenant_len: tenant.len(),
            keys,
            signal,
            position: cursor.unwrap_or(head),
        };
        (reader, head, covered)
    }

    /// The cursor after everything handed out so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The tenant of the channels (known from the keys: a reader of no
    /// channel never reads storage).
    fn tenant(&self) -> &str {
        self.keys.first().map_or("", |key| &key[..self.tenant_len])
    }

    /// The channels followed.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        let tail = self.tenant_len + 1;
        self.keys.iter().map(move |key| &key[tail..])
    }

    /// Up to `max` events after the position, without waiting (may be empty).
    pub async fn fetch(&mut self, max: usize) -> Result<Vec<Arc<Event>>, StorageError> {
        if let Some((events, position)) =
            self.hub
                .read_marked(&self.keys, &self.signal, self.position, max)
        {
            self.position = position;
            return Ok(events);
        }
        // Boxed: rare, and inline its space would stay reserved in every
        // idle stream's wait for its next batch.
        Box::pin(self.catch_up(max)).await
    }

    /// Behind the hub's memory: reads from the log.
    async fn catch_up(&mut self, max: usize) -> Result<Vec<Arc<Event>>, StorageError> {
        let passes = pruner::passes();
        let head = self.hub.head();
        let after = self.position;
        let channels: Vec<String> = self.channels().map(str::to_string).collect();
        let events = self
            .storage
            .read(self.tenant(), &channels, after, max)
            .await?;
        let last = events.last().map_or(after, |e| e.id);
        // Everything up to `head` was committed before the read began, so an
        // answer not cut by `max` holds every event through it.
        let position = if events.len() < max {
            last.max(head)
        } else {
            last
        };
        // Memory may take this read over only if nothing after `after` was
        // ever pruned (asked after the read, so a pass before it shows; a
        // pass after it is caught by `passes`): a pruned event missing from
        // the read would otherwise become a gap without a `reset`. A failed
        // question only costs the seeding.
        if self.hub.would_seed(&self.keys, after, position)
            && let Ok(None) = self
                .storage
                .expired_cursor(self.tenant(), &channels, after)
                .await
        {
            self.hub
                .seed(&self.keys, &channels, after, position, &events, passes);
        }
        // Only now: a fetch cancelled at an `.await` moves nothing.
        self.position = position;
        Ok(events)
    }

    /// Up to `max` events after the position, waiting until there is one.
    pub async fn next(&mut self, max: usize) -> Result<Vec<Arc<Event>>, StorageError> {
        loop {
            let events = self.fetch(max).await?;
            if !events.is_empty() {
                return Ok(events);
            }
            // A wake-up sent since the fetch is kept as a permit: none is lost.
            self.signal.notify.notified().await;
        }
    }

    /// Up to `max` events after the position; when there are none, waits
    /// for a wake-up (an event, or shutdown) and returns none: the caller
    /// looks around and asks again.
    pub async fn wait(&mut self, max: usize) -> Result<Vec<Arc<Event>>, StorageError> {
        let events = self.fetch(max).await?;
        if events.is_empty() {
            // A wake-up sent since the fetch is kept as a permit: none is lost.
            self.signal.notify.notified().await;
        }
        Ok(events)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.hub.unregister(self.stream_id, &self.keys);
    }
}
