//! Serving our media to other servers: `GET /_matrix/federation/v1/media/download/{id}`
//! and `…/thumbnail/{id}`.
//!
//! The path names no server: the media is `mxc://<destination>/<id>`, where the destination
//! comes from the request's X-Matrix header and must be one of our homeservers. The
//! signature is checked against the origin's key (fetched from the origin, cached). Only
//! media of our own homeservers is served, never media we fetched from elsewhere. The answer
//! is `multipart/mixed`: `{}`, then the bytes with their own Content-Type and
//! Content-Disposition, streamed from the cache or the datastore like any download.

mod multipart_body;

use actix_web::body::SizedStream;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use mr_federation::{parse_header, verify};

use crate::error::{MatrixError, MatrixResult};
use crate::headers::content_disposition;
use crate::media::body::MediaBody;
use crate::media::{download, MediaRef};
use crate::query::{self, DownloadQuery};
use crate::state::AppState;
use multipart_body::MultipartFrames;

fn unauthorized(why: impl std::fmt::Display) -> MatrixError {
    tracing::info!(reason = %why, "federation request refused");
    MatrixError::new(
        StatusCode::UNAUTHORIZED,
        "M_UNAUTHORIZED",
        format!("Federation request not authorised: {why}"),
    )
}

/// Checks the request's X-Matrix header; returns the destination (one of ours) it was
/// signed for.
async fn authenticate(req: &HttpRequest, state: &AppState) -> MatrixResult<String> {
    let header_value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("no Authorization header"))?
        .to_str()
        .map_err(|_| unauthorized("Authorization header is not visible ASCII"))?;
    let signed = parse_header(header_value).map_err(unauthorized)?;
    let config = state.config();
    let ours: Vec<&str> = config
        .homeservers
        .iter()
        .map(|hs| hs.name.as_str())
        .collect();
    let destination = match &signed.destination {
        Some(destination) => destination.clone(),
        // A sender from before destinations were signed: only unambiguous with one name.
        None => match ours.as_slice() {
            [only] => (*only).to_owned(),
            _ => return Err(unauthorized("the X-Matrix header names no destination")),
        },
    };
    let key = state
        .remote
        .verifying_key(&signed.origin, &signed.key_id)
        .await;
    let uri = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or_else(|| req.path());
    verify(&signed, req.method().as_str(), uri, None, &ours, |_, _| key).map_err(unauthorized)?;
    Ok(destination)
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`.
pub async fn media_download(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let media = signed_media(&req, &state, &path.into_inner()).await?;
    let record = our_media(&req, &state, &media).await?;
    let disposition = content_disposition(&record.content_type, record.upload_name.as_deref());
    multipart_answer(&state, &record, disposition, None).await
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`: the same thumbnail our clients
/// get (stored, so byte-identical), as a multipart answer.
pub async fn media_thumbnail(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let media = signed_media(&req, &state, &path.into_inner()).await?;
    // Before any wait for a pending upload, as on the client endpoint.
    let asked = crate::media::thumbnail::asked(&req)?;
    let record = our_media(&req, &state, &media).await?;
    let thumbnail = state
        .thumbnails
        .thumbnail_of(&state, &record, asked)
        .await?;
    let served = crate::media::thumbnail::as_media(&thumbnail.record);
    let disposition = content_disposition(&served.content_type, served.upload_name.as_deref());
    multipart_answer(&state, &served, disposition, thumbnail.fresh).await
}

/// The media an X-Matrix-checked request names: `media_id` of the homeserver (one of ours)
/// it was signed for.
async fn signed_media(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    media_id: &str,
) -> MatrixResult<MediaRef> {
    let destination = authenticate(req, state).await?;
    MediaRef::parse(&destination, media_id)
}

/// The row of `media` (never remote media: its origin is one of ours), waiting up to the
/// request's `timeout_ms` for an async upload still pending, as client downloads do (then
/// 504 `M_NOT_YET_UPLOADED`).
async fn our_media(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    media: &MediaRef,
) -> MatrixResult<std::sync::Arc<mr_storage::MediaRecord>> {
    let query: DownloadQuery = query::read(req)?;
    let wait = download::wait_limit(&query, &state.config())?;
    let record = download::find_media(state, media, wait).await?;
    crate::media::quarantine::refuse_quarantined(&record)?;
    state.access.note(&record.origin, &record.media_id);
    Ok(record)
}

/// `{}` and the bytes of `record`, streamed from the cache or the datastore, or from
/// `fresh` when they are at hand (a thumbnail just made, still being stored).
async fn multipart_answer(
    state: &web::Data<AppState>,
    record: &mr_storage::MediaRecord,
    disposition: header::HeaderValue,
    fresh: Option<bytes::Bytes>,
) -> MatrixResult<HttpResponse> {
    let size = record.size_bytes;
    let body = match fresh {
        Some(bytes) => MediaBody::in_memory(state.clone(), bytes, 0, size.saturating_sub(1)),
        None => match MediaBody::open(
            state.clone(),
            &record.sha256,
            &record.location,
            size,
            0,
            size.saturating_sub(1),
        )
        .await
        {
            Ok(body) => body,
            // A file gone from the datastore is 404, as on the client endpoints.
            Err(err) => return Err(download::open_failed(state, record, err).await),
        },
    };
    let frames = MultipartFrames::new(
        &record.content_type,
        disposition.to_str().unwrap_or("attachment"),
    );
    let total = frames.total_len(size);
    let content_type = frames.content_type();
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .body(SizedStream::new(total, frames.wrap(body.into_stream()))))
}
