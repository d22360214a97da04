//! Who is a member of what, as the server keeps it (PROTOCOL §9a): a
//! bounded cache per user, kept true by watching the log.
//!
//! Every `member.added` and `member.removed` event reaches every node's
//! log (the hub ingests every event, whichever node appended it), so the
//! cache entry of the user it names is dropped and the user's open streams
//! are told, on every node alike. Invariants: an entry is never older than
//! [`MAX_AGE`] (a safety net for an event a node never saw); a read from
//! storage that a change overtook is not cached, so an entry reflects every
//! membership event this node has taken in; the cache and the set of
//! watched users hold at most [`CAPACITY`] users; no lock is held across
//! `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::error::Error;
use crate::event::Event;
use crate::storage::Storage;

/// The events that change a membership.
pub const MEMBER_ADDED: &str = "member.added";
pub const MEMBER_REMOVED: &str = "member.removed";
/// Longest an entry is trusted without an event to confirm it.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Most users cached; past it the cache starts over.
pub const CAPACITY: usize = 65_536;

pub use crate::identity::MemberSet;

type UserKey = (String, String);

struct Cached {
    set: Arc<MemberSet>,
    loaded: Instant,
}

pub struct Memberships {
    storage: Arc<dyn Storage>,
    /// A std mutex: held to look up, insert or drop, never across `.await`.
    cache: Mutex<HashMap<UserKey, Cached>>,
    /// Users with open streams, and the version their streams watch.
    watched: Mutex<HashMap<UserKey, Arc<Watched>>>,
    /// Counts changes (any user's): a storage read that one overtook may
    /// miss it and is not cached.
    changes: AtomicU64,
}

/// One user's membership version: bumped, and its waiters woken, on every
/// change. Small on purpose: every user with an open stream has one.
#[derive(Default)]
struct Watched {
    version: AtomicU64,
    notify: Notify,
}

impl Watched {
    fn bump(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

/// What a stream holds to learn that its user's memberships changed.
pub struct MemberWatch {
    watched: Arc<Watched>,
    seen: u64,
}

impl MemberWatch {
    /// Waits for a change after the last one seen (or the watch began).
    pub async fn changed(&mut self) {
        loop {
            let notified = self.watched.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the version is read: a change between the
            // two still wakes it.
            notified.as_mut().enable();
            let version = self.watched.version.load(Ordering::Acquire);
            if version != self.seen {
                self.seen = version;
                return;
            }
            notified.await;
        }
    }

    /// Whether a change came after the last one seen.
    pub fn has_changed(&self) -> bool {
        self.watched.version.load(Ordering::Acquire) != self.seen
    }

    /// Takes every change so far as seen.
    pub fn mark_seen(&mut self) {
        self.seen = self.watched.version.load(Ordering::Acquire);
    }
}

#[derive(Deserialize)]
struct Change {
    channel: String,
    user_id: String,
}

impl Memberships {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            cache: Mutex::default(),
            watched: Mutex::default(),
            changes: AtomicU64::new(0),
        }
    }

    /// The user's memberships, from the cache or storage.
    pub async fn of(&self, tenant: &str, user_id: &str) -> Result<Arc<MemberSet>, Error> {
        let key = (tenant.to_string(), user_id.to_string());
        if let Some(cached) = self.cache.lock().expect("cache lock").get(&key)
            && cached.loaded.elapsed() < MAX_AGE
        {
            return Ok(cached.set.clone());
        }
        let before = self.changes.load(Ordering::Acquire);
        let rows = self.storage.memberships(tenant, user_id).await?;
        let set: Arc<MemberSet> = Arc::new(
            rows.into_iter()
                .map(|row| (row.channel, row.since_id))
                .collect(),
        );
        let mut cache = self.cache.lock().expect("cache lock");
        if self.changes.load(Ordering::Acquire) != before {
            // A change was taken in while storage answered: this read may
            // predate it. Good for this caller, not for the next.
            return Ok(set);
        }
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        cache.insert(
            key,
            Cached {
                set: set.clone(),
                loaded: Instant::now(),
            },
        );
        Ok(set)
    }

    /// How many changes (any user's) this node has taken in: a reader that
    /// sees it unmoved knows nothing it read of memberships since is stale,
    /// and one that saw it move before it began watching knows to look again.
    pub fn version(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// A watch that wakes whenever the user's memberships change.
    pub fn watch(&self, tenant: &str, user_id: &str) -> MemberWatch {
        let mut watched = self.watched.lock().expect("watched lock");
        if watched.len() >= CAPACITY {
            watched.retain(|_, shared| Arc::strong_count(shared) > 1);
        }
        let watched = watched
            .entry((tenant.to_string(), user_id.to_string()))
            .or_default()
            .clone();
        let seen = watched.version.load(Ordering::Acquire);
        MemberWatch { watched, seen }
    }

    /// Forgets what is cached of a user and tells their streams.
    pub fn changed(&self, tenant: &str, user_id: &str) {
        let key = (tenant.to_string(), user_id.to_string());
        {
            let mut cache = self.cache.lock().expect("cache lock");
            self.changes.fetch_add(1, Ordering::AcqRel);
            cache.remove(&key);
        }
        let mut watched = self.watched.lock().expect("watched lock");
        if let Some(shared) = watched.get(&key) {
            if Arc::strong_count(shared) == 1 {
                watched.remove(&key);
            } else {
                shared.bump();
            }
        }
    }

    /// Looks at events as the log takes them in: membership changes drop
    /// their user's cache entry and wake their streams.
    pub fn observe(&self, events: &[Arc<Event>]) {
        for event in events {
            if event.event != MEMBER_ADDED && event.event != MEMBER_REMOVED {
                continue;
            }
            if let Ok(change) = serde_json::from_str::<Change>(&event.data)
                && change.channel == event.channel
            {
                self.changed(&event.tenant, &change.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(shared: &Arc<Watched>) -> MemberWatch {
        MemberWatch {
            watched: shared.clone(),
            seen: shared.version.load(Ordering::Acquire),
        }
    }

    #[tokio::test]
    async fn a_watch_wakes_once_per_change_it_has_not_seen() {
        let shared = Arc::new(Watched::default());
        let mut watch = watch(&shared);
        assert!(!watch.has_changed());
        // A change before the wait begins is not lost.
        shared.bump();
        assert!(watch.has_changed());
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("a change made before waiting wakes the wait");
        assert!(!watch.has_changed());
        // Nothing new: the wait goes on.
        let waited = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(waited.is_err(), "woken without a change");
        // A change while waiting wakes it.
        let waiter = tokio::spawn(async move {
            watch.changed().await;
            watch
        });
        tokio::task::yield_now().await;
        shared.bump();
        let mut watch = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("a change while waiting wakes the wait")
            .expect("waiter");
        // Seen without waiting: taken as seen.
        shared.bump();
        watch.mark_seen();
        assert!(!watch.has_changed());
    }
}
