//! The sqlite implementation of [`PresenceStore`](crate::storage::presence::PresenceStore):
//! the shared SQL in `storage/presence.rs` runs unchanged here.

use super::SqliteStorage;

crate::storage::presence::impl_presence_store!(SqliteStorage);
