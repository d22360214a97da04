//! Notifications (PROTOCOL §9): created by backends, kept with a read state
//! for [`super::Inbox::notification_retention`], listed newest first, read
//! one by one or all at once.
//!
//! A notification is a `notification` event on `user:{id}` and a stored
//! row, committed together (the row travels with the append). Reading one
//! or all appends `notification.read` / `notification.read_all` on
//! `user:{sub}` with the unread count after it, taken under the user's lock
//! at that event's place in the log, so a device that applies the events
//! in order always shows the right count.

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::api::{
    CreateNotification, ListNotifications, Notification, NotificationPage, NotificationsRead,
};
use super::{Inbox, cut, page_size};
use crate::channel::Channel;
use crate::clock::{format_timestamp, now_ms};
use crate::error::{Error, ErrorCode};
use crate::event::{raw_data, validate_event_name};
use crate::identity::Identity;
use crate::names::{is_valid_id, is_valid_label, truncate};
use crate::storage::inbox::{NotificationQuery, ReadOutcome};
use crate::storage::notification::NotificationRow;
use crate::storage::{AppendOutcome, AppendRequest};

/// The event a backend publishes to create a notification.
pub const NOTIFICATION: &str = "notification";
/// Longest title, in characters.
const MAX_TITLE: usize = 256;
/// Longest body, in characters.
const MAX_BODY: usize = 4096;

/// What a published `notification` event's `data` holds; `type` may be
/// left out (it is then `notification`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Published {
    #[serde(rename = "type", default = "default_kind")]
    kind: String,
    title: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

fn default_kind() -> String {
    NOTIFICATION.to_string()
}

/// A notification as the API shows it.
pub fn view(row: &NotificationRow) -> Notification {
    Notification {
        id: row.id.clone(),
        kind: row.kind.clone(),
        title: row.title.clone(),
        body: row.body.clone(),
        data: RawValue::from_string(row.data.clone())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON")),
        created_at: format_timestamp(row.created_at),
        read_at: row.read_at.map(format_timestamp),
    }
}

impl Inbox {
    /// A new notification for `user_id` and the `data` of its
    /// `notification` event (the notification as the API shows it).
    fn notification(
        &self,
        tenant: &str,
        user_id: &str,
        kind: String,
        title: String,
        body: Option<String>,
        data: Option<&RawValue>,
    ) -> Result<(NotificationRow, String), Error> {
        if !is_valid_id(user_id) {
            return Err(Error::invalid_message(
                "user_id must be 1-128 characters of [A-Za-z0-9_.@-]",
            ));
        }
        validate_event_name(&kind).map_err(|_| {
            Error::invalid_message("type must be 1-64 characters of [A-Za-z0-9_.:-]")
        })?;
        if title.is_empty() || !is_valid_label(&title, MAX_TITLE) {
            return Err(Error::invalid_message(format!(
                "title must be 1-{MAX_TITLE} characters, none of them control characters"
            )));
        }
        if body.as_ref().is_some_and(|b| {
            b.chars().count() > MAX_BODY || b.chars().any(|c| c.is_control() && c != '\n')
        }) {
            return Err(Error::invalid_message(format!(
                "body must be at most {MAX_BODY} characters, no control characters but newlines"
            )));
        }
        let now = now_ms();
        let row = NotificationRow {
            tenant: tenant.to_string(),
            user_id: user_id.to_string(),
            id: uuid::Uuid::now_v7().to_string(),
            kind,
            title,
            body,
            data: raw_data(data)?,
            created_at: now,
            read_at: None,
            expires_at: now + self.notification_retention.as_millis() as i64,
        };
        let event = serde_json::to_string(&view(&row)).expect("a notification serializes");
        Ok((row, event))
    }

    /// The notification a published `notification` event on `channel`
    /// creates: its `data` read as one, and the event's data it becomes.
    /// `None` when the event is not one (another name, or not a user's
    /// channel).
    pub fn published(
        &self,
        tenant: &str,
        channel: &Channel,
        event: &str,
        data: Option<&RawValue>,
    ) -> Result<Option<(NotificationRow, String)>, Error> {
        if event != NOTIFICATION || channel.namespace() != "user" {
            return Ok(None);
        }
        let user_id = channel.id().unwrap_or_default();
        let published: Published = serde_json::from_str(data.map_or("null", RawValue::get))
            .map_err(|e| {
                Error::invalid_message(format!(
                    "A 'notification' event on a user's channel is stored as a notification: \
                     its data needs 'title' and may have 'type', 'body' and 'data' ({e})"
                ))
            })?;
        self.notification(
            tenant,
            user_id,
            published.kind,
            published.title,
            published.body,
            published.data.as_deref(),
        )
        .map(Some)
    }

