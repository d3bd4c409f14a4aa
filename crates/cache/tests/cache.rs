//! The cache contract, run against the memory backend and against three real redis-server
//! shards behind the real ring actor; then what only one backend can show (byte bound,
//! shard crashes).

mod common;
/// `Cache::fill_in_background`: in its own file, in this test binary (one link, not two).
#[path = "cache/fill.rs"]
mod fill;

use std::time::Duration;

use common::*;
use mr_cache::{
    blob_chunk_key, blob_header_key, lease_key, remote_record_key, Cache, CacheError,
    INLINE_MAX_BYTES,
};

/// The contract every backend must keep.
mod contract {
    use super::*;

    pub async fn put_open_whole(f: &Fixture) {
        for (n, len) in [0usize, 1, 4095, 4096, 4097, 10_000, MAX_OBJECT as usize]
            .into_iter()
            .enumerate()
        {
            let data = bytes_of(len, n as u64);
            let sha = sha(n as u64);
            assert!(
                put(&f.cache, &sha, &data).await,
                "blob of {len} bytes not stored"
            );
            // Up to one chunk the blob is inline: its header key is its only key.
            assert_eq!(
                f.key_exists(&blob_chunk_key(&sha, 0)).await,
                len as u64 > CHUNK,
                "layout of a blob of {len} bytes"
            );
            let reader = f
                .cache
                .open_blob(&sha, None)
                .await
                .expect("cached blob opens");
            assert_eq!(reader.total_size, len as u64);
            let (got, ending) = read_all(reader).await;
            assert_eq!(ending, Ending::End);
            assert!(got == data, "blob of {len} bytes read back different");
        }
        assert!(
            f.cache.open_blob(&sha(999), None).await.is_none(),
            "never stored: miss"
        );
    }

    pub async fn ranges(f: &Fixture) {
        let data = bytes_of(10_000, 7);
        let sha = sha(7);
        assert!(put(&f.cache, &sha, &data).await);
        let cases = [
            (0, 0),         // first byte
            (9_999, 9_999), // last byte
            (4_090, 4_100), // across the first chunk boundary
            (5_000, 6_000), // inside the second chunk
            (4_096, 8_191), // exactly the second chunk
            (0, 9_999),     // everything, as a range
            (100, 9_000),   // three chunks, partial at both ends
        ];
        for (start, end) in cases {
            let reader = f
                .cache
                .open_blob(&sha, Some((start, end)))
                .await
                .expect("range opens");
            assert_eq!(reader.total_size, 10_000);
            let (got, ending) = read_all(reader).await;
            assert_eq!(ending, Ending::End, "range {start}-{end}");
            assert!(
                got == data[start as usize..=end as usize],
                "range {start}-{end} wrong bytes"
            );
        }
        for bad in [(0, 10_000), (10_000, 10_000), (6, 5)] {
            assert!(
                f.cache.open_blob(&sha, Some(bad)).await.is_none(),
                "range {bad:?} must be a miss"
            );
        }
        // A range reads only the chunks it covers: with chunk 0 gone, chunk 2 still serves.
        f.remove_key(&blob_chunk_key(&sha, 0)).await;
        let (got, ending) =
            read_all(f.cache.open_blob(&sha, Some((8_192, 9_999))).await.unwrap()).await;
        assert_eq!(ending, Ending::End);
        assert!(got == data[8_192..]);
    }

    /// Ranges of a blob that lives inline (one key): sliced out of the one value.
    pub async fn inline_ranges(f: &Fixture) {
        let data = bytes_of(3_000, 20);
        let sha = sha(20);
        assert!(put(&f.cache, &sha, &data).await);
        assert!(!f.key_exists(&blob_chunk_key(&sha, 0)).await, "not inline");
        for (start, end) in [(0, 0), (2_999, 2_999), (100, 2_000), (0, 2_999), (1, 2_998)] {
            let reader = f
                .cache
                .open_blob(&sha, Some((start, end)))
                .await
                .expect("range opens");
            assert_eq!(reader.total_size, 3_000);
            assert_eq!(reader.range(), (start, end + 1));
            let (got, ending) = read_all(reader).await;
            assert_eq!(ending, Ending::End, "range {start}-{end}");
            assert!(
                got == data[start as usize..=end as usize],
                "range {start}-{end} wrong bytes"
            );
        }
        for bad in [(0, 3_000), (3_000, 3_000), (6, 5)] {
            assert!(
                f.cache.open_blob(&sha, Some(bad)).await.is_none(),
                "range {bad:?} must be a miss"
            );
        }
    }

    /// An inline value damaged in any way is a miss, never wrong or short bytes; the same
    /// value put back is a hit again (so the damage, not the test, caused the misses).
    pub async fn corrupted_inline_is_a_miss(f: &Fixture) {
        let data = bytes_of(3_000, 21);
        let sha = sha(21);
        let key = blob_header_key(&sha);
        assert!(put(&f.cache, &sha, &data).await);
        // A record read returns any key's raw value: the stored inline form.
        let raw = f
            .cache
            .get_record(&key)
            .await
            .expect("inline value present");
        assert!(
            raw.len() > data.len() && raw.ends_with(&data),
            "bytes not inline"
        );
        let mut flipped_data = raw.to_vec();
        *flipped_data.last_mut().unwrap() ^= 1;
        let mut flipped_size = raw.to_vec();
        flipped_size[5] ^= 1;
        let damaged: [(&str, Vec<u8>); 5] = [
            ("same-length garbage", bytes_of(raw.len(), 99)),
            ("one data byte flipped", flipped_data),
            ("size field flipped", flipped_size),
            ("truncated by one byte", raw[..raw.len() - 1].to_vec()),
            (
                "truncated to half the bytes",
                raw[..raw.len() - 1_500].to_vec(),
            ),
        ];
        for (what, value) in damaged {
            f.overwrite_key(&key, &value).await;
            assert!(
                f.cache.open_blob(&sha, None).await.is_none(),
                "{what}: must be a miss"
            );
            assert!(
                f.cache.open_blob(&sha, Some((0, 10))).await.is_none(),
                "{what}: a range must be a miss too"
            );
        }
        f.overwrite_key(&key, &raw).await;
        let (got, ending) = read_all(f.cache.open_blob(&sha, None).await.unwrap()).await;
        assert_eq!(ending, Ending::End);
        assert!(got == data);
    }

