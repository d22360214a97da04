//! Storage outages answer 503 `unavailable` (PROTOCOL §11, §13): `/readyz`
//! fails and publishes are refused with the error body, never a 500.
//! Postgres only: an embedded SQLite file cannot be taken away from a
//! running process.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_answers_503_unavailable() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    let server = Server::start(&backend).await;
    assert_eq!(
        server
            .client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let Backend::Postgres(admin) = &backend else {
        unreachable!()
    };
    let name = server.db.url.rsplit('/').next().unwrap().to_string();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .unwrap();

    let res = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    expect_error(res, 503, "unavailable").await;
    let res = server
        .post(
            "/realtime/broadcast",
            &service_token(),
            &json!({"channel": "system", "event": "e", "data": {}}),
        )
        .await;
    assert_eq!(
        res.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let body = expect_error(res, 503, "unavailable").await;
    assert!(
        !body["message"].as_str().unwrap().contains("database"),
        "no internals: {body}"
    );
}
