//! WebSocket messages (PROTOCOL §10) over a real socket to the in-process
//! server: each input is one frame (text when UTF-8, else binary), followed
//! by a `ping` with an `ack_id` that marks the end of its answers. Every
//! answer is JSON, no error is a server error, and the socket stays open
//! (a malformed frame gets `invalid_message`, not a close).
#![no_main]

use std::sync::Mutex;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use switchyard_fuzz::{check_error, harness};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

static SOCKET: Mutex<Option<Socket>> = Mutex::new(None);
static SEQUENCE: Mutex<u64> = Mutex::new(0);

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let addr = h.listening().to_string();
    let mut guard = SOCKET.lock().unwrap();
    let marker = {
        let mut n = SEQUENCE.lock().unwrap();
        *n += 1;
        format!("fuzz-{n}")
    };
    let frame = match std::str::from_utf8(data) {
        Ok(text) => Message::Text(text.to_owned().into()),
        Err(_) => Message::Binary(data.to_vec().into()),
    };
    h.runtime.block_on(async {
        if guard.is_none() {
            let url = format!("ws://{addr}/realtime/connect?token={}", h.user);
            let (mut socket, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("connect");
            let connected = next_json(&mut socket).await;
            assert_eq!(connected["type"], "connected", "{connected}");
            *guard = Some(socket);
        }
        let socket = guard.as_mut().unwrap();
        socket.send(frame).await.expect("send the frame");
        let ping = json!({"type": "ping", "ack_id": marker});
        socket
            .send(Message::Text(ping.to_string().into()))
            .await
            .expect("send the marker");
        loop {
            let answer = next_json(socket).await;
            if answer["ack_id"] == marker.as_str() {
                assert_eq!(answer["type"], "pong", "{answer}");
                break;
            }
            if answer["type"] == "error" {
                check_error(&answer);
            }
        }
    });
});

/// The next JSON message (answering the server's pings, as a client must
/// or be closed); panics when the socket closes or says nothing for 10 s.
async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer within 10 s");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text}"));
                if value["type"] != "ping" {
                    return value;
                }
                let pong = json!({"type": "pong"}).to_string();
                socket.send(Message::Text(pong.into())).await.expect("pong");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("the socket closed or broke: {other:?}"),
        }
    }
}
