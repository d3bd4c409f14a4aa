//! Errors of the storage crate: one enum for the metadata database and the datastores,
//! so the web crate maps storage failures to Matrix error codes in one place.

use std::path::PathBuf;

/// Result of every fallible storage operation.
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A media row (or pending upload) with this `(origin, media_id)` already exists.
    #[error("media {origin}/{media_id} already exists")]
    AlreadyExists { origin: String, media_id: String },

    /// The upload's claim on its bytes was gone when its row was to be written (swept as
    /// stale, or lost with a database crash): the bytes may have been deleted since, so no
    /// row is written that could point at nothing.
    #[error("the content claim {claim_id} was gone when the media row was to be written")]
    ClaimLost { claim_id: String },

    /// `complete_pending` found no pending upload for this id (never created, already
    /// swept as expired, or completed by someone else).
    #[error("no pending upload for {origin}/{media_id}")]
    NoPendingUpload { origin: String, media_id: String },

    /// The object at this datastore location does not exist.
    #[error("object {0} not found in the datastore")]
    NotFound(String),

    /// A streamed object grew past the writer's limit; nothing was kept.
    #[error("object is larger than the limit of {max_bytes} bytes")]
    TooLarge { max_bytes: u64 },

    /// A location that is not of the generated `ab/cd/<sha256>` shape.
    #[error("invalid datastore location {0:?}")]
    InvalidLocation(String),

    /// The writer was already finished or failed; no more data is accepted.
    #[error("object writer is closed")]
    WriterClosed,

    /// The database URL names a backend this crate does not speak. Holds only the
    /// scheme, so a password in the URL never reaches a log.
    #[error("unsupported database url scheme {0:?} (expected sqlite: or postgres://)")]
    UnsupportedDatabase(String),

    /// A value that does not fit the column (or a stored value that does not fit the type).
    #[error("value out of range for {field}: {value}")]
    OutOfRange { field: &'static str, value: String },

    /// The SQLite file the database was opened from is no longer at its path (deleted
    /// or replaced): the open connections still work on the old file, but nothing written
    /// now would be there after a restart.
    #[error("the SQLite database file {} is gone or was replaced since it was opened", .0.display())]
    DatabaseFileGone(PathBuf),

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// A write grouped with others failed as a whole: SQLite's group commit (the
    /// transaction could not be committed, or a statement broke it) or a Postgres batch of
    /// upload rows without a connection. Nothing of it was kept (for a socket that broke
    /// after a Postgres commit, as for any statement, that cannot be known). Holds the
    /// message of the error the whole group got.
    #[error("database error: the write's group commit failed: {0}")]
    GroupCommit(String),

    /// A Postgres batch of upload rows committed, but its answer did not say which rows it
    /// wrote (`pg_rows.rs`); the upload is not reported as stored.
    #[error("database error: a batch write's outcome is unknown: {0}")]
    BatchOutcomeUnknown(String),

    /// A database writer task is gone (SQLite's writer or Postgres' upload-row batcher:
    /// the database was closed, or its runtime shut down).
    #[error("the database writer has stopped")]
    WriterStopped,

    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The blocking file task panicked or was cancelled.
    #[error("datastore background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    /// `writer()` was called outside a tokio runtime, so no blocking thread is available.
    #[error("no tokio runtime to run the datastore writer on")]
    NoRuntime,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
