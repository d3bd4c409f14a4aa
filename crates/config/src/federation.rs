//! Talking to other Matrix servers: which addresses may be dialled, which extra CA is
//! trusted, and how long a remote server may take.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Outgoing federation requests (fetching remote media).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// IP addresses or CIDR ranges that may be dialled although they are private,
    /// loopback, link-local or otherwise not public (every address actually dialled is
    /// checked: after discovery, delegation, SRV and redirects). Default empty: only public
    /// addresses.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    /// PEM file of CA certificates to trust beside the built-in roots (certificates are
    /// always checked; nothing turns that off). Default unset.
    #[serde(default)]
    pub extra_ca_file: Option<PathBuf>,
    /// Milliseconds a remote server may take to answer a request (until the response
    /// head; a media body may stream for longer, bounded by `idle_timeout_ms`). An origin
    /// is asked to wait for an async upload pending there as long as our client waits, but
    /// at most half of this. Default 20000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Milliseconds to wait for a connection to a remote server. Default 5000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Milliseconds a remote media download may go without receiving a byte before it
    /// is abandoned (nothing kept). Default 20000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Remote media fetches that may run at once (each holds a connection and a temp
    /// file); a download that would start one more answers 429 with Retry-After. Default 64.
    #[serde(default = "default_max_concurrent_fetches")]
    pub max_concurrent_fetches: u32,
}

fn default_request_timeout_ms() -> u64 {
    20_000
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_idle_timeout_ms() -> u64 {
    20_000
}

fn default_max_concurrent_fetches() -> u32 {
    64
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            allowed_networks: Vec::new(),
            extra_ca_file: None,
            request_timeout_ms: default_request_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_concurrent_fetches: default_max_concurrent_fetches(),
        }
    }
}

impl FederationConfig {
    /// `allowed_networks` parsed; entries that do not parse (validation reports them) are
    /// left out.
    pub fn allowed_ranges(&self) -> Vec<crate::Cidr> {
        self.allowed_networks
            .iter()
            .filter_map(|entry| entry.parse().ok())
            .collect()
    }
}
