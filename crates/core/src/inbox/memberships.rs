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
use tokio::sync::watch;

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
    watched: Mutex<HashMap<UserKey, watch::Sender<u64>>>,
    /// Counts changes (any user's): a storage read that one overtook may
    /// miss it and is not cached.
    changes: AtomicU64,
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

    /// A receiver that changes whenever the user's memberships do.
    pub fn watch(&self, tenant: &str, user_id: &str) -> watch::Receiver<u64> {
        let mut watched = self.watched.lock().expect("watched lock");
        if watched.len() >= CAPACITY {
            watched.retain(|_, sender| sender.receiver_count() > 0);
        }
        watched
            .entry((tenant.to_string(), user_id.to_string()))
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
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
        if let Some(sender) = watched.get(&key) {
            if sender.receiver_count() == 0 {
                watched.remove(&key);
            } else {
                sender.send_modify(|version| *version += 1);
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
