//! Configuration: flags and `SWITCHYARD_*` environment variables
//! (PROTOCOL §13), plus an optional TOML file for namespaces and limits.
//!
//! Typed at the edge: durations are [`Duration`]s, switches and formats are
//! enums, origins a list; a bad value stops the server at start with a
//! message naming its variable. [`Config::settings`] turns it into the
//! core's [`Settings`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use switchyard_core::Settings;
use switchyard_core::auth::ClaimRules;
use switchyard_core::channel::{Namespace, Namespaces};
use switchyard_core::limits::LimitsConfig;

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

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Browser origins CORS allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin, without credentials (the token cookie).
    Any,
    /// These origins, with credentials.
    List(Vec<String>),
}

/// A whole number of seconds, at least 1, for the variable `var`.
fn seconds(var: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |text: &str| match text.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(Duration::from_secs(n)),
        _ => Err(format!(
            "{var} must be a whole number of seconds, at least 1 (got '{text}')"
        )),
    }
}

/// A parser of whole days (1 to 3650) that names its variable.
fn days(var: &'static str) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |text: &str| match text.trim().parse::<u64>() {
        Ok(n) if (1..=3650).contains(&n) => Ok(Duration::from_secs(n * 86_400)),
        _ => Err(format!(
            "{var} must be a whole number of days, 1 to 3650 (got '{text}')"
        )),
    }
}

/// Values of a comma-separated setting (one value for clap, not many).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameList(pub Vec<String>);

/// A comma-separated list of at least one non-empty value, for `var`.
fn names_list(
    var: &'static str,
) -> impl Fn(&str) -> Result<NameList, String> + Clone + Send + Sync {
    move |text: &str| {
        let list: Vec<String> = text
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if list.is_empty() {
            Err(format!("{var} names nothing (got '{text}')"))
        } else {
            Ok(NameList(list))
        }
    }
}

