//! Postgres restarted under load (PROTOCOL §3 durability, §11 `unavailable`):
//! while it is down publishes answer 503 `unavailable` and `/readyz` fails;
//! nothing acknowledged is lost; both nodes recover without a restart.
//!
//! This stops and starts the machine's PostgreSQL, so it lives alone in its
//! own test binary (cargo runs test binaries one after another).

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn pg_cluster(action: &str) -> bool {
    let Ok(versions) = std::fs::read_dir("/etc/postgresql") else {
        return false;
    };
    let Some(version) = versions
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .next()
    else {
        return false;
    };
    let mut cmd = Command::new("pg_ctlcluster");
    cmd.args(["--skip-systemctl-redirect", &version, "main", action]);
    if action == "stop" {
        cmd.args(["-m", "fast"]);
    }
    cmd.status().is_ok_and(|s| s.success())
}

async fn wait_ready(server: &Server, ready: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = server
            .client
            .get(server.url("/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if (status == 200) == ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never became {}",
            if ready { "ready" } else { "unready" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_loses_nothing_acknowledged_and_nodes_recover() {
    let Some(backend) = Backend::postgres() else {
        return;
    };
    if !std::path::Path::new("/etc/postgresql").exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must be able to restart the local PostgreSQL"
        );
        eprintln!("skipping: no local PostgreSQL cluster to restart");
        return;
    }
    let a = Server::start(&backend).await;
    let b = Server::start_on(a.db.clone(), &[]);
    let publish = |node: &Server, n: usize| {
        node.client
            .post(node.url("/realtime/broadcast"))
            .bearer_auth(service_token())
            .json(&json!({"channel": "feed:durable", "event": "tick", "data": {"n": n}}))
            .send()
    };

    let mut acknowledged = BTreeSet::new();
    for n in 0..20 {
        let res = publish(&a, n).await.unwrap();
        assert_eq!(res.status(), 202);
        acknowledged.insert(res.json::<Value>().await.unwrap()["id"].as_u64().unwrap());
    }

    assert!(pg_cluster("stop"), "stopped PostgreSQL");
    let outcome = std::panic::AssertUnwindSafe(async {
        wait_ready(&a, false).await;
        let res = a.client.get(a.url("/readyz")).send().await.unwrap();
        expect_error(res, 503, "unavailable").await;
        for n in 0..5 {
            let res = publish(&b, 100 + n).await.unwrap();
            if res.status() == 202 {
                acknowledged.insert(res.json::<Value>().await.unwrap()["id"].as_u64().unwrap());
            } else {
                expect_error(res, 503, "unavailable").await;
            }
        }
    });
    let down = futures_util::FutureExt::catch_unwind(outcome).await;
    assert!(pg_cluster("start"), "started PostgreSQL again");
    if let Err(panic) = down {
        std::panic::resume_unwind(panic);
    }

    wait_ready(&a, true).await;
    wait_ready(&b, true).await;
    // Both nodes take publishes again, by themselves.
    for (i, node) in [&a, &b].into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let res = publish(node, 200 + i).await.unwrap();
            if res.status() == 202 {
                acknowledged.insert(res.json::<Value>().await.unwrap()["id"].as_u64().unwrap());
                break;
            }
            assert!(Instant::now() < deadline, "node {i} recovered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for node in [&a, &b] {
        let body: Value = node
            .get(
                "/realtime/poll?channels=feed:durable&last_poll_id=0&timeout=0&limit=1000",
                &token("reader"),
            )
            .await
            .json()
            .await
            .unwrap();
        let stored: BTreeSet<u64> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        assert!(
            acknowledged.is_subset(&stored),
            "every acknowledged publish is in the log"
        );
    }
}
