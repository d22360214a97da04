//! Conversations (PROTOCOL §9a): direct (one per pair of users, whoever
//! opens it) and group conversations on `conversation:{id}`, their members
//! kept by the server, messages built by the server from the sender's
//! token, edits and deletes by the sender, and read positions that only
//! move forward.
//!
//! Each change is an event on the conversation's channel, committed with
//! it: `member.added` (one per member when a conversation is created),
//! `message.created`, `message.updated`, `message.deleted`, `message.read`.
//! Invariants: a direct conversation's id is a function of its pair, so
//! concurrent opens meet on one row; a retried `client_message_id` stores
//! one message; a message's place (`seq`) is its event's log id, so unread
//! counts, read positions and the log agree.

use serde_json::json;

use super::api::{
    Conversation, ConversationPage, ConversationRead, EditMessage, ListConversations, ListMessages,
    Message, MessagePage, OpenConversation, ReadConversation, Reader, SendMessage, Sender,
};
use super::memberships::MEMBER_ADDED;
use super::{Inbox, cut, page_size};
use crate::channel::Channel;
use crate::clock::{format_timestamp, now_ms};
use crate::error::{Error, ErrorCode};
use crate::identity::Identity;
use crate::names::{is_storable_text, is_valid_id, is_valid_label, is_valid_opaque_id, truncate};
use crate::storage::inbox::{
    AnnounceMessage, ConversationRow, ConversationSummary, MessageChange, MessageOutcome,
    MessageRow, ReadOutcome,
};

/// The namespace of conversations.
pub const NAMESPACE: &str = "conversation";
/// Longest message, in UTF-8 bytes.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
/// Most members a group is created with.
pub const MAX_GROUP_MEMBERS: usize = 256;
/// Longest group title, in characters.
const MAX_TITLE: usize = 200;
/// Longest `client_message_id`.
const MAX_CLIENT_ID: usize = 128;

/// The id of the direct conversation between two users of a tenant: the
/// same whoever opens it.
fn direct_id(tenant: &str, a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let name = format!("{tenant}\u{1f}{first}\u{1f}{second}");
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes());
    format!("d-{}", id.simple())
}

/// Message ids are UUIDs the server made; other text names no message
/// and never reaches storage.
fn is_message_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok()
}

fn no_message(message_id: &str) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!(
            "No message '{}' in this conversation",
            truncate(message_id, 64)
        ),
    )
}

fn channel_of(id: &str) -> Result<Channel, Error> {
    Channel::parse(&format!("{NAMESPACE}:{id}"))
}

fn not_found(id: &str) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!("No conversation '{}'", truncate(id, 64)),
    )
}

/// A message as the API shows it.
pub fn message_view(m: &MessageRow) -> Message {
    Message {
        id: m.id.clone(),
        conversation_id: m.conversation_id.clone(),
        sender: Sender {
            user_id: m.sender_id.clone(),
            name: m.sender_name.clone(),
            avatar: m.sender_avatar.clone(),
        },
        content: m.content.clone(),
        client_message_id: m.client_message_id.clone(),
        created_at: format_timestamp(m.created_at),
        edited_at: m.edited_at.map(format_timestamp),
        deleted_at: m.deleted_at.map(format_timestamp),
    }
}

fn conversation_view(s: &ConversationSummary) -> Conversation {
    let c = &s.conversation;
    Conversation {
        id: c.id.clone(),
        kind: c.kind.clone(),
        title: c.title.clone(),
        channel: format!("{NAMESPACE}:{}", c.id),
        created_by: c.created_by.clone(),
        created_at: format_timestamp(c.created_at),
        last_activity: format_timestamp(c.last_at),
        last_message: s.last_message.as_ref().map(message_view),
        unread_count: s.unread_count,
        members: s
            .members
            .iter()
            .map(|m| Reader {
                user_id: m.user_id.clone(),
                last_read_message_id: m.read_message_id.clone(),
                read_at: m.read_at.map(format_timestamp),
            })
            .collect(),
    }
}

impl Inbox {
    /// The conversation's channel, if the caller may read it (a member, or
    /// a token naming it): 400 for a bad id, 403 otherwise.
    fn readable_conversation(&self, who: &Identity, id: &str) -> Result<Channel, Error> {
        let channel = channel_of(id)?;
        if !self.namespaces.may_subscribe(who, &channel) {
            return Err(Error::permission_denied(format!(
                "Not a member of conversation '{}'",
                truncate(id, 64)
            )));
        }
        Ok(channel)
    }

