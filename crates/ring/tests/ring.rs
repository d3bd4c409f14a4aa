//! The ring actor over real redis-server processes: routing, failover, panics, reconfiguration.

// The async polling helper lives with mr-shard-actor's tests; one copy serves both.
#[path = "../../shard-actor/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::wait_until;
use integration::RedisServer;
use mr_config::{RedisConfig, ShardConfig};
use mr_ring::{hashing, ApplyRedisConfig, RingActor, RingHandle, Status};
use mr_shard_actor::{Get, Set};

/// The fault-detection bound the cache promises.
const DETECT: Duration = Duration::from_secs(2);

fn redis_config(servers: &[(&str, &RedisServer)]) -> RedisConfig {
    RedisConfig {
        shards: servers
            .iter()
            .map(|(name, server)| ShardConfig {
                name: (*name).to_owned(),
                addr: server.addr(),
            })
            .collect(),
        ..RedisConfig::default()
    }
}

fn keys() -> impl Iterator<Item = String> {
    (0..300).map(|i| format!("mr1:blob:{{{i:064x}}}:m"))
}

/// How many of [`keys`] route to each shard.
fn spread(ring: &RingHandle) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for key in keys() {
        if let Some(shard) = ring.route(&key) {
            *counts.entry(shard.name.to_string()).or_default() += 1;
        }
    }
    counts
}

async fn wait_all_up(ring: &RingHandle, n: usize) {
    wait_until(DETECT, || {
        ring.shards().len() == n && ring.shards().iter().all(|s| s.is_up())
    })
    .await
    .expect("shards not all up within 2 s");
}

#[actix_rt::test]
async fn routes_keys_over_healthy_shards_and_skips_a_dead_one() {
    let a = RedisServer::start().unwrap();
    let mut b = RedisServer::start().unwrap();
    let c = RedisServer::start().unwrap();
    let (ring_addr, ring) = RingActor::start(&redis_config(&[("a", &a), ("b", &b), ("c", &c)]));
    wait_all_up(&ring, 3).await;

    let counts = spread(&ring);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&n| n > 60), "{counts:?}");
    // route() agrees with the pure hashing over all three names.
    for key in keys() {
        let want = hashing::pick(["a", "b", "c"].into_iter(), &key).unwrap();
        assert_eq!(&*ring.route(&key).unwrap().name, want);
    }

    // Keys written through the route land on the routed server.
    for key in keys().take(30) {
        let shard = ring.route(&key).unwrap();
        shard
            .addr
            .send(Set {
                key: key.clone(),
                value: Bytes::from(key.clone()),
                ttl: None,
            })
            .await
            .unwrap()
            .unwrap();
        let server = match &*shard.name {
            "a" => &a,
            "b" => &b,
            _ => &c,
        };
        assert_eq!(server.cli(&["GET", &key]).unwrap(), key);
    }

    b.kill9();
    wait_until(DETECT, || !spread(&ring).contains_key("b"))
        .await
        .expect("dead shard still routed after 2 s");
    for key in keys() {
        let got = ring.route(&key).unwrap();
        let want = hashing::pick(["a", "c"].into_iter(), &key).unwrap();
        assert_eq!(
            &*got.name, want,
            "b's keys move to their next-best shard, others stay"
        );
    }
    let status = ring_addr.send(Status).await.unwrap();
    let up: Vec<(String, bool)> = status.into_iter().map(|s| (s.name, s.up)).collect();
    assert_eq!(
        up,
        vec![("a".into(), true), ("b".into(), false), ("c".into(), true)]
    );
    assert_eq!(ring.shards().len(), 3, "a down shard stays configured");

    b.restart().unwrap();
    wait_until(DETECT, || spread(&ring).contains_key("b"))
        .await
        .expect("restarted shard not routed again");
}

