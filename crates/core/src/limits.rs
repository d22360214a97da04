//! Rate and connection limits (PROTOCOL §12), with governor.
//!
//! Keyed GCRA limiters per user (and per tenant for client actions), an
//! open-stream count per user, and per-connection limiters for WebSocket
//! frames and subscription changes. Invariants: limiter state does not grow
//! with the number of users ever seen ([`Limits::evict_idle`] drops keys whose
//! bucket is full again, and runs periodically); an open-stream slot is
//! released when its [`StreamSlot`] drops, however the stream ends; service
//! tokens are exempt unless configured otherwise. Limits hold per node.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};
use serde::Deserialize;

use crate::error::{Error, ErrorCode, RateInfo};
use crate::identity::Identity;

/// The §12 table; every row configurable under `[limits]` in the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub open_streams_per_user: u32,
    pub new_connections_per_minute: u32,
    pub polls_per_minute: u32,
    pub actions_per_minute_per_user: u32,
    pub actions_per_minute_per_tenant: u32,
    pub edit_operations_per_second: u32,
    pub websocket_frames_per_second: u32,
    pub subscription_changes_per_minute: u32,
    /// Bytes of event data a user may append a minute (each event's encoded
    /// `data`, once per channel it goes to).
    pub bytes_per_minute_per_user: u32,
    /// Bytes of WebSocket frames a connection may send a second, before
    /// they are parsed.
    pub websocket_bytes_per_second: u32,
    /// Service tokens skip every limit.
    pub service_exempt: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            open_streams_per_user: 10,
            new_connections_per_minute: 10,
            polls_per_minute: 30,
            actions_per_minute_per_user: 100,
            actions_per_minute_per_tenant: 1000,
            edit_operations_per_second: 20,
            websocket_frames_per_second: 100,
            subscription_changes_per_minute: 10,
            bytes_per_minute_per_user: 1024 * 1024,
            websocket_bytes_per_second: 1024 * 1024,
            service_exempt: true,
        }
    }
}

/// What a request spends.
#[derive(Debug, Clone, Copy)]
pub enum Rate {
    NewConnection,
    Poll,
    /// Publish, presence, typing, save, locks.
    Action,
    EditOperation,
}

type Keyed = RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// A limiter for one connection (WebSocket frames, subscription changes).
pub type ConnectionLimiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    StateInformationMiddleware,
>;

struct Bucket {
    limit: u32,
    /// The time `limit` units take to come back.
    window: Duration,
    limiter: Keyed,
}

impl Bucket {
    fn new(limit: u32, per: Duration) -> Self {
        let limit = limit.max(1);
        let quota = Quota::with_period(per / limit)
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(limit).expect("non-zero"));
        Self {
            limit,
            window: per,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn check(&self, key: &str, what: &'static str) -> Result<RateInfo, Error> {
        check(
            &self.limiter.check_key(&key.to_string()),
            self.limit,
            self.limiter.clock(),
            what,
        )
    }

    /// Spends `n` units at once (none when `n` is 0).
    fn check_n(&self, key: &str, n: u32, what: &'static str) -> Result<Option<RateInfo>, Error> {
        let Some(units) = NonZeroU32::new(n) else {
            return Ok(None);
        };
        match self.limiter.check_key_n(&key.to_string(), units) {
            Ok(outcome) => check(&outcome, self.limit, self.limiter.clock(), what).map(Some),
            Err(_) => Err(Error::limited(
                ErrorCode::RateLimitExceeded,
                format!(
                    "Too many {what} in one request: {n}, where {} is the most a window holds",
                    self.limit
                ),
                RateInfo {
                    limit: self.limit,
                    remaining: 0,
                    reset_after: self.limiter_window(),
                },
            )),
        }
    }

    /// How long an empty bucket takes to fill.
    fn limiter_window(&self) -> Duration {
        self.window
    }
}

fn check(
    outcome: &Result<
        governor::middleware::StateSnapshot,
        governor::NotUntil<<DefaultClock as Clock>::Instant>,
    >,
    limit: u32,
    clock: &DefaultClock,
    what: &'static str,
) -> Result<RateInfo, Error> {
    match outcome {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let interval = snapshot.quota().replenish_interval();
            Ok(RateInfo {
                limit,
                remaining,
                reset_after: interval * (limit - remaining.min(limit)),
            })
        }
        Err(not_until) => {
            let info = RateInfo {
                limit,
                remaining: 0,
                reset_after: not_until.wait_time_from(clock.now()),
            };
            Err(Error::limited(
                ErrorCode::RateLimitExceeded,
                format!("Too many {what}"),
                info,
            ))
        }
    }
}

