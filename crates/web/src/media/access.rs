//! When media was last served, for purging remote media nobody reads any more. Serving a
//! media (download, thumbnail, federation) only notes it in memory; a task writes the noted
//! set every [`ACCESS_FLUSH_INTERVAL`] in batched transactions, and once more at shutdown.
//! So a busy download path costs one concurrent-set insert, never a database write.

use std::time::Duration;

use dashmap::DashSet;
use mr_storage::Database;
use tracing::{debug, warn};

/// How often noted accesses are written. Last access only decides what an operator's
/// "not accessed for N days" purge removes, so minutes of delay do not matter; a process
/// killed without a shutdown loses at most this much.
pub const ACCESS_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// Distinct media noted between two flushes at most; more are dropped until the next
/// flush (their last access is then older than it should be, which only lets a remote
/// media be purged and fetched again). Bounds memory under a flood of distinct ids.
pub const MAX_NOTED_ACCESSES: usize = 200_000;

/// Media served since the last flush.
#[derive(Default)]
pub struct AccessRecorder {
    /// `origin/media_id` (a server name holds no `/`). A sharded set: workers noting
    /// different media rarely touch the same lock. One string rather than a pair so that
    /// a media noted already (the common case on a busy path) is found with a read lock and
    /// one allocation, not two allocations and a write lock.
    noted: DashSet<String>,
}

/// The key of one media in the noted set.
fn key(origin: &str, media_id: &str) -> String {
    let mut key = String::with_capacity(origin.len() + 1 + media_id.len());
    key.push_str(origin);
    key.push('/');
    key.push_str(media_id);
    key
}

impl AccessRecorder {
    /// Notes that a media was served now.
    pub fn note(&self, origin: &str, media_id: &str) {
        let key = key(origin, media_id);
        if !self.noted.contains(&key) && self.noted.len() < MAX_NOTED_ACCESSES {
            self.noted.insert(key);
        }
    }

    /// Writes what was noted as accessed at `now_ms` and forgets it; returns how many media.
    /// On a database error the noted media are kept for the next flush.
    pub async fn flush(&self, db: &Database, now_ms: i64) -> mr_storage::Result<usize> {
        let keys: Vec<String> = self.noted.iter().map(|key| key.clone()).collect();
        if keys.is_empty() {
            return Ok(0);
        }
        for key in &keys {
            self.noted.remove(key);
        }
        let media: Vec<(String, String)> = keys
            .iter()
            .filter_map(|key| key.split_once('/'))
            .map(|(origin, media_id)| (origin.to_owned(), media_id.to_owned()))
            .collect();
        if let Err(err) = db.record_access(&media, now_ms).await {
            for key in keys {
                if self.noted.len() < MAX_NOTED_ACCESSES {
                    self.noted.insert(key);
                }
            }
            return Err(err);
        }
        Ok(media.len())
    }

    /// Flushes every [`ACCESS_FLUSH_INTERVAL`] until the server stops (the task is dropped
    /// with the System; `server::run` flushes once more after the listeners stopped).
    pub async fn flush_periodically(&self, db: Database) {
        let mut tick = tokio::time::interval(ACCESS_FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.flush(&db, super::now_ms()).await {
                Ok(n) => debug!(media = n, "last access recorded"),
                Err(err) => {
                    warn!(error = %err, "recording last access failed; retrying at the next flush")
                }
            }
        }
    }
}
