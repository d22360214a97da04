//! Storage for the inbox (PROTOCOL §9, §9a): notifications with read
//! state, members kept by the server, conversations and their messages.
//!
//! Every change a user's other devices must see commits with its event:
//! the inbox core hands storage an [`Announce`] that builds the event from
//! the change's outcome (an unread count, a message as stored), and storage
//! appends it in the same transaction, by the same rules as every append.
//! Invariants every implementation keeps:
//! - a user's notification changes are serialized (their inbox row is
//!   locked first), so every unread count announced is exact;
//! - a conversation's sends, edits and reads are serialized (its row is
//!   locked first, the log head after it, as every such transaction does);
//! - a message's `seq` is the log id of its `message.created` event, so
//!   messages, read positions and the log agree on one order; a read
//!   position only moves forward;
//! - a membership's `since_id` is the log id of its `member.added` event;
//! - a retried `client_message_id` (per sender and conversation) stores
//!   nothing and answers the first message.

use std::sync::Arc;

use async_trait::async_trait;

use super::log::AppendRequest;
use super::notification::NotificationRow;
use crate::error::StorageResult as Result;
use crate::event::Event;

/// Which notifications a listing wants.
#[derive(Debug, Clone)]
pub struct NotificationQuery {
    pub unread_only: bool,
    /// Only those created before this one (its id), newest first.
    pub before: Option<String>,
    pub limit: usize,
}

/// What a change to a user's notifications came to.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Changed; the event announcing it was appended.
    Read {
        unread_count: u64,
        read_at: i64,
        events: Vec<Arc<Event>>,
    },
    /// Nothing to change (already read); nothing appended.
    Unchanged {
        unread_count: u64,
        read_at: Option<i64>,
    },
    /// No such notification (or conversation message) for this user.
    NotFound,
}

/// A change's event, built by the inbox core from what the change came to
/// (here: the unread count after it and when it happened). Runs inside the
/// transaction: pure and quick.
pub type Announce = Box<dyn FnOnce(u64, i64) -> AppendRequest + Send>;

/// A member of a channel, kept by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub channel: String,
    pub user_id: String,
    /// The log id of the `member.added` event that began the membership.
    pub since_id: u64,
    pub added_at: i64,
    /// Conversations: the `seq` and id of the last message read (0, none:
    /// nothing read yet), and when.
    pub read_seq: u64,
    pub read_message_id: Option<String>,
    pub read_at: Option<i64>,
}

/// What adding or removing a member came to.
#[derive(Debug)]
pub enum MemberOutcome {
    /// Changed; the event was appended.
    Changed {
        member: MemberRow,
        events: Vec<Arc<Event>>,
    },
    /// Already so; nothing appended.
    Unchanged(Option<MemberRow>),
}

/// A membership's event, built from the member row (whose `since_id` is 0
/// until the event is appended, then the event's id). Pure and quick.
pub type AnnounceMember = Box<dyn Fn(&MemberRow) -> AppendRequest + Send + Sync>;

/// A conversation as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRow {
    pub tenant: String,
    pub id: String,
    /// `direct` or `group`.
    pub kind: String,
    pub title: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    /// The last message's `seq` (0 before any) and its time (else `created_at`).
    pub last_seq: u64,
    pub last_at: i64,
}

/// A message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub conversation_id: String,
    /// UUIDv7, the message's public id.
    pub id: String,
    /// The log id of its `message.created` event: its place in the
    /// conversation (0 before it is stored).
    pub seq: u64,
    pub client_message_id: Option<String>,
    pub sender_id: String,
    pub sender_name: Option<String>,
    pub sender_avatar: Option<String>,
    pub content: String,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
}

/// What opening a conversation came to.
#[derive(Debug)]
pub struct Opened {
    pub conversation: ConversationRow,
    /// False when it existed already (a direct one is one per pair).
    pub created: bool,
    pub events: Vec<Arc<Event>>,
}

/// A conversation as one of its members lists it.
#[derive(Debug, Clone)]
pub struct ConversationSummary {
    pub conversation: ConversationRow,
    pub last_message: Option<MessageRow>,
    /// Messages of others after the member's read position, not deleted.
    pub unread_count: u64,
    pub members: Vec<MemberRow>,
}

