//! The key-value surface every cache backend offers, as seen by the blob and lease layers.
//!
//! Every call is infallible for its caller: a backend that cannot answer turns a read into
//! a miss and a write into a no-op (`false`), and counts the failure in
//! `media_repo_cache_backend_errors_total`. Dispatch is an enum rather than a trait object so
//! the async methods need no boxing.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use mr_config::CacheBackend;

use crate::header::checksum;
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

/// What is known about the integrity of a value just read, so that a reader checks the
/// same bytes against the same checksum only once.
///
/// A memory-backend value is an immutable buffer in this process: an entry's bytes never
/// change (a write makes a new entry, with a new `Checked`), so once a reader found them
/// to match a checksum, every later reader of that entry may rely on it. Hashing a 4 KiB
/// inline blob was ~5 % of a cached download's CPU; a 1 MiB chunk costs far more. A value
/// from Redis crossed the network and may be overwritten any time: its `Checked` is empty
/// and every read is hashed.
#[derive(Clone, Default)]
pub(crate) struct Checked(Option<Arc<OnceLock<u64>>>);

impl Checked {
    /// For a new in-process entry: nothing checked yet, but a check will be remembered.
    pub(crate) fn remembering() -> Checked {
        Checked(Some(Arc::default()))
    }

    /// Whether `bytes` (this value's) match `sum`: known already, or hashed now (and
    /// remembered when they match).
    pub(crate) fn verify(&self, bytes: &[u8], sum: u64) -> bool {
        if let Some(known) = self.0.as_ref().and_then(|cell| cell.get()) {
            if *known == sum {
                return true;
            }
        }
        let matches = checksum(bytes) == sum;
        if matches {
            if let Some(cell) = &self.0 {
                // Only the first sum sticks; a value is only ever checked against its own.
                let _ = cell.set(sum);
            }
        }
        matches
    }
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

    /// [`Kv::get`], with what is known about the value's integrity (see [`Checked`]).
    pub(crate) async fn get_checked(&self, key: &str) -> Option<(Bytes, Checked)> {
        match self {
            Kv::Memory(m) => m.get_checked(key).await,
            Kv::Redis(r) => r.get(key).await.map(|bytes| (bytes, Checked::default())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_trusted_only_for_the_sum_it_matched() {
        let bytes = b"the bytes of one entry";
        let sum = checksum(bytes);
        let checked = Checked::remembering();
        assert!(!checked.verify(bytes, sum ^ 1), "a wrong sum never matches");
        assert!(checked.verify(bytes, sum));
        // Remembered: the entry's bytes are not hashed again for this sum...
        assert!(checked.verify(b"not hashed", sum));
        // ...but are for any other.
        assert!(!checked.verify(bytes, sum ^ 1));
        // A value from a remote backend remembers nothing.
        let remote = Checked::default();
        assert!(remote.verify(bytes, sum));
        assert!(!remote.verify(b"hashed again", sum));
    }
}
