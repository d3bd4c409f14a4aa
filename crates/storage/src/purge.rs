//! Purge: which media rows go, removing them (with their thumbnail rows), recording when
//! media was last served, and sweeping files no row or claim refers to.
//!
//! Rows go first, files after. A process killed in between leaves files without rows
//! (found by [`sweep_orphans`]), never a row without its file. Files are deleted only
//! through `content::remove_unreferenced`, so content another row still uses, or an upload
//! has just claimed, stays.

use std::path::Path;

use crate::content;
use crate::database::{media_columns, with_pool, with_writer, Backend, Database};
use crate::datastore::FileDatastore;
use crate::error::{Error, Result};
use crate::location;
use crate::records::{MediaRecord, MediaRow, ThumbnailRecord, ThumbnailRow};

/// Media rows removed per transaction. Each batch's files are deleted before the next batch
/// is chosen, so a kill leaves at most this many rows' files for the orphan sweep, and one
/// transaction never holds SQLite's write lock long enough to stall uploads.
pub const PURGE_BATCH_ROWS: usize = 100;

/// Media rows whose last access one statement batch updates (see [`Database::record_access`]).
pub const ACCESS_BATCH_ROWS: usize = 500;

/// Which media a purge removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeScope {
    /// One media item, local or remote.
    Media { origin: String, media_id: String },
    /// Everything a user uploaded.
    User { user_id: String },
    /// Media marked quarantined (`quarantined_by` set).
    Quarantined,
    /// Media of other servers (origin not in `local_origins`, which are lowercase) not
    /// downloaded since `before_ms` (ms since the epoch); never-downloaded media counts from
    /// when it was stored.
    RemoteNotAccessedSince {
        local_origins: Vec<String>,
        before_ms: i64,
    },
}

/// A value bound to a scope's condition.
enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

impl PurgeScope {
    /// The scope's SQL condition on `media`, with placeholders numbered from `$first`, and
    /// the values to bind to them in order.
    fn condition(&self, first: usize) -> (String, Vec<Arg<'_>>) {
        match self {
            PurgeScope::Media { origin, media_id } => (
                format!("origin = ${first} AND media_id = ${}", first + 1),
                vec![Arg::Text(origin), Arg::Text(media_id)],
            ),
            PurgeScope::User { user_id } => {
                (format!("user_id = ${first}"), vec![Arg::Text(user_id)])
            }
            PurgeScope::Quarantined => ("quarantined_by IS NOT NULL".to_owned(), Vec::new()),
            PurgeScope::RemoteNotAccessedSince {
                local_origins,
                before_ms,
            } => {
                let mut sql = format!("COALESCE(last_access_ms, created_at_ms) < ${first}");
                let mut args = vec![Arg::Int(*before_ms)];
                if !local_origins.is_empty() {
                    let placeholders: Vec<String> = (0..local_origins.len())
                        .map(|i| format!("${}", first + 1 + i))
                        .collect();
                    sql.push_str(&format!(" AND origin NOT IN ({})", placeholders.join(", ")));
                    args.extend(local_origins.iter().map(|o| Arg::Text(o)));
                }
                (sql, args)
            }
        }
    }
}

/// Binds `args` to `$query` in order.
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Text(text) => query.bind(*text),
                Arg::Int(n) => query.bind(*n),
            };
        }
        query
    }};
}

const MEDIA_COLUMNS: &str = media_columns!();

const THUMBNAIL_COLUMNS: &str = "origin, media_id, width, height, method, animated, \
     content_type, out_width, out_height, size_bytes, sha256, datastore_id, location, \
     created_at_ms";

const UPDATE_LAST_ACCESS: &str = "UPDATE media SET last_access_ms = $3 \
     WHERE origin = $1 AND media_id = $2 \
     AND (last_access_ms IS NULL OR last_access_ms < $3)";

/// The rows one purge batch removed; their content is still on disk.
#[derive(Debug, Default)]
pub struct RemovedRows {
    pub media: Vec<MediaRecord>,
    pub thumbnails: Vec<ThumbnailRecord>,
}

impl Database {
    /// Removes up to [`PURGE_BATCH_ROWS`] media rows of `scope` and their thumbnail rows,
    /// in one transaction; empty when nothing (more) matches. Each row is removed only if
    /// it still matches when deleted (a media unquarantined or downloaded meanwhile stays).
    /// The content stays on disk: the caller removes what nothing refers to any more.
    pub async fn purge_batch(&self, scope: &PurgeScope) -> Result<RemovedRows> {
        let removed = self.remove_batch(scope).await;
        self.forget_changed(removed.as_ref().ok().map(|rows| rows.media.as_slice()));
        removed
    }

