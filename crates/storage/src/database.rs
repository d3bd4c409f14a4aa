//! The metadata database: media rows and pending (`/create`d) uploads, in SQLite (the
//! default, a file next to the datastore) or Postgres, chosen by URL.
//!
//! Every query is written once in the SQL both backends accept (`$n` placeholders work in
//! SQLite too) and expanded for each backend by [`with_pool!`] (reads), [`with_writer!`]
//! (writes) or [`write_job!`] / [`write_statement!`] (the small writes of the upload path),
//! so the two backends cannot drift apart. SQLite work runs on sqlx's per-connection worker
//! threads, never on the caller's async thread.
//!
//! SQLite has one writing connection (`sqlite_writer`: a queue and group commit instead of
//! writers polling a locked database); its other connections are `query_only`, so a write
//! that forgot to go through the writer fails loudly instead of contending.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::pg_rows::RowBatcher;
use crate::records::{
    self, MediaRecord, MediaRow, PendingRow, PendingUpload, ThumbnailRecord, ThumbnailRow,
};
use crate::row_cache::{self, MediaRowCache};
use crate::sqlite_writer::GroupWriter;

/// Schema migrations, embedded at compile time; sqlx records applied ones in
/// `_sqlx_migrations` (in the Postgres schema the URL's `search_path` selects).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How long a query waits for a free pool connection (and `connect` for the server to
/// come up) before failing, instead of queueing requests behind a dead database.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Metadata database handle; cheap to clone (it wraps a connection pool).
#[derive(Clone)]
pub struct Database {
    pub(crate) backend: Backend,
    /// The SQLite file as it was at connect; `None` for Postgres and in-memory SQLite.
    sqlite_file: Option<Arc<FileIdentity>>,
    /// Media rows downloads read (`media_row`), shared by every clone of this handle;
    /// every method below that changes a media row forgets it here.
    rows: Arc<MediaRowCache>,
    /// Postgres: the task that writes uploads' rows in batches (`pg_rows.rs`).
    pg_rows: Option<RowBatcher>,
}

