//! Closed-loop load for request/response scenarios (long polling, publish):
//! each of C workers owns a keep-alive connection and sends its next request
//! as soon as the previous one is answered. A warm-up runs first; only
//! answers completed inside the measured window count.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::clock::{CpuMeter, CpuUse};
use crate::sse::MAX_US;

/// One worker's request: Ok(units done, e.g. events appended) or Err(why).
pub trait Exchange: Send + 'static {
    fn once(&mut self) -> impl Future<Output = Result<u64, String>> + Send;
}

#[derive(Debug)]
pub struct LoopStats {
    /// Request round trips, µs.
    pub latency: Histogram<u64>,
    pub answers: u64,
    pub units: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

impl LoopStats {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid bounds"),
            answers: 0,
            units: 0,
            errors: 0,
            last_error: None,
        }
    }
}

pub struct ClosedResult {
    pub stats: LoopStats,
    pub cpu: CpuUse,
    pub window: Duration,
}

pub async fn run<E: Exchange>(
    workers: Vec<E>,
    warmup: Duration,
    duration: Duration,
    server_pids: &[u32],
) -> ClosedResult {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let (measuring, stop) = (measuring.clone(), stop.clone());
            tokio::spawn(async move {
                let mut s = LoopStats::new();
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let outcome = w.once().await;
                    if !measuring.load(Ordering::Relaxed) {
                        continue;
                    }
                    match outcome {
                        Ok(units) => {
                            let us = t0.elapsed().as_micros() as u64;
                            let _ = s.latency.record(us.clamp(1, MAX_US));
                            s.answers += 1;
                            s.units += units;
                        }
                        Err(e) => {
                            s.errors += 1;
                            s.last_error = Some(e);
                        }
                    }
                }
                s
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::Relaxed);
    let meter = CpuMeter::start(server_pids);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::Relaxed);
    let window = started.elapsed();
    let cpu = meter.stop();
    stop.store(true, Ordering::Relaxed);
    let mut total = LoopStats::new();
    for h in handles {
        if let Ok(s) = h.await {
            let _ = total.latency.add(&s.latency);
            total.answers += s.answers;
            total.units += s.units;
            total.errors += s.errors;
            if s.last_error.is_some() {
                total.last_error = s.last_error;
            }
        }
    }
    ClosedResult {
        stats: total,
        cpu,
        window,
    }
}
