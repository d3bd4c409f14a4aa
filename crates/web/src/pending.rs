//! Wakes downloads that wait (`timeout_ms`) for an async upload to be filled in.
//!
//! Within one process an upload notifies its waiters at once; waiters also re-check the
//! database every `POLL_INTERVAL`, so an upload that another media-repo process completed
//! (or a missed wake-up) is found too.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;

/// How often a waiting download re-checks the database.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct PendingUploads {
    waiters: DashMap<String, Arc<Notify>>,
}

fn key(origin: &str, media_id: &str) -> String {
    format!("{origin}/{media_id}")
}

impl PendingUploads {
    /// Waits until the upload of `origin/media_id` is announced, or `POLL_INTERVAL` passes.
    pub async fn wait_a_little(&self, origin: &str, media_id: &str) {
        let notify = self
            .waiters
            .entry(key(origin, media_id))
            .or_default()
            .clone();
        let _ = tokio::time::timeout(POLL_INTERVAL, notify.notified()).await;
    }

    /// Wakes every download waiting for `origin/media_id`.
    pub fn announce(&self, origin: &str, media_id: &str) {
        if let Some((_, notify)) = self.waiters.remove(&key(origin, media_id)) {
            notify.notify_waiters();
        }
    }
}
