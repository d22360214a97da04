//! One turn at a time per document, in this process.
//!
//! The database lock serializes transform-and-apply, but it is released at
//! commit, before the `edit.operation` event is appended; two operations on
//! one document could then reach the log in the wrong order. A [`Turn`] is
//! held from before the transaction until the event is appended, so on one
//! node the events of a document enter the log in revision order (across
//! nodes this does not hold; see [`crate::edit`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::storage::edit::DocKey;

#[derive(Default)]
pub struct Sequencer {
    /// One async mutex per document with a turn taken or waited for. A std
    /// mutex, held only to find or drop an entry, never across `.await`;
    /// entries go when their last user does, so the map stays small.
    turns: Mutex<HashMap<DocKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// The right to commit and announce one change of a document.
pub struct Turn<'a> {
    sequencer: &'a Sequencer,
    key: DocKey,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Sequencer {
    /// Waits for `key`'s turn.
    pub async fn turn(&self, key: &DocKey) -> Turn<'_> {
        let mutex = self
            .turns
            .lock()
            .expect("turns lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = mutex.lock_owned().await;
        Turn {
            sequencer: self,
            key: key.clone(),
            guard: Some(guard),
        }
    }

    /// Documents with a turn taken or awaited (for tests).
    pub fn len(&self) -> usize {
        self.turns.lock().expect("turns lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = self.sequencer.turns.lock().expect("turns lock");
        // Only the map's own reference left: nobody holds or awaits a turn.
        if turns
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            turns.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> DocKey {
        DocKey {
            tenant: "t".into(),
            resource_type: "task".into(),
            resource_id: id.into(),
            field: "f".into(),
        }
    }

    #[tokio::test]
    async fn turns_are_exclusive_per_document_and_cleaned_up() {
        let s = Arc::new(Sequencer::default());
        let first = s.turn(&key("1")).await;
        // Another document is not blocked.
        drop(s.turn(&key("2")).await);
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move {
                let _t = s.turn(&key("1")).await;
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the second turn waits for the first");
        drop(first);
        waiter.await.unwrap();
        assert!(s.is_empty(), "no entries left behind");
    }
}
