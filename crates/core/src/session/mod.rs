//! Sessions: one subscription core for every transport.
//!
//! Opening a stream ([`Sessions::open_stream`]) checks the caller's rights
//! ([`policy`]), spends its connection rate and takes one of its stream
//! slots, opens a cursor [`Reader`] on the log, marks the user online, and
//! returns a [`Stream`]: one typed sequence of [`Item`]s (events,
//! `subscription`, `reset`, `token.expiring`, `token.expired`, shutdown).
//! SSE and WebSocket only encode those items; long polling reads the same
//! way through [`Sessions::poll`] ([`poll`]).
//!
//! Every stream of a user also follows their inbox (PROTOCOL §9a): their
//! own `user:{sub}` and every conversation they are a member of, including
//! ones joined while it is open; when a membership ends, the stream stops
//! following what the user may no longer read, and says so with a
//! `subscription` message ([`Stream::next`] watches the user's memberships).
//!
//! Invariants: a stream follows each channel once, through one reader per
//! subscription, in id order per reader with nothing skipped (the reader's
//! rules); a channel joined while open is read from its `member.added`
//! event on; [`Stream::next`] is cancel-safe (a transport may select it
//! with anything else); the stream's slot, presence and gauge are released
//! when it drops, however it ends; after `token.expired`, shutdown or a
//! storage failure the stream yields nothing more.

pub mod policy;
pub mod poll;

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::channel::{Channel, ChannelError, Namespaces};
use crate::clock::now_ms;
use crate::error::{Error, RateInfo};
use crate::event::Event;
use crate::expiry::{Notice, StreamTimer};
use crate::identity::Identity;
use crate::inbox::conversations::NAMESPACE as CONVERSATIONS;
use crate::inbox::memberships::{MemberSet, MemberWatch, Memberships};
use crate::limits::{ConnectionLimiter, Limits, Rate, StreamSlot, check_connection};
use crate::log::{EventLog, Opened, Reader};
use crate::metrics::{Delivery, GaugeGuard, Metrics};
use crate::presence::{Presence, PresenceGuard};
use crate::storage::CursorExpired;

/// Most events handed out per [`Item::Events`].
pub const BATCH: usize = 256;
/// Most conversations a stream follows by itself, the latest joined first.
pub const MAX_INBOX_CONVERSATIONS: usize = 200;

/// What a stream's subscriptions need; cheap to clone: one shared
/// pointer, so every open stream keeps one word for it.
#[derive(Clone)]
pub struct Sessions(Arc<Shared>);

/// What [`Sessions`] shares.
pub struct Shared {
    pub(crate) log: Arc<EventLog>,
    pub(crate) namespaces: Arc<Namespaces>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) presence: Arc<Presence>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) memberships: Arc<Memberships>,
    /// Cancelled when the server begins to shut down.
    pub(crate) shutdown: CancellationToken,
}

/// One thing a stream hands its transport, in order.
#[derive(Debug)]
pub enum Item {
    /// Events of the followed channels, in id order.
    Events(Vec<Arc<Event>>),
    /// The answer to a subscription: what is followed now, and what was
    /// refused.
    Subscription(Subscribed),
    /// The cursor pointed before pruned events: reload state.
    Reset(CursorExpired),
    /// The token expires in `expires_in` seconds.
    TokenExpiring { expires_in: u64 },
    /// The token has expired: the stream ends.
    TokenExpired,
    /// The server is shutting down: the stream ends; resume with the cursor.
    Shutdown,
    /// Reading the log failed: the stream ends with this error.
    Failed(Error),
    /// Nothing went out for a while (only on streams that asked for a
    /// heartbeat with [`Stream::keep_alive`]): send a keep-alive.
    Quiet,
}

/// A `subscription` control message's content.
#[derive(Debug, Clone, Serialize)]
pub struct Subscribed {
    /// Every channel the stream follows now.
    pub channels: Vec<String>,
    /// The channels this subscription added.
    #[serde(skip)]
    pub added: Vec<String>,
    /// Channels the stream stopped following because the user may no
    /// longer read them (a membership ended).
    pub removed: Vec<String>,
    pub errors: Vec<ChannelError>,
    /// On an SSE stream's opening message: its connection id, which an
    /// `exclude_self` publish names.
    pub connection_id: Option<String>,
}

