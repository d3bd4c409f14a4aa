//! The shard actor against real redis-server processes: commands, and what happens when the
//! server dies, hangs or comes back.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter};
use bytes::Bytes;
use common::{wait_until, DETECT, MARGIN, RESPONSE_TIMEOUT};
use integration::RedisServer;
use mr_shard_actor::{
    Del, DelIfEq, Get, Info, Set, SetNx, ShardActor, ShardError, ShardHealth, ShardSettings,
    FORMAT_MARKER_KEY, KEY_FORMAT_VERSION,
};

fn settings(name: &str, url: String) -> ShardSettings {
    common::shard_settings(name, url, 2)
}

/// Starts a supervised actor on its own arbiter, like the ring does.
fn start(name: &str, url: String) -> (Addr<ShardActor>, Arc<ShardHealth>, Arbiter) {
    let health = Arc::new(ShardHealth::new());
    let arbiter = Arbiter::new();
    let settings = settings(name, url);
    let h = health.clone();
    let addr =
        ShardActor::start_in_arbiter(&arbiter.handle(), move |_| ShardActor::new(settings, h));
    (addr, health, arbiter)
}

async fn get(addr: &Addr<ShardActor>, key: &str) -> Result<Option<Bytes>, ShardError> {
    addr.send(Get {
        key: key.to_owned(),
    })
    .await
    .unwrap()
}

async fn wait_up(health: &ShardHealth) -> Duration {
    wait_until(DETECT, || health.is_up())
        .await
        .expect("shard not marked up within 2 s")
}

/// A fresh redis-server with a shard actor on it, once the actor has seen it up.
async fn start_up(name: &str) -> (RedisServer, Addr<ShardActor>, Arc<ShardHealth>, Arbiter) {
    let server = RedisServer::start().unwrap();
    let (addr, health, arbiter) = start(name, server.url());
    wait_up(&health).await;
    (server, addr, health, arbiter)
}

async fn wait_down(health: &ShardHealth) -> Duration {
    wait_until(DETECT, || !health.is_up())
        .await
        .expect("shard not marked down within 2 s")
}

