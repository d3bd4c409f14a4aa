//! The benchmark's parts work: the throwaway server it uses (the harness's) starts,
//! answers and dies with its handle; the load loop counts what the operation reports.

use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use integration::RedisServer;
use mr_bench::load::drive;

#[test]
fn server_starts_off_6379_and_is_gone_after_drop() {
    let server = RedisServer::start().unwrap();
    let port = server.port();
    assert_ne!(port, 6379);
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    TcpStream::connect(("127.0.0.1", port)).unwrap();
    drop(server);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "redis-server still listens after drop"
    );
}

#[tokio::test]
async fn drive_counts_successes_and_failures_per_task() {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let outcome = drive(4, Duration::from_millis(100), move |task| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1)).await;
            // Task 0 always fails: its operations must not count as throughput.
            task != 0
        }
    })
    .await;
    assert_eq!(outcome.ok + outcome.failed, calls.load(Ordering::Relaxed));
    assert!(outcome.ok > 0 && outcome.failed > 0);
    assert!(outcome.ok >= 2 * outcome.failed, "{outcome:?}");
    assert!(outcome.elapsed >= Duration::from_millis(100));
    assert!(outcome.ops_per_sec() > 0.0);
    // One MB per operation: the same rate, up to floating-point rounding.
    let (mb, ops) = (outcome.mb_per_sec(1_000_000), outcome.ops_per_sec());
    assert!(
        (mb - ops).abs() <= 1e-9 * ops,
        "{mb} MB/s against {ops} ops/s"
    );
}