    /// At the contract's chunk size the inline limit is the chunk: CHUNK bytes are one key,
    /// CHUNK + 1 bytes are a header and two chunks.
    pub async fn inline_limit_is_one_chunk(f: &Fixture) {
        for (n, len, inline) in [(30, CHUNK, true), (31, CHUNK + 1, false)] {
            let data = bytes_of(len as usize, n);
            let sha = sha(n);
            assert!(put(&f.cache, &sha, &data).await);
            assert_eq!(f.key_exists(&blob_chunk_key(&sha, 0)).await, !inline);
            assert_eq!(f.key_exists(&blob_chunk_key(&sha, 1)).await, !inline);
            let (got, ending) = read_all(f.cache.open_blob(&sha, None).await.unwrap()).await;
            assert_eq!(ending, Ending::End);
            assert!(got == data, "{len} bytes read back different");
            let (got, ending) = read_all(
                f.cache
                    .open_blob(&sha, Some((CHUNK - 2, len - 1)))
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(ending, Ending::End);
            assert!(got == data[CHUNK as usize - 2..]);
        }
    }

    /// Re-putting a blob under another chunk size switches its layout either way, and each
    /// layout reads back (a chunked header left by an earlier write stays readable).
    pub async fn layout_switches_with_chunk_size(f: &Fixture) {
        let data = bytes_of(6_000, 22);
        let sha = sha(22);
        let mut cfg = f.cfg.clone();
        for (chunk, inline) in [(CHUNK, false), (2 * CHUNK, true), (CHUNK, false)] {
            cfg.chunk_bytes = chunk;
            f.cache.apply_config(&cfg);
            assert!(put(&f.cache, &sha, &data).await);
            let raw = f.cache.get_record(&blob_header_key(&sha)).await.unwrap();
            assert_eq!(raw.len() > data.len(), inline, "chunk {chunk}");
            let (got, ending) = read_all(f.cache.open_blob(&sha, None).await.unwrap()).await;
            assert_eq!(ending, Ending::End);
            assert!(got == data, "chunk {chunk}: read back different");
        }
    }

    pub async fn too_big_not_cached(f: &Fixture) {
        let data = bytes_of(MAX_OBJECT as usize + 1, 3);
        let sha = sha(3);
        assert!(
            !put(&f.cache, &sha, &data).await,
            "blob over max_object_bytes must not be cached"
        );
        assert!(f.cache.open_blob(&sha, None).await.is_none());
    }

    pub async fn bad_reader_publishes_nothing(f: &Fixture) {
        let data = bytes_of(10_000, 4);
        let sha = sha(4);
        let short = f.cache.put_blob(&sha, 10_001, &data[..]).await;
        assert!(
            matches!(
                short,
                Err(CacheError::SizeMismatch {
                    actual: 10_000,
                    more: false,
                    ..
                })
            ),
            "{short:?}"
        );
        let long = f.cache.put_blob(&sha, 9_999, &data[..]).await;
        assert!(
            matches!(long, Err(CacheError::SizeMismatch { more: true, .. })),
            "{long:?}"
        );
        assert!(
            f.cache.open_blob(&sha, None).await.is_none(),
            "no header after a failed put"
        );
        // Names that are not a sha256 are never used as keys.
        assert!(!f.cache.put_blob("}evil{", 1, &b"x"[..]).await.unwrap());
    }

    pub async fn delete(f: &Fixture) {
        let data = bytes_of(10_000, 5);
        let sha = sha(5);
        assert!(put(&f.cache, &sha, &data).await);
        f.cache.delete_blob(&sha).await;
        assert!(f.cache.open_blob(&sha, None).await.is_none());
        // A blob whose header was already evicted still loses its chunks.
        assert!(put(&f.cache, &sha, &data).await);
        f.remove_key(&blob_header_key(&sha)).await;
        f.cache.delete_blob(&sha).await;
        for i in 0..3 {
            f.overwrite_key_absent(&blob_chunk_key(&sha, i)).await;
        }
        // An inline blob: its one key goes.
        let small = common::sha(6);
        assert!(put(&f.cache, &small, &data[..100]).await);
        f.cache.delete_blob(&small).await;
        assert!(f.cache.open_blob(&small, None).await.is_none());
        f.overwrite_key_absent(&blob_header_key(&small)).await;
    }

    pub async fn records(f: &Fixture) {
        let key = remote_record_key("example.org", "abc");
        assert_eq!(f.cache.get_record(&key).await, None);
        f.cache
            .put_record(&key, bytes::Bytes::from_static(b"{\"sha256\":\"x\"}"))
            .await;
        assert_eq!(
            f.cache.get_record(&key).await.as_deref(),
            Some(&b"{\"sha256\":\"x\"}"[..])
        );
        f.cache
            .put_record(&key, bytes::Bytes::from_static(b"v2"))
            .await;
        assert_eq!(f.cache.get_record(&key).await.as_deref(), Some(&b"v2"[..]));
    }

    pub async fn leases(f: &Fixture) {
        let key = lease_key("example.org", "lease1");
        let first = f
            .cache
            .try_lease(&key, Duration::from_secs(30))
            .await
            .expect("free lease");
        assert!(first.is_exclusive());
        assert_eq!(first.key(), key);
        assert!(
            f.cache
                .try_lease(&key, Duration::from_secs(30))
                .await
                .is_none(),
            "second taker must fail"
        );
        f.cache.release(first).await;
        let again = f
            .cache
            .try_lease(&key, Duration::from_secs(30))
            .await
            .expect("released lease is free");
        assert!(again.is_exclusive());

        // A lease expires on its own, and a stale holder cannot release its successor's lease.
        let key = lease_key("example.org", "lease2");
        let stale = f
            .cache
            .try_lease(&key, Duration::from_millis(300))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let fresh = f
            .cache
            .try_lease(&key, Duration::from_secs(30))
            .await
            .expect("expired lease is free");
        f.cache.release(stale).await;
        assert!(
            f.cache
                .try_lease(&key, Duration::from_secs(30))
                .await
                .is_none(),
            "stale release removed the new lease"
        );
        f.cache.release(fresh).await;
        assert!(f
            .cache
            .try_lease(&key, Duration::from_secs(30))
            .await
            .is_some());
    }

    pub async fn evicted_chunk_is_lost_at_its_offset(f: &Fixture) {
        let data = bytes_of(10_000, 8);
        let sha = sha(8);
        assert!(put(&f.cache, &sha, &data).await);
        f.remove_key(&blob_chunk_key(&sha, 1)).await;

        let (got, ending) = read_all(f.cache.open_blob(&sha, None).await.unwrap()).await;
        assert_eq!(ending, Ending::Lost(4_096));
        assert!(
            got == data[..4_096],
            "bytes before the loss must be exactly the blob's"
        );

        let (got, ending) =
            read_all(f.cache.open_blob(&sha, Some((100, 9_000))).await.unwrap()).await;
        assert_eq!(ending, Ending::Lost(4_096));
        assert!(got == data[100..4_096]);

        let (got, ending) =
            read_all(f.cache.open_blob(&sha, Some((5_000, 9_000))).await.unwrap()).await;
        assert_eq!((got.len(), ending), (0, Ending::Lost(5_000)));

        // Header gone: a miss, not a read.
        f.remove_key(&blob_header_key(&sha)).await;
        assert!(f.cache.open_blob(&sha, None).await.is_none());
    }

    pub async fn corrupted_chunk_is_lost(f: &Fixture) {
        let data = bytes_of(10_000, 9);
        let sha = sha(9);
        assert!(put(&f.cache, &sha, &data).await);
        // Same length, other bytes: only the checksum can tell.
        let last = blob_chunk_key(&sha, 2);
        f.overwrite_key(&last, &bytes_of(10_000 - 8_192, 99)).await;
        let (got, ending) = read_all(f.cache.open_blob(&sha, None).await.unwrap()).await;
        assert_eq!(ending, Ending::Lost(8_192));
        assert!(got == data[..8_192]);
        // Truncated chunk.
        f.overwrite_key(&blob_chunk_key(&sha, 0), &data[..4_000])
            .await;
        let (got, ending) = read_all(f.cache.open_blob(&sha, Some((10, 20))).await.unwrap()).await;
        assert_eq!((got.len(), ending), (0, Ending::Lost(10)));
        // A damaged header is a miss.
        f.overwrite_key(&blob_header_key(&sha), b"MRBH garbage")
            .await;
        assert!(f.cache.open_blob(&sha, None).await.is_none());
    }
}

impl Fixture {
    /// Whether `key` is stored (on the shard the ring picks, for Redis).
    async fn key_exists(&self, key: &str) -> bool {
        if self.shards.is_empty() {
            self.cache.get_record(key).await.is_some()
        } else {
            self.shard_for(key).cli(&["EXISTS", key]).unwrap() == "1"
        }
    }

