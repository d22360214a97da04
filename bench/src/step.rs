//! Stepped open-loop publishing, shared by `fanout` and `zipf`. One step
//! publishes at R events/s for D seconds, waits (bounded) for every expected
//! delivery, and measures deliveries/s, publish→receive latency (HDR
//! histograms per subscriber, merged), loss, duplicates and CPU. [`search`]
//! steps R up by a factor until a step loses events or its p99 reaches the
//! limit: the last passing step is the capacity.
//!
//! Publishes go to the target's one channel, every subscriber expecting every
//! event, or with a [`Spread`] to many channels, each event expected by the
//! subscribers that follow its channel.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use crate::clock::{CpuMeter, CpuUse};
use crate::publisher::Publisher;
use crate::report::{describe, percentiles};
use crate::sse::{MAX_US, Opened};

pub struct Ctx {
    pub subs: Opened,
    pub publisher: Publisher,
    pub sigfig: u8,
    pub drain: Duration,
    pub server_pids: Vec<u32>,
    /// Publishes spread over many channels (None: one channel, read by all).
    pub spread: Option<Spread>,
}

/// Many channels, each followed by some of the subscribers.
pub struct Spread {
    /// Per channel, the subscribers (indices into `Ctx::subs`) following it.
    pub followers: Vec<Vec<u32>>,
    /// Draws the channel of the next publish.
    pub pick: Box<dyn FnMut() -> u32>,
}

pub struct Step {
    pub rate: f64,
    pub subscribers: usize,
    pub published: u64,
    pub failed_publishes: u64,
    /// Deliveries the answered publishes called for.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    /// With a spread: events a subscriber received beyond the expected ones
    /// (for a channel it does not follow, or late from an earlier step).
    pub unexpected: Option<u64>,
    pub dups: u64,
    pub reordered: u64,
    pub reconnects: u64,
    pub sub_errors: u64,
    /// Bytes subscribers read over the step (events, control messages and
    /// framing).
    pub bytes: u64,
    /// Server CPU from the first publish to the end of the drain.
    pub server_time: Option<Duration>,
    pub latency: Histogram<u64>,
    pub pub_lag: Histogram<u64>,
    pub pub_latency: Histogram<u64>,
    pub cpu: CpuUse,
    pub drained_in: Duration,
    pub last_error: Option<String>,
}

impl Step {
    pub fn deliveries_per_s(&self) -> f64 {
        // Open loop: the step lasts published / rate seconds by schedule.
        self.delivered as f64 * self.rate / self.published.max(1) as f64
    }

    pub fn p99_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn bytes_per_event(&self) -> f64 {
        self.bytes as f64 / self.delivered.max(1) as f64
    }

    /// Subscribers an answered publish reached on average.
    pub fn followers_per_event(&self) -> f64 {
        self.expected as f64 / (self.published - self.failed_publishes).max(1) as f64
    }

    /// Server CPU per delivered event, µs.
    fn server_us_per_delivery(&self) -> Option<f64> {
        self.server_time
            .map(|t| t.as_secs_f64() * 1e6 / self.delivered.max(1) as f64)
    }

