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

/// A user of a tenant, as one string (one allocation per user kept).
fn user_key(tenant: &str, user_id: &str) -> Box<str> {
    format!("{tenant}\u{1f}{user_id}").into_boxed_str()
}

/// What is kept of one user: their memberships as last read, and the
/// version their open streams watch. Either may be missing.
#[derive(Default)]
struct User {
    cached: Option<(Arc<MemberSet>, Instant)>,
    watched: Option<Arc<Watched>>,
}

impl User {
    /// Whether a stream still watches this user.
    fn is_watched(&self) -> bool {
        self.watched
            .as_ref()
            .is_some_and(|w| Arc::strong_count(w) > 1)
    }
}

pub struct Memberships {
    storage: Arc<dyn Storage>,
    /// Cached memberships and watches, per user. A std mutex: held to look
    /// up, insert or drop, never across `.await`.
    users: Mutex<HashMap<Box<str>, User>>,
    /// Counts changes (any user's): a storage read that one overtook may
    /// miss it and is not cached.
    changes: AtomicU64,
    /// The set of every user who is a member of nothing, shared.
    none: Arc<MemberSet>,
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
            users: Mutex::default(),
            changes: AtomicU64::new(0),
            none: Arc::default(),
        }
    }

    /// The user's memberships, from the cache or storage.
    pub async fn of(&self, tenant: &str, user_id: &str) -> Result<Arc<MemberSet>, Error> {
        let key = user_key(tenant, user_id);
        if let Some(User {
            cached: Some((set, loaded)),
            ..
        }) = self.users.lock().expect("users lock").get(&key)
            && loaded.elapsed() < MAX_AGE
        {
            return Ok(set.clone());
        }
        let before = self.changes.load(Ordering::Acquire);
        let rows = self.storage.memberships(tenant, user_id).await?;
        let set: Arc<MemberSet> = if rows.is_empty() {
            self.none.clone()
        } else {
            Arc::new(
                rows.into_iter()
                    .map(|row| (row.channel, row.since_id))
                    .collect(),
            )
        };
        let mut users = self.users.lock().expect("users lock");
        if self.changes.load(Ordering::Acquire) != before {
            // A change was taken in while storage answered: this read may
            // predate it. Good for this caller, not for the next.
            return Ok(set);
        }
        make_room(&mut users);
        users.entry(key).or_default().cached = Some((set.clone(), Instant::now()));
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
        let mut users = self.users.lock().expect("users lock");
        make_room(&mut users);
        let watched = users
            .entry(user_key(tenant, user_id))
            .or_default()
            .watched
            .get_or_insert_default()
            .clone();
        let seen = watched.version.load(Ordering::Acquire);
        MemberWatch { watched, seen }
    }

    /// Forgets what is cached of a user and tells their streams.
    pub fn changed(&self, tenant: &str, user_id: &str) {
        let key = user_key(tenant, user_id);
        let mut users = self.users.lock().expect("users lock");
        self.changes.fetch_add(1, Ordering::AcqRel);
        let Some(user) = users.get_mut(&key) else {
            return;
        };
        user.cached = None;
        if user.is_watched() {
            user.watched.as_ref().expect("watched").bump();
        } else {
            users.remove(&key);
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

/// Keeps the map within [`CAPACITY`] users: past it every cached set goes,
/// and only users with open streams stay.
fn make_room(users: &mut HashMap<Box<str>, User>) {
    if users.len() >= CAPACITY {
        users.retain(|_, user| {
            user.cached = None;
            user.is_watched()
        });
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