pub struct Limits {
    config: LimitsConfig,
    enabled: bool,
    new_connections: Bucket,
    polls: Bucket,
    actions_user: Bucket,
    actions_tenant: Bucket,
    edit_operations: Bucket,
    bytes_user: Bucket,
    /// Open streams per tenant+user. Entries are removed at zero, so the map
    /// holds only users with open streams.
    open_streams: Mutex<HashMap<String, u32>>,
}

impl Limits {
    pub fn new(config: LimitsConfig, enabled: bool) -> Self {
        let minute = Duration::from_secs(60);
        Self {
            new_connections: Bucket::new(config.new_connections_per_minute, minute),
            polls: Bucket::new(config.polls_per_minute, minute),
            actions_user: Bucket::new(config.actions_per_minute_per_user, minute),
            actions_tenant: Bucket::new(config.actions_per_minute_per_tenant, minute),
            edit_operations: Bucket::new(config.edit_operations_per_second, Duration::from_secs(1)),
            bytes_user: Bucket::new(config.bytes_per_minute_per_user, minute),
            open_streams: Mutex::new(HashMap::new()),
            config,
            enabled,
        }
    }

    fn exempt(&self, who: &Identity) -> bool {
        !self.enabled || (who.is_service && self.config.service_exempt)
    }

    /// Spends one unit of `rate`; `None` when the caller is not limited.
    pub fn check(&self, who: &Identity, rate: Rate) -> Result<Option<RateInfo>, Error> {
        if self.exempt(who) {
            return Ok(None);
        }
        let user = user_key(who);
        let info = match rate {
            Rate::NewConnection => self.new_connections.check(&user, "new connections")?,
            Rate::Poll => self.polls.check(&user, "poll requests")?,
            Rate::EditOperation => self.edit_operations.check(&user, "edit operations")?,
            Rate::Action => {
                let mine = self.actions_user.check(&user, "actions")?;
                let tenant = self
                    .actions_tenant
                    .check(&who.tenant, "actions in this tenant")?;
                if tenant.remaining < mine.remaining {
                    tenant
                } else {
                    mine
                }
            }
        };
        Ok(Some(info))
    }

    /// Spends what a publish appends beyond the one action its request
    /// already spent: one more action per further event (events x
    /// channels) and the bytes of its data. Returns where the caller stands
    /// against the tightest of them.
    pub fn check_appended(
        &self,
        who: &Identity,
        events: u32,
        bytes: u32,
    ) -> Result<Option<RateInfo>, Error> {
        if self.exempt(who) {
            return Ok(None);
        }
        let user = user_key(who);
        let extra = events.saturating_sub(1);
        let infos = [
            self.actions_user.check_n(&user, extra, "appended events")?,
            self.actions_tenant
                .check_n(&who.tenant, extra, "appended events in this tenant")?,
            self.bytes_user
                .check_n(&user, bytes, "bytes of event data")?,
        ];
        Ok(infos.into_iter().fold(None, RateInfo::tightest))
    }

    /// A fresh byte budget for one WebSocket connection's frames, or `None`
    /// when exempt.
    pub fn frame_bytes_limiter(&self, who: &Identity) -> Option<(u32, ConnectionLimiter)> {
        let n = self.config.websocket_bytes_per_second;
        (!self.exempt(who)).then(|| (n, connection_limiter(n, Duration::from_secs(1))))
    }

    /// Takes one of the user's open-stream slots, or refuses with `max_connections`.
    pub fn open_stream(self: &Arc<Self>, who: &Identity) -> Result<Option<StreamSlot>, Error> {
        if self.exempt(who) {
            return Ok(None);
        }
        let key = user_key(who);
        let limit = self.config.open_streams_per_user;
        let mut open = self.open_streams.lock().expect("open streams lock");
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= limit {
            let info = RateInfo {
                limit,
                remaining: 0,
                reset_after: Duration::from_secs(1),
            };
            return Err(Error::limited(
                ErrorCode::MaxConnections,
                format!("At most {limit} open streams per user; close one first"),
                info,
            ));
        }
        *count += 1;
        Ok(Some(StreamSlot {
            limits: self.clone(),
            key,
        }))
    }

