//! Uploads: `POST /upload` (new media), `POST /create` + `PUT /upload/{server}/{id}` (async).
//!
//! The body streams to a temp file in the datastore while it is hashed; only when all of it
//! arrived within the size limit is its location claimed, the file renamed into place and
//! the row written. An upload that fails at any step leaves neither a file nor a row, and
//! never removes bytes another upload relies on (`mr_storage::content`).
//!
//! Each upload takes a slot (`slots.rs`: per user and overall caps) before its body is read,
//! and is cut off when its client sends nothing for `uploads.idle_timeout_secs`.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use mr_config::CacheBackend;
use mr_storage::content::{self, Admission, Claim};
use mr_storage::{MediaRecord, PendingUpload, StoredObject};
use serde_json::json;
use tracing::{info, warn};

use super::early_thumbnails::EarlyThumbnails;
use super::upload_phases::{timed, Phase};
use super::{now_ms, MediaRef};
use crate::error::{MatrixError, MatrixResult};
use crate::query::{self, UploadQuery};
use crate::state::AppState;

/// Longest `filename` accepted, in bytes.
const MAX_FILENAME_BYTES: usize = 1024;
/// Longest Content-Type accepted, in bytes.
const MAX_CONTENT_TYPE_BYTES: usize = 255;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Largest upload whose body is kept in memory while it arrives, so that warming the cache
/// copies those bytes instead of reading the file back (an open and reads on the blocking
/// pool, per upload). One write batch: an upload this small never holds more received bytes
/// than its batch does anyway, so what an upload may hold in memory stays bounded as
/// `uploads.max_concurrent` documents.
const WARM_FROM_MEMORY_MAX_BYTES: usize = mr_storage::WRITE_BATCH_BYTES;

/// A small upload's body as it arrived (the received chunks themselves, shared, not copied),
/// for warming the cache. Given up, and its chunks released, as soon as the body grows past
/// [`WARM_FROM_MEMORY_MAX_BYTES`]; such an upload warms the cache from its file.
struct KeptBody {
    /// `None`: not kept (too big, or no warming wanted).
    chunks: Option<Vec<Bytes>>,
    len: usize,
}

impl KeptBody {
    fn new(wanted: bool) -> KeptBody {
        KeptBody {
            chunks: wanted.then(Vec::new),
            len: 0,
        }
    }

    fn keep(&mut self, chunk: &Bytes) {
        let Some(chunks) = self.chunks.as_mut() else {
            return;
        };
        self.len += chunk.len();
        if self.len > WARM_FROM_MEMORY_MAX_BYTES {
            self.chunks = None;
        } else {
            chunks.push(chunk.clone());
        }
    }

    /// The whole body, if it was kept and is `size` bytes long (what was stored).
    fn into_body(self, size: u64) -> Option<Vec<Bytes>> {
        self.chunks.filter(|_| self.len as u64 == size)
    }
}

/// What the client said about the file besides its bytes.
struct UploadMeta {
    content_type: String,
    filename: Option<String>,
}

fn upload_meta(req: &HttpRequest) -> MatrixResult<UploadMeta> {
    let content_type = match req.headers().get(header::CONTENT_TYPE) {
        None => DEFAULT_CONTENT_TYPE.to_owned(),
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| MatrixError::bad_param("Content-Type must be visible ASCII"))?
                .trim();
            if text.len() > MAX_CONTENT_TYPE_BYTES {
                return Err(MatrixError::bad_param("Content-Type is too long"));
            }
            if text.is_empty() {
                DEFAULT_CONTENT_TYPE.to_owned()
            } else {
                text.to_owned()
            }
        }
    };
    let filename = query::read::<UploadQuery>(req)?
        .filename
        .filter(|n| !n.is_empty());
    if let Some(name) = &filename {
        if name.len() > MAX_FILENAME_BYTES {
            return Err(MatrixError::bad_param("filename is too long"));
        }
    }
    Ok(UploadMeta {
        content_type,
        filename,
    })
}

