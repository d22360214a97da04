//! The open-loop publisher: event k of a step is due at start + k/R and
//! carries that scheduled time, however late it is actually sent, so a slow
//! server shows up as latency instead of a slower schedule (no coordinated
//! omission). A small pool of keep-alive connections takes due events from
//! one queue; its lag behind the schedule is reported so a publisher that
//! became the bottleneck is visible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::clock;
use crate::conn::HttpConn;
use crate::sse::MAX_US;
use crate::target::{Target, event_data};

struct Job {
    seq: u64,
    step: u32,
    due_ns: u64,
    /// Channel index for a spread target (see [`Publisher::run_on`]).
    channel: Option<u32>,
}

/// What the pool saw; reset per step by [`Publisher::take_stats`].
pub struct PubStats {
    /// Sequence numbers whose publish was not answered 2xx.
    pub failed: Vec<u64>,
    /// Send time − scheduled time, µs.
    pub lag: Histogram<u64>,
    /// Request round trip, µs.
    pub latency: Histogram<u64>,
    pub last_error: Option<String>,
}

impl PubStats {
    fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, MAX_US, 3).expect("valid bounds");
        Self {
            failed: Vec::new(),
            lag: h(),
            latency: h(),
            last_error: None,
        }
    }
}

pub struct Publisher {
    jobs: async_channel::Sender<Job>,
    stats: Arc<Mutex<PubStats>>,
    sent: u64,
    done: Arc<AtomicU64>,
    next_seq: u64,
}

impl Publisher {
    /// Opens `pool` workers publishing to the target's first endpoint.
    pub fn new(target: Arc<Target>, pool: usize, pad: usize) -> Self {
        let (tx, rx) = async_channel::unbounded::<Job>();
        let stats = Arc::new(Mutex::new(PubStats::new()));
        let done = Arc::new(AtomicU64::new(0));
        for _ in 0..pool.max(1) {
            let (rx, stats, done, target) =
                (rx.clone(), stats.clone(), done.clone(), target.clone());
            tokio::spawn(async move {
                let mut conn = HttpConn::new(target.endpoints[0].clone(), None);
                let (mut data, mut req) = (Vec::with_capacity(256), Vec::with_capacity(1024));
                while let Ok(job) = rx.recv().await {
                    let sent = clock::now_ns();
                    event_data(job.seq, job.step, job.due_ns, pad, &mut data);
                    target.publish_request_on(conn.endpoint(), job.channel, &data, &mut req);
                    let outcome = conn.request(&req).await;
                    let took = clock::now_ns().saturating_sub(sent);
                    {
                        let mut s = stats.lock().expect("stats lock");
                        let _ = s
                            .lag
                            .record((sent.saturating_sub(job.due_ns) / 1000).clamp(1, MAX_US));
                        let _ = s.latency.record((took / 1000).clamp(1, MAX_US));
                        let error = match outcome {
                            Ok(status) if (200..300).contains(&status) => None,
                            Ok(status) => Some(format!(
                                "HTTP {status}: {}",
                                String::from_utf8_lossy(&conn.body)
                                    .chars()
                                    .take(300)
                                    .collect::<String>()
                            )),
                            Err(e) => Some(format!("{e:#}")),
                        };
                        if let Some(e) = error {
                            s.failed.push(job.seq);
                            s.last_error = Some(e);
                        }
                    }
                    done.fetch_add(1, Ordering::Release);
                }
            });
        }
        Self {
            jobs: tx,
            stats,
            sent: 0,
            done,
            next_seq: 0,
        }
    }

    /// Publishes `count` events at `rate`/s, open loop; returns their
    /// sequence numbers once every one was answered.
    pub async fn run(&mut self, step: u32, rate: f64, count: u64) -> std::ops::Range<u64> {
        self.schedule(step, rate, count, None).await
    }

    /// [`Publisher::run`] for a target spread over many channels
    /// ([`crate::target::Target::spread`]): event k goes to `channels[k]`.
    pub async fn run_on(&mut self, step: u32, rate: f64, channels: &[u32]) -> std::ops::Range<u64> {
        self.schedule(step, rate, channels.len() as u64, Some(channels))
            .await
    }

    async fn schedule(
        &mut self,
        step: u32,
        rate: f64,
        count: u64,
        channels: Option<&[u32]>,
    ) -> std::ops::Range<u64> {
        let first = self.next_seq;
        let start = Instant::now() + Duration::from_millis(5);
        for k in 0..count {
            let due = start + Duration::from_secs_f64(k as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            let job = Job {
                seq: first + k,
                step,
                due_ns: clock::ns_of(due),
                channel: channels.map(|c| c[k as usize]),
            };
            self.jobs
                .send(job)
                .await
                .expect("workers live as long as the publisher");
            self.sent += 1;
        }
        self.next_seq = first + count;
        while self.done.load(Ordering::Acquire) < self.sent {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        first..first + count
    }

    /// The stats since the last call.
    pub fn take_stats(&self) -> PubStats {
        std::mem::replace(
            &mut *self.stats.lock().expect("stats lock"),
            PubStats::new(),
        )
    }
}
