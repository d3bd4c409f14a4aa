//! Thumbnails: `GET /_matrix/client/v1/media/thumbnail/{server}/{id}` and the legacy
//! `/_matrix/media/{v3,r0}/thumbnail/...` (frozen like downloads).
//!
//! A request gets the smallest stored thumbnail of its method at least as large as asked in
//! both dimensions. Without one, a thumbnail is made for the smallest configured size that
//! covers the request (or the asked size, capped at [`MAX_GENERATED_DIMENSION`]), stored as a
//! content-addressed object with a row, and served like any media (cache read-through,
//! ranges, HEAD). Images are decoded and resized by `mr_thumbnail` on the blocking pool, at
//! most [`Thumbnailer::workers`] at once behind a queue of [`MAX_QUEUED`] (full: 429), and
//! one generation per (media, size, method, animated) however many requests ask at once.
//! Uploads of images get the configured sizes made in the background.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use dashmap::DashMap;
use mr_config::{Config, ThumbnailMethod};
use mr_storage::{content, MediaRecord, ThumbnailRecord};
use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};
use serde::Deserialize;
use tokio::sync::{OnceCell, Semaphore};
use tracing::{debug, info, warn};

use super::download::{self, Api, Located};
use super::{now_ms, query_param, MediaRef};
use crate::error::{MatrixError, MatrixResult};
use crate::state::AppState;

/// Largest side a thumbnail is made at when no configured size covers the request.
pub const MAX_GENERATED_DIMENSION: u32 = 1600;
/// Thumbnail jobs that may wait for a worker; one more answers 429.
pub const MAX_QUEUED: usize = 64;
/// Seconds a client refused for a full queue is told to wait.
const RETRY_BUSY_SECS: u64 = 2;

static GENERATIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "media_repo_thumbnail_generations_total",
        "Thumbnails generated (each stored once; later requests are served the stored one)"
    )
    .expect("metric registered once")
});

static IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "media_repo_thumbnail_pool_in_flight",
        "Thumbnail jobs decoding or resizing now (never more than the pool's workers)"
    )
    .expect("metric registered once")
});

static QUEUED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "media_repo_thumbnail_queue",
        "Thumbnail jobs waiting for a worker"
    )
    .expect("metric registered once")
});

type Generated = Result<ThumbnailRecord, MatrixError>;

/// The bounded pool and the generations in progress.
pub struct Thumbnailer {
    workers: usize,
    permits: Semaphore,
    queued: AtomicUsize,
    in_progress: DashMap<String, Arc<OnceCell<Generated>>>,
}

impl Default for Thumbnailer {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        LazyLock::force(&GENERATIONS);
        LazyLock::force(&IN_FLIGHT);
        LazyLock::force(&QUEUED);
        Thumbnailer {
            workers,
            permits: Semaphore::new(workers),
            queued: AtomicUsize::new(0),
            in_progress: DashMap::new(),
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asked {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
    pub animated: bool,
}

fn method_name(method: ThumbnailMethod) -> &'static str {
    match method {
        ThumbnailMethod::Crop => "crop",
        ThumbnailMethod::Scale => "scale",
    }
}

/// `width`, `height` (required, positive), `method` (`crop` | `scale`, default `scale`),
/// `animated` (`true` | `false`, default false).
pub fn asked(req: &HttpRequest) -> MatrixResult<Asked> {
    let dimension = |name: &'static str| -> MatrixResult<u32> {
        let text = query_param(req, name).ok_or_else(|| {
            MatrixError::new(
                StatusCode::BAD_REQUEST,
                "M_MISSING_PARAM",
                format!("Missing {name}"),
            )
        })?;
        text.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| MatrixError::bad_param(format!("{name} must be a positive integer")))
    };
    let method = match query_param(req, "method").as_deref() {
        None | Some("scale") => ThumbnailMethod::Scale,
        Some("crop") => ThumbnailMethod::Crop,
        Some(_) => return Err(MatrixError::bad_param("method must be crop or scale")),
    };
    let animated = match query_param(req, "animated").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(MatrixError::bad_param("animated must be true or false")),
    };
    Ok(Asked {
        width: dimension("width")?,
        height: dimension("height")?,
        method,
        animated,
    })
}

