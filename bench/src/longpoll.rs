//! `longpoll`: C keep-alive connections polling back to back while an event
//! waits, so every request is answered at once (Switchyard:
//! `GET /realtime/poll?...&last_poll_id=0&timeout=0&limit=1`; Nchan:
//! `GET /sub/<chan>`, answered with the oldest buffered message).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use crate::Common;
use crate::closed::{self, Exchange};
use crate::conn::{HttpConn, source_for};
use crate::report::{Outcome, describe, percentiles};
use crate::target::{Kind, Target, event_data};

#[derive(Args, Debug)]
pub struct LongpollArgs {
    #[command(flatten)]
    pub common: Common,
    /// Keep-alive connections (C).
    #[arg(long, short = 'c', default_value_t = 50)]
    connections: usize,
    /// Measured seconds (D).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Switchyard: poll with a recent cursor, as a client that polled just
    /// before the waiting event (`last_poll_id` = the id of an event
    /// published before it) instead of `last_poll_id=0`.
    #[arg(long)]
    recent_cursor: bool,
}

struct Poller {
    conn: HttpConn,
    req: Arc<Vec<u8>>,
    kind: Kind,
}

impl Exchange for Poller {
    async fn once(&mut self) -> Result<u64, String> {
        match self.conn.request(&self.req).await {
            Ok(200) => {
                let body = &self.conn.body;
                let has_event = match self.kind {
                    Kind::Switchyard => memchr::memmem::find(body, b"\"events\":[{").is_some(),
                    Kind::Nchan => memchr::memmem::find(body, b"\"seq\"").is_some(),
                };
                if has_event {
                    Ok(1)
                } else {
                    Err(format!(
                        "answer without the waiting event: {}",
                        String::from_utf8_lossy(body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ))
                }
            }
            Ok(status) => Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&self.conn.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )),
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

pub async fn run(args: LongpollArgs) -> anyhow::Result<()> {
    let target = Arc::new(Target::new(&args.common)?);
    let recent_cursor = args.recent_cursor && target.kind == Kind::Switchyard;
    let mut conn = HttpConn::new(target.endpoints[0].clone(), None);
    // With a recent cursor: the event the client saw last, then the one
    // that waits for every poll.
    let mut cursor = 0;
    for seq in 0..=u64::from(recent_cursor) {
        let (mut data, mut req) = (Vec::new(), Vec::new());
        event_data(seq, 0, crate::clock::now_ns(), args.common.pad, &mut data);
        target.publish_request(conn.endpoint(), &data, &mut req);
        let status = conn
            .request(&req)
            .await
            .context("publishing the waiting event")?;
        if !(200..300).contains(&status) {
            bail!(
                "publishing the waiting event: HTTP {status}: {}",
                String::from_utf8_lossy(&conn.body)
            );
        }
        if recent_cursor && seq == 0 {
            let receipt: serde_json::Value =
                serde_json::from_slice(&conn.body).context("the publish receipt")?;
            cursor = receipt["id"].as_u64().context("the receipt's id")?;
        }
    }
    let workers = (0..args.connections)
        .map(|i| {
            let ep = target.endpoint(i).clone();
            let mut req = target.poll_request(&ep)?;
            if recent_cursor {
                let text = String::from_utf8(req)?.replacen(
                    "last_poll_id=0",
                    &format!("last_poll_id={cursor}"),
                    1,
                );
                req = text.into_bytes();
            }
            Ok(Poller {
                req: Arc::new(req),
                conn: HttpConn::new(ep, source_for(i, args.common.source_addrs)),
                kind: target.kind,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "longpoll: {} on {}, {} connections, {:.0}s warm-up + {:.0}s, last_poll_id={cursor}",
        target.kind, target.channel, args.connections, args.warmup, args.duration
    );
    let r = closed::run(
        workers,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.duration),
        &args.common.server_pids,
    )
    .await;
    let secs = r.window.as_secs_f64();
    let answers_per_s = r.stats.units as f64 / secs;
    println!(
        "longpoll {}: {answers_per_s:.0} answers/s ({} answers in {secs:.1}s), errors {}\n  latency {}\n  {}",
        target.kind,
        r.stats.units,
        r.stats.errors,
        describe(&r.stats.latency),
        r.cpu.describe()
    );
    if let Some(e) = &r.stats.last_error {
        println!("  last error: {e}");
    }
    let mut m = serde_json::Map::new();
    m.insert("answers_per_s".into(), json!(answers_per_s.round()));
    percentiles("", &r.stats.latency, &mut m);
    m.insert("errors".into(), json!(r.stats.errors));
    r.cpu.metrics("", &mut m);
    Outcome {
        common: &args.common,
        scenario: "longpoll",
        primary: "answers_per_s",
        higher_is_better: true,
        params: json!({"connections": args.connections, "duration_s": args.duration, "last_poll_id": cursor}),
        metrics: m,
        valid: r.cpu.valid() && r.stats.errors == 0,
        notes: r.stats.last_error.into_iter().collect(),
    }
    .emit()
}
