//! Remote media: fetched over federation the first time one of our users asks for it,
//! streamed into our datastore (hashed on the way, never whole in memory) and recorded as a
//! `media` row without an uploader; from then on it is served like local media.
//!
//! A fetch asks `GET /_matrix/federation/v1/media/download/{id}` on the origin, signed
//! (X-Matrix) as the requesting user's homeserver, and reads the `multipart/mixed` answer:
//! the bytes, or a `Location` to follow (bounded, never with X-Matrix). An origin that does
//! not know that endpoint (404 `M_UNRECOGNIZED`) is asked on the legacy
//! `/_matrix/media/v3/download/{origin}/{id}?allow_remote=false&allow_redirect=true`.
//! Every address dialled passes `federation.allowed_networks` (see `mr_remote::Dialer`).
//!
//! A fetch runs as a task of its own, so it completes (and the media is kept) even if the
//! client that started it goes away. Concurrent requests for one media share it, and may
//! be served while it runs: they read the temp file it writes, up to what it holds, and
//! follow it to the end ([`tail_body`]). Failures are remembered per media and per origin
//! with a growing back-off, so a dead or hostile server is not asked on every request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::{Stream, StreamExt};
use mr_config::Config;
use mr_federation::{
    sign_request, IpPolicy, MediaResponse, MultipartMedia, RequestToSign, SigningKey,
};
use mr_remote::{Dialer, DialerSettings, KeyStore};
use mr_storage::content;
use mr_storage::MediaRecord;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;
use tracing::{info, warn, Instrument};

use super::remote_metrics::{self, Scope, Source};
use super::{now_ms, remote_shared, MediaRef};
use crate::error::{MatrixError, MatrixResult, NOT_YET_UPLOADED};
use crate::state::AppState;

/// `Location` hops followed for one media.
const MAX_REDIRECTS: usize = 5;
/// First back-off after a failed fetch of one media, doubled per failure.
const MEDIA_BACKOFF_START: Duration = Duration::from_secs(30);
/// Longest back-off for one media.
const MEDIA_BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);
/// First back-off after a server could not be reached, doubled per failure.
const DESTINATION_BACKOFF_START: Duration = Duration::from_secs(10);
/// Longest back-off for one server.
const DESTINATION_BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);
/// Seconds a client refused for too many fetches in progress is told to wait.
const RETRY_BUSY_SECS: u64 = 5;
/// Failures remembered at once (media and servers each).
const MAX_REMEMBERED_FAILURES: u64 = 100_000;
/// Largest error body read from a remote server (to find its errcode).
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;

type FetchResult = Result<MediaRecord, FetchError>;

/// A remote media body may arrive as slowly as it likes for this long (bounded only by
/// `federation.idle_timeout_ms` between bytes)...
const SLOW_BODY_GRACE: Duration = Duration::from_secs(60);
/// ...and must then keep up at least this average rate over the time since: a peer that
/// trickles bytes just often enough to dodge the idle timeout cannot hold one of the
/// `federation.max_concurrent_fetches` slots for ever. (256 KiB/s: 100 MiB within 7 min 40 s.)
const MIN_BODY_BYTES_PER_SEC: f64 = 256.0 * 1024.0;

/// Whether a body that delivered `received` bytes in `elapsed` is too slow to go on with.
fn too_slow(elapsed: Duration, received: u64) -> bool {
    let Some(after_grace) = elapsed.checked_sub(SLOW_BODY_GRACE) else {
        return false;
    };
    (received as f64) < after_grace.as_secs_f64() * MIN_BODY_BYTES_PER_SEC
}

/// Read size when serving a fetch in progress from its temp file.
const TAIL_READ_CHUNK: usize = 64 * 1024;

/// A download waiting for a fetch is answered once the media is stored, or, for larger
/// media, as soon as this much of it arrived: then the rest streams as it comes. Below it
/// every error is exact (a remote over `downloads.max_bytes` is 502 `M_TOO_LARGE`); a
/// streamed media that turns out larger than the limit, or whose fetch fails, ends in a cut
/// response (never a short one that looks complete) and nothing is kept.
pub const STREAM_AFTER_BYTES: u64 = 1024 * 1024;

/// What the origin said about the media, known before its bytes.
#[derive(Clone, Debug)]
pub struct RemoteHead {
    pub content_type: String,
    pub upload_name: Option<String>,
}

/// How far a fetch has come: what a download arriving meanwhile can already use.
#[derive(Clone, Debug, Default)]
pub struct FetchProgress {
    /// Set once the origin's answer head arrived.
    pub head: Option<RemoteHead>,
    /// The temp file the bytes go to, and how many of them are in it.
    pub temp_path: Option<std::path::PathBuf>,
    pub bytes_in_file: u64,
    /// Set when the fetch ended: the stored media, or why it failed.
    pub outcome: Option<Result<MediaRecord, MatrixError>>,
}

