//! media-repo configuration: the YAML schema with its defaults, loading and validation,
//! and the difference between two configs for reloads (SIGHUP).
//!
//! Everything here is pure except [`Config::load`] (reads the file) and
//! [`Config::prepare_datastores`] (creates directories).
//!
//! ```
//! let config = mr_config::Config::from_yaml_str("cache: {backend: none}", "inline").unwrap();
//! assert_eq!(config.server.bind, "127.0.0.1:8000");
//! ```

mod auth;
mod cache;
mod config;
mod diff;
mod error;
mod federation;
mod go_redis;
mod homeserver;
mod media;
mod parse;
mod server;
mod shard_addr;
mod storage;
mod validate;

pub use auth::AuthConfig;
pub use cache::{CacheBackend, CacheConfig, MemoryCacheConfig, RedisConfig, ShardConfig};
pub use config::Config;
pub use diff::{diff, keep_restart_only_settings, ConfigDiff, ShardDiff};
pub use error::{ConfigError, Result};
pub use federation::FederationConfig;
pub use homeserver::HomeserverConfig;
pub use media::{
    DownloadsConfig, LegacyFreezeConfig, ThumbnailMethod, ThumbnailSize, ThumbnailsConfig,
    UploadsConfig,
};
pub use mr_federation::Cidr;
pub use server::{LoggingConfig, MetricsConfig, ServerConfig};
pub use shard_addr::redact_url;
pub use storage::{DatabaseConfig, DatastoreConfig, DatastoreKind};
pub use validate::MAX_RESHARD_DRAIN_SECS;
