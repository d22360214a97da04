//! The requests of PROTOCOL §7 (status, viewing, typing) and the two
//! presence views (a resource's active users, one user), over [`Presence`].

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Presence, TYPING_COALESCE, TYPING_TTL, effective_status, key};
use crate::channel::Channel;
use crate::clock::{format_timestamp, now_ms};
use crate::error::Error;
use crate::identity::Identity;
use crate::names::{is_valid_id, is_valid_label};
use crate::storage::presence::{TypingKey, UserKey};

/// Longest `status_message`, in characters.
const MAX_STATUS_MESSAGE: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub status: String,
    #[serde(default)]
    pub status_message: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewingRequest {
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypingRequest {
    pub resource_type: String,
    pub resource_id: String,
    /// The field typed in; left out (or `null`): the resource as a whole
    /// (a chat's message box, say).
    #[serde(default)]
    pub field: Option<String>,
    pub is_typing: bool,
    #[serde(default)]
    pub user_id: Option<String>,
}

impl Presence {
    /// `POST /realtime/presence`.
    pub async fn set_status(&self, who: &Identity, req: StatusRequest) -> Result<Value, Error> {
        no_presence_for_services(who, "POST /realtime/presence")?;
        who.check_named_user(req.user_id.as_deref())?;
        let chosen = match req.status.as_str() {
            "online" => None,
            "away" | "busy" => Some(req.status.as_str()),
            other => {
                return Err(Error::invalid_message(format!(
                    "status '{}' is not one of online, away, busy",
                    other.chars().take(32).collect::<String>()
                )));
            }
        };
        let message = req.status_message.filter(|m| !m.is_empty());
        if message
            .as_ref()
            .is_some_and(|m| !is_valid_label(m, MAX_STATUS_MESSAGE))
        {
            return Err(Error::invalid_message(format!(
                "status_message must be at most {MAX_STATUS_MESSAGE} characters, none of them control characters"
            )));
        }
        let now = now_ms();
        self.touch(who, None, Some(now), now).await?;
        self.storage
            .set_status(&key(who), chosen, message.as_deref(), now)
            .await?;
        self.refresh(&key(who), true).await?;
        self.user(who, &who.user_id).await
    }

    /// `POST /realtime/presence/viewing`.
    pub async fn set_viewing(&self, who: &Identity, req: ViewingRequest) -> Result<Value, Error> {
        no_presence_for_services(who, "POST /realtime/presence/viewing")?;
        who.check_named_user(req.user_id.as_deref())?;
        let target = match (req.resource_type, req.resource_id) {
            (Some(t), Some(i)) => Some(self.writable_resource(who, &t, &i)?),
            (None, None) => None,
            _ => {
                return Err(Error::invalid_message(
                    "Send both resource_type and resource_id, or both null to clear",
                ));
            }
        };
        let now = now_ms();
        self.touch(who, None, Some(now), now).await?;
        let before = self
            .storage
            .set_viewing(
                &key(who),
                target
                    .as_ref()
                    .map(|c| (c.namespace(), c.id().unwrap_or_default())),
                now,
            )
            .await?;
        let mut events = Vec::new();
        if let Some(b) = before.filter(|b| {
            target.as_ref().is_none_or(|t| {
                (t.namespace(), t.id()) != (b.resource_type.as_str(), Some(b.resource_id.as_str()))
            })
        }) {
            let channel = Channel::parse(&format!("{}:{}", b.resource_type, b.resource_id))?;
            let data = json!({"user_id": who.user_id, "resource_type": b.resource_type, "resource_id": b.resource_id, "started_at": format_timestamp(b.since), "viewing": false});
            events.push(self.event(channel, "user.viewing", &data)?);
        }
        let answer = match &target {
            Some(t) => {
                let data = json!({"user_id": who.user_id, "resource_type": t.namespace(), "resource_id": t.id(), "started_at": format_timestamp(now), "viewing": true});
                events.push(self.event(t.clone(), "user.viewing", &data)?);
                data
            }
            None => {
                json!({"user_id": who.user_id, "resource_type": null, "resource_id": null, "started_at": null, "viewing": false})
            }
        };
        self.append(who, events).await?;
        self.refresh(&key(who), false).await?;
        Ok(answer)
    }

    /// `POST /realtime/typing`.
    pub async fn set_typing(&self, who: &Identity, req: TypingRequest) -> Result<Value, Error> {
        no_presence_for_services(who, "POST /realtime/typing")?;
        who.check_named_user(req.user_id.as_deref())?;
        let channel = self.writable_resource(who, &req.resource_type, &req.resource_id)?;
        let field_ok = req.field.as_ref().is_none_or(|field| {
            (1..=64).contains(&field.len())
                && field
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        });
        if !field_ok {
            return Err(Error::invalid_message(
                "field must be 1-64 characters of [A-Za-z0-9_.-], or left out for the whole resource",
            ));
        }
        let typing = TypingKey {
            tenant: who.tenant.clone(),
            user_id: who.user_id.clone(),
            resource_type: req.resource_type.clone(),
            resource_id: req.resource_id.clone(),
            field: req.field.clone().unwrap_or_default(),
        };
        let now = now_ms();
        self.touch(who, None, Some(now), now).await?;
        let due = if req.is_typing {
            let expires = now + TYPING_TTL.as_millis() as i64;
            self.storage
                .typing_on(
                    &typing,
                    now,
                    expires,
                    now - TYPING_COALESCE.as_millis() as i64,
                )
                .await?
        } else {
            self.storage.typing_off(&typing).await?
        };
        let data = json!({"user_id": who.user_id, "resource_type": req.resource_type, "resource_id": req.resource_id, "field": req.field, "is_typing": req.is_typing});
        if due {
            let event = self.event(channel, "user.typing", &data)?;
            self.append(who, vec![event]).await?;
        }
        self.refresh(&key(who), false).await?;
        Ok(data)
    }

    /// `GET /realtime/presence?resource=&id=`.
    pub async fn resource(
        &self,
        who: &Identity,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<Value, Error> {
        self.readable_resource(who, resource_type, resource_id)?;
        let now = now_ms();
        let users = self
            .storage
            .resource_users(&who.tenant, resource_type, resource_id, now)
            .await?;
        let active: Vec<Value> = users
            .into_iter()
            .map(|u| {
                let status = effective_status(&u.presence, now, self.away_after);
                json!({
                    "user_id": u.user_id,
                    "name": u.presence.name,
                    "avatar": u.presence.avatar,
                    "status": status,
                    "viewing": u.presence.viewing.as_ref().is_some_and(|v| v.resource_type == resource_type && v.resource_id == resource_id),
                    "typing": !u.typing.is_empty(),
                    "typing_fields": u.typing.iter().filter(|f| !f.is_empty()).collect::<Vec<_>>(),
                    "last_activity": format_timestamp(u.presence.last_activity),
                })
            })
            .collect();
        Ok(
            json!({ "resource": { "type": resource_type, "id": resource_id }, "active_users": active }),
        )
    }

    /// `GET /realtime/presence/users/{user_id}`, within the caller's tenant.
    /// What the user views is shown only to callers who may read it: the
    /// resource's id is itself what a 403 on it keeps from them.
    pub async fn user(&self, who: &Identity, user_id: &str) -> Result<Value, Error> {
        if !is_valid_id(user_id) {
            return Err(Error::invalid_message(
                "user_id must be 1-128 characters of [A-Za-z0-9_.@-]",
            ));
        }
        let now = now_ms();
        let user = UserKey {
            tenant: who.tenant.clone(),
            user_id: user_id.to_string(),
        };
        let presence = self.storage.user_presence(&user, now).await?;
        Ok(match presence {
            Some(p) => json!({
                "user_id": user_id,
                "status": effective_status(&p, now, self.away_after),
                "status_message": p.status_message,
                "last_activity": format_timestamp(p.last_activity),
                "currently_viewing": p.viewing
                    .filter(|v| p.online && self.may_read(who, &v.resource_type, &v.resource_id))
                    .map(|v| json!({"resource_type": v.resource_type, "resource_id": v.resource_id})),
            }),
            None => json!({
                "user_id": user_id,
                "status": "offline",
                "status_message": null,
                "last_activity": null,
                "currently_viewing": null,
            }),
        })
    }

    /// Whether `who` may read the resource's channel (quietly: `false` for
    /// anything that does not resolve).
    fn may_read(&self, who: &Identity, resource_type: &str, resource_id: &str) -> bool {
        self.namespaces
            .resolve(&format!("{resource_type}:{resource_id}"), who)
            .is_ok_and(|channel| self.namespaces.may_subscribe(who, &channel))
    }

    fn readable_resource(
        &self,
        who: &Identity,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<Channel, Error> {
        let channel = self
            .namespaces
            .resolve(&format!("{resource_type}:{resource_id}"), who)?;
        if channel.id().is_none() || !self.namespaces.may_subscribe(who, &channel) {
            return Err(Error::permission_denied(format!(
                "This token may not read '{channel}'"
            )));
        }
        Ok(channel)
    }

    /// A resource the caller may read and act on (viewing, typing): 403
    /// in a namespace that takes no client writes.
    fn writable_resource(
        &self,
        who: &Identity,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<Channel, Error> {
        let channel = self.readable_resource(who, resource_type, resource_id)?;
        if !self.namespaces.may_write(who, &channel) {
            return Err(Error::permission_denied(format!(
                "Namespace '{}' does not take viewing or typing from clients (client_write is off)",
                channel.namespace()
            ))
            .with_details(json!({ "channel": channel.as_str() })));
        }
        Ok(channel)
    }
}

/// Service tokens are backends, not people: they have no presence, so a
/// status, viewing or typing of theirs would be stored and never shown.
/// Refused clearly instead.
fn no_presence_for_services(who: &Identity, what: &str) -> Result<(), Error> {
    if who.is_service {
        return Err(Error::permission_denied(format!(
            "Service tokens have no presence: {what} is for users; \
             backends announce with POST /realtime/broadcast"
        )));
    }
    Ok(())
}