/// Where a download waiting for a fetch stands.
pub enum FetchState {
    /// The media is stored: serve it like any other.
    Stored(MediaRecord),
    /// Bytes are arriving: they can be streamed with [`tail_body`].
    Arriving(RemoteHead),
}

/// A failed fetch, and whether the origin itself looked down (no connection, TLS failure,
/// timeout, a 5xx answer): only then is the whole origin backed off, not just the media.
#[derive(Clone, Debug)]
struct FetchError {
    error: MatrixError,
    origin_down: bool,
}

impl From<MatrixError> for FetchError {
    fn from(error: MatrixError) -> FetchError {
        FetchError {
            error,
            origin_down: false,
        }
    }
}

type Fetch<T> = Result<T, FetchError>;

/// Removes a fetch's `in_flight` entry when its task ends, however it ends.
struct InFlightEntry {
    state: actix_web::web::Data<AppState>,
    mxc: String,
}

impl Drop for InFlightEntry {
    fn drop(&mut self) {
        self.state.remote.in_flight.remove(&self.mxc);
    }
}

/// A failure and when the next attempt may be made.
#[derive(Clone)]
struct Failure {
    error: MatrixError,
    retry_at: Instant,
    backoff: Duration,
}

/// Remote media fetching for the whole process.
pub struct RemoteMedia {
    /// `None` only when the client could not be built (logged at start).
    dialer: Option<Dialer>,
    /// Other servers' signing keys, for requests they send us.
    keys: KeyStore,
    /// Our server name → the key it signs with. Homeservers without a key fetch nothing.
    signing_keys: HashMap<String, Arc<SigningKey>>,
    /// Fetches running now, by mxc; the fetch task removes its own entry when it ends.
    in_flight: DashMap<String, watch::Receiver<FetchProgress>>,
    media_failures: moka::sync::Cache<String, Failure>,
    destination_failures: moka::sync::Cache<String, Failure>,
}

impl RemoteMedia {
    /// Loads the signing keys and builds the federation client. A homeserver without a
    /// key, or a key that cannot be read, is logged once and fetches nothing.
    pub fn new(config: &Config) -> RemoteMedia {
        let mut signing_keys = HashMap::new();
        for hs in &config.homeservers {
            match &hs.signing_key_path {
                None => info!(
                    homeserver = %hs.name,
                    "no signing_key_path: remote media is not fetched for this homeserver's users"
                ),
                Some(path) => match SigningKey::from_file(path) {
                    Ok(key) => {
                        signing_keys.insert(hs.name.to_ascii_lowercase(), Arc::new(key));
                    }
                    Err(err) => warn!(
                        homeserver = %hs.name, path = %path.display(), error = %err,
                        "cannot use the signing key: remote media is not fetched for this homeserver's users"
                    ),
                },
            }
        }
        let fed = &config.federation;
        let policy = IpPolicy::new(fed.allowed_ranges());
        let dialer = match Dialer::new(DialerSettings {
            request_timeout: Duration::from_millis(fed.request_timeout_ms),
            connect_timeout: Duration::from_millis(fed.connect_timeout_ms),
            extra_ca_file: fed.extra_ca_file.clone(),
            policy: Arc::new(move |ip| policy.is_allowed(ip)),
        }) {
            Ok(dialer) => Some(dialer),
            Err(err) => {
                tracing::error!(error = %err, "cannot build the federation client: no remote media is fetched and no federation request is accepted");
                None
            }
        };
        remote_metrics::register();
        RemoteMedia {
            dialer,
            keys: KeyStore::default(),
            signing_keys,
            in_flight: DashMap::new(),
            media_failures: failure_cache(),
            destination_failures: failure_cache(),
        }
    }