impl Item {
    /// The control message's JSON (PROTOCOL §3 control messages), for any
    /// item but events and [`Item::Quiet`] (each transport has its own
    /// keep-alive).
    pub fn control_json(&self, request_id: &str) -> Option<Value> {
        Some(match self {
            Item::Events(_) | Item::Quiet => return None,
            Item::Subscription(s) => {
                let mut message = json!({
                    "type": "subscription",
                    "status": "success",
                    "channels": s.channels,
                    "errors": s.errors,
                });
                if !s.removed.is_empty() {
                    message["removed"] = json!(s.removed);
                }
                if let Some(id) = &s.connection_id {
                    message["connection_id"] = json!(id);
                }
                message
            }
            Item::Reset(reset) => {
                json!({"type": "reset", "reason": "cursor_expired", "oldest_id": reset.oldest_id})
            }
            Item::TokenExpiring { expires_in } => json!({
                "type": "system",
                "event": "token.expiring",
                "data": { "expires_in": expires_in },
            }),
            Item::TokenExpired => json!({"type": "system", "event": "token.expired"}),
            Item::Shutdown => json!({"type": "system", "event": "server.shutdown"}),
            Item::Failed(error) => {
                crate::metrics::error_answered(error.code());
                error.body(request_id)
            }
        })
    }

    /// Whether the stream ends after this item.
    pub fn is_last(&self) -> bool {
        matches!(self, Item::TokenExpired | Item::Shutdown | Item::Failed(_))
    }
}

/// The `reset` fields of PROTOCOL §4 and §5, as a poll answer carries them.
pub fn reset_json(reset: &CursorExpired) -> Value {
    json!({ "reason": "cursor_expired", "oldest_id": reset.oldest_id })
}

/// Which transport a stream is for: their subscriptions differ only in when
/// they are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Subscribed once, when the stream opens.
    Sse,
    /// Subscribed and unsubscribed by messages while it is open.
    WebSocket,
}

/// One subscription: its reader, which keeps the channels followed (one
/// copy of the names per stream).
struct Group {
    reader: Reader,
}

impl Group {
    fn follows(&self, channel: &Channel) -> bool {
        self.reader.channels().any(|c| c == channel.as_str())
    }

    /// The channels followed, as channels.
    fn followed(&self) -> Vec<Channel> {
        self.reader.channels().map(Channel::known).collect()
    }
}

/// What a stream has to hand out before it reads on.
#[derive(Default)]
struct Queued {
    /// Items due before anything else (the opening `subscription`, `reset`).
    items: VecDeque<Item>,
    /// Events read while a membership change was pending: delivered once it
    /// is applied, in order with the joined conversations' events.
    held: Vec<Arc<Event>>,
}

/// An open stream of one caller.
pub struct Stream {
    sessions: Sessions,
    who: Identity,
    /// The connection's id (the WebSocket `connected` message names it).
    id: String,
    groups: Vec<Group>,
    /// Items due before anything else and events held back; boxed, as an
    /// idle stream has none.
    queued: Option<Box<Queued>>,
    /// Token expiry notices and, when asked for, the heartbeat.
    timer: StreamTimer,
    /// Subscription changes after the opening one, when limited (only a
    /// WebSocket changes them; boxed, as idle SSE streams hold none).
    changes: Option<Box<(u32, ConnectionLimiter)>>,
    /// A WebSocket stream that has neither subscribed nor delivered an
    /// event yet: its first subscription takes the user's inbox along.
    fresh: bool,
    /// Changes when the user's memberships do (not for service tokens).
    memberships: Option<MemberWatch>,
    /// A membership change was seen and is not applied yet.
    resync: bool,
    /// Which transport the stream is for, as `/metrics` counts deliveries.
    delivery: Delivery,
    /// The channels followed changed and presence's rooms do not know yet.
    refollow: bool,
    finished: bool,
    _slot: Option<StreamSlot>,
    /// The stream's presence session (none for service tokens).
    online: Option<PresenceGuard>,
    _gauge: GaugeGuard,
}

