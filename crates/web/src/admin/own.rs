//! `/_media_repo/v1/admin/...`: quarantine by media, user, origin server and content hash,
//! lifting each, and protection. Answers say how many media changed
//! (`num_quarantined` / `num_unquarantined`), and how many cache deletes wait for a shard
//! that is down (`pending_evictions`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{admin_and_media, db_error, local_user, require_admin};
use crate::error::{MatrixError, MatrixResult};
use crate::media::{now_ms, quarantine, MediaRef};
use crate::state::AppState;

/// Quarantines one media and evicts it (also when it was quarantined already: a repeated
/// call repairs a cache that got a copy back). Returns (newly quarantined, pending deletes).
pub(crate) async fn quarantine_one(
    state: &AppState,
    media: &MediaRef,
    by: &str,
) -> MatrixResult<(usize, usize)> {
    let marked = state
        .db
        .quarantine_media(&media.origin, &media.media_id, by)
        .await
        .map_err(db_error)?;
    let newly = usize::from(marked.is_some());
    let record = match marked {
        Some(record) => Some(record),
        None => state
            .db
            .get_media(&media.origin, &media.media_id)
            .await
            .map_err(db_error)?
            .filter(|r| r.quarantined_by.is_some()),
    };
    let evicted = match record {
        Some(record) => quarantine::evict(state, &[record]).await,
        None => quarantine::Evicted::default(),
    };
    Ok((newly, evicted.pending_on_down_shards))
}

/// Quarantines every unprotected media of a local user; returns how many.
pub(crate) async fn quarantine_user_media(
    state: &AppState,
    user_id: &str,
    by: &str,
) -> MatrixResult<usize> {
    let user_id = local_user(state, user_id)?;
    let marked = state
        .db
        .quarantine_user_media(&user_id, by)
        .await
        .map_err(db_error)?;
    quarantine::evict(state, &marked).await;
    Ok(marked.len())
}

fn answer(key: &str, n: usize, pending: usize) -> HttpResponse {
    HttpResponse::Ok().json(json!({ key: n, "pending_evictions": pending }))
}

pub async fn quarantine_media(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let (admin, media) = admin_and_media(&req, &state, path).await?;
    let (n, pending) = quarantine_one(&state, &media, &admin.user_id).await?;
    Ok(answer("num_quarantined", n, pending))
}

pub async fn unquarantine_media(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let (_, media) = admin_and_media(&req, &state, path).await?;
    let lifted = state
        .db
        .unquarantine_media(&media.origin, &media.media_id)
        .await
        .map_err(db_error)?;
    Ok(answer(
        "num_unquarantined",
        usize::from(lifted.is_some()),
        0,
    ))
}

pub async fn quarantine_user(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let admin = require_admin(&req, &state).await?;
    let n = quarantine_user_media(&state, &path.into_inner(), &admin.user_id).await?;
    Ok(answer("num_quarantined", n, 0))
}

fn server_name(server: &str) -> MatrixResult<String> {
    if !mr_storage::is_valid_server_name(server) {
        return Err(MatrixError::bad_param("Invalid server name"));
    }
    Ok(server.to_ascii_lowercase())
}

fn content_hash(sha256: &str) -> MatrixResult<String> {
    let sha256 = sha256.to_ascii_lowercase();
    if !mr_cache::is_valid_sha256(&sha256) {
        return Err(MatrixError::bad_param(
            "Not a SHA-256 hash (64 hexadecimal digits)",
        ));
    }
    Ok(sha256)
}

/// Every media of a server, and refusing to fetch more of it.
pub async fn quarantine_origin(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let admin = require_admin(&req, &state).await?;
    let origin = server_name(&path.into_inner())?;
    let marked = state
        .db
        .quarantine_origin(&origin, &admin.user_id, now_ms())
        .await
        .map_err(db_error)?;
    let evicted = quarantine::evict(&state, &marked).await;
    Ok(answer(
        "num_quarantined",
        marked.len(),
        evicted.pending_on_down_shards,
    ))
}

pub async fn unquarantine_origin(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    require_admin(&req, &state).await?;
    let origin = server_name(&path.into_inner())?;
    let lifted = state
        .db
        .unquarantine_origin(&origin)
        .await
        .map_err(db_error)?;
    Ok(answer("num_unquarantined", lifted.len(), 0))
}

/// Every media with these bytes, and refusing uploads of them.
pub async fn quarantine_hash(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let admin = require_admin(&req, &state).await?;
    let sha256 = content_hash(&path.into_inner())?;
    let marked = state
        .db
        .quarantine_hash(&sha256, &admin.user_id, now_ms())
        .await
        .map_err(db_error)?;
    let mut evicted = quarantine::evict(&state, &marked).await;
    if marked.is_empty() {
        // No media holds them (or all are protected): the bytes may still be cached.
        let blob = state.cache.delete_blob(&sha256).await;
        evicted.pending_on_down_shards += blob.shards_pending;
    }
    Ok(answer(
        "num_quarantined",
        marked.len(),
        evicted.pending_on_down_shards,
    ))
}

pub async fn unquarantine_hash(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    require_admin(&req, &state).await?;
    let sha256 = content_hash(&path.into_inner())?;
    let lifted = state
        .db
        .unquarantine_hash(&sha256)
        .await
        .map_err(db_error)?;
    Ok(answer("num_unquarantined", lifted.len(), 0))
}

pub async fn protect(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    set_safe(req, path, state, true).await
}

pub async fn unprotect(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    set_safe(req, path, state, false).await
}

/// 404 for unknown media (unlike Synapse's endpoint, which answers `{}` regardless).
async fn set_safe(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    safe: bool,
) -> MatrixResult<HttpResponse> {
    let (_, media) = admin_and_media(&req, &state, path).await?;
    let found = state
        .db
        .set_safe_from_quarantine(&media.origin, &media.media_id, safe)
        .await
        .map_err(db_error)?;
    if !found {
        return Err(MatrixError::not_found("Media not found"));
    }
    Ok(HttpResponse::Ok().json(json!({ "safe_from_quarantine": safe })))
}