    /// As [`Self::readable_conversation`], for writing (sending, reading
    /// positions): the namespace must take client writes too.
    fn writable_conversation(&self, who: &Identity, id: &str) -> Result<Channel, Error> {
        let channel = self.readable_conversation(who, id)?;
        if !self.namespaces.may_write(who, &channel) {
            return Err(Error::permission_denied(format!(
                "This token may not write to '{channel}'"
            )));
        }
        Ok(channel)
    }

    /// `POST /realtime/conversations`: the conversation, and whether it
    /// was created now (a direct one may exist already).
    pub async fn open_conversation(
        &self,
        who: &Identity,
        req: OpenConversation,
    ) -> Result<(Conversation, bool), Error> {
        let now = now_ms();
        let (row, members) = match req {
            OpenConversation::Direct { user_id } => {
                if who.is_service {
                    return Err(Error::permission_denied(
                        "A direct conversation is between two users: use a user's token",
                    ));
                }
                if !is_valid_id(&user_id) {
                    return Err(Error::invalid_message(
                        "user_id must be 1-128 characters of [A-Za-z0-9_.@-]",
                    ));
                }
                let id = direct_id(&who.tenant, &who.user_id, &user_id);
                // With oneself: one member, the user's own notes.
                let mut members = vec![who.user_id.clone(), user_id];
                members.sort();
                members.dedup();
                let row = ConversationRow {
                    tenant: who.tenant.clone(),
                    id,
                    kind: "direct".into(),
                    title: None,
                    created_by: who.user_id.clone(),
                    created_at: now,
                    last_seq: 0,
                    last_at: now,
                };
                (row, members)
            }
            OpenConversation::Group { title, members } => {
                if title.trim().is_empty() || !is_valid_label(&title, MAX_TITLE) {
                    return Err(Error::invalid_message(format!(
                        "title must be 1-{MAX_TITLE} characters, none of them control characters"
                    )));
                }
                // The list is bounded as sent, before anything sorts it:
                // with its creator a group has at most MAX_GROUP_MEMBERS.
                // A service may start a group empty and add members later.
                if members.len() >= MAX_GROUP_MEMBERS {
                    return Err(Error::invalid_message(format!(
                        "members names at most {} users besides the creator",
                        MAX_GROUP_MEMBERS - 1
                    )));
                }
                let mut all: Vec<String> = members;
                if !who.is_service {
                    all.push(who.user_id.clone());
                }
                all.sort();
                all.dedup();
                if let Some(bad) = all.iter().find(|m| !is_valid_id(m)) {
                    return Err(Error::invalid_message(format!(
                        "member '{}' is not a user id: 1-128 characters of [A-Za-z0-9_.@-]",
                        truncate(bad, 64)
                    )));
                }
                let row = ConversationRow {
                    tenant: who.tenant.clone(),
                    id: format!("g-{}", uuid::Uuid::now_v7().simple()),
                    kind: "group".into(),
                    title: Some(title),
                    created_by: who.user_id.clone(),
                    created_at: now,
                    last_seq: 0,
                    last_at: now,
                };
                (row, all)
            }
        };
        if self.namespaces.get(NAMESPACE).is_none() {
            return Err(Error::new(
                ErrorCode::ChannelNotFound,
                "This server has no conversation namespace",
            ));
        }
        let announce = self.announce_member(&who.tenant, &who.user_id, MEMBER_ADDED);
        let opened = self
            .store()
            .open_conversation(row, members, announce)
            .await?;
        self.committed(&opened.events).await;
        let summary = self
            .store()
            .conversation_summary(&who.tenant, &who.user_id, &opened.conversation.id)
            .await?
            .ok_or_else(|| not_found(&opened.conversation.id))?;
        Ok((conversation_view(&summary), opened.created))
    }

