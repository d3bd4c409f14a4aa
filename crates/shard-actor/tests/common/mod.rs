//! Async polling for tests whose actors run on the test's own runtime: the shared harness
//! (`integration`) supplies the redis-server processes, but its `wait_until` blocks the
//! thread, which would also stall the actors whose progress the test is waiting for.
//!
//! mr-ring's tests include this file too (`#[path]`), so there is one copy.

#![allow(dead_code)]

use std::time::{Duration, Instant};

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
