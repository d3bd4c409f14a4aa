//! Prometheus metrics of fetching other servers' media (`remote.rs`): how each fetch ended,
//! where the stored bytes came from, how many fetches run, and the downloads a back-off
//! refused without asking anyone. Every label value is from a closed set.

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};

use crate::error::{MatrixError, NOT_YET_UPLOADED};

/// How a fetch ended; see [`outcome_of`].
const OUTCOMES: [&str; 7] = [
    "stored",
    "not_found",
    "not_yet_uploaded",
    "too_large",
    "timeout",
    "failed",
    "error",
];

static FETCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_remote_fetches_total",
        "Fetches of another server's media that ended, by outcome: stored (in our datastore, \
         from the origin or another repo's copy in the shared cache), not_found (the origin \
         has no such media), not_yet_uploaded (an async upload still pending at the origin), \
         too_large (above downloads.max_bytes), timeout (the origin did not answer or \
         stalled), failed (unreachable, refused address, an error or malformed answer from \
         the origin), error (ours: database, datastore)",
        &["outcome"]
    )
    .expect("metric registered once")
});

static STORED_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_remote_stored_bytes_total",
        "Bytes of other servers' media stored in our datastore, by source: origin (fetched \
         from the remote server) or shared_cache (copied from the fetch of another repo \
         sharing the cache shards)",
        &["source"]
    )
    .expect("metric registered once")
});

static IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "media_repo_remote_fetches_in_flight",
        "Fetches of another server's media running now (at most federation.max_concurrent_fetches)"
    )
    .expect("metric registered once")
});

static BACKED_OFF: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "media_repo_remote_backoff_refusals_total",
        "Downloads of another server's media answered with the last failure without asking \
         the origin, by scope: media (this media failed recently) or origin (its server \
         looked down recently)",
        &["scope"]
    )
    .expect("metric registered once")
});

/// Where stored remote bytes came from.
#[derive(Clone, Copy)]
pub enum Source {
    Origin,
    SharedCache,
}

/// What a back-off covered.
#[derive(Clone, Copy)]
pub enum Scope {
    Media,
    Origin,
}

/// Registers every series at zero, so a dashboard sees them before the first fetch.
pub fn register() {
    for outcome in OUTCOMES {
        FETCHES.with_label_values(&[outcome]);
    }
    for source in ["origin", "shared_cache"] {
        STORED_BYTES.with_label_values(&[source]);
    }
    for scope in ["media", "origin"] {
        BACKED_OFF.with_label_values(&[scope]);
    }
    LazyLock::force(&IN_FLIGHT);
}

/// The outcome label of a fetch that ended with `failure` (None: stored).
fn outcome_of(failure: Option<&MatrixError>) -> &'static str {
    let Some(error) = failure else {
        return "stored";
    };
    match (error.status, error.errcode) {
        (StatusCode::NOT_FOUND, _) => "not_found",
        (_, errcode) if errcode == NOT_YET_UPLOADED => "not_yet_uploaded",
        (_, "M_TOO_LARGE") => "too_large",
        (StatusCode::GATEWAY_TIMEOUT, _) => "timeout",
        (StatusCode::BAD_GATEWAY, _) => "failed",
        _ => "error",
    }
}

/// Counts a fetch that ended, with `failure` or stored (None).
pub fn fetch_ended(failure: Option<&MatrixError>) {
    FETCHES.with_label_values(&[outcome_of(failure)]).inc();
}

/// Counts `bytes` of remote media stored from `source`.
pub fn stored(source: Source, bytes: u64) {
    let label = match source {
        Source::Origin => "origin",
        Source::SharedCache => "shared_cache",
    };
    STORED_BYTES.with_label_values(&[label]).inc_by(bytes);
}

/// Counts a download refused by a back-off.
pub fn backed_off(scope: Scope) {
    let label = match scope {
        Scope::Media => "media",
        Scope::Origin => "origin",
    };
    BACKED_OFF.with_label_values(&[label]).inc();
}

/// A fetch running: counted in the in-flight gauge until dropped.
pub struct Running(());

impl Running {
    pub fn start() -> Running {
        IN_FLIGHT.inc();
        Running(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        IN_FLIGHT.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_errors_remote_fetching_makes() {
        assert_eq!(outcome_of(None), "stored");
        let cases = [
            (MatrixError::not_found("gone"), "not_found"),
            (MatrixError::not_yet_uploaded(), "not_yet_uploaded"),
            (
                MatrixError::new(StatusCode::BAD_GATEWAY, "M_TOO_LARGE", "big"),
                "too_large",
            ),
            (
                MatrixError::new(StatusCode::GATEWAY_TIMEOUT, "M_UNKNOWN", "slow"),
                "timeout",
            ),
            (
                MatrixError::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", "broken"),
                "failed",
            ),
            (MatrixError::internal("db", &"down"), "error"),
        ];
        for (error, expected) in cases {
            assert_eq!(outcome_of(Some(&error)), expected);
            assert!(OUTCOMES.contains(&expected), "registered at start");
        }
    }
}