    /// Starts fetching `media` from its origin as `as_server` (one of ours), or joins the
    /// fetch already running; the receiver follows its progress to the end. `wait`: how
    /// long the asking client waits for a pending upload (see [`origin_wait_ms`]).
    pub async fn start(
        &self,
        state: &actix_web::web::Data<AppState>,
        media: &MediaRef,
        as_server: &str,
        wait: Duration,
    ) -> MatrixResult<watch::Receiver<FetchProgress>> {
        let max_fetches = state.config().federation.max_concurrent_fetches as usize;
        let key = self
            .signing_keys
            .get(&as_server.to_ascii_lowercase())
            .cloned()
            .ok_or_else(|| {
                MatrixError::not_found(
                    "Media not found (remote media is not fetched for this server)",
                )
            })?;
        let mxc = media.mxc();
        if let Some(running) = self.in_flight.get(&mxc) {
            return Ok(running.clone());
        }
        let quarantined = state
            .db
            .is_origin_quarantined(&media.origin)
            .await
            .map_err(|err| MatrixError::internal("reading the origin quarantine failed", &err))?;
        if quarantined {
            return Err(MatrixError::not_found("Media not found"));
        }
        if let Some(failure) = self.remembered_failure(&self.media_failures, &mxc) {
            remote_metrics::backed_off(Scope::Media);
            return Err(failure);
        }
        if let Some(failure) = self.remembered_failure(&self.destination_failures, &media.origin) {
            remote_metrics::backed_off(Scope::Origin);
            return Err(failure);
        }
        if self.in_flight.len() >= max_fetches {
            return Err(MatrixError::limit_exceeded(
                "Too many remote media fetches in progress; try again shortly",
                RETRY_BUSY_SECS,
            ));
        }
        let entry = match self.in_flight.entry(mxc.clone()) {
            dashmap::Entry::Occupied(running) => return Ok(running.get().clone()),
            dashmap::Entry::Vacant(vacant) => vacant,
        };
        let (progress, receiver) = watch::channel(FetchProgress::default());
        entry.insert(receiver.clone());
        let (state, media, as_server) = (state.clone(), media.clone(), as_server.to_owned());
        let origin_wait_ms = origin_wait_ms(&state.config(), wait);
        let running = remote_metrics::Running::start();
        // The fetch outlives the request that started it; its lines carry both.
        let span = tracing::info_span!("remote_fetch", %mxc, as_server = %as_server);
        let fetch = async move {
            let _running = running;
            // Whatever happens to this task (even a panic), the next request starts afresh;
            // waiters of a task that died see its channel close and answer 500.
            let _entry = InFlightEntry {
                state: state.clone(),
                mxc: media.mxc(),
            };
            // A fetch that ended between the caller's lookup and our entry stored the row.
            let stored = state.db.get_media(&media.origin, &media.media_id).await;
            let result = match stored {
                Ok(Some(record)) => Ok(record),
                _ => {
                    let asker = Asker {
                        as_server: &as_server,
                        key: &key,
                        origin_wait_ms,
                    };
                    let fetched = fetch_and_store(&state, &media, &asker, &progress).await;
                    remote_metrics::fetch_ended(fetched.as_ref().err().map(|f| &f.error));
                    fetched
                }
            };
            let outcome = state.remote.finish(&media, result);
            progress.send_modify(|p| p.outcome = Some(outcome));
        };
        tokio::spawn(fetch.instrument(span));
        Ok(receiver)
    }

    /// Records how a fetch ended: failures are backed off, success clears the origin's.
    fn finish(&self, media: &MediaRef, result: FetchResult) -> MatrixResult<MediaRecord> {
        match result {
            Ok(record) => {
                self.destination_failures.invalidate(&media.origin);
                Ok(record)
            }
            // Pending at its origin: the next request asks again (the origin said how long
            // it waited), so nothing is backed off.
            Err(failure) if failure.error.errcode == NOT_YET_UPLOADED => Err(failure.error),
            Err(failure) => {
                self.remember_failure(
                    &self.media_failures,
                    &media.mxc(),
                    &failure.error,
                    MEDIA_BACKOFF_START,
                    MEDIA_BACKOFF_MAX,
                );
                if failure.origin_down {
                    self.remember_failure(
                        &self.destination_failures,
                        &media.origin,
                        &failure.error,
                        DESTINATION_BACKOFF_START,
                        DESTINATION_BACKOFF_MAX,
                    );
                }
                Err(failure.error)
            }
        }
    }

    fn remembered_failure(
        &self,
        cache: &moka::sync::Cache<String, Failure>,
        key: &str,
    ) -> Option<MatrixError> {
        let failure = cache.get(key)?;
        let now = Instant::now();
        if now >= failure.retry_at {
            return None;
        }
        let mut error = failure.error.clone();
        error.retry_after_secs = Some(failure.retry_at.duration_since(now).as_secs().max(1));
        Some(error)
    }

    fn remember_failure(
        &self,
        cache: &moka::sync::Cache<String, Failure>,
        key: &str,
        error: &MatrixError,
        start: Duration,
        max: Duration,
    ) {
        let backoff = cache
            .get(key)
            .map_or(start, |previous| (previous.backoff * 2).min(max));
        cache.insert(
            key.to_owned(),
            Failure {
                error: error.clone(),
                retry_at: Instant::now() + backoff,
                backoff,
            },
        );
    }

    /// `origin`'s signing key `key_id`, fetched from it if not cached.
    pub async fn verifying_key(
        &self,
        origin: &str,
        key_id: &str,
    ) -> Option<ed25519_dalek::VerifyingKey> {
        let dialer = self.dialer.as_ref()?;
        self.keys.key(dialer, origin, key_id).await
    }

    /// The federation client, if it could be built.
    fn dialer(&self) -> MatrixResult<&Dialer> {
        self.dialer.as_ref().ok_or_else(|| {
            MatrixError::not_found("Media not found (remote media is not fetched here)")
        })
    }
}

fn failure_cache() -> moka::sync::Cache<String, Failure> {
    moka::sync::Cache::builder()
        .max_capacity(MAX_REMEMBERED_FAILURES)
        .time_to_live(MEDIA_BACKOFF_MAX)
        .build()
}

