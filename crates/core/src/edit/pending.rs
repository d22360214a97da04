//! An operation waiting for its document's turn ([`super::sequencer`]):
//! what it is, and where its caller waits for the answer.

use tokio::sync::oneshot;

use super::api::SubmitOperationResponse;
use super::ot::Operation;
use crate::channel::Channel;
use crate::error::Error;
use crate::storage::edit::SessionRow;

/// A caller's answer to one operation.
pub type Answer = Result<SubmitOperationResponse, Error>;

/// An operation to apply, as its batch's verdicts see it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub session: SessionRow,
    /// The resource's channel, where its `edit.operation` goes.
    pub channel: Channel,
    pub op: Operation,
    /// The revision the operation was made against.
    pub base: u64,
    pub client_op_id: Option<String>,
}

/// A queued operation and its waiting caller.
pub struct Pending {
    pub queued: Queued,
    pub reply: oneshot::Sender<Answer>,
}
