//! `switchyard-bench`: the load generator behind BENCHMARKS.md.
//!
//! One binary drives Switchyard and its peer Nchan with the same client code,
//! so a ratio between them measures the servers, not two different tools:
//!
//! - `fanout`: N SSE subscribers on one channel, an open-loop publisher at R
//!   events/s; publish→receive latency in HDR histograms, loss and duplicates
//!   by sequence number, bytes and server CPU per delivered event.
//!   `--capacity` steps R up until loss or p99 ≥ 100 ms. `--transport
//!   ws-json|ws-protobuf` reads over Switchyard's WebSocket instead.
//!   `--group`: the subscribers are a group conversation's members and the
//!   events messages they send (scenario `messages`, Switchyard only).
//! - `idle`: N idle SSE streams; the server's RSS per stream, then one
//!   broadcast that every stream must receive.
//! - `longpoll`: C keep-alive connections polling back to back with an event
//!   waiting.
//! - `publish`: C publishers POSTing batches of B events (durable throughput).
//! - `edit`: N editors on one document, one operation in flight each
//!   (Switchyard only: operations/s with server-side transformation).
//! - `zipf`: S SSE streams each following F of C channels drawn by a Zipf
//!   law, publishes spread over the channels by the same law; the server's
//!   RSS per stream and per channel, then a stepped capacity search (events/s
//!   and deliveries/s with zero loss and p99 < 100 ms).
//! - `summarize`: medians and ratios over the JSON lines the others append
//!   with `--out`.
//!
//! The client measures its own CPU (getrusage) and flags a run INVALID when it
//! used more than 85% of a core: past that it measures itself.

mod clock;
mod closed;
mod conn;
mod edit;
mod fanout;
mod idle;
mod longpoll;
mod publish;
mod publisher;
mod report;
mod sse;
mod step;
mod target;
mod ws;
mod zipf;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "switchyard-bench",
    about = "Load generator for Switchyard and Nchan: fan-out, idle streams, long polling, durable publish, editing, many Zipf-skewed channels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N subscribers (SSE or WebSocket) on one channel, open-loop publisher at R events/s.
    Fanout(fanout::FanoutArgs),
    /// N idle SSE streams: server RSS per stream, then one broadcast to all.
    Idle(idle::IdleArgs),
    /// C keep-alive connections polling back to back with an event waiting.
    Longpoll(longpoll::LongpollArgs),
    /// C publishers POSTing batches of B events for D seconds.
    Publish(publish::PublishArgs),
    /// N editors on one document, one operation in flight each (Switchyard).
    Edit(edit::EditArgs),
    /// S SSE streams each following F of C Zipf-skewed channels: RSS per
    /// stream and per channel, then capacity with publishes spread the same way.
    Zipf(zipf::ZipfArgs),
    /// Medians per scenario and label, and ratios against Nchan, from --out files.
    Summarize(report::SummarizeArgs),
}

/// Options every load scenario shares.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Server kind: `switchyard` or `nchan`.
    #[arg(long, default_value = "switchyard")]
    pub target: target::Kind,
    /// Base URL (http://host:port); repeat for several nodes (subscribers
    /// round-robin over them, publishes go to the first).
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,
    /// With several URLs: subscribe only on the nodes after the first, so
    /// every delivery crosses nodes (publish on one, read on another).
    #[arg(long)]
    pub cross_node: bool,
    /// HS256 secret to mint Switchyard tokens with.
    #[arg(long, env = "SWITCHYARD_JWT_SECRET", default_value = "bench-secret")]
    pub secret: String,
    /// Channel: Switchyard `feed:bench`; Nchan `bench` plus a per-run suffix
    /// (Nchan replays its buffer to new subscribers) unless given.
    #[arg(long)]
    pub channel: Option<String>,
    /// Name of this row in results (default: the target kind).
    #[arg(long)]
    pub label: Option<String>,
    /// Append one JSON line with the results to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Server process(es) whose CPU (and for `idle` RSS) to read from /proc.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Spread connections over source addresses 127.0.0.1 .. 127.0.0.N
    /// (about 28k connections per source address and target).
    #[arg(long, default_value_t = 1)]
    pub source_addrs: u8,
    /// Client worker threads (default: CPUs this process may run on; 1 runs a
    /// single-threaded runtime).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Bytes of padding added to each event's data.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
}

impl Common {
    pub fn label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| self.target.to_string())
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Processes of one multi-process run share a zero, so that event
    // timestamps compare across them.
    match std::env::var("SWITCHYARD_BENCH_EPOCH_UNIX_MS") {
        Ok(ms) => clock::init_at_unix_ms(ms.parse()?),
        Err(_) => clock::init(),
    }
    let threads = match &cli.command {
        Command::Fanout(a) => a.common.threads,
        Command::Idle(a) => a.common.threads,
        Command::Longpoll(a) => a.common.threads,
        Command::Publish(a) => a.common.threads,
        Command::Edit(a) => a.common.threads,
        Command::Zipf(a) => a.common.threads,
        Command::Summarize(a) => return report::summarize(a),
    };
    conn::raise_nofile_limit();
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    // One thread: a current-thread runtime has no cross-thread wake-ups,
    // which is what a client pinned to one core wants.
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Fanout(a) => fanout::run(a).await,
            Command::Idle(a) => idle::run(a).await,
            Command::Longpoll(a) => longpoll::run(a).await,
            Command::Publish(a) => publish::run(a).await,
            Command::Edit(a) => edit::run(a).await,
            Command::Zipf(a) => zipf::run(a).await,
            Command::Summarize(_) => unreachable!(),
        }
    })
}
