//! Members kept by the server (PROTOCOL §9a): a backend adds and removes
//! them (service tokens); a member reads, and writes where the namespace
//! takes client writes, as if the token named the channel.
//!
//! Each change appends `member.added` / `member.removed` on the channel,
//! committed with it; every node sees that event and drops what it caches
//! of the member ([`super::memberships`]), and the member's open streams
//! follow (a removed member stops receiving the channel at once).

use serde_json::json;

use super::Inbox;
use super::api::{Member, MemberList};
use super::memberships::{MEMBER_ADDED, MEMBER_REMOVED};
use crate::channel::Channel;
use crate::clock::{format_timestamp, now_ms};
use crate::error::{Error, ErrorCode};
use crate::identity::Identity;
use crate::names::is_valid_id;
use crate::storage::inbox::{AnnounceMember, MemberOutcome, MemberRow};

fn view(row: &MemberRow) -> Member {
    Member {
        channel: row.channel.clone(),
        user_id: row.user_id.clone(),
        added_at: format_timestamp(row.added_at),
    }
}

fn service_only(who: &Identity) -> Result<(), Error> {
    if who.is_service {
        Ok(())
    } else {
        Err(Error::permission_denied(
            "Members are kept by backends: use a service token",
        ))
    }
}

fn check_user(user_id: &str) -> Result<(), Error> {
    if is_valid_id(user_id) {
        Ok(())
    } else {
        Err(Error::invalid_message(
            "user_id must be 1-128 characters of [A-Za-z0-9_.@-]",
        ))
    }
}

impl Inbox {
    /// The event of a membership change on its channel.
    pub(crate) fn announce_member(
        &self,
        tenant: &str,
        by: &str,
        name: &'static str,
    ) -> AnnounceMember {
        let this = self.clone();
        let (tenant, by) = (tenant.to_string(), by.to_string());
        Box::new(move |m: &MemberRow| {
            let data = if name == MEMBER_ADDED {
                json!({"channel": m.channel, "user_id": m.user_id, "added_at": format_timestamp(m.added_at)})
            } else {
                json!({"channel": m.channel, "user_id": m.user_id, "removed_at": format_timestamp(now_ms())})
            };
            let channel = Channel::parse(&m.channel).expect("stored channels are valid");
            this.event(&tenant, Some(&by), &channel, name, data.to_string())
        })
    }

    /// `PUT /realtime/channels/{channel}/members/{user_id}`: the member, and
    /// whether it was added now.
    pub async fn add_member(
        &self,
        who: &Identity,
        channel: &str,
        user_id: &str,
    ) -> Result<(Member, bool), Error> {
        service_only(who)?;
        let channel = self.namespaces.resolve(channel, who)?;
        check_user(user_id)?;
        let wanted = MemberRow {
            channel: channel.as_str().to_string(),
            user_id: user_id.to_string(),
            since_id: 0,
            added_at: now_ms(),
            read_seq: 0,
            read_message_id: None,
            read_at: None,
        };
        let announce = self.announce_member(&who.tenant, &who.user_id, MEMBER_ADDED);
        match self
            .store()
            .add_member(&who.tenant, wanted, announce)
            .await?
        {
            MemberOutcome::Changed { member, events } => {
                self.committed(&events).await;
                Ok((view(&member), true))
            }
            MemberOutcome::Unchanged(Some(member)) => Ok((view(&member), false)),
            MemberOutcome::Unchanged(None) => {
                Err(Error::internal("a member neither added nor found"))
            }
        }
    }

    /// `DELETE /realtime/channels/{channel}/members/{user_id}`.
    pub async fn remove_member(
        &self,
        who: &Identity,
        channel: &str,
        user_id: &str,
    ) -> Result<(), Error> {
        service_only(who)?;
        let channel = self.namespaces.resolve(channel, who)?;
        check_user(user_id)?;
        let announce = self.announce_member(&who.tenant, &who.user_id, MEMBER_REMOVED);
        match self
            .store()
            .remove_member(&who.tenant, channel.as_str(), user_id, now_ms(), announce)
            .await?
        {
            MemberOutcome::Changed { events, .. } => {
                self.committed(&events).await;
                Ok(())
            }
            MemberOutcome::Unchanged(_) => Err(Error::new(
                ErrorCode::NotFound,
                format!("{user_id} is not a member of {channel}"),
            )),
        }
    }

    /// `GET /realtime/channels/{channel}/members`: for backends and anyone
    /// who may read the channel.
    pub async fn members(&self, who: &Identity, channel: &str) -> Result<MemberList, Error> {
        let channel = self.namespaces.resolve(channel, who)?;
        if !self.namespaces.may_subscribe(who, &channel) {
            return Err(Error::permission_denied(format!(
                "This token may not read '{channel}'"
            )));
        }
        let rows = self.store().members(&who.tenant, channel.as_str()).await?;
        Ok(MemberList {
            channel: channel.as_str().to_string(),
            members: rows.iter().map(view).collect(),
        })
    }
}
