//! What every handler reaches: the core, and the settings only transports
//! have.

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_core::Realtime;

use super::origin::CookieOrigins;

/// What the browser demo may do on this server.
#[derive(Debug, Clone, Copy)]
pub struct Demo {
    /// `/demo` is served (`SWITCHYARD_DEMO`, default on).
    pub enabled: bool,
    /// The token key was generated for this process: `/demo/token` mints.
    pub dev_tokens: bool,
}

/// How long a connection may take for each thing it does (the README's
/// "Limits and timeouts").
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From a head's first byte to its end.
    pub header: Duration,
    /// To read a request body, once its head arrived.
    pub body: Duration,
    /// A kept-alive connection with nothing in flight, before it closes;
    /// also a new connection's wait for its first byte.
    pub idle: Duration,
    /// A write the client does not read, before the connection is dropped.
    pub write: Duration,
}

#[derive(Clone)]
pub struct AppState {
    /// The core: every command and every stream goes through it.
    pub realtime: Arc<Realtime>,
    /// Interval of the server's WebSocket pings.
    pub ws_ping: Duration,
    /// Idle time before an SSE `: ping`.
    pub keepalive: Duration,
    pub deadlines: Deadlines,
    /// Origins trusted to act with the token cookie (WebSocket upgrades,
    /// POST and DELETE), besides the server's own.
    pub cookie_origins: Arc<CookieOrigins>,
    pub started: Instant,
    /// The browser demo's settings (`/demo`, dev tokens).
    pub demo: Demo,
}
