//! The in-process backend: a moka cache bounded in bytes, with TinyLFU eviction.
//!
//! TinyLFU admits a new entry only if it is likely to be used more than the one it would
//! evict, so a burst of one-off downloads does not flush the popular media (the same reason
//! the seed recommends `allkeys-lfu` for Redis). Weight is key + value bytes, so the bound
//! is on what we actually hold (values are stored as exact-size buffers, see `blob.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use moka::future::Cache as Moka;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::Expiry;

use crate::kv::{Checked, SetNx};
use crate::metrics;

/// What we store per key: the bytes, how long they may live, and which checksum readers
/// found them to match (`kv::Checked`; one per entry, so a new write starts unchecked).
#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Option<Duration>,
    checked: Checked,
}

/// Expires each entry after the TTL it was written with (leases need one per key).
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, value: &Entry, _at: Instant) -> Option<Duration> {
        value.ttl
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Entry,
        _at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        value.ttl
    }
}

/// A cheap-to-clone handle on the process-local cache.
#[derive(Clone)]
pub(crate) struct MemoryKv {
    /// Replaced wholesale when `memory.max_bytes` changes on reload (moka's capacity is
    /// fixed at build time): held like every reloadable value, in an `ArcSwap` that each
    /// call loads once.
    cache: Arc<ArcSwap<Moka<String, Entry>>>,
    /// Leases live apart from the bytes: a full byte cache's admission filter would turn a
    /// brand-new (low-frequency) lease away, and a lease that silently fails to stick would
    /// let two fetchers in.
    leases: Moka<String, Entry>,
}

/// Most leases the memory backend holds at once (each is one in-flight remote fetch).
pub const MAX_MEMORY_LEASES: u64 = 100_000;

fn build(max_bytes: u64) -> Moka<String, Entry> {
    Moka::builder()
        .max_capacity(max_bytes)
        .weigher(|key: &String, entry: &Entry| {
            u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX)
        })
        .eviction_policy(EvictionPolicy::tiny_lfu())
        .expire_after(PerEntryTtl)
        .build()
}

impl MemoryKv {
    pub(crate) fn new(max_bytes: u64) -> MemoryKv {
        MemoryKv {
            cache: Arc::new(ArcSwap::from_pointee(build(max_bytes))),
            leases: Moka::builder()
                .max_capacity(MAX_MEMORY_LEASES)
                .expire_after(PerEntryTtl)
                .build(),
        }
    }

    /// Starts over with a new byte bound (the old entries are dropped: they are only copies).
    pub(crate) fn resize(&self, max_bytes: u64) {
        self.cache.store(Arc::new(build(max_bytes)));
        metrics::MEMORY_USED.set(0);
    }

    fn handle(&self) -> Arc<Moka<String, Entry>> {
        self.cache.load_full()
    }

    /// The byte bound the cache was built with.
    pub(crate) fn capacity(&self) -> u64 {
        self.handle().policy().max_capacity().unwrap_or(0)
    }

    /// Bytes currently held (key + value), as moka last accounted them.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.handle().weighted_size()
    }

    /// Applies moka's pending housekeeping (evictions, size accounting) now.
    pub(crate) async fn run_pending_tasks(&self) {
        let cache = self.handle();
        cache.run_pending_tasks().await;
        metrics::MEMORY_USED.set(clamp_i64(cache.weighted_size()));
    }

    pub(crate) async fn get(&self, key: &str) -> Option<Bytes> {
        self.handle().get(key).await.map(|entry| entry.value)
    }

    pub(crate) async fn get_checked(&self, key: &str) -> Option<(Bytes, Checked)> {
        self.handle()
            .get(key)
            .await
            .map(|entry| (entry.value, entry.checked))
    }

    pub(crate) async fn set(&self, key: String, value: Bytes, ttl: Option<Duration>) -> bool {
        let cache = self.handle();
        let entry = Entry {
            value,
            ttl,
            checked: Checked::remembering(),
        };
        cache.insert(key, entry).await;
        metrics::MEMORY_USED.set(clamp_i64(cache.weighted_size()));
        true
    }

    pub(crate) async fn set_nx(&self, key: String, value: Bytes, ttl: Duration) -> SetNx {
        let entry = self
            .leases
            .entry(key)
            .or_insert(Entry {
                value,
                ttl: Some(ttl),
                // Leases are compared, never hashed.
                checked: Checked::default(),
            })
            .await;
        if entry.is_fresh() {
            SetNx::Stored
        } else {
            SetNx::Held
        }
    }

    pub(crate) async fn del_if_eq(&self, key: String, value: Bytes) -> bool {
        let result = self
            .leases
            .entry(key)
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if entry.value().value == value => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        matches!(result, moka::ops::compute::CompResult::Removed(_))
    }

    pub(crate) async fn del(&self, keys: Vec<String>) {
        let cache = self.handle();
        for key in keys {
            cache.invalidate(&key).await;
        }
        metrics::MEMORY_USED.set(clamp_i64(cache.weighted_size()));
    }
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
