//! Presence, viewing and typing (PROTOCOL §7), kept in storage so every
//! node of a cluster shares it.
//!
//! A user is online while a session is alive: an open stream (kept alive by
//! its node's heartbeat, so a crashed node's users go offline after the
//! TTL), a poll in the last TTL, or a stream closed less than a TTL ago (so
//! a page reload does not flap). The effective status is derived
//! ([`effective_status`]); [`Presence::refresh`] announces a change exactly
//! once across nodes by compare-and-set on the stored `announced_status`.
//! Service tokens are backends, not people: they have no presence.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::channel::{Channel, Namespaces};
use crate::error::ApiError;
use crate::event::{NewEvent, encode_data, format_timestamp, now_ms};
use crate::log::EventLog;
use crate::storage::Storage;
use crate::storage::presence::{Session, TypingKey, UserKey, UserPresence};
use crate::storage::{AppendRequest, StorageError};

/// A typing state not refreshed within this ends by itself.
pub const TYPING_TTL: Duration = Duration::from_secs(6);
/// Repeated `is_typing: true` within this is one event.
pub const TYPING_COALESCE: Duration = Duration::from_secs(1);
/// Longest `status_message`, in characters.
const MAX_STATUS_MESSAGE: usize = 256;

pub struct Presence {
    storage: Arc<dyn Storage>,
    log: Arc<EventLog>,
    namespaces: Arc<Namespaces>,
    /// This process, for the heartbeat that keeps its open streams alive.
    node_id: String,
    ttl: Duration,
    away_after: Duration,
    /// When this node last renewed each polling user's session; entries
    /// older than a TTL are dropped by the sweep, so it holds active pollers only.
    recent_polls: std::sync::Mutex<std::collections::HashMap<UserKey, i64>>,
    /// Client actions of each user this node recorded lately: back-to-back
    /// actions (an editor's every keystroke batch) write the activity once
    /// per [`Self::action_every`], the rest is written by the next sweep.
    /// The sweep drops entries with nothing left to write.
    recent_actions: std::sync::Mutex<std::collections::HashMap<UserKey, RecentAction>>,
}

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
    session_id: String,
}

impl Drop for PresenceGuard {
    fn drop(&mut self) {
        let presence = self.presence.clone();
        let user = self.user.clone();
        let session_id = std::mem::take(&mut self.session_id);
        // Drop cannot wait; a failure here only delays "offline" until the node's heartbeat lapses.
        tokio::spawn(async move {
            let expires_at = now_ms() + presence.ttl.as_millis() as i64;
            let session = Session {
                user: &user,
                session_id: &session_id,
                node_id: &presence.node_id,
                open: false,
                expires_at,
            };
            match presence.storage.put_session(session).await {
                Ok(()) => {}
                // Shutting down: the node's heartbeat stops too, so the
                // session still ends after the TTL.
                Err(StorageError(sqlx::Error::PoolClosed)) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not record a closed stream for presence")
                }
            }
        });
    }
}

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
    pub field: String,
    pub is_typing: bool,
    #[serde(default)]
    pub user_id: Option<String>,
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

