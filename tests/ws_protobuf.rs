//! WebSocket in protobuf (PROTOCOL §10, `proto/switchyard.proto`): the
//! subprotocol negotiated and echoed, the same messages as JSON in binary
//! frames, the same event as the JSON envelope says, text frames refused
//! without closing, and the same limits and close codes.
//!
//! tests/protobuf/ drives the same server with a client generated from the
//! .proto by protoc; this file holds the server to its own rules.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use switchyard_proto::{self as proto, client_message::Message as C, server_message::Message as S};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const PROTOBUF: &str = "switchyard.v1.protobuf";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a socket offering `protocols`; returns it and the subprotocol
/// the server echoed.
async fn open(
    server: &Server,
    token: &str,
    protocols: Option<&str>,
) -> Result<(Socket, Option<String>), tungstenite::Error> {
    let url = format!(
        "{}/realtime/connect?token={token}",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request()?;
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    let echoed = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Ok((socket, echoed))
}

struct Pb {
    socket: Socket,
}

impl Pb {
    async fn connect(server: &Server, token: &str) -> (Pb, proto::Connected) {
        let (socket, echoed) = open(server, token, Some(PROTOBUF)).await.unwrap();
        assert_eq!(echoed.as_deref(), Some(PROTOBUF));
        let mut pb = Pb { socket };
        let (_, first) = pb.next().await.expect("connected");
        let S::Connected(connected) = first else {
            panic!("first message: {first:?}")
        };
        (pb, connected)
    }

    async fn send(&mut self, ack_id: Option<&str>, message: C) {
        let frame = proto::ClientMessage {
            ack_id: ack_id.map(str::to_string),
            message: Some(message),
        };
        self.socket
            .send(Message::Binary(frame.encode_to_vec().into()))
            .await
            .unwrap();
    }

    /// The next server message but pings, with its ack_id; `None` once
    /// closed. Every message is a binary frame.
    async fn next(&mut self) -> Option<(Option<String>, S)> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("a message within 10 s");
            match frame {
                Some(Ok(Message::Binary(bytes))) => {
                    let message = proto::ServerMessage::decode(bytes).expect("a ServerMessage");
                    match message.message.expect("a message") {
                        S::Ping(_) => continue,
                        other => return Some((message.ack_id, other)),
                    }
                }
                Some(Ok(Message::Text(text))) => panic!("a text frame in protobuf mode: {text}"),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    async fn expect(&mut self) -> (Option<String>, S) {
        self.next().await.expect("socket still open")
    }

    async fn next_event(&mut self) -> proto::Event {
        loop {
            if let (_, S::Event(event)) = self.expect().await {
                return event;
            }
        }
    }

    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("closed within 10 s")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code.into()),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return None,
            }
        }
    }
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON text")
}

