//! Field locks (PROTOCOL §8), for fields that are not edited together: take
//! with a TTL, renew, release (owner only), and expire by themselves.
//!
//! Invariants: a field has at most one live lock (the storage's unique index
//! decides races, on every node); every lock that ends, released or expired,
//! gets exactly one `edit.unlock`, because only the caller whose `DELETE`
//! removed the row announces it. Expired locks are swept by
//! [`run_lock_expiry`] and, lazily, by every lock request.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::api::{Editor, LockRequest, LockResponse, RenewLockRequest};
use super::service::{Editing, MAX_ID_LEN, detached, resource_locked};
use crate::channel::Channel;
use crate::clock::{format_timestamp, now_ms};
use crate::error::{Error, ErrorCode};
use crate::identity::Identity;
use crate::names::is_valid_opaque_id;
use crate::storage::edit::{LockAttempt, LockRow};

/// TTL of a lock request that names none.
pub const DEFAULT_LOCK_TTL_SECS: u64 = 60;
/// Longest TTL a lock may be taken or renewed with.
pub const MAX_LOCK_TTL_SECS: u64 = 3600;
/// How often [`run_lock_expiry`] looks for expired locks.
pub const LOCK_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Editing {
    /// Takes the lock on a field (201), or 409 `resource_locked` naming the
    /// holder. The holder asking again gets their lock with a fresh expiry.
    pub async fn lock(&self, who: &Identity, req: LockRequest) -> Result<LockResponse, Error> {
        let (key, channel) =
            self.writable_resource(who, &req.resource_type, &req.resource_id, &req.field)?;
        let ttl_ms = ttl_ms(req.ttl_seconds.unwrap_or(DEFAULT_LOCK_TTL_SECS))?;
        let now = now_ms();
        let wanted = LockRow {
            lock_id: uuid::Uuid::now_v7().to_string(),
            key,
            user_id: who.user_id.clone(),
            name: who.name.clone(),
            ttl_ms,
            created_at: now,
            expires_at: now + ttl_ms,
        };
        let this = self.clone();
        detached(async move {
            let (attempt, expired) = this.store().acquire_lock(&wanted, now).await?;
            for lock in &expired {
                this.announce_unlock(lock, "expired", None).await?;
            }
            match attempt {
                LockAttempt::Acquired(lock) => {
                    this.announce_lock(&lock, &channel).await?;
                    Ok(lock_response(&lock))
                }
                LockAttempt::Held(lock) => Err(resource_locked(&lock)),
            }
        })
        .await
    }

    /// Moves a lock's expiry to `ttl_seconds` (default: its TTL) from now.
    pub async fn renew_lock(
        &self,
        who: &Identity,
        lock_id: &str,
        req: RenewLockRequest,
    ) -> Result<LockResponse, Error> {
        let ttl = req.ttl_seconds.map(ttl_ms).transpose()?;
        let lock = self.own_lock(who, lock_id).await?;
        let channel = self.writable(who, &lock.key)?;
        let this = self.clone();
        let who = who.clone();
        detached(async move {
            let renewed = this
                .store()
                .renew_lock(
                    &who.tenant,
                    &lock.lock_id,
                    &who.user_id,
                    ttl.unwrap_or(lock.ttl_ms),
                    now_ms(),
                )
                .await?
                .ok_or_else(|| lock_gone(&lock.lock_id))?;
            this.announce_lock(&renewed, &channel).await?;
            Ok(lock_response(&renewed))
        })
        .await
    }

    /// Releases a lock; only its holder may.
    pub async fn unlock(&self, who: &Identity, lock_id: &str) -> Result<(), Error> {
        let lock = self.own_lock(who, lock_id).await?;
        let this = self.clone();
        let who = who.clone();
        detached(async move {
            let released = this
                .store()
                .release_lock(&who.tenant, &lock.lock_id, &who.user_id, now_ms())
                .await?
                .ok_or_else(|| lock_gone(&lock.lock_id))?;
            this.announce_unlock(&released, "released", Some(&who.user_id))
                .await
        })
        .await
    }

    /// Releases every expired lock with `edit.unlock`; returns how many.
    pub async fn expire_locks(&self) -> Result<usize, Error> {
        let expired = self.store().expire_locks(now_ms()).await?;
        for lock in &expired {
            self.announce_unlock(lock, "expired", None).await?;
        }
        Ok(expired.len())
    }

    /// A live lock of the caller: expired ones are swept first (so they are
    /// 404 like unknown ones), another user's is 403.
    async fn own_lock(&self, who: &Identity, lock_id: &str) -> Result<LockRow, Error> {
        let this = self.clone();
        detached(async move { this.expire_locks().await }).await?;
        // Ids are ours (UUIDs): one no lock can have is not looked up.
        if !is_valid_opaque_id(lock_id, MAX_ID_LEN) {
            return Err(lock_gone(lock_id));
        }
        let lock = self
            .store()
            .find_lock(&who.tenant, lock_id)
            .await?
            .ok_or_else(|| lock_gone(lock_id))?;
        if lock.user_id != who.user_id {
            return Err(Error::permission_denied(
                "Only the user holding a lock may renew or release it",
            )
            .with_details(json!({ "locked_by": locked_by(&lock) })));
        }
        Ok(lock)
    }

    async fn announce_lock(&self, lock: &LockRow, channel: &Channel) -> Result<(), Error> {
        let k = &lock.key;
        self.append(
            &k.tenant,
            Some(&lock.user_id),
            channel,
            "edit.lock",
            json!({
                "lock_id": lock.lock_id,
                "resource_type": k.resource_type,
                "resource_id": k.resource_id,
                "field": k.field,
                "locked_by": locked_by(lock),
                "expires_at": format_timestamp(lock.expires_at),
            }),
        )
        .await
    }

    /// `edit.unlock`; `by` is who released it, `None` when it expired.
    async fn announce_unlock(
        &self,
        lock: &LockRow,
        reason: &str,
        by: Option<&str>,
    ) -> Result<(), Error> {
        let k = &lock.key;
        // The channel was valid when the lock was taken; a namespace since
        // removed from the configuration still gets its event.
        let channel = Channel::parse(&format!("{}:{}", k.resource_type, k.resource_id))?;
        self.append(
            &k.tenant,
            by,
            &channel,
            "edit.unlock",
            json!({
                "lock_id": lock.lock_id,
                "resource_type": k.resource_type,
                "resource_id": k.resource_id,
                "field": k.field,
                "locked_by": locked_by(lock),
                "reason": reason,
            }),
        )
        .await
    }
}

