//! The in-memory fan-out hub: wakes readers and carries recent events.
//!
//! The log in storage is the truth; the hub keeps, per channel that has
//! readers on this node or had them lately, a bounded ring of its most
//! recent events and the readers to wake when one arrives. Invariants:
//! - an event on several channels sits in each one's feed (the same
//!   `Arc`) and a reader of several of them gets it once;
//! - events are ingested strictly in id order with no gap (`ingest` refuses
//!   a batch that does not start at `head + 1`; the caller fills the gap
//!   from storage first);
//! - a feed holds every event of its channel with `floor < id <= head`;
//!   a reader whose position is below a floor must catch up from storage;
//!   a catch-up read that provably covers everything of the channel between
//!   its position and the floor may [`Hub::seed`] the ring and lower the
//!   floor (checked under the lock, so events ingested meanwhile count);
//! - an idle feed holds no event pruned from storage for longer than a prune
//!   pass: when [`pruner::passes`] moves, idle rings are emptied (floor =
//!   head), and a read taken across a pass, or above a pruned cursor, seeds
//!   nothing. Feeds with readers keep their rings: their readers are past
//!   those events already, and emptying them would send every reader on
//!   the node to storage at its next wake-up (thousands of reads at once);
//!   a poll joining such a feed may get an expired event not yet pruned
//!   from memory, which loses nothing;
//! - memory is bounded: at most [`RING_CAPACITY`] events per feed, and all
//!   feeds together hold at most [`Retention::max_bytes`] (each its share;
//!   readers of a feed trimmed below their position catch up from storage,
//!   so the budget costs reads, never events); a feed
//!   with readers on this node always exists, and a feed whose last reader
//!   left (idle) is kept, still ingesting, only while it is among the
//!   [`Retention::max_idle_feeds`] most recently used, its idle feeds hold
//!   at most [`Retention::max_idle_bytes`] together, and it was used in the
//!   last [`Retention::idle_ttl`] (checked as readers leave); past that it is
//!   dropped, and its next reader starts a fresh feed (floor = head) and
//!   reads storage.
//!
//! Keeping feeds of channels polled lately is what lets a long poll (one
//! short-lived reader per request) be answered from memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::pruner;
use crate::event::Event;
use readers::Readers;
pub use readers::Signal;

mod readers;

/// Events kept in memory per feed.
pub const RING_CAPACITY: usize = 512;

/// How long, and how many, feeds without readers are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Most idle feeds kept (least recently used go first).
    pub max_idle_feeds: usize,
    /// Most bytes of events held by idle feeds together.
    pub max_idle_bytes: usize,
    /// Most bytes of events held by all feeds together, whatever number of
    /// channels readers follow: each feed keeps at most its share.
    pub max_bytes: usize,
    /// An idle feed unused this long is dropped.
    pub idle_ttl: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_idle_feeds: 4096,
            max_idle_bytes: 64 << 20,
            max_bytes: 256 << 20,
            // Longer than a long poll's longest wait, so a client polling
            // back to back keeps its channels' feeds.
            idle_ttl: Duration::from_secs(90),
        }
    }
}

/// The hub's key for a channel of a tenant.
pub fn feed_key(tenant: &str, channel: &str) -> String {
    format!("{tenant}\u{1f}{channel}")
}

/// The mark of a reader's `index`-th key.
fn bit(index: usize) -> u64 {
    1 << index.min(63)
}

struct Feed {
    recent: VecDeque<Arc<Event>>,
    /// Every event of this channel with `floor < id <= head` is in `recent`.
    floor: u64,
    /// Readers to wake.
    readers: Readers,
    /// Approximate bytes held by `recent`.
    bytes: usize,
    /// When the last reader left (meaningful while idle), and the
    /// [`Inner::uses`] count then (instants can tie).
    used: (u64, Instant),
    /// Whether the key is in `Inner::idle_queue` (every idle feed is).
    queued: bool,
}

impl Feed {
    fn new(floor: u64) -> Self {
        Self {
            recent: VecDeque::new(),
            floor,
            readers: Readers::default(),
            bytes: 0,
            used: (0, Instant::now()),
            queued: false,
        }
    }

    fn is_idle(&self) -> bool {
        self.readers.is_empty()
    }