/// The bytes of a remote media and what its server said about them.
struct Fetched {
    content_type: Option<String>,
    content_disposition: Option<String>,
    declared_len: Option<u64>,
    body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>,
}

fn bad_gateway(message: impl Into<std::borrow::Cow<'static, str>>) -> MatrixError {
    let mut err = MatrixError::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message);
    err.retry_after_secs = Some(MEDIA_BACKOFF_START.as_secs());
    err
}

fn remote_error(origin: &str, err: &mr_remote::Error) -> FetchError {
    warn!(%origin, error = %err, "remote media fetch failed");
    if err.is_timeout() {
        let mut e = MatrixError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "M_UNKNOWN",
            format!("The server {origin} did not answer in time"),
        );
        e.retry_after_secs = Some(MEDIA_BACKOFF_START.as_secs());
        return FetchError {
            error: e,
            origin_down: true,
        };
    }
    // A refused address is our policy, not the origin being down.
    let origin_down = !matches!(err, mr_remote::Error::AddressRefused { .. });
    FetchError {
        error: bad_gateway(format!("Could not fetch the media from {origin}")),
        origin_down,
    }
}

/// An unexpected answer; a 5xx one means the origin is not serving.
fn origin_failed(origin: &str, status: reqwest::StatusCode) -> FetchError {
    FetchError {
        error: bad_gateway(format!("The server {origin} answered {status}")),
        origin_down: status.is_server_error(),
    }
}

/// Gets the media into our datastore: copied from the shared cache if another repo
/// fetched it, else fetched from its origin by whichever repo holds the lease while the
/// others wait for the record (`remote_shared.rs`).
async fn fetch_and_store(
    state: &actix_web::web::Data<AppState>,
    media: &MediaRef,
    asker: &Asker<'_>,
    progress: &watch::Sender<FetchProgress>,
) -> FetchResult {
    let config = state.config();
    let cache = &state.cache;
    let lease_key = mr_cache::lease_key(&media.origin, &media.media_id);
    // Waiting for another repo ends at the latest here; then we fetch too rather than fail.
    let give_up_waiting =
        Instant::now() + Duration::from_millis(config.downloads.default_timeout_ms);
    let mut wait = remote_shared::WAIT_FIRST;
    loop {
        if let Some(shared) =
            remote_shared::read_record(cache, &media.origin, &media.media_id).await
        {
            match copy_shared(state, media, &shared, progress).await {
                Ok(record) => return Ok(record),
                Err(why) => {
                    info!(mxc = %media.mxc(), reason = %why, "shared remote media not usable from the cache; fetching it");
                    // Readers following the abandoned copy switch to the new temp file.
                    progress.send_modify(|p| {
                        p.temp_path = None;
                        p.bytes_in_file = 0;
                    });
                    return fetch_from_origin(state, media, asker, progress).await;
                }
            }
        }
        match cache.try_lease(&lease_key, remote_shared::LEASE_TTL).await {
            Some(lease) => {
                let result = tokio::select! {
                    result = fetch_from_origin(state, media, asker, progress) => result,
                    _ = remote_shared::keep_renewing(cache, &lease) => unreachable_renewal(),
                };
                cache.release(lease).await;
                return result;
            }
            None if Instant::now() >= give_up_waiting => {
                info!(mxc = %media.mxc(), "the repo fetching this media takes too long; fetching it too");
                return fetch_from_origin(state, media, asker, progress).await;
            }
            None => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(remote_shared::WAIT_MAX);
            }
        }
    }
}

/// `keep_renewing` never returns; this keeps `select!`'s arms of one type.
fn unreachable_renewal() -> FetchResult {
    Err(MatrixError::internal("lease renewal ended", &"unexpected").into())
}

/// Copies media another repo published from the cache; any problem (a lost chunk, bytes
/// that do not hash to the record's sha256) is returned, and nothing is kept then.
async fn copy_shared(
    state: &actix_web::web::Data<AppState>,
    media: &MediaRef,
    shared: &remote_shared::SharedRecord,
    progress: &watch::Sender<FetchProgress>,
) -> Result<MediaRecord, String> {
    let config = state.config();
    let bytes = remote_shared::cached_bytes(&state.cache, shared)
        .await
        .ok_or("the blob is not in the cache")?;
    let head = RemoteHead {
        content_type: shared.content_type.clone(),
        upload_name: shared.upload_name.clone(),
    };
    progress.send_modify(|p| p.head = Some(head.clone()));
    let idle = Duration::from_millis(config.federation.idle_timeout_ms);
    let (object, claim) = store(
        state,
        Box::pin(bytes),
        config.downloads.max_bytes,
        idle,
        &media.origin,
        progress,
    )
    .await
    .map_err(|err| err.error.message.to_string())?;
    if object.sha256 != shared.sha256 || object.size != shared.size {
        claim.release().await;
        let _ = content::remove_unreferenced(&state.db, &state.datastore, &object.location).await;
        return Err(format!(
            "the cached bytes hash to {} ({} bytes), the record says {} ({} bytes)",
            object.sha256, object.size, shared.sha256, shared.size
        ));
    }
    let record = record_row(state, media, head, &object, claim)
        .await
        .map_err(|err| err.error.message.to_string())?;
    info!(mxc = %media.mxc(), size = object.size, "remote media copied from the shared cache");
    remote_metrics::stored(Source::SharedCache, object.size);
    Ok(record)
}

