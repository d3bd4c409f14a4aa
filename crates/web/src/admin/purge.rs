//! Purge over the admin API: Synapse's delete endpoints in Synapse's shapes
//! (synapse/rest/admin/media.py: `DELETE .../media/{server}/{id}`,
//! `DELETE .../users/{user_id}/media`, `POST .../purge_media_cache?before_ts=`), and
//! `/_media_repo/v1/admin/purge/...`, which also purges quarantined media and sweeps orphan
//! files and answers with the whole report. All go through `purge::Purger`, as the
//! `media-repo purge` command does.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use mr_storage::quarantine::MediaOrder;
use mr_storage::PurgeScope;
use serde_json::json;

use super::synapse::non_negative;
use super::{admin_and_media, db_error, local_user, require_admin, OWN_ADMIN, SYNAPSE_ADMIN};
use crate::error::{MatrixError, MatrixResult};
use crate::media::MediaRef;
use crate::purge::{PurgeReport, Purger};
use crate::query::{self, BeforeTsQuery, PageQuery};
use crate::routes::serve;
use crate::state::AppState;

/// Media a `DELETE /users/{user_id}/media` removes when no `limit` is given (Synapse's
/// default page).
const DEFAULT_LIMIT: u64 = 100;

/// Before this, a `before_ts` is surely in seconds, not milliseconds (Synapse's check:
/// Dec 1970 in milliseconds, Aug 2920 in seconds).
const EARLIEST_BEFORE_TS_MS: i64 = 30_000_000_000;

/// Registers the purge routes that are not another route's other method (the DELETEs of
/// a user's media and of one media join their GETs' resources, see `admin::add_writes`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    let (s, o) = (SYNAPSE_ADMIN, OWN_ADMIN);
    let routes: [(String, actix_web::Route); 5] = [
        (
            format!("{s}/purge_media_cache"),
            web::post().to(synapse_purge_media_cache),
        ),
        (
            format!("{o}/purge/media/{{server}}/{{media_id}}"),
            web::post().to(purge_media),
        ),
        (
            format!("{o}/purge/user/{{user_id}}"),
            web::post().to(purge_user),
        ),
        (
            format!("{o}/purge/quarantined"),
            web::post().to(purge_quarantined),
        ),
        (format!("{o}/purge/remote"), web::post().to(purge_remote)),
    ];
    for (path, route) in routes {
        serve(cfg, &path, |resource| resource.route(route));
    }
    serve(cfg, &format!("{o}/purge/orphans"), |resource| {
        resource.route(web::post().to(purge_orphans))
    });
}

fn media_scope(media: MediaRef) -> PurgeScope {
    PurgeScope::Media {
        origin: media.origin,
        media_id: media.media_id,
    }
}

fn purger(state: &AppState) -> Purger {
    Purger::new(
        state.db.clone(),
        state.datastore.clone(),
        state.cache.clone(),
    )
}

async fn run(state: &AppState, scope: &PurgeScope) -> MatrixResult<PurgeReport> {
    purger(state)
        .purge(scope, |_| {})
        .await
        .map_err(|err| MatrixError::internal("purge failed", &err))
}

fn is_ours(state: &AppState, server: &str) -> bool {
    state
        .config()
        .homeservers
        .iter()
        .any(|hs| hs.name.eq_ignore_ascii_case(server))
}

/// Synapse's plain `SynapseError(400, ...)`: errcode `M_UNKNOWN`.
fn synapse_bad_request(message: &'static str) -> MatrixError {
    MatrixError::new(StatusCode::BAD_REQUEST, "M_UNKNOWN", message)
}

/// Media ids of removed `origin/media_id`s, as Synapse lists them.
fn media_ids(report: &PurgeReport) -> Vec<&str> {
    report
        .media
        .iter()
        .map(|m| m.rsplit_once('/').map_or(m.as_str(), |(_, id)| id))
        .collect()
}

/// `DELETE /_synapse/admin/v1/media/{server}/{media_id}` (local media only) →
/// `{"deleted_media": [media_id], "total": 1}`; 404 for unknown media.
pub async fn synapse_delete_media(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    require_admin(&req, &state).await?;
    let (server, media_id) = path.into_inner();
    if !is_ours(&state, &server) {
        return Err(synapse_bad_request("Can only delete local media"));
    }
    let media = MediaRef::parse(&server, &media_id)?;
    let exists = state
        .db
        .get_media(&media.origin, &media.media_id)
        .await
        .map_err(db_error)?;
    if exists.is_none() {
        return Err(MatrixError::not_found("Unknown media"));
    }
    let report = run(&state, &media_scope(media)).await?;
    let ids = media_ids(&report);
    Ok(HttpResponse::Ok().json(json!({ "total": ids.len(), "deleted_media": ids })))
}