/// Sweeps expired locks every [`LOCK_SWEEP_INTERVAL`] until `shutdown`.
/// On a cluster every node sweeps; each expired lock is announced once.
pub async fn run_lock_expiry(editing: Editing, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(LOCK_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = editing.expire_locks().await {
                    tracing::warn!(error = %e, "lock expiry sweep failed; retrying");
                }
            }
        }
    }
}

fn ttl_ms(secs: u64) -> Result<i64, Error> {
    if !(1..=MAX_LOCK_TTL_SECS).contains(&secs) {
        return Err(Error::invalid_message(format!(
            "ttl_seconds must be between 1 and {MAX_LOCK_TTL_SECS}"
        )));
    }
    Ok(secs as i64 * 1000)
}

fn locked_by(lock: &LockRow) -> Value {
    json!({ "user_id": lock.user_id, "name": lock.name })
}

fn lock_response(lock: &LockRow) -> LockResponse {
    LockResponse {
        lock_id: lock.lock_id.clone(),
        expires_at: format_timestamp(lock.expires_at),
        locked_by: Editor {
            user_id: lock.user_id.clone(),
            name: lock.name.clone(),
        },
    }
}

fn lock_gone(lock_id: &str) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!(
            "No lock '{}': it was released or has expired",
            lock_id.chars().take(128).collect::<String>()
        ),
    )
}
