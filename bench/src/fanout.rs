//! `fanout`: N SSE subscribers on one channel and an open-loop publisher at R
//! events/s for D seconds. Each step reports deliveries/s, publish→receive
//! latency percentiles (per-subscriber HDR histograms merged), events lost
//! (not received by the end of the drain) and duplicated, and CPU.
//! `--capacity` steps R up by a factor until a step loses events or its p99
//! reaches the limit; the answer is the last passing R, as deliveries/s R × N.
//! `--group` (Switchyard) makes the N subscribers the members of one group
//! conversation, each reading its inbox, and each event a message sent by
//! one of them in turn: the scenario `messages` (send → receive latency).
//! `--transport` reads over SSE (the default) or a Switchyard WebSocket in
//! JSON or protobuf frames; every step also reports the bytes read per
//! delivered event and the server's CPU per delivered event (from the
//! first publish to the end of the drain).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::Common;
use crate::clock::{CpuMeter, CpuUse};
use crate::conn::nofile_limit;
use crate::publisher::Publisher;
use crate::report::{Outcome, describe, percentiles};
use crate::sse::{MAX_US, Opened, Spawn, SubConfig, open_all, spawn_sse};
use crate::target::{Kind, Target};
use crate::ws::Framing;

/// How subscribers read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Sse,
    /// Switchyard's WebSocket, JSON text frames (switchyard.v1.json).
    WsJson,
    /// Switchyard's WebSocket, protobuf binary frames (switchyard.v1.protobuf).
    WsProtobuf,
}

impl Transport {
    fn spawn(self) -> Spawn {
        fn json(
            i: usize,
            cfg: Arc<SubConfig>,
            stats: crate::sse::Shared,
            ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
        ) -> tokio::task::JoinHandle<()> {
            tokio::spawn(crate::ws::subscribe(i, Framing::Json, cfg, stats, ready))
        }
        fn protobuf(
            i: usize,
            cfg: Arc<SubConfig>,
            stats: crate::sse::Shared,
            ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
        ) -> tokio::task::JoinHandle<()> {
            tokio::spawn(crate::ws::subscribe(
                i,
                Framing::Protobuf,
                cfg,
                stats,
                ready,
            ))
        }
        match self {
            Transport::Sse => spawn_sse,
            Transport::WsJson => json,
            Transport::WsProtobuf => protobuf,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::WsJson => "ws-json",
            Transport::WsProtobuf => "ws-protobuf",
        }
    }
}

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Subscribers (N).
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: usize,
    /// How subscribers read: SSE, or Switchyard's WebSocket in JSON or
    /// protobuf frames.
    #[arg(long, value_enum, default_value = "sse")]
    transport: Transport,
    /// Events per second (R); with --capacity, see --start-rate.
    #[arg(long, short = 'r', default_value_t = 50.0)]
    rate: f64,
    /// Seconds of publishing (D); with --capacity, per step.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Keep-alive connections the publisher spreads publishes over.
    #[arg(long, default_value_t = 8)]
    publish_connections: usize,
    /// Seconds to wait after publishing for late events before counting loss.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Seconds of publishing at a low rate before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Read buffer per subscriber, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    read_buf: usize,
    /// HDR significant digits (default 3, or 2 above 4,000 subscribers).
    #[arg(long)]
    sigfig: Option<u8>,
    /// Do not reopen a stream the server ended.
    #[arg(long)]
    no_reconnect: bool,
    /// Step R up until loss or p99 ≥ --p99-limit-ms; report the last passing R.
    #[arg(long)]
    capacity: bool,
    /// First rate of --capacity, events/s.
    #[arg(long, default_value_t = 20.0)]
    start_rate: f64,
    /// Rate factor between --capacity steps.
    #[arg(long, default_value_t = 1.25)]
    step_factor: f64,
    /// Highest rate --capacity tries.
    #[arg(long, default_value_t = 1_000_000.0)]
    max_rate: f64,
    /// A step passes with p99 below this, ms.
    #[arg(long, default_value_t = 100.0)]
    p99_limit_ms: f64,
    /// Re-runs of a failing --capacity step before concluding (noise guard).
    #[arg(long, default_value_t = 1)]
    retries: u32,
    /// A failing --capacity step during which other processes of the machine
    /// used more than this share of a core is re-run instead of ending the
    /// search, %.
    #[arg(long, default_value_t = 25.0)]
    max_others_pct: f64,
    /// How many disturbed steps one --capacity run re-runs at most.
    #[arg(long, default_value_t = 4)]
    disturbed_retries: u32,
    /// Subscribers are the members of one group conversation (at most 256)
    /// reading their inbox; events are messages they send in turn.
    #[arg(long)]
    group: bool,
    /// Scenario name in the results (default `fanout`, or `messages` with
    /// --group), to keep a run of another shape apart in summaries.
    #[arg(long)]
    scenario: Option<String>,
}

