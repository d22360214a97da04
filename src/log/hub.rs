//! The in-memory fan-out hub: wakes readers and carries recent events.
//!
//! The log in storage is the truth; the hub keeps, per channel that has
//! readers on this node or had them lately, a bounded ring of its most
//! recent events and the readers to wake when one arrives. Invariants:
//! - events are ingested strictly in id order with no gap (`ingest` refuses
//!   a batch that does not start at `head + 1`; the caller fills the gap
//!   from storage first);
//! - a feed holds every event of its channel with `floor < id <= head`;
//!   a reader whose position is below a floor must catch up from storage;
//!   a catch-up read that provably covers everything of the channel between
//!   its position and the floor may [`Hub::seed`] the ring and lower the
//!   floor (checked under the lock, so events ingested meanwhile count);
//! - memory holds no event pruned from storage for longer than a prune pass:
//!   when [`pruner::passes`] moves, every ring is emptied (floor = head),
//!   and a read taken across a pass, or above a pruned cursor, seeds nothing;
//! - memory is bounded: at most [`RING_CAPACITY`] events per feed; a feed
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

use tokio::sync::Notify;

use super::pruner;
use crate::event::Event;

/// Events kept in memory per feed.
pub const RING_CAPACITY: usize = 512;

/// How long, and how many, feeds without readers are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Most idle feeds kept (least recently used go first).
    pub max_idle_feeds: usize,
    /// Most bytes of events held by idle feeds together.
    pub max_idle_bytes: usize,
    /// An idle feed unused this long is dropped.
    pub idle_ttl: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_idle_feeds: 4096,
            max_idle_bytes: 64 << 20,
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

