//! Retention: a background task deletes events past their namespace's
//! retention, remembering per channel the highest id it removed so that
//! readers with older cursors get a `reset`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::event::now_ms;
use crate::storage::Storage;

pub async fn run(storage: Arc<dyn Storage>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match storage.prune(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "pruned expired events"),
            Err(e) => tracing::warn!(error = %e, "pruning failed; will retry"),
        }
    }
}