/// `{server}/{media_id}` of a thumbnail path.
#[derive(Deserialize)]
pub struct ThumbnailPath {
    server: String,
    media_id: String,
}

pub async fn authenticated(
    req: HttpRequest,
    path: web::Path<ThumbnailPath>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    serve(req, state, Api::Authenticated, path.into_inner()).await
}

pub async fn legacy(
    req: HttpRequest,
    path: web::Path<ThumbnailPath>,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    serve(req, state, Api::Legacy, path.into_inner()).await
}

async fn serve(
    req: HttpRequest,
    state: web::Data<AppState>,
    api: Api,
    path: ThumbnailPath,
) -> MatrixResult<HttpResponse> {
    let user = match api {
        Api::Authenticated => Some(state.auth.authenticate(&req).await?),
        Api::Legacy => None,
    };
    let media = MediaRef::parse(&path.server, &path.media_id)?;
    let asked = asked(&req)?;
    let Located::Stored(record) =
        download::locate(&req, &state, api, user.as_ref(), &media, false).await?
    else {
        return Err(MatrixError::internal(
            "a remote media was not stored before its thumbnail",
            &"unexpected",
        ));
    };
    let thumbnail = state
        .thumbnails
        .thumbnail_of(&state, &record, asked)
        .await?;
    let served = as_media(&thumbnail);
    download::respond(&req, &state, &served, served.upload_name.as_deref()).await
}

/// A stored thumbnail as the media the download path serves.
pub fn as_media(thumbnail: &ThumbnailRecord) -> MediaRecord {
    let extension = match thumbnail.content_type.as_str() {
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        _ => "png",
    };
    MediaRecord {
        origin: thumbnail.origin.clone(),
        media_id: thumbnail.media_id.clone(),
        user_id: None,
        content_type: thumbnail.content_type.clone(),
        upload_name: Some(format!(
            "thumbnail-{}x{}.{extension}",
            thumbnail.out_width, thumbnail.out_height
        )),
        size_bytes: thumbnail.size_bytes,
        sha256: thumbnail.sha256.clone(),
        datastore_id: thumbnail.datastore_id.clone(),
        location: thumbnail.location.clone(),
        created_at_ms: thumbnail.created_at_ms,
        quarantined_by: None,
        safe_from_quarantine: false,
    }
}

/// The size to make for `asked`: the smallest configured size of its method covering it,
/// else the asked size capped at [`MAX_GENERATED_DIMENSION`].
fn target(config: &Config, asked: Asked) -> (u32, u32) {
    config
        .thumbnails
        .sizes
        .iter()
        .filter(|s| s.method == asked.method && s.width >= asked.width && s.height >= asked.height)
        .min_by_key(|s| u64::from(s.width) * u64::from(s.height))
        .map(|s| (s.width, s.height))
        .unwrap_or((
            asked.width.min(MAX_GENERATED_DIMENSION),
            asked.height.min(MAX_GENERATED_DIMENSION),
        ))
}

/// The smallest stored thumbnail of `asked`'s method covering it in both dimensions.
async fn covering(
    state: &web::Data<AppState>,
    media: &MediaRecord,
    asked: Asked,
) -> MatrixResult<Option<ThumbnailRecord>> {
    let stored = state
        .db
        .thumbnails_of(
            &media.origin,
            &media.media_id,
            method_name(asked.method),
            asked.animated,
        )
        .await
        .map_err(|err| MatrixError::internal("reading thumbnails failed", &err))?;
    Ok(stored
        .into_iter()
        .filter(|t| t.width >= asked.width && t.height >= asked.height)
        .min_by_key(|t| u64::from(t.width) * u64::from(t.height)))
}

