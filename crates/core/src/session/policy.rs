//! The subscription policy (PROTOCOL §2), written once for every
//! transport: which of the channels a request names a caller may read, and
//! how many one stream may follow.
//!
//! Invariants: malformed names and unknown namespaces fail the whole request
//! (400 `invalid_channel`, 404 `channel_not_found`); channels the caller may
//! not read are reported one by one and left out; a request that leaves
//! nothing readable is refused (403); a stream follows at most
//! [`MAX_CHANNELS_PER_STREAM`] channels besides its inbox (the caller's own
//! `user:{sub}` and conversations they are a member of), counted over everything it follows (a WebSocket's
//! subscriptions add up); no channel is followed twice.

use std::collections::HashSet;

use serde_json::json;

use crate::channel::{Channel, ChannelError, Namespaces};
use crate::error::{Error, ErrorCode};
use crate::identity::Identity;
use crate::inbox::conversations::NAMESPACE as CONVERSATIONS;

/// Most channels one stream may follow, besides the caller's own.
pub const MAX_CHANNELS_PER_STREAM: usize = 50;

/// What a subscription request comes to.
#[derive(Debug, Default)]
pub struct Plan {
    /// Channels to start following, in request order, none already followed.
    pub granted: Vec<Channel>,
    /// Channels named that the caller may not read.
    pub errors: Vec<ChannelError>,
}

/// Plans a subscription to `requested` for `who`, whose stream already
/// follows `followed` (empty for a new stream). An empty request is
/// refused, and so is one naming more than [`MAX_CHANNELS_PER_STREAM`]
/// entries (before duplicates are dropped: as many as `openapi.yaml`'s
/// `maxItems` allows); an empty name is malformed like any other.
pub fn plan(
    namespaces: &Namespaces,
    who: &Identity,
    requested: &[String],
    followed: &[Channel],
) -> Result<Plan, Error> {
    if requested.is_empty() {
        return Err(Error::invalid_message(
            "Name at least one channel in 'channels'",
        ));
    }
    // Bounded before any name is resolved.
    if requested.len() > MAX_CHANNELS_PER_STREAM {
        return Err(limit_exceeded(requested.len()));
    }
    let mut seen = HashSet::new();
    let requested: Vec<&String> = requested
        .iter()
        .filter(|c| seen.insert(c.as_str()))
        .collect();
    let mut plan = Plan::default();
    for name in requested {
        let channel = namespaces.resolve(name, who)?;
        if !namespaces.may_subscribe(who, &channel) {
            plan.errors.push(ChannelError {
                channel: name.clone(),
                code: ErrorCode::PermissionDenied.as_str(),
            });
        } else if !plan.granted.contains(&channel) && !followed.contains(&channel) {
            plan.granted.push(channel);
        }
    }
    let counted = |c: &&Channel| !is_inbox(who, c);
    let already = followed.iter().filter(counted).count();
    let new = plan.granted.iter().filter(counted).count();
    if already + new > MAX_CHANNELS_PER_STREAM {
        return Err(limit_exceeded(already + new));
    }
    if plan.granted.is_empty() && !plan.errors.is_empty() {
        return Err(Error::permission_denied(
            "None of the requested channels may be read with this token",
        )
        .with_details(json!({ "errors": plan.errors })));
    }
    Ok(plan)
}

/// Whether a stream follows `channel` by itself (the user's own channel, a
/// conversation they are a member of): not counted against the cap.
fn is_inbox(who: &Identity, channel: &Channel) -> bool {
    *channel == Channel::user(&who.user_id)
        || (channel.namespace() == CONVERSATIONS && who.is_member(channel.as_str()))
}

fn limit_exceeded(requested: usize) -> Error {
    Error::new(
        ErrorCode::SubscriptionLimitExceeded,
        format!("At most {MAX_CHANNELS_PER_STREAM} channels per stream"),
    )
    .with_details(json!({ "limit": MAX_CHANNELS_PER_STREAM, "requested": requested }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(channels: &[&str]) -> Identity {
        Identity {
            user_id: "alice".into(),
            tenant: "t".into(),
            name: None,
            avatar: None,
            channels: channels.iter().map(|c| c.to_string()).collect(),
            publish: vec![],
            is_service: false,
            expires_at: i64::MAX,
            member_of: Default::default(),
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn unreadable_channels_are_reported_and_left_out() {
        let ns = Namespaces::default();
        let plan = plan(
            &ns,
            &alice(&["task:*"]),
            &names(&["task:1", "project:2"]),
            &[],
        )
        .unwrap();
        assert_eq!(plan.granted, [Channel::parse("task:1").unwrap()]);
        assert_eq!(plan.errors.len(), 1);
        let none = super::plan(&ns, &alice(&[]), &names(&["project:2"]), &[]).unwrap_err();
        assert_eq!(none.code(), ErrorCode::PermissionDenied);
    }

    #[test]
    fn subscriptions_add_up_to_the_limit() {
        let ns = Namespaces::default();
        let who = alice(&["task:*"]);
        let first: Vec<Channel> = (0..MAX_CHANNELS_PER_STREAM)
            .map(|n| Channel::parse(&format!("task:{n}")).unwrap())
            .collect();
        // Already followed: nothing new, no limit crossed.
        let again = plan(&ns, &who, &names(&["task:0"]), &first).unwrap();
        assert!(again.granted.is_empty());
        let over = plan(&ns, &who, &names(&["task:x"]), &first).unwrap_err();
        assert_eq!(over.code(), ErrorCode::SubscriptionLimitExceeded);
    }
}