/// What sending, editing or deleting a message came to.
#[derive(Debug)]
pub enum MessageOutcome {
    /// Stored; its event was appended.
    Stored {
        message: MessageRow,
        events: Vec<Arc<Event>>,
    },
    /// A retry (of a `client_message_id`, or of a delete): the message as
    /// it is, nothing stored.
    Replayed(MessageRow),
    /// No such conversation, or no such message in it.
    NotFound,
    /// Someone else's message (edit and delete are the sender's).
    NotSender,
}

/// An edit (`content`) or delete (`None`) of a message by `sender_id`.
#[derive(Debug, Clone)]
pub struct MessageChange {
    pub conversation_id: String,
    pub message_id: String,
    /// Who asks: only the message's sender may change it.
    pub sender_id: String,
    pub content: Option<String>,
    pub at_ms: i64,
}

/// A message's event, built from the message (whose `seq` is 0 until the
/// event is appended, then the event's id). Pure and quick.
pub type AnnounceMessage = Box<dyn FnOnce(&MessageRow) -> AppendRequest + Send>;

/// What the inbox needs from storage.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// A user's unexpired notifications at `now_ms`, newest first.
    async fn notifications(
        &self,
        tenant: &str,
        user_id: &str,
        query: NotificationQuery,
        now_ms: i64,
    ) -> Result<Vec<NotificationRow>>;

    /// How many of a user's unexpired notifications are unread at `now_ms`.
    async fn unread_notifications(&self, tenant: &str, user_id: &str, now_ms: i64) -> Result<u64>;

    /// Marks one notification read (or, with `None`, all of them) and
    /// appends `announce`'s event with the unread count after it.
    async fn read_notifications(
        &self,
        tenant: &str,
        user_id: &str,
        id: Option<String>,
        now_ms: i64,
        announce: Announce,
    ) -> Result<ReadOutcome>;

    /// Adds a member and appends its event (`since_id` becomes the event's id).
    async fn add_member(
        &self,
        tenant: &str,
        member: MemberRow,
        announce: AnnounceMember,
    ) -> Result<MemberOutcome>;

    /// Removes a member and appends its event.
    async fn remove_member(
        &self,
        tenant: &str,
        channel: &str,
        user_id: &str,
        now_ms: i64,
        announce: AnnounceMember,
    ) -> Result<MemberOutcome>;

    /// The members of a channel, by when they joined.
    async fn members(&self, tenant: &str, channel: &str) -> Result<Vec<MemberRow>>;

    /// Every channel a user is a member of.
    async fn memberships(&self, tenant: &str, user_id: &str) -> Result<Vec<MemberRow>>;

    /// Creates the conversation with its members unless one with its id
    /// exists (a direct conversation's id is its pair's), appending a
    /// `member.added` event per member (each membership's `since_id`).
    async fn open_conversation(
        &self,
        conversation: ConversationRow,
        members: Vec<String>,
        announce: AnnounceMember,
    ) -> Result<Opened>;

    /// A conversation of the tenant.
    async fn conversation(&self, tenant: &str, id: &str) -> Result<Option<ConversationRow>>;

    /// A member's conversations by last activity, newest first, at most
    /// `limit`, only those active before `before_ms` when given.
    async fn conversations(
        &self,
        tenant: &str,
        user_id: &str,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>>;

    /// One conversation as `user_id` lists it (whether a member or not).
    async fn conversation_summary(
        &self,
        tenant: &str,
        user_id: &str,
        id: &str,
    ) -> Result<Option<ConversationSummary>>;

    /// A conversation's messages before `before` (a message id), newest
    /// first (deleted ones included, without content).
    async fn messages(
        &self,
        tenant: &str,
        conversation_id: &str,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<MessageRow>>;

    /// Stores a new message and appends its event, unless its sender sent
    /// its `client_message_id` before.
    async fn send_message(
        &self,
        tenant: &str,
        message: MessageRow,
        announce: AnnounceMessage,
    ) -> Result<MessageOutcome>;

    /// Changes (`Some(content)`) or deletes (`None`) a message of its
    /// sender, and appends the event.
    async fn change_message(
        &self,
        tenant: &str,
        change: MessageChange,
        announce: AnnounceMessage,
    ) -> Result<MessageOutcome>;

    /// Moves a member's read position forward to `message_id` (never
    /// back) and appends `announce`'s event with their unread count after it.
    async fn read_conversation(
        &self,
        tenant: &str,
        conversation_id: &str,
        user_id: &str,
        message_id: &str,
        now_ms: i64,
        announce: Announce,
    ) -> Result<ReadOutcome>;
}
