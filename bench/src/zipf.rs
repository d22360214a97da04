//! `zipf`: many channels, the shape of a task board. S SSE streams each
//! follow F distinct channels drawn from C by a Zipf law (channel k, from 0,
//! has weight 1/(k+1)^s: a few hot, a long cold tail); publishes pick their
//! channel by the same law. The client knows who follows what, so it knows
//! exactly which stream must receive each event: loss is counted per
//! (stream, event), and events a stream was not owed are counted too.
//! Switchyard streams name their channels in `channels=`; Nchan's use one
//! multiplexed subscriber location (several channel ids).
//!
//! Phases, with the server's RSS read after each (`--server-pid`):
//! 1. before: no stream open.
//! 2. open: every stream open and idle for `--settle` s, nothing published.
//!    (open − before) / S is the memory per stream following F channels:
//!    the connection plus its F subscriptions, and whatever the server keeps
//!    per channel once a channel has a subscriber.
//! 3. touched: one event published to every channel, in order (also the
//!    warm-up), then `--settle` s. (touched − open) / C is the memory per
//!    channel holding one retained event (Nchan: its message buffer in
//!    shared memory, counted as it is touched; Switchyard: whatever it keeps
//!    in memory per channel with events, its log itself being in SQLite).
//! 4. then the capacity search: steps of `--duration` s at a rate stepped up
//!    by `--step-factor` until a step loses an event or its p99 reaches
//!    `--p99-limit-ms`; the last passing step is the capacity, in events/s
//!    and in deliveries/s. RSS is read once more at the end.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::{Map, json};

use crate::Common;
use crate::clock::pid_rss;
use crate::conn::nofile_limit;
use crate::publisher::Publisher;
use crate::report::Outcome;
use crate::sse::{SubConfig, open_all, spawn_sse};
use crate::step::{Ctx, Search, Spread, run_step, search};
use crate::target::Target;

#[derive(Args, Debug)]
pub struct ZipfArgs {
    #[command(flatten)]
    pub common: Common,
    /// SSE streams (S).
    #[arg(long, default_value_t = 2000)]
    streams: usize,
    /// Distinct channels each stream follows (F).
    #[arg(long, default_value_t = 20)]
    follow: usize,
    /// Channels (C).
    #[arg(long, default_value_t = 10_000)]
    channels: usize,
    /// Zipf exponent s: channel k (from 0) has weight 1/(k+1)^s.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Seed of the subscription map and of the publishes' channels.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of publishing per step.
    #[arg(long, short = 'd', default_value_t = 5.0)]
    duration: f64,
    #[command(flatten)]
    search: Search,
    /// Rate of the pass that publishes one event to every channel, events/s.
    #[arg(long, default_value_t = 1000.0)]
    touch_rate: f64,
    /// Seconds before each RSS reading.
    #[arg(long, default_value_t = 3.0)]
    settle: f64,
    /// Keep-alive connections the publisher spreads publishes over.
    #[arg(long, default_value_t = 8)]
    publish_connections: usize,
    /// Seconds to wait after publishing for late events before counting loss.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Read buffer per stream, bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    read_buf: usize,
    /// HDR significant digits.
    #[arg(long, default_value_t = 2)]
    sigfig: u8,
}

/// SplitMix64: small, seeded, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A Zipf law over `0..n` by inverse transform on the cumulative weights.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (0..n)
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(s);
                total
            })
            .collect();
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> u32 {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1) as u32
    }

    /// Probability of channel `k`.
    fn p(&self, k: usize) -> f64 {
        self.cdf[k] - if k == 0 { 0.0 } else { self.cdf[k - 1] }
    }
}

/// Who follows what: per stream its channels, per channel its streams.
struct Subscriptions {
    follows: Vec<Vec<u32>>,
    followers: Vec<Vec<u32>>,
}

fn subscriptions(zipf: &Zipf, streams: usize, follow: usize, rng: &mut Rng) -> Subscriptions {
    let channels = zipf.cdf.len();
    let mut followers = vec![Vec::new(); channels];
    let follows = (0..streams)
        .map(|i| {
            let mut mine: Vec<u32> = Vec::with_capacity(follow);
            while mine.len() < follow {
                let c = zipf.sample(rng);
                if !mine.contains(&c) {
                    mine.push(c);
                }
            }
            for &c in &mine {
                followers[c as usize].push(i as u32);
            }
            mine
        })
        .collect();
    Subscriptions { follows, followers }
}

