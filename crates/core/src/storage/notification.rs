//! A notification as stored (PROTOCOL §9): a leaf, so that an append can
//! carry the notifications it creates ([`super::log::AppendRequest`]) and
//! the inbox can read them ([`super::inbox`]).

/// A notification as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    pub tenant: String,
    pub user_id: String,
    /// UUIDv7: orders by creation.
    pub id: String,
    /// The notification's `type` (e.g. `task.assigned`).
    pub kind: String,
    pub title: String,
    pub body: Option<String>,
    /// Compact JSON.
    pub data: String,
    pub created_at: i64,
    pub read_at: Option<i64>,
    pub expires_at: i64,
}
