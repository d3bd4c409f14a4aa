//! Hits kept across a reshard, through the real binary on real redis-server shards: after a
//! SIGHUP adds or removes a shard, the next pass over 300 cached files still hits (misses on
//! a key's new shard are served by its previous owner and the blob moves), and with the
//! previous owner killed mid-pass every request still succeeds from the datastore.

use std::time::Duration;

use integration::{MediaRepo, RedisServer, Synapse};
use mr_ring::hashing;
use sha2::{Digest, Sha256};

use crate::cache_redis::{all_up, cache_hits, redis_cache_yaml_draining, CHUNK_BYTES};
use crate::common::{config_yaml, random_bytes, users, Options, Stack, DEFAULT_MAX_UPLOAD_BYTES};

/// Files per test (the issue asks for at least 300).
const FILES: usize = 300;
/// Every this many files one spans two chunks; the others are small (inline in Redis).
const CHUNKED_EVERY: usize = 15;
/// The drain of these tests: far longer than a test, so the fallback is on throughout.
const DRAIN_SECS: u64 = 600;
/// At most this many passes to get every file cached (uploads warm the cache in the
/// background, so the first pass is usually all hits already).
const WARM_PASSES: usize = 5;

struct File {
    server: String,
    id: String,
    bytes: Vec<u8>,
    header_key: String,
}

fn upload_files(s: &Stack) -> Vec<File> {
    let u = users();
    (0..FILES)
        .map(|i| {
            let len = if i % CHUNKED_EVERY == 0 {
                CHUNK_BYTES + 40_000 + i
            } else {
                1_500 + i * 29
            };
            let bytes = random_bytes(len);
            let sha256 = hex::encode(Sha256::digest(&bytes));
            let (server, id) = s.upload(&u.alice, bytes.clone(), "application/octet-stream", None);
            File {
                server,
                id,
                bytes,
                header_key: format!("mr1:blob:{{{sha256}}}:m"),
            }
        })
        .collect()
}

fn cache_misses(repo: &MediaRepo) -> f64 {
    repo.metric_value(
        "media_repo_cache_requests_total{backend=\"redis\",op=\"blob_open\",result=\"miss\"}",
    )
    .unwrap_or(0.0)
}

fn previous_owner(repo: &MediaRepo, owner: &str, result: &str) -> f64 {
    repo.metric_sum(&format!(
        "media_repo_cache_previous_owner_requests_total{{op=\"blob_open\",owner=\"{owner}\",result=\"{result}\"}}"
    ))
    .unwrap_or(0.0)
}

fn from_datastore(repo: &MediaRepo) -> f64 {
    repo.metric_value("media_repo_download_bytes_total{source=\"datastore\"}")
        .unwrap_or(0.0)
}

/// What one pass over the files saw.
#[derive(Debug)]
struct Pass {
    hits: f64,
    misses: f64,
    failures: usize,
}

impl Pass {
    fn hit_ratio(&self) -> f64 {
        self.hits / (self.hits + self.misses)
    }
}

/// Downloads every file once, in order, comparing bytes; `during(i)` runs before file `i`.
fn pass(s: &Stack, files: &[File], mut during: impl FnMut(usize)) -> Pass {
    let token = &users().bob;
    let (hits, misses) = (cache_hits(&s.repo), cache_misses(&s.repo));
    let mut failures = 0;
    for (i, file) in files.iter().enumerate() {
        during(i);
        let response = s.download(&file.server, &file.id, token);
        let ok = response.status() == 200
            && response
                .bytes()
                .is_ok_and(|body| body.as_ref() == file.bytes.as_slice());
        if !ok {
            eprintln!("file {i} ({}) failed", file.id);
            failures += 1;
        }
    }
    Pass {
        hits: cache_hits(&s.repo) - hits,
        misses: cache_misses(&s.repo) - misses,
        failures,
    }
}