fn error(message: S) -> proto::Error {
    match message {
        S::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn the_subprotocol_is_negotiated_and_echoed(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    // Protobuf, also when the client prefers it among others.
    for offer in [PROTOBUF, "chat, switchyard.v1.protobuf, switchyard.v1.json"] {
        let (mut socket, echoed) = open(&server, &alice, Some(offer)).await.unwrap();
        assert_eq!(echoed.as_deref(), Some(PROTOBUF), "{offer}");
        let first = socket.next().await.unwrap().unwrap();
        assert!(first.is_binary(), "{first:?}");
    }
    // JSON: named, or nothing named (and then nothing echoed).
    for (offer, echo) in [
        (
            Some("switchyard.v1.json, switchyard.v1.protobuf"),
            Some("switchyard.v1.json"),
        ),
        (None, None),
    ] {
        let (mut socket, echoed) = open(&server, &alice, offer).await.unwrap();
        assert_eq!(echoed.as_deref(), echo);
        let first = socket.next().await.unwrap().unwrap();
        let connected: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
        assert_eq!(connected["type"], "connected");
    }
    // Nothing it speaks: refused before the upgrade, with the error body.
    let res = server
        .client
        .get(server.url("/realtime/connect"))
        .bearer_auth(&alice)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", "switchyard.v2.protobuf")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid_message").await;
}

async fn protobuf_carries_the_same_messages_and_events_as_json(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"publish": ["feed:*"]}));
    let before = server.broadcast("feed:a", "old", json!({"n": 0})).await;
    let missed = server
        .broadcast(
            "feed:a",
            "missed",
            json!({"big": 12345678901234567890u64, "x": 0.1}),
        )
        .await;
    let (mut pb, connected) = Pb::connect(&server, &alice).await;
    assert_eq!(connected.user_id, "alice");
    assert!(!connected.connection_id.is_empty());

    // Subscribe from a cursor: ack, subscription, then the missed event.
    pb.send(
        Some("s1"),
        C::Subscribe(proto::Subscribe {
            channels: vec!["feed:a".into(), "task:1".into()],
            last_event_id: Some(before),
        }),
    )
    .await;
    let (ack_id, ack) = pb.expect().await;
    assert_eq!(ack_id.as_deref(), Some("s1"));
    let S::Ack(ack) = ack else { panic!("{ack:?}") };
    assert_eq!(ack.status, "success");
    assert_eq!(json(&ack.data)["added"], json!(["user:alice", "feed:a"]));
    let (_, subscription) = pb.expect().await;
    let S::Subscription(subscription) = subscription else {
        panic!("{subscription:?}")
    };
    assert_eq!(subscription.channels, ["user:alice", "feed:a"]);
    assert_eq!(subscription.errors.len(), 1);
    assert_eq!(subscription.errors[0].channel, "task:1");
    assert_eq!(subscription.errors[0].code, "permission_denied");
    let event = pb.next_event().await;
    assert_eq!(event.id, missed);

    // The same event, read as JSON over SSE, says the same.
    let mut sse = server
        .sse(&format!("channels=feed:a&last_event_id={before}"), &alice)
        .await;
    sse.subscription().await;
    let envelope = sse.next_event(Duration::from_secs(5)).await;
    assert_eq!(
        json!({"type": "event", "id": event.id, "channel": event.channel, "event": event.event,
            "data": json(&event.data), "user_id": event.user_id, "timestamp": event.timestamp}),
        envelope
    );
    assert_eq!(
        event.data.as_ref(),
        br#"{"big":12345678901234567890,"x":0.1}"#,
        "data is the stored JSON text, numbers exact"
    );

    // Publish with an ack; the event comes back live.
    pb.send(
        Some("p1"),
        C::Publish(proto::Publish {
            channel: Some("feed:a".into()),
            event: Some("story".into()),
            data: Bytes::from_static(br#"{"t": "hi"}"#),
            ..Default::default()
        }),
    )
    .await;
    let (ack_id, ack) = pb.expect().await;
    assert_eq!(ack_id.as_deref(), Some("p1"));
    let S::Ack(ack) = ack else { panic!("{ack:?}") };
    let receipt = json(&ack.data);
    assert_eq!(receipt["status"], "sent");
    let live = pb.next_event().await;
    assert_eq!(Some(live.id), receipt["id"].as_u64());
    assert_eq!(live.user_id.as_deref(), Some("alice"));
    assert_eq!(json(&live.data), json!({"t": "hi"}));

    // Ping: the pong echoes the client's timestamp and ack_id.
    pb.send(
        Some("t"),
        C::Ping(proto::Ping {
            timestamp: Some(1234),
        }),
    )
    .await;
    let (ack_id, pong) = pb.expect().await;
    assert_eq!(ack_id.as_deref(), Some("t"));
    assert_eq!(
        pong,
        S::Pong(proto::Pong {
            timestamp: Some(1234)
        })
    );

    // A refused publish: the §11 error, with the ack_id.
    pb.send(
        Some("p2"),
        C::Publish(proto::Publish {
            channel: Some("feed:a".into()),
            event: Some("story".into()),
            expected_last_id: Some(1),
            ..Default::default()
        }),
    )
    .await;
    let (ack_id, refused) = pb.expect().await;
    assert_eq!(ack_id.as_deref(), Some("p2"));
    let refused = error(refused);
    assert_eq!(refused.code, "conflict");
    assert_eq!(json(&refused.details)["last_id"].as_u64(), Some(live.id));
    assert!(!refused.request_id.is_empty());
}

