//! Edit throughput: N concurrent editors on one document, each with its own
//! session and one operation in flight, as fast as the server acknowledges.
//!
//!     edit --url http://127.0.0.1:8080 --secret S --editors 10 --seconds 10
//!
//! Every operation inserts one character at the start of the document, so
//! the document's length at revision r is r and each editor can build a
//! valid operation against the last revision it was told, which the server
//! then transforms past everything applied since. Reports operations/s,
//! latency percentiles, how many were transformed, and the client's CPU.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long)]
    secret: String,
    #[arg(long, default_value_t = 10)]
    editors: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Document id, fresh per run so revisions start at 0.
    #[arg(long)]
    resource_id: Option<String>,
}

fn token(secret: &str, sub: &str) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": sub, "exp": exp, "channels": ["task:*"]}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let resource = args
        .resource_id
        .clone()
        .unwrap_or_else(|| format!("bench{}", std::process::id()));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.editors)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut editors = Vec::new();
    for e in 0..args.editors {
        let http = http.clone();
        let url = args.url.clone();
        let token = token(&args.secret, &format!("editor{e}"))?;
        let resource = resource.clone();
        editors.push(tokio::spawn(async move {
            let session: Value = http
                .post(format!("{url}/realtime/edit/sessions"))
                .bearer_auth(&token)
                .json(&json!({"resource_type": "task", "resource_id": resource, "field": "body"}))
                .send()
                .await?
                .json()
                .await?;
            let session_id = session["session_id"]
                .as_str()
                .context("session_id")?
                .to_string();
            let mut revision = session["revision"].as_u64().context("revision")?;
            let (mut done, mut transformed, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let sent = Instant::now();
                let ops = if revision == 0 {
                    json!([{"insert": "x"}])
                } else {
                    json!([{"insert": "x"}, {"retain": revision}])
                };
                let res = http
                    .post(format!(
                        "{url}/realtime/edit/sessions/{session_id}/operations"
                    ))
                    .bearer_auth(&token)
                    .json(&json!({"revision": revision, "ops": ops}))
                    .send()
                    .await?;
                anyhow::ensure!(res.status() == 200, "operation answered {}", res.status());
                let body: Value = res.json().await?;
                let applied = body["revision"].as_u64().context("revision")?;
                transformed += u64::from(applied > revision + 1);
                revision = applied;
                latencies.push(sent.elapsed());
                done += 1;
            }
            anyhow::Ok((done, transformed, latencies))
        }));
    }
    let (mut total, mut transformed, mut latencies) = (0u64, 0u64, Vec::new());
    for e in editors {
        let (d, t, l) = e.await??;
        total += d;
        transformed += t;
        latencies.extend(l);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - cpu0) / wall * 100.0;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "RESULT {}",
        json!({"scenario": "edit", "editors": args.editors, "operations": total, "ops_per_s": (total as f64 / wall).round(),
               "transformed": transformed, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "client_cpu_pct": cpu.round()})
    );
    Ok(())
}
