//! Retention: a background task deletes events past their namespace's
//! retention, remembering per channel the highest id it removed so that
//! readers with older cursors get a `reset`.
//!
//! Every finished pass is counted ([`passes`]): the hub drops what it holds
//! in memory when the count moves, so a pruned event is not served from
//! memory for longer than one pass (on every node, as each runs its own
//! pruner over the shared log), and a storage read taken across a pass never
//! seeds memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::storage::Storage;

/// Prune passes finished in this process.
static PASSES: AtomicU64 = AtomicU64::new(0);

/// How many prune passes have finished in this process.
pub fn passes() -> u64 {
    PASSES.load(Ordering::Acquire)
}

pub async fn run(storage: Arc<dyn Storage>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pruned = storage.prune(now_ms()).await;
        if pruned.is_ok() {
            // Also after a pass that removed nothing here: another node's
            // pass may have removed events this node holds in memory.
            PASSES.fetch_add(1, Ordering::AcqRel);
        }
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "pruned expired events"),
            Err(e) => tracing::warn!(error = %e, "pruning failed; will retry"),
        }
    }
}
