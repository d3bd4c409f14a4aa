//! Remote media fetched once for every repo that shares the Redis shards: media-repo A
//! (serving hs1) and media-repo B (serving hs3, another server name) share three real
//! redis-server shards; hs2 holds the media. hs2 checks A's and B's signatures with the
//! keys hs1 and hs3 publish themselves.

use std::time::Duration;

use integration::federated_repo::{redis_cache_yaml, start_repo_for, start_three_synapses};
use integration::{wait_until, FederatingSynapse, MediaRepo, RedisServer, TestCa};
use reqwest::blocking::Client;
use sha2::{Digest, Sha256};

use crate::common::random_bytes;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

struct Shared {
    hs1: FederatingSynapse,
    hs2: FederatingSynapse,
    hs3: FederatingSynapse,
    shards: Vec<RedisServer>,
    a: MediaRepo,
    b: MediaRepo,
    http: Client,
    /// bob on hs2, who uploads the remote media.
    bob: String,
    _ca: TestCa,
}

impl Shared {
    fn start() -> Shared {
        let ca = TestCa::new().unwrap();
        let (hs1, hs2, hs3) = start_three_synapses(&ca).unwrap();
        let shards: Vec<RedisServer> = (0..3).map(|_| RedisServer::start().unwrap()).collect();
        let cache = redis_cache_yaml(&shards);
        let a = start_repo_for(&hs1, &ca, &cache).unwrap();
        let b = start_repo_for(&hs3, &ca, &cache).unwrap();
        let bob = hs2.user_token("bob").unwrap();
        Shared {
            bob,
            hs1,
            hs2,
            hs3,
            shards,
            a,
            b,
            http: Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap(),
            _ca: ca,
        }
    }

    fn upload_on_hs2(&self, bytes: &[u8]) -> String {
        crate::common::upload_to(&self.http, &self.hs2.client_url(), &self.bob, bytes)
    }

    fn fetches_at_hs2(&self, id: &str) -> usize {
        self.hs2
            .count_requests(&format!("/_matrix/federation/v1/media/download/{id}"))
    }

    fn stored_in(repo: &MediaRepo, bytes: &[u8]) -> Option<Vec<u8>> {
        std::fs::read(repo.content_file(bytes)).ok()
    }
}

