//! SSE written on the raw socket (`http/stream_socket.rs`), read byte by
//! byte: the response head, HTTP/1.1 chunk framing, `connection: close`,
//! errors with a length, a head sent in pieces, a client leaving, shutdown,
//! and an SSE request on a keep-alive connection (which hyper serves).
//! Transport only, so on SQLite alone; the stream's content is the same
//! router and reader the other SSE tests cover on both backends.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Server, token};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// A hand-driven HTTP/1.1 client connection.
struct Raw {
    socket: TcpStream,
    buf: Vec<u8>,
}

struct Head {
    status_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Raw {
    async fn connect(server: &Server) -> Raw {
        let addr = server.base.trim_start_matches("http://");
        Raw {
            socket: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.socket.write_all(bytes.as_bytes()).await.expect("send");
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.socket.read(&mut chunk))
            .await
            .expect("server answered in time")
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Takes `n` bytes, or up to and including `until`.
    async fn take_until(&mut self, until: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(until.len()).position(|w| w == until) {
                return self.buf.drain(..at + until.len()).collect();
            }
            assert!(self.fill().await, "closed before {:?}", until);
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "closed before {n} bytes");
        }
        self.buf.drain(..n).collect()
    }

    async fn head(&mut self) -> Head {
        let raw = String::from_utf8(self.take_until(b"\r\n\r\n").await).expect("ASCII head");
        let mut lines = raw.trim_end().split("\r\n");
        let status_line = lines.next().expect("status line").to_string();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Head {
            status_line,
            headers,
        }
    }

    /// One chunk's data; `None` for the last (empty) chunk.
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = String::from_utf8(self.take_until(b"\r\n").await).expect("size");
        let size = usize::from_str_radix(size_line.trim_end(), 16).expect("hex size");
        let data = self.take(size).await;
        assert_eq!(self.take(2).await, b"\r\n", "chunk ends with CRLF");
        (size > 0).then_some(data)
    }

    /// SSE text from chunks until `needle` appears in it.
    async fn text_until(&mut self, needle: &str) -> String {
        let mut text = String::new();
        while !text.contains(needle) {
            let data = self.chunk().await.expect("stream still open");
            text.push_str(std::str::from_utf8(&data).expect("UTF-8 frames"));
        }
        text
    }

    /// True once the server has closed the connection (after `buf` drains).
    async fn closed(&mut self) -> bool {
        self.buf.clear();
        !self.fill().await
    }
}

fn sse_get(query: &str, token: &str, extra: &str) -> String {
    format!(
        "GET /realtime/sse?{query} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    )
}

async fn status_connections(server: &Server) -> i64 {
    let body: Value = server
        .client
        .get(server.url("/realtime/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status JSON");
    body["connections"].as_i64().expect("connections")
}

async fn wait_for_connections(server: &Server, expected: i64) {
    let deadline = Instant::now() + WAIT;
    while status_connections(server).await != expected {
        assert!(
            Instant::now() < deadline,
            "connections never became {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_first_request_stream_is_chunked_and_says_close() {
    let server = Server::start(&Backend::Sqlite).await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&sse_get(
        "channels=feed:raw",
        &token("alice"),
        "X-Request-Id: raw-1\r\n",
    ))
    .await;
    let head = raw.head().await;
    assert_eq!(head.status_line, "HTTP/1.1 200 OK");
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    assert_eq!(head.get("cache-control"), Some("no-cache"));
    assert_eq!(head.get("transfer-encoding"), Some("chunked"));
    assert_eq!(head.get("connection"), Some("close"));
    assert_eq!(head.get("x-request-id"), Some("raw-1"));
    assert!(head.get("date").is_some(), "a Date header");
    assert_eq!(head.get("content-length"), None);

    let opening = raw.text_until("\"subscription\"").await;
    assert!(opening.starts_with("retry: 2000\n\n"), "{opening}");
    let id = server
        .broadcast("feed:raw", "task.updated", json!({"n": 1}))
        .await;
    let frames = raw.text_until("\n\n").await;
    assert!(frames.starts_with(&format!("id: {id}\ndata: ")), "{frames}");
    assert!(frames.contains("\"task.updated\""), "{frames}");
}

#[tokio::test]
async fn a_head_sent_in_pieces_is_read_whole() {
    let server = Server::start(&Backend::Sqlite).await;
    let mut raw = Raw::connect(&server).await;
    let request = sse_get("channels=feed:pieces", &token("alice"), "");
    for piece in request.as_bytes().chunks(7) {
        raw.socket.write_all(piece).await.expect("send");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(raw.head().await.status_line, "HTTP/1.1 200 OK");
    raw.text_until("\"subscription\"").await;
}

#[tokio::test]
async fn a_refused_stream_gets_the_error_body_with_its_length_then_close() {
    let server = Server::start(&Backend::Sqlite).await;
    let mut raw = Raw::connect(&server).await;
    raw.send("GET /realtime/sse?channels=feed:x HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let head = raw.head().await;
    assert_eq!(head.status_line, "HTTP/1.1 401 Unauthorized");
    assert_eq!(head.get("connection"), Some("close"));
    assert!(head.get("x-request-id").is_some());
    let length: usize = head
        .get("content-length")
        .expect("content-length")
        .parse()
        .expect("a number");
    let body: Value = serde_json::from_slice(&raw.take(length).await).expect("JSON error body");
    assert_eq!(body["code"], "missing_token", "{body}");
    assert!(raw.closed().await, "closed after the error");
}

#[tokio::test]
async fn a_client_closing_its_socket_ends_the_stream() {
    let server = Server::start(&Backend::Sqlite).await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&sse_get("channels=feed:leave", &token("alice"), ""))
        .await;
    raw.head().await;
    raw.text_until("\"subscription\"").await;
    wait_for_connections(&server, 1).await;
    drop(raw);
    wait_for_connections(&server, 0).await;
}

#[tokio::test]
async fn shutdown_ends_the_stream_with_the_last_chunk() {
    let mut server = Server::start(&Backend::Sqlite).await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&sse_get("channels=feed:bye", &token("alice"), ""))
        .await;
    raw.head().await;
    raw.text_until("\"subscription\"").await;
    server.sigterm();
    let text = raw.text_until("server.shutdown").await;
    assert!(text.contains("\"type\":\"system\""), "{text}");
    assert_eq!(raw.chunk().await, None, "the last chunk");
    assert!(raw.closed().await);
    let (_, status) = server.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_stream_after_another_request_on_the_same_connection_works() {
    let server = Server::start(&Backend::Sqlite).await;
    let mut raw = Raw::connect(&server).await;
    raw.send("GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let head = raw.head().await;
    assert_eq!(head.status_line, "HTTP/1.1 200 OK");
    let length: usize = head.get("content-length").expect("length").parse().unwrap();
    raw.take(length).await;

    raw.send(&sse_get("channels=feed:reuse", &token("alice"), ""))
        .await;
    let head = raw.head().await;
    assert_eq!(head.status_line, "HTTP/1.1 200 OK");
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    raw.text_until("\"subscription\"").await;
    let id = server
        .broadcast("feed:reuse", "task.updated", json!({}))
        .await;
    let frames = raw.text_until("\n\n").await;
    assert!(frames.starts_with(&format!("id: {id}\n")), "{frames}");
}