async fn text_frames_and_garbage_get_errors_and_the_limits_hold(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_RATE_LIMITS", "on")]).await;
    let (mut pb, _) = Pb::connect(&server, &token("alice")).await;
    // A JSON text frame: refused, the socket stays open.
    pb.socket
        .send(Message::Text(r#"{"type":"ping","ack_id":"j"}"#.into()))
        .await
        .unwrap();
    let (ack_id, refused) = pb.expect().await;
    assert_eq!(ack_id, None, "a text frame is not read");
    let refused = error(refused);
    assert_eq!(refused.code, "invalid_message");
    assert!(refused.message.contains(PROTOBUF), "{}", refused.message);
    // Not a ClientMessage; a message with nothing in it; data not JSON.
    pb.socket
        .send(Message::Binary(Bytes::from_static(b"\xff\xff\xff")))
        .await
        .unwrap();
    assert_eq!(error(pb.expect().await.1).code, "invalid_message");
    let empty = proto::ClientMessage {
        ack_id: Some("e".into()),
        message: None,
    };
    pb.socket
        .send(Message::Binary(empty.encode_to_vec().into()))
        .await
        .unwrap();
    let (ack_id, refused) = pb.expect().await;
    assert_eq!(
        (ack_id.as_deref(), error(refused).code.as_str()),
        (Some("e"), "invalid_message")
    );
    pb.send(
        Some("d"),
        C::Presence(proto::Presence {
            action: "typing".into(),
            data: Bytes::from_static(b"{oops"),
        }),
    )
    .await;
    let (ack_id, refused) = pb.expect().await;
    assert_eq!(
        (ack_id.as_deref(), error(refused).code.as_str()),
        (Some("d"), "invalid_message")
    );

    // The frame byte budget (1 MiB a second) counts binary frames: of
    // three pings padded to ~400 KB (with a field the schema does not
    // know, which protobuf readers skip) within a second, the third is
    // refused unread.
    let mut padded = proto::ClientMessage {
        ack_id: Some("pad".into()),
        message: Some(C::Ping(proto::Ping { timestamp: Some(7) })),
    }
    .encode_to_vec();
    let pad = 400_000usize;
    padded.extend_from_slice(&[0xa2, 0x06]); // field 100, length-delimited
    prost::encoding::encode_varint(pad as u64, &mut padded);
    padded.resize(padded.len() + pad, b'x');
    let mut answers = Vec::new();
    for _ in 0..3 {
        pb.socket
            .send(Message::Binary(padded.clone().into()))
            .await
            .unwrap();
        answers.push(match pb.expect().await {
            (ack_id, S::Pong(pong)) => format!("pong {} {:?}", ack_id.unwrap(), pong.timestamp),
            (_, other) => error(other).code,
        });
    }
    assert_eq!(
        answers,
        [
            "pong pad Some(7)",
            "pong pad Some(7)",
            "rate_limit_exceeded"
        ]
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pb.send(Some("again"), C::Ping(proto::Ping::default()))
        .await;
    let (ack_id, pong) = pb.expect().await;
    assert_eq!(ack_id.as_deref(), Some("again"));
    assert!(matches!(pong, S::Pong(proto::Pong { timestamp: Some(_) })));

    // Over 1 MiB: closed with 1009, as in JSON mode.
    pb.socket
        .send(Message::Binary(vec![0u8; (1 << 20) + 1].into()))
        .await
        .unwrap();
    assert_eq!(pb.close_code().await, Some(1009));
}

async fn shutdown_is_told_in_protobuf(backend: Backend) {
    let mut server = Server::start(&backend).await;
    let (mut pb, _) = Pb::connect(&server, &token("alice")).await;
    server.sigterm();
    let (_, goodbye) = pb.expect().await;
    let S::System(system) = goodbye else {
        panic!("{goodbye:?}")
    };
    assert_eq!(system.event, "server.shutdown");
    assert!(system.data.is_empty());
    assert_eq!(pb.close_code().await, Some(1001));
    server.wait_exit(Duration::from_secs(10));
}

/// The ack of `ack_id`, skipping what comes before it (events, the
/// subscription messages of conversations joined).
async fn ack_of(pb: &mut Pb, ack_id: &str) -> proto::Ack {
    loop {
        let (id, message) = pb.expect().await;
        if id.as_deref() == Some(ack_id) {
            let S::Ack(ack) = message else {
                panic!("{ack_id}: {message:?}")
            };
            return ack;
        }
    }
}

/// The inbox's messages in protobuf: conversations, notifications and
/// members as actions with JSON data, and a membership's end as a
/// `Subscription` listing the channel in `removed`.
async fn the_inbox_speaks_protobuf(backend: Backend) {
    let server = Server::start(&backend).await;
    let (mut alice, _) = Pb::connect(&server, &token("alice")).await;
    let (mut bob, _) = Pb::connect(&server, &token("bob")).await;
    let (mut service, _) = Pb::connect(&server, &service_token()).await;
    let act = |action: &str, data: Value| proto::Action {
        action: action.into(),
        data: Bytes::from(data.to_string()),
    };

    alice
        .send(
            Some("o1"),
            C::Conversations(act("open", json!({"type": "direct", "user_id": "bob"}))),
        )
        .await;
    let opened = ack_of(&mut alice, "o1").await;
    let id = json(&opened.data)["id"].as_str().unwrap().to_string();
    alice
        .send(
            Some("m1"),
            C::Conversations(act(
                "send",
                json!({"conversation_id": id, "content": "hi in protobuf"}),
            )),
        )
        .await;
    let sent = ack_of(&mut alice, "m1").await;
    let message = json(&sent.data);
    loop {
        let event = bob.next_event().await;
        if event.event == "message.created" {
            assert_eq!(json(&event.data), message);
            break;
        }
    }
    bob.send(
        Some("n1"),
        C::Notifications(act("unread_count", json!(null))),
    )
    .await;
    let count = ack_of(&mut bob, "n1").await;
    assert_eq!(json(&count.data), json!({"unread_count": 0}));

    let member = json!({"channel": "project:p9", "user_id": "bob"});
    service
        .send(Some("a1"), C::Members(act("add", member.clone())))
        .await;
    ack_of(&mut service, "a1").await;
    bob.send(
        Some("s1"),
        C::Subscribe(proto::Subscribe {
            channels: vec!["project:p9".into()],
            last_event_id: None,
        }),
    )
    .await;
    // Followed before the membership ends.
    loop {
        let (ack_id, message) = bob.expect().await;
        if ack_id.as_deref() == Some("s1") {
            assert!(matches!(message, S::Ack(_)), "{message:?}");
            break;
        }
    }
    service
        .send(Some("r1"), C::Members(act("remove", member)))
        .await;
    loop {
        let (_, message) = bob.expect().await;
        if let S::Subscription(s) = message
            && !s.removed.is_empty()
        {
            assert_eq!(s.removed, ["project:p9"]);
            assert!(!s.channels.contains(&"project:p9".to_string()));
            break;
        }
    }
}

on_both_backends!(
    the_subprotocol_is_negotiated_and_echoed,
    protobuf_carries_the_same_messages_and_events_as_json,
    text_frames_and_garbage_get_errors_and_the_limits_hold,
    shutdown_is_told_in_protobuf,
    the_inbox_speaks_protobuf,
);
