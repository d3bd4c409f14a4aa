//! The ring actor's protocol: reconfiguration and status. Routing does not go through here
//! (see `RingHandle`).

use actix::Message;
use serde::Serialize;

use mr_config::RedisConfig;

/// Replace the shard set and settings: shards added are started, removed ones stopped, and
/// those whose address or settings changed restarted.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ApplyRedisConfig(pub RedisConfig);

/// Ask for every shard's name, address and health.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<ShardStatus>")]
pub struct Status;

/// One shard in a [`Status`] answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardStatus {
    pub name: String,
    /// The configured address with any password replaced by `***`.
    pub addr: String,
    /// Used: answers its health check and holds our key-format version.
    pub up: bool,
    /// Why the shard is down (the last error seen while down); `None` while it is up.
    pub last_error: Option<String>,
    /// The error that paused writes to the shard, while they are paused; `None` otherwise.
    pub write_error: Option<String>,
    /// `found X, expected Y` while the shard is not used because its key-format marker names
    /// another version (a media repo of another major version uses it); `None` otherwise.
    pub format_mismatch: Option<String>,
    /// Removed from the shard list, and kept connected only while the keys it holds are
    /// read and moved to their new shards (`cache.redis.reshard_drain_secs`).
    pub draining: bool,
}
