//! Channels and namespaces (PROTOCOL §2).
//!
//! A channel is `namespace` or `namespace:id`. [`Namespaces`] holds the
//! configured namespaces (the built-in table, changed by the TOML file) and
//! answers who may read and write a channel. Invariants: names are validated
//! before any lookup; `notifications` always resolves to `user:{sub}`; access
//! never crosses tenants because every key below this module carries one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};
use crate::identity::Identity;
use crate::names::{is_valid_id, is_valid_namespace};

/// A syntactically valid channel name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(String);

impl Channel {
    /// Parses a name; anything outside the grammar is `invalid_channel`.
    pub fn parse(name: &str) -> Result<Self, Error> {
        let ok = match name.split_once(':') {
            Some((ns, id)) => is_valid_namespace(ns) && is_valid_id(id),
            None => is_valid_namespace(name),
        };
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(Error::new(
                ErrorCode::InvalidChannel,
                format!(
                    "Invalid channel name '{}': expected namespace or namespace:id",
                    truncate(name)
                ),
            )
            .with_details(serde_json::json!({ "channel": truncate(name) })))
        }
    }

    /// A name taken from a channel parsed before (a reader's own, say):
    /// not checked again.
    pub(crate) fn known(name: &str) -> Self {
        Self(name.to_string())
    }

    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(ns, _)| ns)
    }

    pub fn id(&self) -> Option<&str> {
        self.0.split_once(':').map(|(_, id)| id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The personal channel of a user.
    pub fn user(user_id: &str) -> Self {
        Self(format!("user:{user_id}"))
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn truncate(s: &str) -> String {
    crate::names::truncate(s, 140)
}

/// Who may subscribe to a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Any authenticated user of the tenant.
    Everyone,
    /// Only the user the channel id names (`user:{sub}`).
    Owner,
    /// Users whose `channels` claim matches the channel.
    Claim,
}

/// One namespace's options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    #[serde(default)]
    pub description: String,
    pub subscribe: Access,
    /// How long events stay in the log, in seconds.
    #[serde(default = "default_retention")]
    pub retention_secs: u64,
    /// Whether clients that may read a channel may also publish to it.
    #[serde(default)]
    pub client_publish: bool,
    /// Whether `user.connected` / `user.disconnected` are announced on its
    /// channels to their readers.
    #[serde(default)]
    pub presence: bool,
    /// Whether clients that may read a channel may also act on it: say they
    /// view it, type in it, edit its documents and lock their fields (all
    /// of which append events its readers get). Unset: on where readers are
    /// named by claim (the resource namespaces, conversations), off where
    /// everyone or only the owner reads (`feed`, `presence`, `system`,
    /// `user`), whose events must come from backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_write: Option<bool>,
}

fn default_retention() -> u64 {
    24 * 3600
}

impl Namespace {
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs)
    }

    /// [`Self::client_write`], with its default applied.
    pub fn accepts_client_writes(&self) -> bool {
        self.client_write.unwrap_or(self.subscribe == Access::Claim)
    }
}

/// A channel a request named that it may not use, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelError {
    pub channel: String,
    pub code: &'static str,
}

/// The configured namespaces.
#[derive(Debug, Clone)]
pub struct Namespaces {
    by_name: BTreeMap<String, Namespace>,
}

/// The namespace that aliases `user:{sub}`.
pub const NOTIFICATIONS: &str = "notifications";

impl Default for Namespaces {
    fn default() -> Self {
        let ns = |description: &str, subscribe, retention_secs, client_publish| Namespace {
            description: description.to_string(),
            subscribe,
            retention_secs,
            client_publish,
            // Collaboration spaces announce who joins and take their
            // readers' viewing, typing and edits; broadcast channels do not.
            presence: subscribe == Access::Claim,
            client_write: Some(subscribe == Access::Claim),
        };
        let day = 24 * 3600;
        let mut by_name = BTreeMap::new();
        by_name.insert(
            "user".into(),
            ns(
                "Personal channel: notifications, assignments",
                Access::Owner,
                day,
                false,
            ),
        );
        by_name.insert(
            NOTIFICATIONS.into(),
            ns(
                "Alias of user:{sub}, the caller's personal channel",
                Access::Owner,
                day,
                false,
            ),
        );
        by_name.insert(
            "system".into(),
            ns(
                "Announcements and maintenance notices",
                Access::Everyone,
                day,
                false,
            ),
        );
        by_name.insert(
            "presence".into(),
            ns(
                "Presence changes, of everyone or of one user",
                Access::Everyone,
                60,
                false,
            ),
        );
        by_name.insert(
            "feed".into(),
            ns("Feed and count updates", Access::Everyone, day, false),
        );
        for (name, what) in [
            ("task", "A task"),
            ("project", "A project"),
            ("team", "A team"),
            ("workspace", "A workspace"),
            ("sprint", "A sprint"),
            ("work_item", "A work item"),
        ] {
            by_name.insert(
                name.into(),
                ns(&format!("{what}: updates to it"), Access::Claim, day, false),
            );
        }
        by_name.insert(
            "conversation".into(),
            ns(
                "A conversation: its members may publish to it",
                Access::Claim,
                day,
                true,
            ),
        );
        Self { by_name }
    }
}

impl Namespaces {
    /// The defaults with `overrides` laid over them (from the TOML file).
    pub fn with_overrides(overrides: BTreeMap<String, Namespace>) -> anyhow::Result<Self> {
        let mut this = Self::default();
        for (name, ns) in overrides {
            anyhow::ensure!(
                is_valid_namespace(&name),
                "namespace name '{name}' must be [a-z_]{{1,32}}"
            );
            this.by_name.insert(name, ns);
        }
        Ok(this)
    }

