//! The readers a feed wakes: a set of (stream id, signal, the feed's bit in
//! that reader's keys) kept as a Vec sorted by stream id.
//!
//! Most feeds have one reader (a stream's own `user:` inbox): a Vec of one
//! costs 32 heap bytes where a hash map costs a 96-byte table, and every
//! idle stream holds one. A feed with many readers is woken by walking a
//! slice, faster than a map's buckets; adding or removing one of n readers
//! is a binary search and a move of at most n * 16 bytes.
//!
//! Invariant: ids are unique and ascending.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// How the hub tells a reader that some of its feeds have news: which ones
/// (bit i for its i-th key, the last bit for keys 63 and after), then a
/// wake-up. Marks are set and cleared under the hub's lock.
#[derive(Default)]
pub struct Signal {
    pub notify: Notify,
    pub(super) dirty: AtomicU64,
}

impl Signal {
    /// A reader's signal before its first read: every feed to be read.
    pub fn new() -> Self {
        Self {
            notify: Notify::new(),
            dirty: AtomicU64::new(u64::MAX),
        }
    }
}

#[derive(Default)]
pub(super) struct Readers(Vec<(u64, Arc<Signal>, u64)>);

impl Readers {
    /// Adds `stream` (which knows this feed by `bit`), or replaces its
    /// entry if it is already here.
    pub(super) fn insert(&mut self, stream: u64, signal: &Arc<Signal>, bit: u64) {
        match self.0.binary_search_by_key(&stream, |(id, ..)| *id) {
            Ok(at) => self.0[at] = (stream, signal.clone(), bit),
            Err(at) => {
                // The first reader gets room for exactly one: most feeds
                // never have a second.
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(at, (stream, signal.clone(), bit));
            }
        }
    }

    /// Removes `stream`; whether it was here.
    pub(super) fn remove(&mut self, stream: u64) -> bool {
        match self.0.binary_search_by_key(&stream, |(id, ..)| *id) {
            Ok(at) => {
                self.0.remove(at);
                if self.0.is_empty() {
                    // An idle feed keeps no room for readers.
                    self.0 = Vec::new();
                } else if self.0.capacity() > 4 * self.0.len() {
                    self.0.shrink_to(2 * self.0.len());
                }
                true
            }
            Err(_) => false,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The readers' stream ids, ascending.
    pub(super) fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|(id, ..)| *id)
    }

    /// Wakes every reader, marking this feed as one to read (`all`: every
    /// feed of theirs). Called under the hub's lock, as reads clear marks.
    pub(super) fn wake(&self, all: bool) {
        for (_, signal, bit) in &self.0 {
            let bits = if all { u64::MAX } else { *bit };
            signal.dirty.fetch_or(bits, Ordering::Relaxed);
            signal.notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_stay_sorted_unique_and_give_back_their_room() {
        let signal = Arc::new(Signal::default());
        let mut readers = Readers::default();
        for id in [5, 1, 9, 3, 5] {
            readers.insert(id, &signal, 1);
        }
        assert_eq!(readers.ids().collect::<Vec<_>>(), [1, 3, 5, 9]);
        assert!(readers.remove(3));
        assert!(!readers.remove(3));
        assert_eq!(readers.ids().collect::<Vec<_>>(), [1, 5, 9]);
        for id in [1, 5, 9] {
            assert!(readers.remove(id));
        }
        assert!(readers.is_empty());
        assert_eq!(readers.0.capacity(), 0);
        readers.insert(7, &signal, 1);
        assert_eq!(readers.0.capacity(), 1);
    }

    #[test]
    fn a_crowd_leaving_shrinks_the_room() {
        let signal = Arc::new(Signal::default());
        let mut readers = Readers::default();
        for id in 0..1000 {
            readers.insert(id, &signal, 1);
        }
        for id in 10..1000 {
            assert!(readers.remove(id));
        }
        assert_eq!(readers.len(), 10);
        assert!(readers.0.capacity() <= 40, "{}", readers.0.capacity());
    }
}