fn rss(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&p| pid_rss(p)).sum()
}

fn mb(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

/// (after − before) / n, bytes.
fn per(before: Option<u64>, after: Option<u64>, n: usize) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if n > 0 => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    }
}

pub async fn run(args: ZipfArgs) -> anyhow::Result<()> {
    if args.follow == 0 || args.follow > args.channels {
        bail!("--follow must be between 1 and --channels");
    }
    let limit = nofile_limit() as usize;
    if args.streams + args.publish_connections + 32 > limit {
        bail!(
            "{} streams need more open files than this process may have ({limit})",
            args.streams
        );
    }
    let zipf = Arc::new(Zipf::new(args.channels, args.zipf_s));
    let map = subscriptions(&zipf, args.streams, args.follow, &mut Rng(args.seed));
    let followed = map.followers.iter().filter(|f| !f.is_empty()).count();
    let hottest = map.followers.iter().map(Vec::len).max().unwrap_or(0);
    // Streams an event reaches on average under the publish law.
    let mean_fanout: f64 = (0..args.channels)
        .map(|k| zipf.p(k) * map.followers[k].len() as f64)
        .sum();
    let mut target = Target::new(&args.common)?;
    target.spread(args.channels, &map.follows);
    let target = Arc::new(target);
    eprintln!(
        "zipf: {}, {} streams x {} of {} channels (s = {}): {followed} channels followed, the hottest by {hottest} streams; an event reaches {mean_fanout:.1} streams on average",
        target.kind, args.streams, args.follow, args.channels, args.zipf_s
    );

    let pids = &args.common.server_pids;
    if pids.is_empty() {
        eprintln!("zipf: no --server-pid given: memory is not measured");
    }
    let settle = Duration::from_secs_f64(args.settle);
    let rss_before = rss(pids);
    let cfg = Arc::new(SubConfig {
        target: target.clone(),
        read_buf: args.read_buf,
        sigfig: args.sigfig,
        reconnect: true,
        source_addrs: args.common.source_addrs,
    });
    let subs = open_all(
        cfg,
        args.streams,
        args.common.connect_concurrency,
        spawn_sse,
    )
    .await;
    if subs.failed > 0 {
        subs.close();
        bail!(
            "{} of {} streams failed to open; first error: {}",
            subs.failed,
            args.streams,
            subs.first_error.unwrap_or_default()
        );
    }
    let open_s = subs.took.as_secs_f64();
    eprintln!("  all {} open in {open_s:.2}s", args.streams);
    tokio::time::sleep(settle).await;
    let rss_open = rss(pids);

    // Touch every channel once, in order: one retained event each.
    let mut next = 0u32;
    let channels = args.channels as u32;
    let mut ctx = Ctx {
        subs,
        publisher: Publisher::new(target.clone(), args.publish_connections, args.common.pad),
        sigfig: args.sigfig,
        drain: Duration::from_secs_f64(args.drain),
        server_pids: pids.clone(),
        spread: Some(Spread {
            followers: map.followers,
            pick: Box::new(move || {
                next += 1;
                (next - 1) % channels
            }),
        }),
    };
    let touch = run_step(
        &mut ctx,
        0,
        args.touch_rate,
        args.channels as f64 / args.touch_rate,
    )
    .await;
    touch.print("touch (one event per channel)");
    if touch.lost > 0 || touch.failed_publishes > 0 || touch.unexpected != Some(0) {
        eprintln!("  warning: the touch pass lost, failed or misdelivered events");
    }
    tokio::time::sleep(settle).await;
    let rss_touched = rss(pids);

    let mut rng = Rng(args.seed ^ 0xD1B5_4A32_D192_ED03);
    let law = zipf.clone();
    if let Some(spread) = &mut ctx.spread {
        spread.pick = Box::new(move || law.sample(&mut rng));
    }
    let found = search(&mut ctx, &args.search, args.duration).await;
    let rss_end = rss(pids);
    ctx.subs.close();

    let per_stream = per(rss_before, rss_open, args.streams);
    let per_channel = per(rss_open, rss_touched, args.channels);
    let capacity = found.rate();
    let deliveries = found.best.as_ref().map_or(0.0, |b| b.deliveries_per_s());
    println!(
        "zipf memory ({}): server RSS {} before, {} with {} streams open = {} per stream (following {} channels); {} after one event on each of {} channels = {} per channel; {} at the end",
        args.common.label(),
        mb(rss_before),
        mb(rss_open),
        args.streams,
        per_stream.map_or("-".into(), |b| format!("{b:.0} bytes")),
        args.follow,
        mb(rss_touched),
        args.channels,
        per_channel.map_or("-".into(), |b| format!("{b:.0} bytes")),
        mb(rss_end),
    );
    println!(
        "capacity ({}): {capacity:.1} events/s = {deliveries:.0} deliveries/s with zero loss and p99 < {} ms{}",
        args.common.label(),
        args.search.p99_limit_ms,
        if found.client_bound {
            " -> INVALID: the client saturated first"
        } else {
            ""
        }
    );

    let mut m = Map::new();
    m.insert("streams".into(), json!(args.streams));
    m.insert("channels_followed".into(), json!(followed));
    m.insert("hottest_followers".into(), json!(hottest));
    m.insert(
        "mean_followers_per_event".into(),
        json!((mean_fanout * 100.0).round() / 100.0),
    );
    m.insert("capacity_rate".into(), json!(capacity));
    m.insert(
        "capacity_deliveries_per_s".into(),
        json!(deliveries.round()),
    );
    if let Some(b) = per_stream {
        m.insert("bytes_per_stream".into(), json!(b.round()));
    }
    if let Some(b) = per_channel {
        m.insert("bytes_per_channel".into(), json!(b.round()));
    }
    for (k, v) in [
        ("rss_before_mb", rss_before),
        ("rss_open_mb", rss_open),
        ("rss_touched_mb", rss_touched),
        ("rss_end_mb", rss_end),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), json!((v as f64 / 1e5).round() / 10.0));
        }
    }
    m.insert("open_s".into(), json!((open_s * 100.0).round() / 100.0));
    touch.metrics("touch_", &mut m);
    let mut notes = found.metrics(&mut m);
    for note in &notes {
        println!("  {note}");
    }
    if touch.lost > 0 || touch.unexpected != Some(0) {
        notes.push(format!(
            "touch pass: lost {}, unexpected {}",
            touch.lost,
            touch.unexpected.unwrap_or(0)
        ));
    }
    Outcome {
        common: &args.common,
        scenario: "zipf-capacity",
        primary: "capacity_deliveries_per_s",
        higher_is_better: true,
        params: json!({"streams": args.streams, "follow": args.follow, "channels": args.channels, "zipf_s": args.zipf_s, "seed": args.seed, "start_rate": args.search.start_rate, "step_factor": args.search.step_factor, "step_s": args.duration, "p99_limit_ms": args.search.p99_limit_ms, "touch_rate": args.touch_rate, "steps": found.steps}),
        metrics: m,
        valid: found.valid() && touch.lost == 0,
        notes,
    }
    .emit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_seeded() {
        let z = Zipf::new(10_000, 1.0);
        // H(10000) ≈ 9.788: the first channel has about 10% of the mass.
        assert!((z.p(0) - 1.0 / 9.7876).abs() < 1e-3);
        let mut rng = Rng(7);
        let n = 100_000;
        let hits = (0..n).filter(|_| z.sample(&mut rng) == 0).count();
        assert!((hits as f64 / n as f64 - z.p(0)).abs() < 0.01);
        let a = subscriptions(&z, 50, 20, &mut Rng(1));
        let b = subscriptions(&z, 50, 20, &mut Rng(1));
        assert_eq!(a.follows, b.follows);
        for mine in &a.follows {
            let mut d = mine.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 20);
        }
        let total: usize = a.followers.iter().map(Vec::len).sum();
        assert_eq!(total, 50 * 20);
    }
}
