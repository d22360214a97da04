//! Switchyard's WebSocket messages in protobuf (`switchyard.v1`), as prost
//! types: one per message of `proto/switchyard.proto`, with the same names,
//! field numbers and types, laid out as `prost-build` would generate them
//! (a oneof is the enum `Message` in a module named after its message).
//!
//! They are written by hand, not generated, so that building Switchyard
//! needs no `protoc`. The .proto is the contract: tests/protobuf/ drives
//! the server with a client that protoc generated from it and checks every
//! field both ways, so a type here that drifts from the file fails there.
//!
//! Free JSON (event and ack `data`, error `details`, request bodies) is
//! JSON text in a `bytes` field; empty means absent. The .proto says why.

use bytes::Bytes;

/// One client frame.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientMessage {
    #[prost(string, optional, tag = "1")]
    pub ack_id: Option<String>,
    #[prost(
        oneof = "client_message::Message",
        tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
    )]
    pub message: Option<client_message::Message>,
}

pub mod client_message {
    /// What a client frame asks for.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        #[prost(message, tag = "2")]
        Subscribe(super::Subscribe),
        #[prost(message, tag = "3")]
        Unsubscribe(super::Unsubscribe),
        #[prost(message, tag = "4")]
        Ping(super::Ping),
        #[prost(message, tag = "5")]
        Pong(super::Pong),
        #[prost(message, tag = "6")]
        Publish(super::Publish),
        #[prost(message, tag = "7")]
        Presence(super::Presence),
        #[prost(message, tag = "8")]
        Edit(super::Edit),
        #[prost(message, tag = "9")]
        Notifications(super::Action),
        #[prost(message, tag = "10")]
        Conversations(super::Action),
        #[prost(message, tag = "11")]
        Members(super::Action),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Subscribe {
    #[prost(string, repeated, tag = "1")]
    pub channels: Vec<String>,
    #[prost(uint64, optional, tag = "2")]
    pub last_event_id: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Unsubscribe {
    #[prost(string, repeated, tag = "1")]
    pub channels: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(int64, optional, tag = "1")]
    pub timestamp: Option<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {
    #[prost(int64, optional, tag = "1")]
    pub timestamp: Option<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Publish {
    #[prost(string, optional, tag = "1")]
    pub channel: Option<String>,
    #[prost(string, repeated, tag = "2")]
    pub channels: Vec<String>,
    #[prost(string, optional, tag = "3")]
    pub event: Option<String>,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    #[prost(uint64, optional, tag = "5")]
    pub expected_last_id: Option<u64>,
    #[prost(message, repeated, tag = "6")]
    pub events: Vec<PublishItem>,
    #[prost(string, optional, tag = "7")]
    pub idempotency_key: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub user_id: Option<String>,
    #[prost(bool, optional, tag = "9")]
    pub exclude_self: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PublishItem {
    #[prost(string, optional, tag = "1")]
    pub channel: Option<String>,
    #[prost(string, repeated, tag = "2")]
    pub channels: Vec<String>,
    #[prost(string, tag = "3")]
    pub event: String,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    #[prost(uint64, optional, tag = "5")]
    pub expected_last_id: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Presence {
    #[prost(string, tag = "1")]
    pub action: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Edit {
    #[prost(string, tag = "1")]
    pub action: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
}

/// `Notifications`, `Conversations` and `Members` of the .proto: the same
/// shape (an action and its JSON data), one type here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Action {
    #[prost(string, tag = "1")]
    pub action: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
}

/// One server frame.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMessage {
    #[prost(string, optional, tag = "1")]
    pub ack_id: Option<String>,
    #[prost(oneof = "server_message::Message", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10")]
    pub message: Option<server_message::Message>,
}

pub mod server_message {
    /// What a server frame carries.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Message {
        #[prost(message, tag = "2")]
        Connected(super::Connected),
        #[prost(message, tag = "3")]
        Event(super::Event),
        #[prost(message, tag = "4")]
        Subscription(super::Subscription),
        #[prost(message, tag = "5")]
        Ack(super::Ack),
        #[prost(message, tag = "6")]
        Error(super::Error),
        #[prost(message, tag = "7")]
        Reset(super::Reset),
        #[prost(message, tag = "8")]
        System(super::System),
        #[prost(message, tag = "9")]
        Ping(super::Ping),
        #[prost(message, tag = "10")]
        Pong(super::Pong),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Connected {
    #[prost(string, tag = "1")]
    pub connection_id: String,
    #[prost(string, tag = "2")]
    pub user_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub channel: String,
    #[prost(string, tag = "3")]
    pub event: String,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    #[prost(string, optional, tag = "5")]
    pub user_id: Option<String>,
    #[prost(string, tag = "6")]
    pub timestamp: String,
    #[prost(string, repeated, tag = "7")]
    pub channels: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Subscription {
    #[prost(string, tag = "1")]
    pub status: String,
    #[prost(string, repeated, tag = "2")]
    pub channels: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub errors: Vec<ChannelError>,
    #[prost(string, repeated, tag = "4")]
    pub removed: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChannelError {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(string, tag = "2")]
    pub code: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    #[prost(string, tag = "1")]
    pub status: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Error {
    #[prost(string, tag = "1")]
    pub code: String,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub details: Bytes,
    #[prost(string, tag = "4")]
    pub request_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reset {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(uint64, tag = "2")]
    pub oldest_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct System {
    #[prost(string, tag = "1")]
    pub event: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub data: Bytes,
}
