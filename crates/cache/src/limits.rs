//! The limits the cache applies, taken from `cache:` in the config and swapped on reload.

use std::time::Duration;

/// Smallest chunk we write: below this the per-key overhead dominates.
pub const MIN_CHUNK_BYTES: u64 = 4 * 1024;
/// Largest chunk we write: one multiplexed Redis connection carries one value at a time, so
/// a huge chunk stalls every small request behind it (and the header stores it as u32).
pub const MAX_CHUNK_BYTES: u64 = 64 * 1024 * 1024;
/// Records (remote media descriptions) are small JSON; anything larger is not cached.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Blobs larger than this are never cached.
    pub(crate) max_object_bytes: u64,
    /// Chunk size for newly written blobs (readers use the size in each blob's header).
    pub(crate) chunk_bytes: u64,
    /// TTL on blobs and records; None = until evicted.
    pub(crate) ttl: Option<Duration>,
}

impl Limits {
    pub(crate) fn new(max_object_bytes: u64, chunk_bytes: u64, ttl_secs: Option<u64>) -> Limits {
        Limits {
            max_object_bytes,
            chunk_bytes: chunk_bytes.clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES),
            ttl: ttl_secs.filter(|s| *s > 0).map(Duration::from_secs),
        }
    }
}
