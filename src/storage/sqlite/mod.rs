//! The SQLite backend, the embedded default, on rusqlite alone.
//!
//! Threads, not a pool: one writer thread owns the only connection that
//! writes, and runs every write transaction (log appends in group-commit
//! batches, edit batches, presence, locks, pruning) in arrival order;
//! SQLite has one write lock, and writers on several connections starve
//! each other in its busy handler, so one writer makes writes a FIFO queue.
//! A few reader threads own read-only connections and serve the reads
//! (WAL: readers never block the writer, and see every commit). An
//! in-memory database lives in its one connection: the writer serves its
//! reads too.
//!
//! Invariants: a transaction begun on a thread ends on it, committed, or
//! rolled back when its work fails or panics (the panic then reaches the
//! caller); log appends and edit batches commit with `synchronous = FULL`
//! (an acknowledged write survives a crash of the machine), everything else
//! with `NORMAL` (survives a crash of the process); work runs on a plain
//! thread, outside the async runtime, whose futures never suspend (see
//! [`tx`]), driven to completion by a minimal executor.

mod error;
mod migrate;
pub mod tx;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::future::BoxFuture;
use rusqlite::{Connection, OpenFlags};
use switchyard_core::storage::{Result, StorageError, StorageFault};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, Durability};
use super::tx::Tx;
use error::classify;
use tx::{Conn, SqliteTx};

/// Reader threads for a database file.
const READERS: usize = 4;
/// Each reader's page cache, KiB (SQLite's default is 2,000). Readers
/// serve the log's tail (recent events are in the hub's memory anyway),
/// short lookups and the presence sweep, which walks every online user
/// and would otherwise leave each reader holding its own copy of those
/// tables; the operating system's file cache still keeps the pages, and
/// the writer keeps the default cache for its indexes.
const READER_CACHE_KIB: i64 = 256;
/// How long a connection waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Work for a connection's thread.
type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// A thread that owns a connection and runs jobs on it in order.
struct Worker {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    /// Starts a thread serving `jobs` on connections from `open` (one per
    /// thread); several threads may share one queue.
    fn start(
        name: &str,
        threads: usize,
        open: impl Fn() -> rusqlite::Result<Connection> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let open = Arc::new(open);
        let mut handles = Vec::new();
        for n in 0..threads {
            // Opened here, so a bad path fails at start with its error.
            let conn = Conn::new(open()?);
            let rx = rx.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{n}"))
                    .spawn(move || serve(conn, &rx))?,
            );
        }
        // One handle is enough to join: the threads end together, when the
        // queue closes.
        let joiner = std::thread::spawn(move || {
            for handle in handles {
                let _ = handle.join();
            }
        });
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(joiner)),
        })
    }

    /// Runs `job` on one of the threads; `None` once closed.
    fn send(&self, job: Job) -> bool {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Lets the threads finish what is queued, then waits for them.
    async fn close(&self) {
        drop(self.jobs.lock().expect("jobs lock").take());
        let thread = self.thread.lock().expect("thread lock").take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// A connection thread's loop: one job at a time until the queue closes.
fn serve(mut conn: Conn, jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // Held only to take a job, so idle threads wait their turn here.
        let job = jobs.lock().expect("queue lock").recv();
        match job {
            Ok(job) => job(&mut conn),
            Err(_) => return,
        }
    }
}

/// The SQLite backend.
pub struct Sqlite {
    writer: Worker,
    /// `None` for an in-memory database: the writer reads too.
    readers: Option<Worker>,
}

/// Where a `sqlite:` URL points.
fn location(url: &str) -> anyhow::Result<Option<PathBuf>> {
    let rest = url
        .strip_prefix("sqlite:")
        .ok_or_else(|| anyhow::anyhow!("not a sqlite: URL"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let memory = path == ":memory:"
        || path == "//:memory:"
        || query.split('&').any(|kv| kv == "mode=memory");
    if memory {
        return Ok(None);
    }
    let path = path.strip_prefix("//").unwrap_or(path);
    anyhow::ensure!(!path.is_empty(), "sqlite URL names no file: {url}");
    Ok(Some(PathBuf::from(path)))
}

fn configure(db: &Connection, file: bool) -> rusqlite::Result<()> {
    db.busy_timeout(BUSY_TIMEOUT)?;
    if file {
        db.pragma_update(None, "journal_mode", "WAL")?;
    } else {
        db.pragma_update(None, "journal_mode", "MEMORY")?;
    }
    db.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

impl Sqlite {
    /// Opens (creating if missing) the database a `sqlite:` URL names.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let path = location(url)?;
        let writer_path = path.clone();
        let writer = Worker::start("sqlite-writer", 1, move || {
            let db = match &writer_path {
                Some(path) => Connection::open(path)?,
                None => Connection::open_in_memory()?,
            };
            configure(&db, writer_path.is_some())?;
            Ok(db)
        })?;
        let readers = match path {
            Some(path) => Some(Worker::start("sqlite-reader", READERS, move || {
                let db = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                db.busy_timeout(BUSY_TIMEOUT)?;
                // Readers never write: writes go through the one writer.
                db.pragma_update(None, "query_only", true)?;
                db.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
                Ok(db)
            })?),
            None => None,
        };
        Ok(Self { writer, readers })
    }

    /// Runs `job` on `worker`'s thread and waits for its answer; a panic in
    /// the job reaches the caller.
    async fn run<R: Send + 'static>(
        worker: &Worker,
        job: impl FnOnce(&mut Conn) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (reply, answer) = oneshot::channel();
        let sent = worker.send(Box::new(move |conn: &mut Conn| {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job(conn)));
            let _ = reply.send(outcome);
        }));
        if !sent {
            return Err(StorageError::new(
                StorageFault::Closed,
                "the database is closed",
            ));
        }
        match answer.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(StorageError::new(
                StorageFault::Other,
                "the database thread stopped",
            )),
        }
    }
}

