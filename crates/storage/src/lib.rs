//! Storage for media-repo: media metadata in a SQL database (SQLite or Postgres, through
//! sqlx) and the bytes in content-addressed datastores.
//!
//! * [`Database`] — media rows and pending uploads.
//! * [`FileDatastore`] / [`ObjectWriter`] — streaming, hashing, deduplicating object writes.
//! * [`ids`] — media id generation and the allow-lists for ids and server names.

mod database;
mod datastore;
pub mod error;
pub mod ids;
mod location;
mod records;
mod writer;

pub use database::{Database, ACQUIRE_TIMEOUT};
pub use datastore::{FileDatastore, STALE_TEMP_AGE};
pub use error::{Error, Result};
pub use ids::{is_valid_media_id, is_valid_server_name, random_media_id};
pub use records::{MediaRecord, PendingUpload};
pub use writer::{ObjectWriter, StoredObject, WRITE_QUEUE_CHUNKS};
