//! The rows the metadata database holds, as the rest of the workspace sees them, and their
//! database shapes (SQL has no unsigned integers, so sizes travel as `i64`).

use crate::error::{Error, Result};

/// One stored media item: where its bytes are and what to send with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRecord {
    /// Server name of the homeserver the media belongs to (the `mxc://` authority).
    pub origin: String,
    pub media_id: String,
    /// Uploader; `None` for remote media.
    pub user_id: Option<String>,
    /// Exactly as uploaded; served back unchanged.
    pub content_type: String,
    pub upload_name: Option<String>,
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// Which configured datastore holds the bytes.
    pub datastore_id: String,
    /// Location inside that datastore (generated, e.g. `ab/cd/<sha256>`).
    pub location: String,
    pub created_at_ms: i64,
    /// `None`: served. Otherwise who or what quarantined it (an admin's user id,
    /// `hash:<sha256>` or `origin:<server>`, see migration 0004); such media answers 404.
    pub quarantined_by: Option<String>,
    /// Protected: no kind of quarantine marks it (Synapse's `safe_from_quarantine`).
    pub safe_from_quarantine: bool,
}

/// A media id handed out by `/create` whose bytes have not arrived yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub origin: String,
    pub media_id: String,
    /// Only this user may upload the bytes.
    pub user_id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct MediaRow {
    origin: String,
    media_id: String,
    user_id: Option<String>,
    content_type: String,
    upload_name: Option<String>,
    size_bytes: i64,
    sha256: String,
    datastore_id: String,
    location: String,
    created_at_ms: i64,
    quarantined_by: Option<String>,
    safe_from_quarantine: i64,
}

impl TryFrom<MediaRow> for MediaRecord {
    type Error = Error;

    fn try_from(row: MediaRow) -> Result<MediaRecord> {
        let size_bytes = u64::try_from(row.size_bytes).map_err(|_| Error::OutOfRange {
            field: "media.size_bytes",
            value: row.size_bytes.to_string(),
        })?;
        Ok(MediaRecord {
            origin: row.origin,
            media_id: row.media_id,
            user_id: row.user_id,
            content_type: row.content_type,
            upload_name: row.upload_name,
            size_bytes,
            sha256: row.sha256,
            datastore_id: row.datastore_id,
            location: row.location,
            created_at_ms: row.created_at_ms,
            quarantined_by: row.quarantined_by,
            safe_from_quarantine: row.safe_from_quarantine != 0,
        })
    }
}

/// The size as the database stores it (`BIGINT`).
pub(crate) fn db_size(m: &MediaRecord) -> Result<i64> {
    i64::try_from(m.size_bytes).map_err(|_| Error::OutOfRange {
        field: "media.size_bytes",
        value: m.size_bytes.to_string(),
    })
}

#[derive(sqlx::FromRow)]
pub(crate) struct PendingRow {
    origin: String,
    media_id: String,
    user_id: String,
    created_at_ms: i64,
    expires_at_ms: i64,
}

impl From<PendingRow> for PendingUpload {
    fn from(row: PendingRow) -> PendingUpload {
        PendingUpload {
            origin: row.origin,
            media_id: row.media_id,
            user_id: row.user_id,
            created_at_ms: row.created_at_ms,
            expires_at_ms: row.expires_at_ms,
        }
    }
}

/// A `COUNT(*)` or `rows_affected` as `u64` (counts are never negative; clamp defensively).
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// One stored thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailRecord {
    pub origin: String,
    pub media_id: String,
    /// The size it was made for (a configured size or the asked one).
    pub width: u32,
    pub height: u32,
    /// `crop` or `scale`.
    pub method: String,
    pub animated: bool,
    pub content_type: String,
    /// What it came out as (never larger than the source).
    pub out_width: u32,
    pub out_height: u32,
    pub size_bytes: u64,
    pub sha256: String,
    pub datastore_id: String,
    pub location: String,
    pub created_at_ms: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct ThumbnailRow {
    origin: String,
    media_id: String,
    width: i64,
    height: i64,
    method: String,
    animated: i64,
    content_type: String,
    out_width: i64,
    out_height: i64,
    size_bytes: i64,
    sha256: String,
    datastore_id: String,
    location: String,
    created_at_ms: i64,
}

fn dimension(field: &'static str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::OutOfRange {
        field,
        value: value.to_string(),
    })
}

impl TryFrom<ThumbnailRow> for ThumbnailRecord {
    type Error = Error;

    fn try_from(row: ThumbnailRow) -> Result<ThumbnailRecord> {
        Ok(ThumbnailRecord {
            origin: row.origin,
            media_id: row.media_id,
            width: dimension("thumbnails.width", row.width)?,
            height: dimension("thumbnails.height", row.height)?,
            method: row.method,
            animated: row.animated != 0,
            content_type: row.content_type,
            out_width: dimension("thumbnails.out_width", row.out_width)?,
            out_height: dimension("thumbnails.out_height", row.out_height)?,
            size_bytes: u64::try_from(row.size_bytes).map_err(|_| Error::OutOfRange {
                field: "thumbnails.size_bytes",
                value: row.size_bytes.to_string(),
            })?,
            sha256: row.sha256,
            datastore_id: row.datastore_id,
            location: row.location,
            created_at_ms: row.created_at_ms,
        })
    }
}
