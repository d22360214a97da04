//! The postgres implementation of [`PresenceStore`](crate::storage::presence::PresenceStore):
//! the shared SQL in `storage/presence.rs` runs unchanged here.

use super::PostgresStorage;

crate::storage::presence::impl_presence_store!(PostgresStorage);
