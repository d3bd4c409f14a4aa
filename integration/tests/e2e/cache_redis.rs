//! The read-through cache on three real Redis shards, through the real binary: hits come
//! from Redis, a shard killed mid-download still yields identical bytes, and the shard set
//! changes on SIGHUP while a client keeps reading.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration::{MediaRepo, RedisServer, Synapse};
use sha2::{Digest, Sha256};

use crate::common::{config_yaml, random_bytes, users, Options, Stack, DEFAULT_MAX_UPLOAD_BYTES};

/// Larger than what loopback socket buffers can hold (several MiB on each side), so when
/// the client has read 1 MiB most of the file has not left the server yet and must come
/// from somewhere after the shard dies.
const MID_DOWNLOAD_FILE_BYTES: usize = 40 * 1024 * 1024;

/// Small chunks, so a file spans many of them.
pub const CHUNK_BYTES: usize = 262_144;

/// How long these tests keep a removed shard draining: short, so its metrics are seen to
/// vanish once it is dropped.
const DRAIN_SECS: u64 = 1;

fn redis_cache_yaml(shards: &[(&str, &RedisServer)]) -> String {
    redis_cache_yaml_draining(shards, DRAIN_SECS)
}

/// `cache:` on these shards, with `reshard_drain_secs: drain_secs`.
pub fn redis_cache_yaml_draining(shards: &[(&str, &RedisServer)], drain_secs: u64) -> String {
    let mut yaml = format!(
        "cache:\n  backend: redis\n  chunk_bytes: {CHUNK_BYTES}\n  redis:\n    \
         reshard_drain_secs: {drain_secs}\n    shards:\n"
    );
    for (name, server) in shards {
        yaml.push_str(&format!(
            "      - name: {name}\n        addr: \"{}\"\n",
            server.url()
        ));
    }
    yaml
}

pub fn cache_hits(repo: &MediaRepo) -> f64 {
    repo.metric_value(
        "media_repo_cache_requests_total{backend=\"redis\",op=\"blob_open\",result=\"hit\"}",
    )
    .unwrap_or(0.0)
}

fn blob_stored(repo: &MediaRepo) -> f64 {
    repo.metric_value(
        "media_repo_cache_requests_total{backend=\"redis\",op=\"blob_put\",result=\"stored\"}",
    )
    .unwrap_or(0.0)
}

/// The shard holding the blob's header.
fn shard_holding<'a>(shards: &'a mut [RedisServer], sha256: &str) -> &'a mut RedisServer {
    let key = format!("mr1:blob:{{{sha256}}}:m");
    shards
        .iter_mut()
        .find(|s| s.cli(&["EXISTS", &key]).map(|n| n == "1").unwrap_or(false))
        .unwrap_or_else(|| panic!("no shard holds {key}"))
}

pub fn all_up(repo: &MediaRepo, names: &[&str]) -> bool {
    names.iter().all(|n| {
        repo.metric_value(&format!("media_repo_cache_shard_up{{shard=\"{n}\"}}")) == Some(1.0)
    })
}

#[test]
fn downloads_hit_redis_and_survive_a_shard_killed_mid_download() {
    let mut shards = vec![
        RedisServer::start().unwrap(),
        RedisServer::start().unwrap(),
        RedisServer::start().unwrap(),
    ];
    let cache = redis_cache_yaml(&[("a", &shards[0]), ("b", &shards[1]), ("c", &shards[2])]);
    let s = Stack::start(Options {
        cache_yaml: &cache,
        max_upload_bytes: MID_DOWNLOAD_FILE_BYTES as u64,
        ..Options::default()
    });
    let u = users();
    s.repo
        .wait_for("shards up", Duration::from_secs(10), || {
            all_up(&s.repo, &["a", "b", "c"])
        })
        .unwrap();

    let bytes = random_bytes(MID_DOWNLOAD_FILE_BYTES - 123);
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let (server, id) = s.upload(&u.alice, bytes.clone(), "video/mp4", Some("clip.mp4"));
    // The upload warms the cache in the background.
    s.repo
        .wait_for("upload cached", Duration::from_secs(60), || {
            blob_stored(&s.repo) >= 1.0
        })
        .unwrap();

    let hits_before = cache_hits(&s.repo);
    let body = s.download(&server, &id, &u.bob).bytes().unwrap();
    assert_eq!(body.as_ref(), bytes.as_slice());
    assert_eq!(cache_hits(&s.repo), hits_before + 1.0, "served from Redis");
    // Read by a worker thread's own reader of the shard, not through the shard actor's
    // thread (which answers only while a reader connects: the first read may be its).
    let readers = |repo: &MediaRepo| -> f64 {
        ["a", "b", "c"]
            .iter()
            .filter_map(|n| {
                repo.metric_value(&format!("media_repo_cache_shard_readers{{shard=\"{n}\"}}"))
            })
            .sum()
    };
    assert!(readers(&s.repo) >= 1.0, "no per-thread reader started");
    let from_cache = s
        .repo
        .metric_value("media_repo_download_bytes_total{source=\"cache\"}")
        .unwrap_or(0.0);
    assert!(
        from_cache >= bytes.len() as f64,
        "bytes counted as from the cache: {from_cache}"
    );

    // Start a download, read 1 MiB of it, kill -9 the shard that holds the blob, read the rest.
    let from_datastore = |repo: &MediaRepo| {
        repo.metric_value("media_repo_download_bytes_total{source=\"datastore\"}")
            .unwrap_or(0.0)
    };
    let datastore_before = from_datastore(&s.repo);
    let mut response = s.download(&server, &id, &u.bob);
    let mut received = vec![0u8; 1024 * 1024];
    response.read_exact(&mut received).unwrap();
    shard_holding(&mut shards, &sha256).kill9();
    response.read_to_end(&mut received).unwrap();
    assert_eq!(received.len(), bytes.len());
    assert!(
        received == bytes,
        "identical bytes after the shard died mid-download"
    );
    assert!(
        from_datastore(&s.repo) > datastore_before,
        "the datastore finished what the dead shard could not send"
    );

    // And with the shard gone, downloads keep working (from the datastore or another shard).
    for _ in 0..3 {
        let again = s.download(&server, &id, &u.alice);
        assert_eq!(again.status(), 200);
        assert!(again.bytes().unwrap().as_ref() == bytes.as_slice());
    }
}

