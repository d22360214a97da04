//! Publishing (PROTOCOL §6): the one command behind `POST /realtime/publish`,
//! `POST /realtime/broadcast` and the WebSocket `publish` message.
//!
//! A request is one event on one channel, one event on several channels
//! (one id, visible on each), or a batch; all of it is validated (names,
//! rights, sizes) before anything is appended, and appended atomically. A
//! `notification` to several channels among which users' is one event per
//! channel, since each user's notification is its own. `exclude_self`
//! marks the events with the sending connection ([`Via`]), whose stream
//! skips them. Invariant: an `Ok` means the events
//! are committed.
//!
//! Costs are bounded before they are paid: `data` arrives as raw JSON (never
//! walked into a tree) and is measured and compacted in one pass; a request
//! spends one client action before it is even checked, then one more per
//! further event it appends (events x channels) and the bytes of its data,
//! and it may append at most [`MAX_BATCH_EVENTS`] events and
//! [`MAX_REQUEST_BYTES`] bytes of data.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::channel::{Channel, Namespaces};
use crate::error::{Error, ErrorCode, RateInfo};
use crate::event::{NewEvent, raw_data, validate_event_name};
use crate::identity::Identity;
use crate::inbox::Inbox;
use crate::inbox::notifications::NOTIFICATION;
use crate::limits::{Limits, Rate};
use crate::log::EventLog;
use crate::names::is_valid_opaque_id;
use crate::presence::Presence;
use crate::storage::notification::NotificationRow;
use crate::storage::{AppendOutcome, AppendRequest};

/// Most events one publish may append.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// Longest `idempotency_key`, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Longest `connection_id`.
pub const MAX_CONNECTION_ID: usize = 128;
/// Most bytes of event data one publish may append (each event's data once
/// per channel it goes to).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// A publish, as every transport takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub channel: Option<String>,
    pub channels: Option<Vec<String>>,
    pub event: Option<String>,
    /// Any JSON; kept as it arrived until it is measured and compacted.
    pub data: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "crate::whole::opt_u64")]
    pub expected_last_id: Option<u64>,
    pub events: Option<Vec<BatchItem>>,
    pub idempotency_key: Option<String>,
    /// Legacy clients name themselves; it must be the token's subject.
    pub user_id: Option<String>,
    /// The sending connection's stream skips these events (they are in the
    /// log for everyone else).
    #[serde(default)]
    pub exclude_self: Option<bool>,
    /// Over HTTP, which of the caller's connections sent it (the id its
    /// stream or poll was given), for `exclude_self`.
    pub connection_id: Option<String>,
    /// The WebSocket message's `type` (`publish`); refused over HTTP.
    #[serde(default, rename = "type")]
    pub message_type: Option<String>,
    /// The WebSocket message's `ack_id`; refused over HTTP.
    pub ack_id: Option<Box<RawValue>>,
}

/// One event of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    pub channel: Option<String>,
    pub channels: Option<Vec<String>>,
    pub event: String,
    pub data: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "crate::whole::opt_u64")]
    pub expected_last_id: Option<u64>,
}

/// Who may write where: the two HTTP endpoints differ only here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// `POST /realtime/broadcast`: service tokens, any channel of the tenant.
    Broadcast,
    /// `POST /realtime/publish`: channels the token's `publish` claim or the
    /// namespace's client publishing allows.
    Publish,
}

/// Which transport a publish came by: the WebSocket message carries its
/// envelope fields (`type`, `ack_id`) in the same object, HTTP bodies may
/// not; a WebSocket publish comes from its socket's connection, an HTTP
/// one names its connection (`connection_id`) if it wants `exclude_self`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via<'a> {
    Http,
    WebSocket { connection: &'a str },
}

/// A publish's answer: the receipt JSON and, when limited, where the caller
/// stands.
#[derive(Debug)]
pub struct Published {
    pub receipt: String,
    pub rate: Option<RateInfo>,
}

/// The publish command; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    log: Arc<EventLog>,
    namespaces: Arc<Namespaces>,
    limits: Arc<Limits>,
    presence: Arc<Presence>,
    inbox: Inbox,
}

impl Publisher {
    pub fn new(
        log: Arc<EventLog>,
        namespaces: Arc<Namespaces>,
        limits: Arc<Limits>,
        presence: Arc<Presence>,
        inbox: Inbox,
    ) -> Self {
        Self {
            log,
            namespaces,
            limits,
            presence,
            inbox,
        }
    }

