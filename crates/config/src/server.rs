//! Process-level settings: where the public and operators' listeners bind, how long a
//! stop may drain, and how much the process logs.

use serde::{Deserialize, Serialize};

/// The public HTTP listener (the media API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Socket address (`ip:port`) the media API listens on. Default `127.0.0.1:8000`.
    /// Changing it takes a restart.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Peers (IP addresses or CIDR ranges) whose `X-Forwarded-Host` / `Forwarded: host=`
    /// headers are believed when choosing the homeserver a request is for; from any other
    /// peer only `Host` counts. Default empty: forwarded headers are never believed. List
    /// your reverse proxy here if it rewrites `Host`. Changing it takes a restart.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Seconds in-flight requests (e.g. long downloads) may still run after SIGTERM or
    /// SIGINT before they are cut; new connections are refused meanwhile. Default 30.
    /// Applies to both listeners. Changing it takes a restart.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
}

impl ServerConfig {
    /// `trusted_proxies` parsed; entries that do not parse (validation reports them) are
    /// left out.
    pub fn trusted_proxy_ranges(&self) -> Vec<crate::Cidr> {
        self.trusted_proxies
            .iter()
            .filter_map(|entry| entry.parse().ok())
            .collect()
    }
}

fn default_bind() -> String {
    "127.0.0.1:8000".to_owned()
}

fn default_shutdown_timeout_secs() -> u64 {
    30
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: default_bind(),
            trusted_proxies: Vec::new(),
            shutdown_timeout_secs: default_shutdown_timeout_secs(),
        }
    }
}

/// The operators' listener: the only place `/metrics` and `/_media_repo/v1/cache` are
/// served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Socket address (`ip:port`) of the operators' listener. Default `127.0.0.1:9000`
    /// (the Go media repo's metrics port). An explicit `null` turns the listener off, and
    /// with it the operator endpoints: they are never served on the public listener.
    /// Changing it takes a restart.
    // An absent key takes the default; serde reads an explicit `null` as `None`.
    #[serde(default = "default_metrics_bind")]
    pub bind: Option<String>,
}

fn default_metrics_bind() -> Option<String> {
    Some("127.0.0.1:9000".to_owned())
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            bind: default_metrics_bind(),
        }
    }
}

/// Log output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Log filter in the simple `tracing` EnvFilter forms: one level (`trace`, `debug`,
    /// `info`, `warn`, `error`, `off`) and/or comma-separated `target=level` directives,
    /// e.g. `info,mr_cache=debug`. Default `info`. `RUST_LOG`, when set, wins.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".to_owned()
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: default_level(),
        }
    }
}
