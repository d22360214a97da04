//! [`Realtime`]: the whole core as one value, and the commands every
//! transport calls.
//!
//! It starts the log over a storage, the background work (retention,
//! presence sweeps, lock expiry, limiter eviction) and stops it all in
//! order. Each client command (publish, presence, typing, editing, locks)
//! is a method here that spends the caller's §12 rate first and then runs
//! the command, so HTTP and WebSocket charge and answer alike; HTTP adds
//! the returned [`RateInfo`] to its headers.

mod inbox;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::channel::Namespaces;
use crate::edit::{
    DocumentRequest, DocumentResponse, Editing, LockRequest, LockResponse, RenewLockRequest,
    SaveResponse, SetContentRequest, StartSessionRequest, StartSessionResponse,
    SubmitOperationRequest, SubmitOperationResponse, run_lock_expiry,
};
use crate::error::{Error, RateInfo};
use crate::identity::Identity;
use crate::inbox::Inbox;
use crate::limits::{Limits, LimitsConfig, Rate};
use crate::log::hub::Retention;
use crate::log::{EventLog, pruner};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::presence::requests::{StatusRequest, TypingRequest, ViewingRequest};
use crate::publish::{PublishRequest, Published, Publisher, Via, Writer};
use crate::session::Sessions;
use crate::storage::Storage;

/// The core's settings, already checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub namespaces: Namespaces,
    pub limits: LimitsConfig,
    /// Whether §12's limits apply at all (off for load tests).
    pub rate_limits: bool,
    /// How long a user stays online after their last poll or closed stream.
    pub presence_ttl: Duration,
    /// Idle time before an online user shows as `away`.
    pub presence_away: Duration,
    /// Idle time before an edit session expires.
    pub edit_session_idle: Duration,
    /// Time between retention passes.
    pub prune_interval: Duration,
    /// Most bytes of recent events the fan-out keeps in memory.
    pub hub_memory: usize,
    /// How long a notification is kept.
    pub notification_retention: Duration,
}

/// A command's answer with where the caller stands against the limit it
/// spent (`None` when not limited).
#[derive(Debug)]
pub struct Charged<T> {
    pub value: T,
    pub rate: Option<RateInfo>,
}

/// A change's answer and whether it made something new (`201` over HTTP)
/// or found it made already (a retry, an existing direct conversation).
#[derive(Debug)]
pub struct Made<T> {
    pub value: T,
    pub created: bool,
}

/// The core: every component, shared.
pub struct Realtime {
    pub auth: Authenticator,
    pub namespaces: Arc<Namespaces>,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub log: Arc<EventLog>,
    pub presence: Arc<Presence>,
    pub editing: Editing,
    pub sessions: Sessions,
    pub publisher: Publisher,
    pub inbox: Inbox,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
    /// The background tasks, awaited by [`Realtime::stop`].
    background: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Realtime {
    /// Starts the log over `storage` (migrated) and the background work;
    /// everything stops at `shutdown`, then [`Realtime::stop`].
    pub async fn start(
        storage: Arc<dyn Storage>,
        settings: Settings,
        auth: Authenticator,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let metrics = Arc::new(Metrics::default());
        let namespaces = Arc::new(settings.namespaces);
        let limits = Arc::new(Limits::new(settings.limits, settings.rate_limits));
        let retention = Retention {
            max_bytes: settings.hub_memory,
            ..Retention::default()
        };
        let log = EventLog::start(
            storage.clone(),
            metrics.clone(),
            retention,
            shutdown.clone(),
        )
        .await?;
        let presence = Arc::new(Presence::new(
            storage.clone(),
            log.clone(),
            namespaces.clone(),
            settings.presence_ttl,
            settings.presence_away,
        ));
        let editing = Editing::new(log.clone(), namespaces.clone(), settings.edit_session_idle);
        let inbox = Inbox::new(
            log.clone(),
            namespaces.clone(),
            settings.notification_retention,
        );
        let background = vec![
            tokio::spawn(pruner::run(
                storage,
                settings.prune_interval,
                shutdown.clone(),
            )),
            tokio::spawn(evict_idle_limits(limits.clone(), shutdown.clone())),
            tokio::spawn(presence.clone().run(shutdown.clone())),
            tokio::spawn(run_lock_expiry(editing.clone(), shutdown.clone())),
        ];
        Ok(Arc::new(Self {
            sessions: Sessions::new(
                log.clone(),
                namespaces.clone(),
                limits.clone(),
                presence.clone(),
                metrics.clone(),
                inbox.memberships.clone(),
                shutdown.clone(),
            ),
            publisher: Publisher::new(
                log.clone(),
                namespaces.clone(),
                limits.clone(),
                presence.clone(),
                inbox.clone(),
            ),
            inbox,
            auth,
            namespaces,
            limits,
            metrics,
            log,
            presence,
            editing,
            shutdown,
            background: std::sync::Mutex::new(background),
        }))
    }

    /// After `shutdown` and once no request runs any more: waits for the
    /// background work, lets the log writer finish what is queued, and
    /// closes storage.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        let background = std::mem::take(&mut *self.background.lock().expect("background lock"));
        for task in background {
            let _ = task.await;
        }
        self.log.close().await;
        self.log.storage().close().await;
    }

    /// The caller of a token: verified (PROTOCOL §1), with the channels the
    /// server lists them as a member of (§9a).
    pub async fn authenticate(&self, token: &str) -> Result<Identity, Error> {
        let mut who = self.auth.verify(token)?;
        if !who.is_service {
            who.member_of = self.inbox.memberships.of(&who.tenant, &who.user_id).await?;
        }
        Ok(who)
    }

