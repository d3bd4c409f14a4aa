//! Hits kept across a reshard: after the shard list changed, a miss on a key's new shard
//! reads the shard that owned the key before (the ring's previous list, kept for
//! `cache.redis.reshard_drain_secs`), serves what it finds, and moves blobs and records to the
//! new owner in the background.
//!
//! * **No added latency when the previous owner is down**: its health flag is read before
//!   anything is sent, and a down owner is skipped without a round trip. A failed fallback is
//!   a miss like any other, so no request fails because of it.
//! * **Consistent moves**: a chunked blob is copied chunk by chunk from its previous owner,
//!   each chunk checked against the header's length and checksum, and the header is written
//!   last, as `put_blob` does; an inline blob is its header value, already verified when it
//!   was opened. If the source's header is gone once the copy is published, a delete ran
//!   meanwhile (quarantine) and the copy is deleted again.
//! * **The old copy is kept**: media repos sharing the shards that still run the old list
//!   keep hitting it there, and content addressing means it can never be stale. The memory
//!   it holds is reclaimed by Redis' eviction (`allkeys-lfu`: nobody reads it any more) or
//!   by `cache.ttl_secs`; a removed shard is dropped whole when the operator retires it.
//! * **Leases**: while a change is drained, a lease is taken on the new owner first and then,
//!   with the same token, on the previous owner. It is exclusive only when both are ours; a
//!   lease someone took on the previous owner (a repo still on the old list, or one taken
//!   before the change) makes ours step back. Every holder takes the new owner first, so two
//!   repos on the new list serialise there and a repo on the old list meets the same token on
//!   the old owner: one fetcher, never two holders on two shards. A release goes to every
//!   shard (`del_if_eq`), so both copies of a token are given back. A lease taken before the
//!   change is renewed where it is and then put on the new owner with the same token.
//!
//! Moves run on at most [`MAX_MOVES_IN_FLIGHT`] background tasks per process, each holding
//! one chunk at a time; a blob already being moved, or one arriving while every slot is
//! busy, is served from its previous owner without a move (the next read tries again).

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use mr_ring::PreviousOwner;

use crate::blob;
use crate::header::{checksum, StoredBlob};
use crate::keys::{blob_chunk_key, blob_header_key};
use crate::kv::{Kv, SetNx};
use crate::limits::Limits;
use crate::metrics;
use crate::shards::RingKv;

/// Most blob moves running at once in this process (each holds one chunk in memory).
pub const MAX_MOVES_IN_FLIGHT: usize = 4;

/// Blobs being moved now, by sha256: at most one move per blob and [`MAX_MOVES_IN_FLIGHT`]
/// in all.
static MOVING: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// What the previous owner of a key had.
pub(crate) struct Found {
    pub(crate) value: Bytes,
    /// Reads every further key (a blob's chunks) from the previous owner.
    pub(crate) source: Kv,
    owner: &'static str,
}

impl Found {
    /// Counts what the caller made of the value: `hit` when it served it, `miss` when it
    /// turned out unusable (a damaged header).
    pub(crate) fn count(&self, op: &'static str, result: &'static str) {
        metrics::previous_owner(op, self.owner, result);
    }
}

/// `owner` label: is the previous owner still in the shard list, or removed and draining.
fn owner_label(previous: &PreviousOwner) -> &'static str {
    if previous.removed {
        "removed"
    } else {
        "listed"
    }
}

/// The previous owner of `key`, when the key moved, the change is being drained and the
/// owner is up. A down owner is counted and skipped here, before any message.
fn reachable_previous(redis: &RingKv, key: &str, op: &'static str) -> Option<PreviousOwner> {
    let previous = redis.previous_owner(key)?;
    if !previous.shard.is_up() {
        metrics::previous_owner(op, owner_label(&previous), "down");
        return None;
    }
    Some(previous)
}

/// Reads `key` from its previous owner after a miss on its current one. None: no reshard
/// being drained, the key did not move, its previous owner is down, or it does not have it.
/// The caller counts a hit with [`Found::count`]; misses and down owners are counted here.
pub(crate) async fn read_previous(kv: &Kv, key: &str, op: &'static str) -> Option<Found> {
    let Kv::Redis(redis) = kv else {
        return None;
    };
    let previous = reachable_previous(redis, key, op)?;
    let owner = owner_label(&previous);
    match redis.get_on(&previous.shard, key).await {
        Some(value) => Some(Found {
            value,
            source: Kv::Redis(redis.pinned_to(previous.shard)),
            owner,
        }),
        None => {
            metrics::previous_owner(op, owner, "miss");
            None
        }
    }
}

