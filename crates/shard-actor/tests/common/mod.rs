//! Async polling for tests whose actors run on the test's own runtime: the shared harness
//! (`integration`) supplies the redis-server processes, but its `wait_until` blocks the
//! thread, which would also stall the actors whose progress the test is waiting for.
//!
//! mr-ring's tests include this file too (`#[path]`), so there is one copy.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use mr_shard_actor::ShardSettings;

/// Response timeout of the test shards.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// The fault-detection bound the cache promises.
pub const DETECT: Duration = Duration::from_secs(2);
/// Scheduling slack on a loaded 2-core machine for "no call waits longer than the timeout".
pub const MARGIN: Duration = Duration::from_millis(700);

/// A test shard's settings: [`RESPONSE_TIMEOUT`], 250 ms connects and health checks, down
/// after two failures.
pub fn shard_settings(name: &str, url: String, connections: usize) -> ShardSettings {
    ShardSettings {
        name: name.to_owned(),
        url,
        connect_timeout: Duration::from_millis(250),
        response_timeout: RESPONSE_TIMEOUT,
        health_interval: Duration::from_millis(250),
        down_after_failures: 2,
        connections,
    }
}

/// Pause between two checks of the condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds or `within` passes; returns how long it took.
pub async fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if cond() {
            return Some(started.elapsed());
        }
        if started.elapsed() > within {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
