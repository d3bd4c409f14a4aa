//! Pauses a test asks for, so that a concurrent request can act inside a window that is
//! otherwise a few milliseconds wide. Only in debug builds, and only when the process runs
//! with `MEDIA_REPO_TEST_HOOKS=1`; an upload asks for them with request headers:
//!
//! * `X-Media-Repo-Test-Pause-Ms`: between storing the upload's bytes and writing its row.
//! * `X-Media-Repo-Test-Thumbnail-Pause-Ms`: between making a thumbnail of the upload's
//!   content (and handing it to the requests waiting for it) and storing it.

use actix_web::HttpRequest;

#[cfg(debug_assertions)]
mod enabled {
    use std::sync::LazyLock;
    use std::time::Duration;

    use actix_web::HttpRequest;
    use dashmap::DashMap;

    /// Longest pause a request may ask for.
    const MAX_PAUSE_MS: u64 = 30_000;

    /// Content hash → the pause before storing its thumbnails.
    static THUMBNAIL_PAUSES: LazyLock<DashMap<String, u64>> = LazyLock::new(DashMap::new);

    fn on() -> bool {
        std::env::var_os("MEDIA_REPO_TEST_HOOKS").is_some_and(|v| v == "1")
    }

    fn asked(req: &HttpRequest, header: &str) -> Option<u64> {
        req.headers()
            .get(header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| ms.min(MAX_PAUSE_MS))
    }

    pub async fn pause_before_record(req: &HttpRequest, sha256: &str) {
        if !on() {
            return;
        }
        if let Some(ms) = asked(req, "x-media-repo-test-thumbnail-pause-ms") {
            THUMBNAIL_PAUSES.insert(sha256.to_owned(), ms);
        }
        if let Some(ms) = asked(req, "x-media-repo-test-pause-ms") {
            tracing::info!(ms, "test hook: pausing before the media row is written");
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    pub async fn pause_before_thumbnail_store(sha256: &str) {
        let pause = THUMBNAIL_PAUSES.get(sha256).map(|ms| *ms);
        if let Some(ms) = pause {
            tracing::info!(ms, "test hook: pausing before a thumbnail is stored");
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

/// The upload of content `sha256` is stored; its row comes next. Honours both headers.
pub async fn pause_before_record(req: &HttpRequest, sha256: &str) {
    #[cfg(debug_assertions)]
    enabled::pause_before_record(req, sha256).await;
    #[cfg(not(debug_assertions))]
    let _ = (req, sha256);
}

/// A thumbnail of content `sha256` is made and handed out; storing it comes next.
pub async fn pause_before_thumbnail_store(sha256: &str) {
    #[cfg(debug_assertions)]
    enabled::pause_before_thumbnail_store(sha256).await;
    #[cfg(not(debug_assertions))]
    let _ = sha256;
}
