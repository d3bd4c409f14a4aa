//! Thumbnails: `GET /_matrix/client/v1/media/thumbnail/{server}/{id}` and the legacy
//! `/_matrix/media/{v3,r0}/thumbnail/...` (frozen like downloads).
//!
//! A request gets the smallest stored thumbnail of its method at least as large as asked in
//! both dimensions (unless the size it maps to is being made: then that one). Without one, a thumbnail is made for the smallest configured size that
//! covers the request (or the asked size, capped at [`MAX_GENERATED_DIMENSION`]), stored as a
//! content-addressed object with a row, and served like any media (cache read-through,
//! ranges, HEAD). Requests that joined a generation get its bytes from memory as soon as
//! it is made, while it is being stored (the claim is held until the row exists, so
//! requests meanwhile join it rather than make it again). Images are decoded and resized by `mr_thumbnail` on the blocking pool, at
//! most [`Thumbnailer::workers`] at once behind a queue of [`MAX_QUEUED`] (full: 429), and
//! one generation per (media, size, method, animated) however many requests ask at once.
//! Uploads of images get the configured sizes made in the background.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use dashmap::DashMap;
use futures_util::FutureExt;
use mr_config::{Config, ThumbnailMethod};
use mr_storage::{content, MediaRecord, ThumbnailRecord};
use prometheus::{register_int_counter, register_int_gauge, IntCounter, IntGauge};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn, Instrument};

use super::body::fill_from_datastore;
use super::download::{self, Api, Located};
use super::early_thumbnails::EarlyThumbnails;
use super::row_headers::RowHeaders;
use super::{now_ms, MediaRef};
use crate::error::{MatrixError, MatrixResult};
use crate::query::{self, ThumbnailQuery};
use crate::state::AppState;

/// Largest side a thumbnail is made at when no configured size covers the request.
pub const MAX_GENERATED_DIMENSION: u32 = 1600;
/// Sizes other than the configured ones stored per media, method and animation. Beyond,
/// a request no stored thumbnail covers is made at [`MAX_GENERATED_DIMENSION`] square (at
/// least as large as any request, so never smaller than asked), which later requests of
/// any size are served: a client cannot make one media store a thumbnail for every size it
/// can name.
pub const MAX_EXTRA_SIZES_PER_MEDIA: usize = 8;
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

/// A thumbnail a request can be answered with.
#[derive(Clone, Debug)]
pub struct Ready {
    /// Its row: as stored, or as it will be once stored (location not yet known).
    pub record: ThumbnailRecord,
    /// The bytes of a thumbnail just made, served from memory while they are being stored
    /// (writing, fsyncs and rows take milliseconds a waiting client need not spend);
    /// `None` for a stored one, served from the cache or the datastore.
    pub fresh: Option<bytes::Bytes>,
}

impl Ready {
    fn stored(record: ThumbnailRecord) -> Ready {
        Ready {
            record,
            fresh: None,
        }
    }
}

type Generated = Result<Ready, MatrixError>;

/// A generation in progress as others see it: its result, once there is one. A closed
/// channel without a result means the generation was given up (its request went away):
/// a waiter then tries again.
type Waiter = watch::Receiver<Option<Generated>>;

/// A generation in progress, as held in [`Thumbnailer::in_progress`].
struct InProgress {
    waiter: Waiter,
    joins: Arc<Joins>,
}

impl InProgress {
    /// Joins the generation: its result, once there is one.
    fn join(&self) -> Waiter {
        self.joins.any.store(true, Ordering::Release);
        self.joins.notify.notify_one();
        self.waiter.clone()
    }
}

/// The requests that joined one generation, as its maker sees them.
#[derive(Default)]
struct Joins {
    /// Told each time a request joins: a queued pre-generation job then stops waiting
    /// behind other background jobs (see [`Thumbnailer::worker`]).
    notify: Notify,
    /// Some request joined: it is (or will be) answered with the fresh bytes, which do
    /// not pass the cache, so the maker fills the cache once the thumbnail is stored.
    any: AtomicBool,
}