    /// `POST /realtime/notifications` (service tokens).
    pub async fn create_notification(
        &self,
        who: &Identity,
        req: CreateNotification,
    ) -> Result<Notification, Error> {
        if !who.is_service {
            return Err(Error::permission_denied(
                "Notifications are created by backends: use a service token",
            ));
        }
        let (row, data) = self.notification(
            &who.tenant,
            &req.user_id,
            req.kind,
            req.title,
            req.body,
            req.data.as_deref(),
        )?;
        let channel = Channel::user(&req.user_id);
        let mut request = self.event(
            &who.tenant,
            Some(&who.user_id),
            &channel,
            NOTIFICATION,
            data,
        );
        request.notifications.push(row.clone());
        match self.log.append(request).await? {
            AppendOutcome::Appended { .. } => Ok(view(&row)),
            _ => Err(Error::new(
                ErrorCode::ServerError,
                "The notification could not be stored",
            )),
        }
    }

    /// `GET /realtime/notifications`: the caller's, newest first.
    pub async fn list_notifications(
        &self,
        who: &Identity,
        query: ListNotifications,
    ) -> Result<NotificationPage, Error> {
        let limit = page_size(query.limit)?;
        if let Some(before) = &query.before
            && uuid::Uuid::parse_str(before).is_err()
        {
            return Err(Error::invalid_message(
                "before must be a notification id (from next_before)",
            ));
        }
        let now = now_ms();
        let store = self.store();
        let mut rows = store
            .notifications(
                &who.tenant,
                &who.user_id,
                NotificationQuery {
                    unread_only: query.unread.unwrap_or(false),
                    before: query.before,
                    limit: limit + 1,
                },
                now,
            )
            .await?;
        let more = cut(&mut rows, limit);
        let unread_count = store
            .unread_notifications(&who.tenant, &who.user_id, now)
            .await?;
        Ok(NotificationPage {
            next_before: more.then(|| rows.last().map(|r| r.id.clone())).flatten(),
            notifications: rows.iter().map(view).collect(),
            unread_count,
        })
    }

    /// `GET /realtime/notifications/unread-count`.
    pub async fn unread_notifications(&self, who: &Identity) -> Result<u64, Error> {
        Ok(self
            .store()
            .unread_notifications(&who.tenant, &who.user_id, now_ms())
            .await?)
    }

    /// `POST /realtime/notifications/{id}/read` (`Some`) and
    /// `POST /realtime/notifications/read-all` (`None`).
    pub async fn read_notifications(
        &self,
        who: &Identity,
        id: Option<&str>,
    ) -> Result<NotificationsRead, Error> {
        if let Some(id) = id
            && uuid::Uuid::parse_str(id).is_err()
        {
            return Err(not_found(id));
        }
        let channel = Channel::user(&who.user_id);
        let this = self.clone();
        let (tenant, user) = (who.tenant.clone(), who.user_id.clone());
        let id_owned = id.map(str::to_string);
        let announce: crate::storage::inbox::Announce = {
            let (tenant, user, id) = (tenant.clone(), user.clone(), id_owned.clone());
            Box::new(move |unread_count, at| -> AppendRequest {
                let (name, data) = match &id {
                    Some(id) => (
                        "notification.read",
                        json!({"id": id, "read_at": format_timestamp(at), "unread_count": unread_count}),
                    ),
                    None => (
                        "notification.read_all",
                        json!({"read_at": format_timestamp(at), "unread_count": unread_count}),
                    ),
                };
                this.event(&tenant, Some(&user), &channel, name, data.to_string())
            })
        };
        let outcome = self
            .store()
            .read_notifications(&tenant, &user, id_owned.clone(), now_ms(), announce)
            .await?;
        match outcome {
            ReadOutcome::Read {
                unread_count,
                read_at,
                events,
            } => {
                self.committed(&events).await;
                Ok(NotificationsRead {
                    id: id_owned,
                    read_at: Some(format_timestamp(read_at)),
                    unread_count,
                })
            }
            ReadOutcome::Unchanged {
                unread_count,
                read_at,
            } => Ok(NotificationsRead {
                id: id_owned,
                read_at: read_at.map(format_timestamp),
                unread_count,
            }),
            ReadOutcome::NotFound => Err(not_found(id.unwrap_or_default())),
        }
    }
}

fn not_found(id: &str) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!("No notification '{}'", truncate(id, 64)),
    )
}
