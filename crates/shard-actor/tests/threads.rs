//! The shard actor's connection threads: one per connection besides the actor-local one,
//! started with the connections and stopped with the actor, whether its arbiter is stopped or it panics. Alone in its own test
//! binary because it counts the process's threads, which other tests would disturb.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Arbiter};
use bytes::Bytes;
use common::wait_until;
use integration::RedisServer;
use mr_shard_actor::{Get, Set, ShardActor, ShardHealth, ShardSettings, LARGE_VALUE_BYTES};

const CONNECTIONS: usize = 2;
/// Bound on a thread start or stop becoming visible in /proc.
const SETTLE: Duration = Duration::from_secs(2);

fn settings(url: String) -> ShardSettings {
    ShardSettings {
        name: "threads".to_owned(),
        url,
        connect_timeout: Duration::from_millis(250),
        response_timeout: Duration::from_millis(500),
        health_interval: Duration::from_millis(250),
        down_after_failures: 2,
        connections: CONNECTIONS,
    }
}

/// Threads of this process right now.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

async fn wait_threads(expected: usize) {
    let reached = wait_until(SETTLE, || threads() == expected).await;
    assert!(
        reached.is_some(),
        "expected {expected} threads, have {}",
        threads()
    );
}

#[actix_rt::test]
async fn connection_threads_start_with_the_actor_and_stop_with_it() {
    let server = RedisServer::start().unwrap();
    let baseline = threads();

    for ending in ENDINGS {
        let health = Arc::new(ShardHealth::new());
        let arbiter = Arbiter::new();
        let (s, h) = (settings(server.url()), health.clone());
        let addr = ShardActor::start_in_arbiter(&arbiter.handle(), move |_| ShardActor::new(s, h));
        wait_until(SETTLE, || health.is_up())
            .await
            .expect("shard not up");
        // The actor's own arbiter plus one thread per connection but the actor-local one.
        wait_threads(baseline + CONNECTIONS).await;

        // Large values (written on the connection thread) and small ones (on the actor's
        // thread) both round-trip.
        for len in [LARGE_VALUE_BYTES - 1, LARGE_VALUE_BYTES, 1 << 20] {
            round_trip(&addr, len, ending).await;
        }

        if *ending == "actor panicked" {
            panic_actor(&addr).await;
            // The panic dropped the actor, and with it its connection threads; the actor's
            // arbiter itself survives a panicking task.
            wait_threads(baseline + 1).await;
        }
        arbiter.stop();
        // Every thread started for the actor is gone with it.
        wait_threads(baseline).await;
    }
}

#[cfg(feature = "fault-injection")]
const ENDINGS: &[&str] = &["arbiter stopped", "actor panicked"];
#[cfg(not(feature = "fault-injection"))]
const ENDINGS: &[&str] = &["arbiter stopped"];

#[cfg(feature = "fault-injection")]
async fn panic_actor(addr: &actix::Addr<ShardActor>) {
    let _ = addr.send(mr_shard_actor::Panic).await;
}

#[cfg(not(feature = "fault-injection"))]
async fn panic_actor(_addr: &actix::Addr<ShardActor>) {
    unreachable!("only run with the fault-injection feature");
}

/// Writes eight values of `len` bytes, then reads them back.
async fn round_trip(addr: &actix::Addr<ShardActor>, len: usize, ending: &str) {
    let value = Bytes::from(vec![7u8; len]);
    for i in 0..8 {
        addr.send(Set {
            key: format!("k{len}-{i}"),
            value: value.clone(),
            ttl: None,
        })
        .await
        .unwrap()
        .unwrap();
    }
    for i in 0..8 {
        let got = addr
            .send(Get {
                key: format!("k{len}-{i}"),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            got.as_ref(),
            Some(&value),
            "{ending}: value of {len} bytes, k{i}"
        );
    }
}
