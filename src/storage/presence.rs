//! Storage for presence, viewing and typing (PROTOCOL §7), shared by every
//! node of a cluster.

use async_trait::async_trait;

/// What presence needs from storage; implemented for each backend in
/// `sqlite/presence.rs` and `postgres/presence.rs`.
#[async_trait]
pub trait PresenceStore: Send + Sync {}