    /// Validates and appends a publish.
    pub async fn publish(
        &self,
        who: &Identity,
        mut body: PublishRequest,
        writer: Writer,
        via: Via<'_>,
    ) -> Result<Published, Error> {
        if writer == Writer::Broadcast && !who.is_service {
            return Err(Error::permission_denied(
                "POST /realtime/broadcast needs a service token (role: service)",
            ));
        }
        // Spent before anything is checked: a refused request costs the same.
        let first = self.limits.check(who, Rate::Action)?;
        if via == Via::Http {
            for (field, present) in [
                ("type", body.message_type.is_some()),
                ("ack_id", body.ack_id.is_some()),
            ] {
                if present {
                    return Err(Error::invalid_message(format!(
                        "Invalid JSON body: unknown field `{field}`"
                    )));
                }
            }
        }
        who.check_named_user(body.user_id.as_deref())?;
        let origin = origin(&body, via)?;
        let idempotency_key = body.idempotency_key.take();
        if let Some(key) = &idempotency_key
            && !is_valid_opaque_id(key, MAX_IDEMPOTENCY_KEY)
        {
            return Err(Error::invalid_message(
                "idempotency_key must be 1-255 characters, none of them control characters",
            ));
        }
        let (events, notifications) = self.events(who, body.items()?, writer)?;
        // Charged per channel an event reaches, as one event per channel was.
        let reach = |e: &NewEvent| 1 + e.also.len();
        let deliveries: usize = events.iter().map(reach).sum();
        let bytes: usize = events.iter().map(|e| e.data.len() * reach(e)).sum();
        let appended = self
            .limits
            .check_appended(who, deliveries as u32, bytes as u32)?;
        let rate = RateInfo::tightest(first, appended);
        self.presence.acted(who).await?;
        let outcome = self
            .log
            .append(AppendRequest {
                origin,
                tenant: who.tenant.clone(),
                user_id: Some(who.user_id.clone()),
                events,
                idempotency_key,
                recipients: 0,
                notifications,
            })
            .await?;
        match outcome {
            AppendOutcome::Appended { receipt, .. } | AppendOutcome::Replayed { receipt } => {
                Ok(Published { receipt, rate })
            }
            AppendOutcome::Conflict { channel, last_id } => Err(Error::new(
                ErrorCode::Conflict,
                format!("Channel '{channel}' has moved on: its last event id is {last_id}"),
            )
            .with_details(json!({ "channel": channel, "last_id": last_id }))),
            AppendOutcome::Failed => Err(Error::new(
                ErrorCode::ServerError,
                "The event could not be stored",
            )),
        }
    }

