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
use std::time::Instant;

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

    // Remove a: its keys go elsewhere; it is listed as draining (the default drain).
    ring_addr
        .send(ApplyRedisConfig(redis_config(&[("b", &b), ("c", &c)])))
        .await
        .unwrap();
    let names: Vec<String> = ring.shards().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["b", "c"]);
    assert!(!spread(&ring).contains_key("a"));
    let status = ring_addr.send(Status).await.unwrap();
    assert_eq!(
        status
            .iter()
            .map(|s| (s.name.as_str(), s.draining))
            .collect::<Vec<_>>(),
        [("b", false), ("c", false), ("a", true)]
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

fn with_drain(mut config: RedisConfig, secs: u64) -> RedisConfig {
    config.reshard_drain_secs = secs;
    config
}

/// Every key's previous owner, as the ring answers it given the current route.
fn previous_owners(ring: &RingHandle) -> BTreeMap<String, (String, bool)> {
    keys()
        .filter_map(|key| {
            let current = ring.route(&key).map(|s| s.name.to_string());
            let previous = ring.previous_owner(&key, current.as_deref())?;
            Some((key, (previous.shard.name.to_string(), previous.removed)))
        })
        .collect()
}

#[actix_rt::test]
async fn previous_owners_are_routed_while_a_change_drains() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    let c = RedisServer::start().unwrap();
    let d = RedisServer::start().unwrap();
    const DRAIN_SECS: u64 = 2;
    let abc = [("a", &a), ("b", &b), ("c", &c)];
    let (ring_addr, ring) = RingActor::start(&with_drain(redis_config(&abc), DRAIN_SECS));
    wait_all_up(&ring, 3).await;
    assert!(
        previous_owners(&ring).is_empty(),
        "no change, no previous owner"
    );

    // Add d: exactly the keys that moved to d have a previous owner, the one the old list
    // picks, still listed.
    let abcd = [("a", &a), ("b", &b), ("c", &c), ("d", &d)];
    ring_addr
        .send(ApplyRedisConfig(with_drain(
            redis_config(&abcd),
            DRAIN_SECS,
        )))
        .await
        .unwrap();
    let drain_started = Instant::now();
    wait_all_up(&ring, 4).await;
    let previous = previous_owners(&ring);
    let mut moved = 0;
    for key in keys() {
        let old = hashing::pick(["a", "b", "c"].into_iter(), &key).unwrap();
        let new = hashing::pick(["a", "b", "c", "d"].into_iter(), &key).unwrap();
        if old == new {
            assert!(!previous.contains_key(&key), "{key} did not move");
        } else {
            assert_eq!(new, "d", "a key only moves to the new shard");
            assert_eq!(previous[&key], (old.to_owned(), false), "{key}");
            moved += 1;
        }
    }
    assert_eq!(previous.len(), moved);
    assert!(moved > 40, "about a quarter of 300 keys moved: {moved}");
    assert!(ring.draining().is_empty(), "nothing was removed");

    // Before that drain ends, remove c: a new drain from a, b, c, d. c's keys have c as their
    // previous owner, removed but still connected (and up: no round trip is skipped).
    ring_addr
        .send(ApplyRedisConfig(with_drain(
            redis_config(&[("a", &a), ("b", &b), ("d", &d)]),
            DRAIN_SECS,
        )))
        .await
        .unwrap();
    let second_drain = Instant::now();
    let previous = previous_owners(&ring);
    let of_c: Vec<_> = keys()
        .filter(|k| hashing::pick(["a", "b", "c", "d"].into_iter(), k) == Some("c"))
        .collect();
    assert!(!of_c.is_empty());
    assert_eq!(previous.len(), of_c.len(), "only c's keys moved");
    for key in &of_c {
        assert_eq!(previous[key], ("c".to_owned(), true));
    }
    let draining = ring.draining();
    assert_eq!(draining.len(), 1);
    assert_eq!(&*draining[0].name, "c");
    assert!(
        draining[0].is_up(),
        "a draining shard keeps its health checks"
    );
    assert_eq!(ring.all_shards().len(), 4);
    let status = ring_addr.send(Status).await.unwrap();
    assert!(status.iter().any(|s| s.name == "c" && s.draining && s.up));

    // The first drain's timer must not end the second drain.
    let first_end = drain_started + Duration::from_secs(DRAIN_SECS);
    tokio::time::sleep(
        first_end.saturating_duration_since(Instant::now()) + Duration::from_millis(300),
    )
    .await;
    if second_drain.elapsed() < Duration::from_secs(DRAIN_SECS) {
        assert_eq!(
            previous_owners(&ring).len(),
            of_c.len(),
            "second drain cut short"
        );
    }

    // When the drain is over: no previous owner, c stopped and gone from the status.
    wait_until(Duration::from_secs(DRAIN_SECS + 2), || {
        ring.draining().is_empty() && previous_owners(&ring).is_empty()
    })
    .await
    .expect("the drain never ended");
    let status = ring_addr.send(Status).await.unwrap();
    assert_eq!(
        status.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["a", "b", "d"]
    );
}

#[actix_rt::test]
async fn a_zero_drain_drops_removed_shards_at_once() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    let (ring_addr, ring) = RingActor::start(&with_drain(redis_config(&[("a", &a), ("b", &b)]), 0));
    wait_all_up(&ring, 2).await;
    ring_addr
        .send(ApplyRedisConfig(with_drain(redis_config(&[("b", &b)]), 0)))
        .await
        .unwrap();
    assert!(ring.draining().is_empty());
    assert!(previous_owners(&ring).is_empty());
    let status = ring_addr.send(Status).await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].name, "b");
}
