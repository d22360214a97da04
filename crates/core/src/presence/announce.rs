//! Announcing presence: the events of a user's status changes (exactly
//! once across nodes), and the sweep that finds them (heartbeat, expired
//! sessions, idle users, typing that ended by itself).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Presence, effective_status};
use crate::channel::Channel;
use crate::clock::{format_timestamp, now_ms};
use crate::error::Error;
use crate::event::{NewEvent, encode_data};
use crate::identity::Identity;
use crate::storage::AppendRequest;
use crate::storage::presence::{StatusChange, UserKey, UserPresence};

impl Presence {
    pub(super) fn event(
        &self,
        channel: Channel,
        name: &str,
        data: &Value,
    ) -> Result<NewEvent, Error> {
        Ok(NewEvent {
            also: Vec::new(),
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

    pub(super) async fn append(&self, who: &Identity, events: Vec<NewEvent>) -> Result<(), Error> {
        self.append_as(&who.tenant, &who.user_id, events).await
    }

    pub(super) async fn append_as(
        &self,
        tenant: &str,
        user_id: &str,
        events: Vec<NewEvent>,
    ) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        self.log
            .append(AppendRequest {
                origin: None,
                tenant: tenant.to_string(),
                user_id: Some(user_id.to_string()),
                events,
                idempotency_key: None,
                recipients: 0,
                notifications: Vec::new(),
            })
            .await?;
        Ok(())
    }

    /// Announces the user's effective status if it changed (exactly once
    /// across nodes), or always when `force` (the message may have changed).
    pub(super) async fn refresh(&self, user: &UserKey, force: bool) -> Result<(), Error> {
        let now = now_ms();
        let Some(p) = self.storage.user_presence(user, now).await? else {
            return Ok(());
        };
        let events = self
            .status_events(vec![(user.clone(), p)], force, now)
            .await?;
        self.append_all(events).await
    }

    /// The events announcing each user's effective status where it changed
    /// and this caller won the change (one compare-and-set transaction for
    /// all of them), or always when `force`. A user gone offline stops
    /// viewing too.
    pub(super) async fn status_events(
        &self,
        users: Vec<(UserKey, UserPresence)>,
        force: bool,
        now: i64,
    ) -> Result<Vec<(UserKey, Vec<NewEvent>)>, Error> {
        let statuses: Vec<&'static str> = users
            .iter()
            .map(|(_, p)| effective_status(p, now, self.away_after))
            .collect();
        let changes: Vec<StatusChange> = users
            .iter()
            .zip(&statuses)
            .filter(|((_, p), status)| **status != p.announced_status)
            .map(|((user, p), status)| StatusChange {
                user: user.clone(),
                from: p.announced_status.clone(),
                to: status.to_string(),
            })
            .collect();
        let mut won = if changes.is_empty() {
            Vec::new()
        } else {
            self.storage.announce(changes, now).await?
        }
        .into_iter();
        let mut announced = Vec::new();
        for ((user, p), status) in users.into_iter().zip(statuses) {
            let changed = status != p.announced_status;
            // Another request or node announced it.
            if changed && !won.next().unwrap_or(false) {
                continue;
            }
            if !changed && !force {
                continue;
            }
            let events = self.status_change(&user, &p, status, changed, now).await?;
            announced.push((user, events));
        }
        Ok(announced)
    }

    /// The events of one user's announced status.
    async fn status_change(
        &self,
        user: &UserKey,
        p: &UserPresence,
        status: &str,
        changed: bool,
        now: i64,
    ) -> Result<Vec<NewEvent>, Error> {
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
        // Coming and going per channel is the rooms' (see `rooms`).
        let went_offline = changed && status == "offline";
        if went_offline && let Some(v) = &p.viewing {
            self.storage.set_viewing(user, None, now).await?;
            if let Ok(channel) = Channel::parse(&format!("{}:{}", v.resource_type, v.resource_id)) {
                let data = json!({"user_id": user.user_id, "resource_type": v.resource_type, "resource_id": v.resource_id, "started_at": format_timestamp(v.since), "viewing": false});
                events.push(self.event(channel, "user.viewing", &data)?);
            }
        }
        Ok(events)
    }

    /// Appends each user's events as theirs, all at once (the log's writer
    /// commits them together).
    pub(super) async fn append_all(
        &self,
        events: Vec<(UserKey, Vec<NewEvent>)>,
    ) -> Result<(), Error> {
        let appends = events.into_iter().map(|(user, events)| async move {
            self.append_as(&user.tenant, &user.user_id, events).await
        });
        futures_util::future::try_join_all(appends).await?;
        Ok(())
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

    async fn sweep(&self) -> Result<(), Error> {
        let now = now_ms();
        let ttl = self.ttl.as_millis() as i64;
        self.recent_polls
            .lock()
            .expect("recent polls lock")
            .retain(|_, (at, _)| now - *at < ttl);
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
        let mut read = Vec::with_capacity(users.len());
        for (tenant, user_id) in users {
            let user = UserKey { tenant, user_id };
            if let Some(p) = self.storage.user_presence(&user, now).await? {
                read.push((user, p));
            }
        }
        let events = self.status_events(read, false, now).await?;
        self.append_all(events).await?;
        self.announce_leaves(now).await?;
        let mut ended: BTreeMap<(String, String), Vec<NewEvent>> = BTreeMap::new();
        for t in self.storage.expired_typing(now).await? {
            let Ok(channel) = Channel::parse(&format!("{}:{}", t.resource_type, t.resource_id))
            else {
                continue;
            };
            let data = json!({"user_id": t.user_id, "resource_type": t.resource_type, "resource_id": t.resource_id, "field": (!t.field.is_empty()).then_some(&t.field), "is_typing": false});
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
