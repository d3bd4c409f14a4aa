//! Downloads: `GET`/`HEAD` of `/_matrix/client/v1/media/download/{server}/{id}[/{name}]`
//! (authenticated) and the legacy `/_matrix/media/{v3,r0}/download/...` (unauthenticated,
//! frozen for recent media).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use mr_config::Config;
use mr_storage::MediaRecord;
use serde::Deserialize;

use super::body::MediaBody;
use super::remote::{self, FetchState, RemoteHead};
use super::row_headers::RowHeaders;
use super::{now_ms, MediaRef};
use crate::error::{MatrixError, MatrixResult};
use crate::headers::{content_disposition, content_type_value};
use crate::query::{self, DownloadQuery};
use crate::range::ByteRange;
use crate::state::AppState;

/// Media never changes under its id, so clients may keep it for a year.
const CACHE_CONTROL: &str = "private, max-age=31536000, immutable";

/// Which family of paths a download came in on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/_matrix/client/v1/media/download`: needs an access token.
    Authenticated,
    /// `/_matrix/media/{v3,r0}/download`: no token, subject to the freeze.
    Legacy,
}

/// `{server}/{media_id}[/{file_name}]` of a download path (route names in routes.rs).
#[derive(Deserialize)]
pub struct DownloadPath {
    server: String,
    media_id: String,
    /// Overrides the uploaded filename in Content-Disposition.
    file_name: Option<String>,
}

pub async fn authenticated(
    req: HttpRequest,
    path: web::Path<DownloadPath>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    serve(req, state, Api::Authenticated, path.into_inner()).await
}

pub async fn legacy(
    req: HttpRequest,
    path: web::Path<DownloadPath>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    serve(req, state, Api::Legacy, path.into_inner()).await
}

impl DownloadPath {
    /// The path of a request routed by its [`super::plain_tail`] (what is left after the scope).
    fn from_plain(req: &HttpRequest) -> MatrixResult<DownloadPath> {
        let (server, media_id, file_name) = super::plain_tail(req.match_info().unprocessed())
            .ok_or_else(MatrixError::unrecognized)?;
        Ok(DownloadPath {
            server: server.to_owned(),
            media_id: media_id.to_owned(),
            file_name: file_name.map(str::to_owned),
        })
    }
}

/// [`authenticated`] for a path with a [`super::plain_tail`].
pub async fn authenticated_plain(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let path = DownloadPath::from_plain(&req)?;
    serve(req, state, Api::Authenticated, path).await
}

/// [`legacy`] for a path with a [`super::plain_tail`].
pub async fn legacy_plain(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let path = DownloadPath::from_plain(&req)?;
    serve(req, state, Api::Legacy, path).await
}

/// How long to wait for a created-but-not-uploaded media (`timeout_ms`).
pub(crate) fn wait_limit(query: &DownloadQuery, config: &Config) -> MatrixResult<Duration> {
    let asked = match &query.timeout_ms {
        None => config.downloads.default_timeout_ms,
        Some(text) => text
            .parse::<u64>()
            .map_err(|_| MatrixError::bad_param("timeout_ms must be a non-negative integer"))?,
    };
    Ok(Duration::from_millis(
        asked.min(config.downloads.max_timeout_ms),
    ))
}

