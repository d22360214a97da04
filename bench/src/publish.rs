//! `publish`: durable publish throughput. C publishers, each on a keep-alive
//! connection, POST batches of B events (`{"events":[...]}` to
//! `/realtime/broadcast`) back to back; a 202 means the batch is committed.
//! Nchan has no batch publish and no durable log: with `--target nchan` the
//! batch must be 1 and the row is a memory-only reference.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::json;

use crate::Common;
use crate::closed::{self, Exchange};
use crate::conn::{HttpConn, source_for};
use crate::report::{Outcome, describe, percentiles};
use crate::target::{Kind, Target, event_data};

#[derive(Args, Debug)]
pub struct PublishArgs {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent publishers (C), one keep-alive connection each.
    #[arg(long, short = 'c', default_value_t = 8)]
    publishers: usize,
    /// Events per request (B).
    #[arg(long, short = 'b', default_value_t = 100)]
    batch: usize,
    /// Measured seconds (D).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

struct BatchPublisher {
    conn: HttpConn,
    target: Arc<Target>,
    worker: u64,
    next: u64,
    batch: usize,
    pad: usize,
    datas: Vec<Vec<u8>>,
    req: Vec<u8>,
}

impl Exchange for BatchPublisher {
    async fn once(&mut self) -> Result<u64, String> {
        let now = crate::clock::now_ns();
        for data in self.datas.iter_mut() {
            event_data(
                self.worker * 1_000_000_000 + self.next,
                0,
                now,
                self.pad,
                data,
            );
            self.next += 1;
        }
        match self.target.kind {
            Kind::Switchyard => {
                self.target
                    .batch_request(self.conn.endpoint(), &self.datas, &mut self.req)
            }
            Kind::Nchan => {
                self.target
                    .publish_request(self.conn.endpoint(), &self.datas[0], &mut self.req)
            }
        }
        match self.conn.request(&self.req).await {
            Ok(status) if (200..300).contains(&status) => Ok(self.batch as u64),
            Ok(status) => Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&self.conn.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )),
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let target = Arc::new(Target::new(&args.common)?);
    if target.kind == Kind::Nchan && args.batch != 1 {
        bail!("Nchan has no batch publish: use --batch 1 with --target nchan");
    }
    let workers = (0..args.publishers)
        .map(|i| BatchPublisher {
            conn: HttpConn::new(
                target.endpoints[0].clone(),
                source_for(i, args.common.source_addrs),
            ),
            target: target.clone(),
            worker: i as u64,
            next: 0,
            batch: args.batch,
            pad: args.common.pad,
            datas: vec![Vec::with_capacity(128); args.batch.max(1)],
            req: Vec::new(),
        })
        .collect();
    eprintln!(
        "publish: {} on {}, {} publishers x batches of {}, {:.0}s warm-up + {:.0}s",
        target.kind, target.channel, args.publishers, args.batch, args.warmup, args.duration
    );
    let r = closed::run(
        workers,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.duration),
        &args.common.server_pids,
    )
    .await;
    let secs = r.window.as_secs_f64();
    let events_per_s = r.stats.units as f64 / secs;
    let requests_per_s = r.stats.answers as f64 / secs;
    println!(
        "publish {}: {events_per_s:.0} events/s ({requests_per_s:.0} requests/s of {}), errors {}\n  request latency {}\n  {}",
        target.kind,
        args.batch,
        r.stats.errors,
        describe(&r.stats.latency),
        r.cpu.describe()
    );
    if let Some(e) = &r.stats.last_error {
        println!("  last error: {e}");
    }
    let mut m = serde_json::Map::new();
    m.insert("events_per_s".into(), json!(events_per_s.round()));
    m.insert("requests_per_s".into(), json!(requests_per_s.round()));
    percentiles("", &r.stats.latency, &mut m);
    m.insert("errors".into(), json!(r.stats.errors));
    r.cpu.metrics("", &mut m);
    Outcome {
        common: &args.common,
        scenario: "publish",
        primary: "events_per_s",
        higher_is_better: true,
        params: json!({"publishers": args.publishers, "batch": args.batch, "duration_s": args.duration}),
        metrics: m,
        valid: r.cpu.valid() && r.stats.errors == 0,
        notes: r.stats.last_error.into_iter().collect(),
    }
    .emit()
}