struct Feed {
    recent: VecDeque<Arc<Event>>,
    /// Every event of this channel with `floor < id <= head` is in `recent`.
    floor: u64,
    /// Readers to wake, by stream id.
    readers: HashMap<u64, Arc<Notify>>,
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
            readers: HashMap::new(),
            bytes: 0,
            used: (0, Instant::now()),
            queued: false,
        }
    }

    fn is_idle(&self) -> bool {
        self.readers.is_empty()
    }

    /// Drops the oldest events past the capacity, raising the floor; returns
    /// the bytes freed.
    fn trim(&mut self) -> usize {
        let mut freed = 0;
        while self.recent.len() > RING_CAPACITY {
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
    /// The [`pruner::passes`] count the rings were last emptied for.
    prune_passes: u64,
}

impl Inner {
    /// Empties every ring: what is below the head is storage's to serve.
    fn forget(&mut self) {
        for feed in self.feeds.values_mut() {
            feed.recent.clear();
            feed.bytes = 0;
            feed.floor = self.head;
        }
        self.idle_bytes = 0;
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

pub struct Hub {
    /// One lock for feeds and head, so a reader sees a consistent cut.
    /// Held only for memory operations, never across `.await`.
    inner: Mutex<Inner>,
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
                prune_passes: pruner::passes(),
            }),
            head: AtomicU64::new(head),
            retention,
        }
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
        notify: &Arc<Notify>,
        cursor: u64,
    ) -> (u64, bool) {
        let passes = pruner::passes();
        let mut guard = self.inner.lock().expect("hub lock");
        let inner = &mut *guard;
        if inner.prune_passes != passes {
            inner.forget();
            inner.prune_passes = passes;
        }
        let head = inner.head;
        let mut covered = true;
        for key in keys {
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
            feed.readers.insert(stream, notify.clone());
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
            if feed.readers.remove(&stream).is_none() || !feed.is_idle() {
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

    /// Takes committed events, in id order, and wakes their readers.
    pub fn ingest(&self, events: &[Arc<Event>]) -> Result<(), Gap> {
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
        for event in fresh {
            inner.head = event.id;
            let key = feed_key(&event.tenant, &event.channel);
            if let Some(feed) = inner.feeds.get_mut(&key) {
                let size = event.memory_size();
                feed.recent.push_back(event.clone());
                feed.bytes += size;
                let freed = feed.trim();
                if feed.is_idle() {
                    inner.idle_bytes = inner.idle_bytes + size - freed;
                } else {
                    touched.insert(key);
                }
            }
        }
        for key in &touched {
            for notify in inner.feeds[key].readers.values() {
                notify.notify_one();
            }
        }
        self.head.store(inner.head, Ordering::Release);
        if inner.idle_bytes > self.retention.max_idle_bytes {
            inner.evict(&self.retention, Instant::now());
        }
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
        inner.idle_bytes = 0;
        for feed in inner.feeds.values_mut() {
            feed.recent.clear();
            feed.bytes = 0;
            feed.floor = head;
            for notify in feed.readers.values() {
                notify.notify_one();
            }
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
                .filter(|e| e.id > after && e.id <= floor && e.channel == *channel)
                .collect();
            let mut added = 0;
            for event in older.into_iter().rev() {
                added += event.memory_size();
                feed.recent.push_front(event.clone());
            }
            feed.floor = after;
            feed.bytes += added;
            let freed = feed.trim();
            if feed.is_idle() {
                inner.idle_bytes = inner.idle_bytes + added - freed;
            }
        }
        if inner.idle_bytes > self.retention.max_idle_bytes {
            inner.evict(&self.retention, Instant::now());
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

    /// Feeds kept without readers (for tests and metrics).
    pub fn idle_feeds(&self) -> usize {
        self.inner.lock().expect("hub lock").idle_feeds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64, channel: &str) -> Arc<Event> {
        Event::new(
            id,
            "t".into(),
            channel.into(),
            "e".into(),
            format!("{{\"n\":{id}}}"),
            None,
            0,
        )
    }

    fn key(channel: &str) -> String {
        feed_key("t", channel)
    }

    fn ids(events: &[Arc<Event>]) -> Vec<u64> {
        events.iter().map(|e| e.id).collect()
    }

    /// Registers `stream` on `channels`, then leaves: what one poll does.
    fn visit(hub: &Hub, stream: u64, channels: &[&str]) {
        let keys: Vec<String> = channels.iter().map(|c| key(c)).collect();
        hub.register(stream, &keys, &Arc::new(Notify::new()), 0);
        hub.unregister(stream, &keys);
    }

    #[test]
    fn a_feed_is_kept_and_fed_after_its_last_reader_leaves() {
        let hub = Hub::new(0);
        visit(&hub, 1, &["a"]);
        assert_eq!(hub.idle_feeds(), 1);
        hub.ingest(&[event(1, "a"), event(2, "b"), event(3, "a")])
            .unwrap();
        let (events, position) = hub.read(&[key("a")], 0, 10).expect("in memory");
        assert_eq!(ids(&events), [1, 3]);
        assert_eq!(position, 3);
        // A new reader finds it covered and takes it out of the idle count.
        let (head, covered) = hub.register(2, &[key("a")], &Arc::new(Notify::new()), 0);
        assert_eq!((head, covered), (3, true));
        assert_eq!(hub.idle_feeds(), 0);
        assert_eq!(hub.count_streams(&[key("a")]), 1);
    }

    #[test]
    fn idle_feeds_are_bounded_least_recently_used_first() {
        let hub = Hub::with_retention(
            0,
            Retention {
                max_idle_feeds: 2,
                ..Retention::default()
            },
        );
        visit(&hub, 1, &["a"]);
        visit(&hub, 2, &["b"]);
        visit(&hub, 3, &["a"]); // a is now more recent than b
        visit(&hub, 4, &["c"]);
        assert_eq!(hub.idle_feeds(), 2);
        assert!(hub.read(&[key("a")], 0, 10).is_some());
        assert!(hub.read(&[key("b")], 0, 10).is_none(), "b was least recent");
        assert!(hub.read(&[key("c")], 0, 10).is_some());
        // A feed with a reader is never evicted.
        let notify = Arc::new(Notify::new());
        hub.register(5, &[key("d")], &notify, 0);
        for (i, channel) in ["e", "f", "g", "h"].into_iter().enumerate() {
            visit(&hub, 10 + i as u64, &[channel]);
        }
        assert_eq!(hub.idle_feeds(), 2);
        assert!(hub.read(&[key("d")], 0, 10).is_some());
        hub.unregister(5, &[key("d")]);
        assert_eq!(hub.idle_feeds(), 2);
    }

    #[test]
    fn idle_feeds_are_bounded_in_bytes_and_time() {
        let small = event(1, "a").memory_size();
        let hub = Hub::with_retention(
            0,
            Retention {
                max_idle_bytes: small * 3,
                ..Retention::default()
            },
        );
        visit(&hub, 1, &["a"]);
        visit(&hub, 2, &["b"]);
        hub.ingest(&[event(1, "a"), event(2, "a"), event(3, "b")])
            .unwrap();
        assert_eq!(hub.idle_feeds(), 2);
        hub.ingest(&[event(4, "b")]).unwrap();
        assert_eq!(hub.idle_feeds(), 1, "over the byte bound: a goes");
        assert!(hub.read(&[key("a")], 0, 10).is_none());
        assert_eq!(ids(&hub.read(&[key("b")], 0, 10).unwrap().0), [3, 4]);

        let hub = Hub::with_retention(
            0,
            Retention {
                idle_ttl: Duration::ZERO,
                ..Retention::default()
            },
        );
        visit(&hub, 1, &["a"]);
        assert_eq!(hub.idle_feeds(), 0, "expired at once");
    }

    #[test]
    fn seeding_lowers_the_floor_only_when_the_read_reaches_it() {
        // Storage holds 1..=5; the feed starts at head 5 with floor 5.
        let stored = [event(1, "a"), event(3, "a"), event(5, "a")];
        let hub = Hub::new(5);
        let keys = [key("a")];
        let channels = ["a".to_string()];
        let notify = Arc::new(Notify::new());
        assert_eq!(hub.register(1, &keys, &notify, 0), (5, false));
        assert!(hub.read(&keys, 0, 10).is_none());

        // A read cut by `max` below the floor proves nothing about 4..=5.
        hub.seed(&keys, &channels, 0, 3, &stored[..2], pruner::passes());
        assert!(hub.read(&keys, 0, 10).is_none());

        // Events ingested between the read and the seeding stay after it.
        hub.ingest(&[event(6, "a"), event(7, "b")]).unwrap();
        hub.seed(&keys, &channels, 0, 5, &stored, pruner::passes());
        let (events, position) = hub.read(&keys, 0, 10).expect("seeded");
        assert_eq!(ids(&events), [1, 3, 5, 6]);
        assert_eq!(position, 7);
        assert!(hub.covers(&keys, 0));

        // A seeding from further back than the ring holds keeps the newest.
        let hub = Hub::new(RING_CAPACITY as u64 + 10);
        hub.register(1, &keys, &notify, 0);
        let many: Vec<Arc<Event>> = (1..=RING_CAPACITY as u64 + 10)
            .map(|id| event(id, "a"))
            .collect();
        hub.seed(
            &keys,
            &channels,
            0,
            RING_CAPACITY as u64 + 10,
            &many,
            pruner::passes(),
        );
        assert!(hub.read(&keys, 9, 10).is_none());
        let (events, _) = hub.read(&keys, 10, 1000).expect("newest kept");
        assert_eq!(
            ids(&events),
            (11..=RING_CAPACITY as u64 + 10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn seeding_after_a_skip_or_a_recreated_feed_does_nothing() {
        let stored = [event(1, "a"), event(2, "a")];
        let keys = [key("a")];
        let channels = ["a".to_string()];
        let notify = Arc::new(Notify::new());

        // A prune pass finished since the read began: it may lack events.
        let hub = Hub::new(2);
        hub.register(1, &keys, &notify, 0);
        assert!(hub.would_seed(&keys, 0, 2));
        hub.seed(
            &keys,
            &channels,
            0,
            2,
            &stored,
            pruner::passes().wrapping_sub(1),
        );
        assert!(hub.read(&keys, 0, 10).is_none());

        // The hub jumped past the read: the floor is out of its reach.
        let hub = Hub::new(2);
        hub.register(1, &keys, &notify, 0);
        hub.skip_to(10_000);
        hub.seed(&keys, &channels, 0, 2, &stored, pruner::passes());
        assert!(hub.read(&keys, 0, 10).is_none());
        assert_eq!(hub.read(&keys, 10_000, 10).unwrap().1, 10_000);

        // The feed was evicted and recreated at a later head meanwhile.
        let hub = Hub::with_retention(
            2,
            Retention {
                idle_ttl: Duration::ZERO,
                ..Retention::default()
            },
        );
        hub.register(1, &keys, &notify, 0);
        hub.unregister(1, &keys);
        hub.ingest(&[event(3, "a")]).unwrap();
        hub.register(2, &keys, &notify, 0);
        hub.seed(&keys, &channels, 0, 2, &stored, pruner::passes());
        assert!(hub.read(&keys, 0, 10).is_none(), "3 would be missing");
    }

    #[test]
    fn multi_channel_reads_merge_in_id_order() {
        let hub = Hub::new(0);
        visit(&hub, 1, &["a", "b"]);
        hub.ingest(&[event(1, "a"), event(2, "b"), event(3, "a"), event(4, "b")])
            .unwrap();
        let keys = [key("a"), key("b")];
        let (events, position) = hub.read(&keys, 1, 2).unwrap();
        assert_eq!((ids(&events), position), (vec![2, 3], 3));
        let (events, position) = hub.read(&keys, 3, 2).unwrap();
        assert_eq!((ids(&events), position), (vec![4], 4));
    }

    /// Polls through real storage while feeds come and go: every event is
    /// handed out once, in order, whether memory or storage answers.
    #[tokio::test]
    async fn evicted_feeds_fall_back_to_storage_with_nothing_lost() {
        use crate::channel::Channel;
        use crate::event::NewEvent;
        use crate::log::Reader;
        use crate::storage::{AppendOutcome, AppendRequest};

        let storage = crate::storage::open("sqlite::memory:").await.unwrap();
        storage.migrate().await.unwrap();
        let hub = Arc::new(Hub::with_retention(
            0,
            Retention {
                max_idle_feeds: 1,
                ..Retention::default()
            },
        ));
        let channels = ["a", "b", "c"];
        let mut next_stream = 0;
        let mut cursors = [0u64; 3];
        let mut seen: [Vec<u64>; 3] = Default::default();
        let mut published: [Vec<u64>; 3] = Default::default();
        for round in 0..40u64 {
            // Bursts bigger than a ring now and then.
            let n = if round % 7 == 3 {
                RING_CAPACITY + 30
            } else {
                3
            };
            let channel = channels[round as usize % 3];
            let request = AppendRequest {
                tenant: "t".into(),
                user_id: None,
                events: (0..n)
                    .map(|_| NewEvent {
                        channel: Channel::parse(&format!("feed:{channel}")).unwrap(),
                        event: "e".into(),
                        data: "1".into(),
                        expected_last_id: None,
                        retention_ms: 3_600_000,
                    })
                    .collect(),
                idempotency_key: None,
                recipients: 0,
            };
            let outcome = storage.append(&[request], 1).await.unwrap();
            let AppendOutcome::Appended { events, .. } = &outcome[0] else {
                panic!("not appended: {outcome:?}");
            };
            published[round as usize % 3].extend(ids(events));
            hub.ingest(events).unwrap();
            // Each channel is polled in turn, one reader per poll.
            for (i, channel) in channels.iter().enumerate() {
                let channel = format!("feed:{channel}");
                next_stream += 1;
                let keys = vec![feed_key("t", &channel)];
                let notify = Arc::new(Notify::new());
                let (_, _) = hub.register(next_stream, &keys, &notify, cursors[i]);
                let mut reader = Reader {
                    hub: hub.clone(),
                    storage: storage.clone(),
                    stream_id: next_stream,
                    tenant: "t".into(),
                    channels: vec![channel],
                    keys,
                    notify,
                    position: cursors[i],
                };
                let got = reader.fetch(100).await.unwrap();
                assert!(reader.position() >= cursors[i]);
                cursors[i] = reader.position();
                seen[i].extend(ids(&got));
            }
        }
        // Drain what the limit left.
        for (i, channel) in channels.iter().enumerate() {
            loop {
                next_stream += 1;
                let channel = format!("feed:{channel}");
                let keys = vec![feed_key("t", &channel)];
                let notify = Arc::new(Notify::new());
                hub.register(next_stream, &keys, &notify, cursors[i]);
                let mut reader = Reader {
                    hub: hub.clone(),
                    storage: storage.clone(),
                    stream_id: next_stream,
                    tenant: "t".into(),
                    channels: vec![channel],
                    keys,
                    notify,
                    position: cursors[i],
                };
                let got = reader.fetch(100).await.unwrap();
                cursors[i] = reader.position();
                if got.is_empty() {
                    break;
                }
                seen[i].extend(ids(&got));
            }
            assert_eq!(seen[i], published[i], "channel {channel}");
        }
        assert!(hub.idle_feeds() <= 1);
    }
}
