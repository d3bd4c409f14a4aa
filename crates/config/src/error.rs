//! The one error type of this crate: what went wrong while reading, parsing, validating
//! or preparing a configuration, worded for the operator who has to fix the file.

use std::path::PathBuf;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The YAML is malformed or does not fit the schema (unknown key, wrong type...).
    /// `path_in_doc` is where in the document it happened, e.g. `cache.redis` or
    /// `homeservers[0]` (`.` for the top level).
    #[error("{origin}: {message}")]
    Parse {
        origin: String,
        path_in_doc: String,
        message: String,
    },

    /// The document parsed but its values make no sense together (duplicate shard
    /// names, an unparseable address, no homeserver, a zero timeout...). Every problem
    /// found is listed, separated by `; `.
    #[error("invalid configuration: {0}")]
    Invalid(String),

    /// A datastore directory could not be created or is not a directory.
    #[error("cannot prepare datastore directory {}: {source}", path.display())]
    Datastore {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Result of this crate's fallible operations.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;