/// Runs the rules' work to completion on this thread: its futures never
/// suspend (see [`tx`]).
fn finish<R>(
    tx: &mut SqliteTx<'_>,
    work: impl for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R>>,
) -> Result<R> {
    futures_executor::block_on(work(tx))
}

/// Begins a write transaction on `conn`, runs `work`, commits; rolls back
/// when `work` fails or panics.
fn write_transaction<R>(
    conn: &mut Conn,
    durability: Durability,
    work: impl for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R>>,
) -> Result<R> {
    let durable = durability == Durability::Durable;
    if durable {
        conn.db
            .execute_batch("PRAGMA synchronous = FULL")
            .map_err(classify)?;
    }
    // The write lock up front: a read-then-write transaction never has to
    // upgrade it (and fail with BUSY half way).
    conn.db.execute_batch("BEGIN IMMEDIATE").map_err(classify)?;
    let mut open = Open {
        conn: &mut *conn,
        done: false,
    };
    let outcome = finish(
        &mut SqliteTx {
            conn: &mut *open.conn,
        },
        work,
    );
    let outcome = outcome.and_then(|value| {
        open.conn.db.execute_batch("COMMIT").map_err(classify)?;
        open.done = true;
        Ok(value)
    });
    drop(open);
    if durable && let Err(e) = conn.db.execute_batch("PRAGMA synchronous = NORMAL") {
        // The transaction's outcome stands; later writes just sync more.
        tracing::warn!(error = %e, "could not restore synchronous = NORMAL");
    }
    outcome
}

/// A transaction begun on a connection: rolled back on drop unless done
/// (also when its work panics).
struct Open<'c> {
    conn: &'c mut Conn,
    done: bool,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if !self.done
            && !self.conn.db.is_autocommit()
            && let Err(e) = self.conn.db.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "could not roll back a failed write transaction");
        }
    }
}

impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        Self::run(&self.writer, |conn| migrate::run(&mut conn.db)).await
    }

    async fn write<R: Send + 'static>(
        &self,
        durability: Durability,
        work: impl for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R>> + Send + 'static,
    ) -> Result<R> {
        Self::run(&self.writer, move |conn| {
            write_transaction(conn, durability, work)
        })
        .await
    }

    async fn read<R: Send + 'static>(
        &self,
        work: impl for<'t> FnOnce(&'t mut dyn Tx) -> BoxFuture<'t, Result<R>> + Send + 'static,
    ) -> Result<R> {
        let worker = self.readers.as_ref().unwrap_or(&self.writer);
        Self::run(worker, move |conn| finish(&mut SqliteTx { conn }, work)).await
    }

    async fn listen(&self, _heads: tokio::sync::mpsc::Sender<u64>, _shutdown: CancellationToken) {
        // Nodes on one SQLite file find new events by the follower's head check.
    }

    async fn close(&self) {
        if let Some(readers) = &self.readers {
            readers.close().await;
        }
        self.writer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_file_or_memory() {
        assert_eq!(location("sqlite::memory:").unwrap(), None);
        assert_eq!(location("sqlite://:memory:").unwrap(), None);
        assert_eq!(location("sqlite://x.db?mode=memory").unwrap(), None);
        assert_eq!(
            location("sqlite://switchyard.db").unwrap(),
            Some(PathBuf::from("switchyard.db"))
        );
        assert_eq!(
            location("sqlite:///tmp/a.db?mode=rwc").unwrap(),
            Some(PathBuf::from("/tmp/a.db"))
        );
        assert!(location("sqlite://").is_err());
    }
}