#[test]
fn reshard_on_sighup_while_a_client_keeps_reading() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    let c = RedisServer::start().unwrap();
    let synapse = Synapse::shared();
    let u = users();
    let two = redis_cache_yaml(&[("a", &a), ("b", &b)]);
    let s = Stack::start(Options {
        cache_yaml: &two,
        ..Options::default()
    });
    s.repo
        .wait_for("shards up", Duration::from_secs(10), || {
            all_up(&s.repo, &["a", "b"])
        })
        .unwrap();

    let files: Vec<(String, String, Vec<u8>)> = (0..24)
        .map(|i| {
            let bytes = random_bytes(20_000 + i * 997);
            let (server, id) = s.upload(&u.alice, bytes.clone(), "image/png", None);
            (server, id, bytes)
        })
        .collect();
    let files = Arc::new(files);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..3)
        .map(|worker| {
            let (files, stop, reads, failures) =
                (files.clone(), stop.clone(), reads.clone(), failures.clone());
            let http = s.http.clone();
            let base = s.repo.base_url();
            let token = u.bob.clone();
            std::thread::spawn(move || {
                let mut i = worker;
                while !stop.load(Ordering::Relaxed) {
                    let (server, id, bytes) = &files[i % files.len()];
                    let url = format!("{base}/_matrix/client/v1/media/download/{server}/{id}");
                    match http
                        .get(url)
                        .bearer_auth(&token)
                        .send()
                        .and_then(|r| r.error_for_status())
                        .and_then(|r| r.bytes())
                    {
                        Ok(body) if body.as_ref() == bytes.as_slice() => {}
                        other => {
                            eprintln!("failed read: {:?}", other.map(|b| b.len()));
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(500));
    // Add shard c.
    let three = redis_cache_yaml(&[("a", &a), ("b", &b), ("c", &c)]);
    s.repo
        .write_config(&config_yaml(
            synapse,
            "sqlite://{dir}/media-repo.db",
            DEFAULT_MAX_UPLOAD_BYTES,
            &three,
            "",
        ))
        .unwrap();
    s.repo.sighup();
    s.repo
        .wait_for("shard c up", Duration::from_secs(10), || {
            all_up(&s.repo, &["a", "b", "c"])
        })
        .unwrap();
    // Readers miss on keys that now route to c, which fills c in the background. Its one
    // key before that is the key-format marker.
    s.repo
        .wait_for("shard c receives keys", Duration::from_secs(20), || {
            c.dbsize().unwrap_or(0) > 1
        })
        .unwrap();
    let reads_after_add = reads.load(Ordering::Relaxed);

    // Remove shard a.
    let without_a = redis_cache_yaml(&[("b", &b), ("c", &c)]);
    s.repo
        .write_config(&config_yaml(
            synapse,
            "sqlite://{dir}/media-repo.db",
            DEFAULT_MAX_UPLOAD_BYTES,
            &without_a,
            "",
        ))
        .unwrap();
    s.repo.sighup();
    s.repo
        .wait_for("shard a removed", Duration::from_secs(10), || {
            s.repo
                .metric_value("media_repo_cache_shard_up{shard=\"a\"}")
                .is_none()
        })
        .unwrap();
    s.repo
        .wait_for("reads continue", Duration::from_secs(20), || {
            reads.load(Ordering::Relaxed) > reads_after_add + 30
        })
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "zero failed reads across two reshards"
    );
    assert!(reads.load(Ordering::Relaxed) > 60);
    assert_eq!(
        s.repo.metric_value("media_repo_config_generation"),
        Some(3.0)
    );
}