/// Which file a path named when the database was opened. A SQLite file deleted (or
/// replaced) under a running server keeps working on the old inode through the open
/// connections, so a query alone cannot tell that the next restart would start empty.
#[derive(Debug)]
struct FileIdentity {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: PathBuf) -> std::io::Result<FileIdentity> {
        let meta = std::fs::metadata(&path)?;
        Ok(FileIdentity {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Blocking: one `stat`.
    fn check(&self) -> Result<()> {
        let gone = || Error::DatabaseFileGone(self.path.clone());
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => Ok(()),
            Ok(_) => Err(gone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(gone()),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }
}

#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(SqliteBackend),
    Postgres(PgPool),
}

/// A SQLite database's connections: readers, the one writer, and the group-commit queue
/// in front of the writer.
#[derive(Clone)]
pub(crate) struct SqliteBackend {
    /// `query_only` connections (for an in-memory database: the writer pool itself).
    pub(crate) read: SqlitePool,
    /// One connection, never closed while the database is open.
    pub(crate) write: SqlitePool,
    pub(crate) group: GroupWriter,
}

/// Runs `$body` with `$pool` bound to the pool reads use. The body is written once and
/// compiled per backend. Statements that write go through [`with_writer!`] or
/// [`write_job!`] instead (SQLite's reading connections refuse them).
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match &$db.backend {
            Backend::Sqlite(sqlite) => {
                let $pool = &sqlite.read;
                $body
            }
            Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Like [`with_pool!`], for statements that write: SQLite's `$pool` is the one-connection
/// writer pool, so the body waits its turn in the pool's queue. The body must not wait for
/// a [`write_job!`] (that needs the same connection).
macro_rules! with_writer {
    ($db:expr, $pool:ident => $body:expr) => {
        match &$db.backend {
            Backend::Sqlite(sqlite) => {
                let $pool = &sqlite.write;
                $body
            }
            Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_writer;

/// The SQLite side of [`write_job!`] and [`write_statement!`]: `$body` queued to the group
/// writer by its method `$run` (`run`, or `run_statement` for one statement).
macro_rules! sqlite_job {
    ($sqlite:expr, $run:ident, $conn:ident => $body:expr) => {
        $sqlite
            .group
            .$run(move |$conn| {
                Box::pin(async move {
                    let out: crate::error::Result<_> = $body;
                    out
                })
            })
            .await
    };
}
pub(crate) use sqlite_job;

/// A small write on the upload path, atomic on its own: `$body` (an expression of type
/// `Result<T>`) runs with `$conn` a `&mut` connection inside a transaction. SQLite: a job
/// of the group writer (its own savepoint, committed with whatever else is queued), so the
/// body may capture only owned values. Postgres: its own transaction on the pool.
macro_rules! write_job {
    ($db:expr, $conn:ident => $body:expr) => {
        match &$db.backend {
            Backend::Sqlite(sqlite) => $crate::database::sqlite_job!(sqlite, run, $conn => $body),
            Backend::Postgres(pool) => {
                async {
                    let mut tx = pool.begin().await?;
                    let $conn: &mut sqlx::PgConnection = &mut tx;
                    let out = async {
                        let out: crate::error::Result<_> = $body;
                        out
                    }
                    .await?;
                    // An error above drops the transaction: it rolls back.
                    tx.commit().await?;
                    Ok::<_, crate::error::Error>(out)
                }
                .await
            }
        }
    };
}

/// [`write_job!`] for a body of exactly one statement that cannot fail once its statement
/// succeeded (nothing fallible decoded from it): on Postgres it runs on a pooled connection
/// in autocommit (one round trip instead of three with BEGIN and COMMIT); on SQLite it is a
/// group-writer job without a savepoint of its own (one round trip instead of three).
macro_rules! write_statement {
    ($db:expr, $conn:ident => $body:expr) => {
        match &$db.backend {
            Backend::Sqlite(sqlite) => {
                $crate::database::sqlite_job!(sqlite, run_statement, $conn => $body)
            }
            Backend::Postgres(pool) => {
                async {
                    let mut pooled = pool.acquire().await?;
                    let $conn: &mut sqlx::PgConnection = &mut pooled;
                    let out: crate::error::Result<_> = $body;
                    out
                }
                .await
            }
        }
    };
}
pub(crate) use write_statement;

/// Binds a media row's columns in `media_columns!`'s order (one list for both call sites
/// and both backends).
macro_rules! bind_media {
    ($query:expr, $m:expr, $size:expr) => {
        $query
            .bind(&$m.origin)
            .bind(&$m.media_id)
            .bind(&$m.user_id)
            .bind(&$m.content_type)
            .bind(&$m.upload_name)
            .bind($size)
            .bind(&$m.sha256)
            .bind(&$m.datastore_id)
            .bind(&$m.location)
            .bind($m.created_at_ms)
            .bind(&$m.quarantined_by)
            .bind(i64::from($m.safe_from_quarantine))
    };
}
pub(crate) use bind_media;

/// Every column of a media row, in `MediaRow`'s order: one list for every query that reads
/// whole rows (here and in `quarantine.rs`).
macro_rules! media_columns {
    () => {
        "origin, media_id, user_id, content_type, upload_name, size_bytes, sha256, \
         datastore_id, location, created_at_ms, quarantined_by, safe_from_quarantine"
    };
}
pub(crate) use media_columns;

const INSERT_MEDIA: &str = concat!(
    "INSERT INTO media (",
    media_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
);

const SELECT_MEDIA: &str = concat!(
    "SELECT ",
    media_columns!(),
    " FROM media WHERE origin = $1 AND media_id = $2"
);

/// Refuses an id that is already a finished media item, so `/create` can never hand out
/// an id that would then be un-uploadable.
const INSERT_PENDING: &str = "INSERT INTO pending_uploads \
     (origin, media_id, user_id, created_at_ms, expires_at_ms) \
     SELECT $1, $2, $3, $4, $5 \
     WHERE NOT EXISTS (SELECT 1 FROM media WHERE origin = $1 AND media_id = $2)";

const SELECT_PENDING: &str = "SELECT origin, media_id, user_id, created_at_ms, expires_at_ms \
     FROM pending_uploads WHERE origin = $1 AND media_id = $2";

const COUNT_PENDING_FOR_USER: &str =
    "SELECT COUNT(*) FROM pending_uploads WHERE user_id = $1 AND expires_at_ms > $2";

/// Media rows plus upload claims that refer to one stored object.
const COUNT_LOCATION_REFERENCES: &str =
    "SELECT (SELECT COUNT(*) FROM media WHERE datastore_id = $1 AND location = $2) \
          + (SELECT COUNT(*) FROM thumbnails WHERE datastore_id = $1 AND location = $2) \
          + (SELECT COUNT(*) FROM content_claims WHERE datastore_id = $1 AND location = $2)";

const INSERT_THUMBNAIL: &str = "INSERT INTO thumbnails (origin, media_id, width, height, \
     method, animated, content_type, out_width, out_height, size_bytes, sha256, datastore_id, \
     location, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

const SELECT_THUMBNAILS: &str = "SELECT origin, media_id, width, height, method, animated, \
     content_type, out_width, out_height, size_bytes, sha256, datastore_id, location, \
     created_at_ms FROM thumbnails WHERE origin = $1 AND media_id = $2 AND method = $3 \
     AND animated = $4";

const INSERT_CLAIM: &str = "INSERT INTO content_claims \
     (claim_id, datastore_id, location, created_at_ms) VALUES ($1, $2, $3, $4)";

const DELETE_CLAIM: &str = "DELETE FROM content_claims WHERE claim_id = $1";

/// [`INSERT_CLAIM`] unless the bytes (`$5`, their SHA-256) may not be uploaded
/// (`quarantine::content_is_quarantined`): the check in the statement that claims, so an
/// upload pays one round trip for both.
const INSERT_CLAIM_UNLESS_QUARANTINED: &str = concat!(
    "INSERT INTO content_claims (claim_id, datastore_id, location, created_at_ms) ",
    "SELECT $1, $2, $3, $4 WHERE NOT ",
    crate::quarantine::content_is_quarantined!("$5")
);

/// Postgres: an upload's media row and its claim's release in one statement (autocommit:
/// one round trip instead of four for BEGIN, two statements and COMMIT). The row is written
/// only if the claim was still there to be deleted. Rows are written in batches
/// (`pg_rows.rs`); this is how a row of a batch Postgres refused is written on its own.
pub(crate) const INSERT_MEDIA_RELEASING_CLAIM: &str = concat!(
    "WITH claim AS (DELETE FROM content_claims WHERE claim_id = $13 RETURNING 1) ",
    "INSERT INTO media (",
    media_columns!(),
    ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM claim"
);

/// SQLite: an upload's media row, written only while its claim (`$13`) exists and marked
/// under a standing quarantine as it is written; it returns the row's `quarantined_by`, and
/// no row when the claim is gone.
const INSERT_CLAIMED_MEDIA_MARKED: &str = concat!(
    "INSERT INTO media (",
    media_columns!(),
    ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, ",
    crate::quarantine::standing_mark_of_new_row!(),
    ", $12 WHERE EXISTS (SELECT 1 FROM content_claims WHERE claim_id = $13) \
     RETURNING quarantined_by"
);

/// Postgres keeps upload claims in an unlogged table (no WAL): a transaction that only
/// writes such a table commits without waiting for a WAL flush, so the claim costs an
/// upload no flush of its own. A database crash empties the table; that is a claim lost in
/// a crash, which the row's write already handles (`Error::ClaimLost`: the upload fails, no
/// row points at bytes nothing protected). Altered here rather than in a migration because
/// SQLite has no such table kind; only a table still logged is altered.
const CLAIMS_UNLOGGED: &str = "DO $$ BEGIN \
     IF EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('content_claims') \
       AND relpersistence = 'p') THEN ALTER TABLE content_claims SET UNLOGGED; END IF; \
     END $$";

const DELETE_OLD_CLAIMS: &str = "DELETE FROM content_claims WHERE created_at_ms <= $1";

const DELETE_PENDING: &str = "DELETE FROM pending_uploads WHERE origin = $1 AND media_id = $2";

const DELETE_EXPIRED_PENDING: &str = "DELETE FROM pending_uploads WHERE expires_at_ms <= $1";

const COUNT_MEDIA: &str = "SELECT COUNT(*) FROM media";

impl Database {
    /// Connects (`sqlite:` file URL or `postgres://`/`postgresql://`) and applies pending
    /// migrations. SQLite: the file and its parent directory are created when missing and
    /// the database runs in WAL mode. Postgres: connection parameters in the URL are
    /// honoured, including `?options=-c search_path=NAME` to use a schema other than
    /// `public`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Database> {
        let max_connections = max_connections.max(1);
        let mut sqlite_file = None;
        let backend = if url.starts_with("sqlite:") {
            let (sqlite, file) = connect_sqlite(url, max_connections).await?;
            sqlite_file = file.map(Arc::new);
            Backend::Sqlite(sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?;
            Backend::Postgres(pool)
        } else {
            let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
            return Err(Error::UnsupportedDatabase(scheme.to_owned()));
        };
        let rows = Arc::new(MediaRowCache::new());
        let pg_rows = match &backend {
            Backend::Postgres(pool) => Some(RowBatcher::start(pool.clone(), rows.clone())),
            Backend::Sqlite(_) => None,
        };
        let db = Database {
            backend,
            sqlite_file,
            rows,
            pg_rows,
        };
        with_writer!(db, pool => MIGRATOR.run(pool).await?);
        if let Backend::Postgres(pool) = &db.backend {
            sqlx::query(CLAIMS_UNLOGGED).execute(pool).await?;
        }
        info!(backend = db.backend_name(), "metadata database ready");
        Ok(db)
    }

    /// `"sqlite"` or `"postgres"`, for logs and status pages.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Checks the database is usable: a trivial query answers and, for a SQLite file, the
    /// path still names the file opened at connect (see `FileIdentity`). For readiness
    /// probes; bounded by [`ACQUIRE_TIMEOUT`] when the pool has no free connection.
    pub async fn ping(&self) -> Result<()> {
        if let Some(file) = self.sqlite_file.clone() {
            tokio::task::spawn_blocking(move || file.check()).await??;
        }
        let one: i32 = with_pool!(self, pool => {
            sqlx::query_scalar("SELECT 1").fetch_one(pool).await?
        });
        debug_assert_eq!(one, 1);
        Ok(())
    }

    /// Closes the pools, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(sqlite) => {
                sqlite.read.close().await;
                sqlite.write.close().await;
            }
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    /// Inserts a media row; [`Error::AlreadyExists`] if `(origin, media_id)` is taken.
    pub async fn insert_media(&self, m: &MediaRecord) -> Result<()> {
        let size = records::db_size(m)?;
        let m = m.clone();
        write_statement!(self, conn => {
            bind_media!(sqlx::query(INSERT_MEDIA), m, size)
                .execute(&mut *conn)
                .await
                .map_err(|e| conflict_or(e, &m.origin, &m.media_id))?;
            Ok(())
        })
    }

    pub async fn get_media(&self, origin: &str, media_id: &str) -> Result<Option<MediaRecord>> {
        let row: Option<MediaRow> = with_pool!(self, pool => {
            sqlx::query_as(SELECT_MEDIA)
                .bind(origin)
                .bind(media_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(MediaRecord::try_from).transpose()
    }

    /// The media row for serving it, from this process's row cache when it read it less
    /// than [`row_cache::MEDIA_ROW_TTL`] ago (changes made through this handle are seen at
    /// once, see `row_cache.rs`); else from the database, and kept. A missing row is not kept.
    pub async fn media_row(
        &self,
        origin: &str,
        media_id: &str,
    ) -> Result<Option<Arc<MediaRecord>>> {
        let key = row_cache::key(origin, media_id);
        if let Some(row) = self.rows.get(&key) {
            return Ok(Some(row));
        }
        let epoch = self.rows.epoch();
        let Some(row) = self.get_media(origin, media_id).await? else {
            return Ok(None);
        };
        let row = Arc::new(row);
        self.rows.store(key, row.clone(), epoch);
        Ok(Some(row))
    }

    /// Forgets this process's cached copy of a media row (a download found its file gone:
    /// another process may have purged it since the row was read).
    pub fn forget_media_row(&self, origin: &str, media_id: &str) {
        self.rows.forget([(origin, media_id)]);
    }

    /// Forgets the cached copies of the rows a change returned, or of every row when it
    /// failed (it may have committed part of its work). See `row_cache.rs`.
    /// `None`: the change failed.
    pub(crate) fn forget_changed(&self, changed: Option<&[MediaRecord]>) {
        match changed {
            Some(rows) => self.rows.forget(
                rows.iter()
                    .map(|row| (row.origin.as_str(), row.media_id.as_str())),
            ),
            None => self.rows.forget_all(),
        }
    }

    /// Records a `/create`d id; [`Error::AlreadyExists`] if it is pending or already media.
    pub async fn create_pending(&self, p: &PendingUpload) -> Result<()> {
        let p = p.clone();
        write_statement!(self, conn => {
            let inserted = sqlx::query(INSERT_PENDING)
                .bind(&p.origin)
                .bind(&p.media_id)
                .bind(&p.user_id)
                .bind(p.created_at_ms)
                .bind(p.expires_at_ms)
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected());
            match inserted {
                Ok(0) => Err(already_exists(&p.origin, &p.media_id)),
                Ok(_) => Ok(()),
                Err(e) => Err(conflict_or(e, &p.origin, &p.media_id)),
            }
        })
    }

    /// The pending row, expired or not (the caller compares `expires_at_ms` with its clock).
    pub async fn get_pending(&self, origin: &str, media_id: &str) -> Result<Option<PendingUpload>> {
        let row: Option<PendingRow> = with_pool!(self, pool => {
            sqlx::query_as(SELECT_PENDING)
                .bind(origin)
                .bind(media_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(PendingUpload::from))
    }

    /// How many ids this user has created that are neither uploaded (those rows are gone)
    /// nor expired at `now_ms`: the number `/create`'s rate limit compares.
    pub async fn count_pending_for_user(&self, user_id: &str, now_ms: i64) -> Result<u64> {
        let n: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(COUNT_PENDING_FOR_USER)
                .bind(user_id)
                .bind(now_ms)
                .fetch_one(pool)
                .await?
        });
        Ok(records::count(n))
    }

    /// Turns a pending upload into media in one transaction: the media row is inserted
    /// first, so of two racing uploads to one id the loser gets [`Error::AlreadyExists`]
    /// (409 `M_CANNOT_OVERWRITE_MEDIA`); [`Error::NoPendingUpload`] if there was no pending
    /// row (never created, or swept). Expiry and ownership are the caller's checks.
    pub async fn complete_pending(&self, m: &MediaRecord) -> Result<()> {
        let size = records::db_size(m)?;
        let m = m.clone();
        // The job is atomic: an error rolls the media row back with it.
        write_job!(self, conn => {
            bind_media!(sqlx::query(INSERT_MEDIA), m, size)
                .execute(&mut *conn)
                .await
                .map_err(|e| conflict_or(e, &m.origin, &m.media_id))?;
            let removed = sqlx::query(DELETE_PENDING)
                .bind(&m.origin)
                .bind(&m.media_id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if removed == 0 {
                return Err(Error::NoPendingUpload {
                    origin: m.origin.clone(),
                    media_id: m.media_id.clone(),
                });
            }
            Ok(())
        })
    }

    /// Writes an upload's media row and drops its content claim in one atomic write (the
    /// row takes over the claim's protection of the bytes), then applies a standing
    /// quarantine to the row ([`Database::apply_standing_quarantine`]) and returns the mark.
    /// `completes_pending`: the row fills a `/create`d id, whose pending row goes in the same
    /// write ([`Database::complete_pending`], with its errors). On error no row was written
    /// by this call; the claim may still be there (the caller releases it).
    pub(crate) async fn insert_claimed_media(
        &self,
        m: &MediaRecord,
        claim_id: &str,
        completes_pending: bool,
    ) -> Result<Option<String>> {
        let size = records::db_size(m)?;
        let (m, claim_id) = (m.clone(), claim_id.to_owned());
        if let (Some(batcher), false) = (&self.pg_rows, completes_pending) {
            return batcher.write(m, size, claim_id).await;
        }
        if let (Backend::Sqlite(sqlite), false) = (&self.backend, completes_pending) {
            return sqlite_job!(sqlite, run_statement, conn => {
                insert_claimed_sqlite_row(conn, &m, size, &claim_id).await
            });
        }
        // SQLite has one writer, so a quarantine's two statements cannot interleave with
        // this job: marking inside it is as good as after it, and saves a commit. On
        // Postgres the mark must follow the row's commit (see `quarantine`'s module docs).
        let mark_in_job = matches!(self.backend, Backend::Sqlite(_));
        let (origin, media_id) = (m.origin.clone(), m.media_id.clone());
        let mark: Option<Option<String>> = write_job!(self, conn => {
            bind_media!(sqlx::query(INSERT_MEDIA), m, size)
                .execute(&mut *conn)
                .await
                .map_err(|e| conflict_or(e, &m.origin, &m.media_id))?;
            if completes_pending {
                let removed = sqlx::query(DELETE_PENDING)
                    .bind(&m.origin)
                    .bind(&m.media_id)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if removed == 0 {
                    return Err(Error::NoPendingUpload {
                        origin: m.origin.clone(),
                        media_id: m.media_id.clone(),
                    });
                }
            }
            let released = sqlx::query(DELETE_CLAIM)
                .bind(&claim_id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if released == 0 {
                return Err(Error::ClaimLost { claim_id: claim_id.clone() });
            }
            if !mark_in_job {
                return Ok(None);
            }
            let mark = sqlx::query_scalar(crate::quarantine::APPLY_STANDING)
                .bind(&m.origin)
                .bind(&m.media_id)
                .fetch_optional(&mut *conn)
                .await?;
            Ok(mark)
        })?;
        if mark_in_job {
            Ok(mark.flatten())
        } else {
            self.apply_standing_quarantine(&origin, &media_id).await
        }
    }

    /// Removes pending uploads whose expiry is at or before `now_ms`; returns how many.
    pub async fn delete_expired_pending(&self, now_ms: i64) -> Result<u64> {
        let removed = with_writer!(self, pool => {
            sqlx::query(DELETE_EXPIRED_PENDING)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed)
    }

    /// Whether any media row or upload claim refers to an object: content is stored once
    /// per hash, so an object may only be deleted when this says no (and only the way
    /// `content::remove_unreferenced` does it).
    pub async fn location_in_use(&self, datastore_id: &str, location: &str) -> Result<bool> {
        let n: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(COUNT_LOCATION_REFERENCES)
                .bind(datastore_id)
                .bind(location)
                .fetch_one(pool)
                .await?
        });
        Ok(n > 0)
    }

    /// Records that an upload is about to rely on the object at `location`, unless the
    /// bytes it holds (`sha256`) are quarantined: then nothing is written and the answer is
    /// false. One round trip for the check and the claim.
    pub(crate) async fn insert_claim_unless_quarantined(
        &self,
        claim_id: &str,
        datastore_id: &str,
        location: &str,
        sha256: &str,
        now_ms: i64,
    ) -> Result<bool> {
        let (claim_id, datastore_id, location, sha256) = (
            claim_id.to_owned(),
            datastore_id.to_owned(),
            location.to_owned(),
            sha256.to_owned(),
        );
        write_statement!(self, conn => {
            let claimed = sqlx::query(INSERT_CLAIM_UNLESS_QUARANTINED)
                .bind(claim_id)
                .bind(datastore_id)
                .bind(location)
                .bind(now_ms)
                .bind(sha256)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(claimed == 1)
        })
    }

    /// Records that an upload is about to rely on the object at `location`.
    pub(crate) async fn insert_claim(
        &self,
        claim_id: &str,
        datastore_id: &str,
        location: &str,
        now_ms: i64,
    ) -> Result<()> {
        let (claim_id, datastore_id, location) = (
            claim_id.to_owned(),
            datastore_id.to_owned(),
            location.to_owned(),
        );
        write_statement!(self, conn => {
            sqlx::query(INSERT_CLAIM)
                .bind(claim_id)
                .bind(datastore_id)
                .bind(location)
                .bind(now_ms)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }

    pub(crate) async fn delete_claim(&self, claim_id: &str) -> Result<()> {
        let claim_id = claim_id.to_owned();
        write_statement!(self, conn => {
            sqlx::query(DELETE_CLAIM).bind(claim_id).execute(&mut *conn).await?;
            Ok(())
        })
    }

    /// Removes claims made at or before `before_ms` (left by processes that crashed
    /// between storing bytes and writing their row); returns how many.
    pub async fn delete_claims_made_before(&self, before_ms: i64) -> Result<u64> {
        let removed = with_writer!(self, pool => {
            sqlx::query(DELETE_OLD_CLAIMS)
                .bind(before_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(removed)
    }

    /// Records a generated thumbnail; [`Error::AlreadyExists`] if that size was stored by
    /// someone else meanwhile.
    pub async fn insert_thumbnail(&self, t: &ThumbnailRecord) -> Result<()> {
        let size = i64::try_from(t.size_bytes).map_err(|_| Error::OutOfRange {
            field: "thumbnails.size_bytes",
            value: t.size_bytes.to_string(),
        })?;
        let t = t.clone();
        write_statement!(self, conn => {
            sqlx::query(INSERT_THUMBNAIL)
                .bind(&t.origin)
                .bind(&t.media_id)
                .bind(i64::from(t.width))
                .bind(i64::from(t.height))
                .bind(&t.method)
                .bind(i64::from(t.animated))
                .bind(&t.content_type)
                .bind(i64::from(t.out_width))
                .bind(i64::from(t.out_height))
                .bind(size)
                .bind(&t.sha256)
                .bind(&t.datastore_id)
                .bind(&t.location)
                .bind(t.created_at_ms)
                .execute(&mut *conn)
                .await
                .map_err(|e| conflict_or(e, &t.origin, &t.media_id))?;
            Ok(())
        })
    }

    /// Every stored thumbnail of one media for `method` and `animated`.
    pub async fn thumbnails_of(
        &self,
        origin: &str,
        media_id: &str,
        method: &str,
        animated: bool,
    ) -> Result<Vec<ThumbnailRecord>> {
        let rows: Vec<ThumbnailRow> = with_pool!(self, pool => {
            sqlx::query_as(SELECT_THUMBNAILS)
                .bind(origin)
                .bind(media_id)
                .bind(method)
                .bind(i64::from(animated))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(ThumbnailRecord::try_from).collect()
    }

    /// Number of media rows (tests and metrics).
    pub async fn media_count(&self) -> Result<u64> {
        let n: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(COUNT_MEDIA).fetch_one(pool).await?
        });
        Ok(records::count(n))
    }
}

/// Opens the writer connection (creating the file, applying WAL mode), the reading pool and
/// the group writer, and, for a file database, records which file its path names.
async fn connect_sqlite(
    url: &str,
    max_connections: u32,
) -> Result<(SqliteBackend, Option<FileIdentity>)> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        // WAL lets downloads read while an upload commits. `synchronous` stays at sqlx's
        // FULL: an acknowledged upload must survive a power cut (group commit, not a
        // weaker sync, is what keeps many small commits cheap).
        .journal_mode(SqliteJournalMode::Wal);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let path = options.get_filename().to_owned();
    if !in_memory {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
        }
    }
    // The writer's connection is kept for the pool's whole life: it is the only one that
    // writes, and while it is open the WAL files stay, so readers never have to recover.
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.clone())
        .await?;
    let read = if in_memory {
        // Each connection to `:memory:` would be its own database: one pool does both.
        write.clone()
    } else {
        SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.pragma("query_only", "ON"))
            .await?
    };
    // The writer pool opened (and so created) the file before returning.
    let file = if in_memory {
        None
    } else {
        Some(FileIdentity::of(path.clone()).map_err(|e| Error::io(path, e))?)
    };
    let group = GroupWriter::start(write.clone());
    Ok((SqliteBackend { read, write, group }, file))
}

pub(crate) fn already_exists(origin: &str, media_id: &str) -> Error {
    Error::AlreadyExists {
        origin: origin.to_owned(),
        media_id: media_id.to_owned(),
    }
}

/// A unique-key violation becomes [`Error::AlreadyExists`]; anything else stays a database error.
pub(crate) fn conflict_or(e: sqlx::Error, origin: &str, media_id: &str) -> Error {
    match e.as_database_error() {
        Some(db) if db.is_unique_violation() => already_exists(origin, media_id),
        _ => Error::Database(e),
    }
}

/// [`Database::insert_claimed_media`] on SQLite, as a group-writer job without a savepoint:
/// two round trips to the connection's thread instead of five (savepoint, insert, claim
/// release, mark, release). The insert is the job's one deciding statement: it writes the
/// row only while the claim exists and marks it under a standing quarantine in the same
/// statement. Releasing the claim afterwards changes nothing the caller relies on: should
/// it fail, the row already protects the bytes and the claim expires on its own.
async fn insert_claimed_sqlite_row(
    conn: &mut sqlx::SqliteConnection,
    m: &MediaRecord,
    size: i64,
    claim_id: &str,
) -> Result<Option<String>> {
    let written: Option<Option<String>> =
        bind_media!(sqlx::query_scalar(INSERT_CLAIMED_MEDIA_MARKED), m, size)
            .bind(claim_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| conflict_or(e, &m.origin, &m.media_id))?;
    let Some(mark) = written else {
        return Err(Error::ClaimLost {
            claim_id: claim_id.to_owned(),
        });
    };
    if let Err(err) = sqlx::query(DELETE_CLAIM)
        .bind(claim_id)
        .execute(&mut *conn)
        .await
    {
        warn!(error = %err, claim = %claim_id, "could not release a content claim after its row; it expires on its own");
    }
    // A row that arrived with a mark of its own was not marked by a standing quarantine.
    Ok(if m.quarantined_by.is_some() {
        None
    } else {
        mark
    })
}