/// Who a fetch asks as, and how long the origin may wait for a pending upload.
struct Asker<'a> {
    as_server: &'a str,
    key: &'a SigningKey,
    origin_wait_ms: u64,
}

/// The `timeout_ms` sent to an origin: how long it may wait for an async upload still
/// pending there. As long as the client that started the fetch waits (`asked`: its
/// `timeout_ms`, or our default), but at most half of our wait for the origin's answer, so
/// that it answers 504 `M_NOT_YET_UPLOADED` (which we pass on) before we give up on it.
fn origin_wait_ms(config: &mr_config::Config, asked: Duration) -> u64 {
    u64::try_from(asked.as_millis())
        .unwrap_or(u64::MAX)
        .min(config.federation.request_timeout_ms / 2)
}

/// Fetches the media from its origin, stores it, and publishes it for the other repos.
async fn fetch_from_origin(
    state: &actix_web::web::Data<AppState>,
    media: &MediaRef,
    asker: &Asker<'_>,
    progress: &watch::Sender<FetchProgress>,
) -> FetchResult {
    let config = state.config();
    let dialer = state.remote.dialer()?;
    let fetched = download(dialer, media, asker).await?;
    let max_bytes = config.downloads.max_bytes;
    if fetched.declared_len.is_some_and(|len| len > max_bytes) {
        return Err(remote_too_large(max_bytes).into());
    }
    let head = RemoteHead {
        content_type: fetched
            .content_type
            .clone()
            .filter(|ct| !ct.is_empty() && ct.len() <= 255)
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        upload_name: fetched
            .content_disposition
            .as_deref()
            .and_then(crate::headers::filename_from_disposition),
    };
    progress.send_modify(|p| p.head = Some(head.clone()));
    let idle = Duration::from_millis(config.federation.idle_timeout_ms);
    let (object, claim) = store(
        state,
        fetched.body,
        max_bytes,
        idle,
        &media.origin,
        progress,
    )
    .await?;
    let record = record_row(state, media, head, &object, claim).await?;
    info!(mxc = %media.mxc(), size = object.size, "remote media fetched");
    remote_metrics::stored(Source::Origin, object.size);
    if let Ok(file) = state.datastore.open(&record.location).await {
        let shared = remote_shared::SharedRecord {
            sha256: record.sha256.clone(),
            content_type: record.content_type.clone(),
            upload_name: record.upload_name.clone(),
            size: record.size_bytes,
        };
        remote_shared::publish(&state.cache, &media.origin, &media.media_id, &shared, file).await;
    }
    Ok(record)
}

/// Writes the media row of stored remote bytes and releases their claim.
async fn record_row(
    state: &actix_web::web::Data<AppState>,
    media: &MediaRef,
    head: RemoteHead,
    object: &mr_storage::StoredObject,
    claim: content::Claim,
) -> FetchResult {
    let record = MediaRecord {
        origin: media.origin.clone(),
        media_id: media.media_id.clone(),
        user_id: None,
        content_type: head.content_type,
        upload_name: head.upload_name,
        size_bytes: object.size,
        sha256: object.sha256.clone(),
        datastore_id: state.datastore.id().to_owned(),
        location: object.location.clone(),
        created_at_ms: now_ms(),
        quarantined_by: None,
        safe_from_quarantine: false,
    };
    let inserted = state.db.insert_media(&record).await;
    claim.release().await;
    match inserted {
        Ok(()) => {
            // The origin or these bytes may have been quarantined while they arrived.
            let standing = state
                .db
                .apply_standing_quarantine(&media.origin, &media.media_id)
                .await
                .map_err(|err| MatrixError::internal("reading the quarantine failed", &err))?;
            if let Some(marker) = standing {
                info!(mxc = %media.mxc(), %marker, "fetched remote media is quarantined");
                let quarantined = MediaRecord {
                    quarantined_by: Some(marker),
                    ..record
                };
                super::quarantine::evict(state, std::slice::from_ref(&quarantined)).await;
                return Err(MatrixError::not_found("Media not found").into());
            }
            Ok(record)
        }
        // Another process sharing the database fetched it first: serve theirs.
        Err(mr_storage::Error::AlreadyExists { .. }) => {
            let _ =
                content::remove_unreferenced(&state.db, &state.datastore, &object.location).await;
            state
                .db
                .get_media(&media.origin, &media.media_id)
                .await
                .map_err(|err| MatrixError::internal("reading media metadata failed", &err))?
                .ok_or_else(|| MatrixError::not_found("Media not found").into())
        }
        Err(err) => {
            let _ =
                content::remove_unreferenced(&state.db, &state.datastore, &object.location).await;
            Err(MatrixError::internal("recording remote media failed", &err).into())
        }
    }
}

