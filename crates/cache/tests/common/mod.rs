//! Test support: real redis-server processes, cache fixtures for each backend, and helpers
//! to read blobs and damage cached keys the way eviction or a bad write would.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mr_cache::{BlobRead, BlobReader, Cache};
use mr_config::{CacheBackend, CacheConfig, ShardConfig};

/// Chunk size used by the contract tests: small, so blobs of a few KiB span chunks.
pub const CHUNK: u64 = 4096;
/// max_object_bytes used by the contract tests.
pub const MAX_OBJECT: u64 = 64 * 1024;

pub use integration::RedisServer;

/// `SET key <value>` on `server` with a binary value passed on stdin (`redis-cli -x`): the
/// harness' `cli` takes arguments only, which cannot carry arbitrary bytes.
pub fn cli_set_binary(server: &RedisServer, key: &str, value: &[u8]) {
    use std::io::Write;
    let mut child = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port().to_string(),
            "-x",
            "SET",
            key,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli must be installed");
    child.stdin.take().unwrap().write_all(value).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
}

pub fn base_config() -> CacheConfig {
    let mut cfg = CacheConfig {
        chunk_bytes: CHUNK,
        max_object_bytes: MAX_OBJECT,
        ..CacheConfig::default()
    };
    cfg.memory.max_bytes = 16 * 1024 * 1024;
    cfg
}

/// A cache under test, with a way to reach behind it to its storage.
pub struct Fixture {
    pub cache: Cache,
    pub shards: Vec<(String, RedisServer)>,
    /// The config the cache was started with (shards included), for `apply_config` tests.
    pub cfg: CacheConfig,
}

impl Fixture {
    pub async fn memory() -> Fixture {
        Self::memory_with(base_config()).await
    }

    pub async fn memory_with(mut cfg: CacheConfig) -> Fixture {
        cfg.backend = CacheBackend::Memory;
        Fixture {
            cache: Cache::start(&cfg),
            shards: Vec::new(),
            cfg,
        }
    }

    /// Three real redis-server shards behind the real ring actor; waits until all are up.
    pub async fn redis() -> Fixture {
        Self::redis_with(3).await
    }

    pub async fn redis_with(n: usize) -> Fixture {
        Self::redis_with_config(n, base_config()).await
    }

    pub async fn redis_with_config(n: usize, mut cfg: CacheConfig) -> Fixture {
        let shards: Vec<(String, RedisServer)> = (0..n)
            .map(|i| (format!("shard{i}"), RedisServer::start().unwrap()))
            .collect();
        cfg.backend = CacheBackend::Redis;
        cfg.redis.shards = shards
            .iter()
            .map(|(name, server)| ShardConfig {
                name: name.clone(),
                addr: server.url(),
            })
            .collect();
        let cache = Cache::start(&cfg);
        let fixture = Fixture { cache, shards, cfg };
        fixture.wait_up(n).await;
        fixture
    }

    /// Waits until `n` shards report up.
    pub async fn wait_up(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.cache.status().await;
            if status.shards.iter().filter(|s| s.up).count() == n {
                return;
            }
            assert!(Instant::now() < deadline, "shards not up: {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The shard the ring routes `key` to (all shards up).
    pub fn shard_for(&self, key: &str) -> &RedisServer {
        let name =
            mr_ring::hashing::pick(self.shards.iter().map(|(n, _)| n.as_str()), key).unwrap();
        &self.shards.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Makes `key` vanish, as eviction would.
    pub async fn remove_key(&self, key: &str) {
        if self.shards.is_empty() {
            self.cache.memory_debug_put_raw(key, None).await;
        } else {
            assert_eq!(
                self.shard_for(key).cli(&["DEL", key]).unwrap(),
                "1",
                "{key} was not on the shard the ring picks"
            );
        }
    }

    /// Replaces the value of `key` behind the cache's back.
    pub async fn overwrite_key(&self, key: &str, value: &[u8]) {
        if self.shards.is_empty() {
            self.cache
                .memory_debug_put_raw(key, Some(Bytes::copy_from_slice(value)))
                .await;
        } else {
            let shard = self.shard_for(key);
            assert_eq!(
                shard.cli(&["EXISTS", key]).unwrap(),
                "1",
                "{key} was not on the shard the ring picks"
            );
            cli_set_binary(shard, key, value);
        }
    }
}

/// A config whose chunk is larger than `INLINE_MAX_BYTES`, so the inline limit itself (not
/// the chunk size) decides the layout.
pub fn wide_config() -> CacheConfig {
    CacheConfig {
        chunk_bytes: 4 * mr_cache::INLINE_MAX_BYTES,
        max_object_bytes: 8 * mr_cache::INLINE_MAX_BYTES,
        ..base_config()
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A well-formed sha256-looking name for test blob `n` (the cache never hashes content).
pub fn sha(n: u64) -> String {
    format!(
        "{:064x}",
        0xabc0_0000_0000_0000u64 ^ n ^ (std::process::id() as u64) << 32
    )
}

/// How a read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    End,
    Lost(u64),
}

/// Reads everything a reader yields; also checks that `Lost` is sticky.
pub async fn read_all(mut reader: BlobReader) -> (Vec<u8>, Ending) {
    let mut out = Vec::new();
    loop {
        match reader.next().await {
            BlobRead::Data(b) => {
                assert!(!b.is_empty(), "empty Data chunk");
                out.extend_from_slice(&b);
            }
            BlobRead::End => return (out, Ending::End),
            BlobRead::Lost { at } => {
                assert_eq!(
                    reader.next().await,
                    BlobRead::Lost { at },
                    "Lost must repeat"
                );
                return (out, Ending::Lost(at));
            }
        }
    }
}

pub async fn put(cache: &Cache, sha: &str, data: &[u8]) -> bool {
    cache.put_blob(sha, data.len() as u64, data).await.unwrap()
}

/// A Redis-backed cache on the given `(name, url)` shards, started without waiting for any
/// of them to come up (for shards that never do).
pub fn redis_cache_on(shards: &[(&str, String)]) -> Cache {
    Cache::start(&redis_config_on(shards))
}

/// The test config with the Redis backend on the given `(name, url)` shards.
pub fn redis_config_on(shards: &[(&str, String)]) -> CacheConfig {
    let mut cfg = base_config();
    cfg.backend = CacheBackend::Redis;
    cfg.redis.shards = shards
        .iter()
        .map(|(name, url)| ShardConfig {
            name: (*name).to_owned(),
            addr: url.clone(),
        })
        .collect();
    cfg
}

/// The sum of the samples of metric `family` whose labels include all of `labels`.
pub fn metric_value(family: &str, labels: &[(&str, &str)]) -> f64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
        .sum()
}

/// Every `SET` the server has been sent (`SET ... NX` included): from `INFO commandstats`,
/// `calls` plus `rejected_calls` (Redis 7 counts a SET refused with OOM there, not in
/// `calls`) plus `failed_calls`.
pub fn set_commands_seen(server: &RedisServer) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]).unwrap();
    let Some(line) = stats
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("cmdstat_set:"))
    else {
        return 0;
    };
    line.split(',')
        .filter_map(|field| field.split_once('='))
        .filter(|(name, _)| matches!(*name, "calls" | "rejected_calls" | "failed_calls"))
        .map(|(_, n)| n.parse::<u64>().unwrap())
        .sum()
}
