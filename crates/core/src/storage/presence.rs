//! Storage for presence, viewing and typing (PROTOCOL §7), shared by every
//! node of a cluster.
//!
//! A user is online while one of their sessions is alive: an open stream on
//! a node that keeps renewing its heartbeat, or a recent poll or recently
//! closed stream whose `expires_at` has not passed. `announced_status` is
//! what was last published about the user; compare-and-set on it makes
//! exactly one node announce each transition.
//!
//! Rooms: each session records the channels it follows; a user is in a
//! channel's room while a live session of theirs follows it. Entering and
//! leaving are compare-and-set per user and channel too, so each is
//! announced once per user (not per tab), by one node; a leave is only
//! taken once no session followed the channel for a moment, so a session
//! that is just joining is never announced gone.

use async_trait::async_trait;

use crate::error::StorageResult as Result;

/// Who a presence row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey {
    pub tenant: String,
    pub user_id: String,
}

/// A user's stored presence, with whether a live session exists now.
#[derive(Debug, Clone)]
pub struct UserPresence {
    pub name: Option<String>,
    pub avatar: Option<String>,
    /// `busy` or `away` when the user chose one; `None` otherwise.
    pub chosen_status: Option<String>,
    pub status_message: Option<String>,
    pub announced_status: String,
    /// JSON array of the channels the user last read.
    pub channels: String,
    pub last_activity: i64,
    pub updated_at: i64,
    pub viewing: Option<Viewing>,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewing {
    pub resource_type: String,
    pub resource_id: String,
    pub since: i64,
}

/// One user's typing state on one field (`""`: the resource as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingKey {
    pub tenant: String,
    pub user_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub field: String,
}

/// A user active on a resource (viewing it or typing in it).
#[derive(Debug, Clone)]
pub struct ActiveUser {
    pub user_id: String,
    pub presence: UserPresence,
    /// Fields being typed in on the resource.
    pub typing: Vec<String>,
}

/// A session to record in a batch ([`PresenceStore::write_sessions`]):
/// a stream that opened or closed, or a poll renewing its session.
#[derive(Debug, Clone)]
pub struct SessionWrite {
    pub user: UserKey,
    pub session_id: String,
    /// An open stream (alive while its node's heartbeat is), or a session
    /// alive until `expires_at`.
    pub open: bool,
    pub expires_at: i64,
    /// What the session says of its user, when it says anything.
    pub touch: Option<UserTouch>,
    /// The channels the session follows from now on, when they are set.
    pub follows: Option<Vec<String>>,
}

/// A user's row as a session refreshes it (see [`PresenceStore::touch_user`]).
#[derive(Debug, Clone)]
pub struct UserTouch {
    pub name: Option<String>,
    pub avatar: Option<String>,
    /// JSON array of the channels the user reads.
    pub channels: Option<String>,
    pub activity_at: Option<i64>,
}

/// What recording one [`SessionWrite`] found.
#[derive(Debug, Clone, Default)]
pub struct SessionWritten {
    /// The rooms the user entered by it (see [`PresenceStore::follow`]).
    pub entered: Vec<String>,
    /// The user's presence after the whole batch, for a write that touched
    /// its user.
    pub presence: Option<UserPresence>,
}

/// A transition of a user's `announced_status` ([`PresenceStore::announce`]).
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub user: UserKey,
    pub from: String,
    pub to: String,
}

/// What presence needs from storage.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// Keeps this node's open streams alive until `expires_at`.
    async fn heartbeat_node(&self, node_id: &str, expires_at: i64) -> Result<()>;

    /// Creates or refreshes the user's row: name, avatar, the channels they
    /// read, and (for client actions) their last activity.
    async fn touch_user(
        &self,
        user: &UserKey,
        name: Option<&str>,
        avatar: Option<&str>,
        channels: Option<&str>,
        activity_at: Option<i64>,
        now: i64,
    ) -> Result<()>;

    /// Sets (or with `None` clears) the chosen status and message.
    async fn set_status(
        &self,
        user: &UserKey,
        chosen: Option<&str>,
        message: Option<&str>,
        now: i64,
    ) -> Result<()>;

    /// Sets what the user views; returns what they viewed before.
    async fn set_viewing(
        &self,
        user: &UserKey,
        viewing: Option<(&str, &str)>,
        now: i64,
    ) -> Result<Option<Viewing>>;

    /// The user's presence as of `now`, or `None` if never seen.
    async fn user_presence(&self, user: &UserKey, now: i64) -> Result<Option<UserPresence>>;

    /// Records sessions in one transaction, in order: each session, its
    /// user's row and the rooms it follows, after renewing this node's
    /// heartbeat to `heartbeat` (when streams open). Returns what each
    /// write found, in order.
    async fn write_sessions(
        &self,
        node_id: &str,
        heartbeat: Option<i64>,
        writes: std::sync::Arc<[SessionWrite]>,
        now: i64,
    ) -> Result<Vec<SessionWritten>>;

    /// Compare-and-set of each user's `announced_status`, in one
    /// transaction; true for each change this caller won.
    async fn announce(&self, changes: Vec<StatusChange>, now: i64) -> Result<Vec<bool>>;

    /// Deletes dead sessions and the rooms they followed (to be checked by
    /// [`Self::leave_rooms`]); returns the users that lost one.
    async fn sweep_sessions(&self, now: i64) -> Result<Vec<UserKey>>;

    /// Users whose announced status may be stale: announced online but idle
    /// since before `idle_before`, or announced present with no live session.
    async fn stale_announcements(&self, now: i64, idle_before: i64) -> Result<Vec<UserKey>>;

    /// Starts or refreshes typing until `expires_at`; true when an event is due
    /// (not typing before, or the last event is older than `coalesce_before`).
    async fn typing_on(
        &self,
        key: &TypingKey,
        now: i64,
        expires_at: i64,
        coalesce_before: i64,
    ) -> Result<bool>;

    /// Ends typing; true when the user was typing.
    async fn typing_off(&self, key: &TypingKey) -> Result<bool>;

    /// Removes and returns typing states past `now`.
    async fn expired_typing(&self, now: i64) -> Result<Vec<TypingKey>>;

    /// Sets the channels a session follows (replacing what it followed);
    /// returns those the user entered now (no other live session of theirs
    /// followed them): their joining is to be announced.
    async fn follow(
        &self,
        user: &UserKey,
        session_id: &str,
        channels: &[String],
        now: i64,
    ) -> Result<Vec<String>>;

    /// Takes the users who left rooms: among the rooms a session stopped
    /// following (its channels changed, or it was swept), those no live
    /// session of the user follows any more, none having since
    /// `quiet_since`. Returns (user, channel) pairs whose leaving is to be
    /// announced. Only those rooms are looked at, not every room of every
    /// online user.
    async fn leave_rooms(&self, now: i64, quiet_since: i64) -> Result<Vec<(UserKey, String)>>;

    /// Users viewing or typing on a resource, or whose live sessions follow
    /// its channel, with their presence.
    async fn resource_users(
        &self,
        tenant: &str,
        resource_type: &str,
        resource_id: &str,
        now: i64,
    ) -> Result<Vec<ActiveUser>>;
}