    /// Asserts `key` is gone from wherever it could be.
    async fn overwrite_key_absent(&self, key: &str) {
        if self.shards.is_empty() {
            // Through the cache: a record read of the raw key.
            assert_eq!(
                self.cache.get_record(key).await,
                None,
                "{key} survived delete"
            );
        } else {
            for (name, shard) in &self.shards {
                assert_eq!(
                    shard.cli(&["EXISTS", key]).unwrap(),
                    "0",
                    "{key} survived delete on {name}"
                );
            }
        }
    }
}

macro_rules! contract_tests {
    ($backend:ident, $fixture:expr) => {
        mod $backend {
            use super::*;
            contract_tests!(@each $fixture; put_open_whole, ranges, too_big_not_cached,
                bad_reader_publishes_nothing, delete, records, leases,
                evicted_chunk_is_lost_at_its_offset, corrupted_chunk_is_lost, inline_ranges,
                corrupted_inline_is_a_miss, inline_limit_is_one_chunk,
                layout_switches_with_chunk_size);
        }
    };
    (@each $fixture:expr; $($case:ident),*) => {
        $(
            #[actix_rt::test]
            async fn $case() {
                let f = $fixture.await;
                contract::$case(&f).await;
            }
        )*
    };
}

contract_tests!(memory, Fixture::memory());
contract_tests!(redis, Fixture::redis());

/// With a chunk larger than `INLINE_MAX_BYTES`, the constant itself is the boundary.
mod inline_max {
    use super::*;

    async fn boundary(f: &Fixture) {
        let max = INLINE_MAX_BYTES;
        for (n, len, inline) in [(40, max, true), (41, max + 1, false)] {
            let data = bytes_of(len as usize, n);
            let sha = sha(n);
            assert!(put(&f.cache, &sha, &data).await, "{len} bytes not stored");
            assert_eq!(
                f.key_exists(&blob_chunk_key(&sha, 0)).await,
                !inline,
                "{len}"
            );
            let (got, ending) = read_all(f.cache.open_blob(&sha, None).await.unwrap()).await;
            assert_eq!(ending, Ending::End);
            assert!(got == data, "{len} bytes read back different");
            for (start, end) in [(0, 0), (len - 1, len - 1), (1_000, len - 1_000)] {
                let reader = f.cache.open_blob(&sha, Some((start, end))).await.unwrap();
                let (got, ending) = read_all(reader).await;
                assert_eq!(ending, Ending::End);
                assert!(
                    got == data[start as usize..=end as usize],
                    "{len}: {start}-{end}"
                );
            }
            // Same-length garbage in the header key: a miss, whichever the layout.
            let key = blob_header_key(&sha);
            let raw = f.cache.get_record(&key).await.unwrap();
            f.overwrite_key(&key, &bytes_of(raw.len(), 98)).await;
            assert!(f.cache.open_blob(&sha, None).await.is_none(), "{len}");
            f.overwrite_key(&key, &raw[..raw.len() - 1]).await;
            assert!(f.cache.open_blob(&sha, None).await.is_none(), "{len}");
            f.cache.delete_blob(&sha).await;
            f.overwrite_key_absent(&key).await;
            f.overwrite_key_absent(&blob_chunk_key(&sha, 0)).await;
        }
    }

    #[actix_rt::test]
    async fn memory() {
        boundary(&Fixture::memory_with(wide_config()).await).await;
    }