/// Refuses a body whose declared length is over the limit before reading any of it; the
/// declared length, if any.
fn check_declared_length(req: &HttpRequest, max_bytes: u64) -> MatrixResult<Option<u64>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > max_bytes => Err(too_large(max_bytes)),
        _ => Ok(declared),
    }
}

fn too_large(max_bytes: u64) -> MatrixError {
    MatrixError::too_large(format!(
        "Upload is larger than the limit of {max_bytes} bytes"
    ))
}

/// Streams the request body into the datastore (and to `early`, which thumbnails it as it
/// arrives) and stores it under a claim: the caller writes its row, then releases the
/// claim (or discards the object if the row failed).
async fn store_body(
    req: &HttpRequest,
    state: &AppState,
    mut payload: web::Payload,
    limits: BodyLimits,
    early: Option<&mut EarlyThumbnails>,
    kept: &mut KeptBody,
) -> MatrixResult<(StoredObject, Claim)> {
    let max_bytes = limits.max_bytes;
    let mut writer = state
        .datastore
        .writer(max_bytes)
        .map_err(|err| MatrixError::internal("opening a datastore temp file failed", &err))?;
    let received = timed(
        Phase::Body,
        receive_body(&mut writer, &mut payload, limits, early, kept),
    )
    .await;
    if let Err(err) = received {
        // Removed before the client hears of the failure. (A client that disconnects drops
        // this future instead; the writer's drop then removes the file.)
        writer.abort().await;
        return Err(err);
    }
    let staged = timed(Phase::Sync, writer.finish())
        .await
        .map_err(|err| match err {
            mr_storage::Error::TooLarge { .. } => too_large(max_bytes),
            other => MatrixError::internal("finishing an upload failed", &other),
        })?;
    let admission = timed(
        Phase::Store,
        content::commit_unless_quarantined(&state.db, &state.datastore, staged, now_ms()),
    )
    .await
    .map_err(|err| MatrixError::internal("storing an upload failed", &err))?;
    let stored = match admission {
        Admission::Stored(object, claim) => (object, claim),
        Admission::Quarantined { sha256 } => {
            info!(%sha256, "upload of quarantined content refused");
            return Err(quarantined_content());
        }
    };
    crate::test_hooks::pause_before_record(req, &stored.0.sha256).await;
    Ok(stored)
}

/// How much of a body is taken, and how long a pause in it.
#[derive(Clone, Copy)]
struct BodyLimits {
    max_bytes: u64,
    idle_timeout: Duration,
}

/// Feeds the body into the writer (and `early`) until it ends, fails, passes the limit or
/// stalls.
async fn receive_body(
    writer: &mut mr_storage::ObjectWriter,
    payload: &mut web::Payload,
    BodyLimits {
        max_bytes,
        idle_timeout,
    }: BodyLimits,
    mut early: Option<&mut EarlyThumbnails>,
    kept: &mut KeptBody,
) -> MatrixResult<()> {
    loop {
        let next = tokio::time::timeout(idle_timeout, payload.next())
            .await
            .map_err(|_| idle_timeout_error(idle_timeout))?;
        let Some(chunk) = next else {
            if let Some(early) = early {
                early.body_complete();
            }
            return Ok(());
        };
        let chunk = chunk.map_err(|err| {
            info!(error = %err, "upload body ended early; nothing stored");
            MatrixError::new(
                StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Upload body was interrupted",
            )
        })?;
        if let Some(early) = early.as_deref_mut() {
            early.feed(&chunk);
        }
        kept.keep(&chunk);
        writer.write(chunk).await.map_err(|err| match err {
            mr_storage::Error::TooLarge { .. } => too_large(max_bytes),
            other => MatrixError::internal("writing an upload failed", &other),
        })?;
    }
}

fn idle_timeout_error(idle_timeout: Duration) -> MatrixError {
    info!(
        idle_secs = idle_timeout.as_secs(),
        "upload body stalled; nothing stored"
    );
    MatrixError::new(
        StatusCode::REQUEST_TIMEOUT,
        "M_UNKNOWN",
        format!(
            "No upload data arrived for {} s; nothing was stored",
            idle_timeout.as_secs()
        ),
    )
}

