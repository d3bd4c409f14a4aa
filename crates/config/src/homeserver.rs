//! The homeservers this media repo serves media for.

use serde::{Deserialize, Serialize};

/// One homeserver (server name) whose media this repo stores and serves.
///
/// Both fields are required: a homeserver entry without a name or URL is a mistake,
/// not something a default can fix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Matrix server name, the part after `:` in `@user:example.org` and in `mxc://`
    /// URIs: a host name, IPv4 address or `[IPv6]` address, optionally with `:port`.
    /// Requests are matched to a homeserver by it. Required.
    pub name: String,
    /// Base `http(s)://` URL of the homeserver's client-server API, used to check access
    /// tokens (`/_matrix/client/v3/account/whoami`). Required.
    pub client_api_url: String,
    /// This homeserver's federation signing key (Synapse's `signing.key` file:
    /// `ed25519 <version> <base64 seed>`). With it, media of other servers is fetched
    /// over federation for this homeserver's users, signed as this homeserver. Without it
    /// (the default), remote media is not fetched for them, and the log says so at start.
    #[serde(default)]
    pub signing_key_path: Option<std::path::PathBuf>,
}

/// The homeserver list used when the config file names none: a local development
/// homeserver (Synapse's default port).
pub(crate) fn default_homeservers() -> Vec<HomeserverConfig> {
    vec![HomeserverConfig {
        name: "localhost:8008".to_owned(),
        client_api_url: "http://127.0.0.1:8008".to_owned(),
        signing_key_path: None,
    }]
}
