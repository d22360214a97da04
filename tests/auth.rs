//! Identity and authentication (PROTOCOL §1): where the token is read from,
//! which tokens are refused with which code, and public-key algorithms.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A cheap authenticated read that any user may make.
const PROBE: &str = "/realtime/poll?channels=system&timeout=0";

/// The endpoints §1 lets through without a token.
const PUBLIC: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/realtime/status",
    "/realtime/channels",
    "/openapi.yaml",
    "/client.js",
    "/client.d.ts",
    "/demo",
    "/demo/{file}",
];

/// Public, but off on a server with a configured key (as the tests' are):
/// answered 404 without asking for a token.
const PUBLIC_OFF: &[&str] = &["/demo/token"];

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn sign_with(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign")
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": exp_in(3600)})
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).expect("read key file")
}

// No token anywhere: 401 missing_token.
async fn request_without_a_token_is_missing_token(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server.client.get(server.url(PROBE)).send().await.unwrap();
    expect_error(res, 401, "missing_token").await;
}

// Something that is not a JWT: 401 invalid_token.
async fn garbage_token_is_invalid_token(backend: Backend) {
    let server = Server::start(&backend).await;
    for garbage in ["not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        expect_error(server.get(PROBE, garbage).await, 401, "invalid_token").await;
    }
}

// Signed with another secret: 401 invalid_token.
async fn token_with_a_bad_signature_is_invalid_token(backend: Backend) {
    let server = Server::start(&backend).await;
    let forged = sign_with(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"some-other-secret"),
        &claims("alice"),
    );
    expect_error(server.get(PROBE, &forged).await, 401, "invalid_token").await;
}