impl std::ops::Deref for Sessions {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Sessions {
    pub fn new(
        log: Arc<EventLog>,
        namespaces: Arc<Namespaces>,
        limits: Arc<Limits>,
        presence: Arc<Presence>,
        metrics: Arc<Metrics>,
        memberships: Arc<Memberships>,
        shutdown: CancellationToken,
    ) -> Self {
        Self(Arc::new(Shared {
            log,
            namespaces,
            limits,
            presence,
            metrics,
            memberships,
            shutdown,
        }))
    }

    /// The user's inbox: their own channel, then the conversations they are
    /// members of (at most [`MAX_INBOX_CONVERSATIONS`], latest joined first).
    pub(crate) async fn inbox(&self, who: &Identity) -> Result<Vec<Channel>, Error> {
        if who.is_service {
            return Ok(inbox_of(who, None));
        }
        let members = self.memberships.of(&who.tenant, &who.user_id).await?;
        Ok(inbox_of(who, Some(&members)))
    }

    /// Opens a stream. An SSE stream subscribes to `channels` from `cursor`
    /// at once (a refusal refuses the request; its first items are the
    /// `subscription` message and any `reset`); a WebSocket stream starts
    /// with the caller's own channel and subscribes by message. Returns the
    /// stream and, when the caller is limited, where it stands.
    pub async fn open_stream(
        &self,
        who: Identity,
        transport: Transport,
        channels: &[String],
        cursor: Option<u64>,
        connection_id: Option<String>,
    ) -> Result<(Stream, Option<RateInfo>), Error> {
        let connection_id = connection_id_or_new(connection_id)?;
        let inbox = self.inbox(&who).await?;
        let (granted, errors) = match transport {
            Transport::Sse => {
                // Naming no channel is a stream of the inbox alone.
                let mut plan = if channels.is_empty() {
                    policy::Plan::default()
                } else {
                    policy::plan(&self.namespaces, &who, channels, &[])?
                };
                for channel in inbox {
                    if !plan.granted.contains(&channel) {
                        plan.granted.push(channel);
                    }
                }
                (plan.granted, plan.errors)
            }
            Transport::WebSocket => (inbox, Vec::new()),
        };
        let rate = self.limits.check(&who, Rate::NewConnection)?;
        let slot = self.limits.open_stream(&who)?;
        let cursor = match transport {
            Transport::Sse => cursor,
            Transport::WebSocket => None,
        };
        let Opened { reader, reset } = self.log.reader(&who.tenant, &granted, cursor).await?;
        let online = self.presence.stream_opened(&who, &granted).await?;
        let mut pending = VecDeque::new();
        if transport == Transport::Sse {
            pending.push_back(Item::Subscription(Subscribed {
                channels: granted.iter().map(|c| c.as_str().to_string()).collect(),
                added: granted.iter().map(|c| c.as_str().to_string()).collect(),
                removed: Vec::new(),
                errors,
                connection_id: Some(connection_id.clone()),
            }));
            if let Some(reset) = reset {
                pending.push_back(Item::Reset(reset));
            }
        }
        let stream = Stream {
            changes: match transport {
                Transport::Sse => None,
                Transport::WebSocket => self.limits.subscription_limiter(&who).map(Box::new),
            },
            timer: StreamTimer::new(who.expires_at, None),
            id: connection_id,
            groups: vec![Group { reader }],
            queued: (!pending.is_empty()).then(|| {
                Box::new(Queued {
                    items: pending,
                    held: Vec::new(),
                })
            }),
            fresh: transport == Transport::WebSocket,
            memberships: (!who.is_service)
                .then(|| self.memberships.watch(&who.tenant, &who.user_id)),
            resync: false,
            refollow: false,
            delivery: match transport {
                Transport::Sse => Delivery::Sse,
                Transport::WebSocket => Delivery::WebSocket,
            },
            finished: false,
            _slot: slot,
            online,
            _gauge: self.metrics.stream_opened(),
            sessions: self.clone(),
            who,
        };
        tracing::debug!(user = %stream.who.user_id, connection = %stream.id, channels = ?stream.followed_names(), "stream opened");
        Ok((stream, rate))
    }
}

impl Stream {
    /// The connection's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Asks for [`Item::Quiet`] whenever nothing went out for `every`
    /// (SSE keep-alives), on the stream's one timer.
    pub fn keep_alive(&mut self, every: std::time::Duration) {
        self.timer.keep_alive(every);
    }