fn quarantined_content() -> MatrixError {
    MatrixError::forbidden(
        "This content has been quarantined by the server admins and cannot be uploaded",
    )
}

/// After the row is written with `standing`, the mark a standing quarantine gave it: if
/// these bytes were quarantined while they arrived (the check before storing them passed),
/// the row and, unless shared, the bytes go again and the upload is refused like one that
/// arrived later. (`mr_storage::quarantine` explains why this second look closes the race.)
async fn refuse_if_quarantined_meanwhile(
    state: &AppState,
    media: &MediaRef,
    object: &StoredObject,
    standing: Option<String>,
) -> MatrixResult<()> {
    let db_err =
        |err: mr_storage::Error| MatrixError::internal("reading the quarantine failed", &err);
    match standing {
        Some(marker) if marker.starts_with(mr_storage::quarantine::HASH_MARKER) => {
            info!(mxc = %media.mxc(), "content quarantined during its upload; refused");
            state
                .db
                .withdraw_quarantined_media(&media.origin, &media.media_id)
                .await
                .map_err(db_err)?;
            if let Err(err) =
                content::remove_unreferenced(&state.db, &state.datastore, &object.location).await
            {
                warn!(error = %err, location = %object.location, "could not remove an unreferenced object");
            }
            Err(quarantined_content())
        }
        // An origin quarantine of our own server: the media stays, quarantined.
        _ => Ok(()),
    }
}

/// Writes the row of a stored upload in the same database write that releases the upload's
/// claim, and returns the standing quarantine's mark on it. If the row could not be
/// written, the object is removed unless something else refers to it.
async fn record_stored(
    state: &AppState,
    object: &StoredObject,
    claim: Claim,
    row: &MediaRecord,
    completes_pending: bool,
) -> mr_storage::Result<Option<String>> {
    let inserted = timed(Phase::Record, claim.record(row, completes_pending)).await;
    if inserted.is_err() {
        if let Err(err) =
            content::remove_unreferenced(&state.db, &state.datastore, &object.location).await
        {
            warn!(error = %err, location = %object.location, "could not remove an unreferenced object");
        }
    }
    inserted
}

fn record(
    media: &MediaRef,
    user_id: &str,
    meta: UploadMeta,
    object: &StoredObject,
    datastore_id: &str,
) -> MediaRecord {
    MediaRecord {
        origin: media.origin.clone(),
        media_id: media.media_id.clone(),
        user_id: Some(user_id.to_owned()),
        content_type: meta.content_type,
        upload_name: meta.filename,
        size_bytes: object.size,
        sha256: object.sha256.clone(),
        datastore_id: datastore_id.to_owned(),
        location: object.location.clone(),
        created_at_ms: now_ms(),
        quarantined_by: None,
        safe_from_quarantine: false,
    }
}

/// Copies a fresh upload into the cache in the background when configured to: from its body
/// when that was kept in memory, else from its file.
fn warm_cache(state: &web::Data<AppState>, object: &StoredObject, body: Option<Vec<Bytes>>) {
    if !state.config().uploads.warm_cache {
        return;
    }
    match body {
        Some(chunks) => super::body::fill_from_memory(state, &object.sha256, chunks),
        None => {
            super::body::fill_from_datastore(state, &object.sha256, &object.location, object.size)
        }
    }
}

/// An upload's bytes, stored under a claim, with what the client said about them. The slot
/// stays taken until this is dropped (after the row is written).
struct Received {
    meta: UploadMeta,
    object: StoredObject,
    claim: Claim,
    /// Its bytes, when small enough to be kept for warming the cache.
    body: Option<Vec<Bytes>>,
    /// Its thumbnails, made as it arrived (when it is an image and a worker was free).
    early: Option<EarlyThumbnails>,
    _slot: super::slots::UploadSlot,
}

