//! WebSocket frames as a hostile client sends them, byte by byte: what the
//! WebSocket protocol refuses closes the socket with RFC 6455's code (1007
//! invalid UTF-8, 1002 protocol error, 1009 too big); frames past the
//! connection's byte budget get `rate_limit_exceeded` without being read;
//! the service keeps serving.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A WebSocket opened by hand, so any frame can be sent.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

impl Raw {
    async fn open(server: &Server, token: &str) -> Raw {
        let mut stream = TcpStream::connect(server.base.trim_start_matches("http://"))
            .await
            .unwrap();
        let request = format!(
            "GET /realtime/connect?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let head = raw.read_until(b"\r\n\r\n").await;
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let connected = raw.next_text().await;
        assert_eq!(connected["type"], "connected");
        raw
    }

    async fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(end.len()).position(|w| w == end) {
                return self.buf.drain(..at + end.len()).collect();
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
            .await
            .expect("data within 5 s")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next server frame: opcode and payload (server frames are not masked).
    async fn next_frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let opcode = self.buf[0] & 0x0f;
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => {
                        self.fill().await;
                        continue;
                    }
                    n => (n as usize, 2),
                };
                if self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return (opcode, payload);
                }
            }
            self.fill().await;
        }
    }

    async fn next_text(&mut self) -> Value {
        loop {
            let (opcode, payload) = self.next_frame().await;
            if opcode == 1 {
                return serde_json::from_slice(&payload).unwrap();
            }
        }
    }

    /// The close code the server ends with, skipping what comes before.
    async fn close_code(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self.next_frame().await;
            if opcode == 8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }

    async fn send(&mut self, first: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![first];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            frame.extend_from_slice(&MASK);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn text(&mut self, text: &str) {
        self.send(0x81, text.as_bytes(), true).await;
    }
}

async fn still_serving(server: &Server) {
    let mut ws = Raw::open(server, &token("after")).await;
    ws.text(r#"{"type":"ping","ack_id":"p"}"#).await;
    assert_eq!(ws.next_text().await["type"], "pong");
}

async fn refused_frames_close_with_rfc_6455_codes(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let cases: Vec<(&str, u8, Vec<u8>, bool, u16)> = vec![
        (
            "invalid UTF-8 in a text frame",
            0x81,
            vec![0xff, 0xfe, 0x7b],
            true,
            1007,
        ),
        (
            "an unmasked frame",
            0x81,
            b"{\"type\":\"ping\"}".to_vec(),
            false,
            1002,
        ),
        (
            "a control frame over 125 bytes",
            0x89,
            vec![b'p'; 200],
            true,
            1002,
        ),
        ("a reserved opcode", 0x83, b"x".to_vec(), true, 1002),
    ];
    for (what, first, payload, masked, code) in cases {
        let mut ws = Raw::open(&server, &alice).await;
        ws.send(first, &payload, masked).await;
        assert_eq!(ws.close_code().await, code, "{what}");
    }
    // Too big: refused from its length, before its payload is read.
    let mut ws = Raw::open(&server, &alice).await;
    let mut head = vec![0x81, 0x80 | 127];
    head.extend_from_slice(&(2u64 << 20).to_be_bytes());
    head.extend_from_slice(&MASK);
    ws.stream.write_all(&head).await.unwrap();
    assert_eq!(ws.close_code().await, 1009, "a 2 MiB frame");
    // Sent whole (more than the socket buffers hold), its payload still
    // arriving as the server closes: the client reads the close frame,
    // not a reset.
    let mut ws = Raw::open(&server, &alice).await;
    ws.send(0x82, &vec![0u8; 8 << 20], true).await;
    assert_eq!(ws.close_code().await, 1009, "an 8 MiB frame sent whole");
    still_serving(&server).await;
}

/// Malformed messages get `invalid_message` and the socket stays open.
async fn malformed_messages_get_an_error_and_the_socket_stays_open(backend: Backend) {
    let server = Server::start(&backend).await;
    let mut ws = Raw::open(&server, &token("alice")).await;
    for frame in [
        "not json",
        r#"{"no":"type"}"#,
        r#"{"type":"ping","extra":1}"#,
        r#"{"type":"nonsense"}"#,
    ] {
        ws.text(frame).await;
        let error = ws.next_text().await;
        assert_eq!(error["type"], "error", "{frame}: {error}");
        assert_eq!(error["code"], "invalid_message", "{frame}: {error}");
    }
    ws.send(0x82, b"binary", true).await;
    assert_eq!(ws.next_text().await["code"], "invalid_message");
    ws.text(r#"{"type":"ping","timestamp":1234,"ack_id":"p1"}"#)
        .await;
    let pong = ws.next_text().await;
    assert_eq!(
        pong,
        json!({"type": "pong", "timestamp": 1234, "ack_id": "p1"})
    );
}

/// Frames past the connection's byte budget are refused before they are
/// read; the budget comes back and the socket goes on. A budget of 4,000
/// bytes a second and frames of 3,000: the second frame is refused unless
/// half a second passed between the two (it takes milliseconds).
async fn frame_bytes_are_budgeted_before_they_are_read(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(&config, "[limits]\nwebsocket_bytes_per_second = 4000\n").unwrap();
    let server = Server::start_with(
        &backend,
        &[
            ("SWITCHYARD_RATE_LIMITS", "on"),
            ("SWITCHYARD_CONFIG", config.to_str().unwrap()),
        ],
    )
    .await;
    let mut ws = Raw::open(&server, &token("alice")).await;
    let frame = json!({"type": "ping", "pad": "x".repeat(2970)}).to_string();
    assert!((2990..3010).contains(&frame.len()), "{}", frame.len());
    let mut codes = Vec::new();
    for _ in 0..2 {
        ws.text(&frame).await;
        let answer = ws.next_text().await;
        codes.push(answer["code"].as_str().unwrap_or("").to_string());
    }
    // The first is read (and refused: ping takes no `pad`), the second is
    // over the budget and refused unread.
    assert_eq!(codes, ["invalid_message", "rate_limit_exceeded"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ws.text(r#"{"type":"ping","ack_id":"again"}"#).await;
    assert_eq!(ws.next_text().await["ack_id"], "again");
}

on_both_backends!(
    refused_frames_close_with_rfc_6455_codes,
    malformed_messages_get_an_error_and_the_socket_stays_open,
    frame_bytes_are_budgeted_before_they_are_read,
);
