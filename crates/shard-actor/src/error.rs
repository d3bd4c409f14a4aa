//! Errors a shard command can answer with. Every one of them means "treat as a cache miss"
//! to the caller; the variants exist so logs and metrics can say why.

use std::time::Duration;

/// Why a command sent to a shard actor did not produce a value.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The shard is marked down by its health check; the network was not touched.
    #[error("shard {0} is down")]
    Down(String),
    /// The shard's key-format marker names another version (a repo of another major version
    /// uses it); the network was not touched.
    #[error("shard {0} holds another key-format version")]
    FormatMismatch(String),
    /// Writes to the shard are paused after it refused one (OOM, READONLY, ...); the network
    /// was not touched. Reads still work.
    #[error("shard {0}: writes paused after the server refused one")]
    WritesPaused(String),
    /// The shard has no established connection yet (still connecting after start or restart).
    #[error("shard {0} has no connection yet")]
    NotConnected(String),
    /// The command did not complete within the response timeout.
    #[error("shard {shard}: no answer within {timeout:?}")]
    Timeout { shard: String, timeout: Duration },
    /// Redis answered with an error, or the connection failed.
    #[error("shard {shard}: {source}")]
    Redis {
        shard: String,
        #[source]
        source: redis::RedisError,
    },
    /// Redis answered something this crate cannot interpret (e.g. INFO without used_memory).
    #[error("shard {shard}: unexpected reply: {detail}")]
    Protocol { shard: String, detail: String },
}

/// Result of a shard command.
pub type Result<T, E = ShardError> = std::result::Result<T, E>;