#[actix_rt::test]
async fn commands_round_trip_through_a_real_server() {
    let (server, addr, _health, _arbiter) = start_up("cmd").await;

    assert_eq!(get(&addr, "k").await.unwrap(), None);
    let value = Bytes::from_static(b"\x00binary\xffvalue");
    addr.send(Set {
        key: "k".into(),
        value: value.clone(),
        ttl: None,
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(get(&addr, "k").await.unwrap(), Some(value));
    assert_eq!(
        server.cli(&["TTL", "k"]).unwrap(),
        "-1",
        "no ttl was asked for"
    );

    addr.send(Set {
        key: "t".into(),
        value: Bytes::from_static(b"v"),
        ttl: Some(Duration::from_secs(60)),
    })
    .await
    .unwrap()
    .unwrap();
    let pttl: i64 = server.cli(&["PTTL", "t"]).unwrap().parse().unwrap();
    assert!(pttl > 50_000 && pttl <= 60_000, "pttl {pttl}");

    // Leases: only the first SET NX wins; only the owner's value releases.
    let lease = |value: &'static [u8]| SetNx {
        key: "lock".into(),
        value: Bytes::from_static(value),
        ttl: Duration::from_secs(30),
    };
    assert!(addr.send(lease(b"me")).await.unwrap().unwrap());
    assert!(!addr.send(lease(b"other")).await.unwrap().unwrap());
    let pttl: i64 = server.cli(&["PTTL", "lock"]).unwrap().parse().unwrap();
    assert!(pttl > 0, "lease has a ttl");
    let release = |value: &'static [u8]| DelIfEq {
        key: "lock".into(),
        value: Bytes::from_static(value),
    };
    assert!(!addr.send(release(b"other")).await.unwrap().unwrap());
    assert_eq!(
        server.cli(&["GET", "lock"]).unwrap(),
        "me",
        "a foreign release must not delete"
    );
    assert!(addr.send(release(b"me")).await.unwrap().unwrap());
    assert_eq!(server.cli(&["EXISTS", "lock"]).unwrap(), "0");
    assert!(
        !addr.send(release(b"me")).await.unwrap().unwrap(),
        "nothing left to release"
    );

    let deleted = addr
        .send(Del {
            keys: vec!["k".into(), "t".into(), "missing".into()],
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(addr.send(Del { keys: vec![] }).await.unwrap().unwrap(), 0);

    for i in 0..10 {
        server.cli(&["SET", &format!("seed{i}"), "x"]).unwrap();
    }
    let info = addr.send(Info).await.unwrap().unwrap();
    assert_eq!(info.keys, 10 + 1, "the seeds and the key-format marker");
    let used: u64 = server
        .cli(&["INFO", "memory"])
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // used_memory moves a little between two reads; it is the same order of magnitude.
    assert!(
        info.used_memory_bytes > used / 2 && info.used_memory_bytes < used * 2,
        "{info:?} vs {used}"
    );
}

#[actix_rt::test]
async fn commands_run_concurrently_and_metrics_are_per_shard() {
    let (_server, addr, _health, _arbiter) = start_up("metrics-shard").await;
    addr.send(Set {
        key: "a".into(),
        value: Bytes::from_static(b"1"),
        ttl: None,
    })
    .await
    .unwrap()
    .unwrap();
    let calls = (0..200).map(|i| {
        let addr = addr.clone();
        async move { get(&addr, if i % 2 == 0 { "a" } else { "b" }).await }
    });
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().all(|r| r.is_ok()));
    addr.send(Info).await.unwrap().unwrap();

    let families = prometheus::gather();
    let count = |result: &str| -> u64 {
        families
            .iter()
            .filter(|f| f.name() == "media_repo_cache_shard_requests_total")
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                let labels: Vec<(&str, &str)> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                labels.contains(&("shard", "metrics-shard"))
                    && labels.contains(&("op", "get"))
                    && labels.contains(&("result", result))
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    };
    assert_eq!(count("hit"), 100);
    assert_eq!(count("miss"), 100);
    let gauge = |name: &str| -> Option<i64> {
        families
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .find(|m| m.get_label().iter().any(|l| l.value() == "metrics-shard"))
            .map(|m| m.get_gauge().get_value() as i64)
    };
    assert_eq!(gauge("media_repo_cache_shard_up"), Some(1));
    assert_eq!(
        gauge("media_repo_cache_shard_keys"),
        Some(2),
        "`a` and the key-format marker"
    );
    assert!(gauge("media_repo_cache_shard_used_memory_bytes").unwrap() > 100_000);

    mr_shard_actor::forget_shard_metrics("metrics-shard");
    let families = prometheus::gather();
    let left = families
        .iter()
        .flat_map(|f| f.get_metric())
        .filter(|m| m.get_label().iter().any(|l| l.value() == "metrics-shard"))
        .count();
    // The actor still runs, so its next PING may re-create `up`; nothing else may be left.
    assert!(left <= 1, "{left} label sets left");
}

#[actix_rt::test]
async fn killed_server_fails_fast_goes_down_and_comes_back() {
    let mut server = RedisServer::start().unwrap();
    let (addr, health, _arbiter) = start("kill", server.url());
    wait_up(&health).await;
    addr.send(Set {
        key: "k".into(),
        value: Bytes::from_static(b"v"),
        ttl: None,
    })
    .await
    .unwrap()
    .unwrap();

    server.kill9();
    let killed = Instant::now();
    // Until the health check notices, calls fail on the refused connection — quickly.
    let started = Instant::now();
    assert!(get(&addr, "k").await.is_err());
    assert!(
        started.elapsed() < RESPONSE_TIMEOUT + MARGIN,
        "call took {:?}",
        started.elapsed()
    );
    wait_down(&health).await;
    eprintln!("kill -9: marked down after {:?}", killed.elapsed());
    assert!(killed.elapsed() < DETECT);

    // Down: answered at once, without touching the network.
    let started = Instant::now();
    assert!(matches!(get(&addr, "k").await, Err(ShardError::Down(_))));
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "down answer took {:?}",
        started.elapsed()
    );

    server.restart().unwrap();
    let up_after = wait_up(&health).await;
    eprintln!("restart: marked up after {up_after:?}");
    addr.send(Set {
        key: "k2".into(),
        value: Bytes::from_static(b"v2"),
        ttl: None,
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        get(&addr, "k2").await.unwrap(),
        Some(Bytes::from_static(b"v2"))
    );
}

#[actix_rt::test]
async fn stopped_server_never_holds_a_call_past_the_timeout() {
    let (server, addr, health, _arbiter) = start_up("stop").await;

    server.pause();
    let paused = Instant::now();
    // A burst of concurrent calls: run one at a time they would take 40 × 500 ms.
    let calls = (0..40).map(|i| {
        let addr = addr.clone();
        async move {
            let started = Instant::now();
            let res = get(&addr, &format!("k{i}")).await;
            (res, started.elapsed())
        }
    });
    for (res, took) in futures_util::future::join_all(calls).await {
        assert!(res.is_err());
        assert!(took < RESPONSE_TIMEOUT + MARGIN, "call took {took:?}");
    }
    wait_down(&health).await;
    eprintln!("SIGSTOP: marked down after {:?}", paused.elapsed());
    assert!(
        paused.elapsed() < DETECT,
        "down after {:?}",
        paused.elapsed()
    );
    // Keep calling while paused: every answer stays within the bound.
    for _ in 0..5 {
        let started = Instant::now();
        assert!(get(&addr, "k").await.is_err());
        assert!(started.elapsed() < RESPONSE_TIMEOUT + MARGIN);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    server.resume();
    let up_after = wait_up(&health).await;
    eprintln!("SIGCONT: marked up after {up_after:?}");
    let started = Instant::now();
    loop {
        // Right after resuming, a connection the manager is replacing may still fail once.
        if let Ok(v) = get(&addr, "k").await {
            assert_eq!(v, None);
            break;
        }
        assert!(started.elapsed() < DETECT, "not serving again within 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn server_absent_at_start_is_picked_up_when_it_appears() {
    // Start and kill a server only to own a port on which nothing listens yet.
    let mut server = RedisServer::start().unwrap();
    server.kill9();
    let (addr, health, _arbiter) = start("late", server.url());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!health.is_up());
    let started = Instant::now();
    assert!(matches!(get(&addr, "k").await, Err(ShardError::Down(_))));
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "down answer took {:?}",
        started.elapsed()
    );

    server.restart().unwrap();
    wait_up(&health).await;
    let started = Instant::now();
    while get(&addr, "k").await.is_err() {
        assert!(
            started.elapsed() < DETECT,
            "not serving within 2 s of being up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn unusable_url_keeps_the_shard_down_without_crashing() {
    let (addr, health, _arbiter) = start("bad-url", "http://not-redis".to_owned());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!health.is_up());
    assert!(addr.connected());
    assert!(matches!(get(&addr, "k").await, Err(ShardError::Down(_))));
}

#[cfg(feature = "fault-injection")]
#[actix_rt::test]
async fn panic_message_kills_the_actor() {
    let (_server, addr, _health, _arbiter) = start_up("panic").await;
    let _ = addr.send(mr_shard_actor::Panic).await;
    assert!(
        wait_until(DETECT, || !addr.connected()).await.is_some(),
        "mailbox still open after panic"
    );
}

#[actix_rt::test]
async fn idle_stopped_server_is_found_by_the_health_check_alone() {
    let (server, _addr, health, _arbiter) = start_up("idle-stop").await;
    server.pause();
    let down_after = wait_down(&health).await;
    eprintln!("SIGSTOP, no traffic: marked down after {down_after:?}");
    server.resume();
    wait_up(&health).await;
}

/// A server that refuses writes (here READONLY: a replica) but answers PING and GET: the
/// shard stays up, the refusal pauses writes (answered at once, without the network) while
/// reads go on, and a write after the pause that the server takes ends the pause.
#[actix_rt::test]
async fn refused_writes_pause_writes_but_not_reads() {
    let (server, addr, health, _arbiter) = start_up("read-only").await;
    let set = |key: &str| Set {
        key: key.to_owned(),
        value: Bytes::from_static(b"v"),
        ttl: None,
    };
    addr.send(set("before")).await.unwrap().unwrap();
    // A master that does not exist: the server becomes a read-only replica of nobody.
    server.cli(&["REPLICAOF", "127.0.0.1", "1"]).unwrap();

    let refused = addr.send(set("k")).await.unwrap();
    match &refused {
        Err(ShardError::Redis { source, .. }) => {
            // redis-rs prints the kind, not the code: "ReadOnly: You can't write against...".
            assert!(source.to_string().contains("read only replica"), "{source}")
        }
        other => panic!("expected READONLY, got {other:?}"),
    }
    assert!(health.writes_paused());
    assert!(health.write_error().unwrap().contains("read only replica"));
    let started = Instant::now();
    assert!(matches!(
        addr.send(set("k")).await.unwrap(),
        Err(ShardError::WritesPaused(_))
    ));
    assert!(matches!(
        addr.send(SetNx {
            key: "lease".into(),
            value: Bytes::from_static(b"me"),
            ttl: Duration::from_secs(5),
        })
        .await
        .unwrap(),
        Err(ShardError::WritesPaused(_))
    ));
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "paused answers took {:?}",
        started.elapsed()
    );
    assert_eq!(
        get(&addr, "before").await.unwrap(),
        Some(Bytes::from_static(b"v"))
    );
    assert!(health.is_up(), "refused writes do not make a shard down");

    server.cli(&["REPLICAOF", "NO", "ONE"]).unwrap();
    let deadline = Instant::now() + mr_shard_actor::WRITE_BACKOFF_INITIAL + DETECT;
    while addr.send(set("after")).await.unwrap().is_err() {
        assert!(
            Instant::now() < deadline,
            "writes not resumed after the pause"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!health.writes_paused());
    assert_eq!(health.write_error(), None);
    assert_eq!(server.cli(&["GET", "after"]).unwrap(), "v");
}

/// A few health intervals (250 ms each) plus scheduling slack: the bound on "the health check
/// has seen what the test did to the marker".
const MARKER_SEEN: Duration = Duration::from_secs(3);

async fn marker_becomes(server: &RedisServer, want: &str) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < MARKER_SEEN {
        if server.cli(&["GET", FORMAT_MARKER_KEY]).unwrap() == want {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A fresh shard is marked with our key-format version, and a marker deleted by hand (as
/// eviction or FLUSHALL would) is written back by the health check alone.
#[actix_rt::test]
async fn the_key_format_marker_is_written_and_written_back() {
    assert_eq!(FORMAT_MARKER_KEY, "mr:format");
    assert_eq!(KEY_FORMAT_VERSION, "1");
    let (server, addr, health, _arbiter) = start_up("marker").await;
    assert_eq!(
        server.cli(&["GET", FORMAT_MARKER_KEY]).unwrap(),
        KEY_FORMAT_VERSION,
        "marked before it was reported up"
    );
    assert_eq!(
        server.cli(&["TTL", FORMAT_MARKER_KEY]).unwrap(),
        "-1",
        "the marker never expires on its own"
    );

    for flush in [&["DEL", FORMAT_MARKER_KEY][..], &["FLUSHALL"][..]] {
        server.cli(flush).unwrap();
        let back = marker_becomes(&server, KEY_FORMAT_VERSION)
            .await
            .unwrap_or_else(|| panic!("marker not written back after {flush:?}"));
        eprintln!("{flush:?}: marker back after {back:?}");
        assert!(health.is_up(), "a missing marker does not stop the shard");
        assert_eq!(health.format_mismatch(), None);
    }
    assert_eq!(get(&addr, "k").await.unwrap(), None);
}

/// A shard marked with another version answers PING but is not used: every command is
/// refused at once without touching it, the marker is never overwritten, and the shard is
/// used again once the marker says our version (or is gone).
#[actix_rt::test]
async fn a_shard_of_another_key_format_version_is_not_used() {
    let server = RedisServer::start().unwrap();
    server.cli(&["SET", FORMAT_MARKER_KEY, "2"]).unwrap();
    let (addr, health, _arbiter) = start("other-version", server.url());
    wait_until(DETECT, || health.format_mismatch().is_some())
        .await
        .expect("mismatch not noticed within 2 s");
    assert!(!health.is_up());
    assert_eq!(
        health.format_mismatch().as_deref(),
        Some("found 2, expected 1")
    );
    assert_eq!(health.last_error(), None, "it is not down: it answers");

    let started = Instant::now();
    assert!(matches!(
        get(&addr, "k").await,
        Err(ShardError::FormatMismatch(_))
    ));
    let set = addr
        .send(Set {
            key: "k".into(),
            value: Bytes::from_static(b"v"),
            ttl: None,
        })
        .await
        .unwrap();
    assert!(matches!(set, Err(ShardError::FormatMismatch(_))), "{set:?}");
    let del = addr
        .send(Del {
            keys: vec![FORMAT_MARKER_KEY.into()],
        })
        .await
        .unwrap();
    assert!(matches!(del, Err(ShardError::FormatMismatch(_))), "{del:?}");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "refusals took {:?}",
        started.elapsed()
    );
    // Several health rounds later: still refused, marker untouched, nothing written.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!health.is_up());
    assert_eq!(server.cli(&["GET", FORMAT_MARKER_KEY]).unwrap(), "2");
    assert_eq!(server.dbsize().unwrap(), 1);

    // The operator hands the shard back to us.
    server
        .cli(&["SET", FORMAT_MARKER_KEY, KEY_FORMAT_VERSION])
        .unwrap();
    wait_until(MARKER_SEEN, || health.is_up())
        .await
        .expect("not used again after the marker said our version");
    assert_eq!(health.format_mismatch(), None);
    addr.send(Set {
        key: "k".into(),
        value: Bytes::from_static(b"v"),
        ttl: None,
    })
    .await
    .unwrap()
    .unwrap();

    // Taken over again while in use (by hand here; a repo of another version only ever
    // writes the marker when it is missing), then the marker deleted: written back, used.
    server.cli(&["SET", FORMAT_MARKER_KEY, "2"]).unwrap();
    wait_until(MARKER_SEEN, || !health.is_up())
        .await
        .expect("a marker changed under a running shard not noticed");
    assert_eq!(
        health.format_mismatch().as_deref(),
        Some("found 2, expected 1")
    );
    server.cli(&["DEL", FORMAT_MARKER_KEY]).unwrap();
    wait_until(MARKER_SEEN, || health.is_up())
        .await
        .expect("not used again after the marker was deleted");
    assert_eq!(
        server.cli(&["GET", FORMAT_MARKER_KEY]).unwrap(),
        KEY_FORMAT_VERSION
    );
    assert_eq!(
        get(&addr, "k").await.unwrap(),
        Some(Bytes::from_static(b"v"))
    );
}