/// The bounded pool and the generations in progress.
pub struct Thumbnailer {
    workers: usize,
    /// One per worker: every decode and resize holds one.
    permits: Arc<Semaphore>,
    /// Background (pre-generation) jobs hold one of these before a worker permit: they
    /// never take every worker, so a client's request always finds one free of them.
    background: Arc<Semaphore>,
    /// Clients' jobs waiting for a worker (at most [`MAX_QUEUED`]).
    queued: AtomicUsize,
    /// Pre-generation jobs waiting (at most [`MAX_QUEUED`]; beyond, sizes wait for a request).
    background_queued: AtomicUsize,
    /// Keyed by [`generation_key`]; one entry per thumbnail being made.
    in_progress: DashMap<String, InProgress>,
}

impl Default for Thumbnailer {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        LazyLock::force(&GENERATIONS);
        LazyLock::force(&IN_FLIGHT);
        LazyLock::force(&QUEUED);
        super::early_thumbnails::register_metrics();
        Thumbnailer {
            workers,
            permits: Arc::new(Semaphore::new(workers)),
            background: Arc::new(Semaphore::new(workers.saturating_sub(1).max(1))),
            queued: AtomicUsize::new(0),
            background_queued: AtomicUsize::new(0),
            in_progress: DashMap::new(),
        }
    }
}

/// Who waits for a job: a client (served first) or nobody yet (pre-generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Priority {
    Client,
    Background,
}

/// The right to make one thumbnail: held by one task, whose result every request asking
/// meanwhile receives. Dropped without [`Claim::publish`] (a failure, a cancelled
/// request), its waiters find the channel closed and try again; dropped after it (the
/// thumbnail is stored, or storing it failed), later requests look for the stored one.
struct Claim {
    state: web::Data<AppState>,
    key: String,
    /// Shared with a pre-generation's render thread, which asks it whether anyone waits.
    result: Arc<watch::Sender<Option<Generated>>>,
    /// Who joined ([`InProgress::join`]).
    joins: Arc<Joins>,
}

impl Claim {
    /// Registers a new generation under `key` (its vacant entry).
    fn new(
        entry: dashmap::VacantEntry<'_, String, InProgress>,
        state: &web::Data<AppState>,
        key: &str,
    ) -> Claim {
        let (result, waiter) = watch::channel(None);
        let joins = Arc::new(Joins::default());
        entry.insert(InProgress {
            waiter,
            joins: joins.clone(),
        });
        Claim {
            state: state.clone(),
            key: key.to_owned(),
            result: Arc::new(result),
            joins,
        }
    }

    /// Whether a request waits for this generation now (the map of generations in
    /// progress holds one receiver; each waiting request holds another).
    fn waited_for(result: &watch::Sender<Option<Generated>>) -> bool {
        result.receiver_count() > 1
    }

    /// Hands `result` to every request waiting and to every one joining while the claim is
    /// held (a thumbnail just made is still being stored: new requests join rather than
    /// make it again).
    fn publish(&self, result: &Generated) {
        // No receiver left is fine: nobody was waiting.
        let _ = self.result.send(Some(result.clone()));
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let ours = self.result.subscribe();
        self.state
            .thumbnails
            .in_progress
            .remove_if(&self.key, |_, current| current.waiter.same_channel(&ours));
    }
}

