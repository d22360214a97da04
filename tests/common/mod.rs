//! Test harness: starts the real `switchyard` binary on `127.0.0.1:0`
//! against a fresh database (a temp SQLite file, or a new Postgres
//! database), mints tokens, and reads SSE frames off the wire.
//!
//! Postgres: `SWITCHYARD_TEST_POSTGRES_URL` names a server database (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); each server gets its own
//! database created beside it. Without the variable the Postgres tests are
//! skipped, except under `CI=true`, where they fail.

#![allow(dead_code)]

pub mod ws;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

pub const SECRET: &str = "test-secret-for-switchyard-integration-tests";

/// Runs each named `async fn name(backend: Backend)` as a test on SQLite and on Postgres.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::common::Backend::postgres() {
                        super::$name(backend).await
                    }
                }
            )*
        }
    };
}

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// The server database URL to create test databases beside.
    Postgres(String),
}

impl Backend {
    /// The Postgres backend, or `None` (test skipped) outside CI without a URL.
    pub fn postgres() -> Option<Backend> {
        match std::env::var("SWITCHYARD_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!(
                    "CI=true but SWITCHYARD_TEST_POSTGRES_URL is not set: the Postgres suite must run in CI"
                )
            }
            _ => {
                eprintln!("skipping Postgres test: SWITCHYARD_TEST_POSTGRES_URL is not set");
                None
            }
        }
    }
}

/// A database a test owns: a temp SQLite file or a fresh Postgres database,
/// dropped with it.
pub struct Database {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

impl Database {
    pub async fn create(backend: &Backend) -> Database {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("switchyard.db").display());
                Database {
                    url,
                    _dir: Some(dir),
                    pg_drop: None,
                }
            }
            Backend::Postgres(admin_url) => {
                let name = format!("sy_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin_url)
                    .await
                    .expect("connect to SWITCHYARD_TEST_POSTGRES_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let url = replace_database(admin_url, &name);
                Database {
                    url,
                    _dir: None,
                    pg_drop: Some((admin_url.clone(), name)),
                }
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg_drop.take() {
            // Drop runs outside async context: a short-lived runtime on a plain thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) =
                        <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await
                    {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A running server process.
pub struct Server {
    pub base: String,
    pub child: Child,
    pub db: std::sync::Arc<Database>,
    pub client: reqwest::Client,
}

/// Extra environment for a server, e.g. `("SWITCHYARD_KEEPALIVE_SECS", "1")`.
pub type Env<'a> = &'a [(&'a str, &'a str)];

impl Server {
    pub async fn start(backend: &Backend) -> Server {
        Self::start_with(backend, &[]).await
    }

    pub async fn start_with(backend: &Backend, env: Env<'_>) -> Server {
        let db = std::sync::Arc::new(Database::create(backend).await);
        Self::start_on(db, env)
    }

    /// Starts a server on an existing database (for restarts).
    pub fn start_on(db: std::sync::Arc<Database>, env: Env<'_>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
            .env("SWITCHYARD_DATABASE_URL", &db.url)
            .env("SWITCHYARD_JWT_SECRET", SECRET)
            // Most suites publish and poll far faster than a person would;
            // tests of PROTOCOL §12 turn the limits back on.
            .env("SWITCHYARD_RATE_LIMITS", "off")
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn switchyard");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("switchyard listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server printed its address within 30 s");
        Server {
            base,
            child,
            db,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// Any method, with an optional JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("request")
    }

    /// Broadcasts one event with a service token; panics unless 202. Returns the id.
    pub async fn broadcast(&self, channel: &str, event: &str, data: Value) -> u64 {
        let res = self
            .post(
                "/realtime/broadcast",
                &service_token(),
                &json!({"channel": channel, "event": event, "data": data}),
            )
            .await;
        let status = res.status();
        let body: Value = res.json().await.expect("receipt JSON");
        assert_eq!(status, 202, "broadcast answered {body}");
        body["id"].as_u64().expect("receipt id")
    }

    /// Opens an SSE stream; panics unless 200.
    pub async fn sse(&self, query: &str, token: &str) -> SseStream {
        let res = self
            .client
            .get(self.url(&format!("/realtime/sse?{query}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("SSE");
        assert_eq!(res.status(), 200, "SSE answered {}", res.status());
        SseStream::new(res)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit, up to `limit`; returns how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (Duration, std::process::ExitStatus) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (start.elapsed(), status);
            }
            assert!(
                start.elapsed() < limit,
                "server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs arbitrary claims with the test secret (HS256).
pub fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

pub fn exp_in(secs: i64) -> i64 {
    chrono::Utc::now().timestamp() + secs
}

/// A user token with extra claims merged in.
pub fn token_with(sub: &str, extra: Value) -> String {
    let mut claims = json!({ "sub": sub, "exp": exp_in(3600) });
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    sign(&claims)
}

pub fn token(sub: &str) -> String {
    token_with(sub, json!({}))
}

pub fn service_token() -> String {
    token_with("backend", json!({ "role": "service" }))
}

/// One SSE frame as sent.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub id: Option<u64>,
    pub data: Option<String>,
    pub event: Option<String>,
    pub retry: Option<u64>,
    pub comment: Option<String>,
}

impl Frame {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("frame has data"))
            .expect("frame data is JSON")
    }
}

/// Reads SSE frames from a response body.
pub struct SseStream {
    pub headers: reqwest::header::HeaderMap,
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
}

impl SseStream {
    pub fn new(res: reqwest::Response) -> Self {
        SseStream {
            headers: res.headers().clone(),
            body: Box::pin(res.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next frame, or `None` when the stream ended; panics after `limit`.
    pub async fn next_frame_within(&mut self, limit: Duration) -> Option<Frame> {
        tokio::time::timeout(limit, self.next_frame())
            .await
            .expect("SSE frame within the time limit")
    }

    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut frame = Frame::default();
                for line in raw.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        frame.comment = Some(c.trim().to_string());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                        match field {
                            "id" => frame.id = Some(value.parse().expect("numeric id")),
                            "data" => frame.data = Some(value),
                            "event" => frame.event = Some(value),
                            "retry" => frame.retry = Some(value.parse().expect("numeric retry")),
                            other => panic!("unexpected SSE field {other}"),
                        }
                    }
                }
                return Some(frame);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self
                    .buf
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8")),
                Some(Err(e)) => panic!("SSE body error: {e}"),
                None => return None,
            }
        }
    }

    /// Skips `retry` and the `subscription` message; returns the subscription JSON.
    pub async fn subscription(&mut self) -> Value {
        let first = self
            .next_frame_within(Duration::from_secs(10))
            .await
            .expect("retry frame");
        assert_eq!(first.retry, Some(2000));
        let sub = self
            .next_frame_within(Duration::from_secs(10))
            .await
            .expect("subscription frame");
        let json = sub.json();
        assert_eq!(json["type"], "subscription");
        json
    }

    /// The next event envelope (skipping `: ping` comments); panics on a control message.
    pub async fn next_event(&mut self, limit: Duration) -> Value {
        loop {
            let frame = self
                .next_frame_within(limit)
                .await
                .expect("stream still open");
            if frame.comment.is_some() {
                continue;
            }
            let json = frame.json();
            assert_eq!(json["type"], "event", "expected an event, got {json}");
            assert_eq!(
                frame.id,
                json["id"].as_u64(),
                "id: line matches the envelope id"
            );
            assert!(frame.event.is_none(), "events carry no event: line");
            return json;
        }
    }
}

/// Asserts the protocol's error body and status; returns the body.
pub async fn expect_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status for expected {code}");
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["details"].is_object(), "{body}");
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    body
}
