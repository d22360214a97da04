//! `edit`: collaborative-editing throughput. N editors on one document,
//! each with its own session and one operation in flight, sending the next
//! as soon as the last is acknowledged (closed loop, like an ot.js client).
//!
//! Every operation inserts one character at the start of the document, so
//! the document's length at revision r is r and each editor can build a
//! valid operation against the last revision it was told; the server then
//! transforms it past everything applied since (all but the first are
//! transformed). The document grows by one character per operation: a run
//! at 5,000 operations/s for 8 s ends near 40,000 characters, and every
//! operation rewrites it. Switchyard only: Nchan has no editing.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::Common;
use crate::clock::CpuMeter;
use crate::report::{Outcome, describe, percentiles};
use crate::target::{Kind, Target};

#[derive(Args, Debug)]
pub struct EditArgs {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent editors (N), each with its own session and connection.
    #[arg(long, short = 'n', default_value_t = 10)]
    editors: usize,
    /// Measured seconds (D), from the moment every session is open.
    #[arg(long, short = 'd', default_value_t = 8.0)]
    duration: f64,
}

/// What one editor did.
struct Done {
    operations: u64,
    transformed: u64,
    latency: Histogram<u64>,
    last_revision: u64,
}

pub async fn run(args: EditArgs) -> anyhow::Result<()> {
    let target = Target::new(&args.common)?;
    if target.kind != Kind::Switchyard {
        bail!("only Switchyard edits documents");
    }
    let url = args.common.urls[0].clone();
    let resource = format!("bench{}x{}", std::process::id(), crate::clock::now_ns());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.editors)
        .build()?;
    let mut sessions = Vec::new();
    for e in 0..args.editors {
        let token = target.client_token(&format!("editor{e}"), "task:*")?;
        let started: Value = http
            .post(format!("{url}/realtime/edit/sessions"))
            .bearer_auth(&token)
            .json(&json!({"resource_type": "task", "resource_id": resource, "field": "body"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = started["session_id"].as_str().context("session_id")?;
        let revision = started["revision"].as_u64().context("revision")?;
        sessions.push((token, id.to_string(), revision));
    }
    eprintln!(
        "edit: {} editors on one document, {:.0}s",
        args.editors, args.duration
    );
    let cpu = CpuMeter::start(&args.common.server_pids);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let editors: Vec<_> = sessions
        .into_iter()
        .map(|(token, session, revision)| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                edit_until(&http, &url, (&token, &session), revision, deadline).await
            })
        })
        .collect();
    let (mut operations, mut transformed, mut revision) = (0, 0, 0);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for editor in editors {
        let done = editor.await??;
        operations += done.operations;
        transformed += done.transformed;
        revision = revision.max(done.last_revision);
        latency.add(&done.latency)?;
    }
    let wall = started.elapsed().as_secs_f64();
    let used = cpu.stop();
    let ops_per_s = operations as f64 / wall;
    println!(
        "edit: {ops_per_s:.0} operations/s ({operations} in {wall:.1}s, {transformed} transformed; document ends at {revision} characters)\n  latency {}\n  {}",
        describe(&latency),
        used.describe()
    );
    let mut m = serde_json::Map::new();
    m.insert("ops_per_s".into(), json!(ops_per_s.round()));
    m.insert("operations".into(), json!(operations));
    m.insert("transformed".into(), json!(transformed));
    m.insert("document_chars".into(), json!(revision));
    percentiles("", &latency, &mut m);
    used.metrics("", &mut m);
    Outcome {
        common: &args.common,
        scenario: "edit",
        primary: "ops_per_s",
        higher_is_better: true,
        params: json!({"editors": args.editors, "duration_s": args.duration}),
        metrics: m,
        valid: used.valid(),
        notes: Vec::new(),
    }
    .emit()
}

/// One editor (its token and session, at `revision`): an operation, its
/// answer, the next, until `deadline`.
async fn edit_until(
    http: &reqwest::Client,
    url: &str,
    (token, session): (&str, &str),
    mut revision: u64,
    deadline: Instant,
) -> anyhow::Result<Done> {
    let mut done = Done {
        operations: 0,
        transformed: 0,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        last_revision: 0,
    };
    while Instant::now() < deadline {
        let sent = Instant::now();
        let ops = if revision == 0 {
            json!([{"insert": "x"}])
        } else {
            json!([{"insert": "x"}, {"retain": revision}])
        };
        let res = http
            .post(format!("{url}/realtime/edit/sessions/{session}/operations"))
            .bearer_auth(token)
            .json(&json!({"revision": revision, "ops": ops}))
            .send()
            .await?;
        if res.status() != 200 {
            bail!("operation answered {}: {}", res.status(), res.text().await?);
        }
        let body: Value = res.json().await?;
        let applied = body["revision"].as_u64().context("revision")?;
        done.transformed += u64::from(applied > revision + 1);
        done.latency
            .saturating_record(sent.elapsed().as_micros().max(1) as u64);
        done.operations += 1;
        revision = applied;
    }
    done.last_revision = revision;
    Ok(done)
}