    /// `GET /realtime/conversations`: the caller's, by last activity.
    pub async fn list_conversations(
        &self,
        who: &Identity,
        query: ListConversations,
    ) -> Result<ConversationPage, Error> {
        let limit = page_size(query.limit)?;
        let before = match &query.before {
            Some(text) => Some(
                chrono::DateTime::parse_from_rfc3339(text)
                    .map_err(|_| {
                        Error::invalid_message("before must be an RFC 3339 time (from next_before)")
                    })?
                    .timestamp_millis(),
            ),
            None => None,
        };
        let mut rows = self
            .store()
            .conversations(&who.tenant, &who.user_id, before, limit + 1)
            .await?;
        let more = cut(&mut rows, limit);
        Ok(ConversationPage {
            next_before: more
                .then(|| {
                    rows.last()
                        .map(|s| format_timestamp(s.conversation.last_at))
                })
                .flatten(),
            conversations: rows.iter().map(conversation_view).collect(),
        })
    }

    /// `GET /realtime/conversations/{id}/messages`: newest first.
    pub async fn list_messages(
        &self,
        who: &Identity,
        id: &str,
        query: ListMessages,
    ) -> Result<MessagePage, Error> {
        self.readable_conversation(who, id)?;
        let limit = page_size(query.limit)?;
        if let Some(before) = &query.before
            && !is_message_id(before)
        {
            return Err(Error::invalid_message(
                "before must be a message id (from next_before)",
            ));
        }
        if self.store().conversation(&who.tenant, id).await?.is_none() {
            return Err(not_found(id));
        }
        let mut rows = self
            .store()
            .messages(&who.tenant, id, query.before, limit + 1)
            .await?;
        let more = cut(&mut rows, limit);
        Ok(MessagePage {
            next_before: more.then(|| rows.last().map(|m| m.id.clone())).flatten(),
            messages: rows.iter().map(message_view).collect(),
        })
    }

    /// The event of a message change on the conversation's channel.
    fn announce_message(
        &self,
        who: &Identity,
        channel: &Channel,
        name: &'static str,
    ) -> AnnounceMessage {
        let this = self.clone();
        let (tenant, user, channel) = (who.tenant.clone(), who.user_id.clone(), channel.clone());
        Box::new(move |m: &MessageRow| {
            let data = serde_json::to_string(&message_view(m)).expect("a message serializes");
            this.event(&tenant, Some(&user), &channel, name, data)
        })
    }

    /// `POST /realtime/conversations/{id}/messages`: the message, and
    /// whether it was stored now (a retried `client_message_id` was not).
    pub async fn send_message(
        &self,
        who: &Identity,
        id: &str,
        req: SendMessage,
    ) -> Result<(Message, bool), Error> {
        let channel = self.writable_conversation(who, id)?;
        check_content(&req.content)?;
        if let Some(client_id) = &req.client_message_id
            && !is_valid_opaque_id(client_id, MAX_CLIENT_ID)
        {
            return Err(Error::invalid_message(format!(
                "client_message_id must be 1-{MAX_CLIENT_ID} characters, none of them control characters"
            )));
        }
        let message = MessageRow {
            conversation_id: id.to_string(),
            id: uuid::Uuid::now_v7().to_string(),
            seq: 0,
            client_message_id: req.client_message_id,
            sender_id: who.user_id.clone(),
            sender_name: who.name.clone(),
            sender_avatar: who.avatar.clone(),
            content: req.content,
            created_at: now_ms(),
            edited_at: None,
            deleted_at: None,
        };
        let announce = self.announce_message(who, &channel, "message.created");
        match self
            .store()
            .send_message(&who.tenant, message, announce)
            .await?
        {
            MessageOutcome::Stored { message, events } => {
                self.committed(&events).await;
                Ok((message_view(&message), true))
            }
            MessageOutcome::Replayed(message) => Ok((message_view(&message), false)),
            MessageOutcome::NotFound | MessageOutcome::NotSender => Err(not_found(id)),
        }
    }