    /// Who the stream belongs to.
    pub fn who(&self) -> &Identity {
        &self.who
    }

    fn followed(&self) -> Vec<Channel> {
        self.groups.iter().flat_map(|g| g.followed()).collect()
    }

    fn followed_names(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|g| g.reader.channels().map(str::to_string))
            .collect()
    }

    fn spend_change(&self) -> Result<(), Error> {
        if let Some(changes) = &self.changes {
            check_connection(changes, "subscription changes")?;
        }
        Ok(())
    }

    /// Follows more channels from `cursor` (or the end of the log). Returns
    /// the items that answer it, in order: the `subscription` message, then
    /// any `reset`.
    pub async fn subscribe(
        &mut self,
        channels: &[String],
        cursor: Option<u64>,
    ) -> Result<Vec<Item>, Error> {
        self.spend_change()?;
        // Rights as the server keeps them now: a membership added a moment
        // ago counts even before the stream's own resync has run.
        if !self.who.is_service {
            self.who.member_of = self
                .sessions
                .memberships
                .of(&self.who.tenant, &self.who.user_id)
                .await?;
        }
        if std::mem::take(&mut self.fresh) {
            return self.first_subscription(channels, cursor).await;
        }
        let plan = policy::plan(
            &self.sessions.namespaces,
            &self.who,
            channels,
            &self.followed(),
        )?;
        let mut reset = None;
        if !plan.granted.is_empty() {
            let opened = self
                .sessions
                .log
                .reader(&self.who.tenant, &plan.granted, cursor)
                .await?;
            reset = opened.reset;
            self.groups.push(Group {
                reader: opened.reader,
            });
        }
        self.refollow = !plan.granted.is_empty();
        let mut items = vec![Item::Subscription(Subscribed {
            channels: self.followed_names(),
            added: plan
                .granted
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            removed: Vec::new(),
            errors: plan.errors,
            connection_id: None,
        })];
        items.extend(reset.map(Item::Reset));
        Ok(items)
    }

    /// A WebSocket's first subscription, before any event went out: one
    /// reader for the requested channels and the user's own, all from
    /// `cursor`, so events of `user:{sub}` missed while disconnected are
    /// replayed too, and everything comes in one id order.
    async fn first_subscription(
        &mut self,
        channels: &[String],
        cursor: Option<u64>,
    ) -> Result<Vec<Item>, Error> {
        let plan = policy::plan(&self.sessions.namespaces, &self.who, channels, &[])?;
        let mut granted = self.sessions.inbox(&self.who).await?;
        for channel in plan.granted {
            if !granted.contains(&channel) {
                granted.push(channel);
            }
        }
        let opened = self
            .sessions
            .log
            .reader(&self.who.tenant, &granted, cursor)
            .await?;
        self.groups = vec![Group {
            reader: opened.reader,
        }];
        self.refollow = true;
        let mut items = vec![Item::Subscription(Subscribed {
            channels: self.followed_names(),
            added: granted.iter().map(|c| c.as_str().to_string()).collect(),
            removed: Vec::new(),
            errors: plan.errors,
            connection_id: None,
        })];
        items.extend(opened.reset.map(Item::Reset));
        Ok(items)
    }

    /// Stops following `channels` (never the caller's own). The channels
    /// left in a subscription go on from where it was: nothing lost or
    /// repeated. Returns every channel still followed.
    pub async fn unsubscribe(&mut self, channels: &[String]) -> Result<Vec<String>, Error> {
        self.spend_change()?;
        let own = Channel::user(&self.who.user_id);
        let mut removed = Vec::new();
        for name in channels {
            let channel = self.sessions.namespaces.resolve(name, &self.who)?;
            if channel != own {
                removed.push(channel);
            }
        }
        self.stop_following(&removed).await?;
        self.refollow = !removed.is_empty();
        Ok(self.followed_names())
    }

