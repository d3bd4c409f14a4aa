//! Uploads: `POST /upload` (new media), `POST /create` + `PUT /upload/{server}/{id}` (async).
//!
//! The body streams to a temp file in the datastore while it is hashed; only when all of it
//! arrived within the size limit is it renamed into place and the row written. An upload that
//! fails at any step leaves neither a file nor a row.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use mr_storage::{MediaRecord, PendingUpload, StoredObject};
use serde_json::json;
use tracing::{info, warn};

use super::{now_ms, query_param, MediaRef};
use crate::error::{MatrixError, MatrixResult};
use crate::state::AppState;

/// Longest `filename` accepted, in bytes.
const MAX_FILENAME_BYTES: usize = 1024;
/// Longest Content-Type accepted, in bytes.
const MAX_CONTENT_TYPE_BYTES: usize = 255;
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

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
    let filename = query_param(req, "filename").filter(|n| !n.is_empty());
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

/// Refuses a body whose declared length is over the limit before reading any of it.
fn check_declared_length(req: &HttpRequest, max_bytes: u64) -> MatrixResult<()> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > max_bytes => Err(too_large(max_bytes)),
        _ => Ok(()),
    }
}

fn too_large(max_bytes: u64) -> MatrixError {
    MatrixError::too_large(format!(
        "Upload is larger than the limit of {max_bytes} bytes"
    ))
}

/// Streams the request body into the datastore.
async fn store_body(
    state: &AppState,
    mut payload: web::Payload,
    max_bytes: u64,
) -> MatrixResult<StoredObject> {
    let mut writer = state
        .datastore
        .writer(max_bytes)
        .map_err(|err| MatrixError::internal("opening a datastore temp file failed", &err))?;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|err| {
            info!(error = %err, "upload body ended early; nothing stored");
            MatrixError::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Upload body was interrupted",
            )
        })?;
        writer.write(chunk).await.map_err(|err| match err {
            mr_storage::Error::TooLarge { .. } => too_large(max_bytes),
            other => MatrixError::internal("writing an upload failed", &other),
        })?;
    }
    writer.finish().await.map_err(|err| match err {
        mr_storage::Error::TooLarge { .. } => too_large(max_bytes),
        other => MatrixError::internal("finishing an upload failed", &other),
    })
}

/// Removes a stored object that no row ended up referring to.
async fn discard_unreferenced(state: &AppState, object: &StoredObject) {
    match state
        .db
        .location_in_use(state.datastore.id(), &object.location)
        .await
    {
        Ok(false) => {
            if let Err(err) = state.datastore.delete(&object.location).await {
                warn!(error = %err, location = %object.location, "could not remove an unreferenced object");
            }
        }
        Ok(true) => {}
        Err(err) => warn!(error = %err, "could not check whether an object is still referenced"),
    }
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
    }
}

/// Copies a fresh upload into the cache in the background when configured to.
fn warm_cache(state: &web::Data<AppState>, object: &StoredObject) {
    let config = state.config();
    if !config.uploads.warm_cache || object.size > config.cache.max_object_bytes {
        return;
    }
    super::body::fill_cache_in_background(state, &object.sha256, &object.location, object.size);
}

/// `POST /_matrix/media/v3/upload` (and r0).
pub async fn upload(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let user = state.auth.authenticate(&req).await?;
    let config = state.config();
    check_declared_length(&req, config.uploads.max_bytes)?;
    let meta = upload_meta(&req)?;
    let object = store_body(&state, payload, config.uploads.max_bytes).await?;
    let media = MediaRef {
        origin: user.homeserver.clone(),
        media_id: mr_storage::random_media_id(),
    };
    let row = record(&media, &user.user_id, meta, &object, state.datastore.id());
    if let Err(err) = state.db.insert_media(&row).await {
        discard_unreferenced(&state, &object).await;
        return Err(MatrixError::internal("recording an upload failed", &err));
    }
    info!(mxc = %media.mxc(), size = object.size, user = %user.user_id, "media uploaded");
    warm_cache(&state, &object);
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
    let config = state.config();
    let db_err =
        |err: mr_storage::Error| MatrixError::internal("reading upload state failed", &err);
    if state
        .db
        .get_media(&media.origin, &media.media_id)
        .await
        .map_err(db_err)?
        .is_some()
    {
        return Err(MatrixError::cannot_overwrite());
    }
    let pending = state
        .db
        .get_pending(&media.origin, &media.media_id)
        .await
        .map_err(db_err)?;
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
    check_declared_length(&req, config.uploads.max_bytes)?;
    let meta = upload_meta(&req)?;
    let object = store_body(&state, payload, config.uploads.max_bytes).await?;
    let row = record(&media, &user.user_id, meta, &object, state.datastore.id());
    if let Err(err) = state.db.complete_pending(&row).await {
        discard_unreferenced(&state, &object).await;
        return match err {
            mr_storage::Error::AlreadyExists { .. } => Err(MatrixError::cannot_overwrite()),
            mr_storage::Error::NoPendingUpload { .. } => Err(MatrixError::not_found(
                "The pending upload expired while its bytes were arriving",
            )),
            other => Err(MatrixError::internal(
                "recording an async upload failed",
                &other,
            )),
        };
    }
    state.pending.announce(&media.origin, &media.media_id);
    info!(mxc = %media.mxc(), size = object.size, "async upload completed");
    warm_cache(&state, &object);
    Ok(HttpResponse::Ok().json(json!({})))
}
