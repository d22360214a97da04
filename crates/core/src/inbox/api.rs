//! The wire types of the inbox (PROTOCOL §9, §9a): request bodies, query
//! strings and answers, as HTTP takes and gives them; the WebSocket's
//! `notifications`, `conversations` and `members` messages carry the same
//! JSON.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `POST /realtime/notifications` (service tokens): one notification for
/// one user. A `notification` published on `user:{id}` carries the same
/// fields but `user_id` in its `data`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNotification {
    pub user_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    /// Any JSON, kept raw.
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

/// A notification as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub body: Option<String>,
    pub data: Box<RawValue>,
    pub created_at: String,
    pub read_at: Option<String>,
}

/// `GET /realtime/notifications`.
#[derive(Debug, Default, Deserialize)]
pub struct ListNotifications {
    #[serde(default)]
    pub unread: Option<bool>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub before: Option<String>,
}

/// Answer to [`ListNotifications`].
#[derive(Debug, Serialize)]
pub struct NotificationPage {
    pub notifications: Vec<Notification>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<String>,
    pub unread_count: u64,
}

/// Answer to reading one notification or all of them.
#[derive(Debug, Serialize)]
pub struct NotificationsRead {
    /// The one notification read; `null` for read-all.
    pub id: Option<String>,
    pub read_at: Option<String>,
    pub unread_count: u64,
}

/// A member of a channel, kept by the server.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub channel: String,
    pub user_id: String,
    pub added_at: String,
}

/// `GET /realtime/channels/{channel}/members`.
#[derive(Debug, Serialize)]
pub struct MemberList {
    pub channel: String,
    pub members: Vec<Member>,
}

/// `POST /realtime/conversations`: a direct conversation with one user
/// (one per pair, whoever opens it) or a group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum OpenConversation {
    Direct { user_id: String },
    Group { title: String, members: Vec<String> },
}

/// A member's place in a conversation.
#[derive(Debug, Clone, Serialize)]
pub struct Reader {
    pub user_id: String,
    /// The last message they read; `null` before any.
    pub last_read_message_id: Option<String>,
    pub read_at: Option<String>,
}

/// A message's sender, as the token named them when they sent it.
#[derive(Debug, Clone, Serialize)]
pub struct Sender {
    pub user_id: String,
    pub name: Option<String>,
    pub avatar: Option<String>,
}

/// A message as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub sender: Sender,
    /// Empty once deleted.
    pub content: String,
    pub client_message_id: Option<String>,
    pub created_at: String,
    pub edited_at: Option<String>,
    pub deleted_at: Option<String>,
}

/// A conversation as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Conversation {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: Option<String>,
    /// Its channel: `conversation:{id}`.
    pub channel: String,
    pub created_by: String,
    pub created_at: String,
    pub last_activity: String,
    pub last_message: Option<Message>,
    /// The caller's unread messages (others', not deleted, after their
    /// read position).
    pub unread_count: u64,
    pub members: Vec<Reader>,
}

/// `GET /realtime/conversations`.
#[derive(Debug, Default, Deserialize)]
pub struct ListConversations {
    #[serde(default)]
    pub limit: Option<u64>,
    /// Only conversations last active before this RFC 3339 time.
    #[serde(default)]
    pub before: Option<String>,
}

/// Answer to [`ListConversations`].
#[derive(Debug, Serialize)]
pub struct ConversationPage {
    pub conversations: Vec<Conversation>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<String>,
}

/// `GET /realtime/conversations/{id}/messages`.
#[derive(Debug, Default, Deserialize)]
pub struct ListMessages {
    #[serde(default)]
    pub limit: Option<u64>,
    /// Only messages older than this one (its id).
    #[serde(default)]
    pub before: Option<String>,
}

/// Answer to [`ListMessages`], newest first.
#[derive(Debug, Serialize)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub next_before: Option<String>,
}

/// `POST /realtime/conversations/{id}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    pub content: String,
    /// A retry with the same id returns the first message.
    #[serde(default)]
    pub client_message_id: Option<String>,
}

/// `PATCH /realtime/conversations/{id}/messages/{message_id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    pub content: String,
}

/// `POST /realtime/conversations/{id}/read`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadConversation {
    pub message_id: String,
}

/// Answer to [`ReadConversation`].
#[derive(Debug, Serialize)]
pub struct ConversationRead {
    pub conversation_id: String,
    /// The reader's position now (it never moves back).
    pub message_id: Option<String>,
    pub read_at: Option<String>,
    pub unread_count: u64,
}