    /// `PATCH` (`Some` content) or `DELETE` (`None`) a message of one's own.
    pub async fn change_message(
        &self,
        who: &Identity,
        id: &str,
        message_id: &str,
        edit: Option<EditMessage>,
    ) -> Result<Message, Error> {
        let channel = self.writable_conversation(who, id)?;
        if !is_message_id(message_id) {
            return Err(no_message(message_id));
        }
        if let Some(edit) = &edit {
            check_content(&edit.content)?;
        }
        let name = if edit.is_some() {
            "message.updated"
        } else {
            "message.deleted"
        };
        let announce = self.announce_message(who, &channel, name);
        match self
            .store()
            .change_message(
                &who.tenant,
                MessageChange {
                    conversation_id: id.to_string(),
                    message_id: message_id.to_string(),
                    sender_id: who.user_id.clone(),
                    content: edit.map(|e| e.content),
                    at_ms: now_ms(),
                },
                announce,
            )
            .await?
        {
            MessageOutcome::Stored { message, events } => {
                self.committed(&events).await;
                Ok(message_view(&message))
            }
            // A retried delete.
            MessageOutcome::Replayed(message) => Ok(message_view(&message)),
            MessageOutcome::NotSender => Err(Error::permission_denied(
                "Only its sender may edit or delete a message",
            )),
            MessageOutcome::NotFound => Err(no_message(message_id)),
        }
    }

    /// `POST /realtime/conversations/{id}/read`: moves the caller's read
    /// position forward (never back) and appends `message.read`.
    pub async fn read_conversation(
        &self,
        who: &Identity,
        id: &str,
        req: ReadConversation,
    ) -> Result<ConversationRead, Error> {
        let channel = self.writable_conversation(who, id)?;
        if !who.is_member(channel.as_str()) {
            return Err(Error::permission_denied(
                "Only members of a conversation keep a read position",
            ));
        }
        if !is_message_id(&req.message_id) {
            return Err(no_message(&req.message_id));
        }
        let this = self.clone();
        let (tenant, user, message_id) = (
            who.tenant.clone(),
            who.user_id.clone(),
            req.message_id.clone(),
        );
        let conversation_id = id.to_string();
        let announce: crate::storage::inbox::Announce = Box::new(move |unread_count, at| {
            let data = json!({
                "conversation_id": conversation_id,
                "user_id": user,
                "message_id": message_id,
                "read_at": format_timestamp(at),
                "unread_count": unread_count,
            });
            this.event(
                &tenant,
                Some(&user),
                &channel,
                "message.read",
                data.to_string(),
            )
        });
        let outcome = self
            .store()
            .read_conversation(
                &who.tenant,
                id,
                &who.user_id,
                &req.message_id,
                now_ms(),
                announce,
            )
            .await?;
        match outcome {
            ReadOutcome::Read {
                unread_count,
                read_at,
                events,
            } => {
                self.committed(&events).await;
                Ok(ConversationRead {
                    conversation_id: id.to_string(),
                    message_id: Some(req.message_id),
                    read_at: Some(format_timestamp(read_at)),
                    unread_count,
                })
            }
            ReadOutcome::Unchanged {
                unread_count,
                read_at,
            } => {
                // Already at or past it: the position stays where it is.
                let position = self
                    .store()
                    .members(&who.tenant, &format!("{NAMESPACE}:{id}"))
                    .await?
                    .into_iter()
                    .find(|m| m.user_id == who.user_id)
                    .and_then(|m| m.read_message_id);
                Ok(ConversationRead {
                    conversation_id: id.to_string(),
                    message_id: position,
                    read_at: read_at.map(format_timestamp),
                    unread_count,
                })
            }
            ReadOutcome::NotFound => Err(no_message(&req.message_id)),
        }
    }
}

fn check_content(content: &str) -> Result<(), Error> {
    if content.is_empty() || content.len() > MAX_CONTENT_BYTES {
        return Err(Error::new(
            if content.is_empty() {
                ErrorCode::InvalidMessage
            } else {
                ErrorCode::PayloadTooLarge
            },
            format!("content must be 1-{MAX_CONTENT_BYTES} bytes"),
        )
        .with_details(json!({ "limit": MAX_CONTENT_BYTES })));
    }
    if !is_storable_text(content) {
        return Err(Error::invalid_message(
            "content may not contain NUL characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_has_one_direct_conversation() {
        assert_eq!(
            direct_id("t", "alice", "bob"),
            direct_id("t", "bob", "alice")
        );
        assert_ne!(
            direct_id("t", "alice", "bob"),
            direct_id("u", "alice", "bob")
        );
        assert_ne!(
            direct_id("t", "alice", "bob"),
            direct_id("t", "alice", "bo")
        );
        let id = direct_id("t", "alice", "bob");
        assert!(
            Channel::parse(&format!("conversation:{id}")).is_ok(),
            "{id}"
        );
    }
}
