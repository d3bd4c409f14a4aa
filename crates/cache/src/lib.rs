//! The media cache: what web handlers use to keep and serve copies of media bytes.
//!
//! Backends: `none`, `memory` (in-process moka, byte-bounded, TinyLFU) and `redis` (shard
//! actors reached through the ring; this crate never talks to Redis itself). Blobs are
//! stored in verified chunks so a read can stop cleanly where the cache lost data (small
//! blobs inline in their header, one key), records describe remote media, and leases keep
//! two repos from fetching the same remote file. After the shard list changes, a miss on a
//! key's new shard reads its previous owner and moves what it finds (`reshard`). Copies
//! from the caller's store are made by `Cache::fill_in_background` (`fill`): one per blob
//! at a time, never for what the cache would not keep.
//!
//! Invariant: no call here fails because the cache failed — backend trouble is a miss.

mod blob;
mod cache;
mod error;
mod evictions;
mod fill;
mod header;
mod keys;
mod kv;
mod lease;
mod limits;
mod memory;
mod metrics;
mod reshard;
mod shards;

pub use blob::{BlobRead, BlobReader};
pub use cache::{Cache, CacheStatus, MIN_LEASE_TTL, STATUS_TIMEOUT};
pub use error::{CacheError, Result};
pub use evictions::{Eviction, EVICTION_RETRY_EVERY, MAX_PENDING_EVICTION_KEYS};
pub use fill::{FillOutcome, REFILL_GUARD};
pub use keys::{
    blob_chunk_key, blob_header_key, is_valid_sha256, lease_key, remote_record_key, KEY_PREFIX,
};
pub use lease::Lease;
pub use limits::{INLINE_MAX_BYTES, MAX_CHUNK_BYTES, MAX_RECORD_BYTES, MIN_CHUNK_BYTES};
/// A shard as [`Cache::status`] reports it (the ring's own type).
pub use mr_ring::ShardStatus;
pub use reshard::MAX_MOVES_IN_FLIGHT;
