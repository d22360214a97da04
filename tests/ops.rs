//! Operations (PROTOCOL §13): health, readiness, status, namespaces, metrics,
//! the OpenAPI document, CORS, and the spec held in step with the router.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The committed spec, as the server embeds it.
const OPENAPI: &str = include_str!("../openapi.yaml");

const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// GET without a token; status and body text.
async fn get_public(server: &Server, path: &str) -> reqwest::Response {
    server
        .client
        .get(server.url(path))
        .send()
        .await
        .expect("GET")
}

async fn get_public_json(server: &Server, path: &str) -> Value {
    let res = get_public(server, path).await;
    assert_eq!(res.status(), 200, "{path} answers without a token");
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{path} is JSON"
    );
    res.json().await.expect("JSON")
}

/// The value of an unlabelled Prometheus sample.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} in:\n{metrics}"))
        .trim()
        .parse()
        .expect("numeric sample")
}

async fn metrics_text(server: &Server) -> String {
    let res = get_public(server, "/metrics").await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// (METHOD, path) of every operation in the spec, with its declared statuses.
fn spec_operations() -> BTreeMap<(String, String), BTreeSet<u16>> {
    let spec: serde_yaml::Value = serde_yaml::from_str(OPENAPI).expect("openapi.yaml is YAML");
    let paths = spec["paths"].as_mapping().expect("paths is a mapping");
    let mut ops = BTreeMap::new();
    for (path, item) in paths {
        let path = path.as_str().expect("path is a string");
        for (method, op) in item.as_mapping().expect("path item is a mapping") {
            let method = method.as_str().expect("method key is a string");
            if !HTTP_METHODS.contains(&method) {
                continue;
            }
            let statuses = op["responses"]
                .as_mapping()
                .unwrap_or_else(|| panic!("{method} {path} has responses"))
                .keys()
                .filter_map(|k| {
                    k.as_str()
                        .and_then(|s| s.parse().ok())
                        .or_else(|| k.as_u64().map(|n| n as u16))
                })
                .collect();
            ops.insert((method.to_uppercase(), path.to_string()), statuses);
        }
    }
    ops
}

async fn healthz_answers_ok(backend: Backend) {
    let server = Server::start(&backend).await;
    assert_eq!(
        get_public_json(&server, "/healthz").await,
        json!({"status": "ok"})
    );
}

async fn readyz_answers_ready_when_storage_is_reachable(backend: Backend) {
    let server = Server::start(&backend).await;
    assert_eq!(
        get_public_json(&server, "/readyz").await,
        json!({"status": "ready"})
    );
}

// /realtime/status: exactly its five fields, typed; uptime "Nd Nh Nm"
// agreeing with uptime_seconds; connections = open streams.
async fn status_reports_connections_uptime_and_version(backend: Backend) {
    let server = Server::start(&backend).await;
    let body = get_public_json(&server, "/realtime/status").await;
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "status",
            "connections",
            "uptime",
            "uptime_seconds",
            "version"
        ])
    );
    assert_eq!(body["status"], "operational");
    assert_eq!(body["connections"], 0);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));

    let secs = body["uptime_seconds"]
        .as_u64()
        .expect("uptime_seconds is an integer");
    let uptime = body["uptime"].as_str().expect("uptime is a string");
    let parts: Vec<&str> = uptime.split(' ').collect();
    assert_eq!(parts.len(), 3, "uptime {uptime} is like 0d 0h 0m");
    let unit = |part: &str, suffix: char| -> u64 {
        part.strip_suffix(suffix)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("uptime {uptime}: {part} ends in {suffix}"))
    };
    let (d, h, m) = (
        unit(parts[0], 'd'),
        unit(parts[1], 'h'),
        unit(parts[2], 'm'),
    );
    assert!(h < 24 && m < 60, "uptime {uptime} is normalised");
    let floor = d * 86400 + h * 3600 + m * 60;
    assert!(
        (floor..floor + 60).contains(&secs),
        "uptime {uptime} agrees with uptime_seconds {secs}"
    );

    let mut stream = server.sse("channels=system", &token("alice")).await;
    stream.subscription().await;
    assert_eq!(
        get_public_json(&server, "/realtime/status").await["connections"],
        1,
        "one open SSE stream"
    );
}

