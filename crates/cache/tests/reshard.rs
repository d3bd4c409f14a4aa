//! Hits kept across a reshard, on real redis-server shards behind the real ring actor: a miss
//! on a key's new shard is served by its previous owner (still listed, or removed and
//! draining) and moved; a down previous owner is skipped without a message; records and
//! leases follow the same routes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mr_cache::{blob_chunk_key, blob_header_key, lease_key, remote_record_key, Cache};
use mr_config::CacheConfig;
use mr_ring::hashing;

/// The metrics these tests compare are process-wide: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Blobs per test: a mix of inline (one key) and chunked (header + chunks) ones.
const BLOBS: u64 = 60;

/// How long background moves may take to land.
const MOVE_WITHIN: Duration = Duration::from_secs(10);

/// Every third blob spans three chunks; the others fit inline.
fn is_chunked(n: u64) -> bool {
    n.is_multiple_of(3)
}

fn blob_data(n: u64) -> Vec<u8> {
    let len = if is_chunked(n) {
        3 * CHUNK as usize - 100
    } else {
        1_000 + n as usize
    };
    bytes_of(len, n)
}

fn config_of(shards: &[(&str, &RedisServer)], drain_secs: u64) -> CacheConfig {
    let urls: Vec<(&str, String)> = shards.iter().map(|(n, s)| (*n, s.url())).collect();
    let mut cfg = redis_config_on(&urls);
    cfg.redis.reshard_drain_secs = drain_secs;
    cfg
}

async fn wait_status(cache: &Cache, what: &str, cond: impl Fn(&mr_cache::CacheStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cache.status().await;
        if cond(&status) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_up(cache: &Cache, n: usize) {
    wait_status(cache, "shards up", |s| {
        s.shards.len() == n && s.shards.iter().all(|s| s.up)
    })
    .await;
}

fn owner<'a>(names: &[&'a str], key: &str) -> &'a str {
    hashing::pick(names.iter().copied(), key).unwrap()
}

fn exists(server: &RedisServer, key: &str) -> bool {
    server.cli(&["EXISTS", key]).unwrap() == "1"
}

fn previous_owner(op: &str, owner: &str, result: &str) -> f64 {
    metric_value(
        "media_repo_cache_previous_owner_requests_total",
        &[("op", op), ("owner", owner), ("result", result)],
    )
}

fn moves(result: &str) -> f64 {
    metric_value(
        "media_repo_cache_moves_total",
        &[("kind", "blob"), ("result", result)],
    )
}

/// Every key of blob `n` (header and, for a chunked one, its chunks).
fn blob_keys(n: u64) -> Vec<String> {
    let sha = sha(n);
    let chunks = if is_chunked(n) { 3 } else { 0 };
    std::iter::once(blob_header_key(&sha))
        .chain((0..chunks).map(|i| blob_chunk_key(&sha, i)))
        .collect()
}

/// Three fresh servers, for shards a, b and c (the tests decide which are listed when).
fn three_servers() -> (RedisServer, RedisServer, RedisServer) {
    (
        RedisServer::start().unwrap(),
        RedisServer::start().unwrap(),
        RedisServer::start().unwrap(),
    )
}

/// A cache on `shards` (all up) holding the test blobs.
async fn cache_with_blobs(shards: &[(&str, &RedisServer)]) -> Cache {
    let cache = Cache::start(&config_of(shards, 3600));
    all_up(&cache, shards.len()).await;
    for n in 0..BLOBS {
        assert!(put(&cache, &sha(n), &blob_data(n)).await);
    }
    cache
}

async fn read_back(cache: &Cache, n: u64) -> Option<Vec<u8>> {
    let reader = cache.open_blob(&sha(n), None).await?;
    let (got, ending) = read_all(reader).await;
    assert_eq!(ending, Ending::End, "blob {n} lost mid-read");
    Some(got)
}

