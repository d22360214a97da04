//! [`Store`]: the core's storage traits, implemented once for any
//! [`Backend`] by running the rules in its transactions. Arguments are
//! copied into each piece of work, which a backend may run on a thread of
//! its own.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use switchyard_core::event::Event;
use switchyard_core::storage::edit::{
    ContentChange, ContentSet, DocKey, DocumentRow, EditStore, LockAttempt, LockRow,
    OperationBatch, SessionRow, Submission,
};
use switchyard_core::storage::inbox::{
    Announce, AnnounceMember, AnnounceMessage, ConversationRow, ConversationSummary, InboxStore,
    MemberOutcome, MemberRow, MessageChange, MessageOutcome, MessageRow, NotificationQuery, Opened,
    ReadOutcome,
};
use switchyard_core::storage::notification::NotificationRow;
use switchyard_core::storage::presence::{
    ActiveUser, PresenceStore, SessionWrite, SessionWritten, StatusChange, TypingKey, UserKey,
    UserPresence, UserTouch, Viewing,
};
use switchyard_core::storage::{
    AppendOutcome, AppendRequest, CursorExpired, Result, Storage, StorageFault,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, Durability};
use super::{edit, inbox, log, presence, sessions};

/// The storage of one backend.
pub struct Store<B> {
    backend: B,
}

impl<B: Backend> Store<B> {
    pub fn new(backend: B) -> Self {
        Self { backend }
    }
}

/// Times a transaction that lost to a concurrent one is run in all.
const CONFLICT_ATTEMPTS: usize = 4;

/// Runs `work` again while it fails with a conflict (rolled back by a
/// deadlock or a serialization failure), a few times.
async fn retry_conflicts<R, F: Future<Output = Result<R>>>(work: impl Fn() -> F) -> Result<R> {
    let mut attempt = 1;
    loop {
        match work().await {
            Err(e) if e.fault == StorageFault::Conflict && attempt < CONFLICT_ATTEMPTS => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "transaction conflict; running it again");
            }
            done => return done,
        }
    }
}

fn names(channels: &[String]) -> Vec<&str> {
    channels.iter().map(String::as_str).collect()
}

#[async_trait]
impl<B: Backend> Storage for Store<B> {
    fn backend(&self) -> &'static str {
        self.backend.name()
    }

    async fn migrate(&self) -> Result<()> {
        self.backend.migrate().await
    }

    async fn append(&self, batch: Arc<[AppendRequest]>, now_ms: i64) -> Result<Vec<AppendOutcome>> {
        // Durable: an acknowledged publish survives a crash of the machine.
        self.backend
            .write(Durability::Durable, move |tx| {
                Box::pin(async move { log::append_batch(tx, &batch, now_ms).await })
            })
            .await
    }

    async fn read(
        &self,
        tenant: &str,
        channels: &[String],
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>> {
        let (tenant, channels) = (tenant.to_string(), channels.to_vec());
        self.backend
            .read(move |tx| {
                Box::pin(
                    async move { log::read(tx, &tenant, &names(&channels), after, limit).await },
                )
            })
            .await
    }

    async fn read_range(&self, after: u64, through: u64) -> Result<Vec<Arc<Event>>> {
        self.backend
            .read(move |tx| Box::pin(async move { log::read_range(tx, after, through).await }))
            .await
    }

    async fn read_since(
        &self,
        tenant: &str,
        channels: &[String],
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>> {
        let (tenant, channels) = (tenant.to_string(), channels.to_vec());
        self.backend
            .read(move |tx| {
                Box::pin(async move {
                    log::read_since(tx, &tenant, &names(&channels), since_ms, limit).await
                })
            })
            .await
    }

    async fn head(&self) -> Result<u64> {
        self.backend
            .read(|tx| Box::pin(async move { log::head(tx).await }))
            .await
    }

    async fn expired_cursor(
        &self,
        tenant: &str,
        channels: &[String],
        cursor: u64,
    ) -> Result<Option<CursorExpired>> {
        let (tenant, channels) = (tenant.to_string(), channels.to_vec());
        self.backend
            .read(move |tx| {
                Box::pin(async move {
                    log::expired_cursor(tx, &tenant, &names(&channels), cursor).await
                })
            })
            .await
    }

    async fn prune(&self, now_ms: i64) -> Result<u64> {
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { log::prune(tx, now_ms).await })
            })
            .await
    }

    async fn listen(&self, heads: mpsc::Sender<u64>, shutdown: CancellationToken) {
        self.backend.listen(heads, shutdown).await
    }

    async fn ping(&self) -> Result<()> {
        self.backend
            .read(|tx| {
                Box::pin(async move {
                    tx.query_one(&super::sql::PING, &[]).await?;
                    Ok(())
                })
            })
            .await
    }

    async fn close(&self) {
        self.backend.close().await
    }
}