fn cors_origins(text: &str) -> Result<CorsOrigins, String> {
    if text.trim() == "*" {
        return Ok(CorsOrigins::Any);
    }
    let list: Vec<String> = text
        .split(',')
        .map(|o| o.trim().to_string())
        .filter(|o| !o.is_empty())
        .collect();
    for origin in &list {
        let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin
                .trim_end_matches('/')
                .contains(|c: char| c.is_whitespace())
            && origin.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(format!(
                "SWITCHYARD_CORS_ORIGINS: '{origin}' is not an origin like https://app.example.com"
            ));
        }
    }
    if list.is_empty() {
        return Err("SWITCHYARD_CORS_ORIGINS names no origin".into());
    }
    Ok(CorsOrigins::List(list))
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

    /// Audiences a token's `aud` must name one of (comma-separated); unset:
    /// `aud` is not checked.
    #[arg(long, env = "SWITCHYARD_JWT_AUDIENCE", value_parser = names_list("SWITCHYARD_JWT_AUDIENCE"),
          global = true)]
    pub jwt_audience: Option<NameList>,

    /// Issuers a token's `iss` must be one of (comma-separated); unset:
    /// `iss` is not checked.
    #[arg(long, env = "SWITCHYARD_JWT_ISSUER", value_parser = names_list("SWITCHYARD_JWT_ISSUER"),
          global = true)]
    pub jwt_issuer: Option<NameList>,

    /// Seconds between `: ping` comments on idle SSE streams.
    #[arg(long = "keepalive-secs", env = "SWITCHYARD_KEEPALIVE_SECS", default_value = "15",
          value_parser = seconds("SWITCHYARD_KEEPALIVE_SECS"), global = true)]
    pub keepalive: Duration,

    /// Seconds a user stays online after their last poll or closed stream
    /// (and after their node stops renewing its heartbeat).
    #[arg(long = "presence-ttl-secs", env = "SWITCHYARD_PRESENCE_TTL_SECS", default_value = "60",
          value_parser = seconds("SWITCHYARD_PRESENCE_TTL_SECS"), global = true)]
    pub presence_ttl: Duration,

    /// Seconds without a client action before an online user shows as `away`.
    #[arg(long = "presence-away-secs", env = "SWITCHYARD_PRESENCE_AWAY_SECS", default_value = "300",
          value_parser = seconds("SWITCHYARD_PRESENCE_AWAY_SECS"), global = true)]
    pub presence_away: Duration,

    /// Seconds an edit session may go without an operation or save before
    /// it expires (410 `session_expired`).
    #[arg(long = "edit-session-idle-secs", env = "SWITCHYARD_EDIT_SESSION_IDLE_SECS",
          default_value = "1800", value_parser = seconds("SWITCHYARD_EDIT_SESSION_IDLE_SECS"),
          global = true)]
    pub edit_session_idle: Duration,

    /// Days a notification is kept, read or not (PROTOCOL §9).
    #[arg(long = "notification-retention-days", env = "SWITCHYARD_NOTIFICATION_RETENTION_DAYS",
          default_value = "30", value_parser = days("SWITCHYARD_NOTIFICATION_RETENTION_DAYS"),
          global = true)]
    pub notification_retention: Duration,

    /// Seconds between the server's WebSocket pings; two unanswered close the socket.
    #[arg(long = "ws-ping-secs", env = "SWITCHYARD_WS_PING_SECS", default_value = "30",
          value_parser = seconds("SWITCHYARD_WS_PING_SECS"), global = true)]
    pub ws_ping: Duration,

    /// Seconds between retention passes of the pruner.
    #[arg(long = "prune-interval-secs", env = "SWITCHYARD_PRUNE_INTERVAL_SECS",
          default_value = "60", value_parser = seconds("SWITCHYARD_PRUNE_INTERVAL_SECS"),
          global = true)]
    pub prune_interval: Duration,

    /// Seconds a client may take to send a request head, from its first byte.
    #[arg(long = "header-timeout-secs", env = "SWITCHYARD_HEADER_TIMEOUT_SECS",
          default_value = "10", value_parser = seconds("SWITCHYARD_HEADER_TIMEOUT_SECS"),
          global = true)]
    pub header_timeout: Duration,

    /// Seconds a client may take to send a request body, once its head arrived.
    #[arg(long = "body-timeout-secs", env = "SWITCHYARD_BODY_TIMEOUT_SECS",
          default_value = "10", value_parser = seconds("SWITCHYARD_BODY_TIMEOUT_SECS"),
          global = true)]
    pub body_timeout: Duration,

    /// Seconds a kept-alive connection may stay idle (and a new one wait for
    /// its first byte) before it is closed.
    #[arg(long = "idle-timeout-secs", env = "SWITCHYARD_IDLE_TIMEOUT_SECS",
          default_value = "60", value_parser = seconds("SWITCHYARD_IDLE_TIMEOUT_SECS"),
          global = true)]
    pub idle_timeout: Duration,

    /// Seconds a write may wait for a client that does not read before its
    /// connection is dropped (it resumes from its cursor).
    #[arg(long = "write-timeout-secs", env = "SWITCHYARD_WRITE_TIMEOUT_SECS",
          default_value = "30", value_parser = seconds("SWITCHYARD_WRITE_TIMEOUT_SECS"),
          global = true)]
    pub write_timeout: Duration,

    /// Most open connections; default: the process's open-file limit less
    /// 256. Past it, idle connections are closed to make room, and when
    /// none is idle new ones get only health checks (others: 503).
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub max_connections: Option<u32>,

    /// Megabytes of recent events the fan-out keeps in memory, for all
    /// channels together; readers behind it catch up from storage.
    #[arg(long = "hub-memory-mb", env = "SWITCHYARD_HUB_MEMORY_MB", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub hub_memory_mb: u32,

    /// Browser origins allowed by CORS: comma-separated, or `*`. Default: none.
    #[arg(long, env = "SWITCHYARD_CORS_ORIGINS", value_parser = cors_origins, global = true)]
    pub cors_origins: Option<CorsOrigins>,

    /// `off` disables the rate and connection limits of PROTOCOL §12 (load tests).
    #[arg(
        long,
        env = "SWITCHYARD_RATE_LIMITS",
        default_value = "on",
        value_enum,
        global = true
    )]
    pub rate_limits: Switch,

    /// `off` stops serving the browser demo at /demo (and its dev tokens).
    #[arg(
        long,
        env = "SWITCHYARD_DEMO",
        default_value = "on",
        value_enum,
        global = true
    )]
    pub demo: Switch,

    /// TOML file with namespace and limit settings.
    #[arg(long = "config", env = "SWITCHYARD_CONFIG", global = true)]
    pub config_file: Option<PathBuf>,

    /// Log format: `text` or `json`. Levels come from RUST_LOG (default info).
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        default_value = "text",
        value_enum,
        global = true
    )]
    pub log_format: LogFormat,
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
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("SWITCHYARD_CONFIG: cannot read {}: {e}", path.display())
        })?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("SWITCHYARD_CONFIG: {}: {e}", path.display()))
    }

    /// The audience and issuer a token must name, when set.
    pub fn claim_rules(&self) -> ClaimRules {
        ClaimRules {
            audience: self.jwt_audience.clone().map(|l| l.0).unwrap_or_default(),
            issuer: self.jwt_issuer.clone().map(|l| l.0).unwrap_or_default(),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres")
    }

    /// The core's settings: these flags and the TOML file's.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let file = self.file()?;
        Ok(Settings {
            namespaces: Namespaces::with_overrides(file.namespaces)?,
            limits: file.limits,
            rate_limits: self.rate_limits == Switch::On,
            presence_ttl: self.presence_ttl,
            presence_away: self.presence_away,
            edit_session_idle: self.edit_session_idle,
            prune_interval: self.prune_interval,
            hub_memory: self.hub_memory_mb as usize * 1024 * 1024,
            notification_retention: self.notification_retention,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_name_their_variable() {
        let parse = seconds("SWITCHYARD_KEEPALIVE_SECS");
        assert_eq!(parse("15"), Ok(Duration::from_secs(15)));
        let e = parse("0").unwrap_err();
        assert!(e.contains("SWITCHYARD_KEEPALIVE_SECS"), "{e}");
        assert!(parse("1.5").is_err());
    }

    #[test]
    fn origins() {
        assert_eq!(cors_origins("*"), Ok(CorsOrigins::Any));
        assert_eq!(
            cors_origins("https://a.example, http://b.example:8080"),
            Ok(CorsOrigins::List(vec![
                "https://a.example".into(),
                "http://b.example:8080".into()
            ]))
        );
        assert!(cors_origins("a.example").is_err());
        assert!(cors_origins(" , ").is_err());
    }
}
