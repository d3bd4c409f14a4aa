//! What a quarantine does beyond marking rows (`mr_storage::quarantine`): the cache forgets
//! the media everywhere, and every path that serves media refuses it.
//!
//! Serving paths read the media row before any cache lookup and call [`refuse_quarantined`]
//! on it: no extra query. Evicting deletes, for each quarantined media, its blob (cache keys
//! are by content hash), the blobs of its stored thumbnails and its shared remote record
//! (`mr1:remote:{origin/id}`, what another repo would copy from) on every shard of the
//! ring, or from the memory cache (`Cache::evict_everywhere`; a shard down now gets the
//! keys when it is up again). A fill of one of those blobs that was already on its way is
//! undone when it ends (`Cache::guard_against_refill`).

use mr_storage::MediaRecord;
use tracing::{info, warn};

use crate::error::{MatrixError, MatrixResult};
use crate::state::AppState;

/// Media evicted at once when a quarantine marks many (a user's or an origin's media).
const EVICTION_CONCURRENCY: usize = 16;

/// 404 for quarantined media, as for media that does not exist (Synapse does the same).
pub fn refuse_quarantined(record: &MediaRecord) -> MatrixResult<()> {
    match &record.quarantined_by {
        None => Ok(()),
        Some(_) => Err(MatrixError::not_found("Media not found")),
    }
}

/// What one eviction pass did, for logs and the admin API's answer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Evicted {
    pub media: usize,
    /// Deletes that a down shard will get when it is up again.
    pub pending_on_down_shards: usize,
}

/// Removes every cached copy of `records`' bytes, thumbnails and shared records.
pub async fn evict(state: &AppState, records: &[MediaRecord]) -> Evicted {
    let mut pending = 0;
    for batch in records.chunks(EVICTION_CONCURRENCY) {
        let mut evictions = Vec::with_capacity(batch.len());
        for record in batch {
            evictions.push(evict_one(state, record));
        }
        pending += futures_util::future::join_all(evictions)
            .await
            .into_iter()
            .sum::<usize>();
    }
    let evicted = Evicted {
        media: records.len(),
        pending_on_down_shards: pending,
    };
    if evicted.media > 0 {
        info!(
            media = evicted.media,
            pending = evicted.pending_on_down_shards,
            "quarantined media evicted from the cache"
        );
    }
    evicted
}

/// Evicts one media; returns how many of its deletes wait for a down shard.
async fn evict_one(state: &AppState, record: &MediaRecord) -> usize {
    let mut hashes = vec![record.sha256.clone()];
    match state
        .db
        .thumbnail_hashes_of(&record.origin, &record.media_id)
        .await
    {
        Ok(thumbnails) => hashes.extend(thumbnails),
        Err(err) => {
            warn!(origin = %record.origin, media_id = %record.media_id, error = %err, "could not list thumbnails to evict")
        }
    }
    let mut pending = 0;
    for sha256 in &hashes {
        state.cache.guard_against_refill(sha256);
        pending += state.cache.delete_blob(sha256).await.shards_pending;
    }
    let record_key = mr_cache::remote_record_key(&record.origin, &record.media_id);
    pending += state
        .cache
        .evict_everywhere(vec![record_key])
        .await
        .shards_pending;
    pending
}
