//! Quarantine in the metadata database: marking media (by id, uploader, origin server or
//! content hash), the standing hash and origin quarantines that later media inherits, and
//! protection ("safe from quarantine", as in Synapse).
//!
//! `media.quarantined_by` is what every serving path reads from the row it already has, so
//! serving costs no extra query. Its values (migration 0004): an admin's user id, or the
//! markers [`HASH_MARKER`]`<sha256>` and [`ORIGIN_MARKER`]`<server>`. Protected media is
//! never marked; unquarantining a hash or an origin clears only the marks it made.
//!
//! Media that arrives while a hash or origin is being quarantined: the quarantine first
//! commits its `quarantined_hashes` / `quarantined_origins` row, then marks existing media in
//! a separate statement; a writer inserts its media row first, then calls
//! [`Database::apply_standing_quarantine`]. Each side's second statement sees the other's
//! committed first one unless the other had not started yet, so no new row escapes both.
//! (An upload's row on SQLite is marked in the same write that inserts it: SQLite's one
//! writer runs the quarantine's statements wholly before or after that write.)

use crate::database::{media_columns, with_pool, with_writer, write_statement, Backend, Database};
use crate::error::Result;
use crate::records::{self, MediaRecord, MediaRow};

/// `quarantined_by` prefix of media quarantined through its content hash.
pub const HASH_MARKER: &str = "hash:";
/// `quarantined_by` prefix of media quarantined through its origin server.
pub const ORIGIN_MARKER: &str = "origin:";

/// Most media one list page returns (`limit` is clamped to it).
pub const MAX_PAGE: u64 = 1000;

/// What a user's media list is sorted by (Synapse's `order_by` values that we have columns
/// for). A closed set: the column name never comes from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaOrder {
    MediaId,
    UploadName,
    CreatedTs,
    MediaLength,
    MediaType,
    QuarantinedBy,
    SafeFromQuarantine,
}