#[async_trait]
impl<B: Backend> PresenceStore for Store<B> {
    async fn heartbeat_node(&self, node_id: &str, expires_at: i64) -> Result<()> {
        let node_id = node_id.to_string();
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { sessions::heartbeat_node(tx, &node_id, expires_at).await })
            })
            .await
    }

    async fn touch_user(
        &self,
        user: &UserKey,
        name: Option<&str>,
        avatar: Option<&str>,
        channels: Option<&str>,
        activity_at: Option<i64>,
        now: i64,
    ) -> Result<()> {
        let user = user.clone();
        let touch = UserTouch {
            name: name.map(str::to_string),
            avatar: avatar.map(str::to_string),
            channels: channels.map(str::to_string),
            activity_at,
        };
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { presence::touch_user(tx, &user, &touch, now).await })
            })
            .await
    }

    async fn set_status(
        &self,
        user: &UserKey,
        chosen: Option<&str>,
        message: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let user = user.clone();
        let (chosen, message) = (chosen.map(str::to_string), message.map(str::to_string));
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move {
                    presence::set_status(tx, &user, chosen.as_deref(), message.as_deref(), now)
                        .await
                })
            })
            .await
    }

    async fn set_viewing(
        &self,
        user: &UserKey,
        viewing: Option<(&str, &str)>,
        now: i64,
    ) -> Result<Option<Viewing>> {
        let user = user.clone();
        let viewing = viewing.map(|(t, i)| (t.to_string(), i.to_string()));
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move {
                    let viewing = viewing.as_ref().map(|(t, i)| (t.as_str(), i.as_str()));
                    presence::set_viewing(tx, &user, viewing, now).await
                })
            })
            .await
    }

    async fn user_presence(&self, user: &UserKey, now: i64) -> Result<Option<UserPresence>> {
        let user = user.clone();
        self.backend
            .read(move |tx| Box::pin(async move { presence::user_presence(tx, &user, now).await }))
            .await
    }

    async fn write_sessions(
        &self,
        node_id: &str,
        heartbeat: Option<i64>,
        writes: Arc<[SessionWrite]>,
        now: i64,
    ) -> Result<Vec<SessionWritten>> {
        // Batches of nodes sharing users may deadlock on their rows.
        retry_conflicts(|| {
            let (node_id, writes) = (node_id.to_string(), writes.clone());
            self.backend.write(Durability::Normal, move |tx| {
                Box::pin(async move {
                    sessions::write_sessions(tx, &node_id, heartbeat, &writes, now).await
                })
            })
        })
        .await
    }

    async fn announce(&self, changes: Vec<StatusChange>, now: i64) -> Result<Vec<bool>> {
        let changes: Arc<[StatusChange]> = changes.into();
        retry_conflicts(|| {
            let changes = changes.clone();
            self.backend.write(Durability::Normal, move |tx| {
                Box::pin(async move { sessions::announce_all(tx, &changes, now).await })
            })
        })
        .await
    }

    async fn follow(
        &self,
        user: &UserKey,
        session_id: &str,
        channels: &[String],
        now: i64,
    ) -> Result<Vec<String>> {
        let (user, session_id, channels) =
            (user.clone(), session_id.to_string(), channels.to_vec());
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(
                    async move { presence::follow(tx, &user, &session_id, &channels, now).await },
                )
            })
            .await
    }

    async fn leave_rooms(&self, now: i64, quiet_since: i64) -> Result<Vec<(UserKey, String)>> {
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { presence::leave_rooms(tx, now, quiet_since).await })
            })
            .await
    }

    async fn sweep_sessions(&self, now: i64) -> Result<Vec<UserKey>> {
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { presence::sweep_sessions(tx, now).await })
            })
            .await
    }

    async fn stale_announcements(&self, now: i64, idle_before: i64) -> Result<Vec<UserKey>> {
        self.backend
            .read(move |tx| {
                Box::pin(async move { presence::stale_announcements(tx, now, idle_before).await })
            })
            .await
    }

    async fn typing_on(
        &self,
        key: &TypingKey,
        now: i64,
        expires_at: i64,
        coalesce_before: i64,
    ) -> Result<bool> {
        let key = key.clone();
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move {
                    presence::typing_on(tx, &key, now, expires_at, coalesce_before).await
                })
            })
            .await
    }

    async fn typing_off(&self, key: &TypingKey) -> Result<bool> {
        let key = key.clone();
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { presence::typing_off(tx, &key).await })
            })
            .await
    }

    async fn expired_typing(&self, now: i64) -> Result<Vec<TypingKey>> {
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { presence::expired_typing(tx, now).await })
            })
            .await
    }

    async fn resource_users(
        &self,
        tenant: &str,
        resource_type: &str,
        resource_id: &str,
        now: i64,
    ) -> Result<Vec<ActiveUser>> {
        let (tenant, resource_type, resource_id) = (
            tenant.to_string(),
            resource_type.to_string(),
            resource_id.to_string(),
        );
        self.backend
            .read(move |tx| {
                Box::pin(async move {
                    presence::resource_users(tx, &tenant, &resource_type, &resource_id, now).await
                })
            })
            .await
    }
}

