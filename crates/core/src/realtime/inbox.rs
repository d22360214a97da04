//! The inbox's commands (PROTOCOL §9, §9a) as every transport calls them:
//! each change spends one client action first (a message is a client
//! action, §12), reads are free like every other read.

use super::{Charged, Made, Realtime};
use crate::error::Error;
use crate::identity::Identity;
use crate::inbox::api::{
    Conversation, ConversationPage, ConversationRead, CreateNotification, EditMessage,
    ListConversations, ListMessages, ListNotifications, Member, MemberList, Message, MessagePage,
    Notification, NotificationPage, NotificationsRead, OpenConversation, ReadConversation,
    SendMessage,
};
use crate::limits::Rate;

impl Realtime {
    fn act(&self, who: &Identity) -> Result<Option<crate::error::RateInfo>, Error> {
        self.limits.check(who, Rate::Action)
    }

    /// `POST /realtime/notifications` (service tokens).
    pub async fn create_notification(
        &self,
        who: &Identity,
        request: CreateNotification,
    ) -> Result<Charged<Notification>, Error> {
        let rate = self.act(who)?;
        let value = self.inbox.create_notification(who, request).await?;
        Ok(Charged { value, rate })
    }

    /// `GET /realtime/notifications`.
    pub async fn notifications(
        &self,
        who: &Identity,
        query: ListNotifications,
    ) -> Result<NotificationPage, Error> {
        self.inbox.list_notifications(who, query).await
    }

    /// `GET /realtime/notifications/unread-count`.
    pub async fn unread_notifications(&self, who: &Identity) -> Result<u64, Error> {
        self.inbox.unread_notifications(who).await
    }

    /// `POST /realtime/notifications/{id}/read` (`Some`) and
    /// `POST /realtime/notifications/read-all` (`None`).
    pub async fn read_notifications(
        &self,
        who: &Identity,
        id: Option<&str>,
    ) -> Result<Charged<NotificationsRead>, Error> {
        let rate = self.act(who)?;
        let value = self.inbox.read_notifications(who, id).await?;
        Ok(Charged { value, rate })
    }

    /// `PUT /realtime/channels/{channel}/members/{user_id}` (service tokens).
    pub async fn add_member(
        &self,
        who: &Identity,
        channel: &str,
        user_id: &str,
    ) -> Result<Charged<Made<Member>>, Error> {
        let rate = self.act(who)?;
        let (value, created) = self.inbox.add_member(who, channel, user_id).await?;
        Ok(Charged {
            value: Made { value, created },
            rate,
        })
    }

    /// `DELETE /realtime/channels/{channel}/members/{user_id}` (service
    /// tokens).
    pub async fn remove_member(
        &self,
        who: &Identity,
        channel: &str,
        user_id: &str,
    ) -> Result<Charged<()>, Error> {
        let rate = self.act(who)?;
        self.inbox.remove_member(who, channel, user_id).await?;
        Ok(Charged { value: (), rate })
    }

    /// `GET /realtime/channels/{channel}/members`.
    pub async fn members(&self, who: &Identity, channel: &str) -> Result<MemberList, Error> {
        self.inbox.members(who, channel).await
    }

    /// `POST /realtime/conversations`.
    pub async fn open_conversation(
        &self,
        who: &Identity,
        request: OpenConversation,
    ) -> Result<Charged<Made<Conversation>>, Error> {
        let rate = self.act(who)?;
        let (value, created) = self.inbox.open_conversation(who, request).await?;
        Ok(Charged {
            value: Made { value, created },
            rate,
        })
    }

    /// `GET /realtime/conversations`.
    pub async fn conversations(
        &self,
        who: &Identity,
        query: ListConversations,
    ) -> Result<ConversationPage, Error> {
        self.inbox.list_conversations(who, query).await
    }

    /// `GET /realtime/conversations/{id}/messages`.
    pub async fn messages(
        &self,
        who: &Identity,
        conversation_id: &str,
        query: ListMessages,
    ) -> Result<MessagePage, Error> {
        self.inbox.list_messages(who, conversation_id, query).await
    }

    /// `POST /realtime/conversations/{id}/messages`.
    pub async fn send_message(
        &self,
        who: &Identity,
        conversation_id: &str,
        request: SendMessage,
    ) -> Result<Charged<Made<Message>>, Error> {
        let rate = self.act(who)?;
        self.presence.acted(who).await?;
        let (value, created) = self
            .inbox
            .send_message(who, conversation_id, request)
            .await?;
        Ok(Charged {
            value: Made { value, created },
            rate,
        })
    }

    /// `PATCH` (`Some`) or `DELETE` (`None`)
    /// `/realtime/conversations/{id}/messages/{message_id}`.
    pub async fn change_message(
        &self,
        who: &Identity,
        conversation_id: &str,
        message_id: &str,
        edit: Option<EditMessage>,
    ) -> Result<Charged<Message>, Error> {
        let rate = self.act(who)?;
        let value = self
            .inbox
            .change_message(who, conversation_id, message_id, edit)
            .await?;
        Ok(Charged { value, rate })
    }

    /// `POST /realtime/conversations/{id}/read`.
    pub async fn read_conversation(
        &self,
        who: &Identity,
        conversation_id: &str,
        request: ReadConversation,
    ) -> Result<Charged<ConversationRead>, Error> {
        let rate = self.act(who)?;
        let value = self
            .inbox
            .read_conversation(who, conversation_id, request)
            .await?;
        Ok(Charged { value, rate })
    }
}