    /// The events a publish appends, checked: names, sizes and rights, and
    /// the notifications its `notification` events on users' channels
    /// create (PROTOCOL §9: their data becomes the stored notification).
    fn events(
        &self,
        who: &Identity,
        items: Vec<BatchItem>,
        writer: Writer,
    ) -> Result<(Vec<NewEvent>, Vec<NotificationRow>), Error> {
        let mut events = Vec::new();
        let mut notifications = Vec::new();
        let mut reached = 0;
        let mut bytes = 0;
        for mut item in items {
            let names = match (item.channel.take(), item.channels.take()) {
                (Some(one), None) => vec![one],
                (None, Some(many)) if !many.is_empty() => {
                    if item.expected_last_id.is_some() && many.len() > 1 {
                        return Err(Error::invalid_message(
                            "'expected_last_id' needs a single 'channel'",
                        ));
                    }
                    many
                }
                (Some(_), Some(_)) => {
                    return Err(Error::invalid_message(
                        "Send 'channel' or 'channels', not both",
                    ));
                }
                _ => {
                    return Err(Error::invalid_message(
                        "Field 'channel' (or a non-empty 'channels') is required",
                    ));
                }
            };
            validate_event_name(&item.event)?;
            let data = raw_data(item.data.as_deref())?;
            let mut channels = Vec::with_capacity(names.len());
            for name in names {
                let channel = self.namespaces.resolve(&name, who)?;
                self.check_may_write(who, &channel, writer)?;
                if !channels.contains(&channel) {
                    channels.push(channel);
                }
            }
            // Bounded as it grows: a request never holds more than its caps
            // (counted per channel reached).
            reached += channels.len();
            bytes += data.len() * channels.len();
            if reached > MAX_BATCH_EVENTS {
                return Err(Error::invalid_message(format!(
                    "A publish may append at most {MAX_BATCH_EVENTS} events (events x channels)"
                ))
                .with_details(json!({ "limit": MAX_BATCH_EVENTS })));
            }
            if bytes > MAX_REQUEST_BYTES {
                return Err(Error::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "This publish appends more than {MAX_REQUEST_BYTES} bytes of data \
                         (each event's data once per channel)"
                    ),
                )
                .with_details(json!({ "limit": MAX_REQUEST_BYTES })));
            }
            let stores_notifications =
                item.event == NOTIFICATION && channels.iter().any(|c| c.namespace() == "user");
            if stores_notifications {
                // Each user's notification is its own: one event per channel.
                for channel in channels {
                    let data = match self.inbox.published(
                        &who.tenant,
                        &channel,
                        &item.event,
                        item.data.as_deref(),
                    )? {
                        Some((row, data)) => {
                            notifications.push(row);
                            data
                        }
                        None => data.clone(),
                    };
                    events.push(self.new_event(vec![channel], &item, data));
                }
            } else {
                events.push(self.new_event(channels, &item, data));
            }
        }
        Ok((events, notifications))
    }

    /// One event on `channels` (at least one), kept as long as the
    /// longest-kept of them keeps events.
    fn new_event(&self, channels: Vec<Channel>, item: &BatchItem, data: String) -> NewEvent {
        let retention_ms = channels
            .iter()
            .map(|c| self.namespaces.retention(c).as_millis() as i64)
            .max()
            .unwrap_or(0);
        let mut channels = channels.into_iter();
        NewEvent {
            channel: channels.next().expect("an event has a channel"),
            also: channels.collect(),
            event: item.event.clone(),
            data,
            expected_last_id: item.expected_last_id,
            retention_ms,
        }
    }

    fn check_may_write(
        &self,
        who: &Identity,
        channel: &Channel,
        writer: Writer,
    ) -> Result<(), Error> {
        let allowed = match writer {
            Writer::Broadcast => who.is_service,
            Writer::Publish => self.namespaces.may_publish(who, channel),
        };
        if allowed {
            Ok(())
        } else {
            Err(
                Error::permission_denied(format!("This token may not publish to '{channel}'"))
                    .with_details(json!({ "channel": channel.as_str() })),
            )
        }
    }
}

/// The connection whose stream skips the publish, when it asked
/// `exclude_self`.
fn origin(body: &PublishRequest, via: Via<'_>) -> Result<Option<String>, Error> {
    let exclude = body.exclude_self.unwrap_or(false);
    match via {
        Via::WebSocket { .. } if body.connection_id.is_some() => Err(Error::invalid_message(
            "Over WebSocket a publish comes from its socket: leave 'connection_id' out",
        )),
        Via::WebSocket { connection } => Ok(exclude.then(|| connection.to_string())),
        Via::Http => match (&body.connection_id, exclude) {
            (Some(id), _) if !is_valid_opaque_id(id, MAX_CONNECTION_ID) => {
                Err(Error::invalid_message(format!(
                    "connection_id must be 1-{MAX_CONNECTION_ID} characters, none of them control characters"
                )))
            }
            (Some(id), true) => Ok(Some(id.clone())),
            (None, true) => Err(Error::invalid_message(
                "exclude_self over HTTP needs the sending connection's 'connection_id' \
                 (from the stream's subscription message or a poll answer)",
            )),
            (_, false) => Ok(None),
        },
    }
}

impl PublishRequest {
    /// The request as a batch: its `events`, or its one event.
    fn items(self) -> Result<Vec<BatchItem>, Error> {
        match self.events {
            Some(items) => {
                if self.channel.is_some()
                    || self.channels.is_some()
                    || self.event.is_some()
                    || self.expected_last_id.is_some()
                    || self.data.is_some()
                {
                    return Err(Error::invalid_message(
                        "Send either 'events' (a batch) or 'channel'/'channels' with 'event', not both",
                    ));
                }
                if items.is_empty() || items.len() > MAX_BATCH_EVENTS {
                    return Err(Error::invalid_message(format!(
                        "'events' must hold 1-{MAX_BATCH_EVENTS} events"
                    )));
                }
                Ok(items)
            }
            None => Ok(vec![BatchItem {
                channel: self.channel,
                channels: self.channels,
                event: self
                    .event
                    .ok_or_else(|| Error::invalid_message("Field 'event' is required"))?,
                data: self.data,
                expected_last_id: self.expected_last_id,
            }]),
        }
    }
}
