//! The whole configuration and its lifecycle: defaults, loading a file, and preparing
//! the datastore directories it names.

use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::auth::AuthConfig;
use crate::cache::CacheConfig;
use crate::error::ConfigError;
use crate::federation::FederationConfig;
use crate::homeserver::{default_homeservers, HomeserverConfig};
use crate::media::{DownloadsConfig, ThumbnailsConfig, UploadsConfig};
use crate::server::{LoggingConfig, MetricsConfig, ServerConfig};
use crate::storage::{default_datastores, DatabaseConfig, DatastoreConfig, DatastoreKind};

/// Everything the media repo is configured with. Every key has a default, so an empty
/// file is a working development setup.
///
/// Besides these sections a file may hold the Go media repo's top-level `redis:` block
/// (`enabled`, `databaseNumber`, `shards`); it is folded into `cache` while loading.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The public HTTP listener and how long a stop may drain it.
    pub server: ServerConfig,
    /// The operators' listener (`/metrics`, `/_media_repo/v1/cache`).
    pub metrics: MetricsConfig,
    /// The homeservers served. Default: one, `localhost:8008` at `http://127.0.0.1:8008`.
    pub homeservers: Vec<HomeserverConfig>,
    /// Matrix user ids allowed to use the admin API, besides users their homeserver reports
    /// as admins. Each must be a user of a configured homeserver. Default: none.
    pub admins: Vec<String>,
    /// The metadata database.
    pub database: DatabaseConfig,
    /// Where media bytes are stored. Default: one `file` datastore `default` at
    /// `./data/media`. Changing the list takes a restart.
    pub datastores: Vec<DatastoreConfig>,
    /// Upload limits.
    pub uploads: UploadsConfig,
    /// Download limits and the legacy-endpoint freeze.
    pub downloads: DownloadsConfig,
    /// Thumbnail generation.
    pub thumbnails: ThumbnailsConfig,
    /// Token checks against the homeserver.
    pub auth: AuthConfig,
    /// Outgoing federation: address allow-list, extra CA, timeouts.
    pub federation: FederationConfig,
    /// The cache in front of the datastores.
    pub cache: CacheConfig,
    /// Log output.
    pub logging: LoggingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            metrics: MetricsConfig::default(),
            homeservers: default_homeservers(),
            admins: Vec::new(),
            database: DatabaseConfig::default(),
            datastores: default_datastores(),
            uploads: UploadsConfig::default(),
            downloads: DownloadsConfig::default(),
            thumbnails: ThumbnailsConfig::default(),
            auth: AuthConfig::default(),
            federation: FederationConfig::default(),
            cache: CacheConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

impl Config {
    /// The configuration used when no file is given: one local homeserver
    /// (`localhost:8008`), SQLite and a file datastore under `./data`, in-memory cache.
    pub fn embedded_default() -> Config {
        Config::default()
    }

    /// Parses and validates YAML. `origin` names the text in error messages (usually
    /// the file path). Touches no filesystem.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config = crate::parse::parse(text, origin)?;
        config.validate().map_err(|err| match err {
            ConfigError::Invalid(problems) => ConfigError::Invalid(format!("{origin}: {problems}")),
            other => other,
        })?;
        Ok(config)
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml_str(&text, &path.display().to_string())
    }

    /// Checks that values make sense on their own and together; every problem found is
    /// reported in one `ConfigError::Invalid`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = crate::validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("; ")))
        }
    }

    /// Creates every datastore directory that does not exist yet, so a bad path fails at
    /// startup rather than on the first upload.
    pub fn prepare_datastores(&self) -> Result<(), ConfigError> {
        for store in &self.datastores {
            match store.kind {
                DatastoreKind::File => {
                    let path = &store.path;
                    let datastore_err = |source| ConfigError::Datastore {
                        path: path.clone(),
                        source,
                    };
                    fs::create_dir_all(path).map_err(datastore_err)?;
                    // create_dir_all accepts an existing path without saying what it is.
                    let meta = fs::metadata(path).map_err(datastore_err)?;
                    if !meta.is_dir() {
                        return Err(datastore_err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            "exists and is not a directory",
                        )));
                    }
                    tracing::debug!(id = %store.id, path = %path.display(), "datastore ready");
                }
            }
        }
        Ok(())
    }
}
