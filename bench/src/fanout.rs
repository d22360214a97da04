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

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::{Map, json};

use crate::Common;
use crate::conn::nofile_limit;
use crate::publisher::Publisher;
use crate::report::Outcome;
use crate::sse::{Spawn, SubConfig, open_all, spawn_sse};
use crate::step::{Ctx, Search, run_step, search};
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
    #[command(flatten)]
    search: Search,
    /// Subscribers are the members of one group conversation (at most 256)
    /// reading their inbox; events are messages they send in turn.
    #[arg(long)]
    group: bool,
    /// Scenario name in the results (default `fanout`, or `messages` with
    /// --group), to keep a run of another shape apart in summaries.
    #[arg(long)]
    scenario: Option<String>,
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
        spread: None,
    };
    if args.warmup > 0.0 {
        let warm = run_step(
            &mut ctx,
            0,
            args.search.start_rate.min(args.rate).min(20.0),
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
    let found = search(ctx, &args.search, args.duration).await;
    let n = ctx.subs.stats.len();
    let mut m = Map::new();
    m.insert("subscribers".into(), json!(n));
    let capacity = found.rate();
    m.insert("capacity_rate".into(), json!(capacity));
    m.insert(
        "capacity_deliveries_per_s".into(),
        json!((capacity * n as f64).round()),
    );
    let notes = found.metrics(&mut m);
    println!(
        "capacity ({}): {capacity:.1} events/s x {n} = {:.0} deliveries/s with zero loss and p99 < {} ms{}",
        args.common.label(),
        capacity * n as f64,
        args.search.p99_limit_ms,
        if found.client_bound {
            " -> INVALID: the client saturated first"
        } else {
            ""
        }
    );
    for note in &notes {
        println!("  {note}");
    }
    Outcome {
        common: &args.common,
        scenario: if args.group { "messages-capacity" } else { "fanout-capacity" },
        primary: "capacity_deliveries_per_s",
        higher_is_better: true,
        params: json!({"subscribers": n, "transport": args.transport.name(), "start_rate": args.search.start_rate, "step_factor": args.search.step_factor, "step_s": args.duration, "p99_limit_ms": args.search.p99_limit_ms, "steps": found.steps}),
        metrics: m,
        valid: found.valid(),
        notes,
    }
    .emit()
}
