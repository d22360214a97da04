//! One SSE subscriber: a raw TCP stream with a hand-written GET, a large read
//! buffer, chunked decoding and frame parsing in place (no allocation per
//! event). Each event's latency (receive − scheduled send) goes to an HDR
//! histogram per run step; a bitmap by sequence number counts duplicates and,
//! later, gaps. A stream that ends is reopened with `Last-Event-ID`, as a
//! browser would, and counted.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use hdrhistogram::Histogram;
use memchr::memmem::Finder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::clock;
use crate::conn::{Dechunker, connect, parse_head, source_for};
use crate::target::{Kind, Target};

/// Highest latency a histogram holds, µs (60 s); above it values saturate.
pub const MAX_US: u64 = 60_000_000;

static FRAME_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n\n"));
static SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"seq\":"));
static STEP: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"step\":"));
static T: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"t\":"));
// The same keys inside a JSON string (a conversation message's content).
static ESC_SEQ: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\\"seq\\\":"));
static ESC_STEP: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\\"step\\\":"));
static ESC_T: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\\"t\\\":"));
static SUBSCRIBED: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"type\":\"subscription\""));
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"type\":\"error\""));
static RESET: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"type\":\"reset\""));

/// How every subscriber of a run behaves.
pub struct SubConfig {
    pub target: Arc<Target>,
    pub read_buf: usize,
    pub sigfig: u8,
    pub reconnect: bool,
    pub source_addrs: u8,
}

/// What one subscriber saw; shared with the coordinator, locked once per read.
#[derive(Default)]
pub struct SubStats {
    hists: Vec<Option<Histogram<u32>>>,
    /// Bit `seq` is set once event `seq` arrived.
    seen: Vec<u64>,
    max_seq: Option<u64>,
    pub unique: u64,
    pub dups: u64,
    /// Events that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Streams that ended and were reopened.
    pub reconnects: u64,
    /// `error` control messages and failed reads.
    pub errors: u64,
    pub resets: u64,
    /// Bytes read after the response head (SSE: with chunk framing;
    /// WebSocket: with frame headers): what the events cost on the wire.
    pub bytes: u64,
    pub last_error: Option<String>,
}

pub type Shared = Arc<Mutex<SubStats>>;

impl SubStats {
    pub fn record(&mut self, seq: u64, step: u32, latency_us: u64, sigfig: u8) {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.dups += 1;
            return;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        match self.max_seq {
            Some(max) if seq < max => self.reordered += 1,
            _ => self.max_seq = Some(seq),
        }
        let step = step as usize;
        if step >= self.hists.len() {
            self.hists.resize_with(step + 1, || None);
        }
        self.hists[step]
            .get_or_insert_with(|| {
                Histogram::new_with_bounds(1, MAX_US, sigfig).expect("valid histogram bounds")
            })
            .saturating_record(latency_us.clamp(1, MAX_US));
    }

    pub fn seen(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// Adds the latency histogram of `step` to `into` and starts a new one
    /// (events of the step arriving later go to the new one).
    pub fn take_hist_into(&mut self, step: u32, into: &mut Histogram<u64>) {
        if let Some(h) = self.take_hist(step) {
            for v in h.iter_recorded() {
                let _ = into.record_n(
                    h.median_equivalent(v.value_iterated_to()),
                    v.count_at_value() as u64,
                );
            }
        }
    }

    /// Takes the latency histogram of `step` (events arriving later start a new one).
    pub fn take_hist(&mut self, step: u32) -> Option<Histogram<u32>> {
        self.hists.get_mut(step as usize).and_then(Option::take)
    }
}

/// The last `id:` seen, for `Last-Event-ID` on reconnect. Nchan's ids for a
/// multiplexed subscriber name every channel (hundreds of bytes for 20).
#[derive(Default)]
struct LastId(Vec<u8>);

impl LastId {
    /// Longest id kept, bytes.
    const MAX: usize = 2048;

    fn set(&mut self, id: &[u8]) {
        self.0.clear();
        self.0.extend_from_slice(&id[..id.len().min(Self::MAX)]);
    }
    fn get(&self) -> Option<&[u8]> {
        (!self.0.is_empty()).then_some(&self.0[..])
    }
}

/// Runs subscriber `i` until aborted. `ready` is answered once the stream is
/// open (Switchyard: its `subscription` message arrived) or failed to open.
pub async fn subscribe(
    i: usize,
    cfg: Arc<SubConfig>,
    stats: Shared,
    ready: oneshot::Sender<anyhow::Result<()>>,
) {
    let mut ready = Some(ready);
    let mut raw = vec![0u8; cfg.read_buf];
    let mut body: Vec<u8> = Vec::with_capacity(cfg.read_buf);
    let mut last_id = LastId::default();
    let mut failures = 0u64;
    loop {
        let result = session(
            i,
            &cfg,
            &stats,
            &mut raw,
            &mut body,
            &mut last_id,
            &mut ready,
        )
        .await;
        let why = match result {
            Ok(()) => "server ended the stream".to_string(),
            Err(e) => format!("{e:#}"),
        };
        failures += 1;
        if ready.is_some() && failures >= 5 {
            let _ = ready.take().expect("checked").send(Err(anyhow!(why)));
            return;
        }
        if ready.is_none() {
            let mut s = stats.lock().expect("stats lock");
            s.reconnects += 1;
            s.last_error = Some(why);
        }
        if !cfg.reconnect && ready.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100 * failures.min(10))).await;
    }
}