#[test]
fn remote_media_is_fetched_once_for_repos_sharing_the_shards() {
    let s = Shared::start();
    let alice = s.hs1.user_token("alice").unwrap();
    let carol = s.hs3.user_token("carol").unwrap();

    // 20 concurrent first requests, split across A and B: one request reaches hs2.
    let bytes = random_bytes(3 * 1024 * 1024 + 123);
    let id = s.upload_on_hs2(&bytes);
    let bodies: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (repo, token) = if i % 2 == 0 {
                    (&s.a, &alice)
                } else {
                    (&s.b, &carol)
                };
                let url = format!(
                    "{}/_matrix/client/v1/media/download/{}/{id}",
                    repo.base_url(),
                    s.hs2.server_name
                );
                let http = s.http.clone();
                scope.spawn(move || {
                    let response = http.get(url).bearer_auth(token).send().unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().unwrap().to_vec()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for body in &bodies {
        assert!(*body == bytes, "every client gets identical bytes");
    }
    wait_until("hs2 to log the fetch", LOG_TIMEOUT, || {
        s.fetches_at_hs2(&id) >= 1
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.fetches_at_hs2(&id), 1, "exactly one request reached hs2");
    assert_eq!(
        Shared::stored_in(&s.a, &bytes).as_deref(),
        Some(bytes.as_slice())
    );
    assert_eq!(
        Shared::stored_in(&s.b, &bytes).as_deref(),
        Some(bytes.as_slice())
    );
    // The metrics say the same: one repo stored the bytes from hs2, the other from the
    // shared cache (counted once each row is written, which a streamed answer may precede).
    let stored_from = |source: &str| -> f64 {
        [&s.a, &s.b]
            .iter()
            .map(|repo| {
                repo.metric_value(&format!(
                    "media_repo_remote_stored_bytes_total{{source=\"{source}\"}}"
                ))
                .unwrap_or(0.0)
            })
            .sum()
    };
    wait_until(
        "both repos to count their stored bytes",
        LOG_TIMEOUT,
        || stored_from("origin") + stored_from("shared_cache") >= 2.0 * bytes.len() as f64,
    )
    .unwrap();
    assert_eq!(stored_from("origin"), bytes.len() as f64);
    assert_eq!(stored_from("shared_cache"), bytes.len() as f64);

    // A blob that lost a chunk in the cache is never stored wrong: B fetches it itself.
    let damaged = random_bytes(3 * 1024 * 1024 + 7);
    let damaged_id = s.upload_on_hs2(&damaged);
    let get = |repo: &MediaRepo, token: &str, id: &str| {
        let response = s
            .http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{}/{id}",
                repo.base_url(),
                s.hs2.server_name
            ))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().unwrap().to_vec()
    };
    assert!(get(&s.a, &alice, &damaged_id) == damaged);
    let sha = hex::encode(Sha256::digest(&damaged));
    let chunk_key = format!("mr1:blob:{{{sha}}}:1");
    let deleted: usize = s
        .shards
        .iter()
        .map(|shard| {
            shard
                .cli(&["DEL", &chunk_key])
                .unwrap()
                .trim()
                .parse::<usize>()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(deleted, 1, "the blob's second chunk was in the cache");
    assert!(get(&s.b, &carol, &damaged_id) == damaged);
    assert_eq!(
        Shared::stored_in(&s.b, &damaged).as_deref(),
        Some(damaged.as_slice())
    );
    wait_until("hs2 to log B's own fetch", LOG_TIMEOUT, || {
        s.fetches_at_hs2(&damaged_id) == 2
    })
    .unwrap();

    // The shard that holds this media's lease and record dies as the requests start: each
    // repo fetches for itself, so at most one extra request reaches hs2.
    let third = random_bytes(1024 * 1024 + 3);
    let third_id = s.upload_on_hs2(&third);
    let names: Vec<String> = (0..3).map(|i| format!("shard-{i}")).collect();
    let key = format!("mr1:lock:{{{}/{third_id}}}", s.hs2.server_name);
    let owner = mr_ring::hashing::pick(names.iter().map(String::as_str), &key).unwrap();
    let owner: usize = owner.trim_start_matches("shard-").parse().unwrap();
    let Shared {
        hs2,
        mut shards,
        a,
        b,
        http,
        ..
    } = s;
    let bodies: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let (repo, token) = if i % 2 == 0 {
                    (&a, &alice)
                } else {
                    (&b, &carol)
                };
                let url = format!(
                    "{}/_matrix/client/v1/media/download/{}/{third_id}",
                    repo.base_url(),
                    hs2.server_name
                );
                let http = http.clone();
                scope.spawn(move || {
                    let response = http.get(url).bearer_auth(token).send().unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().unwrap().to_vec()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        shards[owner].kill9();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for body in &bodies {
        assert!(*body == third, "every client gets identical bytes");
    }
    let fetches =
        || hs2.count_requests(&format!("/_matrix/federation/v1/media/download/{third_id}"));
    wait_until("hs2 to log the fetch", LOG_TIMEOUT, || fetches() >= 1).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(fetches() <= 2, "at most one extra request: {}", fetches());
}

/// The repo holding the lease is killed with -9 while it downloads (hs2 throttled behind
/// nginx): the other repo takes the lease over, and every one of its clients gets the bytes.
#[test]
fn a_lease_holder_killed_mid_download_is_taken_over() {
    let ca = TestCa::new().unwrap();
    let (hs1, hs2, hs3) = std::thread::scope(|s| {
        let hs1 = s.spawn(|| FederatingSynapse::start(&ca));
        let hs2 = s.spawn(|| FederatingSynapse::builder(&ca).behind_proxy().start());
        let hs3 = s.spawn(|| FederatingSynapse::start(&ca));
        (
            hs1.join().unwrap().unwrap(),
            hs2.join().unwrap().unwrap(),
            hs3.join().unwrap().unwrap(),
        )
    });
    let cert = ca.issue(&["127.0.0.1"]).unwrap();
    // 1.5 MiB at 200 KB/s: about eight seconds per fetch.
    let _throttle = integration::Nginx::tls(&cert)
        .port(hs2.federation_port())
        .federation_upstream(&hs2.internal_federation_url().unwrap())
        .client_upstream(&hs2.client_url())
        .limit_rate(200_000)
        .start()
        .unwrap();
    let shards: Vec<RedisServer> = (0..3).map(|_| RedisServer::start().unwrap()).collect();
    let cache = redis_cache_yaml(&shards);
    let mut a = start_repo_for(&hs1, &ca, &cache).unwrap();
    let b = start_repo_for(&hs3, &ca, &cache).unwrap();
    let http = Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap();
    let bob = hs2.user_token("bob").unwrap();
    let bytes = random_bytes(3 * 512 * 1024);
    let body: serde_json::Value = http
        .post(format!("{}/_matrix/media/v3/upload", hs2.client_url()))
        .bearer_auth(&bob)
        .body(bytes.clone())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = crate::common::media_id_in(&body);
    let (alice, carol) = (
        hs1.user_token("alice").unwrap(),
        hs3.user_token("carol").unwrap(),
    );
    let url = |repo: &MediaRepo| {
        format!(
            "{}/_matrix/client/v1/media/download/{}/{id}",
            repo.base_url(),
            hs2.server_name
        )
    };

    // A starts the fetch and takes the lease.
    let (a_url, a_http) = (url(&a), http.clone());
    let a_client = std::thread::spawn(move || {
        a_http
            .get(a_url)
            .bearer_auth(alice)
            .send()
            .map(|r| r.status())
    });
    let lock = format!("mr1:lock:{{{}/{id}}}", hs2.server_name);
    wait_until("A to take the lease", Duration::from_secs(20), || {
        shards
            .iter()
            .any(|shard| shard.cli(&["EXISTS", &lock]).is_ok_and(|n| n.trim() == "1"))
    })
    .unwrap();
    // B's clients wait for A's record, and A dies in the middle of its download.
    let bodies = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..5)
            .map(|_| {
                let (http, url, carol) = (http.clone(), url(&b), carol.clone());
                scope.spawn(move || {
                    let response = http.get(url).bearer_auth(carol).send().unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().unwrap().to_vec()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        a.kill9();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let _ = a_client.join();
    for body in &bodies {
        assert!(*body == bytes, "every client of B gets identical bytes");
    }
    let fetches = || hs2.count_requests(&format!("/_matrix/federation/v1/media/download/{id}"));
    wait_until("hs2 to log B's fetch", LOG_TIMEOUT, || fetches() >= 1).unwrap();
    // A's request and B's takeover; B's clients were not served by a third.
    assert_eq!(fetches(), 2, "A's fetch and B's takeover reached hs2");
}
