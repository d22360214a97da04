//! What a database backend provides: transactions to run the storage rules
//! in, and the little that is not SQL (migrations, cross-node
//! notifications, closing).

use std::future::Future;

use futures_util::future::BoxFuture;
use switchyard_core::storage::Result;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::tx::Tx;

/// How much a write must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// An acknowledged write that must survive a crash of the machine
    /// (log appends, edit batches): synced at commit.
    Durable,
    /// Everything else (presence, sessions, locks, pruning): survives a
    /// crash of the process.
    Normal,
}

/// One database backend. Work runs in one transaction: it gets the
/// transaction and returns a future borrowing it; it is owned (`'static`)
/// because a backend may run it on a thread of its own.
pub trait Backend: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn name(&self) -> &'static str;

    /// Applies pending migrations.
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send;

    /// Runs `work` in one write transaction: committed if it returns `Ok`,
    /// rolled back otherwise (and if it panics).
    fn write<R: Send + 'static>(
        &self,
        durability: Durability,
        work: impl for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R>> + Send + 'static,
    ) -> impl Future<Output = Result<R>> + Send;

    /// Runs `work` on a connection that sees everything committed so far;
    /// it must only read.
    fn read<R: Send + 'static>(
        &self,
        work: impl for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R>> + Send + 'static,
    ) -> impl Future<Output = Result<R>> + Send;

    /// Reports log heads appended by other processes on `heads` until
    /// `shutdown` (see `Storage::listen`); backends without cross-process
    /// notifications return at once.
    fn listen(
        &self,
        heads: mpsc::Sender<u64>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send;

    /// Closes the backend after in-flight work.
    fn close(&self) -> impl Future<Output = ()> + Send;
}
