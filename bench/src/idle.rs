//! `idle`: N idle SSE streams. Reads the server's VmRSS before opening them
//! and again after a settle period; the difference over N is the memory one
//! idle stream costs. Then one broadcast must reach every stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::Common;
use crate::clock::pid_rss;
use crate::conn::nofile_limit;
use crate::publisher::Publisher;
use crate::report::{Outcome, describe, percentiles};
use crate::sse::{MAX_US, SubConfig, open_all, spawn_sse};
use crate::target::Target;

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Idle SSE streams (N).
    #[arg(long, short = 'n', default_value_t = 10_000)]
    streams: usize,
    /// Seconds between opening the last stream and reading RSS.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Seconds the broadcast may take to reach every stream.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Read buffer per stream, bytes.
    #[arg(long, default_value_t = 4096)]
    read_buf: usize,
    /// Several client processes share one broadcast (one process holds at
    /// most ~19,500 streams): each writes `ready.<index>` here once its
    /// streams are open and waits for all `--processes`; process 0 then
    /// publishes, the others only count what arrives.
    #[arg(long)]
    barrier_dir: Option<std::path::PathBuf>,
    /// Client processes meeting at `--barrier-dir`.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// This process's index among `--processes` (0 publishes).
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Report as the `storm` scenario (a node's clients reconnecting at
    /// once, `--connect-concurrency` in flight): the rate streams open at is
    /// the primary figure, not memory.
    #[arg(long)]
    storm: bool,
}

/// Waits until every process of the run has its streams open.
async fn meet(args: &IdleArgs) -> anyhow::Result<()> {
    let Some(dir) = &args.barrier_dir else {
        return Ok(());
    };
    std::fs::write(dir.join(format!("ready.{}", args.index)), b"")?;
    let started = Instant::now();
    loop {
        let ready = (0..args.processes)
            .filter(|i| dir.join(format!("ready.{i}")).exists())
            .count();
        if ready == args.processes {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {ready} of {} processes got ready", args.processes);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| pid_rss(p)).sum()
}

pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let target = Arc::new(Target::new(&args.common)?);
    let limit = nofile_limit() as usize;
    if args.streams + 64 > limit {
        bail!(
            "{} streams need more open files than this process may have ({limit})",
            args.streams
        );
    }
    let pids = &args.common.server_pids;
    if pids.is_empty() {
        eprintln!("idle: no --server-pid given: memory per stream is not measured");
    }
    let rss_before = rss(pids);
    let cfg = Arc::new(SubConfig {
        target: target.clone(),
        read_buf: args.read_buf,
        sigfig: 2,
        reconnect: true,
        source_addrs: args.common.source_addrs,
    });
    eprintln!(
        "idle: {} on {}, {} streams",
        target.kind, target.channel, args.streams
    );
    let subs = open_all(
        cfg,
        args.streams,
        args.common.connect_concurrency,
        spawn_sse,
    )
    .await;
    let opened = args.streams - subs.failed;
    eprintln!(
        "  {opened} of {} open in {:.2}s{}",
        args.streams,
        subs.took.as_secs_f64(),
        subs.first_error
            .as_ref()
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_after = rss(pids);
    let per_stream = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) / opened as f64),
        _ => None,
    };

    meet(&args).await?;
    let mut publisher = Publisher::new(target.clone(), 1, args.common.pad);
    // The first event of a fresh publisher is sequence 0, in every process.
    let seq = 0;
    if args.index == 0 {
        let range = publisher.run(1, 1.0, 1).await;
        assert_eq!(range.start, seq);
    }
    let pub_stats = publisher.take_stats();
    let started = Instant::now();
    let deadline = Duration::from_secs_f64(args.timeout);
    let received = loop {
        let received = subs
            .stats
            .iter()
            .filter(|s| s.lock().expect("stats lock").seen(seq))
            .count();
        if received >= opened || started.elapsed() >= deadline {
            break received;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_US, 2).expect("valid bounds");
    let mut reconnects = 0;
    for s in &subs.stats {
        let mut s = s.lock().expect("stats lock");
        s.take_hist_into(1, &mut latency);
        reconnects += s.reconnects;
    }
    subs.close();

    let kb = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1} MB", b as f64 / 1e6));
    println!(
        "idle {}: {opened} of {} streams open; server RSS {} -> {} = {} per stream\n  broadcast reached {received} of {opened} streams ({} reconnects, publish {}): latency {}",
        target.kind,
        args.streams,
        kb(rss_before),
        kb(rss_after),
        per_stream.map_or("-".into(), |b| format!(
            "{:.0} bytes ({:.2} KB)",
            b,
            b / 1024.0
        )),
        reconnects,
        if pub_stats.failed.is_empty() {
            "ok".to_string()
        } else {
            format!(
                "failed: {}",
                pub_stats.last_error.clone().unwrap_or_default()
            )
        },
        describe(&latency)
    );
    let mut m = serde_json::Map::new();
    m.insert("streams".into(), json!(opened));
    m.insert("failed_to_open".into(), json!(subs.failed));
    if let Some(b) = per_stream {
        m.insert("bytes_per_stream".into(), json!(b.round()));
    }
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        m.insert(
            "rss_before_mb".into(),
            json!((b as f64 / 1e5).round() / 10.0),
        );
        m.insert(
            "rss_after_mb".into(),
            json!((a as f64 / 1e5).round() / 10.0),
        );
    }
    m.insert("received".into(), json!(received));
    m.insert("missed".into(), json!(opened - received));
    m.insert(
        "open_s".into(),
        json!((subs.took.as_secs_f64() * 100.0).round() / 100.0),
    );
    m.insert(
        "opens_per_s".into(),
        json!((opened as f64 / subs.took.as_secs_f64().max(1e-3)).round()),
    );
    percentiles("broadcast_", &latency, &mut m);
    Outcome {
        common: &args.common,
        scenario: if args.storm { "storm" } else { "idle" },
        primary: if args.storm {
            "opens_per_s"
        } else {
            "bytes_per_stream"
        },
        higher_is_better: args.storm,
        params: json!({"streams": args.streams, "settle_s": args.settle, "processes": args.processes, "index": args.index, "connect_concurrency": args.common.connect_concurrency}),
        metrics: m,
        valid: subs.failed == 0 && received == opened && pub_stats.failed.is_empty(),
        notes: subs
            .first_error
            .clone()
            .into_iter()
            .chain(
                pub_stats
                    .last_error
                    .clone()
                    .map(|e| format!("broadcast failed: {e}")),
            )
            .collect(),
    }
    .emit()
}
