//! `Cache`: the one handle the rest of the code uses, whatever the backend.
//!
//! It picks the backend at start (none | memory | redis), applies limits from config, and
//! turns every backend failure into a miss. Nothing here can fail a request: the only
//! errors returned are about the caller's own reader in `put_blob`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use actix::Addr;
use bytes::Bytes;
use mr_config::{CacheBackend, CacheConfig};
use mr_ring::{ApplyRedisConfig, RingActor, ShardStatus, Status};
use serde::Serialize;
use tokio::io::AsyncRead;

use crate::blob::{self, BlobReader};
use crate::error::Result;
use crate::evictions::{self, Eviction, PendingEvictions};
use crate::fill::Fills;
use crate::keys::is_valid_sha256;
use crate::kv::{Kv, SetNx};
use crate::lease::Lease;
use crate::limits::{Limits, MAX_RECORD_BYTES};
use crate::memory::MemoryKv;
use crate::metrics;
use crate::reshard;
use crate::shards::RingKv;

/// Shortest lease we take, whatever the caller asks for.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(10);

/// How long `status()` waits for the ring actor before answering from the routing snapshot.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// A cheap-to-clone handle on the media cache.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    /// None for the `none` backend.
    kv: Option<Kv>,
    /// The ring actor, for reloads and status (never on the request path).
    ring: Option<Addr<RingActor>>,
    /// Swapped on reload; a std lock because it is only held to copy the value out.
    limits: ArcSwap<Limits>,
    /// Evictions a down shard still has to get.
    pending: Arc<PendingEvictions>,
    /// Retries `pending` (redis backend); aborted when the cache goes.
    retry_loop: Option<tokio::task::JoinHandle<()>>,
    /// Fills running and blobs just evicted (`fill.rs`); shared with each fill's guard.
    fills: Arc<Fills>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.retry_loop.take() {
            task.abort();
        }
    }
}

/// What `status()` answers (e.g. for an admin endpoint).
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    /// `none`, `memory` or `redis`.
    pub backend: &'static str,
    /// The Redis shards (empty for other backends).
    pub shards: Vec<ShardStatus>,
    /// Bytes held by the memory backend (keys + values); None for other backends.
    pub memory_used_bytes: Option<u64>,
}

fn limits_of(cfg: &CacheConfig) -> Limits {
    Limits::new(cfg.max_object_bytes, cfg.chunk_bytes, cfg.ttl_secs)
}

impl Cache {
    /// Starts the configured backend. For `redis` this starts the ring actor, so it must be
    /// called inside a running actix System.
    pub fn start(cfg: &CacheConfig) -> Cache {
        let (kv, ring) = match cfg.backend {
            CacheBackend::None => (None, None),
            CacheBackend::Memory => (Some(Kv::Memory(MemoryKv::new(cfg.memory.max_bytes))), None),
            CacheBackend::Redis => {
                let (addr, handle) = RingActor::start(&cfg.redis);
                (Some(Kv::Redis(RingKv::new(handle))), Some(addr))
            }
        };
        tracing::info!(
            backend = kv.as_ref().map_or(CacheBackend::None, Kv::kind).name(),
            "cache started"
        );
        let pending = Arc::new(PendingEvictions::default());
        let retry_loop = match &kv {
            Some(Kv::Redis(redis)) => {
                Some(evictions::start_retry_loop(pending.clone(), redis.clone()))
            }
            _ => None,
        };
        Cache {
            inner: Arc::new(Inner {
                kv,
                ring,
                limits: ArcSwap::from_pointee(limits_of(cfg)),
                pending,
                retry_loop,
                fills: Arc::default(),
            }),
        }
    }

    /// Test hook (feature `fault-injection`): makes the actor of the shard `key` routes to
    /// panic, as a bug in it would. False when there is no such actor (not redis).
    #[cfg(feature = "fault-injection")]
    pub async fn inject_shard_actor_panic(&self, key: &str) -> bool {
        let Some(Kv::Redis(redis)) = &self.inner.kv else {
            return false;
        };
        let Some(shard) = redis.ring().route(key) else {
            return false;
        };
        // The panic drops the reply: the send answers with a mailbox error, as intended.
        let _ = shard.addr.send(mr_shard_actor::Panic).await;
        true
    }

