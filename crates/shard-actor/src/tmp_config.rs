//! TEMPORARY stand-in for `mr_config::{RedisConfig, ShardConfig}` while mr-config is being
//! written. TODO switch to mr_config: delete this file once mr-config is committed.

/// One Redis shard: a stable name (the hashing key) and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardConfig {
    pub name: String,
    pub addr: String,
}

impl ShardConfig {
    /// Normalised `redis://` / `rediss://` URL with the database number as path.
    pub fn connection_url(&self, database_number: i64) -> String {
        let addr = self.addr.trim();
        if !addr.contains("://") {
            return format!("redis://{addr}/{database_number}");
        }
        let (scheme, rest) = addr.split_once("://").unwrap_or(("redis", addr));
        match rest.split_once('/') {
            Some((authority, path)) if !path.is_empty() => format!("{scheme}://{authority}/{path}"),
            Some((authority, _)) => format!("{scheme}://{authority}/{database_number}"),
            None => format!("{scheme}://{rest}/{database_number}"),
        }
    }
}

/// Redis cache settings shared by every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub shards: Vec<ShardConfig>,
    pub database_number: i64,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    pub health_interval_ms: u64,
    pub down_after_failures: u32,
    pub connections_per_shard: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            shards: Vec::new(),
            database_number: 0,
            connect_timeout_ms: 250,
            response_timeout_ms: 500,
            health_interval_ms: 250,
            down_after_failures: 2,
            connections_per_shard: 2,
        }
    }
}
