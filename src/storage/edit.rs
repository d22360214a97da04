//! Storage for collaborative editing (PROTOCOL §8): documents, their
//! operation history, edit sessions and locks.

use async_trait::async_trait;

/// What editing needs from storage; implemented for each backend in
/// `sqlite/edit.rs` and `postgres/edit.rs`.
#[async_trait]
pub trait EditStore: Send + Sync {}