    /// Drops the oldest events past the capacity or past `max_bytes`,
    /// raising the floor; returns the bytes freed.
    fn trim(&mut self, max_bytes: usize) -> usize {
        let mut freed = 0;
        while self.recent.len() > RING_CAPACITY || self.bytes - freed > max_bytes {
            let Some(evicted) = self.recent.pop_front() else {
                break;
            };
            self.floor = evicted.id;
            freed += evicted.memory_size();
        }
        self.bytes -= freed;
        freed
    }
}

struct Inner {
    feeds: HashMap<String, Feed>,
    head: u64,
    /// Keys of idle feeds, least recently queued first, with when they were
    /// queued; may also hold feeds that got a reader since (skipped when
    /// met). A feed used again after it was queued gets a second chance.
    idle_queue: VecDeque<(String, (u64, Instant))>,
    /// Counts feeds turning idle: orders uses even when instants tie.
    uses: u64,
    /// Feeds without readers.
    idle_feeds: usize,
    /// Bytes held by feeds without readers.
    idle_bytes: usize,
    /// Bytes held by all feeds.
    total_bytes: usize,
    /// The [`pruner::passes`] count the rings were last emptied for.
    prune_passes: u64,
}

impl Inner {
    /// Empties every idle ring: what is below the head is storage's to serve.
    fn forget(&mut self) {
        for feed in self.feeds.values_mut().filter(|f| f.is_idle()) {
            self.total_bytes -= feed.bytes;
            feed.recent.clear();
            feed.bytes = 0;
            feed.floor = self.head;
        }
        self.idle_bytes = 0;
    }

    /// [`Self::forget`], once per prune pass (`passes` is
    /// [`pruner::passes`], read before the lock was taken).
    fn forget_if_pruned(&mut self, passes: u64) {
        if self.prune_passes != passes {
            self.forget();
            self.prune_passes = passes;
        }
    }

    /// Each feed's share of the byte budget.
    fn share(&self, retention: &Retention) -> usize {
        retention.max_bytes / self.feeds.len().max(1)
    }

    /// Over the byte budget (feeds were added since their rings filled):
    /// every feed is trimmed to nine tenths of its share, so this runs
    /// again only after a tenth of the budget was ingested.
    fn shrink(&mut self, retention: &Retention) {
        let target = self.share(retention) / 10 * 9;
        for feed in self.feeds.values_mut() {
            let freed = feed.trim(target);
            self.total_bytes -= freed;
            if feed.is_idle() {
                self.idle_bytes -= freed;
            }
        }
    }

    /// Drops idle feeds until the retention bounds hold again.
    fn evict(&mut self, retention: &Retention, now: Instant) {
        loop {
            let over = self.idle_feeds > retention.max_idle_feeds
                || self.idle_bytes > retention.max_idle_bytes;
            let Some(&(_, (_, at))) = self.idle_queue.front() else {
                return;
            };
            if !over && now.saturating_duration_since(at) < retention.idle_ttl {
                return;
            }
            let (key, at) = self.idle_queue.pop_front().expect("front exists");
            let Some(feed) = self.feeds.get_mut(&key) else {
                continue;
            };
            if !feed.is_idle() {
                feed.queued = false;
            } else if feed.used.0 > at.0 {
                // Used again since it was queued: to the back, as of then.
                let used = feed.used;
                self.idle_queue.push_back((key, used));
            } else {
                self.idle_feeds -= 1;
                self.idle_bytes -= feed.bytes;
                self.total_bytes -= feed.bytes;
                self.feeds.remove(&key);
            }
        }
    }
}

/// A batch did not continue the ingested log: events `after+1 ..` are missing.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    pub after: u64,
}

/// Sees every event the hub takes in, in id order, once, under the hub's
/// lock: it must be quick and must not call back into the hub.
pub type Observer = Box<dyn Fn(&[Arc<Event>]) + Send + Sync>;

pub struct Hub {
    /// One lock for feeds and head, so a reader sees a consistent cut.
    /// Held only for memory operations, never across `.await`.
    inner: Mutex<Inner>,
    /// Told of every event taken in (outside the lock): how the core learns
    /// of changes other nodes made.
    observer: std::sync::OnceLock<Observer>,
    /// Mirror of `inner.head` for lock-free reads.
    head: AtomicU64,
    retention: Retention,
}

impl Hub {
    pub fn new(head: u64) -> Self {
        Self::with_retention(head, Retention::default())
    }