    pub fn print(&self, name: &str) {
        let shape = match self.unexpected {
            None => format!("x {} subscribers", self.subscribers),
            Some(_) => format!(
                "spread over channels, {:.1} of {} streams each",
                self.followers_per_event(),
                self.subscribers
            ),
        };
        let unexpected = self
            .unexpected
            .map_or(String::new(), |u| format!(", unexpected {u}"));
        println!(
            "{name}: {:.1} events/s {shape} -> {:.0} deliveries/s; lost {}{unexpected}, duplicated {}, reordered {}, reconnects {}, stream errors {}, failed publishes {}\n  latency {}\n  publisher: lag behind schedule p99 {:.2} ms, request p99 {:.2} ms; drained in {:.2}s\n  {:.1} bytes read per event; server CPU {} per delivered event\n  {}",
            self.rate,
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

    pub fn metrics(&self, prefix: &str, out: &mut Map<String, Value>) {
        let mut put = |k: &str, v: Value| {
            out.insert(format!("{prefix}{k}"), v);
        };
        put("rate", json!(self.rate));
        put("deliveries_per_s", json!(self.deliveries_per_s().round()));
        put("lost", json!(self.lost));
        if let Some(u) = self.unexpected {
            put("unexpected", json!(u));
            put("expected", json!(self.expected));
            put(
                "followers_per_event",
                json!((self.followers_per_event() * 100.0).round() / 100.0),
            );
        }
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

/// Per subscriber: duplicates, reordered, reconnects, errors, bytes, unique.
fn totals(subs: &Opened) -> [u64; 6] {
    subs.stats.iter().fold([0; 6], |acc, s| {
        let s = s.lock().expect("stats lock");
        [
            acc[0] + s.dups,
            acc[1] + s.reordered,
            acc[2] + s.reconnects,
            acc[3] + s.errors,
            acc[4] + s.bytes,
            acc[5] + s.unique,
        ]
    })
}

/// Waits up to `drain` until every (subscriber, sequence) of `pending` was
/// seen; returns how many were not.
async fn wait_pending(subs: &Opened, pending: &mut [Vec<u64>], drain: Duration) -> u64 {
    let start = Instant::now();
    loop {
        let missing: u64 = pending
            .iter_mut()
            .zip(&subs.stats)
            .map(|(p, s)| {
                if !p.is_empty() {
                    let s = s.lock().expect("stats lock");
                    p.retain(|q| !s.seen(*q));
                }
                p.len() as u64
            })
            .sum();
        if missing == 0 || start.elapsed() >= drain {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run_step(ctx: &mut Ctx, step: u32, rate: f64, duration: f64) -> Step {
    let count = (rate * duration).round().max(1.0) as u64;
    let channels: Option<Vec<u32>> = ctx
        .spread
        .as_mut()
        .map(|s| (0..count).map(|_| (s.pick)()).collect());
    let before = totals(&ctx.subs);
    let meter = CpuMeter::start(&ctx.server_pids);
    let range = match &channels {
        Some(c) => ctx.publisher.run_on(step, rate, c).await,
        None => ctx.publisher.run(step, rate, count).await,
    };
    let cpu = meter.stop();
    let pub_stats = ctx.publisher.take_stats();
    let failed: HashSet<u64> = pub_stats.failed.iter().copied().collect();
    let drain_start = Instant::now();
    let n = ctx.subs.stats.len() as u64;
    let (expected, missing) = match (&ctx.spread, &channels) {
        (Some(spread), Some(channels)) => {
            // Per subscriber, the events of the channels it follows.
            let mut pending: Vec<Vec<u64>> = vec![Vec::new(); n as usize];
            for (seq, &c) in range.clone().zip(channels) {
                if !failed.contains(&seq) {
                    for &s in &spread.followers[c as usize] {
                        pending[s as usize].push(seq);
                    }
                }
            }
            let expected = pending.iter().map(|p| p.len() as u64).sum();
            (
                expected,
                wait_pending(&ctx.subs, &mut pending, ctx.drain).await,
            )
        }
        _ => {
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
            ((count - failed.len() as u64) * n, missing)
        }
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
    let after = totals(&ctx.subs);
    let delivered = expected - missing;
    Step {
        rate,
        subscribers: n as usize,
        published: count,
        failed_publishes: failed.len() as u64,
        expected,
        delivered,
        lost: missing,
        unexpected: channels.map(|_| (after[5] - before[5]).saturating_sub(delivered)),
        dups: after[0] - before[0],
        reordered: after[1] - before[1],
        reconnects: after[2] - before[2],
        sub_errors: after[3] - before[3],
        bytes: after[4] - before[4],
        server_time,
        latency,
        pub_lag: pub_stats.lag,
        pub_latency: pub_stats.latency,
        cpu,
        drained_in,
        last_error,
    }
}

/// How [`search`] steps the rate up (the same flags for every scenario
/// that searches; each step's length is the scenario's `--duration`).
#[derive(clap::Args, Debug, Clone)]
pub struct Search {
    /// First rate of the capacity search, events/s.
    #[arg(long, default_value_t = 20.0)]
    pub start_rate: f64,
    /// Rate factor between capacity steps.
    #[arg(long, default_value_t = 1.25)]
    pub step_factor: f64,
    /// Highest rate the capacity search tries.
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
    /// A step passes with p99 below this, ms.
    #[arg(long, default_value_t = 100.0)]
    pub p99_limit_ms: f64,
    /// Re-runs of a failing step before concluding (noise guard).
    #[arg(long, default_value_t = 1)]
    pub retries: u32,
    /// A failing step during which other processes of the machine used
    /// more than this share of a core is re-run instead of ending the
    /// search, %.
    #[arg(long, default_value_t = 25.0)]
    pub max_others_pct: f64,
    /// How many disturbed steps one search re-runs at most.
    #[arg(long, default_value_t = 4)]
    pub disturbed_retries: u32,
}

/// What [`search`] found.
pub struct Found {
    /// The last passing step.
    pub best: Option<Step>,
    /// The step that ended the search, and why.
    pub failure: Option<(Step, String)>,
    /// The client saturated its core first: the search measured the client.
    pub client_bound: bool,
    /// A summary of every step, for the results' params.
    pub steps: Vec<Value>,
}

impl Found {
    /// The capacity rate, events/s (0 when no step passed).
    pub fn rate(&self) -> f64 {
        self.best.as_ref().map_or(0.0, |b| b.rate)
    }

    pub fn valid(&self) -> bool {
        !self.client_bound && self.best.as_ref().is_some_and(|b| b.cpu.valid())
    }

    /// Adds the capacity step's metrics (`at_capacity_*`), the failed step's
    /// (`failed_*`) and `steps`; returns notes on why the search ended.
    pub fn metrics(&self, m: &mut Map<String, Value>) -> Vec<String> {
        if let Some(b) = &self.best {
            b.metrics("at_capacity_", m);
        }
        let mut notes = Vec::new();
        if let Some((f, why)) = &self.failure {
            m.insert("failed_rate".into(), json!(f.rate));
            m.insert("failed_p99_ms".into(), json!(f.p99_ms()));
            f.cpu.metrics("failed_", m);
            notes.push(format!("next step {:.1} events/s failed: {why}", f.rate));
        }
        m.insert("steps".into(), json!(self.steps.len()));
        notes
    }
}

/// Steps the rate up from `p.start_rate` until a step fails (after
/// retries), the client saturates, or `p.max_rate` is passed.
pub async fn search(ctx: &mut Ctx, p: &Search, duration: f64) -> Found {
    let mut rate = p.start_rate;
    let mut retries = p.retries;
    let mut disturbed_left = p.disturbed_retries;
    let mut found = Found {
        best: None,
        failure: None,
        client_bound: false,
        steps: Vec::new(),
    };
    let mut step = 1;
    while rate <= p.max_rate {
        let s = run_step(ctx, step, rate, duration).await;
        step += 1;
        let why = if s.lost > 0 {
            Some(format!("lost {} events", s.lost))
        } else if s.failed_publishes > 0 {
            Some(format!("{} publishes failed", s.failed_publishes))
        } else if s.p99_ms() >= p.p99_limit_ms {
            Some(format!("p99 {:.1} ms >= {} ms", s.p99_ms(), p.p99_limit_ms))
        } else {
            None
        };
        s.print(&format!(
            "step {} ({})",
            step - 1,
            why.as_deref().unwrap_or("pass")
        ));
        found.steps.push(json!({"rate": s.rate, "p99_ms": s.p99_ms(), "lost": s.lost, "client_cpu_pct": s.cpu.client_pct.round(), "server_cpu_pct": s.cpu.server_pct.map(f64::round), "others_cpu_pct": s.cpu.others_pct.map(f64::round)}));
        if !s.cpu.valid() {
            found.client_bound = true;
            found.failure = Some((s, "client CPU above 85% of a core".into()));
            break;
        }
        let others = s.cpu.others_pct.unwrap_or(0.0);
        match why {
            Some(_) if others > p.max_others_pct && disturbed_left > 0 => {
                println!(
                    "  (disturbed: other processes used {others:.0}% of a core; re-running the step)"
                );
                disturbed_left -= 1;
                tokio::time::sleep(Duration::from_secs(3)).await;
                continue;
            }
            None => {
                found.best = Some(s);
                retries = p.retries;
                rate = (rate * p.step_factor * 10.0).round() / 10.0;
            }
            Some(why) if retries == 0 => {
                found.failure = Some((s, why));
                break;
            }
            Some(_) => retries -= 1,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    found
}