/// What every upload does once it knows where it goes: check the declared size and the
/// metadata, take a slot, and store the body.
async fn receive(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
    user_id: &str,
    config: &mr_config::Config,
) -> MatrixResult<Received> {
    let declared = check_declared_length(req, config.uploads.max_bytes)?;
    let meta = upload_meta(req)?;
    let slot = admit(state, user_id, config)?;
    let mut early = EarlyThumbnails::start(state, &meta.content_type, declared);
    let limits = BodyLimits {
        max_bytes: config.uploads.max_bytes,
        idle_timeout: Duration::from_secs(config.uploads.idle_timeout_secs),
    };
    let warming = config.uploads.warm_cache && state.cache.kind() != CacheBackend::None;
    let mut kept = KeptBody::new(warming);
    let (object, claim) =
        store_body(req, state, payload, limits, early.as_mut(), &mut kept).await?;
    Ok(Received {
        meta,
        body: kept.into_body(object.size),
        object,
        claim,
        early,
        _slot: slot,
    })
}

/// An upload slot for `user_id` under the configured caps, or 429.
fn admit(
    state: &AppState,
    user_id: &str,
    config: &mr_config::Config,
) -> MatrixResult<super::slots::UploadSlot> {
    state.upload_slots.admit(
        user_id,
        config.uploads.max_concurrent_per_user,
        config.uploads.max_concurrent,
    )
}

/// `POST /_matrix/media/v3/upload` (and r0).
pub async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let user = state.auth.authenticate(&req).await?;
    let config = state.config();
    let Received {
        meta,
        object,
        claim,
        body,
        early,
        _slot,
    } = receive(&req, &state, payload, &user.user_id, &config).await?;
    let media = MediaRef {
        origin: user.homeserver.clone(),
        media_id: mr_storage::random_media_id(),
    };
    let row = record(&media, &user.user_id, meta, &object, state.datastore.id());
    let standing = record_stored(&state, &object, claim, &row, false)
        .await
        .map_err(|err| MatrixError::internal("recording an upload failed", &err))?;
    refuse_if_quarantined_meanwhile(&state, &media, &object, standing).await?;
    info!(mxc = %media.mxc(), size = object.size, user = %user.user_id, "media uploaded");
    warm_cache(&state, &object, body);
    super::thumbnail::Thumbnailer::pregenerate(&state, row, early);
    Ok(HttpResponse::Ok().json(json!({ "content_uri": media.mxc() })))
}

/// `POST /_matrix/media/v1/create`: reserves an id to upload to later.
pub async fn create(req: HttpRequest, state: web::Data<AppState>) -> MatrixResult<HttpResponse> {
    let user = state.auth.authenticate(&req).await?;
    let config = state.config();
    let now = now_ms();
    let pending = state
        .db
        .count_pending_for_user(&user.user_id, now)
        .await
        .map_err(|err| MatrixError::internal("counting pending uploads failed", &err))?;
    if pending >= u64::from(config.uploads.max_pending_per_user) {
        return Err(MatrixError::limit_exceeded(
            "Too many pending uploads; upload or wait for them to expire",
            30,
        ));
    }
    let media = MediaRef {
        origin: user.homeserver.clone(),
        media_id: mr_storage::random_media_id(),
    };
    let expires_at_ms = now + (config.uploads.pending_expiry_secs as i64) * 1000;
    let row = PendingUpload {
        origin: media.origin.clone(),
        media_id: media.media_id.clone(),
        user_id: user.user_id.clone(),
        created_at_ms: now,
        expires_at_ms,
    };
    state
        .db
        .create_pending(&row)
        .await
        .map_err(|err| MatrixError::internal("recording a pending upload failed", &err))?;
    Ok(HttpResponse::Ok()
        .json(json!({ "content_uri": media.mxc(), "unused_expires_at": expires_at_ms })))
}

