//! How users are authenticated: by asking their homeserver who a token belongs to.

use serde::{Deserialize, Serialize};

/// Token checks against the homeserver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Seconds a homeserver's whoami answer for a token is remembered; 0 asks every
    /// time. Default 60.
    #[serde(default = "default_whoami_cache_secs")]
    pub whoami_cache_secs: u64,
    /// Milliseconds to wait for the homeserver's whoami answer. Default 5000.
    #[serde(default = "default_homeserver_timeout_ms")]
    pub homeserver_timeout_ms: u64,
}

fn default_whoami_cache_secs() -> u64 {
    60
}

fn default_homeserver_timeout_ms() -> u64 {
    5_000
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            whoami_cache_secs: default_whoami_cache_secs(),
            homeserver_timeout_ms: default_homeserver_timeout_ms(),
        }
    }
}