/// Passes until one is all hits; returns it.
fn warm(s: &Stack, files: &[File]) -> Pass {
    for _ in 0..WARM_PASSES {
        let before = pass(s, files, |_| {});
        assert_eq!(before.failures, 0);
        if before.misses == 0.0 {
            assert_eq!(before.hits, FILES as f64, "one blob open per download");
            return before;
        }
        // Misses fill the cache in the background.
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("files never all cached in {WARM_PASSES} passes");
}

fn start(shards: &[(&str, &RedisServer)]) -> Stack {
    let s = Stack::start(Options {
        cache_yaml: &redis_cache_yaml_draining(shards, DRAIN_SECS),
        ..Options::default()
    });
    let names: Vec<&str> = shards.iter().map(|(name, _)| *name).collect();
    s.repo
        .wait_for("shards up", Duration::from_secs(10), || {
            all_up(&s.repo, &names)
        })
        .unwrap();
    s
}

/// The first pass after a reshard: no failure, identical bytes, a hit ratio of at least 0.99
/// of the pass `before`, and exactly `moved` blobs served by their previous owner (`owner`:
/// listed | removed).
fn pass_after_reshard(s: &Stack, files: &[File], before: &Pass, owner: &str, moved: usize) {
    let fallback_before = previous_owner(&s.repo, owner, "hit");
    let after = pass(s, files, |_| {});
    eprintln!("reshard ({owner}): before {before:?}, after {after:?}, {moved} blobs moved");
    assert_eq!(after.failures, 0, "identical bytes, no failed request");
    assert!(
        after.hit_ratio() >= 0.99 * before.hit_ratio(),
        "hit ratio {} after the reshard, {} before ({after:?})",
        after.hit_ratio(),
        before.hit_ratio()
    );
    assert_eq!(
        previous_owner(&s.repo, owner, "hit") - fallback_before,
        moved as f64,
        "every blob that moved was served by its previous owner ({owner})"
    );
}

/// Four fresh servers, for shards a to d (the tests decide which are listed when).
fn servers() -> [RedisServer; 4] {
    std::array::from_fn(|_| RedisServer::start().unwrap())
}

/// A media repo on these shards with the test files uploaded and all cached; the last pass.
fn cached(shards: &[(&str, &RedisServer)]) -> (Stack, Vec<File>, Pass) {
    let s = start(shards);
    let files = upload_files(&s);
    let warm = warm(&s, &files);
    (s, files, warm)
}

/// Writes the config with these shards and sends SIGHUP; waits until it is applied.
fn reshard(s: &Stack, shards: &[(&str, &RedisServer)], generation: f64) {
    s.repo
        .write_config(&config_yaml(
            Synapse::shared(),
            "sqlite://{dir}/media-repo.db",
            DEFAULT_MAX_UPLOAD_BYTES,
            &redis_cache_yaml_draining(shards, DRAIN_SECS),
            "",
        ))
        .unwrap();
    s.repo.sighup();
    s.repo
        .wait_for("config applied", Duration::from_secs(10), || {
            s.repo.metric_value("media_repo_config_generation") == Some(generation)
        })
        .unwrap();
    let names: Vec<&str> = shards.iter().map(|(name, _)| *name).collect();
    s.repo
        .wait_for("shards up", Duration::from_secs(10), || {
            all_up(&s.repo, &names)
        })
        .unwrap();
}

/// Blob headers on `server` (each blob has exactly one).
fn headers_on(server: &RedisServer) -> usize {
    let n = server
        .cli(&[
            "EVAL",
            "return #redis.call('KEYS', ARGV[1])",
            "0",
            "mr1:blob:*:m",
        ])
        .unwrap();
    n.parse().unwrap()
}

fn holds(server: &RedisServer, key: &str) -> bool {
    server.cli(&["EXISTS", key]).unwrap() == "1"
}

fn owner<'a>(names: &[&'a str], key: &str) -> &'a str {
    hashing::pick(names.iter().copied(), key).unwrap()
}

/// Waits until every file's blob is on the shard `names` picks for it; a blob whose move was
/// skipped (every move slot busy) moves on a later read, so the files are read again.
fn wait_moved(s: &Stack, files: &[File], shards: &[(&str, &RedisServer)]) {
    let names: Vec<&str> = shards.iter().map(|(name, _)| *name).collect();
    let server = |name: &str| shards.iter().find(|(n, _)| *n == name).unwrap().1;
    let unmoved = || {
        files
            .iter()
            .filter(|f| !holds(server(owner(&names, &f.header_key)), &f.header_key))
            .count()
    };
    for _ in 0..WARM_PASSES {
        let outcome = s
            .repo
            .wait_for("blobs moved", Duration::from_secs(5), || unmoved() == 0);
        if outcome.is_ok() {
            return;
        }
        assert_eq!(pass(s, files, |_| {}).failures, 0);
    }
    panic!("{} blobs never reached their new shard", unmoved());
}