    pub fn get(&self, name: &str) -> Option<&Namespace> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Namespace)> {
        self.by_name.iter()
    }

    /// Parses `name`, resolves the `notifications` alias and checks the
    /// namespace exists: `invalid_channel` (400) or `channel_not_found` (404).
    pub fn resolve(&self, name: &str, who: &Identity) -> Result<Channel, Error> {
        let channel = Channel::parse(name)?;
        if channel.namespace() == NOTIFICATIONS && channel.id().is_none() {
            return Ok(Channel::user(&who.user_id));
        }
        if self.get(channel.namespace()).is_none() || channel.namespace() == NOTIFICATIONS {
            return Err(Error::new(
                ErrorCode::ChannelNotFound,
                format!("Unknown namespace '{}'", channel.namespace()),
            )
            .with_details(serde_json::json!({ "channel": name })));
        }
        Ok(channel)
    }

    /// Whether `who` may read `channel` (already resolved).
    pub fn may_subscribe(&self, who: &Identity, channel: &Channel) -> bool {
        if who.is_service {
            return true;
        }
        let Some(ns) = self.get(channel.namespace()) else {
            return false;
        };
        match ns.subscribe {
            Access::Everyone => true,
            Access::Owner => channel.id() == Some(who.user_id.as_str()),
            Access::Claim => {
                matches_any(&who.channels, channel.as_str()) || who.is_member(channel.as_str())
            }
        }
    }

    /// Whether `who` may write `channel` with `POST /realtime/publish`.
    pub fn may_publish(&self, who: &Identity, channel: &Channel) -> bool {
        if who.is_service || matches_any(&who.publish, channel.as_str()) {
            return true;
        }
        self.get(channel.namespace())
            .is_some_and(|ns| ns.client_publish && self.may_subscribe(who, channel))
    }

    /// Whether `who` may act on `channel` beyond reading it: viewing, typing,
    /// editing and locks. It must read the channel, and the namespace accept
    /// client writes or the token's `publish` claim name the channel.
    pub fn may_write(&self, who: &Identity, channel: &Channel) -> bool {
        if who.is_service {
            return true;
        }
        self.may_subscribe(who, channel)
            && (matches_any(&who.publish, channel.as_str())
                || self
                    .get(channel.namespace())
                    .is_some_and(Namespace::accepts_client_writes))
    }

    /// How long events on `channel` are kept.
    pub fn retention(&self, channel: &Channel) -> Duration {
        self.get(channel.namespace()).map_or(
            Duration::from_secs(default_retention()),
            Namespace::retention,
        )
    }
}

fn matches_any(patterns: &[String], channel: &str) -> bool {
    patterns
        .iter()
        .any(|p| glob_match(p.as_bytes(), channel.as_bytes()))
}

/// `*` matches any run of characters (including none); everything else is literal.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match(b"task:*", b"task:123"));
        assert!(!glob_match(b"task:*", b"project:1"));
        assert!(glob_match(b"project:456", b"project:456"));
        assert!(!glob_match(b"project:45", b"project:456"));
        assert!(glob_match(b"*", b"anything"));
    }

    fn who(channels: &[&str], publish: &[&str]) -> Identity {
        Identity {
            user_id: "alice".into(),
            tenant: "t".into(),
            name: None,
            avatar: None,
            channels: channels.iter().map(|c| c.to_string()).collect(),
            publish: publish.iter().map(|c| c.to_string()).collect(),
            is_service: false,
            expires_at: i64::MAX,
            member_of: Default::default(),
        }
    }

    #[test]
    fn client_writes_follow_the_namespace() {
        let ns = Namespaces::default();
        let alice = who(&["task:*", "conversation:*"], &[]);
        let ch = |name: &str| Channel::parse(name).unwrap();
        for writable in ["task:1", "conversation:1"] {
            assert!(ns.may_write(&alice, &ch(writable)), "{writable}");
        }
        for read_only in ["feed:updates", "system", "presence:alice", "user:alice"] {
            assert!(ns.may_subscribe(&alice, &ch(read_only)), "{read_only}");
            assert!(!ns.may_write(&alice, &ch(read_only)), "{read_only}");
        }
        // Reading comes first; a publish claim opens a read-only channel.
        assert!(!ns.may_write(&who(&[], &[]), &ch("task:1")));
        assert!(ns.may_write(&who(&[], &["feed:updates"]), &ch("feed:updates")));
        let mut service = who(&[], &[]);
        service.is_service = true;
        assert!(ns.may_write(&service, &ch("system")));
    }

    #[test]
    fn client_write_defaults_by_who_reads() {
        // As the TOML file's entries deserialize, written as JSON here.
        let parse = |entry: &str| -> Namespace { serde_json::from_str(entry).unwrap() };
        assert!(parse(r#"{"subscribe":"claim"}"#).accepts_client_writes());
        assert!(!parse(r#"{"subscribe":"everyone"}"#).accepts_client_writes());
        assert!(!parse(r#"{"subscribe":"owner"}"#).accepts_client_writes());
        assert!(parse(r#"{"subscribe":"everyone","client_write":true}"#).accepts_client_writes());
        assert!(!parse(r#"{"subscribe":"claim","client_write":false}"#).accepts_client_writes());
    }

    #[test]
    fn names() {
        assert!(Channel::parse("task:123").is_ok());
        assert!(Channel::parse("system").is_ok());
        assert!(Channel::parse("Task:1").is_err());
        assert!(Channel::parse("task:").is_err());
        assert!(Channel::parse("task:a b").is_err());
        assert!(Channel::parse("a:b:c").is_err());
    }
}