#[actix_rt::test]
async fn an_added_shard_misses_are_served_by_the_previous_owner_and_moved() {
    let _serial = SERIAL.lock().await;
    let (a, b, c) = three_servers();
    let cache = cache_with_blobs(&[("a", &a), ("b", &b)]).await;

    cache.apply_config(&config_of(&[("a", &a), ("b", &b), ("c", &c)], 3600));
    all_up(&cache, 3).await;
    let moved: Vec<u64> = (0..BLOBS)
        .filter(|&n| owner(&["a", "b", "c"], &blob_header_key(&sha(n))) == "c")
        .collect();
    assert!(moved.len() >= 8, "about a third moved: {}", moved.len());
    let hits_before = previous_owner("blob_open", "listed", "hit");
    let moved_before = moves("moved");
    for n in 0..BLOBS {
        let got = read_back(&cache, n).await;
        assert!(got == Some(blob_data(n)), "blob {n} after adding c");
    }
    assert_eq!(
        previous_owner("blob_open", "listed", "hit") - hits_before,
        moved.len() as f64,
        "exactly the moved blobs were served by their previous owner"
    );

    // Every moved blob lands whole on c; its old copy stays where it was.
    let deadline = Instant::now() + MOVE_WITHIN;
    while moves("moved") - moved_before < moved.len() as f64 {
        assert!(Instant::now() < deadline, "moves did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for &n in &moved {
        let old = if owner(&["a", "b"], &blob_header_key(&sha(n))) == "a" {
            &a
        } else {
            &b
        };
        for key in blob_keys(n) {
            assert!(exists(&c, &key), "{key} moved to c");
            assert!(exists(old, &key), "{key} kept on its previous owner");
        }
    }
    // Read again: now plain hits on c, no fallback.
    let hits_before = previous_owner("blob_open", "listed", "hit");
    for &n in &moved {
        assert!(read_back(&cache, n).await == Some(blob_data(n)));
    }
    assert_eq!(previous_owner("blob_open", "listed", "hit"), hits_before);
}

#[actix_rt::test]
async fn a_removed_shard_is_read_while_it_drains_and_deletes_reach_it() {
    let _serial = SERIAL.lock().await;
    let (a, b, c) = three_servers();
    let cache = cache_with_blobs(&[("a", &a), ("b", &b), ("c", &c)]).await;
    let of_c: Vec<u64> = (0..BLOBS)
        .filter(|&n| owner(&["a", "b", "c"], &blob_header_key(&sha(n))) == "c")
        .collect();
    assert!(of_c.len() >= 8);

    cache.apply_config(&config_of(&[("a", &a), ("b", &b)], 3600));
    wait_status(&cache, "c draining", |s| {
        s.shards.iter().any(|s| s.name == "c" && s.draining && s.up)
    })
    .await;
    // A deleted blob (quarantine) goes from the draining shard too: no fallback finds it.
    let deleted = of_c[0];
    cache.delete_blob(&sha(deleted)).await;
    assert!(!exists(&c, &blob_header_key(&sha(deleted))));
    assert!(read_back(&cache, deleted).await.is_none());

    let hits_before = previous_owner("blob_open", "removed", "hit");
    for n in (0..BLOBS).filter(|&n| n != deleted) {
        let got = read_back(&cache, n).await;
        assert!(got == Some(blob_data(n)), "blob {n} after removing c");
    }
    assert_eq!(
        previous_owner("blob_open", "removed", "hit") - hits_before,
        (of_c.len() - 1) as f64
    );
    for &n in of_c.iter().filter(|&&n| n != deleted) {
        let new = if owner(&["a", "b"], &blob_header_key(&sha(n))) == "a" {
            &a
        } else {
            &b
        };
        let deadline = Instant::now() + MOVE_WITHIN;
        while !blob_keys(n).iter().all(|key| exists(new, key)) {
            assert!(Instant::now() < deadline, "blob {n} not moved off c");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[actix_rt::test]
async fn a_down_previous_owner_is_skipped_without_a_message() {
    let _serial = SERIAL.lock().await;
    let (mut a, b, c) = three_servers();
    let cache = cache_with_blobs(&[("a", &a), ("b", &b)]).await;
    cache.apply_config(&config_of(&[("a", &a), ("b", &b), ("c", &c)], 3600));
    all_up(&cache, 3).await;
    a.kill9();
    wait_status(&cache, "a down", |s| {
        s.shards.iter().any(|s| s.name == "a" && !s.up)
    })
    .await;

    // Blobs that moved from a to c: c misses, a is down, so a miss without asking a.
    let from_a: Vec<u64> = (0..BLOBS)
        .filter(|&n| {
            let key = blob_header_key(&sha(n));
            owner(&["a", "b"], &key) == "a" && owner(&["a", "b", "c"], &key) == "c"
        })
        .collect();
    assert!(!from_a.is_empty());
    let down_before = previous_owner("blob_open", "listed", "down");
    let get_errors = || {
        metric_value(
            "media_repo_cache_backend_errors_total",
            &[("backend", "redis"), ("op", "get")],
        )
    };
    let errors_before = get_errors();
    for &n in &from_a {
        assert!(read_back(&cache, n).await.is_none(), "blob {n}: a is down");
    }
    assert_eq!(
        previous_owner("blob_open", "listed", "down") - down_before,
        from_a.len() as f64
    );
    assert_eq!(
        get_errors(),
        errors_before,
        "no GET was sent to the down shard (it would have failed)"
    );
}

#[actix_rt::test]
async fn records_and_leases_follow_their_previous_owner() {
    let _serial = SERIAL.lock().await;
    let (a, b, c) = three_servers();
    let cache = Cache::start(&config_of(&[("a", &a), ("b", &b)], 3600));
    all_up(&cache, 2).await;
    // A media id whose record and lease move to c.
    let id = (0..1000)
        .map(|i| i.to_string())
        .find(|id| owner(&["a", "b", "c"], &lease_key("reshard.example", id)) == "c")
        .unwrap();
    let (record, lease) = (
        remote_record_key("reshard.example", &id),
        lease_key("reshard.example", &id),
    );
    let old = if owner(&["a", "b"], &lease) == "a" {
        &a
    } else {
        &b
    };
    cache
        .put_record(&record, bytes::Bytes::from_static(b"{\"r\":1}"))
        .await;
    let held = cache
        .try_lease(&lease, Duration::from_secs(30))
        .await
        .expect("first lease");
    assert!(held.is_exclusive());

    cache.apply_config(&config_of(&[("a", &a), ("b", &b), ("c", &c)], 3600));
    all_up(&cache, 3).await;

    // The record is read from its previous owner and copied to c.
    assert_eq!(
        cache.get_record(&record).await.as_deref(),
        Some(&b"{\"r\":1}"[..])
    );
    let deadline = Instant::now() + MOVE_WITHIN;
    while !exists(&c, &record) {
        assert!(Instant::now() < deadline, "record not copied to c");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The lease taken before the change still holds: nobody else gets it on c.
    assert!(cache
        .try_lease(&lease, Duration::from_secs(30))
        .await
        .is_none());
    assert!(
        !exists(&c, &lease),
        "the lease we stepped back from is given back on c"
    );
    assert!(cache.renew_lease(&held, Duration::from_secs(30)).await);
    cache.release(held).await;
    assert!(!exists(old, &lease));

    // Now a new lease is held on both shards with one token, and released from both.
    let lease_now = cache
        .try_lease(&lease, Duration::from_secs(30))
        .await
        .expect("free again");
    assert!(lease_now.is_exclusive());
    assert_eq!(
        c.cli(&["GET", &lease]).unwrap(),
        old.cli(&["GET", &lease]).unwrap()
    );
    cache.release(lease_now).await;
    assert!(!exists(&c, &lease) && !exists(old, &lease));
}