/// Takes the lease `key` on its previous owner too, after it was stored on the current one
/// (see the module docs). `None` when there is no other owner to ask (no drain, the key did
/// not move, or the previous owner is down: skipped without a round trip).
pub(crate) async fn lease_previous(
    kv: &Kv,
    key: &str,
    token: &Bytes,
    ttl: Duration,
) -> Option<SetNx> {
    let Kv::Redis(redis) = kv else {
        return None;
    };
    let previous = reachable_previous(redis, key, "lease")?;
    let outcome = redis
        .set_nx_on(&previous.shard, key.to_owned(), token.clone(), ttl)
        .await;
    let result = match outcome {
        SetNx::Stored => "stored",
        SetNx::Held => "held",
        SetNx::Unavailable => "unavailable",
    };
    metrics::previous_owner("lease", owner_label(&previous), result);
    Some(outcome)
}

/// Extends our lease `key` on its previous owner, where it holds our token; true when
/// renewed there.
pub(crate) async fn renew_previous(kv: &Kv, key: &str, token: &Bytes, ttl: Duration) -> bool {
    let Kv::Redis(redis) = kv else {
        return false;
    };
    let Some(previous) = reachable_previous(redis, key, "lease_renew") else {
        return false;
    };
    let ours = redis.get_on(&previous.shard, key).await.as_ref() == Some(token);
    let renewed = ours
        && redis
            .set_on(&previous.shard, key.to_owned(), token.clone(), Some(ttl))
            .await;
    let result = if renewed { "stored" } else { "skipped" };
    metrics::previous_owner("lease_renew", owner_label(&previous), result);
    renewed
}

/// Copies a record found on its previous owner to its current one, in the background.
pub(crate) fn spawn_copy_record(kv: &Kv, key: &str, value: Bytes, ttl: Option<Duration>) {
    let (kv, key) = (kv.clone(), key.to_owned());
    tokio::spawn(async move {
        let copied = kv.set(key, value, ttl).await;
        metrics::moved("record", if copied { "moved" } else { "refused" });
    });
}

/// Moves a blob whose header `raw` (decoded: `stored`) was found on its previous owner
/// `source` to the blob's current owner, in the background. Skipped (counted `busy`) when
/// this blob is already being moved or every move slot is taken.
pub(crate) fn spawn_move_blob(
    kv: &Kv,
    source: Kv,
    limits: Limits,
    sha256: &str,
    raw: Bytes,
    stored: &StoredBlob,
) {
    let Some(slot) = MoveSlot::take(sha256) else {
        metrics::moved("blob", "busy");
        return;
    };
    let kv = kv.clone();
    let chunks = match stored {
        StoredBlob::Chunked(header) => header
            .checksums
            .iter()
            .enumerate()
            .map(|(i, sum)| (i as u64, header.chunk_span(i as u64).1, *sum))
            .collect(),
        StoredBlob::Inline(_) => Vec::new(),
    };
    tokio::spawn(async move {
        let result = move_blob(&kv, &source, limits, &slot.sha256, raw, chunks).await;
        metrics::moved("blob", result);
        drop(slot);
    });
}

/// The move itself; returns the `result` label: moved | lost | refused | deleted.
async fn move_blob(
    kv: &Kv,
    source: &Kv,
    limits: Limits,
    sha256: &str,
    raw: Bytes,
    chunks: Vec<(u64, u64, u64)>,
) -> &'static str {
    for (index, len, sum) in chunks {
        let key = blob_chunk_key(sha256, index);
        let Some(bytes) = source.get(&key).await else {
            return "lost";
        };
        if bytes.len() as u64 != len || checksum(&bytes) != sum {
            return "lost";
        }
        if !kv.set(key, bytes, limits.ttl).await {
            return "refused";
        }
    }
    let header_key = blob_header_key(sha256);
    if !kv.set(header_key.clone(), raw, limits.ttl).await {
        return "refused";
    }
    // A delete (quarantine) that ran while we copied removed the source; what we just
    // published would bring the blob back. (Eviction of the source looks the same and
    // only costs the copy.)
    if source.get(&header_key).await.is_none() {
        let keys = blob::blob_keys(kv, limits, sha256).await;
        // A shard that misses this delete still holds a blob nobody routes to it again.
        kv.del_everywhere(keys).await;
        return "deleted";
    }
    "moved"
}

/// A blob's place among the moves in flight; given back on drop.
struct MoveSlot {
    sha256: String,
}

impl MoveSlot {
    fn take(sha256: &str) -> Option<MoveSlot> {
        let mut moving = moving();
        if moving.len() >= MAX_MOVES_IN_FLIGHT || !moving.insert(sha256.to_owned()) {
            return None;
        }
        Some(MoveSlot {
            sha256: sha256.to_owned(),
        })
    }
}

impl Drop for MoveSlot {
    fn drop(&mut self) {
        moving().remove(&self.sha256);
    }
}

/// A poisoned lock only means a thread panicked between two set operations; the set is
/// still usable.
fn moving() -> MutexGuard<'static, HashSet<String>> {
    MOVING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
