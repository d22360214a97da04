//! A WebSocket client for tests: connects with a token, sends JSON
//! messages, reads JSON messages (server pings skipped), and waits for the
//! answer to an `ack_id`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

use super::Server;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Ws {
    pub socket: Socket,
    /// Messages read while waiting for an ack, handed out by [`Ws::next`] first.
    held: std::collections::VecDeque<Value>,
    acks: u64,
}

impl Ws {
    pub async fn connect(server: &Server, token: &str) -> Ws {
        Self::try_connect(server, &format!("/realtime/connect?token={token}"))
            .await
            .expect("handshake")
    }

    pub async fn try_connect(server: &Server, path: &str) -> Result<Ws, tungstenite::Error> {
        let url = format!("{}{}", server.base.replacen("http://", "ws://", 1), path);
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Ws {
            socket,
            held: Default::default(),
            acks: 0,
        })
    }

    pub async fn send(&mut self, value: Value) {
        self.socket
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("send");
    }

    /// The next JSON message, skipping server pings; `None` once closed.
    pub async fn next(&mut self) -> Option<Value> {
        if let Some(value) = self.held.pop_front() {
            return Some(value);
        }
        self.read().await
    }

    async fn read(&mut self) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("a message within 10 s");
            match message {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON text frame");
                    if value["type"] == "ping" {
                        continue;
                    }
                    return Some(value);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn expect(&mut self) -> Value {
        self.next().await.expect("socket still open")
    }

    /// The next event envelope, skipping control messages.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let message = self.expect().await;
            if message["type"] == "event" {
                return message;
            }
        }
    }

    /// Sends `message` with a fresh `ack_id` and returns its answer (`ack`
    /// or `error`); what arrives meanwhile stays for [`Ws::next`].
    pub async fn call(&mut self, mut message: Value) -> Value {
        self.acks += 1;
        let ack_id = format!("t{}", self.acks);
        message["ack_id"] = json!(ack_id);
        self.send(message).await;
        loop {
            let value = self.read().await.expect("socket still open");
            if value["ack_id"] == ack_id.as_str() {
                return value;
            }
            self.held.push_back(value);
        }
    }

    /// As [`Ws::call`], expecting success: the ack's `data`.
    pub async fn ok(&mut self, message: Value) -> Value {
        let answer = self.call(message.clone()).await;
        assert_eq!(answer["type"], "ack", "{message} answered {answer}");
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"].clone()
    }
}