    pub fn with_retention(head: u64, retention: Retention) -> Self {
        Self {
            inner: Mutex::new(Inner {
                feeds: HashMap::new(),
                head,
                idle_queue: VecDeque::new(),
                uses: 0,
                idle_feeds: 0,
                idle_bytes: 0,
                total_bytes: 0,
                prune_passes: pruner::passes(),
            }),
            head: AtomicU64::new(head),
            retention,
            observer: std::sync::OnceLock::new(),
        }
    }

    /// Sets the one observer of ingested events (later calls are ignored).
    pub fn set_observer(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    /// The highest id ingested: every event up to it has been offered to feeds.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Starts following `keys` for `stream`. Returns the head at that moment
    /// and whether memory holds every event of `keys` after `cursor`.
    pub fn register(
        &self,
        stream: u64,
        keys: &[String],
        signal: &Arc<Signal>,
        cursor: u64,
    ) -> (u64, bool) {
        let passes = pruner::passes();
        let mut guard = self.inner.lock().expect("hub lock");
        let inner = &mut *guard;
        inner.forget_if_pruned(passes);
        let head = inner.head;
        let mut covered = true;
        for (index, key) in keys.iter().enumerate() {
            let feed = match inner.feeds.get_mut(key) {
                Some(feed) => {
                    if feed.is_idle() {
                        inner.idle_feeds -= 1;
                        inner.idle_bytes -= feed.bytes;
                    }
                    feed
                }
                None => inner.feeds.entry(key.clone()).or_insert(Feed::new(head)),
            };
            feed.readers.insert(stream, signal, bit(index));
            covered &= cursor >= feed.floor;
        }
        (head, covered)
    }

    /// Stops following; a feed with no readers left is kept while the
    /// retention bounds allow.
    pub fn unregister(&self, stream: u64, keys: &[String]) {
        let now = Instant::now();
        let mut guard = self.inner.lock().expect("hub lock");
        let inner = &mut *guard;
        for key in keys {
            let Some(feed) = inner.feeds.get_mut(key) else {
                continue;
            };
            if !feed.readers.remove(stream) || !feed.is_idle() {
                continue;
            }
            inner.uses += 1;
            feed.used = (inner.uses, now);
            inner.idle_feeds += 1;
            inner.idle_bytes += feed.bytes;
            if !feed.queued {
                feed.queued = true;
                inner.idle_queue.push_back((key.clone(), feed.used));
            }
        }
        inner.evict(&self.retention, now);
    }

    /// Takes committed events, in id order, and wakes their readers. The
    /// observer sees them before any reader can: under the lock, before the
    /// wake-ups, so a stream that reads an event also sees what it changed
    /// (a membership).
    pub fn ingest(&self, events: &[Arc<Event>]) -> Result<(), Gap> {
        self.ingest_locked(events)
    }

    /// [`Self::ingest`] under the lock.
    fn ingest_locked(&self, events: &[Arc<Event>]) -> Result<(), Gap> {
        let mut guard = self.inner.lock().expect("hub lock");
        let inner = &mut *guard;
        let fresh: Vec<&Arc<Event>> = events.iter().filter(|e| e.id > inner.head).collect();
        let Some(first) = fresh.first() else {
            return Ok(());
        };
        if first.id != inner.head + 1 {
            return Err(Gap { after: inner.head });
        }
        let mut touched: HashSet<String> = HashSet::new();
        let share = inner.share(&self.retention);
        let observed: Vec<Arc<Event>> = if self.observer.get().is_some() {
            fresh.iter().map(|e| Arc::clone(e)).collect()
        } else {
            Vec::new()
        };
        for event in fresh {
            inner.head = event.id;
            // An event on several channels goes to each one's feed.
            for channel in event.channels() {
                let key = feed_key(&event.tenant, channel);
                let Some(feed) = inner.feeds.get_mut(&key) else {
                    continue;
                };
                let size = event.memory_size();
                feed.recent.push_back(event.clone());
                feed.bytes += size;
                let freed = feed.trim(share);
                inner.total_bytes = inner.total_bytes + size - freed;
                if feed.is_idle() {
                    inner.idle_bytes = inner.idle_bytes + size - freed;
                } else {
                    touched.insert(key);
                }
            }
        }
        if let Some(observer) = self.observer.get()
            && !observed.is_empty()
        {
            observer(&observed);
        }
        for key in &touched {
            inner.feeds[key].readers.wake(false);
        }
        self.head.store(inner.head, Ordering::Release);
        if inner.idle_bytes > self.retention.max_idle_bytes {
            inner.evict(&self.retention, Instant::now());
        }
        if inner.total_bytes > self.retention.max_bytes {
            inner.shrink(&self.retention);
        }
        Ok(())
    }

    /// Wakes every reader (a stream learns of shutdown this way: its wait
    /// for events is its only wait for news).
    pub fn wake_all(&self) {
        let inner = self.inner.lock().expect("hub lock");
        for feed in inner.feeds.values() {
            feed.readers.wake(true);
        }
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
        inner.idle_bytes = 0;
        inner.total_bytes = 0;
        for feed in inner.feeds.values_mut() {
            feed.recent.clear();
            feed.bytes = 0;
            feed.floor = head;
            // Every reader must look at every feed of theirs: their floors
            // all moved.
            feed.readers.wake(true);
        }
        self.head.store(head, Ordering::Release);
    }

    /// Whether [`Hub::seed`] with a read of `after < id <= through` would
    /// lower a floor of `keys` now.
    pub fn would_seed(&self, keys: &[String], after: u64, through: u64) -> bool {
        let inner = self.inner.lock().expect("hub lock");
        keys.iter().any(|key| {
            inner
                .feeds
                .get(key)
                .is_some_and(|f| after < f.floor && f.floor <= through)
        })
    }

    /// Offers a storage read to memory: `events` must be every event of
    /// `channels` (the channels of `keys`, pairwise) with
    /// `after < id <= through`, in id order, none pruned, read after
    /// `passes` was [`pruner::passes`]. A feed whose floor lies in
    /// `after..=through` gets the ones at or below its floor prepended and
    /// its floor lowered to `after` (then trimmed to capacity); any other
    /// feed is left as it is, so events ingested since the read only matter
    /// through the floor they moved. Nothing is seeded when a prune pass
    /// finished since `passes`.
    pub fn seed(
        &self,
        keys: &[String],
        channels: &[String],
        after: u64,
        through: u64,
        events: &[Arc<Event>],
        passes: u64,
    ) {
        let mut guard = self.inner.lock().expect("hub lock");
        let inner = &mut *guard;
        if pruner::passes() != passes {
            return;
        }
        let share = inner.share(&self.retention);
        for (key, channel) in keys.iter().zip(channels) {
            let Some(feed) = inner.feeds.get_mut(key) else {
                continue;
            };
            if after >= feed.floor || through < feed.floor {
                continue;
            }
            let floor = feed.floor;
            let older: Vec<&Arc<Event>> = events
                .iter()
                .filter(|e| e.id > after && e.id <= floor && e.is_on(channel))
                .collect();
            let mut added = 0;
            for event in older.into_iter().rev() {
                added += event.memory_size();
                feed.recent.push_front(event.clone());
            }
            feed.floor = after;
            feed.bytes += added;
            let freed = feed.trim(share);
            inner.total_bytes = inner.total_bytes + added - freed;
            if feed.is_idle() {
                inner.idle_bytes = inner.idle_bytes + added - freed;
            }
        }
        if inner.idle_bytes > self.retention.max_idle_bytes {
            inner.evict(&self.retention, Instant::now());
        }
        if inner.total_bytes > self.retention.max_bytes {
            inner.shrink(&self.retention);
        }
    }

    /// Whether memory holds every event of `keys` after `after`.
    pub fn covers(&self, keys: &[String], after: u64) -> bool {
        let inner = self.inner.lock().expect("hub lock");
        keys.iter()
            .all(|key| inner.feeds.get(key).is_some_and(|f| after >= f.floor))
    }

    /// Events of `keys` with `id > after`, at most `max`, from memory, and the
    /// position they bring the reader to. `None` when memory no longer holds
    /// everything after `after` for one of the channels.
    pub fn read(&self, keys: &[String], after: u64, max: usize) -> Option<(Vec<Arc<Event>>, u64)> {
        read_locked(&self.inner.lock().expect("hub lock"), keys, after, max)
    }

    /// [`Self::read`] of only the feeds marked in `signal` since its last
    /// read: a reader of many channels woken by one reads that one. The
    /// marks are taken and, unless everything marked was read, put back,
    /// under the lock that ingesting marks under, so none is lost.
    pub fn read_marked(
        &self,
        keys: &[String],
        signal: &Signal,
        after: u64,
        max: usize,
    ) -> Option<(Vec<Arc<Event>>, u64)> {
        let inner = self.inner.lock().expect("hub lock");
        let marked = signal.dirty.swap(0, Ordering::Relaxed);
        let read = read_some(&inner, keys, marked, after, max);
        match &read {
            // Behind memory: after the catch-up, every feed is read again.
            None => signal.dirty.store(u64::MAX, Ordering::Relaxed),
            // Cut by `max`: the marked feeds may hold more.
            Some((_, position)) if *position < inner.head.max(after) => {
                signal.dirty.fetch_or(marked, Ordering::Relaxed);
            }
            Some(_) => {}
        }
        read
    }

    /// A long poll's read without becoming a reader: the events after
    /// `after` when memory holds every one of them and there is at least
    /// one (`None` otherwise: register a reader, which reads storage or
    /// waits). Seen as a use of each idle feed, as a reader leaving it is,
    /// so feeds polled back to back are kept; a prune pass since the last
    /// look empties idle rings first, as [`Self::register`] does.
    pub fn peek(&self, keys: &[String], after: u64, max: usize) -> Option<(Vec<Arc<Event>>, u64)> {
        let passes = pruner::passes();
        let now = Instant::now();
        let mut guard = self.inner.lock().expect("hub lock");
        let inner = &mut *guard;
        inner.forget_if_pruned(passes);
        let (events, position) = read_locked(inner, keys, after, max)?;
        if events.is_empty() {
            return None;
        }
        inner.uses += 1;
        let used = (inner.uses, now);
        for key in keys {
            if let Some(feed) = inner.feeds.get_mut(key)
                && feed.is_idle()
            {
                feed.used = used;
            }
        }
        Some((events, position))
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
                        streams.extend(feed.readers.ids());
                    }
                }
                streams.len() as u64
            }
        }
    }

    /// Bytes of events held by all feeds (for tests and metrics).
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("hub lock").total_bytes
    }

    /// Feeds kept without readers (for tests and metrics).
    pub fn idle_feeds(&self) -> usize {
        self.inner.lock().expect("hub lock").idle_feeds
    }
}