    /// Stops following `removed`; the channels left in each subscription go
    /// on from where it was: nothing lost or repeated.
    async fn stop_following(&mut self, removed: &[Channel]) -> Result<(), Error> {
        let changes = self.regroup(removed).await?;
        self.apply(changes);
        Ok(())
    }

    /// The subscriptions that change when `removed` is no longer followed,
    /// by index: each one's replacement over the channels left (from where
    /// it was), or `None` when nothing is left. Changes nothing itself, so
    /// a caller cancelled while it runs loses nothing.
    async fn regroup(&self, removed: &[Channel]) -> Result<Vec<(usize, Option<Group>)>, Error> {
        let mut changes = Vec::new();
        for (index, group) in self.groups.iter().enumerate() {
            if !removed.iter().any(|c| group.follows(c)) {
                continue;
            }
            let rest: Vec<Channel> = group
                .followed()
                .into_iter()
                .filter(|c| !removed.contains(c))
                .collect();
            if rest.is_empty() {
                changes.push((index, None));
                continue;
            }
            let Opened { reader, .. } = self
                .sessions
                .log
                .reader(&self.who.tenant, &rest, Some(group.reader.position()))
                .await?;
            changes.push((index, Some(Group { reader })));
        }
        Ok(changes)
    }

    /// Applies what [`Self::regroup`] planned.
    fn apply(&mut self, changes: Vec<(usize, Option<Group>)>) {
        for (index, replacement) in changes.into_iter().rev() {
            match replacement {
                Some(group) => self.groups[index] = group,
                None => {
                    self.groups.remove(index);
                }
            }
        }
    }

    /// The user's memberships changed: follow the conversations joined
    /// (from their `member.added` on) and stop following what the user may
    /// no longer read. Returns the items that say so, in order: the
    /// `subscription` message (if anything changed), then the events held
    /// while the change was pending merged in id order with what the
    /// joined conversations had up to where the stream is, so the stream
    /// keeps one increasing order. The joined conversations are then read
    /// by the stream's inbox reader itself, from where it is. Every
    /// `.await` comes before the first change to the stream, so a cancelled
    /// call changes nothing (and is made again).
    async fn memberships_changed(&mut self) -> Result<Vec<Item>, Error> {
        let sessions = self.sessions.clone();
        let members = sessions
            .memberships
            .of(&self.who.tenant, &self.who.user_id)
            .await?;
        let mut who = self.who.clone();
        who.member_of = members.clone();
        let followed = self.followed();
        let removed: Vec<Channel> = followed
            .iter()
            .filter(|c| !sessions.namespaces.may_subscribe(&who, c))
            .cloned()
            .collect();
        let mut changes = self.regroup(&removed).await?;
        let joined: Vec<(Channel, u64)> = conversations_with_since(&members)
            .into_iter()
            .filter(|(c, _)| !followed.contains(c))
            .collect();
        let mut late = Vec::new();
        if let Some(from) = joined.iter().map(|(_, since)| *since).min() {
            let from = from.saturating_sub(1);
            let added: Vec<Channel> = joined.iter().map(|(c, _)| c.clone()).collect();
            let own = Channel::user(&self.who.user_id);
            let inbox = self.groups.iter().position(|g| g.follows(&own));
            let (index, at, mut channels) = match inbox {
                Some(i) => {
                    let group = &self.groups[i];
                    let kept = group
                        .followed()
                        .into_iter()
                        .filter(|c| !removed.contains(c))
                        .collect();
                    (Some(i), group.reader.position(), kept)
                }
                None => (None, from, Vec::new()),
            };
            // What the joined conversations had up to where the stream is.
            if from < at {
                let Opened { mut reader, .. } = sessions
                    .log
                    .reader(&self.who.tenant, &added, Some(from))
                    .await?;
                while reader.position() < at {
                    let batch = reader.fetch(BATCH).await?;
                    if batch.is_empty() {
                        break;
                    }
                    late.extend(batch.into_iter().filter(|e| e.id <= at));
                }
            }
            channels.extend(added);
            let Opened { reader, .. } = sessions
                .log
                .reader(&self.who.tenant, &channels, Some(at))
                .await?;
            let group = Group { reader };
            match index {
                Some(i) => {
                    changes.retain(|(changed, _)| *changed != i);
                    changes.push((i, Some(group)));
                    changes.sort_by_key(|(i, _)| *i);
                }
                None => changes.push((self.groups.len(), Some(group))),
            }
        }
        // No more awaits: apply it all.
        self.who = who;
        let appended = changes.last().is_some_and(|(i, _)| *i == self.groups.len());
        if appended {
            let (_, group) = changes.pop().expect("checked");
            self.apply(changes);
            self.groups.extend(group);
        } else {
            self.apply(changes);
        }
        let mut events = match &mut self.queued {
            Some(queued) => std::mem::take(&mut queued.held),
            None => Vec::new(),
        };
        events.extend(late);
        events.sort_unstable_by_key(|e| e.id);
        events.dedup_by_key(|e| e.id);
        events.retain(|e| !e.skipped_by(&self.id, &self.who.user_id));
        let mut items = Vec::new();
        if !removed.is_empty() || !joined.is_empty() {
            self.refollow = true;
            items.push(Item::Subscription(Subscribed {
                channels: self.followed_names(),
                added: joined.iter().map(|(c, _)| c.as_str().to_string()).collect(),
                removed: removed.iter().map(|c| c.as_str().to_string()).collect(),
                errors: Vec::new(),
                connection_id: None,
            }));
        }
        if !events.is_empty() {
            self.sessions
                .metrics
                .delivered(self.delivery, &events, now_ms());
            items.push(Item::Events(events));
        }
        Ok(items)
    }

