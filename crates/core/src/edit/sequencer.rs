//! One turn at a time per document, in this process, and the operations
//! queued for it.
//!
//! Operations that arrive while a turn is taken wait in the document's
//! queue; the next turn holder takes them all ([`Turn::take_queued`]) and
//! applies them as one batch, so one transaction (and one fsync) serves
//! many operations, and a node never has two transactions of one document
//! waiting on its database lock. A save takes the turn too, so on one node
//! `edit.saved` for revision N follows `edit.operation` N. Invariant:
//! whoever queues an item then takes a turn, so no item is left behind (it
//! is taken by that turn or an earlier one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::storage::edit::DocKey;

pub struct Sequencer<T> {
    /// One entry per document with a turn taken or waited for. A std mutex,
    /// held only to find or drop an entry, never across `.await`; entries go
    /// when their last user does, so the map stays small.
    documents: Mutex<HashMap<DocKey, Arc<Document<T>>>>,
}

struct Document<T> {
    /// Held by the turn holder, from its transaction until its events are appended.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Items waiting for a turn, oldest first. A std mutex: pushed and
    /// drained in one step each, never across `.await`.
    queued: Mutex<Vec<T>>,
}

/// The right to commit and announce changes of one document.
pub struct Turn<'a, T> {
    sequencer: &'a Sequencer<T>,
    key: DocKey,
    document: Arc<Document<T>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<T> Default for Sequencer<T> {
    fn default() -> Self {
        Self {
            documents: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Sequencer<T> {
    /// Waits for `key`'s turn.
    pub async fn turn(&self, key: &DocKey) -> Turn<'_, T> {
        self.take_turn(key, None).await
    }

    /// Queues `item` for `key`, then waits for the turn. The item may have
    /// been taken by an earlier turn by then.
    pub async fn queue(&self, key: &DocKey, item: T) -> Turn<'_, T> {
        self.take_turn(key, Some(item)).await
    }

    async fn take_turn(&self, key: &DocKey, item: Option<T>) -> Turn<'_, T> {
        let document = {
            let mut documents = self.documents.lock().expect("documents lock");
            let document = documents
                .entry(key.clone())
                .or_insert_with(|| {
                    Arc::new(Document {
                        turn: Arc::default(),
                        queued: Mutex::new(Vec::new()),
                    })
                })
                .clone();
            // Queued under the map lock, so the entry cannot go meanwhile.
            if let Some(item) = item {
                document.queued.lock().expect("queue lock").push(item);
            }
            document
        };
        let guard = document.turn.clone().lock_owned().await;
        Turn {
            sequencer: self,
            key: key.clone(),
            document,
            guard: Some(guard),
        }
    }

    /// Documents with a turn taken or awaited (for tests).
    pub fn len(&self) -> usize {
        self.documents.lock().expect("documents lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Turn<'_, T> {
    /// Takes up to `max` queued items, oldest first.
    pub fn take_queued(&self, max: usize) -> Vec<T> {
        let mut queued = self.document.queued.lock().expect("queue lock");
        let n = queued.len().min(max);
        queued.drain(..n).collect()
    }
}

impl<T> Drop for Turn<'_, T> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut documents = self.sequencer.documents.lock().expect("documents lock");
        // Only the map's reference and ours: nobody holds or awaits a turn,
        // so nobody has anything queued.
        if Arc::strong_count(&self.document) == 2 {
            documents.remove(&self.key);
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
        let s = Arc::new(Sequencer::<()>::default());
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

    #[tokio::test]
    async fn items_queued_during_a_turn_are_taken_by_the_next_one() {
        let s = Arc::new(Sequencer::<u32>::default());
        let first = s.queue(&key("1"), 0).await;
        assert_eq!(first.take_queued(10), vec![0]);
        let mut waiters = Vec::new();
        for n in 1..=3 {
            let s = s.clone();
            waiters.push(tokio::spawn(async move {
                let turn = s.queue(&key("1"), n).await;
                turn.take_queued(2)
            }));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(first);
        let mut taken = Vec::new();
        for w in waiters {
            taken.push(w.await.unwrap());
        }
        // The next turn takes at most its bound, the one after the rest,
        // the last finds nothing left.
        assert_eq!(taken, vec![vec![1, 2], vec![3], vec![]]);
        assert!(s.is_empty(), "no entries left behind");
    }
}