/// `DELETE /_synapse/admin/v1/users/{user_id}/media`: like Synapse, removes one page of the
/// user's media (`from`, `limit`; newest first) → `{"deleted_media": [...], "total": n}`.
pub async fn synapse_delete_user_media(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    require_admin(&req, &state).await?;
    let user_id = local_user(&state, &path.into_inner())?;
    let page: PageQuery = query::read(&req)?;
    let from = non_negative(page.from.as_deref(), "from", 0)?;
    let limit = non_negative(page.limit.as_deref(), "limit", DEFAULT_LIMIT)?;
    let (page, _) = state
        .db
        .user_media_page(&user_id, from, limit, MediaOrder::CreatedTs, true)
        .await
        .map_err(db_error)?;
    let mut deleted = Vec::new();
    for media in page {
        let scope = PurgeScope::Media {
            origin: media.origin,
            media_id: media.media_id,
        };
        let report = run(&state, &scope).await?;
        deleted.extend(media_ids(&report).into_iter().map(str::to_owned));
    }
    Ok(HttpResponse::Ok().json(json!({ "total": deleted.len(), "deleted_media": deleted })))
}

/// `POST /_synapse/admin/v1/purge_media_cache?before_ts=MS`: remote media not accessed
/// since `before_ts` → `{"deleted": n}`.
pub async fn synapse_purge_media_cache(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    require_admin(&req, &state).await?;
    let report = run(&state, &remote_scope(&state, &req)?).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": report.media.len() })))
}

/// The remote purge of `before_ts`, checked as Synapse checks it.
fn remote_scope(state: &AppState, req: &HttpRequest) -> MatrixResult<PurgeScope> {
    let query: BeforeTsQuery = query::read(req)?;
    let text = query.before_ts.ok_or_else(|| {
        MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_MISSING_PARAM",
            "Missing integer query parameter 'before_ts'",
        )
    })?;
    let before_ms: i64 = text.parse().map_err(|_| {
        MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "Query parameter 'before_ts' must be an integer",
        )
    })?;
    if before_ms < 0 {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "Query parameter before_ts must be a positive integer.",
        ));
    }
    if before_ms < EARLIEST_BEFORE_TS_MS {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "Query parameter before_ts you provided is from the year 1970. \
             Double check that you are providing a timestamp in milliseconds.",
        ));
    }
    Ok(PurgeScope::RemoteNotAccessedSince {
        local_origins: state
            .config()
            .homeservers
            .iter()
            .map(|hs| hs.name.to_ascii_lowercase())
            .collect(),
        before_ms,
    })
}

/// `POST /_media_repo/v1/admin/purge/media/{server}/{media_id}` (any origin) → the report.
pub async fn purge_media(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let (_, media) = admin_and_media(&req, &state, path).await?;
    let scope = media_scope(media);
    Ok(HttpResponse::Ok().json(run(&state, &scope).await?))
}

/// `POST /_media_repo/v1/admin/purge/user/{user_id}` (all of a local user's media) → the report.
pub async fn purge_user(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    require_admin(&req, &state).await?;
    let user_id = local_user(&state, &path.into_inner())?;
    Ok(HttpResponse::Ok().json(run(&state, &PurgeScope::User { user_id }).await?))
}

/// `POST /_media_repo/v1/admin/purge/quarantined` → the report.
pub async fn purge_quarantined(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    require_admin(&req, &state).await?;
    Ok(HttpResponse::Ok().json(run(&state, &PurgeScope::Quarantined).await?))
}

/// `POST /_media_repo/v1/admin/purge/remote?before_ts=MS` → the report.
pub async fn purge_remote(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    require_admin(&req, &state).await?;
    let scope = remote_scope(&state, &req)?;
    Ok(HttpResponse::Ok().json(run(&state, &scope).await?))
}

/// `POST /_media_repo/v1/admin/purge/orphans`: the orphan-file sweep →
/// `{"files_checked", "files_removed", "bytes_removed"}`.
pub async fn purge_orphans(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    require_admin(&req, &state).await?;
    let sweep = purger(&state)
        .sweep_orphans()
        .await
        .map_err(|err| MatrixError::internal("orphan sweep failed", &err))?;
    Ok(HttpResponse::Ok().json(json!({
        "files_checked": sweep.files_checked,
        "files_removed": sweep.files_removed,
        "bytes_removed": sweep.bytes_removed,
    })))
}