    fn release_stream(&self, key: &str) {
        let mut open = self.open_streams.lock().expect("open streams lock");
        if let Some(count) = open.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                open.remove(key);
            }
        }
    }

    /// A fresh limiter for one WebSocket connection's frames, or `None` when exempt.
    pub fn frame_limiter(&self, who: &Identity) -> Option<(u32, ConnectionLimiter)> {
        let n = self.config.websocket_frames_per_second;
        (!self.exempt(who)).then(|| (n, connection_limiter(n, Duration::from_secs(1))))
    }

    /// A fresh limiter for one connection's subscription changes, or `None` when exempt.
    pub fn subscription_limiter(&self, who: &Identity) -> Option<(u32, ConnectionLimiter)> {
        let n = self.config.subscription_changes_per_minute;
        (!self.exempt(who)).then(|| (n, connection_limiter(n, Duration::from_secs(60))))
    }

    /// Drops limiter state of keys whose buckets are full again.
    pub fn evict_idle(&self) {
        for bucket in [
            &self.new_connections,
            &self.polls,
            &self.actions_user,
            &self.actions_tenant,
            &self.edit_operations,
            &self.bytes_user,
        ] {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
        }
    }

    /// Keys held across all keyed limiters (for metrics and tests).
    pub fn tracked_keys(&self) -> usize {
        [
            &self.new_connections,
            &self.polls,
            &self.actions_user,
            &self.actions_tenant,
            &self.edit_operations,
            &self.bytes_user,
        ]
        .iter()
        .map(|b| b.limiter.len())
        .sum()
    }
}

/// Checks one unit against a per-connection limiter.
pub fn check_connection(
    limiter: &(u32, ConnectionLimiter),
    what: &'static str,
) -> Result<RateInfo, Error> {
    check(&limiter.1.check(), limiter.0, limiter.1.clock(), what)
}

/// Spends `n` units of a connection's limiter (a frame's bytes, say).
pub fn check_connection_n(
    limiter: &(u32, ConnectionLimiter),
    n: u32,
    what: &'static str,
) -> Result<(), Error> {
    let Some(units) = NonZeroU32::new(n) else {
        return Ok(());
    };
    match limiter.1.check_n(units) {
        Ok(outcome) => check(&outcome, limiter.0, limiter.1.clock(), what).map(|_| ()),
        Err(_) => Err(Error::limited(
            ErrorCode::RateLimitExceeded,
            format!("Too many {what} at once"),
            RateInfo {
                limit: limiter.0,
                remaining: 0,
                reset_after: Duration::from_secs(1),
            },
        )),
    }
}

fn connection_limiter(limit: u32, per: Duration) -> ConnectionLimiter {
    let limit = limit.max(1);
    let quota = Quota::with_period(per / limit)
        .expect("non-zero period")
        .allow_burst(NonZeroU32::new(limit).expect("non-zero"));
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
}

fn user_key(who: &Identity) -> String {
    format!("{}\u{1f}{}", who.tenant, who.user_id)
}

/// One open stream of a user; dropping it frees the slot.
pub struct StreamSlot {
    limits: Arc<Limits>,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.limits.release_stream(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Identity {
        Identity {
            user_id: id.into(),
            tenant: "t".into(),
            name: None,
            avatar: None,
            channels: vec![],
            publish: vec![],
            is_service: false,
            expires_at: i64::MAX,
            member_of: Default::default(),
        }
    }

    /// 100,000 distinct users pass through; with periodic eviction the
    /// limiter holds only the keys still inside their window.
    #[test]
    fn limiter_memory_stays_flat_across_many_users() {
        let config = LimitsConfig {
            polls_per_minute: 6000, // one unit back every 10 ms
            ..LimitsConfig::default()
        };
        let limits = Limits::new(config, true);
        let mut peak = 0;
        for n in 0..100_000 {
            limits.check(&user(&format!("u{n}")), Rate::Poll).unwrap();
            if n % 10_000 == 9_999 {
                std::thread::sleep(Duration::from_millis(20));
                limits.evict_idle();
            }
            peak = peak.max(limits.tracked_keys());
        }
        assert!(
            peak <= 10_000,
            "peak {peak} keys: eviction keeps state bounded by one window's users"
        );
        std::thread::sleep(Duration::from_millis(20));
        limits.evict_idle();
        assert_eq!(limits.tracked_keys(), 0);
    }

    #[test]
    fn the_limit_trips_at_its_count_per_user() {
        let limits = Limits::new(LimitsConfig::default(), true);
        for n in 0..30 {
            let info = limits.check(&user("a"), Rate::Poll).unwrap().unwrap();
            assert_eq!(info.remaining, 29 - n);
        }
        assert!(limits.check(&user("a"), Rate::Poll).is_err());
        assert!(limits.check(&user("b"), Rate::Poll).is_ok());
    }
}
