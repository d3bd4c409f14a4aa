//! Where an upload's time goes: one histogram, `media_repo_upload_phase_seconds{phase}`,
//! with a series per step of an upload, so a slow tail can be attributed from `/metrics`
//! (crates/bench/scripts/upload.py prints the mean of each phase beside wrk's latencies).
//!
//! Phases are a closed set. An upload that fails or whose client goes away stops being
//! timed at that step.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{register_histogram_vec, HistogramVec};

static UPLOAD_PHASE: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "media_repo_upload_phase_seconds",
        "Time uploads spent in each step: body (receiving and writing it), sync (last batch \
         and fsync), store (claim the location unless the content is quarantined, move the \
         bytes there), \
         record (media row written, claim released, standing quarantine applied)",
        &["phase"],
        vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
    )
    .expect("metric registered once")
});

/// A step of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The body arriving and its batches written to the temp file.
    Body,
    /// The last batch written and the temp file fsynced.
    Sync,
    /// The location claimed in the database (refused if the content is quarantined: one
    /// statement) and the bytes moved to it.
    Store,
    /// The media row written, the claim released and a standing quarantine applied.
    Record,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Body => "body",
            Phase::Sync => "sync",
            Phase::Store => "store",
            Phase::Record => "record",
        }
    }
}

/// Runs `step` and records how long it took under `phase`.
pub async fn timed<T>(phase: Phase, step: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = step.await;
    UPLOAD_PHASE
        .with_label_values(&[phase.label()])
        .observe(started.elapsed().as_secs_f64());
    out
}
