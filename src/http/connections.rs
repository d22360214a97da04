//! Every open connection, counted, and what each is doing, so that none
//! stays open for nothing and the process never runs out of descriptors.
//!
//! Invariants: a connection counts from accept until its socket closes,
//! whoever holds it by then (hyper, a raw SSE stream, an upgraded
//! WebSocket: its [`Ticket`] travels with the socket); a connection is
//! idle while no request is in flight on it and no byte of the next head
//! has arrived; only idle connections are evicted to make room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::state::Deadlines;

/// Descriptors kept free above the connection cap: the database, the
/// listener, and connections turned away at the cap with an answer.
const RESERVE: usize = 256;
/// Above this many, a new connection is closed unread.
const HARD_RESERVE: usize = 64;

/// All connections of the server.
pub struct Connections {
    open: AtomicUsize,
    /// Past it, idle connections are closed to make room; when none is
    /// idle, new connections get only a short answer.
    cap: usize,
    /// Past it, new connections are closed without a word.
    hard_cap: usize,
    next_id: AtomicU64,
    /// Connections served by hyper, by id: the ones that may turn idle.
    /// A std mutex, held only to add, remove or scan; never across `.await`.
    kept_alive: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// The server's clock origin for the per-connection timestamps.
    epoch: Instant,
}

/// One open connection; dropping it frees its place.
pub struct Ticket {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
        self.connections
            .kept_alive
            .lock()
            .expect("connections lock")
            .remove(&self.id);
    }
}

/// Where the count of open connections stands for a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// Serve it.
    Free,
    /// At the cap and nothing idle to close: answer only health checks.
    Full,
    /// Past the hard cap: close it at once.
    None,
}

impl Connections {
    /// `max` open connections (default: the process's descriptor limit
    /// less a reserve).
    pub fn new(max: Option<usize>) -> Arc<Self> {
        let limit = descriptor_limit();
        let cap = max.unwrap_or_else(|| limit.saturating_sub(RESERVE).max(64));
        let hard_cap = (cap + RESERVE - HARD_RESERVE)
            .min(limit.saturating_sub(HARD_RESERVE))
            .max(cap);
        tracing::info!(cap, descriptors = limit, "connection cap");
        Arc::new(Self {
            open: AtomicUsize::new(0),
            cap,
            hard_cap,
            next_id: AtomicU64::new(1),
            kept_alive: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Counts a new connection and says whether there is room for it,
    /// closing an idle one to make room at the cap.
    pub fn admit(self: &Arc<Self>) -> (Ticket, Room) {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        let ticket = Ticket {
            connections: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        };
        let room = if open > self.hard_cap {
            Room::None
        } else if open > self.cap && !self.evict_idle() {
            Room::Full
        } else {
            Room::Free
        };
        (ticket, room)
    }

    /// Asks the longest-idle kept-alive connection to close; false when
    /// none is idle.
    fn evict_idle(&self) -> bool {
        let kept_alive = self.kept_alive.lock().expect("connections lock");
        let idlest = kept_alive
            .values()
            .filter(|c| c.is_idle() && !c.evicted.load(Ordering::Acquire))
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire));
        match idlest {
            Some(conn) => {
                conn.evicted.store(true, Ordering::Release);
                conn.changed.notify_one();
                true
            }
            None => false,
        }
    }

    /// The state of a connection hyper serves, known to the registry so it
    /// can be evicted when idle.
    pub fn track(self: &Arc<Self>, ticket: &Ticket) -> Arc<ConnState> {
        let state = Arc::new(ConnState {
            epoch: self.epoch,
            in_flight: AtomicU32::new(0),
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            write_pending_since: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            changed: Notify::new(),
        });
        self.kept_alive
            .lock()
            .expect("connections lock")
            .insert(ticket.id, state.clone());
        state
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// What one kept-alive connection is doing. Times are milliseconds since
/// the registry's epoch (0: not set).
pub struct ConnState {
    epoch: Instant,
    /// Requests whose response has not been written to its end.
    in_flight: AtomicU32,
    /// When the first byte of a head arrived while idle.
    head_since: AtomicU64,
    /// When the connection last turned idle.
    idle_since: AtomicU64,
    /// Since when a write waits for the client to read.
    write_pending_since: AtomicU64,
    /// Asked to close to make room.
    evicted: AtomicBool,
    /// Closed for taking too long to send a head: answer 408 as it closes.
    timed_out: AtomicBool,
    /// Woken when the connection is evicted. Nothing else wakes the
    /// watchdog: a change sets a deadline no sooner than the shortest one
    /// after it, and the watchdog looks again at least that often (see
    /// [`ConnState::look_again`]), so requests cost it no wake-up.
    pub changed: Notify,
}

/// What the connection's watchdog should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet; look again at this instant.
    Wait(Instant),
    /// Nothing to wait for until something changes.
    Idle,
    /// Close it (idle too long, or evicted).
    Close,
    /// Close it, answering 408: its head took too long.
    HeadTimeout,
    /// Drop it: a write has waited too long for the client.
    WriteStalled,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.head_since.load(Ordering::Acquire) == 0
    }

    /// A request reached the application.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
    }