    /// [`Database::purge_batch`] without the row cache.
    async fn remove_batch(&self, scope: &PurgeScope) -> Result<RemovedRows> {
        let (condition, args) = scope.condition(1);
        let select = format!(
            "SELECT origin, media_id FROM media WHERE {condition} LIMIT {PURGE_BATCH_ROWS}"
        );
        let (keep, keep_args) = scope.condition(3);
        let delete_media = format!(
            "DELETE FROM media WHERE origin = $1 AND media_id = $2 AND {keep} \
             RETURNING {MEDIA_COLUMNS}"
        );
        let delete_thumbnails = format!(
            "DELETE FROM thumbnails WHERE origin = $1 AND media_id = $2 \
             RETURNING {THUMBNAIL_COLUMNS}"
        );
        let (media, thumbnails): (Vec<MediaRow>, Vec<ThumbnailRow>) = with_writer!(self, pool => {
            let keys: Vec<(String, String)> = bind_args!(sqlx::query_as(&select), &args)
                .fetch_all(pool)
                .await?;
            let mut media = Vec::new();
            let mut thumbnails = Vec::new();
            if !keys.is_empty() {
                let mut tx = pool.begin().await?;
                for (origin, media_id) in &keys {
                    let query = sqlx::query_as(&delete_media).bind(origin).bind(media_id);
                    let row: Option<MediaRow> =
                        bind_args!(query, &keep_args).fetch_optional(&mut *tx).await?;
                    if let Some(row) = row {
                        media.push(row);
                        let rows: Vec<ThumbnailRow> = sqlx::query_as(&delete_thumbnails)
                            .bind(origin)
                            .bind(media_id)
                            .fetch_all(&mut *tx)
                            .await?;
                        thumbnails.extend(rows);
                    }
                }
                tx.commit().await?;
            }
            (media, thumbnails)
        });
        Ok(RemovedRows {
            media: media
                .into_iter()
                .map(MediaRecord::try_from)
                .collect::<Result<_>>()?,
            thumbnails: thumbnails
                .into_iter()
                .map(ThumbnailRecord::try_from)
                .collect::<Result<_>>()?,
        })
    }

    /// Removes thumbnail rows whose media row is gone (a thumbnail generation that finished
    /// after its media was purged); their content is left for the caller, as in
    /// [`Database::purge_batch`].
    pub async fn purge_thumbnails_without_media(&self) -> Result<Vec<ThumbnailRecord>> {
        let delete = format!(
            "DELETE FROM thumbnails WHERE NOT EXISTS (SELECT 1 FROM media \
             WHERE media.origin = thumbnails.origin AND media.media_id = thumbnails.media_id) \
             RETURNING {THUMBNAIL_COLUMNS}"
        );
        let rows: Vec<ThumbnailRow> = with_writer!(self, pool => {
            sqlx::query_as(&delete).fetch_all(pool).await?
        });
        rows.into_iter().map(ThumbnailRecord::try_from).collect()
    }

    /// Records that these media were served at `now_ms`, in one transaction per
    /// [`ACCESS_BATCH_ROWS`] rows. A later time already recorded (by another process) is
    /// kept; media that no longer exists is skipped.
    pub async fn record_access(&self, media: &[(String, String)], now_ms: i64) -> Result<()> {
        for batch in media.chunks(ACCESS_BATCH_ROWS) {
            with_writer!(self, pool => {
                let mut tx = pool.begin().await?;
                for (origin, media_id) in batch {
                    sqlx::query(UPDATE_LAST_ACCESS)
                        .bind(origin)
                        .bind(media_id)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            });
        }
        Ok(())
    }

    /// When a media was last served as recorded so far (`None`: not since it was stored, or
    /// no such media). For tests and operators.
    pub async fn last_access_ms(&self, origin: &str, media_id: &str) -> Result<Option<i64>> {
        let value: Option<Option<i64>> = with_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT last_access_ms FROM media WHERE origin = $1 AND media_id = $2",
            )
            .bind(origin)
            .bind(media_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(value.flatten())
    }
}

/// What [`sweep_orphans`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Objects looked at.
    pub files_checked: u64,
    /// Objects no row or claim referred to, now deleted.
    pub files_removed: u64,
    pub bytes_removed: u64,
}

/// Deletes every object in `datastore` that no media row, thumbnail row or upload claim
/// refers to (each through `content::remove_unreferenced`, so an upload that claims the
/// bytes meanwhile keeps them); returns what it did and the hashes of what it deleted
/// (for cache eviction) through `removed`. Walks one top-level directory at a time on the
/// blocking pool, so memory stays bounded by the largest directory.
pub async fn sweep_orphans(
    db: &Database,
    datastore: &FileDatastore,
    mut removed: impl FnMut(&str),
) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    for top in top_level_dirs(datastore).await? {
        let root = datastore.root().to_owned();
        let objects = tokio::task::spawn_blocking(move || objects_under(&root, &top)).await??;
        for (location, size) in objects {
            report.files_checked += 1;
            if content::remove_unreferenced(db, datastore, &location).await? {
                report.files_removed += 1;
                report.bytes_removed += size;
                if let Some(sha256) = location.rsplit('/').next() {
                    removed(sha256);
                }
            }
        }
    }
    Ok(report)
}

/// The `ab` directories of the datastore (two lowercase hex digits), sorted.
async fn top_level_dirs(datastore: &FileDatastore) -> Result<Vec<String>> {
    let root = datastore.root().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut dirs: Vec<String> = read_dir_names(&root)?
            .into_iter()
            .filter(|name| is_hex_pair(name))
            .collect();
        dirs.sort();
        Ok(dirs)
    })
    .await?
}

/// Objects (location, size) under `root/top`: files named by a SHA-256 in the directory
/// its hash says. Anything else is not ours and is left alone. Blocking.
fn objects_under(root: &Path, top: &str) -> Result<Vec<(String, u64)>> {
    let mut objects = Vec::new();
    let top_dir = root.join(top);
    for second in read_dir_names(&top_dir)? {
        if !is_hex_pair(&second) {
            continue;
        }
        let dir = top_dir.join(&second);
        for name in read_dir_names(&dir)? {
            let Some(location) = location::location_for_checked(&name) else {
                continue;
            };
            if location != format!("{top}/{second}/{name}") {
                continue;
            }
            let path = dir.join(&name);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => objects.push((location, meta.len())),
                Ok(_) => {}
                // Deleted meanwhile (another purge): nothing to do.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
    }
    Ok(objects)
}

/// Names of the entries of `dir`; empty if it vanished meanwhile. Blocking.
fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

fn is_hex_pair(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}
