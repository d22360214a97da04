//! Rooms (PROTOCOL §7): who is in a channel. A user is in a channel's room
//! while one of their live sessions (an open stream, a recent poll, a
//! stream closed less than a TTL ago) follows it; the REST view of a
//! resource lists them (beside who views or types there).
//!
//! Entering and leaving are announced on the channel, as
//! `user.connected` / `user.disconnected` (the same events as before rooms,
//! now per channel): once per user, not per tab (storage's compare-and-set
//! on the room, so one node announces), only in namespaces with the
//! `presence` option. A stream announces the rooms it enters when it opens
//! and whenever the channels it follows change (WebSocket subscriptions,
//! conversations joined); the sweep announces the rooms users left.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::{Presence, PresenceGuard, key, names};
use crate::channel::{Channel, Namespaces};
use crate::clock::{format_timestamp, now_ms};
use crate::error::Error;
use crate::event::NewEvent;
use crate::identity::Identity;
use crate::storage::presence::UserKey;

/// A room is left only when no session followed it for this long, so a
/// session that is just entering is never announced gone.
const QUIET: Duration = Duration::from_secs(2);

/// The rooms among `names` whose readers hear users come and go.
fn announced<'a>(
    namespaces: &'a Namespaces,
    names: &'a [String],
) -> impl Iterator<Item = Channel> + 'a {
    names
        .iter()
        .filter_map(|n| Channel::parse(n).ok())
        .filter(|c| namespaces.get(c.namespace()).is_some_and(|ns| ns.presence))
}

impl Presence {
    /// Records the channels a session follows (replacing what it followed)
    /// and announces the user in the rooms they entered.
    pub(super) async fn enter(
        &self,
        who: &Identity,
        session_id: &str,
        channels: &[Channel],
        now: i64,
    ) -> Result<(), Error> {
        let entered = self
            .storage
            .follow(&key(who), session_id, &names(channels), now)
            .await?;
        let events = self.connected_events(&who.user_id, who.name.as_deref(), &entered, now)?;
        self.append(who, events).await
    }

    /// `user.connected` on each room entered that announces it.
    pub(super) fn connected_events(
        &self,
        user_id: &str,
        name: Option<&str>,
        entered: &[String],
        now: i64,
    ) -> Result<Vec<NewEvent>, Error> {
        let data = json!({"user_id": user_id, "name": name, "timestamp": format_timestamp(now)});
        announced(&self.namespaces, entered)
            .map(|channel| self.event(channel, "user.connected", &data))
            .collect()
    }

    /// The channels an open stream follows changed.
    pub async fn following(
        &self,
        who: &Identity,
        guard: &PresenceGuard,
        channels: &[Channel],
    ) -> Result<(), Error> {
        self.enter(who, &guard.session_id(), channels, now_ms())
            .await
    }

    /// Announces the rooms users left (from the sweep).
    pub(super) async fn announce_leaves(&self, now: i64) -> Result<(), Error> {
        let quiet_since = now - QUIET.as_millis() as i64;
        let mut by_user: BTreeMap<UserKey, Vec<String>> = BTreeMap::new();
        for (user, channel) in self.storage.leave_rooms(now, quiet_since).await? {
            by_user.entry(user).or_default().push(channel);
        }
        for (user, channels) in by_user {
            let name = self
                .storage
                .user_presence(&user, now)
                .await?
                .and_then(|p| p.name);
            let data =
                json!({"user_id": user.user_id, "name": name, "timestamp": format_timestamp(now)});
            let events = announced(&self.namespaces, &channels)
                .map(|channel| self.event(channel, "user.disconnected", &data))
                .collect::<Result<Vec<_>, Error>>()?;
            self.append_as(&user.tenant, &user.user_id, events).await?;
        }
        Ok(())
    }
}