struct Ctx {
    subs: Opened,
    publisher: Publisher,
    sigfig: u8,
    drain: Duration,
    server_pids: Vec<u32>,
}

struct Step {
    rate: f64,
    subscribers: usize,
    published: u64,
    failed_publishes: u64,
    delivered: u64,
    lost: u64,
    dups: u64,
    reordered: u64,
    reconnects: u64,
    sub_errors: u64,
    /// Bytes subscribers read over the step (events, control messages and
    /// framing).
    bytes: u64,
    /// Server CPU from the first publish to the end of the drain.
    server_time: Option<Duration>,
    latency: Histogram<u64>,
    pub_lag: Histogram<u64>,
    pub_latency: Histogram<u64>,
    cpu: CpuUse,
    drained_in: Duration,
    last_error: Option<String>,
}

impl Step {
    fn deliveries_per_s(&self) -> f64 {
        // Open loop: the step lasts published / rate seconds by schedule.
        self.delivered as f64 * self.rate / self.published.max(1) as f64
    }

    fn p99_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn bytes_per_event(&self) -> f64 {
        self.bytes as f64 / self.delivered.max(1) as f64
    }

    /// Server CPU per delivered event, µs.
    fn server_us_per_delivery(&self) -> Option<f64> {
        self.server_time
            .map(|t| t.as_secs_f64() * 1e6 / self.delivered.max(1) as f64)
    }

    fn print(&self, name: &str) {
        println!(
            "{name}: {:.1} events/s x {} subscribers -> {:.0} deliveries/s; lost {}, duplicated {}, reordered {}, reconnects {}, stream errors {}, failed publishes {}\n  latency {}\n  publisher: lag behind schedule p99 {:.2} ms, request p99 {:.2} ms; drained in {:.2}s\n  {:.1} bytes read per event; server CPU {} per delivered event\n  {}",
            self.rate,
            self.subscribers,
            self.deliveries_per_s(),
            self.lost,
            self.dups,
            self.reordered,
            self.reconnects,
            self.sub_errors,
            self.failed_publishes,
            describe(&self.latency),
            self.pub_lag.value_at_quantile(0.99) as f64 / 1000.0,
            self.pub_latency.value_at_quantile(0.99) as f64 / 1000.0,
            self.drained_in.as_secs_f64(),
            self.bytes_per_event(),
            self.server_us_per_delivery()
                .map_or("unknown".into(), |us| format!("{us:.2} µs")),
            self.cpu.describe()
        );
        if let Some(e) = &self.last_error {
            println!("  last error: {e}");
        }
    }

    fn metrics(&self, prefix: &str, out: &mut Map<String, Value>) {
        let mut put = |k: &str, v: Value| {
            out.insert(format!("{prefix}{k}"), v);
        };
        put("rate", json!(self.rate));
        put("deliveries_per_s", json!(self.deliveries_per_s().round()));
        put("lost", json!(self.lost));
        put("duplicated", json!(self.dups));
        put("reconnects", json!(self.reconnects));
        put("failed_publishes", json!(self.failed_publishes));
        put(
            "bytes_per_event",
            json!((self.bytes_per_event() * 10.0).round() / 10.0),
        );
        if let Some(us) = self.server_us_per_delivery() {
            put(
                "server_us_per_delivery",
                json!((us * 1000.0).round() / 1000.0),
            );
        }
        put(
            "publish_p99_ms",
            json!(self.pub_latency.value_at_quantile(0.99) as f64 / 1000.0),
        );
        self.cpu.metrics(prefix, out);
        percentiles(prefix, &self.latency, out);
    }
}

