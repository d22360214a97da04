//! Collaborative editing (PROTOCOL §8): operational transformation on the
//! server. [`ot`] is the pure core: operations, apply, transform, compose.
//! [`Editing`] ([`service`], [`operations`], [`locks`], [`documents`]:
//! seeded and backend-set content) holds every rule,
//! behind the core's commands ([`crate::realtime`]), with the request and
//! answer bodies of [`api`]; storage sits behind
//! [`crate::storage::edit::EditStore`].
//!
//! Ordering of `edit.operation` events: an operation's event is appended in
//! the transaction that applies it, under the document's database lock, so
//! a document's events have ids in revision order on every node of a
//! cluster, and every reader gets them in that order. Operations that queue
//! up on one document are applied as one batch, one transaction for all of
//! them; the [`sequencer`] keeps one batch per document in flight on a node
//! ([`operations`]).

pub mod api;
pub mod documents;
pub mod locks;
pub mod operations;
pub mod ot;
pub mod pending;
pub mod sequencer;
pub mod service;

pub use api::*;
pub use locks::run_lock_expiry;
pub use service::{DEFAULT_SESSION_IDLE, Editing, MAX_DOCUMENT_BYTES};
