//! Time and resource readings: the tool's monotonic clock (publisher and
//! subscribers share one process, or several processes share a zero set by
//! `SWITCHYARD_BENCH_EPOCH_UNIX_MS`, so a timestamp in an event is comparable
//! with the receiver's clock), CPU of this process and of server processes,
//! and a server's RSS.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();

pub fn init() {
    START.get_or_init(Instant::now);
}

/// Sets the zero at a wall-clock time (milliseconds since 1970), so several
/// processes started apart share it. Monotonic and wall clocks only drift
/// apart by clock adjustments, which are negligible over one run.
pub fn init_at_unix_ms(ms: u64) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(Duration::from_millis(ms));
    START.get_or_init(|| Instant::now() - since);
}

/// The tool's start, the zero of every timestamp carried in events.
pub fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Nanoseconds since the tool started.
pub fn now_ns() -> u64 {
    start().elapsed().as_nanos() as u64
}

/// Nanoseconds of `at` since the tool started.
pub fn ns_of(at: Instant) -> u64 {
    at.saturating_duration_since(start()).as_nanos() as u64
}

/// User + system CPU time of this process.
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct we hand it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// User + system CPU time of another process, from /proc/PID/stat.
pub fn pid_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos((utime + stime) * 1_000_000_000 / hz))
}

/// Time the threads of a process spent runnable but waiting for a CPU
/// (sum of /proc/PID/task/*/schedstat's second field): high when other
/// processes on the machine took the core, not when the process was busy.
pub fn pid_run_delay(pid: &str) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat"))
            && let Some(ns) = s
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        {
            total += ns;
        }
    }
    Some(Duration::from_nanos(total))
}

/// CPU time all processes of the machine used (all CPUs, not idle), from
/// /proc/stat.
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let busy: u64 = ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(busy * 1_000_000_000 / hz))
}

/// Resident set size in bytes, from /proc/PID/status.
pub fn pid_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU use of this process and of the given server processes over a window.
pub struct CpuMeter {
    wall: Instant,
    own: Duration,
    own_wait: Option<Duration>,
    machine: Option<Duration>,
    servers: Vec<(u32, Option<Duration>, Option<Duration>)>,
}

/// CPU used over a window, as % of one core.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub client_pct: f64,
    /// Sum over the server processes; None when no pid was given or readable.
    pub server_pct: Option<f64>,
    /// The same, as CPU time over the window.
    pub server_time: Option<Duration>,
    /// Time the client's threads waited for a CPU, % of the window.
    pub client_wait_pct: Option<f64>,
    /// Time the server's threads waited for a CPU, % of the window.
    pub server_wait_pct: Option<f64>,
    /// CPU other processes of the machine used (everything but this client
    /// and the given server processes), % of one core.
    pub others_pct: Option<f64>,
}

/// Above this share of one core the client measured itself.
pub const CLIENT_CPU_LIMIT_PCT: f64 = 85.0;

impl CpuMeter {
    pub fn start(server_pids: &[u32]) -> Self {
        Self {
            wall: Instant::now(),
            own: self_cpu(),
            own_wait: pid_run_delay("self"),
            machine: machine_busy(),
            servers: server_pids
                .iter()
                .map(|&p| (p, pid_cpu(p), pid_run_delay(&p.to_string())))
                .collect(),
        }
    }

    pub fn stop(&self) -> CpuUse {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        let client_pct = (self_cpu() - self.own).as_secs_f64() / wall * 100.0;
        let pct = |d: Duration| d.as_secs_f64() / wall * 100.0;
        let (mut server, mut server_wait) = (None::<Duration>, None::<Duration>);
        for &(pid, cpu_before, wait_before) in &self.servers {
            if let (Some(b), Some(a)) = (cpu_before, pid_cpu(pid)) {
                *server.get_or_insert_default() += a.saturating_sub(b);
            }
            if let (Some(b), Some(a)) = (wait_before, pid_run_delay(&pid.to_string())) {
                *server_wait.get_or_insert_default() += a.saturating_sub(b);
            }
        }
        let client_wait = match (self.own_wait, pid_run_delay("self")) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        let others = match (self.machine, machine_busy()) {
            (Some(b), Some(a)) => {
                let ours = (self_cpu() - self.own) + server.unwrap_or_default();
                Some(a.saturating_sub(b).saturating_sub(ours))
            }
            _ => None,
        };
        CpuUse {
            client_pct,
            others_pct: others.map(pct),
            server_pct: server.map(pct),
            server_time: server,
            client_wait_pct: client_wait.map(pct),
            server_wait_pct: server_wait.map(pct),
        }
    }
}

impl CpuUse {
    /// Adds `client_cpu_pct`, `server_cpu_pct` and the wait shares to `out`.
    pub fn metrics(&self, prefix: &str, out: &mut serde_json::Map<String, serde_json::Value>) {
        let mut put = |k: &str, v: Option<f64>| {
            if let Some(v) = v {
                out.insert(format!("{prefix}{k}"), serde_json::json!(v.round()));
            }
        };
        put("client_cpu_pct", Some(self.client_pct));
        put("server_cpu_pct", self.server_pct);
        put("client_cpu_wait_pct", self.client_wait_pct);
        put("server_cpu_wait_pct", self.server_wait_pct);
        put("others_cpu_pct", self.others_pct);
    }

    pub fn valid(&self) -> bool {
        self.client_pct <= CLIENT_CPU_LIMIT_PCT
    }

    pub fn describe(&self) -> String {
        let server = match self.server_pct {
            Some(s) => format!("server {s:.0}% of a core, "),
            None => String::new(),
        };
        let waits = match (self.server_wait_pct, self.client_wait_pct) {
            (Some(s), Some(c)) => {
                format!("; waited for a CPU: server {s:.0}%, client {c:.0}% of the time")
            }
            (None, Some(c)) => format!("; client waited for a CPU {c:.0}% of the time"),
            _ => String::new(),
        };
        let others = match self.others_pct {
            Some(o) => format!("; other processes {o:.0}% of a core"),
            None => String::new(),
        };
        format!(
            "CPU: {server}client {:.0}% of a core{others}{waits}{}",
            self.client_pct,
            if self.valid() {
                ""
            } else {
                " -> INVALID (client > 85% of a core: it measured itself)"
            }
        )
    }
}