fn remote_too_large(max_bytes: u64) -> MatrixError {
    MatrixError::new(
        StatusCode::BAD_GATEWAY,
        "M_TOO_LARGE",
        format!("The remote media is larger than this server's limit of {max_bytes} bytes"),
    )
}

/// Streams the body into the datastore under a claim; nothing is kept on any failure.
async fn store(
    state: &AppState,
    mut body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>,
    max_bytes: u64,
    idle: Duration,
    origin: &str,
    progress: &watch::Sender<FetchProgress>,
) -> Fetch<(mr_storage::StoredObject, content::Claim)> {
    let mut writer = state
        .datastore
        .writer(max_bytes)
        .map_err(|err| MatrixError::internal("opening a datastore temp file failed", &err))?;
    let stalled = |what: &str| {
        let mut e = MatrixError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "M_UNKNOWN",
            format!("The server {origin} {what}"),
        );
        e.retry_after_secs = Some(MEDIA_BACKOFF_START.as_secs());
        FetchError {
            error: e,
            origin_down: true,
        }
    };
    let started = Instant::now();
    let mut total = 0u64;
    let received: Fetch<()> = async {
        loop {
            let next = tokio::time::timeout(idle, body.next())
                .await
                .map_err(|_| stalled("stopped sending the media"))?;
            let Some(chunk) = next else { return Ok(()) };
            let chunk = chunk.map_err(|why| {
                warn!(%origin, error = %why, "remote media body failed");
                bad_gateway(format!("The server {origin} sent a broken answer"))
            })?;
            total += chunk.len() as u64;
            if too_slow(started.elapsed(), total) {
                warn!(%origin, bytes = total, secs = started.elapsed().as_secs(), "remote media arrives too slowly; abandoned");
                return Err(stalled("sends the media too slowly"));
            }
            writer.write(chunk).await.map_err(|err| match err {
                mr_storage::Error::TooLarge { .. } => remote_too_large(max_bytes),
                other => MatrixError::internal("writing remote media failed", &other),
            })?;
            announce_file(progress, &writer);
        }
    }
    .await;
    if let Err(err) = received {
        writer.abort().await;
        return Err(err);
    }
    let staged = writer.finish().await.map_err(|err| match err {
        mr_storage::Error::TooLarge { .. } => remote_too_large(max_bytes),
        other => MatrixError::internal("finishing remote media failed", &other),
    })?;
    let size = staged.object().size;
    progress.send_modify(|p| p.bytes_in_file = size);
    content::commit_claimed(&state.db, &state.datastore, staged, now_ms())
        .await
        .map_err(|err| MatrixError::internal("storing remote media failed", &err).into())
}

/// Tells readers of a fetch in progress what the temp file holds now.
fn announce_file(progress: &watch::Sender<FetchProgress>, writer: &mr_storage::ObjectWriter) {
    let (path, len) = (writer.temp_path(), writer.bytes_in_file());
    progress.send_if_modified(|p| {
        if p.bytes_in_file == len {
            return false;
        }
        if p.temp_path.is_none() {
            p.temp_path = path.map(std::path::Path::to_path_buf);
        }
        p.bytes_in_file = len;
        true
    });
}

/// Waits until a fetch stored the media, or [`STREAM_AFTER_BYTES`] of it arrived.
pub async fn wait_for_bytes(
    mut progress: watch::Receiver<FetchProgress>,
) -> MatrixResult<FetchState> {
    loop {
        {
            let now = progress.borrow_and_update();
            match (&now.outcome, &now.head) {
                (Some(outcome), _) => return outcome.clone().map(FetchState::Stored),
                (None, Some(head)) if now.bytes_in_file >= STREAM_AFTER_BYTES => {
                    return Ok(FetchState::Arriving(head.clone()))
                }
                _ => {}
            }
        }
        if progress.changed().await.is_err() {
            return Err(MatrixError::internal(
                "a remote fetch ended without a result",
                &"channel closed",
            ));
        }
    }
}

/// Waits until a fetch ended.
pub async fn wait_for_stored(
    mut progress: watch::Receiver<FetchProgress>,
) -> MatrixResult<MediaRecord> {
    loop {
        if let Some(outcome) = progress.borrow_and_update().outcome.clone() {
            return outcome;
        }
        if progress.changed().await.is_err() {
            return Err(MatrixError::internal(
                "a remote fetch ended without a result",
                &"channel closed",
            ));
        }
    }
}

/// Where a download following a fetch stands.
struct Tail {
    state: actix_web::web::Data<AppState>,
    progress: watch::Receiver<FetchProgress>,
    file: Option<tokio::fs::File>,
    /// The temp file `file` was opened from (a copy from the cache that failed is
    /// replaced by a fetch into another temp file: then it is opened anew).
    opened: Option<std::path::PathBuf>,
    sent: u64,
}

