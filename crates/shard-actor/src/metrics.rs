//! Per-shard Prometheus metrics in the default registry, all prefixed
//! `media_repo_cache_shard_` and labelled by shard name; declared the workspace's one way,
//! `LazyLock` statics registered by the prometheus crate's `register_*!` macros (a name taken
//! twice is a bug, and panics at first use).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge_vec, HistogramVec,
    IntCounterVec, IntGaugeVec,
};

/// Operation labels, one per command message (and the health PING).
pub(crate) const OPS: &[&str] = &["get", "set", "setnx", "delifeq", "del", "info", "ping"];
/// Result labels: `hit`/`miss` for reads, `ok` for other successes, `error` for failures and
/// timeouts, `down` for commands refused at once because the shard is not up (down, or
/// holding another key-format version), `paused`
/// for writes refused at once because the shard's writes are paused.
pub(crate) const RESULTS: &[&str] = &["hit", "miss", "ok", "error", "down", "paused"];

/// Latency buckets from 100 µs to ~3 s: loopback Redis answers in well under a millisecond,
/// anything near the response timeout is a fault.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 15).unwrap_or_default()
}

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_cache_shard_requests_total",
        "Commands sent to a Redis shard, by result",
        &["shard", "op", "result"]
    )
    .expect("metric registered once")
});

static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "media_repo_cache_shard_latency_seconds",
        "Time a Redis shard took to answer a command",
        &["shard", "op"],
        latency_buckets()
    )
    .expect("metric registered once")
});

static UP: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "media_repo_cache_shard_up",
        "1 when the shard is used: it answers its health check and holds our key-format version",
    )
});
static WRITE_BACKOFF: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "media_repo_cache_shard_write_backoff",
        "1 while writes to the shard are paused because it refused one (OOM, READONLY, ...)",
    )
});
static VERSION_MISMATCH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "media_repo_cache_shard_version_mismatch",
        "1 while the shard is not used because its key-format marker names another version",
    )
});
static USED_MEMORY: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "media_repo_cache_shard_used_memory_bytes",
        "used_memory reported by the shard's INFO",
    )
});
static KEYS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "media_repo_cache_shard_keys",
        "Keys in the shard's database (DBSIZE)",
    )
});
static READERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge(
        "media_repo_cache_shard_readers",
        "Per-thread readers of the shard, each with a connection of its own",
    )
});

static ACTORS_REPLACED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_cache_shard_actor_replaced_total",
        "Shard actors found dead (a panic) and replaced by the ring's watchdog",
        &["shard"]
    )
    .expect("metric registered once")
});

/// A per-shard gauge.
fn gauge(name: &str, help: &str) -> IntGaugeVec {
    register_int_gauge_vec!(name, help, &["shard"]).expect("metric registered once")
}

/// Records one command's outcome and how long it took.
pub(crate) fn observe(shard: &str, op: &str, result: &str, elapsed: Duration) {
    REQUESTS.with_label_values(&[shard, op, result]).inc();
    if result != "down" {
        LATENCY
            .with_label_values(&[shard, op])
            .observe(elapsed.as_secs_f64());
    }
}

pub(crate) fn set_up(shard: &str, up: bool) {
    UP.with_label_values(&[shard]).set(i64::from(up));
}

pub(crate) fn set_write_backoff(shard: &str, paused: bool) {
    WRITE_BACKOFF
        .with_label_values(&[shard])
        .set(i64::from(paused));
}

pub(crate) fn set_version_mismatch(shard: &str, mismatch: bool) {
    VERSION_MISMATCH
        .with_label_values(&[shard])
        .set(i64::from(mismatch));
}

pub(crate) fn set_usage(shard: &str, used_memory_bytes: u64, keys: u64) {
    USED_MEMORY
        .with_label_values(&[shard])
        .set(i64::try_from(used_memory_bytes).unwrap_or(i64::MAX));
    KEYS.with_label_values(&[shard])
        .set(i64::try_from(keys).unwrap_or(i64::MAX));
}

pub(crate) fn set_readers(shard: &str, readers: i64) {
    READERS.with_label_values(&[shard]).set(readers);
}

/// Counts one shard actor of `shard` found dead and replaced (called by the ring's
/// watchdog, which owns the replacing).
pub fn note_actor_replaced(shard: &str) {
    ACTORS_REPLACED.with_label_values(&[shard]).inc();
}

/// Removes every label set of shard `name`, for a shard that left the ring: a removed shard
/// must not keep reporting a stale `up` or memory figure forever.
pub fn forget_shard_metrics(name: &str) {
    for op in OPS {
        for result in RESULTS {
            let _ = REQUESTS.remove_label_values(&[name, op, result]);
        }
        let _ = LATENCY.remove_label_values(&[name, op]);
    }
    let _ = UP.remove_label_values(&[name]);
    let _ = WRITE_BACKOFF.remove_label_values(&[name]);
    let _ = VERSION_MISMATCH.remove_label_values(&[name]);
    let _ = USED_MEMORY.remove_label_values(&[name]);
    let _ = KEYS.remove_label_values(&[name]);
    let _ = READERS.remove_label_values(&[name]);
    let _ = ACTORS_REPLACED.remove_label_values(&[name]);
}