#[async_trait]
impl<B: Backend> EditStore for Store<B> {
    async fn create_session(
        &self,
        session: &SessionRow,
        initial_content: &str,
    ) -> Result<DocumentRow> {
        let (session, initial) = (session.clone(), initial_content.to_string());
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { edit::create_session(tx, &session, &initial).await })
            })
            .await
    }

    async fn set_content(&self, change: ContentChange) -> Result<ContentSet> {
        // Durable: the new revision and its event survive a crash.
        self.backend
            .write(Durability::Durable, move |tx| {
                Box::pin(async move { edit::set_content(tx, change).await })
            })
            .await
    }

    async fn session(&self, tenant: &str, session_id: &str) -> Result<Option<SessionRow>> {
        let (tenant, session_id) = (tenant.to_string(), session_id.to_string());
        self.backend
            .read(move |tx| {
                Box::pin(async move { edit::find_session(tx, &tenant, &session_id).await })
            })
            .await
    }

    async fn end_session(&self, session_id: &str, now_ms: i64) -> Result<()> {
        let session_id = session_id.to_string();
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { edit::end_session(tx, &session_id, now_ms).await })
            })
            .await
    }

    async fn active_editors(
        &self,
        key: &DocKey,
        since_ms: i64,
    ) -> Result<Vec<(String, Option<String>)>> {
        let key = key.clone();
        self.backend
            .read(move |tx| Box::pin(async move { edit::active_editors(tx, &key, since_ms).await }))
            .await
    }

    async fn document(&self, key: &DocKey) -> Result<Option<DocumentRow>> {
        let key = key.clone();
        self.backend
            .read(move |tx| Box::pin(async move { edit::find_document(tx, &key).await }))
            .await
    }

    async fn submit_operations(&self, batch: OperationBatch) -> Result<Submission> {
        // Durable: an acknowledged operation and its event survive a crash.
        self.backend
            .write(Durability::Durable, move |tx| {
                Box::pin(async move { edit::submit(tx, &batch).await })
            })
            .await
    }

    async fn save_document(
        &self,
        key: &DocKey,
        session_id: &str,
        now_ms: i64,
    ) -> Result<Option<DocumentRow>> {
        let (key, session_id) = (key.clone(), session_id.to_string());
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { edit::save_document(tx, &key, &session_id, now_ms).await })
            })
            .await
    }

    async fn current_lock(&self, key: &DocKey, now_ms: i64) -> Result<Option<LockRow>> {
        let key = key.clone();
        self.backend
            .read(move |tx| Box::pin(async move { edit::live_lock(tx, &key, now_ms).await }))
            .await
    }

    async fn find_lock(&self, tenant: &str, lock_id: &str) -> Result<Option<LockRow>> {
        let (tenant, lock_id) = (tenant.to_string(), lock_id.to_string());
        self.backend
            .read(move |tx| Box::pin(async move { edit::find_lock(tx, &tenant, &lock_id).await }))
            .await
    }

    async fn acquire_lock(
        &self,
        lock: &LockRow,
        now_ms: i64,
    ) -> Result<(LockAttempt, Vec<LockRow>)> {
        let lock = lock.clone();
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { edit::acquire_lock(tx, &lock, now_ms).await })
            })
            .await
    }

    async fn renew_lock(
        &self,
        tenant: &str,
        lock_id: &str,
        user_id: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Option<LockRow>> {
        let (tenant, lock_id, user_id) =
            (tenant.to_string(), lock_id.to_string(), user_id.to_string());
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move {
                    edit::renew_lock(tx, &tenant, &lock_id, &user_id, ttl_ms, now_ms).await
                })
            })
            .await
    }

    async fn release_lock(
        &self,
        tenant: &str,
        lock_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<Option<LockRow>> {
        let (tenant, lock_id, user_id) =
            (tenant.to_string(), lock_id.to_string(), user_id.to_string());
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move {
                    edit::release_lock(tx, &tenant, &lock_id, &user_id, now_ms).await
                })
            })
            .await
    }

    async fn expire_locks(&self, now_ms: i64) -> Result<Vec<LockRow>> {
        self.backend
            .write(Durability::Normal, move |tx| {
                Box::pin(async move { edit::expire_locks(tx, now_ms).await })
            })
            .await
    }
}