impl MediaOrder {
    /// Synapse's name for the order (`order_by=`), or None for one we do not know.
    pub fn parse(name: &str) -> Option<MediaOrder> {
        Some(match name {
            "media_id" => MediaOrder::MediaId,
            "upload_name" => MediaOrder::UploadName,
            // We keep no separate access time; a media's last access is its upload here.
            "created_ts" | "last_access_ts" => MediaOrder::CreatedTs,
            "media_length" => MediaOrder::MediaLength,
            "media_type" => MediaOrder::MediaType,
            "quarantined_by" => MediaOrder::QuarantinedBy,
            "safe_from_quarantine" => MediaOrder::SafeFromQuarantine,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            MediaOrder::MediaId => "media_id",
            MediaOrder::UploadName => "upload_name",
            MediaOrder::CreatedTs => "created_at_ms",
            MediaOrder::MediaLength => "size_bytes",
            MediaOrder::MediaType => "content_type",
            MediaOrder::QuarantinedBy => "quarantined_by",
            MediaOrder::SafeFromQuarantine => "safe_from_quarantine",
        }
    }
}

const MARK_ONE: &str = concat!(
    "UPDATE media SET quarantined_by = $3 WHERE origin = $1 AND media_id = $2 \
     AND safe_from_quarantine = 0 AND quarantined_by IS NULL RETURNING ",
    media_columns!()
);

const UNMARK_ONE: &str = concat!(
    "UPDATE media SET quarantined_by = NULL WHERE origin = $1 AND media_id = $2 \
     AND quarantined_by IS NOT NULL RETURNING ",
    media_columns!()
);

const MARK_USER: &str = concat!(
    "UPDATE media SET quarantined_by = $2 WHERE user_id = $1 \
     AND safe_from_quarantine = 0 AND quarantined_by IS NULL RETURNING ",
    media_columns!()
);

const INSERT_HASH: &str = "INSERT INTO quarantined_hashes (sha256, quarantined_by, created_at_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING";

const MARK_HASH: &str = concat!(
    "UPDATE media SET quarantined_by = $2 WHERE sha256 = $1 \
     AND safe_from_quarantine = 0 AND quarantined_by IS NULL RETURNING ",
    media_columns!()
);

const DELETE_HASH: &str = "DELETE FROM quarantined_hashes WHERE sha256 = $1";

const INSERT_ORIGIN: &str = "INSERT INTO quarantined_origins \
     (origin, quarantined_by, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT (origin) DO NOTHING";

const MARK_ORIGIN: &str = concat!(
    "UPDATE media SET quarantined_by = $2 WHERE origin = $1 \
     AND safe_from_quarantine = 0 AND quarantined_by IS NULL RETURNING ",
    media_columns!()
);

const DELETE_ORIGIN: &str = "DELETE FROM quarantined_origins WHERE origin = $1";

/// Clears the marks one hash or origin quarantine made (`$1` is the full marker).
const UNMARK_BY_MARKER: &str = concat!(
    "UPDATE media SET quarantined_by = NULL WHERE quarantined_by = $1 RETURNING ",
    media_columns!()
);

const HASH_QUARANTINED: &str = "SELECT COUNT(*) FROM quarantined_hashes WHERE sha256 = $1";
/// The SQL condition "the bytes whose SHA-256 is parameter `$sha` may not be uploaded":
/// under a hash quarantine, or held by any quarantined media (as Synapse, which quarantines
/// a new upload of bytes some quarantined media holds). One home for the test, which the
/// upload's claim (`database.rs`) and [`Database::is_content_quarantined`] both make.
macro_rules! content_is_quarantined {
    ($sha:literal) => {
        concat!(
            "(EXISTS (SELECT 1 FROM quarantined_hashes WHERE sha256 = ",
            $sha,
            ") OR EXISTS (SELECT 1 FROM media WHERE sha256 = ",
            $sha,
            " AND quarantined_by IS NOT NULL))"
        )
    };
}
pub(crate) use content_is_quarantined;

const CONTENT_QUARANTINED: &str = concat!("SELECT COUNT(*) WHERE ", content_is_quarantined!("$1"));
const ORIGIN_QUARANTINED: &str = "SELECT COUNT(*) FROM quarantined_origins WHERE origin = $1";

/// The `SET` and the condition of [`APPLY_STANDING`] and [`APPLY_STANDING_TO_BATCH`]: the
/// mark a row gets under a standing quarantine (the origin's marker wins when both are), and
/// when it gets one.
macro_rules! standing_mark {
    () => {
        "UPDATE media SET quarantined_by = CASE \
           WHEN EXISTS (SELECT 1 FROM quarantined_origins q WHERE q.origin = media.origin) \
           THEN 'origin:' || media.origin ELSE 'hash:' || media.sha256 END "
    };
}
macro_rules! standing_condition {
    () => {
        " AND media.safe_from_quarantine = 0 AND media.quarantined_by IS NULL \
           AND (EXISTS (SELECT 1 FROM quarantined_origins q WHERE q.origin = media.origin) \
             OR EXISTS (SELECT 1 FROM quarantined_hashes h WHERE h.sha256 = media.sha256)) "
    };
}

/// The mark [`APPLY_STANDING`] would give a row it is about to write, as the value of its
/// `quarantined_by` column: the same rules, for the row's parameters (`$1` origin, `$7`
/// SHA-256, `$11` its own mark, `$12` safe from quarantine) instead of a stored row. For
/// SQLite, whose single writer lets nothing come between a row's insert and its mark.
macro_rules! standing_mark_of_new_row {
    () => {
        "CASE WHEN $11 IS NOT NULL OR $12 <> 0 THEN $11 \
           WHEN EXISTS (SELECT 1 FROM quarantined_origins q WHERE q.origin = $1) \
           THEN 'origin:' || $1 \
           WHEN EXISTS (SELECT 1 FROM quarantined_hashes h WHERE h.sha256 = $7) \
           THEN 'hash:' || $7 END"
    };
}
pub(crate) use standing_mark_of_new_row;

/// Marks a just-written row if its origin or content hash is under a standing quarantine.
pub(crate) const APPLY_STANDING: &str = concat!(
    standing_mark!(),
    "WHERE origin = $1 AND media_id = $2",
    standing_condition!(),
    "RETURNING quarantined_by"
);

/// [`APPLY_STANDING`] for a batch of just-written rows (Postgres; `$1` origins, `$2`
/// media ids): returns each row it marked with its mark.
pub(crate) const APPLY_STANDING_TO_BATCH: &str = concat!(
    standing_mark!(),
    "FROM unnest($1::text[], $2::text[]) AS written(origin, media_id) \
     WHERE media.origin = written.origin AND media.media_id = written.media_id",
    standing_condition!(),
    "RETURNING media.origin, media.media_id, media.quarantined_by"
);

const WITHDRAW_QUARANTINED: &str = "DELETE FROM media WHERE origin = $1 AND media_id = $2 \
     AND quarantined_by IS NOT NULL";

const SET_SAFE: &str = "UPDATE media SET safe_from_quarantine = $3 \
     WHERE origin = $1 AND media_id = $2";

const COUNT_USER_MEDIA: &str = "SELECT COUNT(*) FROM media WHERE user_id = $1";

const THUMBNAIL_HASHES: &str =
    "SELECT DISTINCT sha256 FROM thumbnails WHERE origin = $1 AND media_id = $2";

fn rows(rows: Vec<MediaRow>) -> Result<Vec<MediaRecord>> {
    rows.into_iter().map(MediaRecord::try_from).collect()
}

impl Database {
    /// Quarantines one media on behalf of `by` (an admin's user id). Returns the row as
    /// marked; None when there is no such media, it is protected, or already quarantined.
    pub async fn quarantine_media(
        &self,
        origin: &str,
        media_id: &str,
        by: &str,
    ) -> Result<Option<MediaRecord>> {
        let row: Result<Option<MediaRow>> = with_writer!(self, pool => {
            sqlx::query_as(MARK_ONE)
                .bind(origin)
                .bind(media_id)
                .bind(by)
                .fetch_optional(pool)
                .await
        })
        .map_err(Into::into);
        self.forget_media_row(origin, media_id);
        row?.map(MediaRecord::try_from).transpose()
    }

