//! The postgres implementation of [`EditStore`].

use async_trait::async_trait;

use super::PostgresStorage;
use crate::storage::edit::EditStore;

#[async_trait]
impl EditStore for PostgresStorage {}