#[async_trait]
impl<B: Backend> InboxStore for Store<B> {
    async fn notifications(
        &self,
        tenant: &str,
        user_id: &str,
        query: NotificationQuery,
        now_ms: i64,
    ) -> Result<Vec<NotificationRow>> {
        let (tenant, user_id) = (tenant.to_string(), user_id.to_string());
        self.backend
            .read(move |tx| {
                Box::pin(async move {
                    inbox::notifications(tx, &tenant, &user_id, &query, now_ms).await
                })
            })
            .await
    }

    async fn unread_notifications(&self, tenant: &str, user_id: &str, now_ms: i64) -> Result<u64> {
        let (tenant, user_id) = (tenant.to_string(), user_id.to_string());
        self.backend
            .read(move |tx| {
                Box::pin(
                    async move { inbox::unread_notifications(tx, &tenant, &user_id, now_ms).await },
                )
            })
            .await
    }

    async fn read_notifications(
        &self,
        tenant: &str,
        user_id: &str,
        id: Option<String>,
        now_ms: i64,
        announce: Announce,
    ) -> Result<ReadOutcome> {
        let (tenant, user_id) = (tenant.to_string(), user_id.to_string());
        // Durable: it announces a change other devices act on.
        self.backend
            .write(Durability::Durable, move |tx| {
                Box::pin(async move {
                    inbox::read_notifications(
                        tx,
                        &tenant,
                        &user_id,
                        id.as_deref(),
                        now_ms,
                        announce,
                    )
                    .await
                })
            })
            .await
    }

    async fn add_member(
        &self,
        tenant: &str,
        member: MemberRow,
        announce: AnnounceMember,
    ) -> Result<MemberOutcome> {
        let tenant = tenant.to_string();
        self.backend
            .write(Durability::Durable, move |tx| {
                Box::pin(async move { inbox::add_member(tx, &tenant, member, announce).await })
            })
            .await
    }

    async fn remove_member(
        &self,
        tenant: &str,
        channel: &str,
        user_id: &str,
        now_ms: i64,
        announce: AnnounceMember,
    ) -> Result<MemberOutcome> {
        let (tenant, channel, user_id) =
            (tenant.to_string(), channel.to_string(), user_id.to_string());
        self.backend
            .write(Durability::Durable, move |tx| {
                Box::pin(async move {
                    inbox::remove_member(tx, &tenant, &channel, &user_id, now_ms, announce).await
                })
            })
            .await
    }

    async fn members(&self, tenant: &str, channel: &str) -> Result<Vec<MemberRow>> {
        let (tenant, channel) = (tenant.to_string(), channel.to_string());
        self.backend
            .read(move |tx| Box::pin(async move { inbox::members(tx, &tenant, &channel).await }))
            .await
    }

    async fn memberships(&self, tenant: &str, user_id: &str) -> Result<Vec<MemberRow>> {
        let (tenant, user_id) = (tenant.to_string(), user_id.to_string());
        self.backend
            .read(move |tx| {
                Box::pin(async move { inbox::memberships(tx, &tenant, &user_id).await })
            })
            .await
    }

    async fn open_conversation(
        &self,
        conversation: ConversationRow,
        members: Vec<String>,
        announce: AnnounceMember,
    ) -> Result<Opened> {
        self.backend
            .write(Durability::Durable, move |tx| {
                Box::pin(async move {
                    inbox::open_conversation(tx, conversation, members, announce).await
                })
            })
            .await
    }