#[test]
fn adding_a_shard_keeps_the_hits() {
    let [a, b, c, d] = servers();
    let three = [("a", &a), ("b", &b), ("c", &c)];
    let (s, files, before) = cached(&three);

    let four = [("a", &a), ("b", &b), ("c", &c), ("d", &d)];
    reshard(&s, &four, 2.0);
    let moved = files
        .iter()
        .filter(|f| owner(&["a", "b", "c", "d"], &f.header_key) == "d")
        .count();
    pass_after_reshard(&s, &files, &before, "listed", moved);

    wait_moved(&s, &files, &four);
    let on_d = headers_on(&d);
    assert_eq!(on_d, moved, "d holds exactly the blobs that route to it");
    let share = on_d as f64 / FILES as f64;
    assert!(
        (0.15..=0.35).contains(&share),
        "d holds about a quarter of the blobs: {on_d} of {FILES}"
    );
    // The old copies stay (repos still on the old list keep hitting them).
    assert_eq!(
        headers_on(&a) + headers_on(&b) + headers_on(&c),
        FILES,
        "{:?}",
        [headers_on(&a), headers_on(&b), headers_on(&c)]
    );
}

#[test]
fn removing_a_shard_keeps_the_hits_while_it_drains() {
    let [a, b, c, d] = servers();
    let four = [("a", &a), ("b", &b), ("c", &c), ("d", &d)];
    let (s, files, before) = cached(&four);
    let of_d = files
        .iter()
        .filter(|f| owner(&["a", "b", "c", "d"], &f.header_key) == "d")
        .count();
    assert_eq!(headers_on(&d), of_d);

    let three = [("a", &a), ("b", &b), ("c", &c)];
    reshard(&s, &three, 2.0);
    let status: serde_json::Value = serde_json::from_str(&s.repo.cache_status().unwrap()).unwrap();
    let draining: Vec<&str> = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|shard| shard["draining"] == true)
        .filter_map(|shard| shard["name"].as_str())
        .collect();
    assert_eq!(draining, ["d"], "{status}");

    pass_after_reshard(&s, &files, &before, "removed", of_d);
    wait_moved(&s, &files, &three);
    assert_eq!(
        headers_on(&a) + headers_on(&b) + headers_on(&c),
        FILES,
        "the remaining shards hold every blob once"
    );
}

#[test]
fn a_previous_owner_killed_mid_pass_costs_misses_not_requests() {
    let [mut a, b, c, d] = servers();
    let three = [("a", &a), ("b", &b), ("c", &c)];
    let (s, files, _) = cached(&three);

    let four = [("a", &a), ("b", &b), ("c", &c), ("d", &d)];
    reshard(&s, &four, 2.0);
    // Files read after the kill whose blob a held: those that moved to d miss there, those
    // still a's route to a next-best shard and miss there; either way a, their previous
    // owner, is down.
    let kill_at = FILES / 3;
    let skipped = files[kill_at..]
        .iter()
        .filter(|f| owner(&["a", "b", "c"], &f.header_key) == "a")
        .count();
    assert!(skipped > 0);
    let (down_before, datastore_before) = (
        previous_owner(&s.repo, "listed", "down"),
        from_datastore(&s.repo),
    );
    let repo = &s.repo;
    let outcome = pass(&s, &files, |i| {
        if i == kill_at {
            a.kill9();
            // The pass goes on once the health check has seen it: from then on, a is
            // skipped without a message.
            repo.wait_for("a down", Duration::from_secs(10), || {
                repo.metric_value("media_repo_cache_shard_up{shard=\"a\"}") == Some(0.0)
            })
            .unwrap();
        }
    });
    eprintln!("a killed at file {kill_at}: {outcome:?}, {skipped} previous-owner lookups skipped");
    assert_eq!(
        outcome.failures, 0,
        "every request answered with identical bytes"
    );
    assert!(
        outcome.misses >= skipped as f64,
        "blobs whose previous owner died are misses: {outcome:?}"
    );
    assert_eq!(
        previous_owner(&s.repo, "listed", "down") - down_before,
        skipped as f64,
        "each of them skipped the dead owner without a round trip"
    );
    assert!(
        from_datastore(&s.repo) > datastore_before,
        "the datastore served the misses"
    );
}
