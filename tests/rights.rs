//! Who may act where, beyond reading (PROTOCOL §1, §2, §7, §8, §10):
//! cookie-authenticated requests from other sites, namespaces that take no
//! client writes, and what presence tells about resources a caller may not
//! read.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The origin of the app the tests' servers trust.
const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example";

/// Every event of `channels` in the log, read by a service token.
async fn events_on(server: &Server, channels: &str) -> Vec<Value> {
    let res = server
        .get(
            &format!("/realtime/poll?channels={channels}&last_poll_id=0&timeout=0"),
            &service_token(),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["events"].as_array().unwrap().clone()
}

async fn post(server: &Server, path: &str, token: &str, body: Value) -> reqwest::Response {
    server.post(path, token, &body).await
}

/// A WebSocket handshake with the token in the cookie and these headers:
/// the `connected` message, or the HTTP status of the refusal.
async fn ws_with_cookie(server: &Server, token: &str, origin: Option<&str>) -> Result<Value, u16> {
    let url = format!(
        "{}/realtime/connect",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "cookie",
        format!("switchyard_token={token}").parse().unwrap(),
    );
    if let Some(origin) = origin {
        headers.insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, _)) => {
            let first = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next())
                .await
                .expect("a first message")
                .expect("open")
                .expect("a frame");
            Ok(serde_json::from_str(first.to_text().unwrap()).unwrap())
        }
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

/// A request with the token in the cookie, from `origin`.
fn with_cookie(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: &str,
    origin: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut req = server
        .client
        .request(method, server.url(path))
        .header("cookie", format!("switchyard_token={token}"));
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    req
}

