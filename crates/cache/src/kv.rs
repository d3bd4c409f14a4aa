//! The key-value surface every cache backend offers, as seen by the blob and lease layers.
//!
//! Every call is infallible for its caller: a backend that cannot answer turns a read into
//! a miss and a write into a no-op (`false`), and counts the failure in
//! `media_repo_cache_backend_errors_total`. Dispatch is an enum rather than a trait object so
//! the async methods need no boxing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mr_config::CacheBackend;

use crate::memory::MemoryKv;
use crate::shards::RingKv;

/// Outcome of a `SET NX` (taking a lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetNx {
    /// The key was absent and now holds our value.
    Stored,
    /// Someone else's value is there.
    Held,
    /// The backend could not answer; nobody can tell who holds the key.
    Unavailable,
}

/// One backend's key-value store.
#[derive(Clone)]
pub(crate) enum Kv {
    Memory(MemoryKv),
    Redis(RingKv),
}

impl Kv {
    /// Which backend this is.
    pub(crate) fn kind(&self) -> CacheBackend {
        match self {
            Kv::Memory(_) => CacheBackend::Memory,
            Kv::Redis(_) => CacheBackend::Redis,
        }
    }

    /// Backend name used as the `backend` metric label.
    pub(crate) fn backend(&self) -> &'static str {
        self.kind().name()
    }

    /// Whether fetching the next chunk ahead of time is worth a task: only when a fetch
    /// crosses the network.
    pub(crate) fn prefetch_pays(&self) -> bool {
        match self {
            Kv::Memory(_) => false,
            Kv::Redis(_) => true,
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Option<Bytes> {
        match self {
            Kv::Memory(m) => m.get(key).await,
            Kv::Redis(r) => r.get(key).await,
        }
    }

    /// Stores `value`; `false` when the backend did not take it.
    pub(crate) async fn set(&self, key: String, value: Bytes, ttl: Option<Duration>) -> bool {
        match self {
            Kv::Memory(m) => m.set(key, value, ttl).await,
            Kv::Redis(r) => r.set(key, value, ttl).await,
        }
    }

    /// Lease primitive: stores `value` only if `key` is absent.
    pub(crate) async fn set_nx(&self, key: String, value: Bytes, ttl: Duration) -> SetNx {
        match self {
            Kv::Memory(m) => m.set_nx(key, value, ttl).await,
            Kv::Redis(r) => r.set_nx(key, value, ttl).await,
        }
    }

    /// Deletes `key` where it holds `value`, wherever it may live (a lease taken while
    /// routing pointed elsewhere must still be released). `true` if one was deleted.
    pub(crate) async fn del_if_eq(&self, key: String, value: Bytes) -> bool {
        match self {
            Kv::Memory(m) => m.del_if_eq(key, value).await,
            Kv::Redis(r) => r.del_if_eq(key, value).await,
        }
    }

    /// Deletes `keys` from every place they could live; returns the shards that could not
    /// be asked (always none for the memory backend) and how many places took it.
    pub(crate) async fn del_everywhere(&self, keys: Vec<String>) -> (Vec<Arc<str>>, usize) {
        match self {
            Kv::Memory(m) => {
                m.del(keys).await;
                (Vec::new(), 1)
            }
            Kv::Redis(r) => r.del_everywhere(keys).await,
        }
    }
}