async fn session(
    i: usize,
    cfg: &SubConfig,
    stats: &Shared,
    raw: &mut [u8],
    body: &mut Vec<u8>,
    last_id: &mut LastId,
    ready: &mut Option<oneshot::Sender<anyhow::Result<()>>>,
) -> anyhow::Result<()> {
    let ep = cfg.target.endpoint(i);
    let mut stream = connect(ep.addr, source_for(i, cfg.source_addrs)).await?;
    stream
        .write_all(&cfg.target.sse_request(i, last_id.get())?)
        .await?;
    let mut filled = 0;
    let head = loop {
        let n = stream.read(&mut raw[filled..]).await?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        filled += n;
        if let Some(head) = parse_head(&raw[..filled])? {
            break head;
        }
        if filled == raw.len() {
            bail!("response head larger than the read buffer");
        }
    };
    if head.status != 200 {
        let text = String::from_utf8_lossy(&raw[head.len..filled]);
        bail!(
            "HTTP {}: {}",
            head.status,
            text.chars().take(300).collect::<String>()
        );
    }
    if cfg.target.kind == Kind::Nchan
        && let Some(tx) = ready.take()
    {
        let _ = tx.send(Ok(()));
    }
    let mut dechunk = head.chunked.then(Dechunker::default);
    body.clear();
    let (mut start, mut end) = (head.len, filled);
    stats.lock().expect("stats lock").bytes += (end - start) as u64;
    loop {
        let now = clock::now_ns();
        match &mut dechunk {
            Some(d) => {
                d.feed(&raw[start..end], body)?;
            }
            None => body.extend_from_slice(&raw[start..end]),
        }
        let consumed = frames(body, now, cfg.sigfig, stats, last_id, ready);
        body.drain(..consumed);
        if dechunk.as_ref().is_some_and(Dechunker::done) {
            return Ok(());
        }
        start = 0;
        end = stream.read(raw).await?;
        if end == 0 {
            return Ok(());
        }
        stats.lock().expect("stats lock").bytes += end as u64;
    }
}

/// Subscribers opened by [`open_all`].
pub struct Opened {
    pub stats: Vec<Shared>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub failed: usize,
    pub first_error: Option<String>,
    pub took: Duration,
}

impl Opened {
    /// Ends every subscriber (closing its connection).
    pub fn close(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts subscriber `i`: [`subscribe`], or another transport's.
pub type Spawn = fn(
    usize,
    Arc<SubConfig>,
    Shared,
    oneshot::Sender<anyhow::Result<()>>,
) -> tokio::task::JoinHandle<()>;

/// An SSE subscriber, for [`open_all`].
pub fn spawn_sse(
    i: usize,
    cfg: Arc<SubConfig>,
    stats: Shared,
    ready: oneshot::Sender<anyhow::Result<()>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(subscribe(i, cfg, stats, ready))
}

/// Opens `n` subscribers with `spawn`, at most `concurrency` handshakes at
/// a time, and waits until each is open or gave up.
pub async fn open_all(cfg: Arc<SubConfig>, n: usize, concurrency: usize, spawn: Spawn) -> Opened {
    let started = std::time::Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut stats = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    let mut waits = Vec::with_capacity(n);
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let (tx, rx) = oneshot::channel();
        let s: Shared = Default::default();
        stats.push(s.clone());
        tasks.push(spawn(i, cfg.clone(), s, tx));
        waits.push(tokio::spawn(async move {
            let result = rx.await;
            drop(permit);
            result
        }));
        if (i + 1) % 5000 == 0 {
            eprintln!("  {} subscribers connecting...", i + 1);
        }
    }
    let (mut failed, mut first_error) = (0, None);
    for w in waits {
        let outcome = match w.await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(format!("{e:#}")),
            _ => Some("subscriber task ended before opening".to_string()),
        };
        if let Some(e) = outcome {
            failed += 1;
            first_error.get_or_insert(e);
        }
    }
    Opened {
        stats,
        tasks,
        failed,
        first_error,
        took: started.elapsed(),
    }
}