async fn run_step(ctx: &mut Ctx, step: u32, rate: f64, duration: f64) -> Step {
    let count = (rate * duration).round().max(1.0) as u64;
    let totals = |ctx: &Ctx| {
        ctx.subs.stats.iter().fold((0, 0, 0, 0, 0), |acc, s| {
            let s = s.lock().expect("stats lock");
            (
                acc.0 + s.dups,
                acc.1 + s.reordered,
                acc.2 + s.reconnects,
                acc.3 + s.errors,
                acc.4 + s.bytes,
            )
        })
    };
    let before = totals(ctx);
    let meter = CpuMeter::start(&ctx.server_pids);
    let range = ctx.publisher.run(step, rate, count).await;
    let cpu = meter.stop();
    let pub_stats = ctx.publisher.take_stats();
    let failed: HashSet<u64> = pub_stats.failed.iter().copied().collect();
    let drain_start = Instant::now();
    let missing = loop {
        let missing: u64 = ctx
            .subs
            .stats
            .iter()
            .map(|s| {
                let s = s.lock().expect("stats lock");
                range
                    .clone()
                    .filter(|q| !failed.contains(q) && !s.seen(*q))
                    .count() as u64
            })
            .sum();
        if missing == 0 || drain_start.elapsed() >= ctx.drain {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drained_in = drain_start.elapsed();
    let server_time = meter.stop().server_time;
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, MAX_US, ctx.sigfig).expect("valid bounds");
    let mut last_error = pub_stats.last_error.clone();
    for s in &ctx.subs.stats {
        let mut s = s.lock().expect("stats lock");
        s.take_hist_into(step, &mut latency);
        if s.last_error.is_some() && last_error.is_none() {
            last_error = s.last_error.clone();
        }
    }
    let after = totals(ctx);
    let n = ctx.subs.stats.len() as u64;
    let expected = (count - failed.len() as u64) * n;
    Step {
        rate,
        subscribers: n as usize,
        published: count,
        failed_publishes: failed.len() as u64,
        delivered: expected - missing,
        lost: missing,
        dups: after.0 - before.0,
        reordered: after.1 - before.1,
        reconnects: after.2 - before.2,
        sub_errors: after.3 - before.3,
        bytes: after.4 - before.4,
        server_time,
        latency,
        pub_lag: pub_stats.lag,
        pub_latency: pub_stats.latency,
        cpu,
        drained_in,
        last_error,
    }
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let mut target = Target::new(&args.common)?;
    if args.transport != Transport::Sse && target.kind != Kind::Switchyard {
        bail!(
            "--transport {} reads Switchyard's WebSocket: use --target switchyard",
            args.transport.name()
        );
    }
    if args.group {
        if args.subscribers > 256 {
            bail!("a group has at most 256 members");
        }
        target.open_group(args.subscribers).await?;
    }
    let target = Arc::new(target);
    let limit = nofile_limit() as usize;
    if args.subscribers + args.publish_connections + 32 > limit {
        bail!(
            "{} subscribers need more open files than this process may have ({limit}): run several client processes",
            args.subscribers
        );
    }
    let sigfig = args
        .sigfig
        .unwrap_or(if args.subscribers > 4000 { 2 } else { 3 });
    let cfg = Arc::new(SubConfig {
        target: target.clone(),
        read_buf: args.read_buf,
        sigfig,
        reconnect: !args.no_reconnect,
        source_addrs: args.common.source_addrs,
    });
    eprintln!(
        "fanout: {} ({} node(s)) {}, {} {} subscribers",
        target.kind,
        target.endpoints.len(),
        if args.group {
            "a group conversation, read from the members' inboxes".to_string()
        } else {
            format!("channel {}", target.channel)
        },
        args.subscribers,
        args.transport.name()
    );
    let subs = open_all(
        cfg,
        args.subscribers,
        args.common.connect_concurrency,
        args.transport.spawn(),
    )
    .await;
    if subs.failed > 0 {
        subs.close();
        bail!(
            "{} of {} subscribers failed to open; first error: {}",
            subs.failed,
            args.subscribers,
            subs.first_error.unwrap_or_default()
        );
    }
    eprintln!(
        "  all {} open in {:.2}s",
        args.subscribers,
        subs.took.as_secs_f64()
    );
    let mut ctx = Ctx {
        subs,
        publisher: Publisher::new(target.clone(), args.publish_connections, args.common.pad),
        sigfig,
        drain: Duration::from_secs_f64(args.drain),
        server_pids: args.common.server_pids.clone(),
    };
    if args.warmup > 0.0 {
        let warm = run_step(
            &mut ctx,
            0,
            args.start_rate.min(args.rate).min(20.0),
            args.warmup,
        )
        .await;
        warm.print("warm-up");
        if warm.lost > 0 || warm.failed_publishes > 0 {
            eprintln!("  warning: the warm-up lost events or failed publishes");
        }
    }
    let result = if args.capacity {
        capacity(&mut ctx, &args).await
    } else {
        fixed(&mut ctx, &args).await
    };
    ctx.subs.close();
    result
}

async fn fixed(ctx: &mut Ctx, args: &FanoutArgs) -> anyhow::Result<()> {
    let s = run_step(ctx, 1, args.rate, args.duration).await;
    s.print("fanout");
    let mut m = Map::new();
    m.insert("subscribers".into(), json!(s.subscribers));
    s.metrics("", &mut m);
    let valid = s.cpu.valid();
    Outcome {
        common: &args.common,
        scenario: args.scenario.as_deref().unwrap_or(if args.group {
            "messages"
        } else {
            "fanout"
        }),
        primary: "p99_ms",
        higher_is_better: false,
        params: json!({"subscribers": args.subscribers, "rate": args.rate, "duration_s": args.duration, "transport": args.transport.name(), "group": args.group}),
        metrics: m,
        valid,
        notes: s.last_error.into_iter().collect(),
    }
    .emit()
}

async fn capacity(ctx: &mut Ctx, args: &FanoutArgs) -> anyhow::Result<()> {
    let mut rate = args.start_rate;
    let mut retries = args.retries;
    let mut disturbed_left = args.disturbed_retries;
    let mut best: Option<Step> = None;
    let mut failure: Option<(Step, String)> = None;
    let mut client_bound = false;
    let mut step = 1;
    let mut steps = Vec::new();
    while rate <= args.max_rate {
        let s = run_step(ctx, step, rate, args.duration).await;
        step += 1;
        let why = if s.lost > 0 {
            Some(format!("lost {} events", s.lost))
        } else if s.failed_publishes > 0 {
            Some(format!("{} publishes failed", s.failed_publishes))
        } else if s.p99_ms() >= args.p99_limit_ms {
            Some(format!(
                "p99 {:.1} ms >= {} ms",
                s.p99_ms(),
                args.p99_limit_ms
            ))
        } else {
            None
        };
        s.print(&format!(
            "step {} ({})",
            step - 1,
            why.as_deref().unwrap_or("pass")
        ));
        steps.push(json!({"rate": s.rate, "p99_ms": s.p99_ms(), "lost": s.lost, "client_cpu_pct": s.cpu.client_pct.round(), "server_cpu_pct": s.cpu.server_pct.map(f64::round), "others_cpu_pct": s.cpu.others_pct.map(f64::round)}));
        if !s.cpu.valid() {
            client_bound = true;
            failure = Some((s, "client CPU above 85% of a core".into()));
            break;
        }
        let others = s.cpu.others_pct.unwrap_or(0.0);
        match why {
            Some(_) if others > args.max_others_pct && disturbed_left > 0 => {
                println!(
                    "  (disturbed: other processes used {others:.0}% of a core; re-running the step)"
                );
                disturbed_left -= 1;
                tokio::time::sleep(Duration::from_secs(3)).await;
                continue;
            }
            None => {
                best = Some(s);
                retries = args.retries;
                rate = (rate * args.step_factor * 10.0).round() / 10.0;
            }
            Some(why) if retries == 0 => {
                failure = Some((s, why));
                break;
            }
            Some(_) => retries -= 1,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let n = ctx.subs.stats.len();
    let mut m = Map::new();
    m.insert("subscribers".into(), json!(n));
    let capacity = best.as_ref().map_or(0.0, |b| b.rate);
    m.insert("capacity_rate".into(), json!(capacity));
    m.insert(
        "capacity_deliveries_per_s".into(),
        json!((capacity * n as f64).round()),
    );
    if let Some(b) = &best {
        b.metrics("at_capacity_", &mut m);
    }
    let mut notes = Vec::new();
    if let Some((f, why)) = &failure {
        m.insert("failed_rate".into(), json!(f.rate));
        m.insert("failed_p99_ms".into(), json!(f.p99_ms()));
        f.cpu.metrics("failed_", &mut m);
        notes.push(format!("next step {:.1} events/s failed: {why}", f.rate));
    }
    println!(
        "capacity ({}): {capacity:.1} events/s x {n} = {:.0} deliveries/s with zero loss and p99 < {} ms{}",
        args.common.label(),
        capacity * n as f64,
        args.p99_limit_ms,
        if client_bound {
            " -> INVALID: the client saturated first"
        } else {
            ""
        }
    );
    for note in &notes {
        println!("  {note}");
    }
    m.insert("steps".into(), json!(steps.len()));
    Outcome {
        common: &args.common,
        scenario: if args.group { "messages-capacity" } else { "fanout-capacity" },
        primary: "capacity_deliveries_per_s",
        higher_is_better: true,
        params: json!({"subscribers": n, "transport": args.transport.name(), "start_rate": args.start_rate, "step_factor": args.step_factor, "step_s": args.duration, "p99_limit_ms": args.p99_limit_ms, "steps": steps}),
        metrics: m,
        valid: !client_bound && best.as_ref().is_some_and(|b| b.cpu.valid()),
        notes,
    }
    .emit()
}