fn check_user(who: &Identity, named: Option<&str>) -> Result<(), ApiError> {
    crate::http::extract::check_user_id(who, named)
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

    /// A stream opened: the user is online until the guard drops and a TTL passes.
    pub async fn stream_opened(
        self: &Arc<Self>,
        who: &Identity,
        channels: &[Channel],
    ) -> Result<Option<PresenceGuard>, ApiError> {
        if who.is_service {
            return Ok(None);
        }
        let user = key(who);
        let now = now_ms();
        let session_id = uuid::Uuid::new_v4().to_string();
        self.storage
            .heartbeat_node(&self.node_id, self.expiry(now))
            .await?;
        let session = Session {
            user: &user,
            session_id: &session_id,
            node_id: &self.node_id,
            open: true,
            expires_at: self.expiry(now),
        };
        self.storage.put_session(session).await?;
        self.touch(who, Some(channels), Some(now), now).await?;
        self.refresh(&user, false).await?;
        Ok(Some(PresenceGuard {
            presence: self.clone(),
            user,
            session_id,
        }))
    }

    /// A poll keeps the user online for a TTL.
    pub async fn polled(&self, who: &Identity, channels: &[Channel]) -> Result<(), ApiError> {
        if who.is_service {
            return Ok(());
        }
        let user = key(who);
        let now = now_ms();
        // A client polling back to back renews its session at most a few
        // times per TTL: the write is what keeps it online, not each poll.
        let renew_every = (self.ttl / 4).as_millis() as i64;
        {
            let mut recent = self.recent_polls.lock().expect("recent polls lock");
            match recent.get(&user) {
                Some(&at) if now - at < renew_every => return Ok(()),
                _ => {
                    recent.insert(user.clone(), now);
                }
            }
        }
        let session = Session {
            user: &user,
            session_id: "poll",
            node_id: &self.node_id,
            open: false,
            expires_at: self.expiry(now),
        };
        self.storage.put_session(session).await?;
        self.touch(who, Some(channels), None, now).await?;
        self.refresh(&user, false).await
    }

    /// A client action (publish, presence, typing, editing): not away any
    /// more. Written at once unless this node wrote one for the user within
    /// [`Self::action_every`] (then the user cannot have turned away since,
    /// and the sweep writes it).
    pub async fn acted(&self, who: &Identity) -> Result<(), ApiError> {
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
    async fn write_recent_actions(&self, now: i64) -> Result<(), ApiError> {
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
    ) -> Result<(), ApiError> {
        let channels = channels.map(|c| {
            serde_json::to_string(&c.iter().map(Channel::as_str).collect::<Vec<_>>())
                .expect("strings")
        });
        self.storage
            .touch_user(
                &key(who),
                who.name.as_deref(),
                who.avatar.as_deref(),
                channels.as_deref(),
                activity,
                now,
            )
            .await?;
        Ok(())
    }

    /// `POST /realtime/presence`.
    pub async fn set_status(&self, who: &Identity, req: StatusRequest) -> Result<Value, ApiError> {
        check_user(who, req.user_id.as_deref())?;
        let chosen = match req.status.as_str() {
            "online" => None,
            "away" | "busy" => Some(req.status.as_str()),
            other => {
                return Err(ApiError::invalid_message(format!(
                    "status '{}' is not one of online, away, busy",
                    other.chars().take(32).collect::<String>()
                )));
            }
        };
        let message = req.status_message.filter(|m| !m.is_empty());
        if message.as_ref().is_some_and(|m| {
            m.chars().count() > MAX_STATUS_MESSAGE || m.chars().any(char::is_control)
        }) {
            return Err(ApiError::invalid_message(format!(
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
    pub async fn set_viewing(
        &self,
        who: &Identity,
        req: ViewingRequest,
    ) -> Result<Value, ApiError> {
        check_user(who, req.user_id.as_deref())?;
        let target = match (req.resource_type, req.resource_id) {
            (Some(t), Some(i)) => Some(self.readable_resource(who, &t, &i)?),
            (None, None) => None,
            _ => {
                return Err(ApiError::invalid_message(
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
    pub async fn set_typing(&self, who: &Identity, req: TypingRequest) -> Result<Value, ApiError> {
        check_user(who, req.user_id.as_deref())?;
        let channel = self.readable_resource(who, &req.resource_type, &req.resource_id)?;
        let field_ok = (1..=64).contains(&req.field.len())
            && req
                .field
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !field_ok {
            return Err(ApiError::invalid_message(
                "field must be 1-64 characters of [A-Za-z0-9_.-]",
            ));
        }
        let typing = TypingKey {
            tenant: who.tenant.clone(),
            user_id: who.user_id.clone(),
            resource_type: req.resource_type.clone(),
            resource_id: req.resource_id.clone(),
            field: req.field.clone(),
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
    ) -> Result<Value, ApiError> {
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
                    "typing_fields": u.typing,
                    "last_activity": format_timestamp(u.presence.last_activity),
                })
            })
            .collect();
        Ok(
            json!({ "resource": { "type": resource_type, "id": resource_id }, "active_users": active }),
        )
    }

    /// `GET /realtime/presence/users/{user_id}`, within the caller's tenant.
    pub async fn user(&self, who: &Identity, user_id: &str) -> Result<Value, ApiError> {
        if !crate::channel::is_valid_id(user_id) {
            return Err(ApiError::invalid_message(
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
                "currently_viewing": p.viewing.filter(|_| p.online).map(|v| json!({"resource_type": v.resource_type, "resource_id": v.resource_id})),
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

    fn readable_resource(
        &self,
        who: &Identity,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<Channel, ApiError> {
        let channel = self
            .namespaces
            .resolve(&format!("{resource_type}:{resource_id}"), who)?;
        if channel.id().is_none() || !self.namespaces.may_subscribe(who, &channel) {
            return Err(ApiError::permission_denied(format!(
                "This token may not read '{channel}'"
            )));
        }
        Ok(channel)
    }

    fn event(&self, channel: Channel, name: &str, data: &Value) -> Result<NewEvent, ApiError> {
        Ok(NewEvent {
            channel,
            event: name.to_string(),
            data: encode_data(data)?,
            expected_last_id: None,
            retention_ms: self.short_retention_ms(),
        })
    }

    /// Presence and typing events use the `presence` namespace's retention.
    fn short_retention_ms(&self) -> i64 {
        self.namespaces
            .get("presence")
            .map_or(60_000, |ns| ns.retention().as_millis() as i64)
    }

    async fn append(&self, who: &Identity, events: Vec<NewEvent>) -> Result<(), ApiError> {
        self.append_as(&who.tenant, &who.user_id, events).await
    }

    async fn append_as(
        &self,
        tenant: &str,
        user_id: &str,
        events: Vec<NewEvent>,
    ) -> Result<(), ApiError> {
        if events.is_empty() {
            return Ok(());
        }
        self.log
            .append(AppendRequest {
                tenant: tenant.to_string(),
                user_id: Some(user_id.to_string()),
                events,
                idempotency_key: None,
                recipients: 0,
            })
            .await?;
        Ok(())
    }

    /// Announces the user's effective status if it changed (exactly once
    /// across nodes), or always when `force` (the message may have changed).
    async fn refresh(&self, user: &UserKey, force: bool) -> Result<(), ApiError> {
        let now = now_ms();
        let Some(p) = self.storage.user_presence(user, now).await? else {
            return Ok(());
        };
        let status = effective_status(&p, now, self.away_after);
        let changed = status != p.announced_status;
        if changed
            && !self
                .storage
                .announce(user, &p.announced_status, status, now)
                .await?
        {
            return Ok(()); // another request or node announced it
        }
        if !changed && !force {
            return Ok(());
        }
        let data = json!({
            "user_id": user.user_id,
            "status": status,
            "status_message": p.status_message,
            "updated_at": format_timestamp(now),
        });
        let mut events = vec![
            self.event(Channel::parse("presence")?, "user.presence", &data)?,
            self.event(
                Channel::parse(&format!("presence:{}", user.user_id))?,
                "user.presence",
                &data,
            )?,
        ];
        let went_online = p.announced_status == "offline" && status != "offline";
        let went_offline = changed && status == "offline";
        if went_online || went_offline {
            let name = if went_online {
                "user.connected"
            } else {
                "user.disconnected"
            };
            let data = json!({"user_id": user.user_id, "name": p.name, "timestamp": format_timestamp(now)});
            for channel in announced_channels(&self.namespaces, &p.channels) {
                events.push(self.event(channel, name, &data)?);
            }
        }
        if went_offline && let Some(v) = &p.viewing {
            self.storage.set_viewing(user, None, now).await?;
            if let Ok(channel) = Channel::parse(&format!("{}:{}", v.resource_type, v.resource_id)) {
                let data = json!({"user_id": user.user_id, "resource_type": v.resource_type, "resource_id": v.resource_id, "started_at": format_timestamp(v.since), "viewing": false});
                events.push(self.event(channel, "user.viewing", &data)?);
            }
        }
        self.append_as(&user.tenant, &user.user_id, events).await
    }

    /// Heartbeat, TTL expiry, away detection and typing expiry, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.sweep_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "presence sweep failed; will retry");
            }
        }
    }

    async fn sweep(&self) -> Result<(), ApiError> {
        let now = now_ms();
        let ttl = self.ttl.as_millis() as i64;
        self.recent_polls
            .lock()
            .expect("recent polls lock")
            .retain(|_, at| now - *at < ttl);
        self.storage
            .heartbeat_node(&self.node_id, self.expiry(now))
            .await?;
        // Before looking for idle users: their latest actions count.
        self.write_recent_actions(now).await?;
        let mut users: BTreeSet<(String, String)> = BTreeSet::new();
        for u in self.storage.sweep_sessions(now).await? {
            users.insert((u.tenant, u.user_id));
        }
        let idle_before = now - self.away_after.as_millis() as i64;
        for u in self.storage.stale_announcements(now, idle_before).await? {
            users.insert((u.tenant, u.user_id));
        }
        for (tenant, user_id) in users {
            self.refresh(&UserKey { tenant, user_id }, false).await?;
        }
        let mut ended: BTreeMap<(String, String), Vec<NewEvent>> = BTreeMap::new();
        for t in self.storage.expired_typing(now).await? {
            let Ok(channel) = Channel::parse(&format!("{}:{}", t.resource_type, t.resource_id))
            else {
                continue;
            };
            let data = json!({"user_id": t.user_id, "resource_type": t.resource_type, "resource_id": t.resource_id, "field": t.field, "is_typing": false});
            ended
                .entry((t.tenant, t.user_id))
                .or_default()
                .push(self.event(channel, "user.typing", &data)?);
        }
        for ((tenant, user_id), events) in ended {
            self.append_as(&tenant, &user_id, events).await?;
        }
        Ok(())
    }
}

/// The channels whose readers hear a user connect or disconnect: the ones
/// the user reads whose namespace has the `presence` option.
fn announced_channels(namespaces: &Namespaces, channels_json: &str) -> Vec<Channel> {
    let names: Vec<String> = serde_json::from_str(channels_json).unwrap_or_default();
    names
        .iter()
        .filter_map(|n| Channel::parse(n).ok())
        .filter(|c| namespaces.get(c.namespace()).is_some_and(|ns| ns.presence))
        .collect()
}
