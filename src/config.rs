//! Configuration: flags and `SWITCHYARD_*` environment variables
//! (PROTOCOL §13), plus an optional TOML file for namespaces.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::channel::Namespace;
use crate::limits::LimitsConfig;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "HTTP-first realtime service: SSE, long polling, one sequenced event log"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Print a token signed with the configured HS256 secret.
    Token(TokenArgs),
    /// Apply database migrations and exit.
    Migrate,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(
        long,
        env = "SWITCHYARD_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Database: sqlite://FILE, sqlite::memory: or postgres://...
    #[arg(
        long,
        env = "SWITCHYARD_DATABASE_URL",
        default_value = "sqlite://switchyard.db",
        global = true
    )]
    pub database_url: String,

    /// HS256 secret for JWTs. Without it (and without a public key) the server
    /// generates one for this process and prints dev tokens; refused with Postgres.
    #[arg(
        long,
        env = "SWITCHYARD_JWT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub jwt_secret: Option<String>,

    /// PEM public key (the PEM text or a path to it) for RS256/ES256 tokens.
    #[arg(long, env = "SWITCHYARD_JWT_PUBLIC_KEY", global = true)]
    pub jwt_public_key: Option<String>,

    /// Seconds between `: ping` comments on idle SSE streams.
    #[arg(
        long,
        env = "SWITCHYARD_KEEPALIVE_SECS",
        default_value_t = 15,
        global = true
    )]
    pub keepalive_secs: u64,

    /// Seconds a user stays online after their last poll or closed stream
    /// (and after their node stops renewing its heartbeat).
    #[arg(
        long,
        env = "SWITCHYARD_PRESENCE_TTL_SECS",
        default_value_t = 60,
        global = true
    )]
    pub presence_ttl_secs: u64,

    /// Seconds without a client action before an online user shows as `away`.
    #[arg(
        long,
        env = "SWITCHYARD_PRESENCE_AWAY_SECS",
        default_value_t = 300,
        global = true
    )]
    pub presence_away_secs: u64,

    /// Seconds an edit session may go without an operation or save before
    /// it expires (410 `session_expired`).
    #[arg(
        long,
        env = "SWITCHYARD_EDIT_SESSION_IDLE_SECS",
        default_value_t = 1800,
        global = true
    )]
    pub edit_session_idle_secs: u64,

    /// Seconds between the server's WebSocket pings; two unanswered close the socket.
    #[arg(
        long,
        env = "SWITCHYARD_WS_PING_SECS",
        default_value_t = 30,
        global = true
    )]
    pub ws_ping_secs: u64,

    /// Seconds between retention passes of the pruner.
    #[arg(
        long,
        env = "SWITCHYARD_PRUNE_INTERVAL_SECS",
        default_value_t = 60,
        global = true
    )]
    pub prune_interval_secs: u64,

    /// Browser origins allowed by CORS: comma-separated, or `*`. Default: none.
    #[arg(long, env = "SWITCHYARD_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,

    /// `off` disables the rate and connection limits of PROTOCOL §12 (load tests).
    #[arg(long, env = "SWITCHYARD_RATE_LIMITS", default_value = "on", value_parser = ["on", "off"], global = true)]
    pub rate_limits: String,

    /// TOML file with namespace and limit settings.
    #[arg(long = "config", env = "SWITCHYARD_CONFIG", global = true)]
    pub config_file: Option<PathBuf>,

    /// Log format: `text` or `json`. Levels come from RUST_LOG (default info).
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: String,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Tenant (`tenant_id`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Readable channel patterns, comma-separated, e.g. 'project:*,task:12'.
    #[arg(long)]
    pub channels: Option<String>,
    /// Publishable channel patterns, comma-separated.
    #[arg(long)]
    pub publish: Option<String>,
    /// `service` for trusted backends.
    #[arg(long)]
    pub role: Option<String>,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime: seconds, or with a unit: 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration_secs)]
    pub ttl: i64,
}

/// `90`, `90s`, `30m`, `1h`, `7d` → seconds.
pub fn parse_duration_secs(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90s, 30m, 1h, 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit in '{s}': use s, m, h or d")),
    };
    Ok(n * scale)
}

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Namespaces to add or override, by name.
    #[serde(default)]
    pub namespaces: BTreeMap<String, Namespace>,
    /// The limits of PROTOCOL §12; unset rows keep their defaults.
    #[serde(default)]
    pub limits: LimitsConfig,
}

impl Config {
    /// The TOML file's settings, or the defaults without one.
    pub fn file(&self) -> anyhow::Result<FileConfig> {
        let Some(path) = &self.config_file else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }
}
