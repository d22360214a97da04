//! The protobuf form says what the JSON form says, field for field: these
//! fail when a JSON message gains a field the protobuf one lacks.

use std::collections::BTreeSet;

use prost::Message as _;
use serde_json::{Value, json};
use switchyard_core::channel::ChannelError;
use switchyard_core::publish::{BatchItem, PublishRequest};
use switchyard_core::session::{Item, Subscribed};
use switchyard_core::storage::CursorExpired;
use switchyard_core::{Error, ErrorCode};

use super::*;

fn json_of(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes).expect("JSON text")
    }
}

/// A server message back in its JSON form, by the .proto's field names.
fn reply_json(message: &proto::ServerMessage) -> Value {
    use server_message::Message as M;
    let mut value = match message.message.as_ref().expect("a message") {
        M::Connected(m) => {
            json!({"type": "connected", "connection_id": m.connection_id, "user_id": m.user_id})
        }
        M::Event(m) => json!({"type": "event", "id": m.id, "channel": m.channel, "event": m.event,
            "data": json_of(&m.data), "user_id": m.user_id, "timestamp": m.timestamp}),
        M::Subscription(m) => {
            let mut v = json!({"type": "subscription", "status": m.status,
                "channels": m.channels,
                "errors": m.errors.iter().map(|e| json!({"channel": e.channel, "code": e.code})).collect::<Vec<_>>()});
            // The JSON message names `removed` only when it has some.
            if !m.removed.is_empty() {
                v["removed"] = json!(m.removed);
            }
            v
        }
        M::Ack(m) => json!({"type": "ack", "status": m.status, "data": json_of(&m.data)}),
        M::Error(m) => json!({"type": "error", "code": m.code, "message": m.message,
            "details": json_of(&m.details), "request_id": m.request_id}),
        M::Reset(m) => json!({"type": "reset", "reason": m.reason, "oldest_id": m.oldest_id}),
        M::System(m) => {
            let mut v = json!({"type": "system", "event": m.event});
            if !m.data.is_empty() {
                v["data"] = json_of(&m.data);
            }
            v
        }
        M::Ping(m) => json!({"type": "ping", "timestamp": m.timestamp}),
        M::Pong(m) => json!({"type": "pong", "timestamp": m.timestamp}),
    };
    if let Some(ack_id) = &message.ack_id {
        value["ack_id"] = json!(ack_id);
    }
    value
}

fn event(user_id: Option<&str>, data: &str) -> std::sync::Arc<Event> {
    Event::new(
        42,
        "acme".into(),
        "task:123".into(),
        "task.updated".into(),
        data.into(),
        user_id.map(str::to_string),
        1_763_823_942_123,
    )
}

#[test]
fn an_event_frame_says_what_its_json_envelope_says_and_is_made_once() {
    for (user, data) in [
        (
            Some("alice"),
            r#"{"n":12345678901234567890,"x":0.1,"s":"é\n"}"#,
        ),
        (None, "null"),
    ] {
        let event = event(user, data);
        let frame = event_frame(&event);
        let decoded = proto::ServerMessage::decode(frame.clone()).unwrap();
        let envelope: Value = serde_json::from_str(event.envelope()).unwrap();
        assert_eq!(reply_json(&decoded), envelope);
        let server_message::Message::Event(e) = decoded.message.unwrap() else {
            panic!("an event")
        };
        assert_eq!(e.data, data.as_bytes(), "data is the stored text, exactly");
        assert!(
            frame.len() < event.envelope().len(),
            "counted within memory_size"
        );
        let again = event_frame(&event);
        assert_eq!(again.as_ptr(), frame.as_ptr(), "rendered once, shared");
    }
}

#[test]
fn every_control_message_has_a_protobuf_form_with_the_same_fields() {
    let items = [
        Item::Subscription(Subscribed {
            channels: vec!["task:1".into(), "user:alice".into()],
            added: vec!["task:1".into()],
            removed: Vec::new(),
            errors: vec![ChannelError {
                channel: "task:2".into(),
                code: "permission_denied",
            }],
            connection_id: None,
        }),
        Item::Subscription(Subscribed {
            channels: vec!["user:alice".into()],
            added: Vec::new(),
            removed: vec!["conversation:g-1".into()],
            errors: Vec::new(),
            connection_id: None,
        }),
        Item::Reset(CursorExpired { oldest_id: 7 }),
        Item::TokenExpiring { expires_in: 60 },
        Item::TokenExpired,
        Item::Shutdown,
        Item::Failed(Error::new(ErrorCode::Unavailable, "down")),
    ];
    let mut replies: Vec<Value> = items
        .iter()
        .map(|item| item.control_json("req-1").unwrap())
        .collect();
    replies.extend([
        json!({"type": "connected", "connection_id": "c1", "user_id": "alice"}),
        json!({"type": "ack", "ack_id": "a1", "status": "success", "data": {"id": 1, "ids": [1]}}),
        Error::invalid_message("bad")
            .with_details(json!({"retry_after": 1}))
            .body("req-2"),
        json!({"type": "ping", "timestamp": 1_763_823_942_123i64}),
        json!({"type": "pong", "timestamp": 12, "ack_id": "p1"}),
    ]);
    let mut error_with_ack = Error::invalid_message("bad").body("req-3");
    error_with_ack["ack_id"] = json!("a2");
    replies.push(error_with_ack);
    for reply in replies {
        let frame = server_frame(&reply);
        let decoded = proto::ServerMessage::decode(frame).unwrap();
        assert_eq!(reply_json(&decoded), reply);
    }
}