    async fn conversation(&self, tenant: &str, id: &str) -> Result<Option<ConversationRow>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.backend
            .read(move |tx| {
                Box::pin(async move { inbox::find_conversation(tx, &tenant, &id, false).await })
            })
            .await
    }

    async fn conversations(
        &self,
        tenant: &str,
        user_id: &str,
        before_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>> {
        let (tenant, user_id) = (tenant.to_string(), user_id.to_string());
        self.backend
            .read(move |tx| {
                Box::pin(async move {
                    inbox::conversations(tx, &tenant, &user_id, before_ms, limit).await
                })
            })
            .await
    }

    async fn conversation_summary(
        &self,
        tenant: &str,
        user_id: &str,
        id: &str,
    ) -> Result<Option<ConversationSummary>> {
        let (tenant, user_id, id) = (tenant.to_string(), user_id.to_string(), id.to_string());
        self.backend
            .read(move |tx| {
                Box::pin(async move {
                    match inbox::find_conversation(tx, &tenant, &id, false).await? {
                        Some(c) => Ok(Some(inbox::summarize(tx, &tenant, &user_id, c).await?)),
                        None => Ok(None),
                    }
                })
            })
            .await
    }

    async fn messages(
        &self,
        tenant: &str,
        conversation_id: &str,
        before: Option<String>,
        limit: usize,
    ) -> Result<Vec<MessageRow>> {
        let (tenant, conversation_id) = (tenant.to_string(), conversation_id.to_string());
        self.backend
            .read(move |tx| {
                Box::pin(async move {
                    inbox::messages(tx, &tenant, &conversation_id, before.as_deref(), limit).await
                })
            })
            .await
    }

    async fn send_message(
        &self,
        tenant: &str,
        message: MessageRow,
        announce: AnnounceMessage,
    ) -> Result<MessageOutcome> {
        let tenant = tenant.to_string();
        self.backend
            .write(Durability::Durable, move |tx| {
                Box::pin(async move { inbox::send_message(tx, &tenant, message, announce).await })
            })
            .await
    }

    async fn change_message(
        &self,
        tenant: &str,
        change: MessageChange,
        announce: AnnounceMessage,
    ) -> Result<MessageOutcome> {
        let tenant = tenant.to_string();
        self.backend
            .write(Durability::Durable, move |tx| {
                Box::pin(async move { inbox::change_message(tx, &tenant, change, announce).await })
            })
            .await
    }

    async fn read_conversation(
        &self,
        tenant: &str,
        conversation_id: &str,
        user_id: &str,
        message_id: &str,
        now_ms: i64,
        announce: Announce,
    ) -> Result<ReadOutcome> {
        let (tenant, conversation_id, user_id, message_id) = (
            tenant.to_string(),
            conversation_id.to_string(),
            user_id.to_string(),
            message_id.to_string(),
        );
        self.backend
            .write(Durability::Durable, move |tx| {
                Box::pin(async move {
                    inbox::read_conversation(
                        tx,
                        &tenant,
                        &conversation_id,
                        &user_id,
                        &message_id,
                        now_ms,
                        announce,
                    )
                    .await
                })
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use switchyard_core::storage::StorageError;

    use super::*;

    /// Runs `retry_conflicts` over work failing with `faults` in turn, then
    /// succeeding; answers the outcome and the attempts made.
    async fn attempts(faults: &[StorageFault]) -> (Result<()>, usize) {
        let made = AtomicUsize::new(0);
        let outcome = retry_conflicts(|| {
            let n = made.fetch_add(1, Ordering::SeqCst);
            let fault = faults.get(n).copied();
            async move {
                match fault {
                    Some(f) => Err(StorageError::new(f, "refused")),
                    None => Ok(()),
                }
            }
        })
        .await;
        (outcome, made.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn conflicts_are_run_again_a_few_times_and_nothing_else_is() {
        use StorageFault::{Conflict, Unavailable};
        let (outcome, made) = attempts(&[Conflict, Conflict]).await;
        assert!(outcome.is_ok());
        assert_eq!(made, 3);
        let (outcome, made) = attempts(&[Conflict; 10]).await;
        assert_eq!(outcome.unwrap_err().fault, Conflict);
        assert_eq!(made, CONFLICT_ATTEMPTS);
        let (outcome, made) = attempts(&[Unavailable, Conflict]).await;
        assert_eq!(outcome.unwrap_err().fault, Unavailable);
        assert_eq!(made, 1);
    }
}
