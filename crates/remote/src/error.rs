//! Errors of talking to another server. The web layer turns them into 502/504 Matrix errors.

/// Result of every fallible operation in this crate.
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a server name (`host[:port]`, host a DNS name, IPv4 or `[IPv6]`).
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),

    /// Every address the destination resolved to is one the policy refuses (private,
    /// loopback, link-local, …, and not allow-listed). Nothing was dialled.
    #[error("refusing to connect to {host}: no allowed address ({addresses})")]
    AddressRefused { host: String, addresses: String },

    /// The name did not resolve to any address.
    #[error("cannot resolve {host}: {reason}")]
    Unresolvable { host: String, reason: String },

    /// The request could not be sent or its answer not read (connect, TLS, timeout, …).
    #[error("request to {host} failed: {source}")]
    Request {
        host: String,
        #[source]
        source: reqwest::Error,
    },

    /// No response head within the request timeout.
    #[error("{host} did not answer within {after:?}")]
    Timeout {
        host: String,
        after: std::time::Duration,
    },

    /// A `Location` or URL that is not an absolute `https://` (or `http://` where allowed) URL.
    #[error("invalid redirect target {0:?}")]
    InvalidUrl(String),

    /// The extra CA file could not be read or parsed.
    #[error("cannot use the CA file {path}: {reason}")]
    CaFile { path: String, reason: String },

    /// The HTTP client could not be built (TLS backend).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl Error {
    /// Whether the failure was a timeout (the web layer answers 504 instead of 502).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Request { source, .. } => source.is_timeout(),
            _ => false,
        }
    }
}
