//! The sqlite implementation of [`EditStore`].

use async_trait::async_trait;

use super::SqliteStorage;
use crate::storage::edit::EditStore;

#[async_trait]
impl EditStore for SqliteStorage {}