/// [`Hub::read`] under the lock.
fn read_locked(
    inner: &Inner,
    keys: &[String],
    after: u64,
    max: usize,
) -> Option<(Vec<Arc<Event>>, u64)> {
    read_some(inner, keys, u64::MAX, after, max)
}

/// [`read_locked`] of the keys whose bits are set in `marked`. The position
/// it answers is right only if the unmarked feeds hold nothing after
/// `after`.
fn read_some(
    inner: &Inner,
    keys: &[String],
    marked: u64,
    after: u64,
    max: usize,
) -> Option<(Vec<Arc<Event>>, u64)> {
    let mut events: Vec<Arc<Event>> = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        if marked & bit(index) == 0 {
            continue;
        }
        let feed = inner.feeds.get(key)?;
        if after < feed.floor {
            return None;
        }
        let start = first_after(&feed.recent, after);
        // One more than asked tells whether `max` cut the answer.
        events.extend(feed.recent.range(start..).take(max + 1).cloned());
    }
    if keys.len() > 1 {
        events.sort_unstable_by_key(|e| e.id);
        // An event on several of the channels is in each one's feed.
        events.dedup_by_key(|e| e.id);
    }
    if events.len() > max {
        events.truncate(max);
        let position = events.last().map_or(after, |e| e.id);
        Some((events, position))
    } else {
        Some((events, inner.head.max(after)))
    }
}

/// Where the events after `after` start in `recent` (ascending ids). A
/// reader woken by one of its channels reads all of them: most have nothing
/// new or a few events, so the tail is looked at before a binary search.
fn first_after(recent: &VecDeque<Arc<Event>>, after: u64) -> usize {
    const TAIL: usize = 8;
    let newer = recent
        .iter()
        .rev()
        .take(TAIL)
        .take_while(|e| e.id > after)
        .count();
    if newer < TAIL || newer == recent.len() {
        recent.len() - newer
    } else {
        recent.partition_point(|e| e.id <= after)
    }
}

#[cfg(test)]
mod tests;
