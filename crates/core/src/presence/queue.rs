//! The queue of session writes waiting for presence's drain task (see
//! `sessions`): what is queued, and whether a drain runs.

use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::error::Error;
use crate::storage::presence::SessionWrite;

/// Writes waiting for the drain task.
#[derive(Default)]
pub(super) struct Queue(Mutex<Queued>);

#[derive(Default)]
pub(super) struct Queued {
    pub(super) jobs: Vec<Job>,
    /// A drain task is running (it takes what is queued until nothing is).
    pub(super) draining: bool,
}

pub(super) struct Job {
    pub(super) write: SessionWrite,
    /// The caller waiting for the batch; `None` for a closing stream.
    pub(super) reply: Option<oneshot::Sender<Result<(), Error>>>,
}

impl Queue {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.0.lock().expect("session queue lock")
    }
}
