//! Process-level settings: where the HTTP and metrics listeners bind and how much the
//! process logs.

use serde::{Deserialize, Serialize};

/// The main HTTP listener.
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
}

impl ServerConfig {
    /// `trusted_proxies` parsed; entries that do not parse (validation reports them) are
    /// left out.
    pub fn trusted_proxy_ranges(&self) -> Vec<crate::IpRange> {
        self.trusted_proxies
            .iter()
            .filter_map(|entry| entry.parse().ok())
            .collect()
    }
}

fn default_bind() -> String {
    "127.0.0.1:8000".to_owned()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: default_bind(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Prometheus metrics exposition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Socket address (`ip:port`) of a separate listener serving only `/metrics`.
    /// Default unset: `/metrics` is served on the main listener. Changing it takes a
    /// restart.
    #[serde(default = "default_metrics_bind")]
    pub bind: Option<String>,
}

fn default_metrics_bind() -> Option<String> {
    None
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