/// Handles the complete frames at the front of `body`; returns the bytes used.
fn frames(
    body: &[u8],
    now_ns: u64,
    sigfig: u8,
    stats: &Shared,
    last_id: &mut LastId,
    ready: &mut Option<oneshot::Sender<anyhow::Result<()>>>,
) -> usize {
    let mut pos = 0;
    let mut guard = None;
    while let Some(len) = FRAME_END.find(&body[pos..]) {
        let frame = &body[pos..pos + len];
        pos += len + 2;
        if let Some(id) = id_line(frame) {
            last_id.set(id);
        }
        let s = guard.get_or_insert_with(|| stats.lock().expect("stats lock"));
        let keys = match SEQ.find(frame) {
            Some(at) => Some((at, [&*SEQ, &*STEP, &*T])),
            None => ESC_SEQ
                .find(frame)
                .map(|at| (at, [&*ESC_SEQ, &*ESC_STEP, &*ESC_T])),
        };
        if let Some((at, [seq, step, t])) = keys {
            let rest = &frame[at..];
            let (Some(seq), Some(step), Some(t)) = (
                number_after(rest, seq),
                number_after(rest, step),
                number_after(rest, t),
            ) else {
                continue;
            };
            s.record(seq, step as u32, now_ns.saturating_sub(t) / 1000, sigfig);
        } else if SUBSCRIBED.find(frame).is_some() {
            if let Some(tx) = ready.take() {
                let _ = tx.send(Ok(()));
            }
        } else if ERROR.find(frame).is_some() {
            s.errors += 1;
            s.last_error = Some(String::from_utf8_lossy(frame).chars().take(300).collect());
        } else if RESET.find(frame).is_some() {
            s.resets += 1;
        }
    }
    pos
}

/// The value of a frame's `id:` line.
fn id_line(frame: &[u8]) -> Option<&[u8]> {
    let start = if frame.starts_with(b"id:") {
        3
    } else {
        memchr::memmem::find(frame, b"\nid:")? + 4
    };
    let rest = &frame[start..];
    let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
    let id = rest[..end].strip_prefix(b" ").unwrap_or(&rest[..end]);
    (!id.is_empty()).then_some(id)
}

/// The unsigned integer after `key` in `text`.
pub fn number_after(text: &[u8], key: &Finder) -> Option<u64> {
    let start = key.find(text)? + key.needle().len();
    let mut value: u64 = 0;
    let mut digits = 0;
    for &b in &text[start..] {
        match b {
            b'0'..=b'9' => {
                value = value.checked_mul(10)?.checked_add((b - b'0') as u64)?;
                digits += 1;
            }
            b' ' if digits == 0 => {}
            _ => break,
        }
    }
    (digits > 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_switchyard_and_nchan_frames() {
        let stats: Shared = Default::default();
        let mut last = LastId::default();
        let (tx, mut rx) = oneshot::channel();
        let mut ready = Some(tx);
        let body = b"retry: 2000\n\ndata: {\"type\":\"subscription\",\"status\":\"success\"}\n\n\
id: 7\ndata: {\"type\":\"event\",\"id\":7,\"channel\":\"feed:bench\",\"event\":\"bench\",\"data\":{\"seq\":3,\"step\":1,\"t\":1000000},\"timestamp\":\"x\"}\n\n\
id: 1700000000:0\ndata: {\"seq\":3,\"step\":1,\"t\":1000000}\n\nid: 9\ndata: {\"seq\":4";
        let used = frames(body, 3_000_000, 3, &stats, &mut last, &mut ready);
        assert!(body[used..].starts_with(b"id: 9"));
        assert!(rx.try_recv().unwrap().is_ok());
        assert_eq!(last.get(), Some(&b"1700000000:0"[..]));
        let mut s = stats.lock().unwrap();
        assert_eq!((s.unique, s.dups), (1, 1));
        assert!(s.seen(3) && !s.seen(4));
        let h = s.take_hist(1).unwrap();
        assert_eq!(h.len(), 1);
        assert!((1990..=2010).contains(&h.max()));
    }

    #[test]
    fn reads_a_message_whose_content_carries_the_keys() {
        let stats: Shared = Default::default();
        let (mut last, mut ready) = (LastId::default(), None);
        let body = b"id: 12\ndata: {\"type\":\"event\",\"id\":12,\"event\":\"message.created\",\"data\":{\"content\":\"{\\\"seq\\\":5,\\\"step\\\":1,\\\"t\\\":1000000}\"}}\n\n";
        let used = frames(body, 2_000_000, 3, &stats, &mut last, &mut ready);
        assert_eq!(used, body.len());
        let s = stats.lock().unwrap();
        assert!(s.seen(5));
        assert_eq!(s.unique, 1);
    }
}
