//! Token expiry on open streams (PROTOCOL §1): `token.expiring` 300 s
//! before `exp` (at once when less remains), then `token.expired` at `exp`,
//! after which the stream closes. Part of every stream's session
//! ([`crate::session`]).

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How long before `exp` the warning goes out.
pub const WARNING: Duration = Duration::from_secs(300);

/// The system messages one stream still owes its client.
pub struct TokenExpiry {
    expires_at: Instant,
    warned: bool,
    /// One timer for the stream's life, moved on after each notice, so a
    /// stream's event loop does not register a timer per wake-up.
    timer: Pin<Box<Sleep>>,
}

/// What [`TokenExpiry::next`] announces.
pub enum Notice {
    /// `token.expiring`: the token expires in this many seconds; go on.
    Expiring { expires_in: u64 },
    /// `token.expired`: close.
    Expired,
}

impl TokenExpiry {
    /// For a token whose `exp` is `exp_secs` (seconds since the epoch).
    pub fn new(exp_secs: i64) -> Self {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let left = Duration::from_millis(
            exp_secs.saturating_mul(1000).saturating_sub(now_ms).max(0) as u64,
        );
        let expires_at = Instant::now() + left;
        Self {
            expires_at,
            warned: false,
            timer: Box::pin(tokio::time::sleep_until(
                expires_at.checked_sub(WARNING).unwrap_or(expires_at),
            )),
        }
    }

    /// Waits for the next notice. Cancel-safe: state changes only on return.
    pub async fn next(&mut self) -> Notice {
        self.timer.as_mut().await;
        if !self.warned {
            self.warned = true;
            self.timer.as_mut().reset(self.expires_at);
            let left = self.expires_at.saturating_duration_since(Instant::now());
            let expires_in = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            return Notice::Expiring { expires_in };
        }
        Notice::Expired
    }
}