impl Thumbnailer {
    /// How many thumbnails are made at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The thumbnail `asked` of `media`: a stored one, or one made now.
    pub async fn thumbnail_of(
        &self,
        state: &web::Data<AppState>,
        media: &MediaRecord,
        asked: Asked,
    ) -> Generated {
        let config = state.config();
        if !config.thumbnails.enabled {
            return Err(MatrixError::not_found(
                "Thumbnails are turned off on this server",
            ));
        }
        if let Some(thumbnail) = covering(state, media, asked).await? {
            return Ok(thumbnail);
        }
        let (width, height) = target(&config, asked);
        let key = format!(
            "{}/{}/{width}x{height}/{}/{}",
            media.origin,
            media.media_id,
            method_name(asked.method),
            asked.animated
        );
        let cell = self.in_progress.entry(key.clone()).or_default().clone();
        let result = cell
            .get_or_init(|| async {
                // A generation that finished between our look and taking the cell stored it.
                match covering(state, media, asked).await? {
                    Some(thumbnail) => Ok(thumbnail),
                    None => self.generate(state, media, width, height, asked).await,
                }
            })
            .await
            .clone();
        self.in_progress
            .remove_if(&key, |_, current| Arc::ptr_eq(current, &cell));
        result
    }

    /// Makes and stores one thumbnail.
    async fn generate(
        &self,
        state: &web::Data<AppState>,
        media: &MediaRecord,
        width: u32,
        height: u32,
        asked: Asked,
    ) -> Generated {
        let config = state.config();
        let remote = !config
            .homeservers
            .iter()
            .any(|hs| hs.name.eq_ignore_ascii_case(&media.origin));
        let too_large = |why: String| {
            if remote {
                MatrixError::new(StatusCode::BAD_GATEWAY, "M_TOO_LARGE", why)
            } else {
                MatrixError::too_large(why)
            }
        };
        let limits = mr_thumbnail::Limits {
            max_source_bytes: config.thumbnails.max_source_bytes,
            max_pixels: config.thumbnails.max_pixels,
        };
        if media.size_bytes > limits.max_source_bytes {
            return Err(too_large(format!(
                "The media is larger than the {} bytes this server thumbnails",
                limits.max_source_bytes
            )));
        }
        if self.queued.load(Ordering::Acquire) >= MAX_QUEUED {
            return Err(MatrixError::limit_exceeded(
                "Too many thumbnails are being made; try again shortly",
                RETRY_BUSY_SECS,
            ));
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        QUEUED.inc();
        let permit = self.permits.acquire().await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        QUEUED.dec();
        let _permit = permit.map_err(|err| MatrixError::internal("thumbnail pool closed", &err))?;
        let path = state
            .datastore
            .path_of(&media.location)
            .map_err(|err| MatrixError::internal("locating media failed", &err))?;
        let request = mr_thumbnail::Request {
            width,
            height,
            method: match asked.method {
                ThumbnailMethod::Crop => mr_thumbnail::Method::Crop,
                ThumbnailMethod::Scale => mr_thumbnail::Method::Scale,
            },
            animated: asked.animated,
        };
        IN_FLIGHT.inc();
        let made = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            mr_thumbnail::thumbnail(&bytes, &request, &limits).map_err(|e| match e {
                mr_thumbnail::Error::TooLarge(why) => format!("too large: {why}"),
                other => other.to_string(),
            })
        })
        .await;
        IN_FLIGHT.dec();
        let made = match made {
            Ok(Ok(made)) => made,
            Ok(Err(why)) if why.starts_with("too large: ") => return Err(too_large(why)),
            Ok(Err(why)) => {
                debug!(origin = %media.origin, media_id = %media.media_id, reason = %why, "cannot thumbnail");
                return Err(MatrixError::new(
                    StatusCode::BAD_REQUEST,
                    "M_UNKNOWN",
                    format!("Cannot generate a thumbnail of this media: {why}"),
                ));
            }
            Err(err) => return Err(MatrixError::internal("thumbnail task failed", &err)),
        };
        GENERATIONS.inc();
        self.store(state, media, width, height, asked, made).await
    }

    /// Stores a made thumbnail under a claim and records its row.
    async fn store(
        &self,
        state: &web::Data<AppState>,
        media: &MediaRecord,
        width: u32,
        height: u32,
        asked: Asked,
        made: mr_thumbnail::Thumbnail,
    ) -> Generated {
        let internal = |what: &str, err: &dyn std::fmt::Display| MatrixError::internal(what, err);
        let mut writer = state
            .datastore
            .writer(made.bytes.len() as u64)
            .map_err(|e| internal("opening a thumbnail file failed", &e))?;
        writer
            .write(bytes::Bytes::from(made.bytes))
            .await
            .map_err(|e| internal("writing a thumbnail failed", &e))?;
        let staged = writer
            .finish()
            .await
            .map_err(|e| internal("finishing a thumbnail failed", &e))?;
        let (object, claim) =
            content::commit_claimed(&state.db, &state.datastore, staged, now_ms())
                .await
                .map_err(|e| internal("storing a thumbnail failed", &e))?;
        let row = ThumbnailRecord {
            origin: media.origin.clone(),
            media_id: media.media_id.clone(),
            width,
            height,
            method: method_name(asked.method).to_owned(),
            animated: asked.animated,
            content_type: made.content_type.to_owned(),
            out_width: made.width,
            out_height: made.height,
            size_bytes: object.size,
            sha256: object.sha256.clone(),
            datastore_id: state.datastore.id().to_owned(),
            location: object.location.clone(),
            created_at_ms: now_ms(),
        };
        let inserted = state.db.insert_thumbnail(&row).await;
        claim.release().await;
        match inserted {
            Ok(()) => Ok(row),
            // Another process made it first: theirs is served, ours goes if unreferenced.
            Err(mr_storage::Error::AlreadyExists { .. }) => {
                let _ = content::remove_unreferenced(&state.db, &state.datastore, &object.location)
                    .await;
                state
                    .db
                    .thumbnails_of(&media.origin, &media.media_id, &row.method, row.animated)
                    .await
                    .map_err(|e| internal("reading thumbnails failed", &e))?
                    .into_iter()
                    .find(|t| t.width == width && t.height == height)
                    .ok_or_else(|| internal("a thumbnail row vanished", &"after a conflict"))
            }
            Err(err) => {
                let _ = content::remove_unreferenced(&state.db, &state.datastore, &object.location)
                    .await;
                Err(internal("recording a thumbnail failed", &err))
            }
        }
    }

    /// Makes the configured sizes of a freshly uploaded image in the background (the upload
    /// answer is not delayed). Skipped for non-images; a full queue skips sizes (they are made
    /// on first request instead).
    pub fn pregenerate(state: &web::Data<AppState>, media: MediaRecord) {
        let config = state.config();
        if !config.thumbnails.enabled || !media.content_type.starts_with("image/") {
            return;
        }
        let state = state.clone();
        actix_web::rt::spawn(async move {
            for size in &config.thumbnails.sizes {
                let asked = Asked {
                    width: size.width,
                    height: size.height,
                    method: size.method,
                    animated: false,
                };
                match state.thumbnails.thumbnail_of(&state, &media, asked).await {
                    Ok(_) => {}
                    Err(err) if err.status == StatusCode::BAD_REQUEST => {
                        debug!(reason = %err.message, "upload is not thumbnailable; no pre-generation");
                        return;
                    }
                    Err(err) => warn!(reason = %err.message, "pre-generating a thumbnail failed"),
                }
            }
            info!(origin = %media.origin, media_id = %media.media_id, "thumbnails pre-generated");
        });
    }
}