/// The media's row (through the process's row cache: no query for a media served in the
/// last `MEDIA_ROW_TTL`), waiting up to `wait` for a pending async upload to arrive.
pub(crate) async fn find_media(
    state: &AppState,
    media: &MediaRef,
    wait: Duration,
) -> MatrixResult<Arc<MediaRecord>> {
    let deadline = Instant::now() + wait;
    let db_err =
        |err: mr_storage::Error| MatrixError::internal("reading media metadata failed", &err);
    loop {
        if let Some(record) = state
            .db
            .media_row(&media.origin, &media.media_id)
            .await
            .map_err(db_err)?
        {
            return Ok(record);
        }
        let pending = state
            .db
            .get_pending(&media.origin, &media.media_id)
            .await
            .map_err(db_err)?;
        match pending {
            Some(p) if p.expires_at_ms > now_ms() => {
                if Instant::now() >= deadline {
                    return Err(MatrixError::not_yet_uploaded());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(
                    left,
                    state.pending.wait_a_little(&media.origin, &media.media_id),
                )
                .await;
            }
            _ => return Err(MatrixError::not_found("Media not found")),
        }
    }
}

/// Whether `origin` is one of the homeservers this repo serves (its media is never fetched).
pub(crate) fn is_ours(config: &Config, origin: &str) -> bool {
    config
        .homeservers
        .iter()
        .any(|hs| hs.name.eq_ignore_ascii_case(origin))
}

/// A legacy (unauthenticated) download fetches remote media only with the freeze off, and
/// never with `allow_remote=false` (servers set it to avoid fetch loops).
fn may_fetch_for_legacy(query: &DownloadQuery, config: &Config) -> bool {
    !config.downloads.legacy_freeze.enabled && query.allow_remote.as_deref() != Some("false")
}

/// Legacy paths only serve media that arrived before the freeze.
pub(crate) fn is_frozen(config: &Config, record: &MediaRecord) -> bool {
    let freeze = &config.downloads.legacy_freeze;
    freeze.enabled
        && freeze
            .after_ms
            .is_none_or(|after| record.created_at_ms >= after)
}

async fn serve(
    req: HttpRequest,
    state: web::Data<AppState>,
    api: Api,
    path: DownloadPath,
) -> MatrixResult<HttpResponse> {
    let user = match api {
        Api::Authenticated => Some(state.auth.authenticate(&req).await?),
        Api::Legacy => None,
    };
    let DownloadPath {
        server,
        media_id,
        file_name,
    } = path;
    let media = MediaRef::from_owned(server, media_id)?;
    // A plain GET is answered while remote bytes arrive; HEAD and ranges wait for the
    // stored media (its size and hash are known only then).
    let streamable = req.method() == Method::GET && !req.headers().contains_key(header::RANGE);
    let record = match locate(&req, &state, api, user.as_ref(), &media, streamable).await? {
        Located::Stored(record) => record,
        Located::Arriving(head, progress) => {
            let filename = file_name.or(head.upload_name);
            let mut response = HttpResponse::Ok();
            response
                .insert_header((header::CONTENT_TYPE, content_type_value(&head.content_type)))
                .insert_header((
                    header::CONTENT_DISPOSITION,
                    content_disposition(&head.content_type, filename.as_deref()),
                ))
                .insert_header((
                    header::CACHE_CONTROL,
                    HeaderValue::from_static(CACHE_CONTROL),
                ));
            return Ok(response.streaming(remote::tail_body(state.clone(), progress)));
        }
    };
    let headers = match file_name.as_deref() {
        Some(name) => RowHeaders::build(&record, Some(name)),
        None => RowHeaders::of_cached(&record),
    };
    respond_with(&req, &state, &record, headers, None).await
}

/// Where a media is: stored (ours, or a remote one we have or just fetched), or arriving
/// from its origin right now.
pub enum Located {
    Stored(Arc<MediaRecord>),
    Arriving(
        RemoteHead,
        tokio::sync::watch::Receiver<remote::FetchProgress>,
    ),
}

/// Finds the media's row (waiting up to `timeout_ms` for a pending upload); for another
/// server's media not stored yet, fetches it as the user's homeserver (legacy paths: only
/// with the freeze off and `allow_remote` not false). With `streamable`, returns as soon as
/// a large remote media starts arriving. Legacy paths refuse media under the freeze.
pub async fn locate(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    api: Api,
    user: Option<&crate::auth::User>,
    media: &MediaRef,
    streamable: bool,
) -> MatrixResult<Located> {
    let config = state.config();
    let query: DownloadQuery = query::read(req)?;
    let wait = wait_limit(&query, &config)?;
    let record = match find_media(state, media, wait).await {
        Err(err) if err.status == StatusCode::NOT_FOUND && !is_ours(&config, &media.origin) => {
            let as_server = match user {
                Some(user) => user.homeserver.clone(),
                None if may_fetch_for_legacy(&query, &config) => {
                    state.auth.homeserver_for(req)?.name
                }
                None => return Err(err),
            };
            let progress = state.remote.start(state, media, &as_server, wait).await?;
            if !streamable {
                Arc::new(remote::wait_for_stored(progress).await?)
            } else {
                match remote::wait_for_bytes(progress.clone()).await? {
                    FetchState::Stored(record) => Arc::new(record),
                    FetchState::Arriving(head) => return Ok(Located::Arriving(head, progress)),
                }
            }
        }
        other => other?,
    };
    // From the row in hand, before any cache lookup: costs nothing.
    super::quarantine::refuse_quarantined(&record)?;
    if api == Api::Legacy && is_frozen(&config, &record) {
        return Err(MatrixError::not_found(
            "Media not found (this media is only served on the authenticated endpoint)",
        ));
    }
    state.access.note(&record.origin, &record.media_id);
    Ok(Located::Stored(record))
}

/// The answer when `record`'s bytes cannot be opened: 404 when its file is gone (see
/// [`file_missing`]), else 500.
pub(crate) async fn open_failed(
    state: &AppState,
    record: &MediaRecord,
    err: mr_storage::Error,
) -> MatrixError {
    match err {
        mr_storage::Error::NotFound { .. } => file_missing(state, record).await,
        other => MatrixError::internal("opening media content failed", &other),
    }
}

/// The answer when `record`'s file is not in the datastore. The row may be a cached copy
/// from before another process purged the media (`MEDIA_ROW_TTL`): it is forgotten, and
/// only a row the database still holds is worth an ERROR.
async fn file_missing(state: &AppState, record: &MediaRecord) -> MatrixError {
    state.db.forget_media_row(&record.origin, &record.media_id);
    let still_there = state
        .db
        .get_media(&record.origin, &record.media_id)
        .await
        .map(|row| row.is_some_and(|row| row.location == record.location))
        .unwrap_or(true);
    if still_there {
        tracing::error!(origin = %record.origin, media_id = %record.media_id, location = %record.location, "media row exists but its file is missing");
        MatrixError::not_found("Media content is missing")
    } else {
        MatrixError::not_found("Media not found")
    }
}

/// Answers with the bytes of `record` (whole, or the asked range; HEAD: headers only) and
/// `headers` (its [`RowHeaders`]), from `fresh` when it holds them (a thumbnail just made,
/// still being stored), else the cache when it has them, else the datastore.
pub async fn respond_with(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    record: &MediaRecord,
    headers: RowHeaders,
    fresh: Option<bytes::Bytes>,
) -> MatrixResult<HttpResponse> {
    let size = record.size_bytes;
    let range = ByteRange::parse(
        req.headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok()),
        size,
    );
    let (status, start, end) = match range {
        ByteRange::Whole => (StatusCode::OK, 0, size.saturating_sub(1)),
        ByteRange::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        ByteRange::Unsatisfiable => {
            let mut response =
                actix_web::ResponseError::error_response(&MatrixError::range_not_satisfiable(size));
            if let Ok(value) = header::HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    let length = if size == 0 { 0 } else { end - start + 1 };

    let mut response = HttpResponse::build(status);
    let RowHeaders {
        content_type,
        content_disposition,
        etag,
    } = headers;
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_DISPOSITION, content_disposition))
        .insert_header((header::ACCEPT_RANGES, HeaderValue::from_static("bytes")))
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ));
    // A stored media's sha256 is hex, so the ETag is always a valid value.
    if let Some(etag) = etag {
        response.insert_header((header::ETAG, etag));
    }
    if status == StatusCode::PARTIAL_CONTENT {
        response.insert_header((header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}")));
    }
    if req.method() == Method::HEAD {
        return Ok(response.body(SizedStream::new(
            length,
            futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>(),
        )));
    }
    let opened = match fresh {
        Some(bytes) => Ok(MediaBody::in_memory(state.clone(), bytes, start, end)),
        None => {
            MediaBody::open(
                state.clone(),
                &record.sha256,
                &record.location,
                size,
                start,
                end,
            )
            .await
        }
    };
    let mut body = match opened {
        Ok(body) => body,
        Err(err) => return Err(open_failed(state, record, err).await),
    };
    Ok(match body.take_ready() {
        Some(bytes) => response.body(bytes),
        None => response.body(SizedStream::new(length, body.into_stream())),
    })
}
