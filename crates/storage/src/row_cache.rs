//! The per-process cache of media rows that downloads read ([`Database::media_row`]), so a
//! repeated download does no database query.
//!
//! A media row never changes once written, except by quarantine (mark or lift), protection
//! and deletion (purge, a withdrawn upload). Every one of those goes through a `Database`
//! method, and each of them forgets the keys it changed here, in the process that made the
//! change: that process answers from the new row at once. Another process (another repo on
//! the same database, the `media-repo purge` command) cannot reach this cache, so a row
//! lives here at most [`MEDIA_ROW_TTL`] after it was read: that is how stale another
//! process's view may be. Only rows that exist are kept: a missing media is asked again
//! every time (it may be uploaded, or fetched from its origin, any moment).
//!
//! A read that raced a change must not put back the row it read before the change: every
//! change bumps an epoch before it forgets its keys, and a read stores its row only if the
//! epoch it saw before its query is still the one after storing (else it forgets the key
//! again). Changes are rare (admin actions), so this conservative rule costs nothing.
//!
//! [`Database::media_row`]: crate::Database::media_row

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::records::MediaRecord;

/// How long a media row read from the database is used without asking again. Bounds how
/// long a change made by *another* process (a quarantine or purge on another repo sharing
/// the database, the `media-repo purge` command) may go unseen here; changes made by this
/// process are seen at once. One query per hot media per second is nothing; the point is
/// to take the query off each request.
pub const MEDIA_ROW_TTL: Duration = Duration::from_secs(1);

/// Most rows kept (each a few hundred bytes: ~30 MB at the bound). Past it, moka evicts the
/// least likely to be read again.
pub const MAX_CACHED_MEDIA_ROWS: u64 = 100_000;

/// Rows by `origin/media_id` (a `/` is in neither part: both are allow-listed).
pub(crate) struct MediaRowCache {
    rows: moka::sync::Cache<String, Arc<MediaRecord>>,
    /// Bumped by every change, before its keys are forgotten (see the module docs).
    epoch: AtomicU64,
}

/// The cache key of one media.
pub(crate) fn key(origin: &str, media_id: &str) -> String {
    let mut key = String::with_capacity(origin.len() + 1 + media_id.len());
    key.push_str(origin);
    key.push('/');
    key.push_str(media_id);
    key
}

impl MediaRowCache {
    pub(crate) fn new() -> MediaRowCache {
        MediaRowCache {
            rows: moka::sync::Cache::builder()
                .max_capacity(MAX_CACHED_MEDIA_ROWS)
                .time_to_live(MEDIA_ROW_TTL)
                .build(),
            epoch: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Arc<MediaRecord>> {
        self.rows.get(key)
    }

    /// The epoch to hand to [`MediaRowCache::store`], read before the query.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Keeps a row read after `epoch` was taken, unless a change happened since.
    pub(crate) fn store(&self, key: String, row: Arc<MediaRecord>, epoch: u64) {
        if self.epoch() != epoch {
            return;
        }
        self.rows.insert(key.clone(), row);
        // A change that bumped the epoch after the check above may have forgotten the key
        // before the insert: forget it again.
        if self.epoch() != epoch {
            self.rows.invalidate(&key);
        }
    }

    /// A change to these media rows is committed: forget them.
    pub(crate) fn forget<'a>(&self, keys: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for (origin, media_id) in keys {
            self.rows.invalidate(&key(origin, media_id));
        }
    }

    /// A change failed midway (its rows are unknown, some may be committed): forget all.
    pub(crate) fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.rows.invalidate_all();
    }

    /// Rows held now (moka's count may lag by its pending housekeeping).
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.rows.run_pending_tasks();
        self.rows.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Arc<MediaRecord> {
        Arc::new(MediaRecord {
            origin: "a.test".into(),
            media_id: id.into(),
            user_id: None,
            content_type: "image/png".into(),
            upload_name: None,
            size_bytes: 1,
            sha256: "0".repeat(64),
            datastore_id: "default".into(),
            location: "00/00/x".into(),
            created_at_ms: 0,
            quarantined_by: None,
            safe_from_quarantine: false,
        })
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let cache = MediaRowCache::new();
        let before = cache.epoch();
        cache.forget([("a.test", "other")]);
        cache.store(key("a.test", "x"), record("x"), before);
        assert!(cache.get("a.test/x").is_none());
        let now = cache.epoch();
        cache.store(key("a.test", "x"), record("x"), now);
        assert!(cache.get("a.test/x").is_some());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn forgetting_drops_the_row() {
        let cache = MediaRowCache::new();
        cache.store(key("a.test", "x"), record("x"), cache.epoch());
        cache.store(key("a.test", "y"), record("y"), cache.epoch());
        cache.forget([("a.test", "x")]);
        assert!(cache.get("a.test/x").is_none());
        assert!(cache.get("a.test/y").is_some());
    }
}
