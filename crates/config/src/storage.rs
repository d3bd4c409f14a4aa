//! Where metadata (the database) and media bytes (datastores) are kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The metadata database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:` or `postgres(ql)://` URL. Default `sqlite://./data/media-repo.db`
    /// (a file next to the process, nothing to install). Changing it takes a restart.
    #[serde(default = "default_database_url")]
    pub url: String,
    /// Largest number of pooled database connections. Default 10. Changing it takes a
    /// restart.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_database_url() -> String {
    "sqlite://./data/media-repo.db".to_owned()
}

fn default_max_connections() -> u32 {
    10
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: default_database_url(),
            max_connections: default_max_connections(),
        }
    }
}

/// Kinds of datastore. Only local files for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatastoreKind {
    /// A directory on the local filesystem.
    File,
}

/// One place media bytes are stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreConfig {
    /// Stable identifier recorded with every stored object; never change it once media
    /// has been stored. Required.
    pub id: String,
    /// Kind of store. Default `file`.
    #[serde(default = "default_datastore_kind")]
    pub kind: DatastoreKind,
    /// Directory of a `file` datastore; created at startup if missing. Required.
    pub path: PathBuf,
}

fn default_datastore_kind() -> DatastoreKind {
    DatastoreKind::File
}

/// The datastore list used when the config file names none.
pub(crate) fn default_datastores() -> Vec<DatastoreConfig> {
    vec![DatastoreConfig {
        id: "default".to_owned(),
        kind: DatastoreKind::File,
        path: PathBuf::from("./data/media"),
    }]
}
