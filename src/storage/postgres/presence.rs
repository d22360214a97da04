//! The postgres implementation of [`PresenceStore`].

use async_trait::async_trait;

use super::PostgresStorage;
use crate::storage::presence::PresenceStore;

#[async_trait]
impl PresenceStore for PostgresStorage {}
