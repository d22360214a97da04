//! Switchyard's core: everything the service means, free of HTTP and of any
//! database driver (PROTOCOL section in brackets).
//!
//! Ground floor, imported by everything above and importing nothing of the
//! crate: [`error`] (the domain error and its §11 codes, limit info, storage
//! faults), [`clock`] (the protocol's time), [`names`] (the grammar of ids,
//! namespaces and fields, and what client text may reach storage),
//! [`whole`] (integers in JSON bodies, as JSON Schema counts them).
//!
//! Above it:
//! - [`identity`] and [`auth`] (§1): who is asking, from a verified JWT;
//! - [`channel`] (§2): names, namespaces and who may read and write them;
//! - [`event`] (§3): the envelope, rendered once per event;
//! - [`storage`]: the traits the drivers implement (log, presence, editing);
//! - [`log`] (§3): the sequenced log: group-commit writer, fan-out hub,
//!   cursor readers, retention;
//! - [`limits`] (§12), [`expiry`] (token expiry on streams), [`metrics`];
//! - [`presence`] (§7) and [`edit`] (§8: OT in [`edit::ot`], sessions,
//!   documents and locks);
//! - [`inbox`] (§9, §9a): notifications, members kept by the server,
//!   conversations;
//! - [`session`] (§4, §5, §10): one subscription core for every transport:
//!   a [`session::Stream`] of typed items, and long polling;
//! - [`publish`] (§6): the publish command;
//! - [`realtime`]: the whole core as one value, with the commands every
//!   transport calls.
//!
//! Imports run one way, down this list; no two modules import each other.

pub mod auth;
pub mod channel;
pub mod clock;
pub mod edit;
pub mod error;
pub mod event;
pub mod expiry;
pub mod identity;
pub mod inbox;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod names;
pub mod presence;
pub mod publish;
pub mod realtime;
pub mod session;
pub mod storage;
pub mod whole;

pub use error::{Error, ErrorCode, RateInfo, StorageError, StorageFault};
pub use identity::Identity;
pub use realtime::{Charged, Made, Realtime, Settings};
