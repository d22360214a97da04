//! The inbox (PROTOCOL §9, §9a): what collaborative and social apps live
//! on besides events. Notifications with a server-kept read state
//! ([`notifications`]), members of channels kept by the server
//! ([`members`], with the cache every rights check reads in
//! [`memberships`]), and conversations: direct and group messages with read
//! receipts ([`conversations`]).
//!
//! Invariants: every change a user's other devices must see is an event,
//! committed with the change (storage appends it in the change's
//! transaction) and then handed to this node's readers; everything is
//! keyed by the caller's tenant; a member reads, and writes where the
//! namespace takes client writes, as if the token named the channel
//! ([`crate::identity::Identity::member_of`]).

pub mod api;
pub mod conversations;
pub mod members;
pub mod memberships;
pub mod notifications;

use std::sync::Arc;
use std::time::Duration;

use crate::channel::{Channel, Namespaces};
use crate::error::Error;
use crate::event::{Event, NewEvent};
use crate::log::EventLog;
use crate::storage::AppendRequest;
use crate::storage::inbox::InboxStore;
use memberships::Memberships;

/// How long notifications are kept unless configured.
pub const DEFAULT_NOTIFICATION_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Most items a listing answers at once, and how many unless asked.
const MAX_PAGE: u64 = 100;
const DEFAULT_PAGE: u64 = 50;

/// A listing's page size: 1 to [`MAX_PAGE`] (more is clamped), else
/// [`DEFAULT_PAGE`].
fn page_size(limit: Option<u64>) -> Result<usize, Error> {
    match limit {
        Some(0) => Err(Error::invalid_message(format!(
            "limit must be between 1 and {MAX_PAGE}"
        ))),
        Some(n) => Ok(n.min(MAX_PAGE) as usize),
        None => Ok(DEFAULT_PAGE as usize),
    }
}

/// Cuts rows read one past `limit` down to it; whether a next page exists.
fn cut<T>(rows: &mut Vec<T>, limit: usize) -> bool {
    let more = rows.len() > limit;
    rows.truncate(limit);
    more
}

/// The inbox; cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    pub(crate) log: Arc<EventLog>,
    pub(crate) namespaces: Arc<Namespaces>,
    pub memberships: Arc<Memberships>,
    /// How long a notification is kept.
    pub(crate) notification_retention: Duration,
}

impl Inbox {
    pub fn new(
        log: Arc<EventLog>,
        namespaces: Arc<Namespaces>,
        notification_retention: Duration,
    ) -> Self {
        let memberships = Arc::new(Memberships::new(log.storage().clone()));
        let observer = memberships.clone();
        log.observe(Box::new(move |events| observer.observe(events)));
        Self {
            log,
            namespaces,
            memberships,
            notification_retention,
        }
    }

    pub(crate) fn store(&self) -> &dyn InboxStore {
        &**self.log.storage()
    }

    /// One event on `channel`, kept for its namespace's retention.
    pub(crate) fn event(
        &self,
        tenant: &str,
        user_id: Option<&str>,
        channel: &Channel,
        name: &str,
        data: String,
    ) -> AppendRequest {
        AppendRequest {
            origin: None,
            tenant: tenant.to_string(),
            user_id: user_id.map(str::to_string),
            events: vec![NewEvent {
                also: Vec::new(),
                channel: channel.clone(),
                event: name.to_string(),
                data,
                expected_last_id: None,
                retention_ms: self.namespaces.retention(channel).as_millis() as i64,
            }],
            idempotency_key: None,
            recipients: 0,
            notifications: Vec::new(),
        }
    }

    /// Hands events storage committed with a change to this node's readers.
    pub(crate) async fn committed(&self, events: &[Arc<Event>]) {
        if !events.is_empty() {
            self.log.ingest_committed(events).await;
        }
    }
}
