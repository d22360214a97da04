//! Presence, viewing and typing (PROTOCOL §7), kept in storage so every
//! node of a cluster shares it.
//!
//! A user is online while a session is alive: an open stream (kept alive by
//! its node's heartbeat, so a crashed node's users go offline after the
//! TTL), a poll in the last TTL, or a stream closed less than a TTL ago (so
//! a page reload does not flap). The effective status is derived
//! ([`effective_status`]); [`Presence::refresh`] announces a change exactly
//! once across nodes by compare-and-set on the stored `announced_status`.
//! Who is in each channel's room, and its announcements, are in [`rooms`].
//! Service tokens are backends, not people: they have no presence.

mod announce;
mod queue;
pub mod requests;
mod rooms;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use crate::channel::{Channel, Namespaces};
use crate::clock::now_ms;
use crate::error::Error;
use crate::identity::Identity;
use crate::log::EventLog;
use crate::storage::Storage;
use crate::storage::presence::{SessionWrite, UserKey, UserPresence, UserTouch};

/// A typing state not refreshed within this ends by itself.
pub const TYPING_TTL: Duration = Duration::from_secs(6);
/// Repeated `is_typing: true` within this is one event.
pub const TYPING_COALESCE: Duration = Duration::from_secs(1);

pub struct Presence {
    storage: Arc<dyn Storage>,
    log: Arc<EventLog>,
    namespaces: Arc<Namespaces>,
    /// This process, for the heartbeat that keeps its open streams alive.
    node_id: String,
    ttl: Duration,
    away_after: Duration,
    /// When this node last renewed each polling session (a user's, or one
    /// of their connections'), and the channels it followed then; entries
    /// older than a TTL are dropped by the sweep, so it holds active pollers only.
    recent_polls: std::sync::Mutex<std::collections::HashMap<PollSession, (i64, Vec<Channel>)>>,
    /// Client actions of each user this node recorded lately: back-to-back
    /// actions (an editor's every keystroke batch) write the activity once
    /// per [`Self::action_every`], the rest is written by the next sweep.
    /// The sweep drops entries with nothing left to write.
    recent_actions: std::sync::Mutex<std::collections::HashMap<UserKey, RecentAction>>,
    /// Sessions waiting to be recorded in a batch.
    sessions: queue::Queue,
}

/// A polling session as one string: its tenant, user and id (`poll`, or
/// `poll:{connection}`), so the check every poll makes costs one
/// allocation.
type PollSession = String;

/// A user's client actions as this node knows them.
struct RecentAction {
    /// When an activity was last written to storage.
    written_at: i64,
    /// The latest action (at or after `written_at`).
    latest: i64,
    name: Option<String>,
    avatar: Option<String>,
}

/// Held by an open stream; dropping it starts the user's TTL grace.
pub struct PresenceGuard {
    presence: Arc<Presence>,
    user: UserKey,
    /// Kept as its 16 bytes (every open stream holds one), written out
    /// where storage and the rooms take it.
    session_id: uuid::Uuid,
}

impl PresenceGuard {
    pub(crate) fn session_id(&self) -> String {
        self.session_id.to_string()
    }
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        // Drop cannot wait; a failure here only delays "offline" until the
        // node's heartbeat lapses.
        let expires_at = self.presence.expiry(now_ms());
        self.presence.record_later(SessionWrite {
            user: self.user.clone(),
            session_id: self.session_id(),
            open: false,
            expires_at,
            touch: None,
            follows: None,
        });
    }
}

/// The status others see: offline without a live session; otherwise the
/// chosen `busy`/`away`, else `away` after `away_after` without an action.
pub fn effective_status(p: &UserPresence, now: i64, away_after: Duration) -> &'static str {
    if !p.online {
        return "offline";
    }
    match p.chosen_status.as_deref() {
        Some("busy") => "busy",
        Some("away") => "away",
        _ if now - p.last_activity > away_after.as_millis() as i64 => "away",
        _ => "online",
    }
}

fn key(who: &Identity) -> UserKey {
    UserKey {
        tenant: who.tenant.clone(),
        user_id: who.user_id.clone(),
    }
}

impl Presence {
    pub fn new(
        storage: Arc<dyn Storage>,
        log: Arc<EventLog>,
        namespaces: Arc<Namespaces>,
        ttl: Duration,
        away_after: Duration,
    ) -> Self {
        Self {
            storage,
            log,
            namespaces,
            node_id: uuid::Uuid::new_v4().to_string(),
            ttl,
            away_after,
            recent_polls: Default::default(),
            recent_actions: Default::default(),
            sessions: Default::default(),
        }
    }

