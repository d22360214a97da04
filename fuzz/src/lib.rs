//! What the fuzz targets share: one Switchyard, built as `switchyard serve`
//! builds it (the core over an in-memory SQLite, the whole router), that
//! the HTTP targets call in-process and the WebSocket target reaches over
//! a real socket; and the oracle every answer is held to.
//!
//! Rate limits are off, as in load tests, so the fuzzer explores the
//! requests rather than the limiter.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use http_body_util::BodyExt;
use serde_json::Value;
use switchyard::http::state::AppState;
use switchyard_core::auth::Authenticator;
use switchyard_core::channel::Namespaces;
use switchyard_core::limits::LimitsConfig;
use switchyard_core::{Realtime, Settings};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const SECRET: &[u8] = b"switchyard-fuzz-secret";

/// The server the HTTP and WebSocket targets talk to.
pub struct Harness {
    pub runtime: Runtime,
    pub app: Router,
    /// A user who reads `task:*` and `conversation:*` and publishes on
    /// `task:*` and `feed:*`.
    pub user: String,
    /// A service token.
    pub service: String,
    /// `host:port` of the listening server, once started.
    listening: OnceLock<String>,
}

/// The one harness of this process.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let auth = Authenticator::hs256(SECRET);
        let mut user = auth.claims_for("fuzzer", 7 * 24 * 3600);
        user.channels = vec!["task:*".into(), "conversation:*".into()];
        user.publish = vec!["task:*".into(), "feed:*".into()];
        let user = auth.sign(&user).expect("sign");
        let mut service = auth.claims_for("backend", 7 * 24 * 3600);
        service.role = Some("service".into());
        let service = auth.sign(&service).expect("sign");
        let app = runtime.block_on(async {
            let storage = switchyard::storage::open("sqlite::memory:")
                .await
                .expect("storage");
            storage.migrate().await.expect("migrate");
            let settings = Settings {
                namespaces: Namespaces::default(),
                limits: LimitsConfig::default(),
                rate_limits: false,
                presence_ttl: Duration::from_secs(60),
                presence_away: Duration::from_secs(300),
                edit_session_idle: Duration::from_secs(1800),
                prune_interval: Duration::from_secs(60),
            };
            let realtime = Realtime::start(storage, settings, auth, CancellationToken::new())
                .await
                .expect("core");
            let state = AppState {
                realtime,
                ws_ping: Duration::from_secs(30),
                keepalive: Duration::from_secs(15),
                cookie_origins: Default::default(),
                started: Instant::now(),
            };
            switchyard::http::router(state, None)
        });
        Harness {
            runtime,
            app,
            user,
            service,
            listening: OnceLock::new(),
        }
    })
}

impl Harness {
    /// POSTs `body` as JSON to `path` with `token`, through the whole
    /// router, and holds the answer to the oracle.
    pub fn post(&self, path: &str, token: &str, body: Vec<u8>) -> (u16, Value) {
        let request = Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        let app = self.app.clone();
        let (status, bytes) = self.runtime.block_on(async move {
            let response = tokio::time::timeout(Duration::from_secs(20), app.oneshot(request))
                .await
                .expect("answered within 20 s")
                .expect("infallible");
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (status, bytes)
        });
        let body = check_answer(status, &bytes);
        (status, body)
    }

    /// `host:port` of the server listening on a real socket (started on
    /// first use), for the WebSocket target.
    pub fn listening(&self) -> &str {
        self.listening.get_or_init(|| {
            let app = self.app.clone();
            self.runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr").to_string();
                tokio::spawn(switchyard::http::server::serve(
                    listener,
                    app,
                    CancellationToken::new(),
                ));
                addr
            })
        })
    }
}

/// The oracle for every HTTP answer: never a server error; a JSON body;
/// an error answer has the protocol's error body (PROTOCOL §11).
pub fn check_answer(status: u16, bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    assert!(status < 500, "server error {status}: {text}");
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text}"))
    };
    if status >= 400 {
        check_error(&body);
    }
    body
}

/// The protocol's error body, and not an internal error.
pub fn check_error(body: &Value) {
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["code"].is_string(), "{body}");
    assert_ne!(body["code"], "server_error", "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body["details"].is_object(), "{body}");
}
