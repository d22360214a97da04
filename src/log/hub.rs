//! The in-memory fan-out hub: wakes readers and carries recent events.
//!
//! The log in storage is the truth; the hub keeps, per channel that has
//! readers on this node, a bounded ring of its most recent events and the
//! readers to wake when one arrives. Invariants:
//! - events are ingested strictly in id order with no gap (`ingest` refuses
//!   a batch that does not start at `head + 1`; the caller fills the gap
//!   from storage first);
//! - a feed holds every event of its channel with `floor < id <= head`;
//!   a reader whose position is below a floor must catch up from storage;
//! - memory is bounded: at most [`RING_CAPACITY`] events per feed, and a feed
//!   exists only while some reader on this node follows its channel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::event::Event;

/// Events kept in memory per followed channel.
pub const RING_CAPACITY: usize = 512;

/// The hub's key for a channel of a tenant.
pub fn feed_key(tenant: &str, channel: &str) -> String {
    format!("{tenant}\u{1f}{channel}")
}

struct Feed {
    recent: VecDeque<Arc<Event>>,
    /// Every event of this channel with `floor < id <= head` is in `recent`.
    floor: u64,
    /// Readers to wake, by stream id.
    readers: HashMap<u64, Arc<Notify>>,
}

struct Inner {
    feeds: HashMap<String, Feed>,
    head: u64,
}

/// A batch did not continue the ingested log: events `after+1 ..` are missing.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    pub after: u64,
}

pub struct Hub {
    /// One lock for feeds and head, so a reader sees a consistent cut.
    /// Held only for memory operations, never across `.await`.
    inner: Mutex<Inner>,
    /// Mirror of `inner.head` for lock-free reads.
    head: AtomicU64,
}

impl Hub {
    pub fn new(head: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                feeds: HashMap::new(),
                head,
            }),
            head: AtomicU64::new(head),
        }
    }

    /// The highest id ingested: every event up to it has been offered to feeds.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Starts following `keys` for `stream`; returns the head at that moment.
    pub fn register(&self, stream: u64, keys: &[String], notify: &Arc<Notify>) -> u64 {
        let mut inner = self.inner.lock().expect("hub lock");
        let head = inner.head;
        for key in keys {
            inner
                .feeds
                .entry(key.clone())
                .or_insert_with(|| Feed {
                    recent: VecDeque::new(),
                    floor: head,
                    readers: HashMap::new(),
                })
                .readers
                .insert(stream, notify.clone());
        }
        head
    }

    /// Stops following; a feed with no readers left is dropped.
    pub fn unregister(&self, stream: u64, keys: &[String]) {
        let mut inner = self.inner.lock().expect("hub lock");
        for key in keys {
            if let Some(feed) = inner.feeds.get_mut(key) {
                feed.readers.remove(&stream);
                if feed.readers.is_empty() {
                    inner.feeds.remove(key);
                }
            }
        }
    }

    /// Takes committed events, in id order, and wakes their readers.
    pub fn ingest(&self, events: &[Arc<Event>]) -> Result<(), Gap> {
        let mut inner = self.inner.lock().expect("hub lock");
        let fresh: Vec<&Arc<Event>> = events.iter().filter(|e| e.id > inner.head).collect();
        let Some(first) = fresh.first() else {
            return Ok(());
        };
        if first.id != inner.head + 1 {
            return Err(Gap { after: inner.head });
        }
        let mut touched: HashSet<String> = HashSet::new();
        for event in fresh {
            inner.head = event.id;
            let key = feed_key(&event.tenant, &event.channel);
            if let Some(feed) = inner.feeds.get_mut(&key) {
                feed.recent.push_back(event.clone());
                if feed.recent.len() > RING_CAPACITY
                    && let Some(evicted) = feed.recent.pop_front()
                {
                    feed.floor = evicted.id;
                }
                touched.insert(key);
            }
        }
        for key in &touched {
            for notify in inner.feeds[key].readers.values() {
                notify.notify_one();
            }
        }
        self.head.store(inner.head, Ordering::Release);
        Ok(())
    }

    /// Moves the head to `head` without the events in between (too many to
    /// hold): every feed is emptied and its floor raised, so its readers
    /// catch up from storage. Nothing is skipped, only not cached.
    pub fn skip_to(&self, head: u64) {
        let mut inner = self.inner.lock().expect("hub lock");
        if head <= inner.head {
            return;
        }
        inner.head = head;
        for feed in inner.feeds.values_mut() {
            feed.recent.clear();
            feed.floor = head;
            for notify in feed.readers.values() {
                notify.notify_one();
            }
        }
        self.head.store(head, Ordering::Release);
    }

    /// Events of `keys` with `id > after`, at most `max`, from memory, and the
    /// position they bring the reader to. `None` when memory no longer holds
    /// everything after `after` for one of the channels.
    pub fn read(&self, keys: &[String], after: u64, max: usize) -> Option<(Vec<Arc<Event>>, u64)> {
        let inner = self.inner.lock().expect("hub lock");
        let mut events: Vec<Arc<Event>> = Vec::new();
        for key in keys {
            let feed = inner.feeds.get(key)?;
            if after < feed.floor {
                return None;
            }
            let start = feed.recent.partition_point(|e| e.id <= after);
            // One more than asked tells whether `max` cut the answer.
            events.extend(feed.recent.range(start..).take(max + 1).cloned());
        }
        if keys.len() > 1 {
            events.sort_unstable_by_key(|e| e.id);
        }
        if events.len() > max {
            events.truncate(max);
            let position = events.last().map_or(after, |e| e.id);
            Some((events, position))
        } else {
            Some((events, inner.head.max(after)))
        }
    }

    /// Distinct streams on this node following any of `keys`.
    pub fn count_streams(&self, keys: &[String]) -> u64 {
        let inner = self.inner.lock().expect("hub lock");
        match keys {
            [one] => inner.feeds.get(one).map_or(0, |f| f.readers.len() as u64),
            _ => {
                let mut streams = HashSet::new();
                for key in keys {
                    if let Some(feed) = inner.feeds.get(key) {
                        streams.extend(feed.readers.keys().copied());
                    }
                }
                streams.len() as u64
            }
        }
    }
}
