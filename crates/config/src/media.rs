//! Limits and behaviour of the media endpoints: uploads, downloads and thumbnails.

use serde::{Deserialize, Serialize};

/// 100 MiB: the default largest upload and download.
const DEFAULT_MAX_MEDIA_BYTES: u64 = 100 * 1024 * 1024;

/// Uploads (`POST /_matrix/media/v3/upload`, `/create` + `PUT`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsConfig {
    /// Largest accepted upload, in bytes (also advertised as `m.upload.size`).
    /// Default 104857600 (100 MiB).
    #[serde(default = "default_upload_max_bytes")]
    pub max_bytes: u64,
    /// Largest number of media IDs a user may have created (`POST /create`) but not yet
    /// uploaded to. Default 10.
    #[serde(default = "default_max_pending_per_user")]
    pub max_pending_per_user: u32,
    /// Seconds a created-but-not-uploaded media ID stays valid. Default 86400 (24 h).
    #[serde(default = "default_pending_expiry_secs")]
    pub pending_expiry_secs: u64,
    /// Put freshly uploaded media into the cache right away, so the first download is
    /// already a hit. Default true.
    #[serde(default = "default_warm_cache")]
    pub warm_cache: bool,
    /// Uploads one user may have in progress at once; more answer 429
    /// `M_LIMIT_EXCEEDED` with Retry-After. Default 10.
    #[serde(default = "default_max_concurrent_per_user")]
    pub max_concurrent_per_user: u32,
    /// Uploads in progress at once over all users; more answer 429. Each holds a socket,
    /// at most one temp file and up to 128 KiB of received bytes. Default 256.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: u32,
    /// Seconds an upload may go without receiving a byte before it is cut off with 408
    /// (its temp file removed, nothing stored). Default 30.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
}

fn default_upload_max_bytes() -> u64 {
    DEFAULT_MAX_MEDIA_BYTES
}

fn default_max_pending_per_user() -> u32 {
    10
}

fn default_pending_expiry_secs() -> u64 {
    24 * 60 * 60
}

fn default_warm_cache() -> bool {
    true
}

fn default_max_concurrent_per_user() -> u32 {
    10
}

fn default_max_concurrent() -> u32 {
    256
}

fn default_idle_timeout_secs() -> u64 {
    30
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            max_bytes: default_upload_max_bytes(),
            max_pending_per_user: default_max_pending_per_user(),
            pending_expiry_secs: default_pending_expiry_secs(),
            warm_cache: default_warm_cache(),
            max_concurrent_per_user: default_max_concurrent_per_user(),
            max_concurrent: default_max_concurrent(),
            idle_timeout_secs: default_idle_timeout_secs(),
        }
    }
}

/// Downloads, local and remote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadsConfig {
    /// Largest remote media fetched over federation, in bytes. Default 104857600 (100 MiB).
    #[serde(default = "default_download_max_bytes")]
    pub max_bytes: u64,
    /// Milliseconds to wait for media that is not uploaded yet when the client gives no
    /// `timeout_ms`. Default 20000.
    #[serde(default = "default_timeout_ms")]
    pub default_timeout_ms: u64,
    /// Upper bound, in milliseconds, on a client's `timeout_ms`. Default 60000.
    #[serde(default = "default_max_timeout_ms")]
    pub max_timeout_ms: u64,
    /// Freezing of the legacy unauthenticated `/_matrix/media/*` download endpoints.
    #[serde(default)]
    pub legacy_freeze: LegacyFreezeConfig,
}

fn default_download_max_bytes() -> u64 {
    DEFAULT_MAX_MEDIA_BYTES
}

fn default_timeout_ms() -> u64 {
    20_000
}

fn default_max_timeout_ms() -> u64 {
    60_000
}

impl Default for DownloadsConfig {
    fn default() -> Self {
        DownloadsConfig {
            max_bytes: default_download_max_bytes(),
            default_timeout_ms: default_timeout_ms(),
            max_timeout_ms: default_max_timeout_ms(),
            legacy_freeze: LegacyFreezeConfig::default(),
        }
    }
}

/// The spec asks servers to "freeze" the legacy endpoints: media that arrived after the
/// freeze is only served on the authenticated endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyFreezeConfig {
    /// Whether the freeze applies. Default true.
    #[serde(default = "default_freeze_enabled")]
    pub enabled: bool,
    /// Unix time in milliseconds: media created at or after it is frozen, older media
    /// stays reachable unauthenticated. Default unset: all media is frozen.
    #[serde(default = "default_freeze_after_ms")]
    pub after_ms: Option<i64>,
}

fn default_freeze_enabled() -> bool {
    true
}

fn default_freeze_after_ms() -> Option<i64> {
    None
}

impl Default for LegacyFreezeConfig {
    fn default() -> Self {
        LegacyFreezeConfig {
            enabled: default_freeze_enabled(),
            after_ms: default_freeze_after_ms(),
        }
    }
}

/// Thumbnail generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailsConfig {
    /// Whether thumbnails are generated at all. Default true.
    #[serde(default = "default_thumbnails_enabled")]
    pub enabled: bool,
    /// Largest source image, in bytes, that is thumbnailed. Default 20971520 (20 MiB).
    #[serde(default = "default_max_source_bytes")]
    pub max_source_bytes: u64,
    /// Largest source image, in pixels (width × height), that is decoded; guards memory
    /// against decompression bombs. Default 32000000.
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
    /// Sizes generated; a request is served the smallest one at least as big as asked.
    /// Default: the five sizes the spec suggests (32×32 crop, 96×96 crop, 320×240 scale,
    /// 640×480 scale, 800×600 scale).
    #[serde(default = "default_thumbnail_sizes")]
    pub sizes: Vec<ThumbnailSize>,
}

fn default_thumbnails_enabled() -> bool {
    true
}

fn default_max_source_bytes() -> u64 {
    20 * 1024 * 1024
}

fn default_max_pixels() -> u64 {
    32_000_000
}

fn default_thumbnail_sizes() -> Vec<ThumbnailSize> {
    [
        (32, 32, ThumbnailMethod::Crop),
        (96, 96, ThumbnailMethod::Crop),
        (320, 240, ThumbnailMethod::Scale),
        (640, 480, ThumbnailMethod::Scale),
        (800, 600, ThumbnailMethod::Scale),
    ]
    .into_iter()
    .map(|(width, height, method)| ThumbnailSize {
        width,
        height,
        method,
    })
    .collect()
}

impl Default for ThumbnailsConfig {
    fn default() -> Self {
        ThumbnailsConfig {
            enabled: default_thumbnails_enabled(),
            max_source_bytes: default_max_source_bytes(),
            max_pixels: default_max_pixels(),
            sizes: default_thumbnail_sizes(),
        }
    }
}

/// One generated thumbnail size. All fields are required.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// How the source is fitted into width × height.
    pub method: ThumbnailMethod,
}

/// How a thumbnail is fitted, as in the spec's `method` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    /// Fill exactly width × height, cutting off what sticks out.
    Crop,
    /// Fit inside width × height, keeping the aspect ratio.
    Scale,
}
