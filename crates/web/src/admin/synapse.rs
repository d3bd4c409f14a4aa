//! The Synapse admin media endpoints, with Synapse's request and response shapes
//! (synapse/rest/admin/media.py): admin tools call these unchanged.
//!
//! Like Synapse, quarantine and protection answer `{}` whether or not the media exists, and
//! protected media is never quarantined (by id or by user).

use actix_web::{web, HttpRequest, HttpResponse};
use mr_storage::quarantine::MediaOrder;
use mr_storage::MediaRecord;
use serde_json::{json, Value};

use super::{admin_and_media, db_error, local_user, require_admin};
use crate::error::{MatrixError, MatrixResult};
use crate::media::{download, MediaRef};
use crate::query::{self, PageQuery};
use crate::state::AppState;

/// `limit` when none is given (Synapse's default).
const DEFAULT_LIMIT: u64 = 100;

/// `POST /_synapse/admin/v1/media/quarantine/{server}/{media_id}` → `{}`.
pub async fn quarantine_media(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let (admin, media) = admin_and_media(&req, &state, path).await?;
    super::own::quarantine_one(&state, &media, &admin.user_id).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `POST /_synapse/admin/v1/media/unquarantine/{server}/{media_id}` → `{}`.
pub async fn unquarantine_media(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let (_, media) = admin_and_media(&req, &state, path).await?;
    state
        .db
        .unquarantine_media(&media.origin, &media.media_id)
        .await
        .map_err(db_error)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `POST /_synapse/admin/v1/user/{user_id}/media/quarantine` → `{"num_quarantined": n}`.
pub async fn quarantine_user_media(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let admin = require_admin(&req, &state).await?;
    let n = super::own::quarantine_user_media(&state, &path.into_inner(), &admin.user_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "num_quarantined": n })))
}

/// `POST /_synapse/admin/v1/media/protect/{media_id}` (media of the admin's homeserver) → `{}`.
pub async fn protect(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    set_safe(req, path, state, true).await
}

/// `POST /_synapse/admin/v1/media/unprotect/{media_id}` → `{}`.
pub async fn unprotect(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    set_safe(req, path, state, false).await
}

async fn set_safe(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    safe: bool,
) -> MatrixResult<HttpResponse> {
    let admin = require_admin(&req, &state).await?;
    let media = MediaRef::parse(&admin.homeserver, &path.into_inner())?;
    state
        .db
        .set_safe_from_quarantine(&media.origin, &media.media_id, safe)
        .await
        .map_err(db_error)?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// A non-negative integer query parameter `name` (its `value`), or Synapse's 400
/// `M_INVALID_PARAM`.
pub(crate) fn non_negative(value: Option<&str>, name: &str, default: u64) -> MatrixResult<u64> {
    match value {
        None => Ok(default),
        Some(text) => text.parse::<u64>().map_err(|_| {
            MatrixError::bad_param(format!(
                "Query parameter {name:?} must be a non-negative integer"
            ))
        }),
    }
}

/// `GET /_synapse/admin/v1/users/{user_id}/media`: `{"media": [...], "total": n}` plus
/// `next_token` when more follow; `from`, `limit`, `order_by`, `dir` as in Synapse (no
/// `order_by` and no `dir`: newest first).
pub async fn user_media(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    require_admin(&req, &state).await?;
    let user_id = local_user(&state, &path.into_inner())?;
    let PageQuery {
        from,
        limit,
        order_by,
        dir,
    } = query::read(&req)?;
    let from = non_negative(from.as_deref(), "from", 0)?;
    let limit = non_negative(limit.as_deref(), "limit", DEFAULT_LIMIT)?;
    let (order, descending) = if order_by.is_none() && dir.is_none() {
        (MediaOrder::CreatedTs, true)
    } else {
        let order = match order_by.as_deref() {
            None => MediaOrder::CreatedTs,
            Some(name) => MediaOrder::parse(name).ok_or_else(|| {
                MatrixError::bad_param(format!("Unknown value for order_by: {name:?}"))
            })?,
        };
        let descending = match dir.as_deref() {
            None | Some("f") => false,
            Some("b") => true,
            Some(other) => {
                return Err(MatrixError::bad_param(format!(
                    "Unknown value for dir: {other:?} (f or b)"
                )))
            }
        };
        (order, descending)
    };
    let (page, total) = state
        .db
        .user_media_page(&user_id, from, limit, order, descending)
        .await
        .map_err(db_error)?;
    let returned = page.len() as u64;
    let config = state.config();
    let mut body = json!({
        "media": page.iter().map(|m| synapse_media(m, &config)).collect::<Vec<Value>>(),
        "total": total,
    });
    if from.saturating_add(limit) < total {
        body["next_token"] = json!(from + returned);
    }
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /_synapse/admin/v1/media/{server}/{media_id}` → `{"media_info": {...}}`: one of
/// our homeservers' media, or another server's media we keep, as Synapse's
/// `QueryMediaById` answers (404 "Unknown media" for neither).
pub async fn media_info(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let (_, media) = admin_and_media(&req, &state, path).await?;
    let record = state
        .db
        .get_media(&media.origin, &media.media_id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| MatrixError::not_found("Unknown media"))?;
    let last_access_ms = state
        .db
        .last_access_ms(&media.origin, &media.media_id)
        .await
        .map_err(db_error)?;
    let config = state.config();
    let mut info = synapse_media(&record, &config);
    info["last_access_ts"] = json!(last_access_ms);
    if download::is_ours(&config, &record.origin) {
        info["media_origin"] = Value::Null;
        info["filesystem_id"] = Value::Null;
    } else {
        // Synapse's remote media fields: no uploader, no protection, its file's name.
        info["media_origin"] = json!(record.origin);
        info["user_id"] = Value::Null;
        info["safe_from_quarantine"] = Value::Null;
        info["filesystem_id"] = json!(record.location);
    }
    Ok(HttpResponse::Ok().json(json!({ "media_info": info })))
}

/// One media as Synapse's `LocalMedia` attributes; `authenticated`: served only on the
/// authenticated endpoints (the legacy freeze covers it).
fn synapse_media(m: &MediaRecord, config: &mr_config::Config) -> Value {
    json!({
        "media_id": m.media_id,
        "media_type": m.content_type,
        "media_length": m.size_bytes,
        "upload_name": m.upload_name,
        "created_ts": m.created_at_ms,
        "url_cache": null,
        // Synapse answers null until a media is downloaded; lists do not read the access
        // times (`media_info` does).
        "last_access_ts": null,
        "quarantined_by": m.quarantined_by,
        "safe_from_quarantine": m.safe_from_quarantine,
        "user_id": m.user_id,
        "authenticated": download::is_frozen(config, m),
        "sha256": m.sha256,
    })
}