    #[actix_rt::test]
    async fn redis() {
        boundary(&Fixture::redis_with_config(3, wide_config()).await).await;
    }
}

#[actix_rt::test]
async fn memory_byte_bound_holds() {
    let mut cfg = base_config();
    cfg.memory.max_bytes = 1024 * 1024;
    let cache = Cache::start(&cfg);
    let data = bytes_of(60_000, 1);
    for n in 0..300 {
        // 18 MB offered to a 1 MiB cache, reading some back so frequencies differ.
        put(&cache, &sha(10_000 + n), &data).await;
        if n % 3 == 0 {
            if let Some(r) = cache.open_blob(&sha(10_000 + n / 2), None).await {
                let (got, ending) = read_all(r).await;
                if ending == Ending::End {
                    assert!(got == data);
                }
            }
        }
    }
    let used = cache.memory_used_bytes_exact().await.unwrap();
    assert!(
        used <= 1024 * 1024,
        "memory cache holds {used} bytes, bound is 1 MiB"
    );
    assert!(used > 0, "memory cache holds nothing");
    assert_eq!(cache.status().await.memory_used_bytes, Some(used));
    // A full cache still keeps leases exclusive.
    let lease = cache
        .try_lease("mr1:lock:{full/1}", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(lease.is_exclusive());
    assert!(cache
        .try_lease("mr1:lock:{full/1}", Duration::from_secs(30))
        .await
        .is_none());
}

#[actix_rt::test]
async fn none_backend_is_always_a_miss() {
    let mut cfg = base_config();
    cfg.backend = mr_config::CacheBackend::None;
    let cache = Cache::start(&cfg);
    assert!(!put(&cache, &sha(1), b"abc").await);
    assert!(cache.open_blob(&sha(1), None).await.is_none());
    cache.put_record("k", bytes::Bytes::from_static(b"v")).await;
    assert_eq!(cache.get_record("k").await, None);
    let lease = cache.try_lease("l", Duration::from_secs(1)).await.unwrap();
    assert!(!lease.is_exclusive());
    assert_eq!(cache.status().await.backend, "none");
}

#[actix_rt::test]
async fn apply_config_changes_limits() {
    let cache = Cache::start(&base_config());
    let data = bytes_of(10_000, 11);
    let mut cfg = base_config();
    cfg.max_object_bytes = 5_000;
    cache.apply_config(&cfg);
    assert!(
        !put(&cache, &sha(11), &data).await,
        "new max_object_bytes applies"
    );
    cfg.max_object_bytes = MAX_OBJECT;
    cfg.memory.max_bytes = 2 * 1024 * 1024;
    cache.apply_config(&cfg);
    assert!(put(&cache, &sha(11), &data).await);
    let (got, ending) = read_all(cache.open_blob(&sha(11), None).await.unwrap()).await;
    assert_eq!(ending, Ending::End);
    assert!(got == data);
}

/// Only the Redis backend has shards to lose.
mod redis_faults {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Instant;

    use super::*;

    /// Longest any single cache call may take while shards die: a bounded wait per shard
    /// command (the shard actor's response timeout) times the few sequential commands of a read.
    const CALL_BOUND: Duration = Duration::from_secs(3);

    #[derive(Default)]
    struct Tally {
        calls: Cell<u64>,
        misses: Cell<u64>,
        slowest: Cell<Duration>,
    }

    impl Tally {
        fn record(&self, took: Duration, miss: bool) {
            self.calls.set(self.calls.get() + 1);
            self.misses.set(self.misses.get() + u64::from(miss));
            self.slowest.set(self.slowest.get().max(took));
        }
    }

    async fn one_round(cache: &Cache, data: &[u8], i: u64, tally: &Tally) {
        let sha = sha(500 + i);
        let t = Instant::now();
        let miss = match cache.open_blob(&sha, None).await {
            None => true,
            Some(reader) => {
                let (got, ending) = read_all(reader).await;
                match ending {
                    Ending::End => assert!(got == data, "wrong bytes served for {sha}"),
                    Ending::Lost(at) => {
                        assert_eq!(
                            got.len() as u64,
                            at,
                            "Lost offset must equal the bytes delivered"
                        );
                        assert!(got == data[..at as usize], "wrong prefix before Lost");
                    }
                }
                ending != Ending::End
            }
        };
        tally.record(t.elapsed(), miss);
        if miss {
            let t = Instant::now();
            let stored = cache
                .put_blob(&sha, data.len() as u64, data)
                .await
                .expect("put_blob never errors on backend trouble");
            tally.record(t.elapsed(), !stored);
        }
        let key = remote_record_key("load.example", &i.to_string());
        let t = Instant::now();
        let record = cache.get_record(&key).await;
        tally.record(t.elapsed(), record.is_none());
        if let Some(r) = record {
            assert_eq!(r.as_ref(), i.to_string().as_bytes());
        } else {
            cache
                .put_record(&key, bytes::Bytes::from(i.to_string()))
                .await;
        }
    }

    /// What happens to shard 1 in the middle of the load.
    #[derive(Clone, Copy)]
    enum Fault {
        /// SIGKILL of its redis-server.
        Kill,
        /// SIGSTOP of its redis-server: connections stay open, nothing answers.
        Hang,
        /// A panic of its shard actor (the server is fine): the ring's watchdog replaces it.
        ActorPanic,
    }

    #[actix_rt::test]
    async fn shard_killed_under_load_gives_only_misses() {
        shard_fault_under_load(Fault::Kill).await;
    }

    /// The ring's watchdog is the one supervision mechanism: a panicked shard actor is
    /// replaced (counted in a metric), no call fails or hangs meanwhile, and afterwards the
    /// shard serves again with the blobs it held.
    #[actix_rt::test]
    async fn shard_actor_panic_under_load_is_replaced_without_failing_a_call() {
        shard_fault_under_load(Fault::ActorPanic).await;
    }

    /// A hung shard (SIGSTOP: connections stay open, nothing answers) is the slow case: every
    /// call to it must still come back within the bounded wait.
    #[actix_rt::test]
    async fn shard_hung_under_load_gives_only_misses() {
        shard_fault_under_load(Fault::Hang).await;
    }

    async fn shard_fault_under_load(fault: Fault) {
        let mut f = Fixture::redis().await;
        let data = Rc::new(bytes_of(10_000, 42));
        let tally = Rc::new(Tally::default());
        let stop = Rc::new(Cell::new(false));
        let mut workers = Vec::new();
        for w in 0..8u64 {
            let (cache, data, tally, stop) =
                (f.cache.clone(), data.clone(), tally.clone(), stop.clone());
            workers.push(actix_rt::spawn(async move {
                let mut i = w;
                while !stop.get() {
                    one_round(&cache, &data, i % 40, &tally).await;
                    i += 7;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        let before = (tally.calls.get(), tally.misses.get());
        let replaced = || {
            metric_value(
                "media_repo_cache_shard_actor_replaced_total",
                &[("shard", "shard1")],
            )
        };
        let replaced_before = replaced();
        match fault {
            Fault::Kill => f.shards[1].1.kill9(),
            Fault::Hang => f.shards[1].1.pause(),
            Fault::ActorPanic => {
                let key = (0..)
                    .map(|i| blob_header_key(&sha(500 + i)))
                    .find(|key| f.shard_for(key).port() == f.shards[1].1.port())
                    .expect("some key routes to shard1");
                assert!(f.cache.inject_shard_actor_panic(&key).await);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.set(true);
        for w in workers {
            w.await.expect("a worker panicked: wrong bytes or an error");
        }
        let after = (tally.calls.get() - before.0, tally.misses.get() - before.1);
        eprintln!(
            "before fault: {before:?} calls/misses; after: {after:?}; slowest call {:?}",
            tally.slowest.get()
        );
        if let Fault::ActorPanic = fault {
            assert_eq!(
                replaced() - replaced_before,
                1.0,
                "the watchdog replaced the panicked actor once"
            );
            // The server kept its data: once the new actor is up, shard1's blobs are hits.
            f.wait_up(3).await;
            let (hits, rounds) = (tally.calls.get(), 40u64);
            for i in 0..rounds {
                one_round(&f.cache, &data, i, &tally).await;
            }
            assert_eq!(
                tally.misses.get() - before.1 - after.1,
                0,
                "every blob and record is a hit after the replacement ({} calls)",
                tally.calls.get() - hits
            );
        } else {
            assert!(
                after.1 > 0,
                "the fault must have turned some calls into misses"
            );
        }
        assert!(after.0 > 100, "load kept going after the fault: {after:?}");
        assert!(
            tally.slowest.get() < CALL_BOUND,
            "slowest call {:?}",
            tally.slowest.get()
        );

        // The ring noticed; keys of a dead shard now live on the others.
        f.wait_up(if let Fault::ActorPanic = fault { 3 } else { 2 })
            .await;
        for i in 0..40 {
            let sha = sha(900 + i);
            assert!(
                put(&f.cache, &sha, &data).await,
                "with 2 shards up every blob is stored again"
            );
            let (got, ending) = read_all(f.cache.open_blob(&sha, None).await.unwrap()).await;
            assert_eq!(ending, Ending::End);
            assert!(got == *data);
        }
    }

    #[actix_rt::test]
    async fn all_shards_down_every_call_is_a_miss() {
        let mut f = Fixture::redis().await;
        let data = bytes_of(10_000, 43);
        let sha = sha(43);
        let key = remote_record_key("down.example", "x");
        assert!(put(&f.cache, &sha, &data).await);
        f.cache
            .put_record(&key, bytes::Bytes::from_static(b"r"))
            .await;
        for (_, shard) in &mut f.shards {
            shard.kill9();
        }

        async fn every_call(f: &Fixture, sha: &str, data: &[u8], key: &str, bound: Duration) {
            let t = Instant::now();
            if let Some(reader) = f.cache.open_blob(sha, None).await {
                // Only possible in the instant before the kill is noticed; never wrong bytes.
                let (got, ending) = read_all(reader).await;
                assert!(ending != Ending::End || got == data);
            }
            assert!(
                !f.cache
                    .put_blob(sha, data.len() as u64, data)
                    .await
                    .unwrap(),
                "nothing can be stored"
            );
            assert_eq!(f.cache.get_record(key).await, None);
            f.cache
                .put_record(key, bytes::Bytes::from_static(b"r"))
                .await;
            let lease = f
                .cache
                .try_lease(&lease_key("down.example", "x"), Duration::from_secs(5))
                .await;
            let lease = lease.expect("an unreachable cache never makes a caller wait for a lease");
            assert!(!lease.is_exclusive());
            f.cache.release(lease).await;
            f.cache.delete_blob(sha).await;
            assert!(t.elapsed() < bound, "calls took {:?}", t.elapsed());
        }

        // Right after the crash: bounded by the timeouts.
        every_call(&f, &sha, &data, &key, CALL_BOUND * 3).await;
        // Once the health checks mark them down: no network at all, immediate.
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.cache.status().await.shards.iter().any(|s| s.up) {
            assert!(Instant::now() < deadline, "shards never marked down");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(f.cache.open_blob(&sha, None).await.is_none());
        every_call(&f, &sha, &data, &key, Duration::from_millis(200)).await;
    }

    #[actix_rt::test]
    async fn reload_adds_a_shard() {
        let f = Fixture::redis_with(2).await;
        let extra = RedisServer::start().unwrap();
        let mut cfg = base_config();
        cfg.backend = mr_config::CacheBackend::Redis;
        cfg.redis.shards = f
            .shards
            .iter()
            .map(|(n, s)| mr_config::ShardConfig {
                name: n.clone(),
                addr: s.url(),
            })
            .chain([mr_config::ShardConfig {
                name: "extra".into(),
                addr: extra.url(),
            }])
            .collect();
        f.cache.apply_config(&cfg);
        f.wait_up(3).await;
        let status = f.cache.status().await;
        assert_eq!(status.backend, "redis");
        assert!(status.shards.iter().any(|s| s.name == "extra" && s.up));
    }
}

/// `cache.ttl_secs` puts a TTL on blobs and records.
#[actix_rt::test]
async fn ttl_applies_in_memory() {
    let cfg = mr_config::CacheConfig {
        ttl_secs: Some(1),
        ..base_config()
    };
    let f = Fixture::memory_with(cfg).await;
    let key = remote_record_key("ttl.example", "a");
    f.cache
        .put_record(&key, bytes::Bytes::from_static(b"r"))
        .await;
    assert!(put(&f.cache, &sha(60), &bytes_of(5_000, 60)).await);
    assert!(f.cache.get_record(&key).await.is_some());
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(
        f.cache.get_record(&key).await,
        None,
        "record outlived its TTL"
    );
    assert!(
        f.cache.open_blob(&sha(60), None).await.is_none(),
        "blob outlived its TTL"
    );
}

#[actix_rt::test]
async fn ttl_applies_in_redis() {
    let cfg = mr_config::CacheConfig {
        ttl_secs: Some(100),
        ..base_config()
    };
    let f = Fixture::redis_with_config(3, cfg).await;
    let key = remote_record_key("ttl.example", "a");
    f.cache
        .put_record(&key, bytes::Bytes::from_static(b"r"))
        .await;
    assert!(put(&f.cache, &sha(61), &bytes_of(5_000, 61)).await);
    for key in [key, blob_header_key(&sha(61)), blob_chunk_key(&sha(61), 1)] {
        let pttl: i64 = f
            .shard_for(&key)
            .cli(&["PTTL", &key])
            .unwrap()
            .parse()
            .unwrap();
        assert!((90_000..=100_000).contains(&pttl), "{key} has PTTL {pttl}");
    }
    // Without ttl_secs, keys are left to Redis' eviction policy.
    let f = Fixture::redis_with(1).await;
    assert!(put(&f.cache, &sha(62), &bytes_of(10, 62)).await);
    let header = blob_header_key(&sha(62));
    assert_eq!(f.shard_for(&header).cli(&["PTTL", &header]).unwrap(), "-1");
}

/// The counters an operator graphs move with what callers saw.
#[actix_rt::test]
async fn metrics_are_exported() {
    fn value(family: &str, labels: &[(&str, &str)]) -> f64 {
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
    let req = |op, result| {
        value(
            "media_repo_cache_requests_total",
            &[("backend", "memory"), ("op", op), ("result", result)],
        )
    };
    let served = || {
        value(
            "media_repo_cache_bytes_served_total",
            &[("backend", "memory")],
        )
    };
    let f = Fixture::memory().await;
    let data = bytes_of(10_000, 70);
    let before = (
        req("blob_put", "stored"),
        req("blob_open", "hit"),
        req("blob_open", "miss"),
        req("blob_read", "lost"),
        served(),
    );
    assert!(f.cache.open_blob(&sha(70), None).await.is_none());
    assert!(put(&f.cache, &sha(70), &data).await);
    read_all(f.cache.open_blob(&sha(70), None).await.unwrap()).await;
    f.remove_key(&blob_chunk_key(&sha(70), 2)).await;
    read_all(f.cache.open_blob(&sha(70), None).await.unwrap()).await;
    // Other tests run concurrently in this process: the counters moved by at least ours.
    assert!(req("blob_put", "stored") >= before.0 + 1.0);
    assert!(req("blob_open", "hit") >= before.1 + 2.0);
    assert!(req("blob_open", "miss") >= before.2 + 1.0);
    assert!(req("blob_read", "lost") >= before.3 + 1.0);
    assert!(served() >= before.4 + 10_000.0 + 8_192.0);
    f.cache.memory_used_bytes_exact().await;
    assert!(value("media_repo_cache_memory_used_bytes", &[]) > 0.0);
}

/// Shards that are reachable but unusable (refused login, not Redis at all, out of memory)
/// must say so in the log once, and cost the callers nothing.
mod shard_trouble {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    use integration::capture_logs;
    use mr_shard_actor::{WRITE_BACKOFF_INITIAL, WRITE_BACKOFF_MAX};

    use super::*;

    /// Cache operations a never-up shard is put through (gets and puts, alternating).
    const OPS: u64 = 100;
    /// Pause between two of them, so the run spans several health rounds (250 ms each).
    const OP_SPACING: Duration = Duration::from_millis(15);
    /// Generous bound on "the first health round has reported".
    const REPORT_WITHIN: Duration = Duration::from_secs(10);

    /// A shard at `url` that never comes up: every call is an immediate miss or no-op, the
    /// log says "down" exactly once naming the shard and containing `needle`, and the status
    /// carries the reason.
    async fn never_up_logs_down_once(name: &str, url: String, needle: &str) {
        let logs = capture_logs();
        let shard_field = format!("shard={name}");
        let cache = redis_cache_on(&[(name, url)]);
        let data = bytes_of(6_000, 77);
        let started = Instant::now();
        for i in 0..OPS {
            let sha = sha(1_000 + i);
            if i % 2 == 0 {
                assert!(cache.open_blob(&sha, None).await.is_none());
                let key = remote_record_key("trouble.example", &i.to_string());
                assert_eq!(cache.get_record(&key).await, None);
            } else {
                let stored = cache
                    .put_blob(&sha, data.len() as u64, &data[..])
                    .await
                    .expect("a backend failure is never an error");
                assert!(!stored);
                let key = remote_record_key("trouble.example", &i.to_string());
                cache
                    .put_record(&key, bytes::Bytes::from_static(b"r"))
                    .await;
            }
            tokio::time::sleep(OP_SPACING).await;
        }
        let deadline = Instant::now() + REPORT_WITHIN;
        while logs
            .lines_with(&shard_field, &["redis shard is down"])
            .is_empty()
        {
            assert!(Instant::now() < deadline, "no down line for {name}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A few more health rounds, each of which fails again.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = cache.status().await;
        let shard = &status.shards[0];
        eprintln!(
            "{name}: {OPS} ops in {:?}; status {shard:?}",
            started.elapsed()
        );
        assert!(!shard.up, "{name} must never come up");
        let reason = shard
            .last_error
            .as_deref()
            .expect("status names the reason");
        assert!(reason.contains(needle), "{name}: reason {reason:?}");

        let down = logs.lines_with(&shard_field, &["redis shard is down"]);
        assert_eq!(down.len(), 1, "exactly one down line for {name}: {down:#?}");
        assert!(down[0].contains("WARN"), "{}", down[0]);
        assert!(down[0].contains(needle), "{}", down[0]);
        assert!(
            logs.lines_with(&shard_field, &["redis shard is up"])
                .is_empty(),
            "{name} never came up"
        );
    }

    #[actix_rt::test]
    async fn shard_needing_a_password_we_do_not_send_logs_noauth_once() {
        let server = RedisServer::start_with_args(&["--requirepass", "secret"]).unwrap();
        never_up_logs_down_once("noauth-shard", server.url(), "NOAUTH").await;
    }

    #[actix_rt::test]
    async fn shard_with_a_wrong_password_logs_auth_failure_once() {
        let server = RedisServer::start_with_args(&["--requirepass", "secret"]).unwrap();
        let url = server.url_with_password("not-the-secret");
        // redis-rs reports a refused AUTH as its own error kind, without the server's
        // WRONGPASS text.
        never_up_logs_down_once("wrongpass-shard", url, "Password authentication failed").await;
    }

    /// Something that is not Redis on the shard's port: it answers every connection with an
    /// HTTP error and hangs up.
    #[actix_rt::test]
    async fn shard_address_serving_something_else_logs_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let serving = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                            let mut buf = [0u8; 512];
                            let _ = conn.read(&mut buf);
                            let _ = conn.write_all(
                                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        never_up_logs_down_once(
            "not-redis-shard",
            format!("redis://127.0.0.1:{port}"),
            "Parse error",
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        serving.join().unwrap();
    }

    /// A shard out of memory under `noeviction` answers every SET with OOM while PING and
    /// GET work: it stays up, and without the write pause every cache fill would send it a
    /// SET in vain. With it: one WARN, no SET reaches the server during the pause, reads
    /// still do, and once memory is freed and the pause over, writes go through again.
    #[actix_rt::test]
    async fn shard_out_of_memory_pauses_writes_and_keeps_reads() {
        const NAME: &str = "oom-shard";
        let shard_field = format!("shard={NAME}");
        let logs = capture_logs();
        // Redis 7 uses ~1 MB when idle: 2 MB leaves room for a few dozen blobs.
        let server = RedisServer::start_with_args(&[
            "--maxmemory",
            "2mb",
            "--maxmemory-policy",
            "noeviction",
        ])
        .unwrap();
        let cache = redis_cache_on(&[(NAME, server.url())]);
        let deadline = Instant::now() + REPORT_WITHIN;
        while !cache.status().await.shards[0].up {
            assert!(Instant::now() < deadline, "shard never up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let paused = || metric_value("media_repo_cache_shard_write_backoff", &[("shard", NAME)]);
        assert_eq!(paused(), 0.0);

        let kept = bytes_of(10_000, 80);
        assert!(put(&cache, &sha(2_000), &kept).await);

        // Fill until the server refuses.
        let blob = bytes_of(60_000, 81);
        let mut filled = 0;
        while put(&cache, &sha(2_001 + filled), &blob).await {
            filled += 1;
            assert!(filled < 200, "2 MB never ran out");
        }
        let refused_at = Instant::now();
        eprintln!("{filled} blobs of 60 kB stored before OOM");
        // used_memory hovers around the limit (buffers come and go), so a later SET might
        // fit again; halving the limit keeps the server refusing until FLUSHALL.
        server.cli(&["CONFIG", "SET", "maxmemory", "1mb"]).unwrap();
        let status = cache.status().await;
        let shard = &status.shards[0];
        assert!(shard.up, "OOM does not make a shard down: {shard:?}");
        let write_error = shard
            .write_error
            .as_deref()
            .expect("status names the write error");
        assert!(write_error.contains("OOM"), "{write_error}");
        assert_eq!(paused(), 1.0);

        // During the pause: no SET reaches the server, whatever the callers try.
        let skipped = || {
            metric_value(
                "media_repo_cache_backend_errors_total",
                &[
                    ("backend", "redis"),
                    ("op", "set"),
                    ("reason", "write_paused"),
                ],
            )
        };
        let (sets_before, skipped_before) = (set_commands_seen(&server), skipped());
        for i in 0..100 {
            assert!(!put(&cache, &sha(3_000 + i), &kept).await);
            let key = remote_record_key("oom.example", &i.to_string());
            cache
                .put_record(&key, bytes::Bytes::from_static(b"r"))
                .await;
        }
        let within_first_pause = refused_at.elapsed() < WRITE_BACKOFF_INITIAL;
        let sent = set_commands_seen(&server) - sets_before;
        eprintln!(
            "200 writes during the pause sent {sent} SETs (within the first pause: {within_first_pause})"
        );
        if within_first_pause {
            assert_eq!(sent, 0, "no SET may reach a shard whose writes are paused");
        } else {
            assert!(sent <= 1, "at most the one probe after the pause: {sent}");
        }
        assert!(
            skipped() >= skipped_before + 199.0,
            "skipped writes are counted"
        );

        // Reads still work.
        let (got, ending) = read_all(cache.open_blob(&sha(2_000), None).await.unwrap()).await;
        assert_eq!(ending, Ending::End);
        assert!(got == kept);

        // Pause over, memory still full: of a burst of writes exactly one probes (and is
        // refused, which doubles the pause); the rest are skipped.
        tokio::time::sleep(WRITE_BACKOFF_INITIAL.saturating_sub(refused_at.elapsed())).await;
        let deadline = Instant::now() + WRITE_BACKOFF_MAX;
        loop {
            assert!(Instant::now() < deadline, "no write probed the shard");
            let before = set_commands_seen(&server);
            let burst = (0..50u64).map(|i| {
                let cache = cache.clone();
                let kept = kept.clone();
                async move { put(&cache, &sha(6_000 + i), &kept).await }
            });
            let stored = futures_util::future::join_all(burst).await;
            assert!(stored.iter().all(|s| !s), "nothing fits in a full shard");
            let sent = set_commands_seen(&server) - before;
            if sent == 0 {
                // Still inside the pause (a slow clock tick); try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            assert_eq!(sent, 1, "exactly one probe per expired pause");
            break;
        }
        assert_eq!(paused(), 1.0, "the failed probe keeps writes paused");

        // Memory freed: once the pause is over, the probe succeeds and writes flow again.
        server.cli(&["FLUSHALL"]).unwrap();
        server.cli(&["CONFIG", "SET", "maxmemory", "2mb"]).unwrap();
        let deadline = Instant::now() + WRITE_BACKOFF_MAX;
        let mut i = 0;
        while !put(&cache, &sha(4_000 + i), &kept).await {
            assert!(Instant::now() < deadline, "writes never resumed");
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "writes resumed {:?} after the first refusal",
            refused_at.elapsed()
        );
        assert_eq!(paused(), 0.0);
        assert_eq!(cache.status().await.shards[0].write_error, None);
        assert!(put(&cache, &sha(5_000), &blob).await);
        let (got, _) = read_all(cache.open_blob(&sha(5_000), None).await.unwrap()).await;
        assert!(got == blob);

        let refused = logs.lines_with(&shard_field, &["refuses writes"]);
        assert_eq!(refused.len(), 1, "{refused:#?}");
        assert!(
            refused[0].contains("WARN") && refused[0].contains("OOM"),
            "{}",
            refused[0]
        );
        let resumed = logs.lines_with(&shard_field, &["accepts writes again"]);
        assert_eq!(resumed.len(), 1, "{resumed:#?}");
        assert!(resumed[0].contains("INFO"), "{}", resumed[0]);
        assert!(logs
            .lines_with(&shard_field, &["redis shard is down"])
            .is_empty());
    }

    /// Two shards, one marked by hand as holding key-format version 2 (a repo of another
    /// major version): it answers PING but is never used, so every key routes to the other
    /// shard and no command of ours writes to it (not even deletes); one ERROR names it and
    /// both versions; the gauge and the status say so. Marked `1` again, it is used again.
    #[actix_rt::test]
    async fn shard_of_another_key_format_version_is_not_used() {
        const NAME: &str = "v2-shard";
        const GOOD: &str = "v1-shard";
        let shard_field = format!("shard={NAME}");
        let logs = capture_logs();
        let other = RedisServer::start().unwrap();
        other.cli(&["SET", "mr:format", "2"]).unwrap();
        let ours = RedisServer::start().unwrap();
        let cache = redis_cache_on(&[(NAME, other.url()), (GOOD, ours.url())]);
        let deadline = Instant::now() + REPORT_WITHIN;
        loop {
            let status = cache.status().await;
            if status
                .shards
                .iter()
                .all(|s| s.up || s.format_mismatch.is_some())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "shards never settled: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mismatch = || {
            metric_value(
                "media_repo_cache_shard_version_mismatch",
                &[("shard", NAME)],
            )
        };
        let up = |name| metric_value("media_repo_cache_shard_up", &[("shard", name)]);
        assert_eq!(mismatch(), 1.0);
        assert_eq!(up(NAME), 0.0);
        assert_eq!(up(GOOD), 1.0);
        assert_eq!(
            metric_value(
                "media_repo_cache_shard_version_mismatch",
                &[("shard", GOOD)]
            ),
            0.0
        );

        let commands = |server: &RedisServer| server.cli(&["INFO", "commandstats"]).unwrap();
        let (sets_before, keys_before) = (set_commands_seen(&other), other.dbsize().unwrap());
        let data = bytes_of(6_000, 90);
        for i in 0..40 {
            let sha = sha(7_000 + i);
            assert!(
                put(&cache, &sha, &data).await,
                "the other shard takes every key"
            );
            let (got, ending) = read_all(cache.open_blob(&sha, None).await.unwrap()).await;
            assert_eq!(ending, Ending::End);
            assert!(got == data);
            let key = remote_record_key("format.example", &i.to_string());
            cache
                .put_record(&key, bytes::Bytes::from_static(b"r"))
                .await;
            assert!(cache.get_record(&key).await.is_some());
            let lease = cache
                .try_lease(
                    &lease_key("format.example", &i.to_string()),
                    Duration::from_secs(5),
                )
                .await
                .expect("a lease");
            assert!(lease.is_exclusive());
            cache.release(lease).await;
        }
        // Deletes and lease releases go to every shard; this one refuses them unsent.
        cache.delete_blob(&sha(7_000)).await;
        assert!(cache.open_blob(&sha(7_000), None).await.is_none());
        assert_eq!(set_commands_seen(&other), sets_before, "no SET reached it");
        assert_eq!(other.dbsize().unwrap(), keys_before, "no key written to it");
        let stats = commands(&other);
        for command in ["cmdstat_del:", "cmdstat_evalsha:", "cmdstat_eval:"] {
            assert!(!stats.contains(command), "{command} reached it: {stats}");
        }
        assert_eq!(
            other.cli(&["GET", "mr:format"]).unwrap(),
            "2",
            "never overwritten"
        );
        assert_eq!(ours.cli(&["GET", "mr:format"]).unwrap(), "1");

        let status = cache.status().await;
        let shard = status.shards.iter().find(|s| s.name == NAME).unwrap();
        assert!(!shard.up, "{shard:?}");
        assert_eq!(
            shard.format_mismatch.as_deref(),
            Some("found 2, expected 1")
        );
        assert_eq!(shard.last_error, None, "not down: it answers");
        let json = serde_json::to_value(&status).unwrap();
        let shard_json = json["shards"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == NAME)
            .unwrap();
        assert_eq!(
            shard_json["format_mismatch"], "found 2, expected 1",
            "{json}"
        );

        // The operator hands the shard back: flushed and marked as ours.
        other.cli(&["FLUSHALL"]).unwrap();
        other.cli(&["SET", "mr:format", "1"]).unwrap();
        let handed_back = Instant::now();
        let deadline = handed_back + REPORT_WITHIN;
        while !cache.status().await.shards.iter().all(|s| s.up) {
            assert!(Instant::now() < deadline, "shard not used again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "used again {:?} after the marker said 1",
            handed_back.elapsed()
        );
        assert_eq!(mismatch(), 0.0);
        assert_eq!(up(NAME), 1.0);
        let status = cache.status().await;
        assert!(status.shards.iter().all(|s| s.format_mismatch.is_none()));
        // Keys route to it again.
        for i in 0..40 {
            assert!(put(&cache, &sha(8_000 + i), &data).await);
        }
        assert!(other.dbsize().unwrap() > 1, "keys of ours land on it again");

        let errors = logs.lines_with(&shard_field, &["key-format version"]);
        let errors: Vec<_> = errors.iter().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "exactly one ERROR line: {errors:#?}");
        eprintln!("{}", errors[0]);
        assert!(
            errors[0].contains("found=2") && errors[0].contains("expected=1"),
            "{}",
            errors[0]
        );
        let again = logs.lines_with(&shard_field, &["our key-format version again"]);
        assert_eq!(again.len(), 1, "{again:#?}");
        assert!(again[0].contains("INFO"), "{}", again[0]);
        assert!(logs
            .lines_with(&shard_field, &["redis shard is down"])
            .is_empty());
        assert!(logs
            .lines_with(&format!("shard={GOOD}"), &["key-format version"])
            .is_empty());
    }
}
