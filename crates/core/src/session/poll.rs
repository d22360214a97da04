//! Long polling (PROTOCOL §5) over the same readers as streams: one reader
//! per request, from the request's cursor.
//!
//! A poll reads the channels it names and the user's inbox (PROTOCOL §9a):
//! their own channel and their conversations, as a stream does; naming no
//! channels reads the inbox alone.
//!
//! Invariants: an answer is immediate when events wait; otherwise the poll
//! sleeps on the reader's wake-up (no timer loop) until an event, the
//! timeout, shutdown or a change of the user's memberships, and
//! shutdown answers normally; the cursor it returns never goes backwards
//! and never skips a future event, nor an event of a conversation joined
//! while the poll ran (the answer stops before that conversation's
//! `member.added`, so the next poll reads it from there).

use std::sync::Arc;
use std::time::Duration;

use super::{Sessions, policy};
use crate::channel::ChannelError;
use crate::error::{Error, RateInfo};
use crate::event::Event;
use crate::identity::Identity;
use crate::limits::Rate;
use crate::log::Opened;
use crate::metrics::Delivery;
use crate::storage::CursorExpired;

/// Longest wait a poll may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Events per answer unless asked otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// Most events per answer.
pub const MAX_LIMIT: usize = 1000;

/// A poll, as every transport asks it.
#[derive(Debug, Clone)]
pub struct PollRequest {
    pub channels: Vec<String>,
    /// The cursor: events with ids above it are answered.
    pub last_poll_id: u64,
    /// How long to wait for an event; clamped to [`MAX_TIMEOUT`].
    pub timeout: Duration,
    /// Most events in the answer (1..=[`MAX_LIMIT`]; more is clamped).
    pub limit: usize,
    /// The polling client's connection id, one it chose (a UUID, say):
    /// events it published naming it with `exclude_self` are skipped.
    pub connection_id: Option<String>,
}

/// A poll's answer.
#[derive(Debug)]
pub struct PollAnswer {
    pub events: Vec<Arc<Event>>,
    /// The cursor for the next poll.
    pub last_poll_id: u64,
    /// True when `limit` cut the answer.
    pub has_more: bool,
    /// Channels named that the caller may not read.
    pub errors: Vec<ChannelError>,
    pub reset: Option<CursorExpired>,
    /// Where the caller stands against the poll limit, when limited.
    pub rate: Option<RateInfo>,
    /// The request's connection id, echoed.
    pub connection_id: Option<String>,
}

impl Sessions {
    /// Answers a poll: at once when events wait, else when one arrives, the
    /// timeout passes or the server shuts down.
    pub async fn poll(&self, who: &Identity, req: PollRequest) -> Result<PollAnswer, Error> {
        if req.limit == 0 {
            return Err(Error::invalid_message("limit must be between 1 and 1000"));
        }
        let limit = req.limit.min(MAX_LIMIT);
        let connection_id = match req.connection_id.clone() {
            Some(named) => Some(super::connection_id_or_new(Some(named))?),
            None => None,
        };
        let timeout = req.timeout.min(MAX_TIMEOUT);
        // The channels named, and the inbox as every stream carries it.
        let mut plan = if req.channels.is_empty() {
            policy::Plan::default()
        } else {
            policy::plan(&self.namespaces, who, &req.channels, &[])?
        };
        // What is read of memberships from here on is current while this
        // count stands still.
        let version = self.memberships.version();
        let members = match who.is_service {
            true => None,
            false => Some(self.memberships.of(&who.tenant, &who.user_id).await?),
        };
        for channel in super::inbox_of(who, members.as_deref()) {
            if !plan.granted.contains(&channel) {
                plan.granted.push(channel);
            }
        }
        let rate = self.limits.check(who, Rate::Poll)?;
        // One more than the limit tells whether the limit cut the answer.
        // Events waiting in memory answer at once, without a reader; the
        // cursor is then within what memory holds, so there is no reset.
        let recent = self
            .log
            .recent(&who.tenant, &plan.granted, req.last_poll_id, limit + 1);
        let (mut events, mut reader, reset) = match recent {
            Some(events) => (events, None, None),
            None => {
                let Opened { reader, reset } = self
                    .log
                    .reader(&who.tenant, &plan.granted, Some(req.last_poll_id))
                    .await?;
                (Vec::new(), Some(reader), reset)
            }
        };
        self.presence
            .polled(who, &plan.granted, connection_id.as_deref())
            .await?;
        if let Some(reader) = &mut reader {
            events = reader.fetch(limit + 1).await?;
        }
        if let Some(reader) = reader
            .as_mut()
            .filter(|_| events.is_empty() && !timeout.is_zero() && !self.shutdown.is_cancelled())
        {
            let _waiting = self.metrics.poll_waiting();
            let waited_from = std::time::Instant::now();
            // Watched only by a poll that waits; a change taken in before
            // the watch began ends the wait at once, as one after it does.
            let mut memberships =
                (!who.is_service).then(|| self.memberships.watch(&who.tenant, &who.user_id));
            let moved = self.memberships.version() != version;
            tokio::select! {
                _ = self.shutdown.cancelled() => {}
                _ = std::future::ready(()), if moved => {}
                () = super::changed(&mut memberships) => {}
                waited = tokio::time::timeout(timeout, reader.next(limit + 1)) => {
                    if let Ok(got) = waited {
                        events = got?;
                    }
                }
            }
            self.metrics.poll_waited(waited_from.elapsed());
        }
        let mut has_more = events.len() > limit;
        events.truncate(limit);
        let mut last_poll_id = match (events.last(), &reader) {
            (Some(last), _) => last.id,
            // Never below the request's cursor, except after a reset for a
            // cursor beyond the end of the log, where following it would
            // skip ids to come.
            (None, Some(reader)) => reader.position(),
            // (A poll answered from memory has events; this is for form.)
            (None, None) => req.last_poll_id,
        };
        if !who.is_service && last_poll_id > req.last_poll_id {
            // A conversation joined while the poll ran is read from its
            // `member.added` by the next poll: stop this answer before it.
            let current = members.filter(|_| self.memberships.version() == version);
            if let Some(joined) = self
                .joined_since(who, &plan.granted, last_poll_id, current)
                .await?
                && joined <= last_poll_id
            {
                let cap = joined.saturating_sub(1).max(req.last_poll_id);
                events.retain(|e| e.id <= cap);
                last_poll_id = cap;
                has_more = true;
            }
        }
        // What this client published asking not to get back: the cursor
        // moves past it all the same.
        if let Some(connection) = &connection_id {
            events.retain(|e| !e.skipped_by(connection, &who.user_id));
        }
        self.metrics
            .delivered(Delivery::Poll, &events, crate::clock::now_ms());
        Ok(PollAnswer {
            events,
            last_poll_id,
            has_more,
            errors: plan.errors,
            reset,
            rate,
            connection_id,
        })
    }
}

