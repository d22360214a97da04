//! The operator surface (PROTOCOL §13): `switchyard token`, `switchyard
//! migrate`, the dev banner on a fresh start, and the refusal to run on
//! Postgres with a generated secret.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn switchyard() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_token_is_accepted_by_the_server() {
    let out = switchyard()
        .env("SWITCHYARD_JWT_SECRET", SECRET)
        .args([
            "token",
            "--sub",
            "alice",
            "--channels",
            "task:*",
            "--ttl",
            "10m",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let minted = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let server = Server::start(&Backend::Sqlite).await;
    let mut stream = server.sse("channels=task:9", &minted).await;
    let sub = stream.subscription().await;
    assert_eq!(sub["channels"], serde_json::json!(["task:9", "user:alice"]));
}

#[test]
fn token_without_a_secret_says_what_is_missing() {
    let out = switchyard()
        .args(["token", "--sub", "alice"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SWITCHYARD_JWT_SECRET"));
}

#[test]
fn postgres_without_a_secret_refuses_to_start() {
    let out = switchyard()
        .env(
            "SWITCHYARD_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        )
        .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success(), "refused to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SWITCHYARD_JWT_SECRET") && stderr.contains("Postgres"),
        "{stderr}"
    );
}

#[test]
fn migrate_applies_migrations_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let out = switchyard()
        .env("SWITCHYARD_DATABASE_URL", &url)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    assert!(dir.path().join("m.db").exists());
}

/// `cargo run --release` with nothing set: a dev banner with two tokens and
/// a curl line that opens a working stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_start_prints_tokens_and_a_working_curl() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = switchyard()
        .current_dir(dir.path())
        .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("/realtime/broadcast");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    });
    let banner = tokio::time::timeout(Duration::from_secs(30), banner)
        .await
        .unwrap()
        .unwrap();
    assert!(
        dir.path().join("switchyard.db").exists(),
        "the default SQLite file was created"
    );
    assert!(
        banner.iter().any(|l| l.contains("Service token")),
        "{banner:?}"
    );
    let curl = banner
        .iter()
        .find(|l| l.contains("curl -N"))
        .expect("a curl line for a stream");
    let token = curl
        .split("Bearer ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let url = curl.rsplit('\'').nth(1).unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/realtime/sse?channels=system"),
        "{curl}"
    );
    // What the curl line does, while the server that printed it runs.
    let res = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = SseStream::new(res);
    assert_eq!(stream.subscription().await["status"], "success");
    let _ = child.kill();
    let _ = child.wait();
}