/// A worker of the pool, held while a job decodes and resizes.
pub(super) struct Worker {
    _background: Option<OwnedSemaphorePermit>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Worker {
    fn drop(&mut self) {
        IN_FLIGHT.dec();
    }
}

/// Either the claim on a generation, or the generation someone else holds.
enum Turn {
    Mine(Claim),
    Theirs(Waiter),
}

/// The key one generation is made under: media, size made, method, animated.
fn generation_key(media: &MediaRecord, width: u32, height: u32, asked: Asked) -> String {
    format!(
        "{}/{}/{width}x{height}/{}/{}",
        media.origin,
        media.media_id,
        method_name(asked.method),
        asked.animated
    )
}

/// Waits for another task's generation: `None` when it was given up.
async fn outcome(mut waiter: Waiter) -> Option<Generated> {
    match waiter.wait_for(Option::is_some).await {
        Ok(result) => result.clone(),
        Err(_) => None,
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
    let query: ThumbnailQuery = query::read(req)?;
    let dimension = |name: &'static str, value: &Option<String>| -> MatrixResult<u32> {
        let text = value.as_deref().ok_or_else(|| {
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
    let method = match query.method.as_deref() {
        None | Some("scale") => ThumbnailMethod::Scale,
        Some("crop") => ThumbnailMethod::Crop,
        Some(_) => return Err(MatrixError::bad_param("method must be crop or scale")),
    };
    let animated = match query.animated.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(MatrixError::bad_param("animated must be true or false")),
    };
    Ok(Asked {
        width: dimension("width", &query.width)?,
        height: dimension("height", &query.height)?,
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

impl ThumbnailPath {
    /// The path of a request routed by its [`super::plain_tail`] (what is left after the
    /// scope); a thumbnail path has no file name.
    fn from_plain(req: &HttpRequest) -> MatrixResult<ThumbnailPath> {
        match super::plain_tail(req.match_info().unprocessed()) {
            Some((server, media_id, None)) => Ok(ThumbnailPath {
                server: server.to_owned(),
                media_id: media_id.to_owned(),
            }),
            _ => Err(MatrixError::unrecognized()),
        }
    }
}

/// [`authenticated`] for a path with a [`super::plain_tail`].
pub async fn authenticated_plain(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let path = ThumbnailPath::from_plain(&req)?;
    serve(req, state, Api::Authenticated, path).await
}

/// [`legacy`] for a path with a [`super::plain_tail`].
pub async fn legacy_plain(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> MatrixResult<HttpResponse> {
    let path = ThumbnailPath::from_plain(&req)?;
    serve(req, state, Api::Legacy, path).await
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
    let served = as_media(&thumbnail.record);
    let headers = RowHeaders::build(&served, served.upload_name.as_deref());
    download::respond_with(&req, &state, &served, headers, thumbnail.fresh).await
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

/// The size to make for `asked` given what is `stored` of its method: [`target`], unless
/// that is not a configured size and [`MAX_EXTRA_SIZES_PER_MEDIA`] such sizes are stored
/// already; then the largest size made.
fn bounded_target(config: &Config, asked: Asked, stored: &[ThumbnailRecord]) -> (u32, u32) {
    let configured = |width: u32, height: u32| {
        config
            .thumbnails
            .sizes
            .iter()
            .any(|s| s.method == asked.method && s.width == width && s.height == height)
    };
    let (width, height) = target(config, asked);
    let extra_stored = stored
        .iter()
        .filter(|t| !configured(t.width, t.height))
        .count();
    if configured(width, height) || extra_stored < MAX_EXTRA_SIZES_PER_MEDIA {
        (width, height)
    } else {
        (MAX_GENERATED_DIMENSION, MAX_GENERATED_DIMENSION)
    }
}

/// The smallest of `stored` covering `asked` in both dimensions.
fn smallest_covering(stored: Vec<ThumbnailRecord>, asked: Asked) -> Option<ThumbnailRecord> {
    stored
        .into_iter()
        .filter(|t| t.width >= asked.width && t.height >= asked.height)
        .min_by_key(|t| u64::from(t.width) * u64::from(t.height))
}

/// The stored thumbnails of `media` made with `asked`'s method and animation.
async fn stored_thumbnails(
    state: &web::Data<AppState>,
    media: &MediaRecord,
    asked: Asked,
) -> Result<Vec<ThumbnailRecord>, mr_storage::Error> {
    state
        .db
        .thumbnails_of(
            &media.origin,
            &media.media_id,
            method_name(asked.method),
            asked.animated,
        )
        .await
}

/// The smallest stored thumbnail of `asked`'s method covering it in both dimensions.
async fn covering(
    state: &web::Data<AppState>,
    media: &MediaRecord,
    asked: Asked,
) -> MatrixResult<Option<ThumbnailRecord>> {
    let stored = stored_thumbnails(state, media, asked)
        .await
        .map_err(|err| MatrixError::internal("reading thumbnails failed", &err))?;
    Ok(smallest_covering(stored, asked))
}

impl Thumbnailer {
    /// How many thumbnails are made at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The thumbnail `asked` of `media`: the one being made for its size if one is under
    /// way, else the smallest stored one covering it, else one made now (at the size
    /// [`bounded_target`] picks).
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
        let (width, height) = target(&config, asked);
        let key = generation_key(media, width, height, asked);
        loop {
            // The size this request maps to is being made (an upload's pre-generation,
            // say): wait for it rather than serve a larger stored thumbnail meanwhile.
            let running = self.in_progress.get(&key).map(|entry| entry.join());
            if let Some(waiter) = running {
                if let Some(result) = outcome(waiter).await {
                    return result;
                }
                continue;
            }
            let stored = stored_thumbnails(state, media, asked)
                .await
                .map_err(|err| MatrixError::internal("reading thumbnails failed", &err))?;
            let (width, height) = bounded_target(&config, asked, &stored);
            if let Some(thumbnail) = smallest_covering(stored, asked) {
                return Ok(Ready::stored(thumbnail));
            }
            let key = generation_key(media, width, height, asked);
            match self.turn(state, &key) {
                Turn::Mine(claim) => {
                    // A generation that finished between our look and the claim stored it.
                    let result = match covering(state, media, asked).await {
                        Ok(Some(thumbnail)) => Ok(Ready::stored(thumbnail)),
                        Ok(None) => self.generate(state, media, width, height, asked).await,
                        Err(err) => Err(err),
                    };
                    // The requests that joined are answered now; this one once the row
                    // exists, so that its next request (another size, say) finds it.
                    claim.publish(&result);
                    if let Ok(ready @ Ready { fresh: Some(_), .. }) = &result {
                        self.store_logged(state, media, ready, claim, true).await;
                    }
                    return result;
                }
                Turn::Theirs(waiter) => {
                    if let Some(result) = outcome(waiter).await {
                        return result;
                    }
                }
            }
        }
    }

    /// Claims the generation of `key`, or joins the one in progress.
    fn turn(&self, state: &web::Data<AppState>, key: &str) -> Turn {
        match self.in_progress.entry(key.to_owned()) {
            dashmap::Entry::Occupied(entry) => Turn::Theirs(entry.get().join()),
            dashmap::Entry::Vacant(entry) => Turn::Mine(Claim::new(entry, state, key)),
        }
    }

    /// Claims the generation of `key` unless one is in progress (which is left alone: a
    /// pre-generation does not join, so it does not make that generation urgent).
    fn claim_if_free(&self, state: &web::Data<AppState>, key: &str) -> Option<Claim> {
        match self.in_progress.entry(key.to_owned()) {
            dashmap::Entry::Occupied(_) => None,
            dashmap::Entry::Vacant(entry) => Some(Claim::new(entry, state, key)),
        }
    }

    /// Waits for a worker, in a bounded queue (full: 429). Background jobs first take one
    /// of the background permits, so they never hold every worker, unless `urgent`
    /// resolves while they wait (someone now waits for their result): from then on they
    /// wait for the next free worker like a client's job.
    async fn worker(
        &self,
        priority: Priority,
        urgent: impl std::future::Future<Output = ()>,
    ) -> MatrixResult<Worker> {
        // Clients and background jobs queue apart: pre-generation after a burst of
        // uploads must not fill the queue clients are refused by.
        let queue = match priority {
            Priority::Client => &self.queued,
            Priority::Background => &self.background_queued,
        };
        if queue.load(Ordering::Acquire) >= MAX_QUEUED {
            return Err(MatrixError::limit_exceeded(
                "Too many thumbnails are being made; try again shortly",
                RETRY_BUSY_SECS,
            ));
        }
        queue.fetch_add(1, Ordering::AcqRel);
        QUEUED.inc();
        let acquired = async {
            let background = match priority {
                Priority::Background => tokio::select! {
                    permit = self.background.clone().acquire_owned() => Some(permit?),
                    () = urgent => None,
                },
                Priority::Client => None,
            };
            let permit = self.permits.clone().acquire_owned().await?;
            Ok::<_, tokio::sync::AcquireError>((background, permit))
        }
        .await;
        queue.fetch_sub(1, Ordering::AcqRel);
        QUEUED.dec();
        let (background, permit) =
            acquired.map_err(|err| MatrixError::internal("thumbnail pool closed", &err))?;
        IN_FLIGHT.inc();
        Ok(Worker {
            _background: background,
            _permit: permit,
        })
    }

    /// A background worker now, if one is free (never waits, never queues): for work that
    /// is only worth doing at once, like decoding an upload as it arrives.
    pub(super) fn try_background_worker(&self) -> Option<Worker> {
        let background = self.background.clone().try_acquire_owned().ok()?;
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        IN_FLIGHT.inc();
        Some(Worker {
            _background: Some(background),
            _permit: permit,
        })
    }

    /// Makes one thumbnail (the caller stores it, once its waiters are answered).
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
        let worker = self
            .worker(Priority::Client, std::future::pending())
            .await?;
        let path = state
            .datastore
            .path_of(&media.location)
            .map_err(|err| MatrixError::internal("locating media failed", &err))?;
        let request = render_request(width, height, asked);
        let made = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            mr_thumbnail::thumbnail(&bytes, &request, &limits).map_err(|e| match e {
                mr_thumbnail::Error::TooLarge(why) => format!("too large: {why}"),
                other => other.to_string(),
            })
        })
        .await;
        drop(worker);
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
        made_ready(state, media, width, height, asked, made).await
    }

    /// Stores a thumbnail just made (`fresh`) under a content claim and records its row.
    async fn store(
        &self,
        state: &web::Data<AppState>,
        media: &MediaRecord,
        fresh: &Ready,
    ) -> Generated {
        let internal = |what: &str, err: &dyn std::fmt::Display| MatrixError::internal(what, err);
        let bytes = fresh
            .fresh
            .clone()
            .ok_or_else(|| internal("storing a thumbnail failed", &"no bytes to store"))?;
        let mut writer = state
            .datastore
            .writer(bytes.len() as u64)
            .map_err(|e| internal("opening a thumbnail file failed", &e))?;
        writer
            .write(bytes)
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
        // The row made with the bytes, now with where they are.
        let row = ThumbnailRecord {
            size_bytes: object.size,
            sha256: object.sha256.clone(),
            datastore_id: state.datastore.id().to_owned(),
            location: object.location.clone(),
            created_at_ms: now_ms(),
            ..fresh.record.clone()
        };
        let inserted = state.db.insert_thumbnail(&row).await;
        claim.release().await;
        match inserted {
            Ok(()) => Ok(Ready::stored(row)),
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
                    .find(|t| t.width == row.width && t.height == row.height)
                    .map(Ready::stored)
                    .ok_or_else(|| internal("a thumbnail row vanished", &"after a conflict"))
            }
            Err(err) => {
                let _ = content::remove_unreferenced(&state.db, &state.datastore, &object.location)
                    .await;
                Err(internal("recording a thumbnail failed", &err))
            }
        }
    }

    /// A pre-generated thumbnail: handed to the requests waiting for it at once, then
    /// stored; the claim is held until it is stored, so requests meanwhile join it.
    async fn publish_and_store(
        &self,
        state: &web::Data<AppState>,
        media: &MediaRecord,
        asked: Asked,
        claim: Claim,
        made: mr_thumbnail::Thumbnail,
    ) {
        let ready = made_ready(state, media, asked.width, asked.height, asked, made).await;
        claim.publish(&ready);
        match &ready {
            Ok(ready) => {
                self.store_logged(state, media, ready, claim, false).await;
            }
            Err(err) => warn!(reason = %err.message, "a pre-generated thumbnail was not stored"),
        }
    }

    /// [`Thumbnailer::store`] for a thumbnail whose requests are answered already (from
    /// its bytes), releasing its claim once the row exists: a failure only means the next
    /// request makes it again.
    ///
    /// The caller's request (`answered_here`) and those that joined the claim were
    /// answered with the fresh bytes. Those answers did not pass the cache (a stored
    /// thumbnail's first answer fills it on its miss), so if there was one the stored
    /// thumbnail is copied into the cache now, as the next request would have.
    async fn store_logged(
        &self,
        state: &web::Data<AppState>,
        media: &MediaRecord,
        fresh: &Ready,
        claim: Claim,
        answered_here: bool,
    ) {
        crate::test_hooks::pause_before_thumbnail_store(&media.sha256).await;
        let stored = self.store(state, media, fresh).await;
        let joins = Arc::clone(&claim.joins);
        // Requests join until the claim is dropped: only then is `any` final.
        drop(claim);
        let served = answered_here || joins.any.load(Ordering::Acquire);
        match stored {
            Ok(stored) if served => {
                let row = &stored.record;
                fill_from_datastore(state, &row.sha256, &row.location, row.size_bytes);
            }
            Ok(_) => {}
            Err(err) => warn!(reason = %err.message, "storing a thumbnail failed"),
        }
    }

    /// Makes the configured sizes of a freshly uploaded image in the background (the upload
    /// answer is not delayed). Every size is claimed at once, before the upload is answered,
    /// so a client asking for one right after the upload joins this generation instead of
    /// decoding the image a second time. The sizes `early` made while the upload arrived
    /// are stored as they come (a size someone waits for is made first); the rest, or all
    /// without `early`, are made from the datastore: sizes that share a decode by one job,
    /// the job with the largest decode first, and within a job the largest size first (a
    /// client shows a fresh image at the largest size; a size someone waits for goes before
    /// all others). Jobs wait behind clients' requests (see [`Thumbnailer::worker`]) until
    /// someone waits for one of their sizes; a full queue skips them (made on first request
    /// instead). Non-images are skipped.
    pub fn pregenerate(
        state: &web::Data<AppState>,
        media: MediaRecord,
        early: Option<EarlyThumbnails>,
    ) {
        let config = state.config();
        if !config.thumbnails.enabled
            || !media.content_type.starts_with("image/")
            || media.size_bytes > config.thumbnails.max_source_bytes
        {
            return;
        }
        let sizes = match &early {
            Some(early) => early.sizes().to_vec(),
            None => configured_sizes(&config),
        };
        let claims: Vec<Option<(Asked, Claim)>> = sizes
            .into_iter()
            .map(|asked| {
                let key = generation_key(&media, asked.width, asked.height, asked);
                let claim = state.thumbnails.claim_if_free(state, &key)?;
                Some((asked, claim))
            })
            .collect();
        if claims.iter().all(Option::is_none) {
            return;
        }
        let limits = mr_thumbnail::Limits {
            max_source_bytes: config.thumbnails.max_source_bytes,
            max_pixels: config.thumbnails.max_pixels,
        };
        let state = state.clone();
        // Runs on after the upload was answered; its lines carry the upload's request too.
        let span = tracing::info_span!(
            "pregenerate_thumbnails",
            mxc = %format_args!("mxc://{}/{}", media.origin, media.media_id)
        );
        let pregenerate = async move {
            let claims = match early {
                Some(early) => {
                    state
                        .thumbnails
                        .store_early(&state, &media, early, claims)
                        .await
                }
                None => claims,
            };
            let claims: Vec<(Asked, Claim)> = claims.into_iter().flatten().collect();
            if !claims.is_empty() {
                Self::pregenerate_from_datastore(&state, &media, claims, limits).await;
            }
            info!(origin = %media.origin, media_id = %media.media_id, "thumbnails pre-generated");
        };
        actix_web::rt::spawn(pregenerate.instrument(span));
    }

    /// Stores the thumbnails `early` makes, handing each to its claim's waiters; returns
    /// the claims it did not make (all of them when the early decode failed or gave up).
    async fn store_early(
        &self,
        state: &web::Data<AppState>,
        media: &MediaRecord,
        mut early: EarlyThumbnails,
        mut claims: Vec<Option<(Asked, Claim)>>,
    ) -> Vec<Option<(Asked, Claim)>> {
        let results: Vec<_> = claims
            .iter()
            .map(|claim| claim.as_ref().map(|(_, c)| c.result.clone()))
            .collect();
        // A size a client asks for meanwhile is made next: its request waits on it.
        early.set_waited_for(move |i| {
            results
                .get(i)
                .and_then(Option::as_deref)
                .is_some_and(Claim::waited_for)
        });
        while let Some((i, made)) = early.next().await {
            // A size claimed elsewhere first is made here anyway (the decode is shared);
            // only claimed ones are stored.
            let Some((asked, claim)) = claims.get_mut(i).and_then(Option::take) else {
                continue;
            };
            GENERATIONS.inc();
            self.publish_and_store(state, media, asked, claim, made)
                .await;
        }
        if let Err(why) = early.finish().await {
            debug!(origin = %media.origin, media_id = %media.media_id, reason = %why, "thumbnails not made as the upload arrived; made from the datastore");
        }
        claims
    }

    /// Makes the claimed sizes from the stored media: one job per shared decode.
    async fn pregenerate_from_datastore(
        state: &web::Data<AppState>,
        media: &MediaRecord,
        claims: Vec<(Asked, Claim)>,
        limits: mr_thumbnail::Limits,
    ) {
        let sizes: Vec<Asked> = claims.iter().map(|(asked, _)| *asked).collect();
        // Dropping the claims (not thumbnailable) sends their waiters to make their own
        // and get the error that belongs to their request.
        let groups = match Self::decode_groups(state, media, &sizes, limits).await {
            Ok(groups) => groups,
            Err(why) => {
                debug!(origin = %media.origin, media_id = %media.media_id, reason = %why, "upload is not thumbnailable; no pre-generation");
                return;
            }
        };
        let mut claims: Vec<Option<(Asked, Claim)>> = claims.into_iter().map(Some).collect();
        // Polled in order, so the jobs queue for workers largest decode first.
        let jobs = groups.into_iter().map(|group| {
            let group: Vec<(Asked, Claim)> = group
                .into_iter()
                .filter_map(|i| claims.get_mut(i).and_then(Option::take))
                .collect();
            state
                .thumbnails
                .pregenerate_group(state, media, group, limits)
        });
        futures_util::future::join_all(jobs).await;
    }

    /// Which of `sizes` share a decode ([`mr_thumbnail::shared_decodes`]); reads the file
    /// on the blocking pool (only the header is parsed).
    async fn decode_groups(
        state: &web::Data<AppState>,
        media: &MediaRecord,
        sizes: &[Asked],
        limits: mr_thumbnail::Limits,
    ) -> Result<Vec<Vec<usize>>, String> {
        let path = state
            .datastore
            .path_of(&media.location)
            .map_err(|e| e.to_string())?;
        let requests: Vec<mr_thumbnail::Request> = sizes
            .iter()
            .map(|a| render_request(a.width, a.height, *a))
            .collect();
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            mr_thumbnail::shared_decodes(&bytes, &requests, &limits).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// One pre-generation job: the claimed sizes of `group` from one decode, each stored
    /// and handed to its waiters as soon as it is made. A size found stored meanwhile is
    /// handed over as it is.
    async fn pregenerate_group(
        &self,
        state: &web::Data<AppState>,
        media: &MediaRecord,
        group: Vec<(Asked, Claim)>,
        limits: mr_thumbnail::Limits,
    ) {
        if group.is_empty() {
            return;
        }
        // Someone joining any size of the job (even before it queued) makes it urgent.
        let joins = group
            .iter()
            .map(|(_, claim)| Box::pin(claim.joins.notify.notified()));
        let joined_any = futures_util::future::select_all(joins).map(|_| ());
        let worker = match self.worker(Priority::Background, joined_any).await {
            Ok(worker) => worker,
            Err(err) => {
                debug!(reason = %err.message, "thumbnail queue full; sizes left for first request");
                return;
            }
        };
        let mut claims = Vec::new();
        for (asked, claim) in group {
            let stored = match stored_thumbnails(state, media, asked).await {
                Ok(stored) => stored,
                Err(err) => {
                    warn!(error = %err, "reading thumbnails failed; pre-generation skipped");
                    return;
                }
            };
            match stored
                .into_iter()
                .find(|t| t.width == asked.width && t.height == asked.height)
            {
                Some(row) => claim.publish(&Ok(Ready::stored(row))),
                None => claims.push((asked, Some(claim))),
            }
        }
        if claims.is_empty() {
            return;
        }
        let path = match state.datastore.path_of(&media.location) {
            Ok(path) => path,
            Err(err) => {
                warn!(error = %err, "locating media failed; pre-generation skipped");
                return;
            }
        };
        let requests: Vec<mr_thumbnail::Request> = claims
            .iter()
            .map(|(a, _)| render_request(a.width, a.height, *a))
            .collect();
        let results: Vec<_> = claims
            .iter()
            .map(|(_, claim)| claim.as_ref().map(|c| c.result.clone()))
            .collect();
        let (made_tx, mut made_rx) = mpsc::unbounded_channel();
        let rendering = tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
            // A size a client asks for meanwhile is made next: its request waits on it.
            let waited_for = |i: usize| {
                results
                    .get(i)
                    .and_then(Option::as_deref)
                    .is_some_and(Claim::waited_for)
            };
            mr_thumbnail::thumbnails_each(&bytes, &requests, &limits, waited_for, |i, made| {
                // The receiver outlives this task (it is awaited below).
                let _ = made_tx.send((i, made));
            })
            .map_err(|e| e.to_string())
        });
        while let Some((i, made)) = made_rx.recv().await {
            let Some((asked, claim)) = claims.get_mut(i) else {
                continue;
            };
            GENERATIONS.inc();
            if let Some(claim) = claim.take() {
                self.publish_and_store(state, media, *asked, claim, made)
                    .await;
            }
        }
        drop(worker);
        match rendering.await {
            Ok(Ok(())) => {}
            // Claims not published are dropped: their waiters generate on their own and
            // get the error that belongs to their request.
            Ok(Err(why)) => debug!(reason = %why, "pre-generating thumbnails failed"),
            Err(err) => warn!(error = %err, "thumbnail task failed"),
        }
    }
}

/// A thumbnail just made, as requests are answered with it: its row as it will be stored
/// (the SHA-256 for the ETag computed on the blocking pool) and its bytes.
async fn made_ready(
    state: &web::Data<AppState>,
    media: &MediaRecord,
    width: u32,
    height: u32,
    asked: Asked,
    made: mr_thumbnail::Thumbnail,
) -> Generated {
    let bytes = bytes::Bytes::from(made.bytes);
    let hashed = bytes.clone();
    let sha256 = tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&hashed)))
        .await
        .map_err(|err| MatrixError::internal("hashing a thumbnail failed", &err))?;
    Ok(Ready {
        record: ThumbnailRecord {
            origin: media.origin.clone(),
            media_id: media.media_id.clone(),
            width,
            height,
            method: method_name(asked.method).to_owned(),
            animated: asked.animated,
            content_type: made.content_type.to_owned(),
            out_width: made.width,
            out_height: made.height,
            size_bytes: bytes.len() as u64,
            sha256,
            datastore_id: state.datastore.id().to_owned(),
            // Not stored yet: a fresh thumbnail is served from its bytes.
            location: String::new(),
            created_at_ms: now_ms(),
        },
        fresh: Some(bytes),
    })
}

/// The configured sizes (not animated), largest first: the order uploads make them in.
pub(super) fn configured_sizes(config: &Config) -> Vec<Asked> {
    let mut sizes: Vec<Asked> = config
        .thumbnails
        .sizes
        .iter()
        .map(|size| Asked {
            width: size.width,
            height: size.height,
            method: size.method,
            animated: false,
        })
        .collect();
    sizes.sort_by_key(|a| std::cmp::Reverse(u64::from(a.width) * u64::from(a.height)));
    sizes
}

/// The render request for a size made for `asked`.
pub(super) fn render_request(width: u32, height: u32, asked: Asked) -> mr_thumbnail::Request {
    mr_thumbnail::Request {
        width,
        height,
        method: match asked.method {
            ThumbnailMethod::Crop => mr_thumbnail::Method::Crop,
            ThumbnailMethod::Scale => mr_thumbnail::Method::Scale,
        },
        animated: asked.animated,
    }
}
