//! How one shard actor connects and decides it is healthy, derived from the Redis config.

use std::time::Duration;

use mr_config::{RedisConfig, ShardConfig};

/// Everything a shard actor needs to know; two shards with equal settings are interchangeable,
/// so the ring restarts an actor exactly when these change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSettings {
    /// Shard name from the config: the rendezvous-hashing identity and the metrics label.
    pub name: String,
    /// Normalised `redis://` or `rediss://` URL including the database number.
    pub url: String,
    /// Bound on one TCP/TLS connect (+ handshake) attempt.
    pub connect_timeout: Duration,
    /// Bound on every command, PING included.
    pub response_timeout: Duration,
    /// How often the actor PINGs its server.
    pub health_interval: Duration,
    /// Consecutive failed PINGs (or timed-out commands) before the shard is marked down.
    pub down_after_failures: u32,
    /// Multiplexed connections kept to the server; commands use them round-robin so a large
    /// value in flight on one does not stall small ones.
    pub connections: usize,
}

impl ShardSettings {
    /// Settings of `shard` under the shared `redis` settings. Zero values are raised to the
    /// smallest sensible ones so a careless config cannot make the actor spin or never connect.
    pub fn from_config(shard: &ShardConfig, redis: &RedisConfig) -> ShardSettings {
        ShardSettings {
            name: shard.name.clone(),
            url: shard.connection_url(redis.database_number),
            connect_timeout: Duration::from_millis(redis.connect_timeout_ms.max(1)),
            response_timeout: Duration::from_millis(redis.response_timeout_ms.max(1)),
            health_interval: Duration::from_millis(redis.health_interval_ms.max(10)),
            down_after_failures: redis.down_after_failures.max(1),
            connections: redis.connections_per_shard.max(1),
        }
    }
}