// /realtime/channels lists every built-in namespace of §2.
async fn channels_lists_the_built_in_namespaces(backend: Backend) {
    let server = Server::start(&backend).await;
    let body = get_public_json(&server, "/realtime/channels").await;
    let list = body["channels"].as_array().expect("channels array");
    let by_name: BTreeMap<&str, &Value> = list
        .iter()
        .map(|c| (c["name"].as_str().expect("name"), c))
        .collect();
    assert_eq!(by_name.len(), list.len(), "names are unique");
    for name in [
        "user",
        "notifications",
        "system",
        "presence",
        "feed",
        "task",
        "project",
        "team",
        "workspace",
        "sprint",
        "work_item",
        "conversation",
    ] {
        let ns = by_name
            .get(name)
            .unwrap_or_else(|| panic!("namespace {name} is listed: {body}"));
        assert!(
            ns["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{name} has a description"
        );
        let pattern = ns["subscription_pattern"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has a subscription_pattern"));
        assert!(pattern.starts_with(name), "{name}: {pattern}");
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
        assert_eq!(
            by_name[name]["subscription_pattern"],
            format!("{name}:{{id}}")
        );
    }
    assert_eq!(by_name["system"]["subscription_pattern"], "system");
}

// /metrics is Prometheus text with the three series; events_appended_total
// grows by exactly the events appended (not by replays or refusals).
async fn metrics_count_appended_events_exactly(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = get_public(&server, "/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    for (name, kind) in [
        ("switchyard_connections", "gauge"),
        ("switchyard_events_appended_total", "counter"),
        ("switchyard_events_delivered_total", "counter"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
            "{name} is a {kind}:\n{text}"
        );
        sample(&text, name);
    }
    let before = sample(&text, "switchyard_events_appended_total");

    let service = service_token();
    let single = json!({"channel": "system", "event": "e", "data": 1, "idempotency_key": "k1"});
    assert_eq!(
        server
            .post("/realtime/broadcast", &service, &single)
            .await
            .status(),
        202
    );
    assert_eq!(
        server
            .post("/realtime/broadcast", &service, &single)
            .await
            .status(),
        202,
        "replay"
    );
    let multi = json!({"channels": ["task:1", "task:2", "task:3"], "event": "e", "data": 2});
    assert_eq!(
        server
            .post("/realtime/broadcast", &service, &multi)
            .await
            .status(),
        202
    );
    let stale = json!({"channel": "system", "event": "e", "data": 3, "expected_last_id": 0});
    assert_eq!(
        server
            .post("/realtime/broadcast", &service, &stale)
            .await
            .status(),
        409
    );

    let after = sample(
        &metrics_text(&server).await,
        "switchyard_events_appended_total",
    );
    // The first publish and the one event on three channels.
    assert_eq!(after - before, 2);
}

/// `/metrics` histograms (append, delivery per transport, poll wait) and
/// errors by code count what happened, in Prometheus' histogram form.
async fn metrics_histograms_and_error_counts(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token("alice");
    let mut sse = server.sse("channels=system", &alice).await;
    sse.subscription().await;
    let mut ws = common::ws::Ws::connect(&server, &alice).await;
    ws.expect().await;
    ws.ok(json!({"type": "subscribe", "channels": ["system"]}))
        .await;
    let id = server.broadcast("system", "e", json!(1)).await;
    assert_eq!(sse.next_event(Duration::from_secs(10)).await["id"], id);
    assert_eq!(ws.next_event().await["id"], id);
    let res = server
        .get(
            &format!(
                "/realtime/poll?channels=system&last_poll_id={}&timeout=1",
                id
            ),
            &alice,
        )
        .await;
    assert_eq!(res.status(), 200, "a poll that waits a second");
    let res = server
        .get(
            "/realtime/poll?channels=system&last_poll_id=0&timeout=0",
            &alice,
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = get_public(&server, "/realtime/poll?channels=system").await;
    assert_eq!(res.status(), 401);
    let refused = ws.call(json!({"type": "nonsense"})).await;
    assert_eq!(refused["code"], "invalid_message");

    let text = metrics_text(&server).await;
    for name in [
        "switchyard_append_seconds",
        "switchyard_delivery_seconds",
        "switchyard_poll_wait_seconds",
    ] {
        assert!(
            text.lines()
                .any(|l| l == format!("# TYPE {name} histogram")),
            "{name} is a histogram:\n{text}"
        );
    }
    let count = |name: &str| sample(&text, name);
    assert!(count("switchyard_append_seconds_count") >= 1);
    assert_eq!(
        count("switchyard_append_seconds_count"),
        count("switchyard_append_seconds_bucket{le=\"+Inf\"}")
    );
    for transport in ["sse", "websocket", "poll"] {
        let series = format!("switchyard_delivery_seconds_count{{transport=\"{transport}\"}}");
        assert!(count(&series) >= 1, "{series}:\n{text}");
    }
    assert!(count("switchyard_poll_wait_seconds_count") >= 1);
    assert!(
        count("switchyard_poll_wait_seconds_bucket{le=\"0.5\"}")
            < count("switchyard_poll_wait_seconds_bucket{le=\"+Inf\"}"),
        "the one-second wait is above 0.5 s:\n{text}"
    );
    assert!(count("switchyard_errors_total{code=\"missing_token\"}") >= 1);
    assert!(count("switchyard_errors_total{code=\"invalid_message\"}") >= 1);
    assert_eq!(
        count("switchyard_errors_total{code=\"resource_locked\"}"),
        0
    );
}

// /openapi.yaml serves the committed file.
async fn openapi_yaml_serves_the_committed_file(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = get_public(&server, "/openapi.yaml").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("yaml")
    );
    assert_eq!(res.text().await.unwrap(), OPENAPI);
}

const APP: &str = "https://app.example";

async fn preflight(server: &Server, origin: &str) -> reqwest::Response {
    server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/realtime/sse"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization, last-event-id",
        )
        .send()
        .await
        .unwrap()
}

fn header_list(res: &reqwest::Response, name: &str) -> Vec<String> {
    res.headers()
        .get_all(name)
        .iter()
        .flat_map(|v| {
            v.to_str()
                .unwrap()
                .split(',')
                .map(|s| s.trim().to_lowercase())
                .collect::<Vec<_>>()
        })
        .collect()
}

// A listed origin's preflight is answered: origin, credentials and the
// Authorization, Content-Type, Last-Event-ID and X-Request-Id request
// headers allowed.
async fn cors_preflight_allows_a_listed_origin(backend: Backend) {
    // A comma-separated list, spaces allowed.
    let origins = format!("https://other.example, {APP}");
    let server =
        Server::start_with(&backend, &[("SWITCHYARD_CORS_ORIGINS", origins.as_str())]).await;
    let res = preflight(&server, APP).await;
    assert!(
        res.status().is_success(),
        "preflight answered {}",
        res.status()
    );
    assert_eq!(res.headers()["access-control-allow-origin"], APP);
    assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    let allowed = header_list(&res, "access-control-allow-headers");
    for h in [
        "authorization",
        "content-type",
        "last-event-id",
        "x-request-id",
    ] {
        assert!(allowed.iter().any(|a| a == h), "{h} allowed: {allowed:?}");
    }
}

// An origin not in the list gets no Access-Control-Allow-Origin.
async fn cors_preflight_ignores_a_foreign_origin(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_CORS_ORIGINS", APP)]).await;
    let res = preflight(&server, "https://evil.example").await;
    assert!(
        res.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        res.headers()
    );
    let res = server
        .client
        .get(server.url("/healthz"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

// Actual responses to a listed origin expose Retry-After and X-RateLimit-*.
async fn cors_exposes_retry_after_and_rate_limit_headers(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_CORS_ORIGINS", APP)]).await;
    let res = server
        .client
        .get(server.url("/healthz"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], APP);
    let exposed = header_list(&res, "access-control-expose-headers");
    for h in [
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(exposed.iter().any(|e| e == h), "{h} exposed: {exposed:?}");
    }
}

// `*` allows any origin; a wildcard cannot carry credentials.
async fn cors_wildcard_allows_any_origin_without_credentials(backend: Backend) {
    let server = Server::start_with(&backend, &[("SWITCHYARD_CORS_ORIGINS", "*")]).await;
    let res = preflight(&server, "https://anywhere.example").await;
    assert!(
        res.status().is_success(),
        "preflight answered {}",
        res.status()
    );
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    assert!(
        res.headers()
            .get("access-control-allow-credentials")
            .is_none_or(|v| v != "true")
    );
    let allowed = header_list(&res, "access-control-allow-headers");
    assert!(allowed.iter().any(|a| a == "last-event-id"), "{allowed:?}");
    assert!(allowed.iter().any(|a| a == "x-request-id"), "{allowed:?}");
}

// THE SPEC IN STEP, part 1: openapi.yaml documents exactly the routes the
// server has (switchyard::http::ENDPOINTS), no more, no less.
#[test]
fn openapi_paths_equal_the_server_endpoints() {
    let documented: BTreeSet<(String, String)> = spec_operations().into_keys().collect();
    let served: BTreeSet<(String, String)> = switchyard::http::ENDPOINTS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented,
        served,
        "openapi.yaml only: {:?}; ENDPOINTS only: {:?}",
        documented.difference(&served).collect::<Vec<_>>(),
        served.difference(&documented).collect::<Vec<_>>()
    );
}

// THE SPEC IN STEP, part 2: the live server routes every ENDPOINT (none
// answers 404 or 405).
async fn every_endpoint_is_routed_on_a_live_server(backend: Backend) {
    let server = Server::start(&backend).await;
    let service = service_token();
    for (method, path) in switchyard::http::ENDPOINTS {
        let concrete = path.replace("{user_id}", "backend").replace(['{', '}'], "");
        let query = match *path {
            "/realtime/activity" => "?channels=system&since=2020-01-01T00:00:00Z",
            "/realtime/poll" | "/realtime/poll/missed" | "/realtime/sse" => {
                "?channels=system&timeout=0"
            }
            _ => "",
        };
        let body = match *path {
            "/realtime/broadcast" | "/realtime/publish" => {
                json!({"channel": "system", "event": "spec.check", "data": null})
            }
            "/realtime/poll" => json!({"channels": ["system"], "timeout": 0}),
            _ => json!({}),
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = server
            .client
            .request(method.clone(), server.url(&format!("{concrete}{query}")))
            .bearer_auth(&service);
        if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
            req = req.json(&body);
        }
        // SSE never ends: the status is all we read, then the response is dropped.
        let res = tokio::time::timeout(Duration::from_secs(10), req.send())
            .await
            .expect("answered")
            .unwrap();
        let status = res.status().as_u16();
        assert_ne!(status, 405, "{method} {path} answered 405");
        // /demo/token is 404 by design with a configured key (as here).
        if (path.contains('{') || *path == "/demo/token") && status == 404 {
            // A placeholder id may name no resource; only the router's own
            // "no route" answer (src/http/mod.rs `not_found`) means unrouted.
            let body: Value = res.json().await.unwrap();
            let message = body["message"].as_str().unwrap_or_default();
            assert!(
                !message.starts_with("No route"),
                "{method} {path} is not routed: {body}"
            );
        } else {
            assert_ne!(status, 404, "{method} {path} answered 404");
        }
    }
}

// Each documented operation declares every status the tests see it return.
// (Reads only the file: no server, so no backend.)
#[test]
fn openapi_declares_the_statuses_the_server_returns() {
    let ops = spec_operations();
    let expected: &[(&str, &str, &[u16])] = &[
        (
            "POST",
            "/realtime/broadcast",
            &[202, 400, 401, 403, 404, 409, 413],
        ),
        ("POST", "/realtime/publish", &[202, 400, 401, 403, 409, 413]),
        ("GET", "/realtime/poll", &[200, 400, 401, 403, 404]),
        ("POST", "/realtime/poll", &[200, 400, 401, 403]),
        ("GET", "/realtime/poll/missed", &[200, 400, 401, 403]),
        ("GET", "/realtime/sse", &[200, 400, 401, 403]),
        ("GET", "/realtime/activity", &[200, 400, 401, 403]),
        ("GET", "/healthz", &[200]),
        ("GET", "/readyz", &[200]),
        ("GET", "/metrics", &[200]),
        ("GET", "/openapi.yaml", &[200]),
        ("GET", "/realtime/status", &[200]),
        ("GET", "/realtime/channels", &[200]),
        ("GET", "/realtime/connect", &[101, 400, 401, 403, 429]),
        ("GET", "/ws", &[101, 400, 401, 403, 429]),
        ("POST", "/realtime/presence", &[200, 400, 401, 403]),
        (
            "POST",
            "/realtime/presence/viewing",
            &[200, 400, 401, 403, 404],
        ),
        ("POST", "/realtime/typing", &[200, 400, 401, 403, 404]),
        (
            "POST",
            "/realtime/edit/sessions",
            &[201, 400, 401, 403, 404, 409],
        ),
        (
            "POST",
            "/realtime/edit/locks",
            &[201, 400, 401, 403, 404, 409],
        ),
    ];
    for (method, path, statuses) in expected {
        let declared = ops
            .get(&(method.to_string(), path.to_string()))
            .unwrap_or_else(|| panic!("{method} {path} is documented"));
        let missing: Vec<&u16> = statuses.iter().filter(|s| !declared.contains(s)).collect();
        assert!(
            missing.is_empty(),
            "{method} {path} does not declare {missing:?} (declares {declared:?})"
        );
    }
}

// GET /realtime/channels answers exactly the fields openapi.yaml's
// ChannelList describes, all of them (it says `additionalProperties: false`).
async fn channels_answer_the_fields_openapi_describes(backend: Backend) {
    let server = Server::start(&backend).await;
    let spec: serde_yaml::Value = serde_yaml::from_str(OPENAPI).unwrap();
    let item = &spec["components"]["schemas"]["ChannelList"]["properties"]["channels"]["items"];
    let described: BTreeSet<String> = item["properties"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let required: BTreeSet<String> = item["required"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(described, required);
    let body = get_public_json(&server, "/realtime/channels").await;
    for channel in body["channels"].as_array().unwrap() {
        let fields: BTreeSet<String> = channel.as_object().unwrap().keys().cloned().collect();
        assert_eq!(fields, described, "{channel}");
    }
}

on_both_backends!(
    channels_answer_the_fields_openapi_describes,
    healthz_answers_ok,
    readyz_answers_ready_when_storage_is_reachable,
    status_reports_connections_uptime_and_version,
    channels_lists_the_built_in_namespaces,
    metrics_count_appended_events_exactly,
    metrics_histograms_and_error_counts,
    openapi_yaml_serves_the_committed_file,
    cors_preflight_allows_a_listed_origin,
    cors_preflight_ignores_a_foreign_origin,
    cors_exposes_retry_after_and_rate_limit_headers,
    cors_wildcard_allows_any_origin_without_credentials,
    every_endpoint_is_routed_on_a_live_server,
);