#[actix_rt::test]
async fn a_panicking_shard_actor_is_replaced_and_serves_again() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    let (_ring_addr, ring) = RingActor::start(&redis_config(&[("a", &a), ("b", &b)]));
    wait_all_up(&ring, 2).await;

    let key = keys()
        .find(|k| &*ring.route(k).unwrap().name == "a")
        .unwrap();
    let before = ring.route(&key).unwrap();
    let _ = before.addr.send(mr_shard_actor::Panic).await;
    assert!(
        wait_until(DETECT, || !before.addr.connected())
            .await
            .is_some(),
        "actor survived the panic"
    );

    wait_until(DETECT, || {
        let now = ring.route(&key);
        now.is_some_and(|s| &*s.name == "a" && s.addr.connected())
    })
    .await
    .expect("no replacement actor within 2 s");
    let shard = ring.route(&key).unwrap();
    let started = std::time::Instant::now();
    loop {
        let set = shard
            .addr
            .send(Set {
                key: key.clone(),
                value: Bytes::from_static(b"v"),
                ttl: None,
            })
            .await
            .unwrap();
        if set.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < DETECT,
            "replacement not serving: {set:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        shard
            .addr
            .send(Get { key: key.clone() })
            .await
            .unwrap()
            .unwrap(),
        Some(Bytes::from_static(b"v"))
    );
    assert_eq!(a.cli(&["GET", &key]).unwrap(), "v");
}

#[actix_rt::test]
async fn apply_redis_config_adds_removes_and_moves_shards() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    let c = RedisServer::start().unwrap();
    let d = RedisServer::start().unwrap();
    let (ring_addr, ring) = RingActor::start(&redis_config(&[("a", &a), ("b", &b)]));
    wait_all_up(&ring, 2).await;
    let before = spread(&ring);

    // Add c: it takes about a third of the keys, and only from a and b.
    ring_addr
        .send(ApplyRedisConfig(redis_config(&[
            ("a", &a),
            ("b", &b),
            ("c", &c),
        ])))
        .await
        .unwrap();
    assert_eq!(
        ring.shards()
            .iter()
            .map(|s| s.name.to_string())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    wait_all_up(&ring, 3).await;
    let after = spread(&ring);
    assert!(after["c"] > 60, "{after:?}");
    assert!(after["a"] <= before["a"] && after["b"] <= before["b"]);

    // Remove a: its keys go elsewhere, its status is gone.
    ring_addr
        .send(ApplyRedisConfig(redis_config(&[("b", &b), ("c", &c)])))
        .await
        .unwrap();
    let names: Vec<String> = ring.shards().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["b", "c"]);
    assert!(!spread(&ring).contains_key("a"));
    let status = ring_addr.send(Status).await.unwrap();
    assert_eq!(
        status.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["b", "c"]
    );

    // Move b to server d (same name, new address): restarted, and now writes land on d.
    let b_handle = ring.shards().into_iter().find(|s| &*s.name == "b").unwrap();
    ring_addr
        .send(ApplyRedisConfig(redis_config(&[("b", &d), ("c", &c)])))
        .await
        .unwrap();
    wait_all_up(&ring, 2).await;
    let moved = ring.shards().into_iter().find(|s| &*s.name == "b").unwrap();
    assert!(moved.addr != b_handle.addr, "b was not restarted");
    let status = ring_addr.send(Status).await.unwrap();
    assert_eq!(status[0].addr, d.addr());
    let key = keys()
        .find(|k| &*ring.route(k).unwrap().name == "b")
        .unwrap();
    moved
        .addr
        .send(Set {
            key: key.clone(),
            value: Bytes::from_static(b"on-d"),
            ttl: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.cli(&["GET", &key]).unwrap(), "on-d");
    assert_eq!(b.cli(&["EXISTS", &key]).unwrap(), "0");

    // Nothing left: no route at all.
    ring_addr
        .send(ApplyRedisConfig(RedisConfig::default()))
        .await
        .unwrap();
    assert!(ring.shards().is_empty());
    assert!(ring.route("k").is_none());
}

#[actix_rt::test]
async fn status_redacts_passwords() {
    let config = RedisConfig {
        shards: vec![ShardConfig {
            name: "secret".into(),
            addr: "redis://user:hunter2@127.0.0.1:1/0".into(),
        }],
        ..RedisConfig::default()
    };
    let (ring_addr, ring) = RingActor::start(&config);
    let status = ring_addr.send(Status).await.unwrap();
    assert_eq!(status.len(), 1);
    assert!(!status[0].addr.contains("hunter2"), "{}", status[0].addr);
    assert!(!status[0].up);
    assert!(ring.route("k").is_none(), "a down shard is never routed to");
}