    /// Lifts the quarantine of one media, whatever quarantined it. (A standing hash or
    /// origin quarantine still refuses new copies.) None when it was not quarantined.
    pub async fn unquarantine_media(
        &self,
        origin: &str,
        media_id: &str,
    ) -> Result<Option<MediaRecord>> {
        let row: Result<Option<MediaRow>> = with_writer!(self, pool => {
            sqlx::query_as(UNMARK_ONE)
                .bind(origin)
                .bind(media_id)
                .fetch_optional(pool)
                .await
        })
        .map_err(Into::into);
        self.forget_media_row(origin, media_id);
        row?.map(MediaRecord::try_from).transpose()
    }

    /// Quarantines every unprotected media `user_id` uploaded; returns the rows marked now.
    pub async fn quarantine_user_media(&self, user_id: &str, by: &str) -> Result<Vec<MediaRecord>> {
        let marked = async {
            let marked: Vec<MediaRow> = with_writer!(self, pool => {
                sqlx::query_as(MARK_USER)
                    .bind(user_id)
                    .bind(by)
                    .fetch_all(pool)
                    .await?
            });
            rows(marked)
        }
        .await;
        self.forgetting(marked)
    }

    /// Quarantines a content hash: new uploads of these bytes are refused and every
    /// unprotected media holding them is marked `hash:<sha256>`. Returns the rows marked now.
    pub async fn quarantine_hash(
        &self,
        sha256: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<MediaRecord>> {
        let marker = format!("{HASH_MARKER}{sha256}");
        self.mark_standing(INSERT_HASH, MARK_HASH, sha256, by, now_ms, &marker)
            .await
    }

    /// Lifts a hash quarantine and the marks it made; returns the rows unmarked.
    pub async fn unquarantine_hash(&self, sha256: &str) -> Result<Vec<MediaRecord>> {
        let marker = format!("{HASH_MARKER}{sha256}");
        self.lift_standing(DELETE_HASH, sha256, &marker).await
    }

    /// Quarantines an origin server: its media is never fetched again and every unprotected
    /// media of it is marked `origin:<server>`. Returns the rows marked now.
    pub async fn quarantine_origin(
        &self,
        origin: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<Vec<MediaRecord>> {
        let marker = format!("{ORIGIN_MARKER}{origin}");
        self.mark_standing(INSERT_ORIGIN, MARK_ORIGIN, origin, by, now_ms, &marker)
            .await
    }

    /// Lifts an origin quarantine and the marks it made; returns the rows unmarked.
    pub async fn unquarantine_origin(&self, origin: &str) -> Result<Vec<MediaRecord>> {
        let marker = format!("{ORIGIN_MARKER}{origin}");
        self.lift_standing(DELETE_ORIGIN, origin, &marker).await
    }

    /// Records a standing quarantine of `key` (`insert`), then marks the media it covers
    /// with `marker` (`mark`); returns the rows marked now.
    async fn mark_standing(
        &self,
        insert: &'static str,
        mark: &'static str,
        key: &str,
        by: &str,
        now_ms: i64,
        marker: &str,
    ) -> Result<Vec<MediaRecord>> {
        let marked = async {
            let marked: Vec<MediaRow> = with_writer!(self, pool => {
                // Two statements, not one transaction: see the module docs.
                sqlx::query(insert)
                    .bind(key)
                    .bind(by)
                    .bind(now_ms)
                    .execute(pool)
                    .await?;
                sqlx::query_as(mark)
                    .bind(key)
                    .bind(marker)
                    .fetch_all(pool)
                    .await?
            });
            rows(marked)
        }
        .await;
        self.forgetting(marked)
    }

    /// Hands `changed` back after forgetting the cached copies of its rows (of every row,
    /// when the change failed and what it touched is unknown).
    fn forgetting(&self, changed: Result<Vec<MediaRecord>>) -> Result<Vec<MediaRecord>> {
        self.forget_changed(changed.as_deref().ok());
        changed
    }

    async fn lift_standing(
        &self,
        delete: &'static str,
        key: &str,
        marker: &str,
    ) -> Result<Vec<MediaRecord>> {
        let unmarked = async {
            let unmarked: Vec<MediaRow> = with_writer!(self, pool => {
                sqlx::query(delete).bind(key).execute(pool).await?;
                sqlx::query_as(UNMARK_BY_MARKER)
                    .bind(marker)
                    .fetch_all(pool)
                    .await?
            });
            rows(unmarked)
        }
        .await;
        self.forgetting(unmarked)
    }

    /// Whether new copies of these bytes are refused.
    pub async fn is_hash_quarantined(&self, sha256: &str) -> Result<bool> {
        self.exists(HASH_QUARANTINED, sha256).await
    }

    /// Whether new uploads of these bytes are refused: their hash is quarantined, or some
    /// quarantined media holds them (an index lookup on `media.sha256`).
    pub async fn is_content_quarantined(&self, sha256: &str) -> Result<bool> {
        self.exists(CONTENT_QUARANTINED, sha256).await
    }

    /// Whether this server's media is refused.
    pub async fn is_origin_quarantined(&self, origin: &str) -> Result<bool> {
        self.exists(ORIGIN_QUARANTINED, origin).await
    }

    async fn exists(&self, query: &'static str, key: &str) -> Result<bool> {
        let n: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(query).bind(key).fetch_one(pool).await?
        });
        Ok(n > 0)
    }

