//! Who is asking (PROTOCOL §1), once a token has been verified: the
//! [`Identity`] every core operation takes. A leaf above `error`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Error;

/// The tenant of tokens that name none.
pub const DEFAULT_TENANT: &str = "default";

/// Channels a user is a member of (PROTOCOL §9a), each with the log id
/// the membership began at.
pub type MemberSet = HashMap<String, u64>;

/// Who is asking, after the token has been verified.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user_id: String,
    pub tenant: String,
    pub name: Option<String>,
    pub avatar: Option<String>,
    /// Channel patterns readable beyond the namespace defaults.
    pub channels: Vec<String>,
    /// Channel patterns writable with `POST /realtime/publish`.
    pub publish: Vec<String>,
    /// A trusted backend: may read and write every channel of its tenant.
    pub is_service: bool,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// Channels the server lists the user as a member of (PROTOCOL §9a):
    /// read (and written, where the namespace takes client writes) as if
    /// the token named them. Filled in after verification.
    pub member_of: Arc<MemberSet>,
}

impl Identity {
    /// Whether the server lists the user as a member of `channel`.
    pub fn is_member(&self, channel: &str) -> bool {
        self.member_of.contains_key(channel)
    }

    /// PROTOCOL §1: a request naming a `user_id` (as old polling clients
    /// do) other than the token's gets 403.
    pub fn check_named_user(&self, named: Option<&str>) -> Result<(), Error> {
        match named {
            Some(id) if id != self.user_id => Err(Error::permission_denied(format!(
                "user_id '{id}' does not match the token's subject"
            ))),
            _ => Ok(()),
        }
    }
}