    /// How often the presence sweep runs (heartbeat, expiry, away detection).
    fn sweep_every(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Most often one user's actions are written: a small share of the away
    /// delay, and no more than one sweep apart (the sweep writes the rest
    /// before it looks for idle users, so they are never announced away early).
    fn action_every(&self) -> i64 {
        self.sweep_every().min(self.away_after / 10).as_millis() as i64
    }

    fn expiry(&self, now: i64) -> i64 {
        now + self.ttl.as_millis() as i64
    }

    /// A stream opened: the user is online until the guard drops and a TTL
    /// passes, in the rooms of the channels it follows. Recorded in a batch
    /// with the other sessions queued meanwhile.
    pub async fn stream_opened(
        self: &Arc<Self>,
        who: &Identity,
        channels: &[Channel],
    ) -> Result<Option<PresenceGuard>, Error> {
        if who.is_service {
            return Ok(None);
        }
        let user = key(who);
        let now = now_ms();
        let id = uuid::Uuid::new_v4();
        self.record(SessionWrite {
            user: user.clone(),
            session_id: id.to_string(),
            open: true,
            expires_at: self.expiry(now),
            touch: Some(user_touch(who, Some(channels), Some(now))),
            follows: Some(names(channels)),
        })
        .await?;
        Ok(Some(PresenceGuard {
            presence: self.clone(),
            user,
            session_id: id,
        }))
    }

    /// A poll keeps the user online for a TTL, in the rooms of the channels
    /// it read. Its session is the client's connection (when it names one)
    /// or the user's polls as one.
    pub async fn polled(
        self: &Arc<Self>,
        who: &Identity,
        channels: &[Channel],
        connection_id: Option<&str>,
    ) -> Result<(), Error> {
        if who.is_service {
            return Ok(());
        }
        let now = now_ms();
        // A client polling back to back renews its session at most a few
        // times per TTL: the write is what keeps it online, not each poll
        // (unless the channels it reads changed).
        let renew_every = (self.ttl / 4).as_millis() as i64;
        {
            let polling: PollSession = match connection_id {
                Some(id) => format!("{}\u{1f}{}\u{1f}poll:{id}", who.tenant, who.user_id),
                None => format!("{}\u{1f}{}\u{1f}poll", who.tenant, who.user_id),
            };
            let mut recent = self.recent_polls.lock().expect("recent polls lock");
            match recent.get_mut(&polling) {
                Some((at, followed)) if now - *at < renew_every && followed == channels => {
                    return Ok(());
                }
                Some(entry) => *entry = (now, channels.to_vec()),
                None => {
                    recent.insert(polling, (now, channels.to_vec()));
                }
            }
        }
        self.record(SessionWrite {
            user: key(who),
            session_id: match connection_id {
                Some(id) => format!("poll:{id}"),
                None => "poll".to_string(),
            },
            open: false,
            expires_at: self.expiry(now),
            touch: Some(user_touch(who, Some(channels), None)),
            follows: Some(names(channels)),
        })
        .await
    }

    /// A client action (publish, presence, typing, editing): not away any
    /// more. Written at once unless this node wrote one for the user within
    /// [`Self::action_every`] (then the user cannot have turned away since,
    /// and the sweep writes it).
    pub async fn acted(&self, who: &Identity) -> Result<(), Error> {
        if who.is_service {
            return Ok(());
        }
        let user = key(who);
        let now = now_ms();
        {
            let mut recent = self.recent_actions.lock().expect("recent actions lock");
            match recent.get_mut(&user) {
                Some(r) if now - r.written_at < self.action_every() => {
                    r.latest = r.latest.max(now);
                    return Ok(());
                }
                _ => {
                    recent.insert(
                        user.clone(),
                        RecentAction {
                            written_at: now,
                            latest: now,
                            name: who.name.clone(),
                            avatar: who.avatar.clone(),
                        },
                    );
                }
            }
        }
        if let Err(e) = self.touch(who, None, Some(now), now).await {
            // Not written after all: the next action tries again.
            self.recent_actions
                .lock()
                .expect("recent actions lock")
                .remove(&user);
            return Err(e);
        }
        self.refresh(&user, false).await
    }

    /// Writes the actions [`Self::acted`] left to the sweep. An entry is
    /// marked written only once its write succeeded, so a failed sweep
    /// leaves the rest for the next one.
    async fn write_recent_actions(&self, now: i64) -> Result<(), Error> {
        let due: Vec<(UserKey, i64, Option<String>, Option<String>)> = {
            let mut recent = self.recent_actions.lock().expect("recent actions lock");
            let every = self.action_every();
            recent.retain(|_, r| r.latest > r.written_at || now - r.written_at < every);
            recent
                .iter()
                .filter(|(_, r)| r.latest > r.written_at)
                .map(|(user, r)| (user.clone(), r.latest, r.name.clone(), r.avatar.clone()))
                .collect()
        };
        for (user, latest, name, avatar) in due {
            self.storage
                .touch_user(
                    &user,
                    name.as_deref(),
                    avatar.as_deref(),
                    None,
                    Some(latest),
                    now,
                )
                .await?;
            if let Some(r) = self
                .recent_actions
                .lock()
                .expect("recent actions lock")
                .get_mut(&user)
            {
                r.written_at = r.written_at.max(latest);
            }
        }
        Ok(())
    }

    async fn touch(
        &self,
        who: &Identity,
        channels: Option<&[Channel]>,
        activity: Option<i64>,
        now: i64,
    ) -> Result<(), Error> {
        let t = user_touch(who, channels, activity);
        self.storage
            .touch_user(
                &key(who),
                t.name.as_deref(),
                t.avatar.as_deref(),
                t.channels.as_deref(),
                t.activity_at,
                now,
            )
            .await?;
        Ok(())
    }
}

/// What a session says of its user: name, avatar, the channels read (when
/// it reads any) and the time of an action (when it is one).
fn user_touch(who: &Identity, channels: Option<&[Channel]>, activity_at: Option<i64>) -> UserTouch {
    UserTouch {
        name: who.name.clone(),
        avatar: who.avatar.clone(),
        channels: channels.map(|c| {
            serde_json::to_string(&c.iter().map(Channel::as_str).collect::<Vec<_>>())
                .expect("strings")
        }),
        activity_at,
    }
}

fn names(channels: &[Channel]) -> Vec<String> {
    channels.iter().map(|c| c.as_str().to_string()).collect()
}