    /// A response was written to its end (or abandoned).
    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.now_ms(), Ordering::Release);
        }
    }

    /// Bytes arrived from the client.
    pub fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == 0
        {
            self.head_since.store(self.now_ms(), Ordering::Release);
        }
    }

    /// A write could not complete at once (`true`), or did (`false`).
    pub fn write_pending(&self, pending: bool) {
        if pending {
            if self.write_pending_since.load(Ordering::Acquire) == 0 {
                self.write_pending_since
                    .store(self.now_ms(), Ordering::Release);
            }
        } else if self.write_pending_since.load(Ordering::Acquire) != 0 {
            self.write_pending_since.store(0, Ordering::Release);
        }
    }

    /// Marks the connection as closing for a slow head.
    pub fn mark_head_timed_out(&self) {
        self.timed_out.store(true, Ordering::Release);
    }

    /// Whether the connection closes for a slow head (then it answers 408);
    /// true once.
    pub fn take_head_timed_out(&self) -> bool {
        self.timed_out.swap(false, Ordering::AcqRel)
    }

    /// When the watchdog must look next, given a verdict: never later than
    /// the shortest deadline from now, so a deadline set by a change it was
    /// not woken for is still seen when it falls due.
    pub fn look_again(&self, verdict: Verdict, deadlines: &Deadlines) -> Instant {
        let shortest = deadlines
            .header
            .min(deadlines.idle)
            .min(deadlines.write)
            .max(Duration::from_millis(1));
        let soon = Instant::now() + shortest;
        match verdict {
            Verdict::Wait(at) => at.min(soon),
            _ => soon,
        }
    }

    /// The watchdog's verdict under `deadlines`.
    pub fn verdict(&self, deadlines: &Deadlines) -> Verdict {
        if self.evicted.load(Ordering::Acquire) {
            return Verdict::Close;
        }
        let now = self.now_ms();
        let at = |since: u64, after: Duration| since + after.as_millis() as u64;
        let mut next: Option<u64> = None;
        let write = self.write_pending_since.load(Ordering::Acquire);
        if write != 0 {
            let due = at(write, deadlines.write);
            if now >= due {
                return Verdict::WriteStalled;
            }
            next = Some(due);
        }
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let head = self.head_since.load(Ordering::Acquire);
            let (due, verdict) = if head != 0 {
                (at(head, deadlines.header), Verdict::HeadTimeout)
            } else {
                (
                    at(self.idle_since.load(Ordering::Acquire), deadlines.idle),
                    Verdict::Close,
                )
            };
            if now >= due {
                return verdict;
            }
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        match next {
            Some(due) => Verdict::Wait(self.epoch + Duration::from_millis(due)),
            None => Verdict::Idle,
        }
    }
}

/// The soft limit on open descriptors, from `/proc/self/limits` (Linux);
/// 1024 where it cannot be read.
fn descriptor_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines() -> Deadlines {
        Deadlines {
            header: Duration::from_millis(50),
            body: Duration::from_secs(1),
            idle: Duration::from_millis(100),
            write: Duration::from_millis(80),
        }
    }

    #[test]
    fn verdicts_follow_what_the_connection_does() {
        let connections = Connections::new(Some(100));
        let (ticket, room) = connections.admit();
        assert_eq!(room, Room::Free);
        let state = connections.track(&ticket);
        assert!(matches!(state.verdict(&deadlines()), Verdict::Wait(_)));
        state.request_started();
        assert_eq!(state.verdict(&deadlines()), Verdict::Idle);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(state.verdict(&deadlines()), Verdict::Idle, "busy, not idle");
        state.request_finished();
        state.read();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(state.verdict(&deadlines()), Verdict::HeadTimeout);
        state.request_started();
        state.write_pending(true);
        std::thread::sleep(Duration::from_millis(90));
        assert_eq!(state.verdict(&deadlines()), Verdict::WriteStalled);
        state.write_pending(false);
        state.request_finished();
        std::thread::sleep(Duration::from_millis(110));
        assert_eq!(state.verdict(&deadlines()), Verdict::Close, "idle too long");
    }

    #[test]
    fn at_the_cap_idle_connections_make_room() {
        let connections = Connections::new(Some(2));
        let (a, _) = connections.admit();
        let (b, _) = connections.admit();
        let state_a = connections.track(&a);
        let state_b = connections.track(&b);
        state_b.request_started();
        let (c, room) = connections.admit();
        assert_eq!(room, Room::Free, "a was idle and makes room");
        assert_eq!(state_a.verdict(&deadlines()), Verdict::Close);
        assert!(matches!(state_b.verdict(&deadlines()), Verdict::Idle));
        let (_d, room) = connections.admit();
        assert_eq!(room, Room::Full, "nothing idle left");
        drop((a, b, c));
        assert_eq!(connections.open(), 1);
    }
}