/// `PUT /_matrix/media/v3/upload/{server}/{mediaId}`: fills an id reserved by `create`.
pub async fn upload_to(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let user = state.auth.authenticate(&req).await?;
    let (origin, media_id) = path.into_inner();
    let media = MediaRef::parse(&origin, &media_id)?;
    if media.origin != user.homeserver {
        return Err(MatrixError::forbidden(
            "Media can only be uploaded to your own homeserver's media IDs",
        ));
    }
    let config = state.config();
    let db_err =
        |err: mr_storage::Error| MatrixError::internal("reading upload state failed", &err);
    // The pending row first: a completing upload deletes it and inserts the media row in
    // one transaction, so if the row is gone by now, the media check below sees the media
    // (409), never a confusing 404 for an id that was just uploaded.
    let pending = state
        .db
        .get_pending(&media.origin, &media.media_id)
        .await
        .map_err(db_err)?;
    if state
        .db
        .get_media(&media.origin, &media.media_id)
        .await
        .map_err(db_err)?
        .is_some()
    {
        return Err(MatrixError::cannot_overwrite());
    }
    let pending = match pending {
        Some(p) if p.expires_at_ms > now_ms() => p,
        _ => {
            return Err(MatrixError::not_found(
                "No pending upload with this ID (unknown or expired)",
            ))
        }
    };
    if pending.user_id != user.user_id {
        return Err(MatrixError::forbidden(
            "This media ID was created by another user",
        ));
    }
    let Received {
        meta,
        object,
        claim,
        body,
        early,
        _slot,
    } = receive(&req, &state, payload, &user.user_id, &config).await?;
    let row = record(&media, &user.user_id, meta, &object, state.datastore.id());
    let standing = match record_stored(&state, &object, claim, &row, true).await {
        Ok(standing) => standing,
        Err(err) => {
            return match err {
                mr_storage::Error::AlreadyExists { .. } => Err(MatrixError::cannot_overwrite()),
                mr_storage::Error::NoPendingUpload { .. } => Err(MatrixError::not_found(
                    "The pending upload expired while its bytes were arriving",
                )),
                other => Err(MatrixError::internal(
                    "recording an async upload failed",
                    &other,
                )),
            }
        }
    };
    state.pending.announce(&media.origin, &media.media_id);
    refuse_if_quarantined_meanwhile(&state, &media, &object, standing).await?;
    info!(mxc = %media.mxc(), size = object.size, "async upload completed");
    warm_cache(&state, &object, body);
    super::thumbnail::Thumbnailer::pregenerate(&state, row, early);
    Ok(HttpResponse::Ok().json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    #[test]
    fn a_body_up_to_one_batch_is_kept_whole_and_shared() {
        let first = chunk(WARM_FROM_MEMORY_MAX_BYTES - 10);
        let mut kept = KeptBody::new(true);
        kept.keep(&first);
        kept.keep(&chunk(10));
        let body = kept
            .into_body(WARM_FROM_MEMORY_MAX_BYTES as u64)
            .expect("kept");
        assert_eq!(body.len(), 2);
        assert_eq!(body[0].as_ptr(), first.as_ptr(), "a chunk was copied");
    }

    #[test]
    fn a_larger_body_is_given_up_and_its_chunks_released() {
        let first = chunk(1000);
        let mut kept = KeptBody::new(true);
        kept.keep(&first);
        kept.keep(&chunk(WARM_FROM_MEMORY_MAX_BYTES));
        assert!(kept.chunks.is_none());
        assert!(first.is_unique(), "the kept chunk is still held");
        kept.keep(&chunk(1));
        let size = (WARM_FROM_MEMORY_MAX_BYTES + 1001) as u64;
        assert!(kept.into_body(size).is_none());
    }

    #[test]
    fn nothing_is_kept_unless_wanted_and_a_size_mismatch_keeps_nothing() {
        let mut unwanted = KeptBody::new(false);
        unwanted.keep(&chunk(10));
        assert!(unwanted.into_body(10).is_none());

        let mut kept = KeptBody::new(true);
        kept.keep(&chunk(10));
        assert!(kept.into_body(11).is_none(), "not what was stored");
    }
}