/// The bytes of a media while its fetch runs: read from the fetch's temp file as they land
/// there (or from the stored object once it is stored), never past what the file holds.
/// If the fetch fails, the stream ends with an error, so the client sees a cut response,
/// never a short one that looks complete.
pub fn tail_body(
    state: actix_web::web::Data<AppState>,
    progress: watch::Receiver<FetchProgress>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + 'static {
    let tail = Tail {
        state,
        progress,
        file: None,
        opened: None,
        sent: 0,
    };
    futures_util::stream::unfold(tail, |mut tail| async move {
        match tail.next_chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), tail)),
            Ok(None) => None,
            Err(err) => {
                warn!(error = %err, sent = tail.sent, "a download served while its media was fetched was cut");
                // End after the error: a cut response.
                tail.sent = u64::MAX;
                Some((Err(err), tail))
            }
        }
    })
}

impl Tail {
    async fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        if self.sent == u64::MAX {
            return Ok(None);
        }
        loop {
            let now = self.progress.borrow_and_update().clone();
            let (available, total) = match &now.outcome {
                Some(Ok(record)) => (record.size_bytes, Some(record.size_bytes)),
                Some(Err(err)) => {
                    return Err(std::io::Error::other(format!(
                        "remote fetch failed: {}",
                        err.message
                    )))
                }
                None => (now.bytes_in_file, None),
            };
            if now.outcome.is_none() && self.opened.is_some() && now.temp_path != self.opened {
                self.file = None;
                self.opened = None;
            }
            if self.sent < available {
                if self.file.is_none() {
                    self.file = self.open(&now).await?;
                    self.opened = now.temp_path.clone().filter(|_| now.outcome.is_none());
                }
                if let Some(file) = self.file.as_mut() {
                    let want = (available - self.sent).min(TAIL_READ_CHUNK as u64) as usize;
                    let mut buf = vec![0u8; want];
                    let n = file.read(&mut buf).await?;
                    if n == 0 {
                        return Err(std::io::Error::other("remote media file ended early"));
                    }
                    buf.truncate(n);
                    self.sent += n as u64;
                    return Ok(Some(Bytes::from(buf)));
                }
            } else if total == Some(self.sent) {
                return Ok(None);
            }
            if self.progress.changed().await.is_err() {
                return Err(std::io::Error::other("remote fetch ended without a result"));
            }
        }
    }

    /// The temp file while the fetch runs (it may have been renamed or removed just now:
    /// then `None`, and the stored object once the fetch says where it is).
    async fn open(&self, now: &FetchProgress) -> std::io::Result<Option<tokio::fs::File>> {
        let opened = match (&now.outcome, &now.temp_path) {
            (Some(Ok(record)), _) => self
                .state
                .datastore
                .open(&record.location)
                .await
                .map(Some)
                .map_err(std::io::Error::other)?,
            (None, Some(path)) => match tokio::fs::File::open(path).await {
                Ok(file) => Some(file),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(err) => return Err(err),
            },
            _ => None,
        };
        match opened {
            Some(mut file) => {
                file.seek(std::io::SeekFrom::Start(self.sent)).await?;
                Ok(Some(file))
            }
            None => Ok(None),
        }
    }
}

/// The federation endpoint, its redirects, and the legacy fallback, asked as `asker` says
/// (the origin may wait up to its `origin_wait_ms` for a pending async upload).
async fn download(dialer: &Dialer, media: &MediaRef, asker: &Asker<'_>) -> Fetch<Fetched> {
    let Asker {
        as_server,
        key,
        origin_wait_ms: wait_ms,
    } = *asker;
    let origin = &media.origin;
    let path = format!(
        "/_matrix/federation/v1/media/download/{}?timeout_ms={wait_ms}",
        media.media_id
    );
    let authorization = sign_request(
        key,
        &RequestToSign {
            method: "GET".to_owned(),
            uri: path.clone(),
            origin: as_server.to_owned(),
            destination: origin.clone(),
            content: None,
        },
    )
    .map_err(|err| MatrixError::internal("signing a federation request failed", &err))?;
    let response = dialer
        .federation_get(origin, &path, Some(&authorization))
        .await
        .map_err(|err| remote_error(origin, &err))?;
    let status = response.status();
    if status.is_success() {
        let content_type =
            header_text(&response, reqwest::header::CONTENT_TYPE).unwrap_or_default();
        let body = response
            .bytes_stream()
            .map(|r| r.map_err(|e| e.to_string()));
        let parsed = MultipartMedia::parse(&content_type, body)
            .await
            .map_err(|err| {
                warn!(%origin, error = %err, "remote sent a malformed multipart answer");
                bad_gateway(format!("The server {origin} sent a malformed media answer"))
            })?;
        return match parsed {
            MediaResponse::Bytes {
                content_type,
                content_disposition,
                body,
                ..
            } => Ok(Fetched {
                content_type,
                content_disposition,
                declared_len: None,
                body: Box::pin(body.map(|r| r.map_err(|e| e.to_string()))),
            }),
            MediaResponse::Redirect { location, .. } => follow(dialer, origin, &location).await,
        };
    }
    let errcode = error_code(dialer, response).await;
    if status == reqwest::StatusCode::NOT_FOUND && errcode.as_deref() == Some("M_UNRECOGNIZED")
        || status == reqwest::StatusCode::METHOD_NOT_ALLOWED
    {
        return legacy_download(dialer, media, wait_ms).await;
    }
    Err(refusal(origin, status, errcode.as_deref()))
}