    /// The stream's queue, made when something is put in it.
    fn queue(&mut self) -> &mut Queued {
        self.queued.get_or_insert_with(Default::default)
    }

    /// Whether a membership change is waiting to be applied.
    fn membership_pending(&self) -> bool {
        self.memberships
            .as_ref()
            .is_some_and(MemberWatch::has_changed)
    }

    /// The next item; `None` once the stream has ended. Cancel-safe: a
    /// membership change seen is kept as `resync` (and a batch read while it
    /// was pending as `held`) until it is applied.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(queued) = &mut self.queued {
                let item = queued.items.pop_front();
                if queued.items.is_empty() && queued.held.is_empty() {
                    // An idle stream keeps no room for items it no longer has.
                    self.queued = None;
                }
                if let Some(item) = item {
                    self.timer.active();
                    return Some(item);
                }
            }
            if self.refollow {
                if let Some(guard) = &self.online {
                    let channels = self.followed();
                    let following = self
                        .sessions
                        .presence
                        .following(&self.who, guard, &channels);
                    // Boxed, as below: rare, and inline its space would stay
                    // reserved in every idle stream.
                    if let Err(e) = Box::pin(following).await {
                        tracing::warn!(error = %e, connection = %self.id, "rooms not updated for a stream's channels");
                    }
                }
                self.refollow = false;
            }
            if self.resync {
                if let Some(watch) = &mut self.memberships {
                    watch.mark_seen();
                }
                match Box::pin(self.memberships_changed()).await {
                    Ok(items) => {
                        self.resync = false;
                        self.queue().items.extend(items);
                        continue;
                    }
                    Err(e) => {
                        self.finished = true;
                        return Some(Item::Failed(e));
                    }
                }
            }
            // Checked here, not waited for beside the rest: at shutdown
            // every reader is woken, and a stream without one waits for it
            // in `next_batch`.
            let shutdown = self.sessions.shutdown.clone();
            let item = tokio::select! {
                biased;
                () = std::future::ready(()), if shutdown.is_cancelled() => Some(Item::Shutdown),
                () = changed(&mut self.memberships) => {
                    self.resync = true;
                    None
                }
                notice = self.timer.next() => Some(match notice {
                    Notice::Expiring { expires_in } => Item::TokenExpiring { expires_in },
                    Notice::Expired => Item::TokenExpired,
                    Notice::Quiet => Item::Quiet,
                }),
                events = next_batch(&mut self.groups, &shutdown) => match events {
                    // Woken without events: look around again.
                    Ok(events) if events.is_empty() => None,
                    Ok(mut events) => {
                        self.fresh = false;
                        if self.membership_pending() {
                            // The change may have come with these events:
                            // apply it first, then deliver them in order
                            // with the joined conversations' own.
                            self.queue().held.extend(events);
                            self.resync = true;
                            None
                        } else {
                            // What this connection published asking not to
                            // get back: its cursor has moved past it all the
                            // same.
                            events.retain(|e| !e.skipped_by(&self.id, &self.who.user_id));
                            self.sessions.metrics.delivered(self.delivery, &events, now_ms());
                            (!events.is_empty()).then_some(Item::Events(events))
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, connection = %self.id, "stream ended: storage read failed");
                        Some(Item::Failed(e))
                    }
                },
            };
            if let Some(item) = item {
                self.finished = item.is_last();
                if !matches!(item, Item::Quiet) {
                    self.timer.active();
                }
                return Some(item);
            }
        }
    }
}

