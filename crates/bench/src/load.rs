//! The load generator: N concurrent tasks repeat one operation until a deadline.
//!
//! Tasks are spawned with `tokio::spawn` on whatever runtime is current (the actix System's
//! single thread for the actor path, a multi-thread runtime for the baseline), so the same
//! loop drives both paths.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one timed run achieved.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    /// Operations that did what they should (stored / read every byte).
    pub ok: u64,
    /// Operations that failed (a miss, a short read, an error): not counted as throughput.
    pub failed: u64,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Payload megabytes (10^6 bytes) per second for operations moving `size` bytes each.
    pub fn mb_per_sec(&self, size: usize) -> f64 {
        self.ops_per_sec() * size as f64 / 1e6
    }
}

/// Runs `op(task_index)` in a loop on `tasks` concurrent tasks for `duration`. `op` answers
/// whether the operation succeeded.
pub async fn drive<F, Fut>(tasks: usize, duration: Duration, op: F) -> Outcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    if op(task).await {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let mut outcome = Outcome::default();
    for handle in handles {
        // A panicking task is a bug in the benchmark itself: count it as failures, not ops.
        let (ok, failed) = handle.await.unwrap_or((0, 1));
        outcome.ok += ok;
        outcome.failed += failed;
    }
    // Tasks finish their last operation after the deadline: time until the last one ends.
    outcome.elapsed = started.elapsed();
    outcome
}
