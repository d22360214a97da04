//! Switchyard: an HTTP-first realtime service. This crate is the edge:
//! the HTTP transports, the storage drivers and the configuration, around
//! the core in `switchyard-core` (the log, fan-out, sessions, presence,
//! editing, auth and limits), which knows nothing of HTTP or databases.
//!
//! Map of the crate:
//! - [`config`]: flags, environment and the TOML file, typed;
//! - [`storage`]: the core's storage traits on SQLite (rusqlite) and
//!   Postgres (sqlx), with the rules written once over both;
//! - [`http`]: thin transports over the core: SSE (§4), long polling (§5),
//!   publishing (§6), presence (§7), editing (§8), WebSocket (§10),
//!   operator endpoints (§13), the one HTTP error type, and the accept loop
//!   ([`http::server`]).
//!
//! [`serve`] runs exactly what `switchyard serve` runs, so tests start the
//! same server users do.

pub mod config;
pub mod http;
pub mod storage;

use std::sync::Arc;
use std::time::Instant;

use rand::RngCore;
use switchyard_core::Realtime;
use switchyard_core::auth::Authenticator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Switch};
use crate::http::connections::Connections;
use crate::http::origin::CookieOrigins;
use crate::http::server::FrontDoor;
use crate::http::state::{AppState, Deadlines, Demo};

/// How the server got its token key.
enum KeySource {
    Configured,
    /// Generated for this process: dev tokens are printed.
    Generated,
}

fn authenticator(config: &Config) -> anyhow::Result<(Authenticator, KeySource)> {
    let (auth, source) = key(config)?;
    Ok((auth.with_rules(config.claim_rules()), source))
}

fn key(config: &Config) -> anyhow::Result<(Authenticator, KeySource)> {
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
    let settings = config.settings()?;
    let (auth, key_source) = authenticator(&config)?;
    let storage = storage::open(&config.database_url).await?;
    storage.migrate().await?;
    let backend = storage.backend();
    let realtime = Realtime::start(storage, settings, auth, shutdown.clone()).await?;
    let deadlines = Deadlines {
        header: config.header_timeout,
        body: config.body_timeout,
        idle: config.idle_timeout,
        write: config.write_timeout,
    };
    let front = FrontDoor {
        deadlines,
        connections: Connections::new(config.max_connections.map(|n| n as usize)),
    };
    let state = AppState {
        realtime: realtime.clone(),
        keepalive: config.keepalive,
        cookie_origins: Arc::new(CookieOrigins::new(config.cors_origins.as_ref())),
        ws_ping: config.ws_ping,
        deadlines,
        started: Instant::now(),
        demo: Demo {
            enabled: config.demo == Switch::On,
            dev_tokens: matches!(key_source, KeySource::Generated),
        },
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, backend, "serving");
    println!("switchyard listening on http://{addr}");
    if let KeySource::Generated = key_source {
        print_dev_banner(&realtime.auth, &addr.to_string());
    }

    let app = http::router(state, config.cors_origins.as_ref());
    http::server::serve(listener, app, front, shutdown.clone()).await;
    tracing::info!("connections closed; finishing queued appends");
    realtime.stop().await;
    tracing::info!("stopped");
    Ok(())
}

fn print_dev_banner(auth: &Authenticator, addr: &str) {
    let day = 24 * 3600;
    let user = auth
        .sign(&auth.claims_for("alice", day))
        .unwrap_or_default();
    let mut service_claims = auth.claims_for("backend", day);
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
