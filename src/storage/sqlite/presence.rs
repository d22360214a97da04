//! The sqlite implementation of [`PresenceStore`].

use async_trait::async_trait;

use super::SqliteStorage;
use crate::storage::presence::PresenceStore;

#[async_trait]
impl PresenceStore for SqliteStorage {}