// `alg: none` (no signature at all) is never accepted.
async fn unsigned_alg_none_token_is_invalid_token(backend: Backend) {
    let server = Server::start(&backend).await;
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    assert_eq!(header, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0");
    // The payload of a token the server accepts, so only the header differs.
    let valid = token("alice");
    assert_eq!(server.get(PROBE, &valid).await.status(), 200);
    let payload = valid.split('.').nth(1).unwrap();
    let unsigned = format!("{header}.{payload}.");
    expect_error(server.get(PROBE, &unsigned).await, 401, "invalid_token").await;
}

// Another HMAC algorithm with the right secret is still refused: only HS256 is configured.
async fn token_with_another_algorithm_is_invalid_token(backend: Backend) {
    let server = Server::start(&backend).await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    for alg in [Algorithm::HS512, Algorithm::HS384] {
        let token = sign_with(alg, &key, &claims("alice"));
        expect_error(server.get(PROBE, &token).await, 401, "invalid_token").await;
    }
}

// `exp` is required.
async fn token_without_exp_is_invalid_token(backend: Backend) {
    let server = Server::start(&backend).await;
    let token = sign(&json!({"sub": "alice"}));
    expect_error(server.get(PROBE, &token).await, 401, "invalid_token").await;
}

// A token past `exp` is token_expired, with no leeway.
async fn expired_token_is_token_expired(backend: Backend) {
    let server = Server::start(&backend).await;
    let token = sign(&json!({"sub": "alice", "exp": exp_in(-5)}));
    expect_error(server.get(PROBE, &token).await, 401, "token_expired").await;
}

// `sub` (or `user_id`) is required and must be 1-128 chars of [A-Za-z0-9_.@-].
async fn token_without_a_valid_sub_is_invalid_token(backend: Backend) {
    let server = Server::start(&backend).await;
    for bad in [
        json!({"exp": exp_in(3600)}),
        json!({"sub": "al ice", "exp": exp_in(3600)}),
        json!({"sub": "", "exp": exp_in(3600)}),
        json!({"sub": "a".repeat(129), "exp": exp_in(3600)}),
    ] {
        expect_error(server.get(PROBE, &sign(&bad)).await, 401, "invalid_token").await;
    }
}

// The `user_id` claim names the user when `sub` is absent: the token reads
// alice's personal channel and not bob's.
async fn user_id_claim_is_an_alias_of_sub(backend: Backend) {
    let server = Server::start(&backend).await;
    let token = sign(&json!({"user_id": "alice", "exp": exp_in(3600)}));
    let res = server
        .get("/realtime/poll?channels=user:alice&timeout=0", &token)
        .await;
    assert_eq!(res.status(), 200);
    let res = server
        .get("/realtime/poll?channels=user:bob&timeout=0", &token)
        .await;
    expect_error(res, 403, "permission_denied").await;
}

// The token may come in the `token` query parameter.
async fn token_in_query_parameter_is_accepted(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .client
        .get(server.url(&format!("{PROBE}&token={}", token("alice"))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

// The token may come in the `switchyard_token` cookie (browser EventSource).
async fn token_in_cookie_is_accepted(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .client
        .get(server.url(PROBE))
        .header(
            "cookie",
            format!("theme=dark; switchyard_token={}", token("alice")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

// Lookup order: the Authorization header is used before the query
// parameter, and the query parameter before the cookie.
async fn authorization_header_wins_over_query_and_cookie(backend: Backend) {
    let server = Server::start(&backend).await;
    let valid = token("alice");
    let res = server
        .client
        .get(server.url(&format!("{PROBE}&token=garbage")))
        .bearer_auth(&valid)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "a valid header is used, the garbage query ignored"
    );

    let res = server
        .client
        .get(server.url(&format!("{PROBE}&token={valid}")))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "invalid_token").await;

    let res = server
        .client
        .get(server.url(&format!("{PROBE}&token=garbage")))
        .header("cookie", format!("switchyard_token={valid}"))
        .send()
        .await
        .unwrap();
    expect_error(res, 401, "invalid_token").await;
}

// A valid token that lacks a right: 403 permission_denied (not 401).
async fn valid_token_lacking_a_right_is_permission_denied(backend: Backend) {
    let server = Server::start(&backend).await;
    let res = server
        .get("/realtime/poll?channels=task:1&timeout=0", &token("alice"))
        .await;
    expect_error(res, 403, "permission_denied").await;
}

// A legacy `user_id` (query or body) other than the token's sub: 403.
async fn naming_another_user_id_is_permission_denied(backend: Backend) {
    let server = Server::start(&backend).await;
    let alice = token_with("alice", json!({"publish": ["feed:*"]}));
    let res = server.get(&format!("{PROBE}&user_id=alice"), &alice).await;
    assert_eq!(res.status(), 200, "one's own user_id is fine");
    let res = server.get(&format!("{PROBE}&user_id=bob"), &alice).await;
    expect_error(res, 403, "permission_denied").await;
    let res = server
        .post(
            "/realtime/publish",
            &alice,
            &json!({"channel": "feed:x", "event": "e", "data": 1, "user_id": "bob"}),
        )
        .await;
    expect_error(res, 403, "permission_denied").await;
}

// Every endpoint but the six operational ones of §1 needs a token.
async fn every_endpoint_except_the_public_ones_requires_a_token(backend: Backend) {
    let server = Server::start(&backend).await;
    for (method, path) in switchyard::http::ENDPOINTS {
        // Path parameters get a placeholder: the token is checked before the resource.
        let concrete = path.replace(['{', '}'], "");
        let url = server.url(&format!(
            "{concrete}?channels=system&since=2020-01-01T00:00:00Z&timeout=0"
        ));
        let method_ = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = server.client.request(method_.clone(), url);
        if method_ != reqwest::Method::GET && method_ != reqwest::Method::DELETE {
            req = req.json(&json!({"channels": ["system"], "event": "e", "timeout": 0}));
        }
        let res = req.send().await.unwrap();
        if PUBLIC.contains(path) && *path == "/demo/{file}" {
            // `file` is not one of the demo's files: 404, without a token.
            expect_error(res, 404, "not_found").await;
        } else if PUBLIC.contains(path) {
            assert_eq!(res.status(), 200, "{method} {path} answers without a token");
        } else if PUBLIC_OFF.contains(path) {
            expect_error(res, 404, "not_found").await;
        } else {
            let body = expect_error(res, 401, "missing_token").await;
            assert_eq!(body["code"], "missing_token", "{method} {path}");
        }
    }
}

// With SWITCHYARD_JWT_PUBLIC_KEY (an RSA PEM, given as text) RS256 tokens
// are verified and HS256 tokens refused.
async fn rs256_public_key_verifies_rs256_and_refuses_hs256(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    openssl(
        dir.path(),
        &["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa_pub.pem"],
    );
    let public = read(dir.path(), "rsa_pub.pem");
    let server =
        Server::start_with(&backend, &[("SWITCHYARD_JWT_PUBLIC_KEY", public.as_str())]).await;

    let key =
        EncodingKey::from_rsa_pem(read(dir.path(), "rsa.pem").as_bytes()).expect("RSA private key");
    let rs256 = sign_with(Algorithm::RS256, &key, &claims("alice"));
    assert_eq!(server.get(PROBE, &rs256).await.status(), 200);
    expect_error(
        server.get(PROBE, &token("alice")).await,
        401,
        "invalid_token",
    )
    .await;
}

// An EC P-256 public key, given as a file path, selects ES256.
async fn es256_public_key_file_verifies_es256_and_refuses_hs256(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec_sec1.pem",
        ],
    );
    openssl(
        dir.path(),
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "ec_sec1.pem",
            "-out",
            "ec.pem",
        ],
    );
    openssl(
        dir.path(),
        &["pkey", "-in", "ec.pem", "-pubout", "-out", "ec_pub.pem"],
    );
    let path = dir.path().join("ec_pub.pem");
    let server = Server::start_with(
        &backend,
        &[("SWITCHYARD_JWT_PUBLIC_KEY", path.to_str().unwrap())],
    )
    .await;

    let key =
        EncodingKey::from_ec_pem(read(dir.path(), "ec.pem").as_bytes()).expect("EC private key");
    let es256 = sign_with(Algorithm::ES256, &key, &claims("alice"));
    assert_eq!(server.get(PROBE, &es256).await.status(), 200);
    expect_error(
        server.get(PROBE, &token("alice")).await,
        401,
        "invalid_token",
    )
    .await;
}

// `name` and `avatar` are free display strings of a validly signed token: an
// unusual character (here NUL) is accepted or refused as invalid_token, but
// never makes a server error.
async fn token_with_a_nul_in_name_is_not_a_server_error(backend: Backend) {
    let server = Server::start(&backend).await;
    let token = token_with(
        "alice",
        json!({"name": "Al\u{0}ice", "avatar": "a\u{0}.png"}),
    );
    let res = server.get(PROBE, &token).await;
    match res.status().as_u16() {
        200 => {}
        401 => {
            expect_error(res, 401, "invalid_token").await;
        }
        other => panic!(
            "a valid token's name made {other}: {}",
            res.text().await.unwrap()
        ),
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Sleeps until the wall clock reaches `at_ms`.
async fn sleep_until_ms(at_ms: i64) {
    let left = at_ms - now_ms();
    if left > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(left as u64)).await;
    }
}

// `nbf` is checked with the rule `exp` has, without leeway: refused before
// it (invalid_token, not token_expired), accepted from it on.
async fn a_token_is_refused_before_its_nbf(backend: Backend) {
    let server = Server::start(&backend).await;
    let hour_ahead = sign(&json!({"sub": "alice", "exp": exp_in(7200), "nbf": exp_in(3600)}));
    let body = expect_error(server.get(PROBE, &hour_ahead).await, 401, "invalid_token").await;
    assert!(body["message"].as_str().unwrap().contains("nbf"), "{body}");
    let past = sign(&json!({"sub": "alice", "exp": exp_in(3600), "nbf": exp_in(-5)}));
    assert_eq!(server.get(PROBE, &past).await.status(), 200);

    // Valid from the second `nbf` names, not a moment later.
    let nbf = exp_in(2);
    let soon = sign(&json!({"sub": "alice", "exp": exp_in(3600), "nbf": nbf}));
    expect_error(server.get(PROBE, &soon).await, 401, "invalid_token").await;
    sleep_until_ms(nbf * 1000 + 50).await;
    assert_eq!(server.get(PROBE, &soon).await.status(), 200);
}

// One rule for streams and requests: at `exp` the stream is told
// `token.expired`, and from that instant requests with the same token are
// token_expired, both a token the server has seen (and remembers) and one
// it has not.
async fn requests_and_streams_expire_at_the_same_instant(backend: Backend) {
    let server = Server::start(&backend).await;
    let exp = exp_in(3);
    let seen = sign(&json!({"sub": "alice", "exp": exp}));
    let unseen = sign(&json!({"sub": "alice", "exp": exp, "name": "Alice"}));
    assert_eq!(server.get(PROBE, &seen).await.status(), 200);
    let mut stream = server.sse("channels=system", &seen).await;
    stream.subscription().await;
    loop {
        let frame = stream
            .next_frame_within(std::time::Duration::from_secs(10))
            .await
            .expect("the stream stays open until token.expired");
        if frame.comment.is_some() {
            continue;
        }
        if frame.json()["event"] == "token.expired" {
            break;
        }
    }
    let at = now_ms();
    assert!(
        at >= exp * 1000,
        "token.expired came at {at}, before exp {exp}"
    );
    assert!(
        at < exp * 1000 + 900,
        "token.expired came at {at}, late for exp {exp}: the test needs a request in exp's second"
    );
    expect_error(server.get(PROBE, &seen).await, 401, "token_expired").await;
    expect_error(server.get(PROBE, &unseen).await, 401, "token_expired").await;
    let res = server
        .post("/realtime/presence", &unseen, &json!({"status": "online"}))
        .await;
    expect_error(res, 401, "token_expired").await;
}

// A JWS header may name critical extensions (`crit`) that a recipient must
// understand; Switchyard understands none, so any `crit` is refused.
async fn a_token_with_a_crit_header_is_invalid_token(backend: Backend) {
    let server = Server::start(&backend).await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    for crit in [vec!["exp"], vec!["http://example.com/ext"]] {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(crit.iter().map(|c| c.to_string()).collect());
        let token = jsonwebtoken::encode(&header, &claims("alice"), &key).unwrap();
        let body = expect_error(server.get(PROBE, &token).await, 401, "invalid_token").await;
        assert!(body["message"].as_str().unwrap().contains("crit"), "{body}");
    }
}

// SWITCHYARD_JWT_AUDIENCE and SWITCHYARD_JWT_ISSUER: when set, a token must
// name one of the audiences and the issuer; `switchyard token` mints tokens
// that do.
async fn audience_and_issuer_are_checked_when_set(backend: Backend) {
    let audiences = "switchyard,realtime";
    let issuer = "https://auth.example.com";
    let server = Server::start_with(
        &backend,
        &[
            ("SWITCHYARD_JWT_AUDIENCE", audiences),
            ("SWITCHYARD_JWT_ISSUER", issuer),
        ],
    )
    .await;
    let with = |extra: Value| {
        let mut c = claims("alice");
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign(&c)
    };
    for good in [
        json!({"aud": "switchyard", "iss": issuer}),
        json!({"aud": ["other", "realtime"], "iss": issuer}),
    ] {
        assert_eq!(
            server.get(PROBE, &with(good.clone())).await.status(),
            200,
            "{good}"
        );
    }
    for bad in [
        json!({}),
        json!({"iss": issuer}),
        json!({"aud": "switchyard"}),
        json!({"aud": "other", "iss": issuer}),
        json!({"aud": [], "iss": issuer}),
        json!({"aud": "switchyard", "iss": "https://evil.example.com"}),
        json!({"aud": "switchyard", "iss": 7}),
    ] {
        let res = server.get(PROBE, &with(bad.clone())).await;
        assert_eq!(res.status(), 401, "{bad}");
        expect_error(res, 401, "invalid_token").await;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env_clear()
        .env("SWITCHYARD_JWT_SECRET", SECRET)
        .env("SWITCHYARD_JWT_AUDIENCE", audiences)
        .env("SWITCHYARD_JWT_ISSUER", issuer)
        .args(["token", "--sub", "alice"])
        .output()
        .expect("switchyard token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minted = String::from_utf8(out.stdout).unwrap();
    assert_eq!(server.get(PROBE, minted.trim()).await.status(), 200);
}

on_both_backends!(
    a_token_is_refused_before_its_nbf,
    requests_and_streams_expire_at_the_same_instant,
    a_token_with_a_crit_header_is_invalid_token,
    audience_and_issuer_are_checked_when_set,
    request_without_a_token_is_missing_token,
    garbage_token_is_invalid_token,
    token_with_a_bad_signature_is_invalid_token,
    unsigned_alg_none_token_is_invalid_token,
    token_with_another_algorithm_is_invalid_token,
    token_without_exp_is_invalid_token,
    expired_token_is_token_expired,
    token_without_a_valid_sub_is_invalid_token,
    user_id_claim_is_an_alias_of_sub,
    token_in_query_parameter_is_accepted,
    token_in_cookie_is_accepted,
    authorization_header_wins_over_query_and_cookie,
    valid_token_lacking_a_right_is_permission_denied,
    naming_another_user_id_is_permission_denied,
    every_endpoint_except_the_public_ones_requires_a_token,
    rs256_public_key_verifies_rs256_and_refuses_hs256,
    es256_public_key_file_verifies_es256_and_refuses_hs256,
    token_with_a_nul_in_name_is_not_a_server_error,
);