    /// Applies a reloaded config: limits, memory bound, and the shard list (by message to
    /// the ring actor). A different backend needs a restart and is ignored here.
    pub fn apply_config(&self, cfg: &CacheConfig) {
        let limits = limits_of(cfg);
        self.inner.limits.store(Arc::new(limits));
        match &self.inner.kv {
            Some(Kv::Memory(memory))
                if cfg.backend == CacheBackend::Memory
                    && memory.capacity() != cfg.memory.max_bytes =>
            {
                memory.resize(cfg.memory.max_bytes);
            }
            _ => {}
        }
        if let Some(ring) = &self.inner.ring {
            if cfg.backend == CacheBackend::Redis {
                // Reload path, not a request path: a full ring mailbox just delays the change.
                ring.do_send(ApplyRedisConfig(cfg.redis.clone()));
            }
        }
        if self.kind() != cfg.backend {
            tracing::warn!(
                running = self.backend(),
                configured = cfg.backend.name(),
                "changing cache.backend takes a restart; keeping the running backend"
            );
        }
    }

    /// The running backend.
    pub fn kind(&self) -> CacheBackend {
        self.inner.kv.as_ref().map_or(CacheBackend::None, Kv::kind)
    }

    /// Name of the running backend.
    pub fn backend(&self) -> &'static str {
        self.kind().name()
    }

    pub async fn status(&self) -> CacheStatus {
        let mut status = CacheStatus {
            backend: self.backend(),
            shards: Vec::new(),
            memory_used_bytes: None,
        };
        match &self.inner.kv {
            Some(Kv::Memory(memory)) => status.memory_used_bytes = Some(memory.used_bytes()),
            Some(Kv::Redis(redis)) => {
                let asked = match &self.inner.ring {
                    Some(ring) => tokio::time::timeout(STATUS_TIMEOUT, ring.send(Status))
                        .await
                        .ok()
                        .and_then(|r| r.ok()),
                    None => None,
                };
                status.shards = match asked {
                    Some(shards) => shards,
                    // The ring actor is busy or gone: the routing snapshot still knows who is up.
                    None => redis
                        .ring()
                        .shards()
                        .into_iter()
                        .map(|s| (s, false))
                        .chain(redis.ring().draining().into_iter().map(|s| (s, true)))
                        .map(|(s, draining)| ShardStatus {
                            name: s.name.to_string(),
                            addr: String::new(),
                            up: s.health.is_up(),
                            last_error: s.health.last_error(),
                            write_error: s.health.write_error(),
                            format_mismatch: s.health.format_mismatch(),
                            draining,
                        })
                        .collect(),
                };
            }
            None => {}
        }
        status
    }

    pub(crate) fn limits(&self) -> Limits {
        **self.inner.limits.load()
    }

    pub(crate) fn fills(&self) -> &Arc<Fills> {
        &self.inner.fills
    }

    /// Opens a cached blob for reading `range` (inclusive start..=end; None = whole blob).
    /// None is a miss: not cached, header damaged, or a range the blob cannot satisfy.
    pub async fn open_blob(&self, sha256: &str, range: Option<(u64, u64)>) -> Option<BlobReader> {
        let kv = self.inner.kv.as_ref()?;
        let reader = if is_valid_sha256(sha256) {
            blob::open_blob(kv, self.limits(), sha256, range).await
        } else {
            None
        };
        metrics::blob_open(kv.kind(), reader.is_some());
        reader
    }

    /// Caches the `size` bytes `reader` yields under `sha256`. `Ok(false)`: not cached (no
    /// cache, too big, or the backend did not take it). An error is only ever about the
    /// reader (failed, or a different size than announced); nothing is published then.
    pub async fn put_blob<R: AsyncRead + Unpin + Send>(
        &self,
        sha256: &str,
        size: u64,
        reader: R,
    ) -> Result<bool> {
        let Some(kv) = self.inner.kv.as_ref() else {
            return Ok(false);
        };
        let limits = self.limits();
        let stored = if is_valid_sha256(sha256) && limits.admits(size) {
            blob::put_blob(kv, limits, sha256, size, reader).await?
        } else {
            false
        };
        metrics::request(
            kv.backend(),
            "blob_put",
            if stored { "stored" } else { "skipped" },
        );
        Ok(stored)
    }

    /// Removes a blob from the cache, on every shard (e.g. when media is quarantined); see
    /// [`Cache::evict_everywhere`].
    pub async fn delete_blob(&self, sha256: &str) -> Eviction {
        let Some(kv) = self.inner.kv.as_ref() else {
            return Eviction::default();
        };
        if !is_valid_sha256(sha256) {
            return Eviction::default();
        }
        let keys = blob::blob_keys(kv, self.limits(), sha256).await;
        self.evict_everywhere(keys).await
    }

    /// Deletes `keys` from every shard of the ring (a copy may sit on any shard after a
    /// reshard, not only on the key's owner) or from the memory cache. A shard that cannot
    /// be asked now gets the keys again once it is up (`evictions.rs`).
    pub async fn evict_everywhere(&self, keys: Vec<String>) -> Eviction {
        let Some(kv) = self.inner.kv.as_ref() else {
            return Eviction::default();
        };
        let (failed, shards_done) = kv.del_everywhere(keys.clone()).await;
        let shards_pending = failed.len();
        for shard in failed {
            tracing::info!(shard = %shard, keys = keys.len(), "shard down during an eviction; deleting again when it is up");
            self.inner.pending.remember(shard, &keys);
        }
        metrics::request(
            kv.backend(),
            "evict",
            if shards_pending == 0 {
                "stored"
            } else {
                "skipped"
            },
        );
        Eviction {
            shards_done,
            shards_pending,
        }
    }

    /// Keys of evictions still waiting for a shard to come back.
    pub fn pending_evictions(&self) -> usize {
        self.inner.pending.len()
    }

    /// A small record (e.g. under [`crate::remote_record_key`]); None is a miss. After a
    /// reshard a record missing on its shard is read from its previous owner and copied.
    pub async fn get_record(&self, key: &str) -> Option<Bytes> {
        let kv = self.inner.kv.as_ref()?;
        let value = match kv.get(key).await {
            Some(value) => Some(value),
            None => reshard::read_previous(kv, key, "record_get")
                .await
                .map(|found| {
                    found.count("record_get", "hit");
                    reshard::spawn_copy_record(kv, key, found.value.clone(), self.limits().ttl);
                    found.value
                }),
        };
        metrics::request(
            kv.backend(),
            "record_get",
            if value.is_some() { "hit" } else { "miss" },
        );
        value
    }

    /// Stores a small record (best effort; records over `MAX_RECORD_BYTES` are skipped).
    pub async fn put_record(&self, key: &str, value: Bytes) {
        let Some(kv) = self.inner.kv.as_ref() else {
            return;
        };
        let stored = value.len() <= MAX_RECORD_BYTES
            && kv.set(key.to_owned(), value, self.limits().ttl).await;
        metrics::request(
            kv.backend(),
            "record_put",
            if stored { "stored" } else { "skipped" },
        );
    }

    /// Tries to take the lease `key` (e.g. [`crate::lease_key`]) for `ttl`.
    /// None: another holder has it. When the cache cannot be asked (no cache, shard down) a
    /// non-exclusive lease is returned so the caller proceeds rather than waits forever.
    pub async fn try_lease(&self, key: &str, ttl: Duration) -> Option<Lease> {
        let Some(kv) = self.inner.kv.as_ref() else {
            return Some(Lease::new(key, false));
        };
        let lease = Lease::new(key, true);
        // Redis rejects a zero PX; a zero lease would be meaningless anyway.
        let ttl = ttl.max(MIN_LEASE_TTL);
        let outcome = kv.set_nx(lease.key.clone(), lease.token.clone(), ttl).await;
        let outcome = match outcome {
            SetNx::Stored => self.lease_previous_owner(kv, &lease, ttl).await,
            other => other,
        };
        let (result, lease) = match outcome {
            SetNx::Stored => ("stored", Some(lease)),
            SetNx::Held => ("hit", None),
            SetNx::Unavailable => (
                "miss",
                Some(Lease {
                    exclusive: false,
                    ..lease
                }),
            ),
        };
        metrics::request(kv.backend(), "lease", result);
        lease
    }

    /// After a reshard, a lease stored on its current shard is also taken on the key's
    /// previous owner (see `reshard.rs`): `Held` there means someone else holds it, so ours
    /// is given back; `Unavailable` means nobody can tell, so it is not exclusive.
    async fn lease_previous_owner(&self, kv: &Kv, lease: &Lease, ttl: Duration) -> SetNx {
        match reshard::lease_previous(kv, &lease.key, &lease.token, ttl).await {
            None | Some(SetNx::Stored) => SetNx::Stored,
            Some(SetNx::Held) => {
                kv.del_if_eq(lease.key.clone(), lease.token.clone()).await;
                SetNx::Held
            }
            Some(SetNx::Unavailable) => SetNx::Unavailable,
        }
    }

    /// Extends a lease we hold to `ttl` from now; false if it is no longer ours (it expired
    /// and someone else may hold it) or the cache could not be asked. After a reshard it is
    /// renewed on the key's previous owner too (see `reshard.rs`). A read and a write,
    /// not one atomic step: in the moment between them an expired lease taken by another
    /// holder could be overwritten, which costs at most one duplicate fetch.
    pub async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> bool {
        let Some(kv) = self.inner.kv.as_ref() else {
            return false;
        };
        if !lease.exclusive {
            return false;
        }
        let ttl = ttl.max(MIN_LEASE_TTL);
        let renewed = if kv.get(&lease.key).await.as_ref() == Some(&lease.token) {
            let renewed = kv
                .set(lease.key.clone(), lease.token.clone(), Some(ttl))
                .await;
            if renewed {
                reshard::renew_previous(kv, &lease.key, &lease.token, ttl).await;
            }
            renewed
        } else {
            // Taken before a reshard moved its key: it lives on the previous owner. Renewed
            // there, and put on the new owner too so repos on the new list see it.
            reshard::renew_previous(kv, &lease.key, &lease.token, ttl).await
                && kv.set_nx(lease.key.clone(), lease.token.clone(), ttl).await != SetNx::Held
        };
        metrics::request(
            kv.backend(),
            "lease_renew",
            if renewed { "stored" } else { "skipped" },
        );
        renewed
    }

    /// Gives a lease back; only deletes the key if it still holds our token.
    pub async fn release(&self, lease: Lease) {
        let Some(kv) = self.inner.kv.as_ref() else {
            return;
        };
        let deleted = kv.del_if_eq(lease.key, lease.token).await;
        metrics::request(
            kv.backend(),
            "release",
            if deleted { "stored" } else { "skipped" },
        );
    }

    /// Memory backend only: applies moka's pending evictions and accounting now, then
    /// returns the bytes held. For tests and status pages; None for other backends.
    pub async fn memory_used_bytes_exact(&self) -> Option<u64> {
        match &self.inner.kv {
            Some(Kv::Memory(memory)) => {
                memory.run_pending_tasks().await;
                Some(memory.used_bytes())
            }
            _ => None,
        }
    }

    /// Test support: deletes or overwrites one key of the memory backend directly, to
    /// simulate eviction or corruption. No effect on other backends.
    #[doc(hidden)]
    pub async fn memory_debug_put_raw(&self, key: &str, value: Option<Bytes>) {
        if let Some(Kv::Memory(memory)) = &self.inner.kv {
            match value {
                Some(value) => {
                    memory.set(key.to_owned(), value, None).await;
                }
                None => memory.del(vec![key.to_owned()]).await,
            }
        }
    }
}

/// Web handlers hold these across awaits and may spawn them: keep them `Send`.
#[cfg(test)]
#[allow(dead_code)]
fn futures_are_send(cache: Cache, reader: &mut BlobReader, lease: Lease) {
    fn is_send<T: Send + Sync>(_: &T) {}
    fn is_send_future<T: Send>(_: T) {}
    is_send(&cache);
    is_send(reader);
    is_send_future(cache.open_blob("", None));
    is_send_future(cache.put_blob("", 0, &b""[..]));
    is_send_future(cache.delete_blob(""));
    is_send_future(cache.evict_everywhere(Vec::new()));
    is_send_future(cache.get_record(""));
    is_send_future(cache.put_record("", Bytes::new()));
    is_send_future(cache.try_lease("", Duration::ZERO));
    is_send_future(cache.release(lease));
    is_send_future(cache.status());
    is_send_future(reader.next());
}
