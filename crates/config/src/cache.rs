//! The cache in front of the datastores: which backend, how big things may get, and the
//! Redis shards when the backend is `redis`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::shard_addr::{redact_url, ShardAddr};

/// Which cache holds copies of media bytes and remote-media records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    /// No cache: every read goes to the datastore.
    None,
    /// In-process, byte-bounded, frequency-aware cache (see `cache.memory`).
    Memory,
    /// Sharded Redis (see `cache.redis`), shareable between several media repos.
    Redis,
}

impl CacheBackend {
    /// The backend's name as the config file spells it (`none`, `memory`, `redis`): also
    /// its `backend` metric label and the word logs and the status use.
    pub const fn name(self) -> &'static str {
        match self {
            CacheBackend::None => "none",
            CacheBackend::Memory => "memory",
            CacheBackend::Redis => "redis",
        }
    }
}

/// Cache settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `none`, `memory` or `redis`. Default `memory`. Changing it takes a restart.
    #[serde(default = "default_backend")]
    pub backend: CacheBackend,
    /// Blobs larger than this many bytes are never cached. Default 67108864 (64 MiB).
    #[serde(default = "default_max_object_bytes")]
    pub max_object_bytes: u64,
    /// Size in bytes of the chunks a cached blob is split into; at most
    /// `max_object_bytes`. Default 1048576 (1 MiB).
    #[serde(default = "default_chunk_bytes")]
    pub chunk_bytes: u64,
    /// Seconds cached blobs and records live. Default unset: no expiry, eviction is left
    /// to the cache's own policy (for Redis: `maxmemory-policy allkeys-lfu`).
    #[serde(default = "default_ttl_secs")]
    pub ttl_secs: Option<u64>,
    /// The in-process cache, used when `backend` is `memory`.
    #[serde(default)]
    pub memory: MemoryCacheConfig,
    /// The Redis shards, used when `backend` is `redis`.
    #[serde(default)]
    pub redis: RedisConfig,
}

fn default_backend() -> CacheBackend {
    CacheBackend::Memory
}

fn default_max_object_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_chunk_bytes() -> u64 {
    1024 * 1024
}

fn default_ttl_secs() -> Option<u64> {
    None
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            backend: default_backend(),
            max_object_bytes: default_max_object_bytes(),
            chunk_bytes: default_chunk_bytes(),
            ttl_secs: default_ttl_secs(),
            memory: MemoryCacheConfig::default(),
            redis: RedisConfig::default(),
        }
    }
}

/// The in-process cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryCacheConfig {
    /// Total bytes the in-process cache may hold. Default 268435456 (256 MiB).
    #[serde(default = "default_memory_max_bytes")]
    pub max_bytes: u64,
}

fn default_memory_max_bytes() -> u64 {
    256 * 1024 * 1024
}

impl Default for MemoryCacheConfig {
    fn default() -> Self {
        MemoryCacheConfig {
            max_bytes: default_memory_max_bytes(),
        }
    }
}

/// The Redis shards and how the media repo talks to them. Shards may change on a
/// config reload; keys are spread over them by rendezvous hashing on the shard names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The shards. Default none (required when `backend` is `redis`).
    #[serde(default)]
    pub shards: Vec<ShardConfig>,
    /// Redis database number used for shards whose address names none. Default 0.
    #[serde(default = "default_database_number")]
    pub database_number: i64,
    /// Milliseconds to wait for a TCP (and TLS) connection to a shard. Default 250.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Milliseconds to wait for a shard's reply before treating the command as failed
    /// (a cache miss). Default 500.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Milliseconds between health checks of each shard (a PING, and a read of the
    /// key-format marker `mr:format`, written back when missing). Default 250.
    #[serde(default = "default_health_interval_ms")]
    pub health_interval_ms: u64,
    /// Consecutive failed PINGs after which a shard is considered down and skipped.
    /// Default 2.
    #[serde(default = "default_down_after_failures")]
    pub down_after_failures: u32,
    /// Connections kept open to each shard, so one large value does not stall small
    /// ones. Default 2.
    #[serde(default = "default_connections_per_shard")]
    pub connections_per_shard: usize,
    /// Seconds after a change of the shard list during which a miss on a key's new shard
    /// reads the shard that owned it before the change (serving from it and copying the
    /// blob over), and a removed shard stays connected (draining) so its keys can still be
    /// read. 0 turns this off: keys that moved miss, removed shards are dropped at once.
    /// At most 86400 (a day). Default 3600.
    #[serde(default = "default_reshard_drain_secs")]
    pub reshard_drain_secs: u64,
}

fn default_database_number() -> i64 {
    0
}

fn default_connect_timeout_ms() -> u64 {
    250
}

fn default_response_timeout_ms() -> u64 {
    500
}

fn default_health_interval_ms() -> u64 {
    250
}

fn default_down_after_failures() -> u32 {
    2
}

fn default_connections_per_shard() -> usize {
    2
}

fn default_reshard_drain_secs() -> u64 {
    3600
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            shards: Vec::new(),
            database_number: default_database_number(),
            connect_timeout_ms: default_connect_timeout_ms(),
            response_timeout_ms: default_response_timeout_ms(),
            health_interval_ms: default_health_interval_ms(),
            down_after_failures: default_down_after_failures(),
            connections_per_shard: default_connections_per_shard(),
            reshard_drain_secs: default_reshard_drain_secs(),
        }
    }
}

/// One Redis shard. Both fields are required.
///
/// `Debug` shows the address with its password hidden, so configs can be logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Name of the shard. Keys are routed by hashing it, so renaming a shard moves its
    /// keys; an address can change without moving anything. Required.
    pub name: String,
    /// `redis://[user:pass@]host:port[/db]`, `rediss://...` for TLS, or a bare
    /// `host:port` as the Go media repo wrote it. Required.
    pub addr: String,
}

impl ShardConfig {
    /// The normalised `redis://` or `rediss://` URL to connect to, with a database path:
    /// a bare `host:port` becomes `redis://host:port/<database_number>`, a URL without a
    /// database path gets `/<database_number>`, a URL with one keeps its own.
    ///
    /// Meant for validated configs; an address that does not parse is returned trimmed
    /// but otherwise as written, so the Redis client reports it.
    pub fn connection_url(&self, database_number: i64) -> String {
        match ShardAddr::parse(&self.addr) {
            Ok(addr) => addr.connection_url(database_number),
            Err(_) => self.addr.trim().to_owned(),
        }
    }

    /// The address with any password replaced by `***`, for logs and status pages.
    pub fn redacted_addr(&self) -> String {
        redact_url(&self.addr)
    }

    /// A copy with the password hidden in the address, safe to display.
    pub fn redacted(&self) -> ShardConfig {
        ShardConfig {
            name: self.name.clone(),
            addr: self.redacted_addr(),
        }
    }
}

impl fmt::Debug for ShardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardConfig")
            .field("name", &self.name)
            .field("addr", &self.redacted_addr())
            .finish()
    }
}

impl fmt::Display for ShardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.redacted_addr())
    }
}
