//! Admission of uploads: at most `uploads.max_concurrent_per_user` in progress per user and
//! `uploads.max_concurrent` overall, so no client can hold an unbounded number of sockets,
//! temp files and buffers. A slot is a guard; dropping it (upload done, failed or the client
//! gone) frees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use dashmap::DashMap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{register_int_gauge, IntGauge};

use crate::error::{MatrixError, MatrixResult};

/// Seconds a refused client is told to wait: an upload slot frees when some upload ends.
const RETRY_AFTER_SECS: u64 = 5;

static IN_PROGRESS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "media_repo_uploads_in_progress",
        "Uploads admitted and not finished (receiving their body or being stored)"
    )
    .expect("metric registered once")
});

/// Reads the storage crate's count of upload batches on the blocking pool at scrape time.
struct BlockingWrites {
    gauge: IntGauge,
}

impl Collector for BlockingWrites {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauge.set(mr_storage::blocking_writes_running() as i64);
        self.gauge.collect()
    }
}

/// Registers the upload gauges so they show from the first scrape.
pub fn init_metrics() {
    LazyLock::force(&IN_PROGRESS);
    static BLOCKING: LazyLock<()> = LazyLock::new(|| {
        let gauge = IntGauge::new(
            "media_repo_upload_blocking_writes",
            "Upload batches holding a blocking-pool thread now (an upload waiting for its client holds none)",
        )
        .expect("valid metric");
        // A collector read at scrape time has no `register_*!` macro; registered the same
        // way otherwise (default registry, a taken name is a bug).
        prometheus::register(Box::new(BlockingWrites { gauge })).expect("metric registered once");
    });
    LazyLock::force(&BLOCKING);
}

/// Uploads in progress, overall and per user. Users with none have no entry, so the map
/// holds at most `max_concurrent` users.
#[derive(Default)]
pub struct UploadSlots {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    total: AtomicU64,
    per_user: DashMap<String, u64>,
}

/// One admitted upload.
pub struct UploadSlot {
    inner: Arc<Inner>,
    user_id: String,
}

impl UploadSlots {
    /// Admits an upload of `user_id`, or refuses with 429 `M_LIMIT_EXCEEDED`.
    pub fn admit(&self, user_id: &str, per_user: u32, overall: u32) -> MatrixResult<UploadSlot> {
        let inner = &self.inner;
        let total = inner.total.fetch_add(1, Ordering::AcqRel) + 1;
        if total > u64::from(overall) {
            inner.total.fetch_sub(1, Ordering::AcqRel);
            return Err(MatrixError::limit_exceeded(
                "Too many uploads in progress on this server; try again shortly",
                RETRY_AFTER_SECS,
            ));
        }
        // The entry lock makes check-and-increment atomic per user.
        let mut count = inner.per_user.entry(user_id.to_owned()).or_insert(0);
        if *count >= u64::from(per_user) {
            drop(count);
            inner.per_user.remove_if(user_id, |_, n| *n == 0);
            inner.total.fetch_sub(1, Ordering::AcqRel);
            return Err(MatrixError::limit_exceeded(
                format!("You have {per_user} uploads in progress; wait for one to finish"),
                RETRY_AFTER_SECS,
            ));
        }
        *count += 1;
        drop(count);
        IN_PROGRESS.inc();
        Ok(UploadSlot {
            inner: self.inner.clone(),
            user_id: user_id.to_owned(),
        })
    }

    /// Uploads in progress now (a gauge for `/metrics`).
    pub fn in_progress(&self) -> u64 {
        self.inner.total.load(Ordering::Acquire)
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        if let Some(mut count) = self.inner.per_user.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
        }
        self.inner.per_user.remove_if(&self.user_id, |_, n| *n == 0);
        self.inner.total.fetch_sub(1, Ordering::AcqRel);
        IN_PROGRESS.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_overall_caps() {
        let slots = UploadSlots::default();
        let a1 = slots.admit("@a:x", 2, 3).unwrap();
        let _a2 = slots.admit("@a:x", 2, 3).unwrap();
        let refused = slots.admit("@a:x", 2, 3).err().unwrap();
        assert_eq!(refused.status.as_u16(), 429);
        assert_eq!(refused.retry_after_secs, Some(RETRY_AFTER_SECS));
        let _b1 = slots.admit("@b:x", 2, 3).unwrap();
        assert_eq!(
            slots.admit("@c:x", 2, 3).err().unwrap().errcode,
            "M_LIMIT_EXCEEDED"
        );
        assert_eq!(slots.in_progress(), 3);
        drop(a1);
        assert_eq!(slots.in_progress(), 2);
        let _c1 = slots.admit("@c:x", 2, 3).unwrap();
        drop(_b1);
        assert!(
            !slots.inner.per_user.contains_key("@b:x"),
            "idle users hold no entry"
        );
    }
}
