//! The limits the cache applies, taken from `cache:` in the config and swapped on reload.

use std::time::Duration;

/// Smallest chunk we write: below this the per-key overhead dominates.
pub const MIN_CHUNK_BYTES: u64 = 4 * 1024;
/// Largest chunk we write: one multiplexed Redis connection carries one value at a time, so
/// a huge chunk stalls every small request behind it (and the header stores it as u32).
pub const MAX_CHUNK_BYTES: u64 = 64 * 1024 * 1024;
/// Largest blob stored inline, inside its header value (one `SET` to write, one `GET` to
/// read, instead of a header plus a chunk key each way). Never more than one chunk: a blob
/// above `min(INLINE_MAX_BYTES, chunk size)` is chunked. Reading a range of an inline blob
/// fetches all of it, as reading a range inside one chunk does. Why 64 KiB: in
/// docs/benchmarks.md ("Cache"), plain redis-rs issuing the chunked pattern (two commands)
/// lost about half its throughput at 4 KiB and a fifth at 64 KiB, but nothing measurable
/// at 1 MiB, where moving the bytes dominates; the cap also bounds what `delete_blob` reads.
pub const INLINE_MAX_BYTES: u64 = 64 * 1024;
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
    /// Whether a blob of `size` bytes may be cached at all: the one place
    /// `cache.max_object_bytes` is applied (`Cache::put_blob` and the fill both ask here).
    pub(crate) fn admits(&self, size: u64) -> bool {
        size <= self.max_object_bytes
    }

    /// Largest blob written inline under these limits (at most one chunk).
    pub(crate) fn inline_max_bytes(&self) -> u64 {
        INLINE_MAX_BYTES.min(self.chunk_bytes)
    }

    pub(crate) fn new(max_object_bytes: u64, chunk_bytes: u64, ttl_secs: Option<u64>) -> Limits {
        Limits {
            max_object_bytes,
            chunk_bytes: chunk_bytes.clamp(MIN_CHUNK_BYTES, MAX_CHUNK_BYTES),
            ttl: ttl_secs.filter(|s| *s > 0).map(Duration::from_secs),
        }
    }
}
