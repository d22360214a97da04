//! Switchyard: an HTTP-first realtime service.
//!
//! Map of the crate (PROTOCOL.md section in brackets):
//! - [`log`]: the one sequenced event log every event goes through: the
//!   group-commit [`log::writer`], the fan-out [`log::hub`], cursor
//!   [`log::Reader`]s and the retention [`log::pruner`] (§3);
//! - [`storage`]: the durable log behind one trait, on SQLite or Postgres;
//! - [`auth`] (§1) and [`channel`] (§2): who may read and write what;
//! - [`event`]: the envelope and the rules for what may be published (§3, §6);
//! - [`presence`] (§7), [`edit`] (§8: the pure OT core in [`edit::ot`] and the
//!   sessions, documents and locks around it), [`limits`] (§12) and
//!   [`expiry`] (token expiry on open streams, §1);
//! - [`http`]: thin transports over the core: SSE (§4), long polling (§5),
//!   publishing (§6), presence, editing, WebSocket (§10), operator endpoints
//!   (§13), and the accept loop ([`http::server`]);
//! - [`error`]: the one error body (§11); [`config`]: flags, env and TOML;
//!   [`metrics`]: the counters behind `/metrics`.
//!
//! [`serve`] runs exactly what `switchyard serve` runs, so tests start the
//! same server users do.

pub mod auth;
pub mod channel;
pub mod config;
pub mod edit;
pub mod error;
pub mod event;
pub mod expiry;
pub mod http;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod presence;
pub mod storage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, claims_for};
use crate::config::Config;
use crate::http::AppState;
use crate::log::EventLog;
use crate::metrics::Metrics;

/// How the server got its token key.
enum KeySource {
    Configured,
    /// Generated for this process: dev tokens are printed.
    Generated,
}

fn authenticator(config: &Config) -> anyhow::Result<(Authenticator, KeySource)> {
    if let Some(key) = &config.jwt_public_key {
        let pem = if key.trim_start().starts_with("-----BEGIN") {
            key.clone().into_bytes()
        } else {
            std::fs::read(key).map_err(|e| {
                anyhow::anyhow!("cannot read SWITCHYARD_JWT_PUBLIC_KEY file {key}: {e}")
            })?
        };
        return Ok((Authenticator::from_public_pem(&pem)?, KeySource::Configured));
    }
    if let Some(secret) = &config.jwt_secret {
        anyhow::ensure!(!secret.is_empty(), "SWITCHYARD_JWT_SECRET is empty");
        return Ok((
            Authenticator::hs256(secret.as_bytes()),
            KeySource::Configured,
        ));
    }
    anyhow::ensure!(
        !config.is_postgres(),
        "refusing to start: SWITCHYARD_JWT_SECRET (or SWITCHYARD_JWT_PUBLIC_KEY) must be set with Postgres, \
         where a generated secret would differ between nodes and restarts"
    );
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    Ok((Authenticator::hs256(&secret), KeySource::Generated))
}

/// Runs the server on `listener` until `shutdown` is cancelled, then ends
/// streams, answers waiting polls, finishes queued appends and returns.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let file = config.file()?;
    let namespaces = channel::Namespaces::with_overrides(file.namespaces)?;
    let limits = Arc::new(limits::Limits::new(file.limits, config.rate_limits == "on"));
    let (auth, key_source) = authenticator(&config)?;
    let storage = storage::open(&config.database_url).await?;
    storage.migrate().await?;
    let metrics = Arc::new(Metrics::default());
    let log = EventLog::start(storage.clone(), metrics.clone(), shutdown.clone()).await?;
    let pruner = tokio::spawn(log::pruner::run(
        storage.clone(),
        Duration::from_secs(config.prune_interval_secs.max(1)),
        shutdown.clone(),
    ));

    let evictor = tokio::spawn(evict_idle_limits(limits.clone(), shutdown.clone()));
    let namespaces = Arc::new(namespaces);
    let presence = Arc::new(presence::Presence::new(
        storage.clone(),
        log.clone(),
        namespaces.clone(),
        Duration::from_secs(config.presence_ttl_secs.max(1)),
        Duration::from_secs(config.presence_away_secs.max(1)),
    ));
    let sweeper = tokio::spawn(presence.clone().run(shutdown.clone()));
    let editing = edit::Editing::new(
        log.clone(),
        namespaces.clone(),
        Duration::from_secs(config.edit_session_idle_secs.max(1)),
    );
    let lock_expiry = tokio::spawn(edit::run_lock_expiry(editing.clone(), shutdown.clone()));
    let state = AppState {
        editing,
        log: log.clone(),
        auth: Arc::new(auth),
        namespaces,
        presence,
        metrics,
        limits,
        keepalive: Duration::from_secs(config.keepalive_secs.max(1)),
        ws_ping: Duration::from_secs(config.ws_ping_secs.max(1)),
        shutdown: shutdown.clone(),
        started: Instant::now(),
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backend = storage.backend(), "serving");
    println!("switchyard listening on http://{addr}");
    if let KeySource::Generated = key_source {
        print_dev_banner(&state.auth, &addr.to_string());
    }

    let app = http::router(state, config.cors_origins.as_deref());
    http::server::serve(listener, app, shutdown.clone()).await;
    tracing::info!("connections closed; finishing queued appends");
    let _ = lock_expiry.await;
    log.close().await;
    let _ = pruner.await;
    let _ = evictor.await;
    let _ = sweeper.await;
    storage.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Keeps rate-limiter state proportional to active users, not to all users ever seen.
async fn evict_idle_limits(limits: Arc<limits::Limits>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => limits.evict_idle(),
        }
    }
}

fn print_dev_banner(auth: &Authenticator, addr: &str) {
    let day = 24 * 3600;
    let user = auth.sign(&claims_for("alice", day)).unwrap_or_default();
    let mut service_claims = claims_for("backend", day);
    service_claims.role = Some("service".into());
    let service = auth.sign(&service_claims).unwrap_or_default();
    println!(
        "\nNo SWITCHYARD_JWT_SECRET set: generated a secret for this process only \
         (set one to keep tokens valid across restarts).\n\n\
         Dev user token (sub alice, 24h):\n  {user}\n\
         Service token (sub backend, role service, 24h):\n  {service}\n\n\
         Try it: open a stream in one terminal\n  \
         curl -N -H 'Authorization: Bearer {user}' 'http://{addr}/realtime/sse?channels=system'\n\
         and broadcast to it from another\n  \
         curl -X POST -H 'Authorization: Bearer {service}' -H 'Content-Type: application/json' \
         -d '{{\"channel\":\"system\",\"event\":\"hello\",\"data\":{{\"message\":\"hi\"}}}}' http://{addr}/realtime/broadcast\n"
    );
}