#[test]
fn a_reply_without_a_protobuf_form_is_a_server_error() {
    let decoded = server_message(&json!({"type": "novel", "request_id": "r"}));
    assert_eq!(reply_json(&decoded)["code"], "server_error");
}

fn client(ack_id: Option<&str>, message: client_message::Message) -> Bytes {
    proto::ClientMessage {
        ack_id: ack_id.map(str::to_string),
        message: Some(message),
    }
    .encode_to_vec()
    .into()
}

fn read(frame: Bytes) -> Value {
    serde_json::from_str(&client_json(frame).unwrap()).unwrap()
}

#[test]
fn client_messages_read_as_their_json_messages() {
    use client_message::Message as M;
    let cases = [
        (
            client(
                Some("s1"),
                M::Subscribe(proto::Subscribe {
                    channels: vec!["task:1".into()],
                    last_event_id: Some(0),
                }),
            ),
            json!({"type": "subscribe", "channels": ["task:1"], "last_event_id": 0, "ack_id": "s1"}),
        ),
        (
            client(None, M::Subscribe(proto::Subscribe::default())),
            json!({"type": "subscribe", "channels": []}),
        ),
        (
            client(
                None,
                M::Unsubscribe(proto::Unsubscribe {
                    channels: vec!["a:1".into()],
                }),
            ),
            json!({"type": "unsubscribe", "channels": ["a:1"]}),
        ),
        (
            client(
                Some("p"),
                M::Ping(proto::Ping {
                    timestamp: Some(-5),
                }),
            ),
            json!({"type": "ping", "timestamp": -5, "ack_id": "p"}),
        ),
        (
            client(None, M::Pong(proto::Pong::default())),
            json!({"type": "pong"}),
        ),
        (
            client(
                None,
                M::Presence(proto::Presence {
                    action: "typing".into(),
                    data: Bytes::from_static(br#"{"is_typing": true}"#),
                }),
            ),
            json!({"type": "presence", "action": "typing", "data": {"is_typing": true}}),
        ),
        (
            client(
                Some("e"),
                M::Edit(proto::Edit {
                    action: "save".into(),
                    data: Bytes::new(),
                }),
            ),
            json!({"type": "edit", "action": "save", "ack_id": "e"}),
        ),
    ];
    for (frame, expected) in cases {
        assert_eq!(read(frame), expected);
    }
}

/// Every field a publish may carry, set.
fn full_publish() -> Bytes {
    client(
        Some("a1"),
        client_message::Message::Publish(proto::Publish {
            channel: Some("task:1".into()),
            channels: vec!["task:1".into(), "task:2".into()],
            event: Some("e".into()),
            data: Bytes::from_static(b"[1, 2.50, 12345678901234567890]"),
            expected_last_id: Some(0),
            events: vec![proto::PublishItem {
                channel: Some("task:3".into()),
                channels: vec!["task:4".into()],
                event: "f".into(),
                data: Bytes::from_static(b"\"x\""),
                expected_last_id: Some(9),
            }],
            idempotency_key: Some("k".into()),
            user_id: Some("alice".into()),
            exclude_self: Some(true),
        }),
    )
}

#[test]
fn a_publish_reads_as_its_json_with_data_untouched() {
    let text = client_json(full_publish()).unwrap();
    assert!(
        text.contains(r#""data":[1, 2.50, 12345678901234567890]"#),
        "{text}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"type": "publish", "channel": "task:1", "channels": ["task:1", "task:2"],
            "event": "e", "data": [1, 2.50, 12345678901234567890u64], "expected_last_id": 0,
            "events": [{"channel": "task:3", "channels": ["task:4"], "event": "f", "data": "x",
                "expected_last_id": 9}],
            "idempotency_key": "k", "user_id": "alice", "exclude_self": true, "ack_id": "a1"})
    );
    let request: PublishRequest = serde_json::from_str(&text).unwrap();
    assert_eq!(
        request.data.unwrap().get(),
        "[1, 2.50, 12345678901234567890]"
    );
}

/// The fields a strict serde type accepts, from its refusal of an unknown
/// one ("unknown field `x`, expected one of `a`, `b`").
fn accepted_fields<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> BTreeSet<String> {
    let refusal = serde_json::from_str::<T>(r#"{"?": 0}"#)
        .unwrap_err()
        .to_string();
    let (_, expected) = refusal.split_once("expected").expect("a list of fields");
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn a_publish_has_every_field_of_the_json_publish() {
    let full = read(full_publish());
    // `connection_id` names an HTTP publish's connection; a socket's
    // publish comes from the socket.
    let mut json_fields = accepted_fields::<PublishRequest>();
    json_fields.remove("connection_id");
    assert_eq!(keys(&full), json_fields);
    assert_eq!(keys(&full["events"][0]), accepted_fields::<BatchItem>());
}

#[test]
fn frames_that_do_not_read_are_refused_with_what_was_read_of_them() {
    let (e, ack_id) = client_json(Bytes::from_static(b"\xff\xff\xff")).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidMessage);
    assert_eq!(ack_id, None);
    let empty = proto::ClientMessage {
        ack_id: Some("x".into()),
        message: None,
    };
    let (e, ack_id) = client_json(empty.encode_to_vec().into()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidMessage);
    assert_eq!(ack_id, Some(json!("x")));
    let bad_data = client(
        Some("p1"),
        client_message::Message::Publish(proto::Publish {
            channel: Some("task:1".into()),
            event: Some("e".into()),
            data: Bytes::from_static(b"{not json"),
            ..Default::default()
        }),
    );
    let (e, ack_id) = client_json(bad_data).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidMessage);
    assert!(e.to_string().contains("'data'"), "{e}");
    assert_eq!(ack_id, Some(json!("p1")));
}
