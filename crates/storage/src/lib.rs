//! Storage for media-repo: media metadata in a SQL database (SQLite or Postgres, through
//! sqlx) and the bytes in content-addressed datastores.
//!
//! * [`Database`] — media rows and pending uploads (SQLite: one writer, group commit).
//! * [`FileDatastore`] / [`ObjectWriter`] — streaming, hashing, deduplicating object writes.
//! * [`content`] — claims on stored bytes, and deleting only what nothing refers to.
//! * [`purge`] — removing media rows in batches, last access, and the orphan-file sweep.
//! * [`quarantine`] — quarantined media, hashes and origins; protection.
//! * [`row_cache`] — the per-process media-row cache downloads read through.
//! * [`ids`] — media id generation and the allow-lists for ids and server names.

pub mod content;
mod database;
mod datastore;
pub mod error;
pub mod ids;
mod location;
mod pg_rows;
pub mod purge;
pub mod quarantine;
mod records;
pub mod row_cache;
mod sqlite_writer;
mod writer;

pub use database::{Database, ACQUIRE_TIMEOUT};
pub use datastore::FileDatastore;
pub use error::{Error, Result};
pub use ids::{is_valid_media_id, is_valid_server_name, random_media_id};
pub use purge::{PurgeScope, RemovedRows, SweepReport};
pub use records::{MediaRecord, PendingUpload, ThumbnailRecord};
pub use writer::{
    blocking_writes_running, ObjectWriter, StagedObject, StoredObject, MAX_BLOCKING_WRITES,
    WRITE_BATCH_BYTES,
};