// Cross-site WebSocket hijacking: a page on another site opening a socket
// (or POSTing) rides the visitor's cookie. With the token from the cookie,
// the upgrade must come from a listed origin or the server's own; any other
// is 403 with the error body. A token in the header or query is sent by the
// app itself, so it needs no such check; nor does a client sending no
// Origin (no browser does that).
async fn cookie_websockets_need_a_trusted_origin(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_CORS_ORIGINS", APP)]).await;
    let alice = token("alice");
    let own = server.base.clone();
    for origin in [Some(APP), Some(own.as_str()), None] {
        let connected = ws_with_cookie(&server, &alice, origin).await;
        let connected = connected.unwrap_or_else(|s| panic!("{origin:?} refused with {s}"));
        assert_eq!(connected["type"], "connected", "{origin:?}");
        assert_eq!(connected["user_id"], "alice");
    }
    for origin in [EVIL, "null", "https://app.example.com.evil.example"] {
        assert_eq!(
            ws_with_cookie(&server, &alice, Some(origin)).await,
            Err(403),
            "{origin}"
        );
    }
    // The refusal carries the protocol's error body.
    let res = with_cookie(
        &server,
        reqwest::Method::GET,
        "/realtime/connect",
        &alice,
        Some(EVIL),
    )
    .header("connection", "Upgrade")
    .header("upgrade", "websocket")
    .header("sec-websocket-version", "13")
    .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
    .send()
    .await
    .unwrap();
    let body = expect_error(res, 403, "permission_denied").await;
    assert_eq!(body["details"]["origin"], EVIL);
    // The same socket with the token in the query: the page had the token.
    let url = format!(
        "{}/realtime/connect?token={alice}",
        server.base.replacen("http://", "ws://", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", EVIL.parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
}

// The same rule for every cookie-authenticated request that changes state
// (POST, DELETE): refused from another site, and nothing happens; reads
// (GET) are left to CORS, which keeps their answers from other sites.
async fn cookie_writes_need_a_trusted_origin(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_CORS_ORIGINS", APP)]).await;
    let alice = token_with("alice", json!({"publish": ["feed:*"]}));
    let publish = json!({"channel": "feed:x", "event": "e", "data": 1});
    let res = with_cookie(
        &server,
        reqwest::Method::POST,
        "/realtime/publish",
        &alice,
        Some(EVIL),
    )
    .json(&publish)
    .send()
    .await
    .unwrap();
    expect_error(res, 403, "permission_denied").await;
    let res = with_cookie(
        &server,
        reqwest::Method::DELETE,
        "/realtime/edit/locks/some-lock",
        &alice,
        Some(EVIL),
    )
    .send()
    .await
    .unwrap();
    expect_error(res, 403, "permission_denied").await;
    assert_eq!(events_on(&server, "feed:x").await, Vec::<Value>::new());

    for origin in [Some(APP), Some(server.base.as_str()), None] {
        let res = with_cookie(
            &server,
            reqwest::Method::POST,
            "/realtime/publish",
            &alice,
            origin,
        )
        .json(&publish)
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 202, "{origin:?}");
    }
    assert_eq!(events_on(&server, "feed:x").await.len(), 3);
    let res = with_cookie(
        &server,
        reqwest::Method::GET,
        "/realtime/poll?channels=feed:x&timeout=0",
        &alice,
        Some(EVIL),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        res.status(),
        200,
        "a read: CORS keeps the answer from the other site"
    );
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

// With SWITCHYARD_CORS_ORIGINS=* no other origin is trusted with the
// cookie (a wildcard cannot carry credentials, and trusting every site
// with the visitor's cookie would undo the check): only the server's own.
async fn with_a_wildcard_only_the_servers_own_origin_may_use_the_cookie(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_CORS_ORIGINS", "*")]).await;
    let alice = token("alice");
    assert_eq!(ws_with_cookie(&server, &alice, Some(APP)).await, Err(403));
    let own = server.base.clone();
    assert!(ws_with_cookie(&server, &alice, Some(&own)).await.is_ok());
    let res = with_cookie(
        &server,
        reqwest::Method::POST,
        "/realtime/presence",
        &alice,
        Some(APP),
    )
    .json(&json!({"status": "busy"}))
    .send()
    .await
    .unwrap();
    expect_error(res, 403, "permission_denied").await;
    // A token the page holds works from anywhere.
    let res = server
        .client
        .post(server.url("/realtime/presence"))
        .bearer_auth(&alice)
        .header("origin", APP)
        .json(&json!({"status": "busy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}

// A token with no claims reads `feed`, `presence` and `system`, but may not
// put viewing, typing, edits or locks on them: those namespaces take no
// client writes (PROTOCOL §2's broadcast namespaces), so a reader cannot
// announce to every other reader. Nothing reaches the log.
async fn read_only_namespaces_take_no_viewing_typing_edits_or_locks(backend: Backend) {
    let server = Server::start(&backend).await;
    let mallory = token("mallory");
    let refused = [
        (
            "/realtime/presence/viewing",
            json!({"resource_type": "feed", "resource_id": "updates"}),
        ),
        (
            "/realtime/typing",
            json!({"resource_type": "presence", "resource_id": "alice", "field": "comment", "is_typing": true}),
        ),
        (
            "/realtime/edit/sessions",
            json!({"resource_type": "feed", "resource_id": "updates", "field": "body"}),
        ),
        (
            "/realtime/edit/locks",
            json!({"resource_type": "system", "resource_id": "maint", "field": "notice", "ttl_seconds": 3600}),
        ),
        (
            "/realtime/presence/viewing",
            json!({"resource_type": "user", "resource_id": "mallory"}),
        ),
    ];
    for (path, body) in refused {
        let res = post(&server, path, &mallory, body.clone()).await;
        let error = expect_error(res, 403, "permission_denied").await;
        assert!(
            error["message"].as_str().unwrap().contains("client_write"),
            "{path} {body}: {error}"
        );
    }
    // Reading them is still allowed.
    let res = server
        .get("/realtime/presence?resource=feed&id=updates", &mallory)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        events_on(
            &server,
            "feed:updates,presence:alice,system:maint,user:mallory"
        )
        .await,
        Vec::<Value>::new()
    );

    // The resource namespaces take them from their readers, as before.
    let reader = token_with("alice", json!({"channels": ["task:*"]}));
    let res = post(
        &server,
        "/realtime/presence/viewing",
        &reader,
        json!({"resource_type": "task", "resource_id": "1"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = post(
        &server,
        "/realtime/edit/locks",
        &reader,
        json!({"resource_type": "task", "resource_id": "1", "field": "title"}),
    )
    .await;
    assert_eq!(res.status(), 201);
}

// An edit session opened while a namespace took client writes cannot be
// used once it does not: operations, saves and lock renewals check the
// right on every request.
async fn rights_are_checked_on_every_edit_request(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    let open_board =
        "[namespaces.board]\nsubscribe = \"everyone\"\nclient_write = true\n".to_string();
    std::fs::write(&config, &open_board).unwrap();
    let env = [("SWITCHYARD_CONFIG", config.to_str().unwrap())];
    let server = Server::start_with(&backend, &env).await;
    let alice = token("alice");
    let res = post(
        &server,
        "/realtime/edit/sessions",
        &alice,
        json!({"resource_type": "board", "resource_id": "1", "field": "notes"}),
    )
    .await;
    assert_eq!(
        res.status(),
        201,
        "client_write = true opens an everyone namespace"
    );
    let session: Value = res.json().await.unwrap();
    let sid = session["session_id"].as_str().unwrap().to_string();
    let res = post(
        &server,
        "/realtime/edit/locks",
        &alice,
        json!({"resource_type": "board", "resource_id": "1", "field": "title"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let lock: Value = res.json().await.unwrap();
    let lock_id = lock["lock_id"].as_str().unwrap().to_string();

    // The same database, with the namespace closed to clients.
    let db = server.db.clone();
    drop(server);
    std::fs::write(&config, "[namespaces.board]\nsubscribe = \"everyone\"\n").unwrap();
    let server = Server::start_on(db, &env);
    let op = json!({"revision": 0, "ops": [{"insert": "x"}], "client_op_id": "c1"});
    for (path, body) in [
        (format!("/realtime/edit/sessions/{sid}/operations"), op),
        (format!("/realtime/edit/sessions/{sid}/save"), json!({})),
        (format!("/realtime/edit/locks/{lock_id}/renew"), json!({})),
    ] {
        let res = post(&server, &path, &alice, body).await;
        expect_error(res, 403, "permission_denied").await;
    }
    // Leaving and unlocking are always allowed.
    let res = server
        .client
        .delete(server.url(&format!("/realtime/edit/locks/{lock_id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    // A publish claim opens a channel of a read-only namespace to its holder.
    let publisher = token_with("bob", json!({"publish": ["board:1"]}));
    let res = post(
        &server,
        "/realtime/presence/viewing",
        &publisher,
        json!({"resource_type": "board", "resource_id": "1"}),
    )
    .await;
    assert_eq!(res.status(), 200);
}

// GET /realtime/channels says which namespaces take client writes.
async fn channels_list_says_which_namespaces_take_client_writes(backend: Backend) {
    let server = Server::start(&backend).await;
    let body: Value = server
        .client
        .get(server.url("/realtime/channels"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let write: std::collections::BTreeMap<String, bool> = body["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["client_write"].as_bool().unwrap(),
            )
        })
        .collect();
    for name in ["feed", "presence", "system", "user", "notifications"] {
        assert_eq!(write[name], json!(false), "{name}");
    }
    for name in [
        "task",
        "project",
        "team",
        "workspace",
        "sprint",
        "work_item",
        "conversation",
    ] {
        assert_eq!(write[name], json!(true), "{name}");
    }
}

// GET /realtime/presence/users/{id} shows what a user views only to a caller
// who may read that resource: the id of a resource one gets 403 on is not
// for them to learn.
async fn presence_shows_what_a_user_views_only_to_who_may_read_it(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"channels": ["project:*"]}));
    // Online: viewing is shown only while the user is.
    let mut stream = server.sse("channels=system", &alice).await;
    stream.subscription().await;
    let res = post(
        &server,
        "/realtime/presence/viewing",
        &alice,
        json!({"resource_type": "project", "resource_id": "secret"}),
    )
    .await;
    assert_eq!(res.status(), 200);

    let outsider = token("mallory");
    let res = server
        .get("/realtime/presence?resource=project&id=secret", &outsider)
        .await;
    expect_error(res, 403, "permission_denied").await;
    let view: Value = server
        .get("/realtime/presence/users/alice", &outsider)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "online", "{view}");
    assert_eq!(view["currently_viewing"], Value::Null, "{view}");

    let colleague = token_with("bob", json!({"channels": ["project:secret"]}));
    let view: Value = server
        .get("/realtime/presence/users/alice", &colleague)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        view["currently_viewing"],
        json!({"resource_type": "project", "resource_id": "secret"}),
        "{view}"
    );
    let view: Value = server
        .get("/realtime/presence/users/alice", &service_token())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["currently_viewing"]["resource_id"], "secret");
}

// Service tokens are backends and have no presence: setting a status,
// viewing or typing is refused with a message, not answered `offline`.
async fn service_tokens_are_refused_presence_clearly(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    for (path, body) in [
        ("/realtime/presence", json!({"status": "busy"})),
        (
            "/realtime/presence/viewing",
            json!({"resource_type": "task", "resource_id": "1"}),
        ),
        (
            "/realtime/typing",
            json!({"resource_type": "task", "resource_id": "1", "field": "f", "is_typing": true}),
        ),
    ] {
        let res = post(&server, path, &service, body).await;
        let error = expect_error(res, 403, "permission_denied").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("Service tokens have no presence"),
            "{error}"
        );
    }
    assert_eq!(
        events_on(&server, "presence,presence:backend,task:1").await,
        Vec::<Value>::new()
    );
}

on_both_backends!(
    service_tokens_are_refused_presence_clearly,
    cookie_websockets_need_a_trusted_origin,
    cookie_writes_need_a_trusted_origin,
    with_a_wildcard_only_the_servers_own_origin_may_use_the_cookie,
    read_only_namespaces_take_no_viewing_typing_edits_or_locks,
    rights_are_checked_on_every_edit_request,
    channels_list_says_which_namespaces_take_client_writes,
    presence_shows_what_a_user_views_only_to_who_may_read_it,
);
