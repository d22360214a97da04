//! Collaborative editing (PROTOCOL §8): operational transformation on the
//! server. [`ot`] is the pure core: operations, apply, transform, compose.
//! [`Editing`] ([`service`], [`operations`], [`locks`]) is what every
//! transport calls, with the request and answer bodies of [`api`]; storage
//! sits behind [`crate::storage::edit::EditStore`].
//!
//! Ordering of `edit.operation` events: the database lock serializes
//! transform-and-apply per document on every node, and the [`sequencer`]
//! keeps commit-then-append in revision order within one node. Operations
//! that queue up on one document are applied as one batch: one transaction
//! and one log commit for all of them ([`operations`]). Two nodes
//! committing consecutive revisions of one document can still append their
//! events in the opposite order, so clients apply `edit.operation` events by
//! `revision`, not by arrival.

pub mod api;
pub mod locks;
pub mod operations;
pub mod ot;
pub mod sequencer;
pub mod service;

pub use api::*;
pub use locks::run_lock_expiry;
pub use service::{DEFAULT_SESSION_IDLE, Editing, MAX_DOCUMENT_BYTES};
