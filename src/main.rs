//! The `switchyard` binary: parses configuration and calls the library.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use switchyard::config::{Cli, Command, Config, LogFormat, TokenArgs};
use switchyard_core::auth::Authenticator;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Shutdown must finish within 10 s (PROTOCOL §13); this leaves a margin.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(9);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Token(args) => token(&cli.config, args),
        Command::Migrate => {
            let storage = switchyard::storage::open(&cli.config.database_url).await?;
            storage.migrate().await?;
            storage.close().await;
            println!("migrations applied to the {} database", storage.backend());
            Ok(())
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let mut server = tokio::spawn(switchyard::serve(config, listener, shutdown.clone()));
    tokio::select! {
        result = &mut server => return result?,
        _ = signal() => {}
    }
    tracing::info!("shutdown signal received: closing streams and answering polls");
    shutdown.cancel();
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result?,
        Err(_) => {
            tracing::warn!("shutdown took too long; exiting with work unfinished");
            Ok(())
        }
    }
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn token(config: &Config, args: TokenArgs) -> anyhow::Result<()> {
    let secret = config
        .jwt_secret
        .as_ref()
        .context("set SWITCHYARD_JWT_SECRET (or --jwt-secret): tokens are signed with the server's HS256 secret")?;
    let list = |s: Option<String>| -> Vec<String> {
        s.map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
    };
    let auth = Authenticator::hs256(secret.as_bytes()).with_rules(config.claim_rules());
    let mut claims = auth.claims_for(&args.sub, args.ttl);
    claims.tenant_id = args.tenant;
    claims.channels = list(args.channels);
    claims.publish = list(args.publish);
    claims.role = args.role;
    claims.name = args.name;
    let token = auth.sign(&claims).context("could not sign the token")?;
    println!("{token}");
    Ok(())
}
