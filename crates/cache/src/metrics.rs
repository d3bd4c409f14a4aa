//! Prometheus metrics of the cache API, in the process-wide default registry, declared the
//! workspace's one way: `LazyLock` statics registered by the prometheus crate's
//! `register_*!` macros (a name taken twice is a bug, and panics at first use).
//!
//! Per-shard numbers (latency, up, memory) belong to the shard actors; these count what the
//! callers of the cache saw, whatever the backend.

use std::sync::LazyLock;

use mr_config::CacheBackend;
use prometheus::{
    register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec, IntGauge,
};

/// `media_repo_cache_requests_total{backend, op, result}`; result is one of
/// hit | miss | lost | stored | skipped.
pub(crate) static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_cache_requests_total",
        "Cache API calls by backend, operation and outcome",
        &["backend", "op", "result"],
    )
    .expect("metric registered once")
});

/// `media_repo_cache_bytes_served_total{backend}`: blob bytes handed to readers.
pub(crate) static BYTES_SERVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_cache_bytes_served_total",
        "Blob bytes served from the cache",
        &["backend"],
    )
    .expect("metric registered once")
});

/// `media_repo_cache_backend_errors_total{backend, op, reason}`: backend failures that the
/// callers saw as misses or no-ops (why a hit ratio dropped).
pub(crate) static BACKEND_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_cache_backend_errors_total",
        "Backend failures turned into misses or no-ops",
        &["backend", "op", "reason"],
    )
    .expect("metric registered once")
});

/// `media_repo_cache_previous_owner_requests_total{op, owner, result}`: reads and leases
/// sent to (or skipped on) a key's previous owner after a reshard (`reshard.rs`). `op`:
/// blob_open | record_get | lease | lease_renew; `owner`: listed (still in the shard list) |
/// removed (draining); `result`: hit (served from the previous owner) | miss | down (skipped
/// without a round trip) | stored | held | unavailable | skipped (leases).
pub(crate) static PREVIOUS_OWNER: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_cache_previous_owner_requests_total",
        "Cache lookups on a key's previous owner after the shard list changed",
        &["op", "owner", "result"],
    )
    .expect("metric registered once")
});

/// `media_repo_cache_moves_total{kind, result}`: copies of what a previous owner served to
/// the key's current owner. `kind`: blob | record; `result`: moved | lost (the source lost
/// or damaged a chunk) | refused (the new owner did not take a write) | deleted (the blob
/// was deleted meanwhile; the copy was removed) | busy (already moving, or no slot free).
pub(crate) static MOVES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_cache_moves_total",
        "Blobs and records moved to their new shard after a reshard",
        &["kind", "result"],
    )
    .expect("metric registered once")
});

/// `media_repo_cache_memory_used_bytes`: weighted size (key + value bytes) of the memory backend.
pub(crate) static MEMORY_USED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "media_repo_cache_memory_used_bytes",
        "Bytes held by the in-process memory cache (keys + values)",
    )
    .expect("metric registered once")
});

/// `media_repo_cache_pending_evictions`: keys an eviction could not delete on a shard that
/// was down, deleted when it is up again (`evictions.rs`).
pub(crate) static PENDING_EVICTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "media_repo_cache_pending_evictions",
        "Evicted keys waiting for a down shard to come back",
    )
    .expect("metric registered once")
});

/// The counters every cached download touches, resolved once per backend:
/// `with_label_values` hashes each label and takes the vector's lock on every call, a
/// measurable share of a small download. Each is resolved on first use, so a series still
/// appears only once it has counted something.
struct ReadCounters {
    open_hit: LazyLock<IntCounter>,
    open_miss: LazyLock<IntCounter>,
    bytes_served: LazyLock<IntCounter>,
}

static MEMORY_READS: ReadCounters = ReadCounters {
    open_hit: LazyLock::new(|| REQUESTS.with_label_values(&["memory", "blob_open", "hit"])),
    open_miss: LazyLock::new(|| REQUESTS.with_label_values(&["memory", "blob_open", "miss"])),
    bytes_served: LazyLock::new(|| BYTES_SERVED.with_label_values(&["memory"])),
};

static REDIS_READS: ReadCounters = ReadCounters {
    open_hit: LazyLock::new(|| REQUESTS.with_label_values(&["redis", "blob_open", "hit"])),
    open_miss: LazyLock::new(|| REQUESTS.with_label_values(&["redis", "blob_open", "miss"])),
    bytes_served: LazyLock::new(|| BYTES_SERVED.with_label_values(&["redis"])),
};

fn reads(backend: CacheBackend) -> Option<&'static ReadCounters> {
    match backend {
        CacheBackend::Memory => Some(&MEMORY_READS),
        CacheBackend::Redis => Some(&REDIS_READS),
        CacheBackend::None => None,
    }
}

/// `media_repo_cache_requests_total{backend, op="blob_open", result=hit|miss}`.
pub(crate) fn blob_open(backend: CacheBackend, hit: bool) {
    match reads(backend) {
        Some(counters) if hit => counters.open_hit.inc(),
        Some(counters) => counters.open_miss.inc(),
        None => request(
            backend.name(),
            "blob_open",
            if hit { "hit" } else { "miss" },
        ),
    }
}

pub(crate) fn request(backend: &'static str, op: &'static str, result: &'static str) {
    REQUESTS.with_label_values(&[backend, op, result]).inc();
}

pub(crate) fn backend_error(backend: &'static str, op: &'static str, reason: &'static str) {
    BACKEND_ERRORS
        .with_label_values(&[backend, op, reason])
        .inc();
}

pub(crate) fn bytes_served(backend: CacheBackend, n: usize) {
    match reads(backend) {
        Some(counters) => counters.bytes_served.inc_by(n as u64),
        None => BYTES_SERVED
            .with_label_values(&[backend.name()])
            .inc_by(n as u64),
    }
}

pub(crate) fn previous_owner(op: &'static str, owner: &'static str, result: &'static str) {
    PREVIOUS_OWNER.with_label_values(&[op, owner, result]).inc();
}

pub(crate) fn moved(kind: &'static str, result: &'static str) {
    MOVES.with_label_values(&[kind, result]).inc();
}
