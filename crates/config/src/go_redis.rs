//! The Go media repo's top-level `redis:` block, accepted so an operator can carry their
//! shard list over unchanged. It is folded into `cache.backend` / `cache.redis`.
//!
//! ```yaml
//! redis:
//!   enabled: true
//!   databaseNumber: 0
//!   shards:
//!     - name: server1
//!       addr: ":7000"
//! ```

use serde::Deserialize;

use crate::cache::{CacheBackend, CacheConfig, ShardConfig};

/// The block as the Go media repo spells it (camelCase).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct GoRedisBlock {
    /// When false the block is ignored, as the Go repo did.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub database_number: Option<i64>,
    #[serde(default)]
    pub shards: Vec<ShardConfig>,
}

/// Which `cache` keys the document set explicitly, so the Go block can tell a
/// conflicting value from a default it may override.
#[derive(Debug, Default)]
pub(crate) struct ExplicitCacheKeys {
    pub backend: bool,
    pub database_number: bool,
}

impl GoRedisBlock {
    /// Folds the block into `cache`, or explains the conflict with `cache.*`.
    pub(crate) fn apply(
        self,
        cache: &mut CacheConfig,
        explicit: &ExplicitCacheKeys,
    ) -> Result<(), String> {
        if !self.shards.is_empty() && !cache.redis.shards.is_empty() {
            return Err(
                "shards are listed both in the Go-style `redis.shards` and in \
                 `cache.redis.shards` (keep one list)"
                    .to_owned(),
            );
        }
        if !self.enabled {
            return Ok(());
        }
        if explicit.backend && cache.backend != CacheBackend::Redis {
            return Err(format!(
                "`redis.enabled` is true but `cache.backend` is `{}` (remove one of them)",
                cache.backend.name()
            ));
        }
        if let Some(db) = self.database_number {
            if explicit.database_number && cache.redis.database_number != db {
                return Err(format!(
                    "`redis.databaseNumber` ({db}) and `cache.redis.database_number` ({}) \
                     disagree (remove one of them)",
                    cache.redis.database_number
                ));
            }
            cache.redis.database_number = db;
        }
        if !self.shards.is_empty() {
            cache.redis.shards = self.shards;
        }
        cache.backend = CacheBackend::Redis;
        Ok(())
    }
}