    /// `who` with the memberships the server keeps now: a long-lived
    /// connection acts with what its user is a member of at the time of
    /// each command (borrowed when nothing changed).
    pub async fn current<'a>(&self, who: &'a Identity) -> Result<Cow<'a, Identity>, Error> {
        if who.is_service {
            return Ok(Cow::Borrowed(who));
        }
        let members = self.inbox.memberships.of(&who.tenant, &who.user_id).await?;
        if Arc::ptr_eq(&members, &who.member_of) {
            return Ok(Cow::Borrowed(who));
        }
        let mut who = who.clone();
        who.member_of = members;
        Ok(Cow::Owned(who))
    }

    fn charge(&self, who: &Identity, rate: Rate) -> Result<Option<RateInfo>, Error> {
        self.limits.check(who, rate)
    }

    /// `publish` / `broadcast` (PROTOCOL §6).
    pub async fn publish(
        &self,
        who: &Identity,
        request: PublishRequest,
        writer: Writer,
        via: Via<'_>,
    ) -> Result<Published, Error> {
        self.publisher.publish(who, request, writer, via).await
    }

    /// `POST /realtime/presence`.
    pub async fn set_status(
        &self,
        who: &Identity,
        request: StatusRequest,
    ) -> Result<Charged<Value>, Error> {
        let rate = self.charge(who, Rate::Action)?;
        let value = self.presence.set_status(who, request).await?;
        Ok(Charged { value, rate })
    }

    /// `POST /realtime/presence/viewing`.
    pub async fn set_viewing(
        &self,
        who: &Identity,
        request: ViewingRequest,
    ) -> Result<Charged<Value>, Error> {
        let rate = self.charge(who, Rate::Action)?;
        let value = self.presence.set_viewing(who, request).await?;
        Ok(Charged { value, rate })
    }

    /// `POST /realtime/typing`.
    pub async fn set_typing(
        &self,
        who: &Identity,
        request: TypingRequest,
    ) -> Result<Charged<Value>, Error> {
        let rate = self.charge(who, Rate::Action)?;
        let value = self.presence.set_typing(who, request).await?;
        Ok(Charged { value, rate })
    }

    /// `POST /realtime/edit/sessions`.
    pub async fn start_session(
        &self,
        who: &Identity,
        request: StartSessionRequest,
    ) -> Result<Charged<StartSessionResponse>, Error> {
        let rate = self.charge(who, Rate::Action)?;
        let value = self.editing.start_session(who, request).await?;
        Ok(Charged { value, rate })
    }

    /// `POST /realtime/edit/sessions/{session_id}/operations`.
    pub async fn submit_operation(
        &self,
        who: &Identity,
        session_id: &str,
        request: SubmitOperationRequest,
    ) -> Result<Charged<SubmitOperationResponse>, Error> {
        let rate = self.charge(who, Rate::EditOperation)?;
        self.presence.acted(who).await?;
        let value = self
            .editing
            .submit_operation(who, session_id, request)
            .await?;
        Ok(Charged { value, rate })
    }

    /// `POST /realtime/edit/sessions/{session_id}/save`.
    pub async fn save(
        &self,
        who: &Identity,
        session_id: &str,
    ) -> Result<Charged<SaveResponse>, Error> {
        let rate = self.charge(who, Rate::Action)?;
        let value = self.editing.save(who, session_id).await?;
        Ok(Charged { value, rate })
    }

    /// `DELETE /realtime/edit/sessions/{session_id}` (not charged: leaving
    /// is always allowed).
    pub async fn leave(&self, who: &Identity, session_id: &str) -> Result<(), Error> {
        self.editing.leave(who, session_id).await
    }

    /// `GET /realtime/edit/documents`.
    pub async fn document(
        &self,
        who: &Identity,
        request: &DocumentRequest,
    ) -> Result<DocumentResponse, Error> {
        self.editing.document(who, request).await
    }

    /// `PUT /realtime/edit/documents` (service tokens).
    pub async fn set_content(
        &self,
        who: &Identity,
        request: &DocumentRequest,
        body: SetContentRequest,
    ) -> Result<Charged<DocumentResponse>, Error> {
        let rate = self.charge(who, Rate::Action)?;
        let value = self.editing.set_content(who, request, body).await?;
        Ok(Charged { value, rate })
    }

    /// `POST /realtime/edit/locks`.
    pub async fn lock(
        &self,
        who: &Identity,
        request: LockRequest,
    ) -> Result<Charged<LockResponse>, Error> {
        let rate = self.charge(who, Rate::Action)?;
        let value = self.editing.lock(who, request).await?;
        Ok(Charged { value, rate })
    }

    /// `POST /realtime/edit/locks/{lock_id}/renew`.
    pub async fn renew_lock(
        &self,
        who: &Identity,
        lock_id: &str,
        request: RenewLockRequest,
    ) -> Result<Charged<LockResponse>, Error> {
        let rate = self.charge(who, Rate::Action)?;
        let value = self.editing.renew_lock(who, lock_id, request).await?;
        Ok(Charged { value, rate })
    }

    /// `DELETE /realtime/edit/locks/{lock_id}`.
    pub async fn unlock(&self, who: &Identity, lock_id: &str) -> Result<Charged<()>, Error> {
        let rate = self.charge(who, Rate::Action)?;
        self.editing.unlock(who, lock_id).await?;
        Ok(Charged { value: (), rate })
    }
}

/// Keeps rate-limiter state proportional to active users, not to all users ever seen.
async fn evict_idle_limits(limits: Arc<Limits>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => limits.evict_idle(),
        }
    }
}