/// The connection id a client named (checked), or a new one: what
/// `exclude_self` publishes name (PROTOCOL §6).
pub fn connection_id_or_new(named: Option<String>) -> Result<String, Error> {
    match named {
        Some(id) if crate::names::is_valid_opaque_id(&id, crate::publish::MAX_CONNECTION_ID) => {
            Ok(id)
        }
        Some(_) => Err(Error::invalid_message(format!(
            "connection_id must be 1-{} characters, none of them control characters",
            crate::publish::MAX_CONNECTION_ID
        ))),
        None => Ok(uuid::Uuid::now_v7().to_string()),
    }
}

/// Waits for a change of the memberships watched, forever without one.
async fn changed(watch: &mut Option<MemberWatch>) {
    match watch {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// The inbox of a user whose memberships are `members` (none for a
/// service): their own channel, then their conversations.
fn inbox_of(who: &Identity, members: Option<&MemberSet>) -> Vec<Channel> {
    let mut inbox = vec![Channel::user(&who.user_id)];
    if let Some(members) = members {
        inbox.extend(conversations(members));
    }
    inbox
}

/// The conversations of a member set with the log id each membership began
/// at, latest joined first, at most [`MAX_INBOX_CONVERSATIONS`].
fn conversations_with_since(members: &MemberSet) -> Vec<(Channel, u64)> {
    let mut list: Vec<(Channel, u64)> = members
        .iter()
        .filter_map(|(name, since)| {
            let channel = Channel::parse(name).ok()?;
            (channel.namespace() == CONVERSATIONS).then_some((channel, *since))
        })
        .collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list.truncate(MAX_INBOX_CONVERSATIONS);
    list
}

/// The conversations a stream follows by itself.
fn conversations(members: &MemberSet) -> Vec<Channel> {
    conversations_with_since(members)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

/// The next batch from whichever subscription has events first, or none
/// once one was woken without events (shutdown wakes every reader), or
/// without subscriptions, at shutdown.
async fn next_batch(
    groups: &mut [Group],
    shutdown: &CancellationToken,
) -> Result<Vec<Arc<Event>>, Error> {
    if groups.is_empty() {
        shutdown.cancelled().await;
        return Ok(Vec::new());
    }
    if let [one] = groups {
        return Ok(one.reader.wait(BATCH).await?);
    }
    let futures = groups.iter_mut().map(|g| Box::pin(g.reader.wait(BATCH)));
    let (result, _, _) = futures_util::future::select_all(futures).await;
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns for a stream, without a stream.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(&'static mut Stream) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every idle SSE stream holds a `next()` future for its whole life:
    /// its rare, storage-bound branches are boxed so they do not size it
    /// (inline they made it 1,136 bytes), and shutdown reaches it through
    /// its readers' wake-ups rather than a wait of its own (432 with one).
    #[test]
    fn an_idle_streams_next_future_stays_small() {
        let next = future_size(|s| s.next());
        assert!(next <= 384, "Stream::next's future is {next} bytes");
    }
}