/// What an origin's error answer means for our client: 404 is the media's absence, 504
/// `M_NOT_YET_UPLOADED` an async upload still pending there (passed on as such), anything
/// else the origin failing.
fn refusal(origin: &str, status: reqwest::StatusCode, errcode: Option<&str>) -> FetchError {
    if status == reqwest::StatusCode::NOT_FOUND {
        return MatrixError::not_found("Media not found on its server").into();
    }
    if status == reqwest::StatusCode::GATEWAY_TIMEOUT && errcode == Some(NOT_YET_UPLOADED) {
        return MatrixError::not_yet_uploaded().into();
    }
    warn!(%origin, %status, ?errcode, "remote refused the media download");
    origin_failed(origin, status)
}

/// `/_matrix/media/v3/download/{origin}/{id}?allow_remote=false&allow_redirect=true` for
/// servers that predate the federation media endpoints. Unsigned: it is a public endpoint.
async fn legacy_download(dialer: &Dialer, media: &MediaRef, wait_ms: u64) -> Fetch<Fetched> {
    let origin = &media.origin;
    let path = format!(
        "/_matrix/media/v3/download/{origin}/{}?allow_remote=false&allow_redirect=true&timeout_ms={wait_ms}",
        media.media_id
    );
    let response = dialer
        .federation_get(origin, &path, None)
        .await
        .map_err(|err| remote_error(origin, &err))?;
    raw_answer(dialer, origin, response, 0).await
}

/// Follows a `Location` (no X-Matrix is ever sent there).
async fn follow(dialer: &Dialer, origin: &str, location: &str) -> Fetch<Fetched> {
    let response = dialer
        .get_url(location)
        .await
        .map_err(|err| remote_error(origin, &err))?;
    raw_answer(dialer, origin, response, 1).await
}

/// A plain (non-multipart) answer holding the bytes, following further redirects.
async fn raw_answer(
    dialer: &Dialer,
    origin: &str,
    mut response: reqwest::Response,
    mut hops: usize,
) -> Fetch<Fetched> {
    loop {
        let status = response.status();
        if status.is_redirection() {
            hops += 1;
            let location = header_text(&response, reqwest::header::LOCATION)
                .ok_or_else(|| bad_gateway(format!("The server {origin} redirected nowhere")))?;
            if hops > MAX_REDIRECTS {
                return Err(
                    bad_gateway(format!("The server {origin} redirected too often")).into(),
                );
            }
            let next = response
                .url()
                .join(&location)
                .map_err(|_| bad_gateway(format!("The server {origin} redirected to a bad URL")))?;
            response = dialer
                .get_url(next.as_str())
                .await
                .map_err(|err| remote_error(origin, &err))?;
            continue;
        }
        if !status.is_success() {
            let errcode = error_code(dialer, response).await;
            return Err(refusal(origin, status, errcode.as_deref()));
        }
        return Ok(Fetched {
            content_type: header_text(&response, reqwest::header::CONTENT_TYPE),
            content_disposition: header_text(&response, reqwest::header::CONTENT_DISPOSITION),
            declared_len: response.content_length(),
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|r| r.map_err(|e| e.to_string())),
            ),
        });
    }
}

fn header_text(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The `errcode` of a remote's JSON error, if it sent one.
async fn error_code(dialer: &Dialer, response: reqwest::Response) -> Option<String> {
    let body = dialer
        .read_small(response, MAX_ERROR_BODY_BYTES)
        .await
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
    json.get("errcode")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_too_slow_only_after_the_grace_and_below_the_rate() {
        let rate = MIN_BODY_BYTES_PER_SEC as u64;
        // Within the grace, however little arrived.
        assert!(!too_slow(SLOW_BODY_GRACE, 0));
        assert!(!too_slow(Duration::from_secs(1), 1));
        // Ten seconds past it: ten seconds' worth at the floor rate is enough, less is not.
        let later = SLOW_BODY_GRACE + Duration::from_secs(10);
        assert!(!too_slow(later, 10 * rate));
        assert!(too_slow(later, 10 * rate - 1));
        // A trickle of one byte per idle timeout is cut off soon after the grace.
        assert!(too_slow(SLOW_BODY_GRACE + Duration::from_secs(1), 5));
    }
}
