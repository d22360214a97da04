//! A stream's one timer: token expiry (PROTOCOL §1: `token.expiring` 300 s
//! before `exp`, at once when less remains, then `token.expired` at `exp`,
//! after which the stream closes) and, for transports that ask for it, the
//! keep-alive heartbeat (§4: a `: ping` when nothing was written for a
//! while). Part of every stream's session ([`crate::session`]).
//!
//! Invariants: one `Sleep` per stream for its whole life, moved only when
//! it fires (an item delivered costs a flag, not a timer); the heartbeat
//! ticks every half interval and announces [`Notice::Quiet`] only when no
//! item went out since the previous tick, so a quiet stream hears from the
//! server at least once an interval.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How long before `exp` the warning goes out.
pub const WARNING: Duration = Duration::from_secs(300);

/// The system messages one stream still owes its client, and its heartbeat.
pub struct StreamTimer {
    expires_at: Instant,
    warned: bool,
    /// Half the keep-alive interval, and when the heartbeat ticks next.
    heartbeat: Option<(Duration, Instant)>,
    /// An item went out since the last heartbeat tick.
    active: bool,
    timer: Pin<Box<Sleep>>,
}

/// What [`StreamTimer::next`] announces.
pub enum Notice {
    /// `token.expiring`: the token expires in this many seconds; go on.
    Expiring { expires_in: u64 },
    /// `token.expired`: close.
    Expired,
    /// Nothing went out for a while: time for a keep-alive.
    Quiet,
}

impl StreamTimer {
    /// For a token whose `exp` is `exp_secs` (seconds since the epoch),
    /// with a heartbeat every `keepalive` when one is asked for.
    pub fn new(exp_secs: i64, keepalive: Option<Duration>) -> Self {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let left = Duration::from_millis(
            exp_secs.saturating_mul(1000).saturating_sub(now_ms).max(0) as u64,
        );
        let now = Instant::now();
        let expires_at = now + left;
        let heartbeat = keepalive.map(|every| {
            let half = (every / 2).max(Duration::from_millis(1));
            (half, now + half)
        });
        let mut this = Self {
            expires_at,
            warned: false,
            heartbeat,
            active: false,
            timer: Box::pin(tokio::time::sleep_until(now)),
        };
        let due = this.due();
        this.timer.as_mut().reset(due);
        this
    }

    /// Asks for a heartbeat every `keepalive` from now on.
    pub fn keep_alive(&mut self, keepalive: Duration) {
        let half = (keepalive / 2).max(Duration::from_millis(1));
        self.heartbeat = Some((half, Instant::now() + half));
        let due = self.due();
        self.timer.as_mut().reset(due);
    }

    /// An item went out: the next heartbeat tick stays quiet.
    pub fn active(&mut self) {
        self.active = true;
    }

    /// When the next expiry notice is due.
    fn notice_due(&self) -> Instant {
        if self.warned {
            self.expires_at
        } else {
            self.expires_at
                .checked_sub(WARNING)
                .unwrap_or(self.expires_at)
        }
    }

    fn due(&self) -> Instant {
        match self.heartbeat {
            Some((_, tick)) => tick.min(self.notice_due()),
            None => self.notice_due(),
        }
    }

    /// Waits for the next notice. Cancel-safe: state changes only on return.
    pub async fn next(&mut self) -> Notice {
        loop {
            self.timer.as_mut().await;
            let now = Instant::now();
            if now >= self.notice_due() {
                let notice = if self.warned {
                    Notice::Expired
                } else {
                    self.warned = true;
                    let left = self.expires_at.saturating_duration_since(now);
                    let expires_in = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                    Notice::Expiring { expires_in }
                };
                let due = self.due();
                self.timer.as_mut().reset(due);
                return notice;
            }
            if let Some((half, tick)) = &mut self.heartbeat
                && now >= *tick
            {
                *tick = now + *half;
                let quiet = !std::mem::take(&mut self.active);
                let due = self.due();
                self.timer.as_mut().reset(due);
                if quiet {
                    return Notice::Quiet;
                }
                continue;
            }
            // Woken early (a reset raced the wheel): wait on.
            let due = self.due();
            self.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_an_hour() -> i64 {
        chrono::Utc::now().timestamp() + 3600
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_hears_once_a_half_interval_and_a_busy_one_never() {
        let mut timer = StreamTimer::new(in_an_hour(), Some(Duration::from_secs(10)));
        let started = Instant::now();
        assert!(matches!(timer.next().await, Notice::Quiet));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(matches!(timer.next().await, Notice::Quiet));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        // An item before every tick: a minute without a heartbeat.
        for _ in 0..12 {
            timer.active();
            let waited = tokio::time::timeout(Duration::from_millis(4500), timer.next()).await;
            assert!(waited.is_err(), "a tick after activity announced a notice");
        }
        // Then quiet: heard within an interval (the first tick may still
        // see the last item).
        let before = Instant::now();
        assert!(matches!(timer.next().await, Notice::Quiet));
        assert!(before.elapsed() <= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_warns_then_expires_without_a_heartbeat() {
        let exp = chrono::Utc::now().timestamp() + 400;
        let mut timer = StreamTimer::new(exp, None);
        let started = Instant::now();
        assert!(matches!(timer.next().await, Notice::Expiring { .. }));
        assert!(started.elapsed() >= Duration::from_secs(99));
        assert!(matches!(timer.next().await, Notice::Expired));
        assert!(started.elapsed() >= Duration::from_secs(399));
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_and_expiry_share_the_timer() {
        let exp = chrono::Utc::now().timestamp() + 320;
        let mut timer = StreamTimer::new(exp, Some(Duration::from_secs(30)));
        let mut quiet = 0;
        loop {
            match timer.next().await {
                Notice::Quiet => quiet += 1,
                Notice::Expiring { .. } => break,
                Notice::Expired => panic!("expired before the warning"),
            }
        }
        // About 20 s to the warning at 15 s ticks: one quiet tick.
        assert_eq!(quiet, 1);
    }
}