    /// Called right after a media row is written: marks it if its origin or content hash
    /// is under a standing quarantine, and returns the mark (None: it may be served).
    pub async fn apply_standing_quarantine(
        &self,
        origin: &str,
        media_id: &str,
    ) -> Result<Option<String>> {
        let (origin, media_id) = (origin.to_owned(), media_id.to_owned());
        let (job_origin, job_media_id) = (origin.clone(), media_id.clone());
        let marked: Result<Option<Option<String>>> = write_statement!(self, conn => {
            let marked = sqlx::query_scalar(APPLY_STANDING)
                .bind(job_origin)
                .bind(job_media_id)
                .fetch_optional(&mut *conn)
                .await?;
            Ok(marked)
        });
        // Called after every upload: only a row that was marked (or may have been) is
        // forgotten, so uploads leave the cached rows of other media alone.
        if !matches!(marked, Ok(None) | Ok(Some(None))) {
            self.forget_media_row(&origin, &media_id);
        }
        Ok(marked?.flatten())
    }

    /// Deletes a row that was quarantined the moment it was written (an upload of
    /// quarantined bytes that raced the quarantine), so the refused upload leaves no row.
    /// The caller then removes the content if nothing else refers to it.
    pub async fn withdraw_quarantined_media(&self, origin: &str, media_id: &str) -> Result<bool> {
        let removed: Result<u64> = with_writer!(self, pool => {
            sqlx::query(WITHDRAW_QUARANTINED)
                .bind(origin)
                .bind(media_id)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(Into::into);
        self.forget_media_row(origin, media_id);
        Ok(removed? > 0)
    }

    /// Protects (`safe`) or unprotects one media; false when there is no such media.
    pub async fn set_safe_from_quarantine(
        &self,
        origin: &str,
        media_id: &str,
        safe: bool,
    ) -> Result<bool> {
        let changed: Result<u64> = with_writer!(self, pool => {
            sqlx::query(SET_SAFE)
                .bind(origin)
                .bind(media_id)
                .bind(i64::from(safe))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(Into::into);
        self.forget_media_row(origin, media_id);
        Ok(changed? > 0)
    }

    /// One page of the media `user_id` uploaded, and how many there are in all. Ties are
    /// broken by media id, so pages never overlap.
    pub async fn user_media_page(
        &self,
        user_id: &str,
        from: u64,
        limit: u64,
        order: MediaOrder,
        descending: bool,
    ) -> Result<(Vec<MediaRecord>, u64)> {
        let direction = if descending { "DESC" } else { "ASC" };
        // Both parts come from closed sets, never from the request text.
        let query = format!(
            "SELECT {} FROM media WHERE user_id = $1 ORDER BY {} {direction}, media_id ASC \
             LIMIT $2 OFFSET $3",
            media_columns!(),
            order.column()
        );
        let limit = i64::try_from(limit.min(MAX_PAGE)).unwrap_or(0);
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let (page, total): (Vec<MediaRow>, i64) = with_pool!(self, pool => {
            let page = sqlx::query_as(&query)
                .bind(user_id)
                .bind(limit)
                .bind(from)
                .fetch_all(pool)
                .await?;
            let total = sqlx::query_scalar(COUNT_USER_MEDIA)
                .bind(user_id)
                .fetch_one(pool)
                .await?;
            (page, total)
        });
        Ok((rows(page)?, records::count(total)))
    }

    /// The content hashes of a media's stored thumbnails (to evict them from the cache).
    pub async fn thumbnail_hashes_of(&self, origin: &str, media_id: &str) -> Result<Vec<String>> {
        let hashes: Vec<String> = with_pool!(self, pool => {
            sqlx::query_scalar(THUMBNAIL_HASHES)
                .bind(origin)
                .bind(media_id)
                .fetch_all(pool)
                .await?
        });
        Ok(hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::MediaOrder;

    #[test]
    fn orders_are_synapse_names() {
        assert_eq!(
            MediaOrder::parse("media_length"),
            Some(MediaOrder::MediaLength)
        );
        assert_eq!(MediaOrder::parse("created_ts"), Some(MediaOrder::CreatedTs));
        assert_eq!(MediaOrder::parse("size_bytes; DROP TABLE media"), None);
    }
}