impl Sessions {
    /// The earliest log id at which the user joined an inbox conversation
    /// that `followed` lacks, as far as joins through `through` go. When
    /// this node has taken in every event through `through`, the cache
    /// holds every such join (each `member.added` went through the
    /// observer before the hub's head passed it), so no storage read is
    /// needed: the common case, and one read less per answered poll
    /// (`current`, when given, is that cache entry, read by the caller
    /// while no change was taken in since).
    /// Otherwise (a reader that caught up from storage ahead of this node's
    /// hub) storage answers.
    async fn joined_since(
        &self,
        who: &Identity,
        followed: &[crate::channel::Channel],
        through: u64,
        current: Option<Arc<super::MemberSet>>,
    ) -> Result<Option<u64>, Error> {
        let from_cache = self.log.head() >= through;
        let members = if from_cache {
            match current {
                Some(members) => members,
                None => self.memberships.of(&who.tenant, &who.user_id).await?,
            }
        } else {
            let rows = self
                .log
                .storage()
                .memberships(&who.tenant, &who.user_id)
                .await?;
            Arc::new(
                rows.into_iter()
                    .map(|row| (row.channel, row.since_id))
                    .collect::<super::MemberSet>(),
            )
        };
        let joined = super::conversations_with_since(&members)
            .into_iter()
            .filter(|(channel, _)| !followed.contains(channel))
            .map(|(_, since)| since)
            .min();
        if joined.is_some() && !from_cache {
            // What this node cached is behind: the next poll reads anew.
            self.memberships.changed(&who.tenant, &who.user_id);
        }
        Ok(joined)
    }

    /// Events of `channels` stamped at or after `since_ms` (PROTOCOL §6,
    /// `GET /realtime/activity`): the same events by time instead of cursor,
    /// with the channels the caller may not read.
    pub async fn activity(
        &self,
        who: &Identity,
        channels: &[String],
        since_ms: i64,
        limit: usize,
    ) -> Result<(Vec<Arc<Event>>, Vec<ChannelError>), Error> {
        if limit == 0 {
            return Err(Error::invalid_message("limit must be between 1 and 1000"));
        }
        let mut plan = policy::plan(&self.namespaces, who, channels, &[])?;
        let own = crate::channel::Channel::user(&who.user_id);
        if !plan.granted.contains(&own) {
            plan.granted.push(own);
        }
        let events = self
            .log
            .read_since(&who.tenant, &plan.granted, since_ms, limit.min(MAX_LIMIT))
            .await?;
        Ok((events, plan.errors))
    }
}
